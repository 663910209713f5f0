/**
 * `causeway sessions`: who is connected to what right now, on every access tier (DESIGN §5), and
 * `causeway sessions disconnect ID`, which cuts one of them at once (the access tier that holds it
 * records the access event with closeReason `disconnected-by-admin`; the audit log says who did it).
 *
 *     causeway sessions [--user NAME] [--service NAME] [--access-tier NAME] [-o json|yaml]
 *     causeway sessions disconnect ID
 */
import type { Command } from 'commander';
import { UserError } from '../lib/errors.ts';
import { ApiClient } from './client.ts';
import type { AdminIo, ConnectionFlags } from './client.ts';
import { parseOutputFormat, shortTime, table, toJson, toYamlDocuments } from './output.ts';
import type { OutputFormat } from './output.ts';

interface SessionsFlags extends ConnectionFlags {
  user?: string;
  service?: string;
  accessTier?: string;
  output: OutputFormat;
}

type Session = Record<string, unknown>;

/** 1234567 → "1.2 MB": short enough for a table. */
export function humanBytes(value: unknown): string {
  const n = typeof value === 'number' && Number.isFinite(value) ? value : 0;
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function registerSessionCommands(program: Command, io: AdminIo, connection: (command: Command) => Command): void {
  const sessions = connection(
    program
      .command('sessions')
      .description('Show live sessions on every access tier: user, device, service, since, bytes (disconnect ID cuts one)')
      .option('--user <user>', 'only this user (name or id)')
      .option('--service <name>', 'only this service')
      .option('--access-tier <name>', 'only this access tier')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (flags: SessionsFlags) => {
    const client = await ApiClient.connect(flags, io);
    const query = new URLSearchParams();
    if (flags.user !== undefined) query.set('user', flags.user);
    if (flags.service !== undefined) query.set('service', flags.service);
    if (flags.accessTier !== undefined) query.set('accessTier', flags.accessTier);
    const text = query.toString();
    const answer = await client.call<{ sessions: Session[] }>('GET', `/api/v1/sessions${text === '' ? '' : `?${text}`}`);
    const list = answer.sessions;
    if (flags.output === 'json') io.out(toJson(list));
    else if (flags.output === 'yaml') {
      if (list.length > 0) io.out(toYamlDocuments(list));
    } else if (list.length === 0) io.err('No live sessions.');
    else {
      const rows = list.map((s) => [s.id, s.userName ?? s.user ?? '-', s.deviceName ?? s.device ?? '-', s.service, s.accessTier, shortTime(s.since), humanBytes(s.bytesUp), humanBytes(s.bytesDown), s.source]);
      for (const line of table(['ID', 'USER', 'DEVICE', 'SERVICE', 'ACCESS TIER', 'SINCE', 'UP', 'DOWN', 'SOURCE'], rows)) io.out(line);
    }
  });

  connection(
    sessions
      .command('disconnect <id>')
      .description('Cut a live session now, on whichever access tier holds it (its access event says disconnected-by-admin)')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (id: string, flags: ConnectionFlags & { output: OutputFormat }) => {
    if (!/^[A-Za-z0-9-]{1,128}$/.test(id)) throw new UserError('BAD_ARGUMENT', 'the session id is the ID column of `causeway sessions` (letters, digits and dashes)');
    const client = await ApiClient.connect(flags, io);
    const answer = await client.call<{ session: Session; disconnectedAt: string; by: string; alreadyPending: boolean }>('POST', `/api/v1/sessions/${id}/disconnect`, { json: {} });
    if (flags.output === 'json') io.out(toJson(answer));
    else if (flags.output === 'yaml') io.out(toYamlDocuments([answer]));
    else {
      const s = answer.session as { userName?: string; user?: string; service?: string; accessTier?: string };
      const who = s.userName ?? s.user ?? 'an unknown user';
      io.out(`${answer.alreadyPending ? 'Already disconnecting' : 'Disconnected'} session ${id} (${who} to ${s.service ?? '?'} on ${s.accessTier ?? '?'}).`);
    }
  });
}
