/**
 * `causeway events`: access decisions (who reached what, or was refused, and why), newest first;
 * with `--audit`, the audit log of changes (who changed what, before and after); with `--kube`, what
 * went through the kube proxies (every Kubernetes request, and exec/attach/port-forward sessions with
 * their command: `--sessions`).
 */
import { UserError } from '../lib/errors.ts';
import type { Command } from 'commander';
import { ApiClient } from './client.ts';
import type { AdminIo, ConnectionFlags } from './client.ts';
import { parseOutputFormat, parseTimeFlag, shortTime, table, toJson, toYamlDocuments } from './output.ts';
import type { OutputFormat } from './output.ts';

interface EventsFlags extends ConnectionFlags {
  service?: string;
  user?: string;
  device?: string;
  decision?: string;
  since?: string;
  until?: string;
  limit: string;
  audit?: boolean;
  kube?: boolean;
  sessions?: boolean;
  cluster?: string;
  namespace?: string;
  verb?: string;
  kind?: string;
  name?: string;
  actor?: string;
  action?: string;
  output: OutputFormat;
}

type Event = Record<string, unknown>;

/** At most this many events per page asked of the server. */
const PAGE = 500;

export function registerEventCommands(program: Command, io: AdminIo, connection: (command: Command) => Command): void {
  connection(
    program
      .command('events')
      .description('Show access events (every decision the access tiers made), newest first; --audit shows who changed what')
      .option('--service <name>', 'only this service')
      .option('--user <user>', 'only this user')
      .option('--device <id>', 'only this device')
      .option('--decision <decision>', 'allow, deny or would-deny')
      .option('--since <time>', 'from this time: ISO 8601, or a duration ago such as 15m, 1h, 7d')
      .option('--until <time>', 'before this time (same forms)')
      .option('--limit <n>', 'at most this many events', '100')
      .option('--audit', 'the audit log of changes instead of access events')
      .option('--kube', 'kube proxy events (Kubernetes requests and exec/attach/port-forward sessions) instead of access events')
      .option('--sessions', 'kube: only exec/attach/port-forward sessions (with their command)')
      .option('--cluster <name>', 'kube: only this cluster')
      .option('--namespace <ns>', 'kube: only this namespace')
      .option('--verb <verb>', 'kube: only this verb (get, list, watch, create, …)')
      .option('--kind <kind>', 'audit: only this kind (Service, User, ApiToken, …)')
      .option('--name <name>', 'audit: only this object')
      .option('--actor <actor>', 'audit: only changes by this actor (token:<id>, system, …)')
      .option('--action <action>', 'audit: create, update, delete, revoke, ban, …')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (flags: EventsFlags) => {
    const limit = Number(flags.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new UserError('BAD_ARGUMENT', '--limit must be a whole number from 1 to 100000.');
    const client = await ApiClient.connect(flags, io);
    const query = new URLSearchParams();
    const set = (key: string, value: string | undefined): void => {
      if (value !== undefined) query.set(key, value);
    };
    set('since', flags.since === undefined ? undefined : parseTimeFlag(flags.since, io.now()));
    set('until', flags.until === undefined ? undefined : parseTimeFlag(flags.until, io.now()));
    if (flags.audit === true && flags.kube === true) throw new UserError('BAD_ARGUMENT', 'give --audit or --kube, not both.');
    if (flags.kube === true) {
      set('user', flags.user);
      set('device', flags.device);
      set('decision', flags.decision);
      set('cluster', flags.cluster);
      set('namespace', flags.namespace);
      set('verb', flags.verb);
      if (flags.sessions === true) set('type', 'kube-session');
    } else if (flags.audit === true) {
      set('kind', flags.kind);
      set('name', flags.name);
      set('actor', flags.actor);
      set('action', flags.action);
    } else {
      set('service', flags.service);
      set('user', flags.user);
      set('device', flags.device);
      set('decision', flags.decision);
    }
    const path = flags.kube === true ? '/api/v1/kube-events' : flags.audit === true ? '/api/v1/audit' : '/api/v1/events';
    const events: Event[] = [];
    let cursor: string | undefined;
    do {
      const page = new URLSearchParams(query);
      page.set('limit', String(Math.min(PAGE, limit - events.length)));
      if (cursor !== undefined) page.set('cursor', cursor);
      const answer = await client.call<{ events: Event[]; next?: string }>('GET', `${path}?${page.toString()}`);
      events.push(...answer.events);
      cursor = answer.next;
    } while (cursor !== undefined && events.length < limit);

    if (flags.output === 'json') io.out(toJson(events));
    else if (flags.output === 'yaml') {
      if (events.length > 0) io.out(toYamlDocuments(events));
    } else if (events.length === 0) io.err('No events.');
    else if (flags.kube === true) {
      const what = (e: Event): string => [e.resource, e.subresource].filter((x) => typeof x === 'string').join('/') || (typeof e.path === 'string' ? e.path : '');
      const detail = (e: Event): string => (Array.isArray(e.command) ? e.command.map(String).join(' ') : typeof e.reason === 'string' ? e.reason : '');
      const rows = events.map((e) => [shortTime(e.time), e.decision, e.user, e.device, e.clusterName, e.verb, what(e), e.namespace, e.name, e.code, detail(e)]);
      for (const line of table(['TIME', 'DECISION', 'USER', 'DEVICE', 'CLUSTER', 'VERB', 'RESOURCE', 'NAMESPACE', 'NAME', 'CODE', 'COMMAND/REASON'], rows)) io.out(line);
    } else if (flags.audit === true) {
      for (const line of table(['TIME', 'ACTOR', 'ACTION', 'KIND', 'NAME'], events.map((e) => [shortTime(e.at), e.actor, e.action, e.kind, e.name]))) io.out(line);
    } else {
      const rows = events.map((e) => [shortTime(e.time), e.decision, e.user, e.device, e.service, e.target, e.reasons]);
      for (const line of table(['TIME', 'DECISION', 'USER', 'DEVICE', 'SERVICE', 'TARGET', 'REASONS'], rows)) io.out(line);
    }
  });
}
