/**
 * What `causeway access-tier`, `causeway connector` (and, for joining, `causeway kube-proxy`) share: the outside they touch, the check of
 * the from-files flags, reading the PEM files, joining a control plane, the metrics behind
 * --health-listen, and closing what had started when a start fails. An entry-point module (process
 * defaults, files, the environment), so it lives beside the commands rather than in src/lib; the
 * two parts import it and never each other.
 */
import { readFile } from 'node:fs/promises';
import type { DestinationStream } from 'pino';
import { joinControlPlane, nodePeerFiles } from './lib/enroll/index.ts';
import type { JoinedPeer } from './lib/enroll/index.ts';
import { UserError, errorCode, errorMessage } from './lib/errors.ts';
import { closeOnSignals } from './lib/lifecycle.ts';
import type { Closable } from './lib/lifecycle.ts';
import type { Logger } from './lib/log.ts';
import { createPartMetrics } from './lib/metrics/index.ts';
import type { MetricsPart, PartMetrics } from './lib/metrics/index.ts';

/** What a part's command touches outside itself; tests replace it. */
export interface PartCommandIo<P> {
  cwd: () => string;
  /** The environment (CAUSEWAY_JOIN_TOKEN). */
  env: () => Record<string, string | undefined>;
  /** With --control-plane: told about the joined identity and config stream (embedding, tests). */
  onJoined?: (joined: JoinedPeer) => void;
  /** Where JSON logs go (stdout by default). */
  logDestination: DestinationStream;
  /** Called once the part runs; the default closes everything on SIGTERM/SIGINT. */
  onStarted: (parts: Closable[], part: P, logger: Logger) => void;
}

export function defaultPartCommandIo<P>(): PartCommandIo<P> {
  return {
    cwd: () => process.cwd(),
    env: () => process.env,
    logDestination: process.stdout,
    onStarted: (parts, _part, logger) => closeOnSignals(parts, logger),
  };
}

/** The flags both commands take for running from files and for joining a control plane. */
export interface PartFlags {
  name?: string;
  config?: string;
  cert?: string;
  key?: string;
  ca?: string;
  joinToken?: string;
  caPin?: string;
  healthListen?: { host: string; port: number };
}

export type FileModeFlags = Required<Pick<PartFlags, 'name' | 'config' | 'cert' | 'key' | 'ca'>>;

/** Without --control-plane, every file flag is needed: says which are missing. */
export function requireFileFlags(part: MetricsPart, flags: PartFlags): FileModeFlags {
  const missing = (['name', 'config', 'cert', 'key', 'ca'] as const).filter((f) => flags[f] === undefined);
  if (missing.length > 0) {
    throw new UserError(`${part}-flags-missing`, `give ${missing.map((f) => `--${f}`).join(', ')} to run from files, or --control-plane URL --join-token T --ca-pin PIN --data-dir DIR to join a control plane`);
  }
  return flags as FileModeFlags;
}

/** --cert, --key and --ca, read. */
export async function readPemFlags(part: MetricsPart, flags: Pick<FileModeFlags, 'cert' | 'key' | 'ca'>): Promise<{ certPem: string; keyPem: string; caPem: string }> {
  const [certPem, keyPem, caPem] = await Promise.all([readPem(part, flags.cert, '--cert'), readPem(part, flags.key, '--key'), readPem(part, flags.ca, '--ca')]);
  return { certPem, keyPem, caPem };
}

async function readPem(part: MetricsPart, file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`${part}-file-unreadable`, `cannot read ${flag} ${file} (${errorCode(err) ?? errorMessage(err)}); check the path and its permissions`, { cause: err });
  }
}

/**
 * Joins the control plane with the identity in `dataDir` (enrolling with the join token, from the
 * flag or CAUSEWAY_JOIN_TOKEN, on the first start), adds it to `started`, tells `io.onJoined`, and
 * refuses a --name other than the enrolled one.
 */
export async function joinAsPart<P>(
  part: MetricsPart | 'kube-proxy',
  o: { flags: PartFlags; controlPlaneUrl: string; dataDir: string; io: PartCommandIo<P>; logger: Logger; started: Closable[] },
): Promise<JoinedPeer> {
  const { flags, controlPlaneUrl, dataDir, io, logger, started } = o;
  const joinToken = flags.joinToken ?? io.env().CAUSEWAY_JOIN_TOKEN;
  const joined = await joinControlPlane({
    kind: part,
    controlPlaneUrl,
    ...(joinToken === undefined || joinToken === '' ? {} : { joinToken }),
    ...(flags.caPin === undefined ? {} : { caPin: flags.caPin }),
    files: nodePeerFiles(dataDir),
    logger,
  });
  started.push(joined);
  io.onJoined?.(joined);
  if (flags.name !== undefined && flags.name !== joined.name) {
    throw new UserError(`${part}-name-mismatch`, `--name ${flags.name} does not match this ${part.replace('-', ' ')}'s enrolled name "${joined.name}" (in ${dataDir}); drop --name or use another --data-dir`);
  }
  return joined;
}

/** The metrics /metrics serves, with --health-listen only (nothing scrapes them otherwise); closed with the other parts. */
export function startMetrics(part: MetricsPart, flags: PartFlags, started: Closable[], logger: Logger): PartMetrics | undefined {
  if (flags.healthListen === undefined) return undefined;
  const metrics = createPartMetrics(part, { logger });
  started.push({ close: () => Promise.resolve(metrics.close()) });
  return metrics;
}

/** A start failed: closes what had started, last first, and lets the start's error stand. */
export async function closeStarted(started: Closable[]): Promise<void> {
  for (const part of started.reverse()) await part.close().catch(() => undefined);
}
