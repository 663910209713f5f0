/**
 * `causeway user add|disable|enable|delete|list`: the built-in user directory. Passwords come with
 * the built-in login; until then users sign in through the organisation's identity provider.
 */
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
  version: number;
  updatedAt: string;
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
      .option('--email <email>', 'email address'),
  ).action(async (name: string, flags: ConnectionFlags & { groups: string; email?: string }) => {
    const client = await ApiClient.connect(flags, io);
    const created = await client.call<UserRecord>('POST', '/api/v1/users', { json: { name, groups: list(flags.groups), ...(flags.email === undefined ? {} : { email: flags.email }) } });
    io.out(`user/${printable(created.name)} created`);
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
    else for (const line of table(['NAME', 'EMAIL', 'GROUPS', 'STATE', 'UPDATED'], items.map((u) => [u.name, u.email, u.groups, u.disabled ? 'disabled' : 'active', shortTime(u.updatedAt)]))) io.out(line);
  });
}
