/**
 * `causeway device list|show|ban|unban|unregister|override|clear-override|rescore`: registered devices
 * and their trust.
 *
 *   causeway device list [--user NAME]                 each device with its trust level
 *   causeway device show ID                            the verdict explained: factors, device managers, overrides
 *   causeway device override ID --max-level Low --reason "incident 4711" --source security-team [--expires 8h]
 *   causeway device clear-override ID --source security-team
 *
 * A device is named by its id; a unique id prefix or host name works too.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { UserError } from '../lib/errors.ts';
import { ApiCallError, ApiClient } from './client.ts';
import type { AdminIo, ConnectionFlags } from './client.ts';
import { parseOutputFormat, printable, shortTime, table, toJson, toYamlDocuments } from './output.ts';
import type { OutputFormat } from './output.ts';

interface Factor {
  type?: string;
  profile?: string;
  met?: boolean;
  effect?: string;
  observed?: unknown;
  required?: string;
  reason?: string;
  remedy?: string;
}

interface Trust {
  level?: string;
  reasons?: string[];
  explanation?: string;
  factors?: Factor[];
  profiles?: string[];
  stale?: boolean;
  scoredAt?: string;
  staleAt?: string | null;
}

interface Override {
  source?: string;
  maxLevel?: string;
  reason?: string;
  setBy?: string;
  setAt?: string;
  expiresAt?: string | null;
}

interface MdmState {
  managed?: boolean;
  compliant?: boolean | null;
  score?: number;
  at?: string;
  source?: string;
}

interface DeviceRecord {
  id: string;
  userId: string;
  platform: string;
  osVersion?: string | null;
  serial?: string | null;
  hostname?: string | null;
  ownership?: string;
  registeredAt?: string;
  banned: boolean;
  lastSeen?: string | null;
  postureAt?: string | null;
  trust?: Trust | null;
  mdm?: Record<string, MdmState>;
  trustOverrides?: Override[];
  version: number;
}

interface UserRecord {
  id: string;
  name: string;
}

const LEVELS = ['High', 'Medium', 'Low', 'AlwaysDeny'] as const;
const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function parseLevel(value: string): string {
  const level = LEVELS.find((l) => l.toLowerCase() === value.toLowerCase());
  if (level === undefined) throw new InvalidArgumentError(`must be one of ${LEVELS.join(', ')}`);
  return level;
}

/** `--expires`: a duration from now (`30m`, `8h`, `7d`) or an ISO time; it must lie ahead. */
export function parseExpires(value: string, now: number): string {
  const relative = /^([0-9]{1,6})([smhd])$/.exec(value.trim());
  const ms = relative === null ? Date.parse(value) : now + Number(relative[1]) * UNIT_MS[relative[2]];
  if (!Number.isFinite(ms)) throw new UserError('BAD_ARGUMENT', `--expires "${printable(value.slice(0, 64))}" is not a time: give a duration from now (30m, 8h, 7d) or an ISO time (2026-12-01T00:00:00Z)`);
  if (ms <= now) throw new UserError('BAD_ARGUMENT', '--expires lies in the past: give a later time, or leave it out for an override until cleared');
  return new Date(ms).toISOString();
}

function devicePath(id: string, rest = ''): string {
  return `/api/v1/devices/${encodeURIComponent(id)}${rest}`;
}

function levelOf(device: DeviceRecord): string {
  return typeof device.trust?.level === 'string' ? device.trust.level : 'unscored';
}

/** A device by id, else by a unique id prefix or host name (what people have at hand). */
async function findDevice(client: ApiClient, name: string): Promise<DeviceRecord> {
  try {
    return await client.call<DeviceRecord>('GET', devicePath(name));
  } catch (err) {
    if (!(err instanceof ApiCallError) || err.status !== 404) throw err;
  }
  const { items } = await client.call<{ items: DeviceRecord[] }>('GET', '/api/v1/devices');
  const matches = items.filter((d) => d.id.startsWith(name) || d.hostname === name);
  if (matches.length === 1 && matches[0] !== undefined) return matches[0];
  if (matches.length > 1) throw new UserError('DEVICE_AMBIGUOUS', `"${printable(name)}" names ${matches.length} devices (${matches.map((d) => printable(d.id)).join(', ')}); give the full id`);
  throw new UserError('NOT_FOUND', `no device "${printable(name)}": see causeway device list`);
}

async function userNames(client: ApiClient): Promise<Map<string, string>> {
  const { items } = await client.call<{ items: UserRecord[] }>('GET', '/api/v1/users');
  return new Map(items.map((u) => [u.id, u.name]));
}

function observedText(value: unknown): string {
  if (value === null || value === undefined) return 'unknown';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The verdict and what is behind it, for people. */
export function describeDevice(device: DeviceRecord, userName: string | undefined): string[] {
  const p = (value: unknown): string => (value === undefined || value === null || value === '' ? '-' : printable(typeof value === 'string' ? value : JSON.stringify(value)));
  const lines = [
    `device:      ${p(device.id)}`,
    `user:        ${p(userName ?? device.userId)}`,
    `platform:    ${p(device.platform)}${device.osVersion ? ` ${p(device.osVersion)}` : ''} (${p(device.ownership)})`,
    `hostname:    ${p(device.hostname)}`,
    `serial:      ${p(device.serial)}`,
    `state:       ${device.banned ? 'BANNED' : 'active'}`,
    `registered:  ${shortTime(device.registeredAt)}`,
    `last report: ${device.postureAt ? shortTime(device.postureAt) : 'never'}`,
  ];
  const trust = device.trust;
  if (trust === null || trust === undefined) {
    lines.push('trust:       not scored yet');
  } else {
    lines.push(`trust:       ${p(trust.level)}${trust.scoredAt ? ` (scored ${shortTime(trust.scoredAt)})` : ''}`);
    if (typeof trust.staleAt === 'string') lines.push(`stale at:    ${shortTime(trust.staleAt)} unless it reports again`);
    lines.push(`reasons:     ${Array.isArray(trust.reasons) && trust.reasons.length > 0 ? trust.reasons.map(p).join(', ') : '-'}`);
    if (typeof trust.explanation === 'string') lines.push(`explanation: ${p(trust.explanation)}`);
    const factors = Array.isArray(trust.factors) ? trust.factors : [];
    if (factors.length > 0) {
      lines.push('factors:');
      for (const f of factors) {
        const head = `  ${f.met === true ? 'met  ' : 'UNMET'} ${p(f.type)} [${p(f.effect)}, profile ${p(f.profile)}]: observed ${p(observedText(f.observed))}, required ${p(f.required)}`;
        lines.push(f.met === true || !f.remedy ? head : `${head}; to fix: ${p(f.remedy)}`);
      }
    }
  }
  const managers = Object.entries(device.mdm ?? {});
  if (managers.length > 0) {
    lines.push('device managers:');
    for (const [name, s] of managers) {
      const compliance = s.compliant === true ? 'compliant' : s.compliant === false ? 'NON-COMPLIANT' : 'compliance unknown';
      lines.push(`  ${p(name)}: ${s.managed === true ? 'managed' : 'not managed'}, ${compliance}${typeof s.score === 'number' ? `, score ${s.score}` : ''} (${shortTime(s.at)})`);
    }
  }
  const overrides = device.trustOverrides ?? [];
  if (overrides.length > 0) {
    lines.push('overrides:');
    for (const o of overrides) {
      lines.push(`  ${p(o.source)}: at most ${p(o.maxLevel)}, ${p(o.reason)} (set by ${p(o.setBy)} ${shortTime(o.setAt)}${o.expiresAt ? `, until ${shortTime(o.expiresAt)}` : ''})`);
    }
  }
  return lines;
}

export function registerDeviceCommands(program: Command, io: AdminIo, connection: (command: Command) => Command): void {
  const device = program.command('device').description('Registered devices and their trust');

  connection(
    device
      .command('list')
      .description('List devices with their trust level')
      .option('--user <name>', 'only this user\'s devices')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (flags: ConnectionFlags & { user?: string; output: OutputFormat }) => {
    const client = await ApiClient.connect(flags, io);
    const query = flags.user === undefined ? '' : `?user=${encodeURIComponent(flags.user)}`;
    const { items } = await client.call<{ items: DeviceRecord[] }>('GET', `/api/v1/devices${query}`);
    if (flags.output === 'json') return io.out(toJson(items));
    if (flags.output === 'yaml') return io.out(toYamlDocuments(items));
    const names = await userNames(client);
    const rows = items.map((d) => [d.id, names.get(d.userId) ?? d.userId, d.platform, d.hostname, d.banned ? 'banned' : 'active', levelOf(d), d.trust?.reasons ?? [], d.postureAt ? shortTime(d.postureAt) : 'never']);
    for (const line of table(['ID', 'USER', 'PLATFORM', 'HOSTNAME', 'STATE', 'TRUST', 'REASONS', 'REPORTED'], rows)) io.out(line);
  });

  connection(
    device
      .command('show')
      .description('Show a device: its trust level, why, and what would fix it')
      .argument('<id>', 'the device id (or a unique id prefix, or its host name)')
      .option('-o, --output <format>', 'table, json or yaml', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (id: string, flags: ConnectionFlags & { output: OutputFormat }) => {
    const client = await ApiClient.connect(flags, io);
    const found = await findDevice(client, id);
    if (flags.output === 'json') return io.out(toJson(found));
    if (flags.output === 'yaml') return io.out(toYamlDocuments([found]));
    const names = await userNames(client);
    for (const line of describeDevice(found, names.get(found.userId))) io.out(line);
  });

  for (const action of ['ban', 'unban'] as const) {
    connection(
      device
        .command(action)
        .description(action === 'ban' ? 'Ban a device: access through it ends at once' : 'Lift a ban')
        .argument('<id>', 'the device id (or a unique id prefix, or its host name)'),
    ).action(async (id: string, flags: ConnectionFlags) => {
      const client = await ApiClient.connect(flags, io);
      const found = await findDevice(client, id);
      await client.call<DeviceRecord>('POST', devicePath(found.id, `/${action}`));
      io.out(`device/${printable(found.id)} ${action === 'ban' ? 'banned' : 'unbanned'}`);
    });
  }

  connection(
    device
      .command('unregister')
      .description('Unregister a device: it must register again (its certificates stop working)')
      .argument('<id>', 'the device id (or a unique id prefix, or its host name)'),
  ).action(async (id: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    const found = await findDevice(client, id);
    await client.call('DELETE', devicePath(found.id));
    io.out(`device/${printable(found.id)} unregistered`);
  });

  connection(
    device
      .command('override')
      .description('Cap a device\'s trust level (one override per source; the strictest wins)')
      .argument('<id>', 'the device id (or a unique id prefix, or its host name)')
      .requiredOption('--max-level <level>', `the most this source allows: ${LEVELS.join(', ')}`, parseLevel)
      .requiredOption('--reason <text>', 'why, shown to the user and kept in the audit log')
      .requiredOption('--source <name>', 'who caps it, e.g. security-team (a later override of this source replaces it)')
      .option('--expires <when>', 'when it lifts by itself: a duration (30m, 8h, 7d) or an ISO time; default: until cleared'),
  ).action(async (id: string, flags: ConnectionFlags & { maxLevel: string; reason: string; source: string; expires?: string }) => {
    const expiresAt = flags.expires === undefined ? undefined : parseExpires(flags.expires, io.now());
    const client = await ApiClient.connect(flags, io);
    const found = await findDevice(client, id);
    const answer = await client.call<{ trust: Trust | null }>('PUT', devicePath(found.id, '/trust-override'), {
      json: { source: flags.source, maxLevel: flags.maxLevel, reason: flags.reason, ...(expiresAt === undefined ? {} : { expiresAt }) },
    });
    io.out(`device/${printable(found.id)} capped at ${printable(flags.maxLevel)} by ${printable(flags.source)}${expiresAt === undefined ? '' : ` until ${shortTime(expiresAt)}`}; trust now ${printable(answer.trust?.level ?? 'unscored')}`);
  });

  connection(
    device
      .command('clear-override')
      .description('Lift one source\'s cap on a device\'s trust level')
      .argument('<id>', 'the device id (or a unique id prefix, or its host name)')
      .requiredOption('--source <name>', 'whose override to lift'),
  ).action(async (id: string, flags: ConnectionFlags & { source: string }) => {
    const client = await ApiClient.connect(flags, io);
    const found = await findDevice(client, id);
    const answer = await client.call<{ trust: Trust | null }>('DELETE', devicePath(found.id, `/trust-override/${encodeURIComponent(flags.source)}`));
    io.out(`device/${printable(found.id)} override of ${printable(flags.source)} cleared; trust now ${printable(answer.trust?.level ?? 'unscored')}`);
  });

  connection(
    device
      .command('rescore')
      .description('Score a device now and show its level')
      .argument('<id>', 'the device id (or a unique id prefix, or its host name)'),
  ).action(async (id: string, flags: ConnectionFlags) => {
    const client = await ApiClient.connect(flags, io);
    const found = await findDevice(client, id);
    const answer = await client.call<{ trust: Trust | null }>('POST', devicePath(found.id, '/rescore'));
    io.out(`device/${printable(found.id)} trust ${printable(answer.trust?.level ?? 'unscored')}`);
    if (typeof answer.trust?.explanation === 'string') io.out(printable(answer.trust.explanation));
  });
}
