/**
 * `causeway user add|disable|enable|delete|list|password|totp|unlock`: the built-in user directory.
 *
 *   causeway user add NAME --groups a,b [--email E] [--password-stdin]
 *   causeway user password NAME --password-stdin      (or --remove)
 *   causeway user totp enable NAME                    prints the secret and otpauth URI, once
 *   causeway user totp disable NAME
 *   causeway user unlock NAME                         lifts the lock after repeated failed logins
 *
 * Passwords are read from stdin only (never an argument, which other users of the machine can see in
 * the process list), one line: the trailing newline is dropped, nothing else. Users of an org IdP
 * (`source: idp:<name>`) log in there and have neither password nor TOTP here.
 */
import { UserError } from '../lib/errors.ts';
import type { Command } from 'commander';
import { ApiClient } from './client.ts';
import type { AdminIo, ConnectionFlags } from './client.ts';
import { parseOutputFormat, printable, shortTime, table, toJson, toYamlDocuments } from './output.ts';
import type { OutputFormat } from './output.ts';

interface UserRecord {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
  disabled: boolean;
  hasPassword?: boolean;
  hasTotp?: boolean;
  source?: string;
  lockedUntil?: string | null;
  version: number;
  updatedAt: string;
}

const MIN_PASSWORD = 12;
const MAX_PASSWORD = 1024;

/** The password on stdin: one line, without its line ending; checked for length before anything is written. */
async function passwordFromStdin(io: AdminIo): Promise<string> {
  const text = await io.readStdin();
  const password = text.replace(/\r?\n$/, '');
  if (/[\r\n]/.test(password)) throw new UserError('PASSWORD_INVALID', 'the password on stdin has more than one line; give exactly one line (for example: printf %s "$PASSWORD" | causeway user password NAME --password-stdin)');
  const length = [...password].length;
  if (length === 0) throw new UserError('PASSWORD_MISSING', 'no password on stdin; pipe it in (for example: printf %s "$PASSWORD" | causeway user password NAME --password-stdin)');
  if (length < MIN_PASSWORD) throw new UserError('PASSWORD_TOO_SHORT', `the password has ${length} characters; use at least ${MIN_PASSWORD}`);
  if (length > MAX_PASSWORD) throw new UserError('PASSWORD_TOO_LONG', `the password has ${length} characters; use at most ${MAX_PASSWORD}`);
  return password;
}

function userPath(name: string, rest = ''): string {
  return `/api/v1/users/${encodeURIComponent(name)}${rest}`;
}

function loginColumn(u: UserRecord): string {
  if (u.source !== undefined && u.source !== 'local') return u.source;
  if (u.hasPassword === true) return u.hasTotp === true ? 'password+totp' : 'password';
  return 'none';
}

function stateColumn(u: UserRecord, now: number): string {
  if (u.disabled) return 'disabled';
  if (typeof u.lockedUntil === 'string' && Date.parse(u.lockedUntil) > now) return 'locked';
  return 'active';
}

function list(value: string): string[] {
  return value.split(',').map((g) => g.trim()).filter((g) => g !== '');
}

export function registerUserCommands(program: Command, io: AdminIo, connection: (command: Command) => Command): void {
  const user = program.command('user').description('Users of the built-in directory');
  connection(
    user
      .command('add')
      .description('Add a user')
      .argument('<name>', 'the user name (letters, digits, . _ @ -)')
      .option('--groups <a,b>', 'groups, comma-separated (roles match on them)', '')
      .option('--email <email>', 'email address')
      .option('--password-stdin', 'read a password for the built-in login from stdin (one line, 12 to 1024 characters)'),
  ).action(async (name: string, flags: ConnectionFlags & { groups: string; email?: string; passwordStdin?: boolean }) => {
    const password = flags.passwordStdin === true ? await passwordFromStdin(io) : undefined;
    const client = await ApiClient.connect(flags, io);
    const created = await client.call<UserRecord>('POST', '/api/v1/users', { json: { name, groups: list(flags.groups), ...(flags.email === undefined ? {} : { email: flags.email }) } });
    if (password !== undefined) {
      try {
        await client.call('PUT', userPath(created.name, '/password'), { json: { password } });
      } catch (err) {
        io.err(`user/${printable(created.name)} was created without a password; set one with: causeway user password ${printable(created.name)} --password-stdin`);
        throw err;
      }
    }
    io.out(`user/${printable(created.name)} created${password === undefined ? '' : ' with a password'}`);
  });
  connection(
    user
      .command('password')
      .description('Set (from stdin) or remove a built-in user\'s password')
      .argument('<name>', 'the user name')
      .option('--password-stdin', 'read the password from stdin (one line, 12 to 1024 characters)')
      .option('--remove', 'remove the password: the user can no longer log in with one'),
  ).action(async (name: string, flags: ConnectionFlags & { passwordStdin?: boolean; remove?: boolean }) => {
    if ((flags.passwordStdin === true) === (flags.remove === true)) throw new UserError('PASSWORD_SOURCE', 'give --password-stdin (and pipe the password in) or --remove; a password is never taken as an argument');
    const password = flags.passwordStdin === true ? await passwordFromStdin(io) : undefined;
    const client = await ApiClient.connect(flags, io);
    if (password === undefined) {
      await client.call('DELETE', userPath(name, '/password'));
      io.out(`user/${printable(name)} password removed`);
    } else {
      await client.call('PUT', userPath(name, '/password'), { json: { password } });
      io.out(`user/${printable(name)} password set`);
    }
  });
  const totp = user.command('totp').description('A built-in user\'s TOTP second factor');
  connection(
    totp
      .command('enable')
      .description('Give the user a new TOTP secret (replacing any earlier one); it is printed once, here')
      .argument('<name>', 'the user name'),
  ).action(async (name: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    const { secret, uri } = await client.call<{ secret: string; uri: string }>('POST', userPath(name, '/totp'));
    io.out(`user/${printable(name)} TOTP enabled; add it to an authenticator app now, it is not shown again:`);
    io.out(`secret: ${printable(secret)}`);
    io.out(`uri:    ${printable(uri)}`);
  });
  connection(
    totp
      .command('disable')
      .description('Remove the user\'s TOTP second factor')
      .argument('<name>', 'the user name'),
  ).action(async (name: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    await client.call('DELETE', userPath(name, '/totp'));
    io.out(`user/${printable(name)} TOTP disabled`);
  });
  connection(
    user
      .command('unlock')
      .description('Lift the lock after repeated failed logins')
      .argument('<name>', 'the user name'),
  ).action(async (name: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    await client.call<UserRecord>('POST', userPath(name, '/unlock'));
    io.out(`user/${printable(name)} unlocked`);
  });
  for (const [command, disabled] of [['disable', true], ['enable', false]] as const) {
    connection(
      user
        .command(command)
        .description(disabled ? 'Disable a user: their sessions end and they cannot sign in' : 'Enable a disabled user')
        .argument('<name>', 'the user name'),
    ).action(async (name: string, flags: ConnectionFlags) => {
      const client = await ApiClient.connect(flags, io);
      await client.call<UserRecord>('PATCH', `/api/v1/users/${encodeURIComponent(name)}`, { json: { disabled } });
      io.out(`user/${printable(name)} ${command}d`);
    });
  }
  connection(
    user
      .command('delete')
      .description('Delete a user and their devices')
      .argument('<name>', 'the user name'),
  ).action(async (name: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    await client.call('DELETE', `/api/v1/users/${encodeURIComponent(name)}`);
    io.out(`user/${printable(name)} deleted`);
  });
  connection(
    user
      .command('list')
      .description('List users')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (flags: ConnectionFlags & { output: OutputFormat }) => {
    const client = await ApiClient.connect(flags, io);
    const { items } = await client.call<{ items: UserRecord[] }>('GET', '/api/v1/users');
    if (flags.output === 'json') io.out(toJson(items));
    else if (flags.output === 'yaml') io.out(toYamlDocuments(items));
    else for (const line of table(['NAME', 'EMAIL', 'GROUPS', 'STATE', 'LOGIN', 'UPDATED'], items.map((u) => [u.name, u.email, u.groups, stateColumn(u, io.now()), loginColumn(u), shortTime(u.updatedAt)]))) io.out(line);
  });
}
