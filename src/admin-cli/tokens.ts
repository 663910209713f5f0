/**
 * `causeway join-token create KIND NAME` (a single-use token and the exact command that enrolls the
 * part) and `causeway token create|list|revoke` (API tokens for admins and scripts). A secret is
 * printed once, when it is made.
 */
import { UserError } from '../lib/errors.ts';
import type { Command } from 'commander';
import { ApiClient } from './client.ts';
import type { AdminIo, ConnectionFlags } from './client.ts';
import { parseOutputFormat, printable, shortTime, table, toJson, toYamlDocuments } from './output.ts';
import type { OutputFormat } from './output.ts';

const JOIN_KINDS = ['access-tier', 'connector', 'kube-proxy'];

interface JoinTokenAnswer {
  token: string;
  id: string;
  kind: string;
  name: string;
  expiresAt: string;
  caPin: string;
  command: string;
}

interface ApiTokenRecord {
  id: string;
  name: string;
  scope: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

function print(io: AdminIo, format: OutputFormat, value: unknown): void {
  io.out(format === 'yaml' ? toYamlDocuments([value]) : toJson(value));
}

/** `PARENT list`: the items at `path` as a table, or with -o as one JSON or YAML document. */
function registerList<T>(
  parent: Command,
  io: AdminIo,
  connection: (command: Command) => Command,
  list: { description: string; path: string; headers: string[]; row: (item: T) => unknown[] },
): void {
  connection(
    parent
      .command('list')
      .description(list.description)
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (flags: ConnectionFlags & { output: OutputFormat }) => {
    const client = await ApiClient.connect(flags, io);
    const { items } = await client.call<{ items: T[] }>('GET', list.path);
    if (flags.output !== 'table') print(io, flags.output, items);
    else for (const line of table(list.headers, items.map(list.row))) io.out(line);
  });
}

export function registerTokenCommands(program: Command, io: AdminIo, connection: (command: Command) => Command): void {
  const join = program.command('join-token').description('Single-use tokens that enroll an access tier, connector or kube proxy');
  connection(
    join
      .command('create')
      .description('Create a join token and print the command to run on the part\'s machine')
      .argument('<kind>', JOIN_KINDS.join(', '))
      .argument('<name>', 'the name the part will have (its AccessTier or Connector name)')
      .option('--ttl <duration>', 'how long it stays valid, such as 15m or 1h (at most 24h)', '1h')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (kind: string, name: string, flags: ConnectionFlags & { ttl: string; output: OutputFormat }) => {
    if (!JOIN_KINDS.includes(kind)) throw new UserError('BAD_ARGUMENT', `The kind must be one of ${JOIN_KINDS.join(', ')}.`);
    const client = await ApiClient.connect(flags, io);
    const answer = await client.call<JoinTokenAnswer>('POST', '/api/v1/join-tokens', { json: { kind, name, ttl: flags.ttl } });
    if (flags.output !== 'table') {
      print(io, flags.output, answer);
      return;
    }
    io.out(`Join token for ${answer.kind} ${printable(answer.name)}: single use, valid until ${answer.expiresAt}.`);
    io.out('On that machine, run:');
    io.out('');
    io.out(`  ${printable(answer.command)}`);
    io.out('');
  });
  registerList<Record<string, unknown>>(join, io, connection, {
    description: 'List join tokens (never their secrets)',
    path: '/api/v1/join-tokens',
    headers: ['ID', 'KIND', 'NAME', 'EXPIRES', 'USED'],
    row: (t) => [t.id, t.kind, t.name, shortTime(t.expiresAt), shortTime(t.usedAt)],
  });

  const token = program.command('token').description('API tokens for admins and scripts');
  connection(
    token
      .command('create')
      .description('Create an API token; it is printed once')
      .argument('<name>', 'what it is for, such as ci or grafana')
      .option('--scope <scope>', 'viewer (read only) or admin', 'viewer')
      .option('--ttl <duration>', 'how long it stays valid, such as 30d (default: until revoked)')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (name: string, flags: ConnectionFlags & { scope: string; ttl?: string; output: OutputFormat }) => {
    if (flags.scope !== 'viewer' && flags.scope !== 'admin') throw new UserError('BAD_ARGUMENT', '--scope must be viewer or admin.');
    const client = await ApiClient.connect(flags, io);
    const answer = await client.call<{ token: string; record: ApiTokenRecord }>('POST', '/api/v1/tokens', { json: { name, scope: flags.scope, ...(flags.ttl === undefined ? {} : { ttl: flags.ttl }) } });
    if (flags.output !== 'table') {
      print(io, flags.output, answer);
      return;
    }
    io.out(`API token ${printable(answer.record.name)} (${answer.record.scope}, id ${answer.record.id}${answer.record.expiresAt === null ? '' : `, valid until ${answer.record.expiresAt}`}):`);
    io.out(answer.token);
    io.err('It is shown only now: store it somewhere safe (use it as CAUSEWAY_TOKEN).');
  });
  registerList<ApiTokenRecord>(token, io, connection, {
    description: 'List API tokens (never their secrets)',
    path: '/api/v1/tokens',
    headers: ['ID', 'NAME', 'SCOPE', 'CREATED', 'EXPIRES', 'STATE', 'LAST-USED'],
    row: (t) => [t.id, t.name, t.scope, shortTime(t.createdAt), t.expiresAt === null ? 'never' : shortTime(t.expiresAt), t.revokedAt === null ? '-' : `revoked ${shortTime(t.revokedAt)}`, shortTime(t.lastUsedAt)],
  });
  connection(
    token
      .command('revoke')
      .description('Revoke an API token at once')
      .argument('<id>', 'the token id (from causeway token list)'),
  ).action(async (id: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    const record = await client.call<ApiTokenRecord>('DELETE', `/api/v1/tokens/${encodeURIComponent(id)}`);
    io.out(`token/${record.id} (${printable(record.name)}) revoked`);
  });
}
