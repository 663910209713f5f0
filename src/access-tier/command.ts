/**
 * `causeway access-tier`: runs an access tier in the foreground (DESIGN.md §5), in one of two ways.
 *
 * Joined to a control plane (the normal way):
 *
 *   causeway access-tier --control-plane https://cp:8440 --join-token T --ca-pin sha256:… --data-dir DIR
 *                        [--listen 0.0.0.0:8443] [--health-listen 127.0.0.1:8081] [--log-level info]
 *
 *   The first start enrolls with the single-use join token (also read from CAUSEWAY_JOIN_TOKEN) and
 *   keeps the identity under DIR; later starts reuse it and ignore the token. The certificate is
 *   renewed automatically and served to new connections at once. Configuration, users, devices and
 *   revocations follow the control plane's config stream; the last good configuration is kept in
 *   DIR and enforced through a control-plane outage (and after a restart during one). Every live
 *   connection is decided again on each change and cut when no longer allowed. Access events go to
 *   a spool under DIR/events and are shipped to the control plane in batches. Live sessions and
 *   tunnels are reported every 5 s and shortly after each change (the console's live sessions), and
 *   an admin's disconnect arrives through the config stream.
 *
 * From files (no control plane):
 *
 *   causeway access-tier --name edge-1 --config specs.yaml --cert edge.crt --key edge.key --ca ca.crt
 *                        [--listen 0.0.0.0:8443] [--events FILE | --data-dir DIR] [--log-level info]
 *
 *   The spec file (the `causeway apply -f` format) is watched and reloaded on change; a file with
 *   problems never replaces the last good configuration. Access events are appended as JSON lines
 *   to --events (default ./access-events.jsonl, or DIR/access-events.jsonl with --data-dir).
 *
 * This is an entry point: it reads files and the environment. Logs are JSON on stdout. With
 * --health-listen, /healthz, /readyz and Prometheus /metrics (src/lib/metrics) answer on that
 * (local) address. SIGTERM or SIGINT drains connections (up to 10 s) and exits.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import { JsonLinesFileSink, SpoolingEventSink, httpEventSender, nodeSpoolFiles } from '../lib/audit/index.ts';
import { FileConfigSource, principalDirectory } from '../lib/config/index.ts';
import { UserError } from '../lib/errors.ts';
import { assertSafePath } from '../lib/fs-safety.ts';
import { configStreamHealth, startHealthServer } from '../lib/health/server.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { httpReportSender } from '../lib/live/reporter.ts';
import { createLogger } from '../lib/log.ts';
import { accessTierStats, meteredSink } from '../lib/metrics/index.ts';
import { parseAuthority } from '../lib/net/target.ts';
import { CAUSEWAY_VERSION } from '../lib/version.ts';
import { createPolicyDecider } from '../lib/policy/index.ts';
import { closeStarted, defaultPartCommandIo, joinAsPart, readPemFlags, requireFileFlags, startMetrics } from '../part-command.ts';
import type { PartCommandIo } from '../part-command.ts';
import { DEFAULT_ACCESS_TIER_PORT, startAccessTier } from './access-tier.ts';
import type { AccessTier } from './access-tier.ts';
import { startSessionReport } from './session-report.ts';

/** What the command touches outside itself; tests replace it. `onStarted` is called once the access tier listens. */
export type AccessTierCommandIo = PartCommandIo<AccessTier>;

const defaultIo: AccessTierCommandIo = defaultPartCommandIo();

export interface AccessTierFlags {
  /** Required from files; with a control plane, the enrolled name (and checked against it when given). */
  name?: string;
  config?: string;
  listen: { host: string; port: number };
  cert?: string;
  key?: string;
  ca?: string;
  events?: string;
  dataDir?: string;
  logLevel: string;
  controlPlane?: string;
  joinToken?: string;
  caPin?: string;
  healthListen?: { host: string; port: number };
}

export function registerAccessTierCommand(program: Command, io: Partial<AccessTierCommandIo> = {}): Command {
  const deps: AccessTierCommandIo = { ...defaultIo, ...io };
  return program
    .command('access-tier')
    .description('Run an access tier: the TLS listener that client proxies and connectors reach')
    .option('--control-plane <url>', 'join this control plane (https://host:port) and follow its configuration')
    .option('--join-token <token>', 'the single-use token from `causeway join-token create access-tier NAME` (first start only; also CAUSEWAY_JOIN_TOKEN)')
    .option('--ca-pin <sha256:hex>', 'the CA pin printed with the join token (first start only)')
    .option('--name <name>', 'this access tier\'s name (its AccessTier spec and certificate carry it); from files, required')
    .option('--config <file>', 'without a control plane: spec YAML with the AccessTier, Connector and Service documents; reloaded when it changes')
    .option('--listen <host:port>', `address to listen on (default 0.0.0.0:${DEFAULT_ACCESS_TIER_PORT})`, parseListen, { host: '0.0.0.0', port: DEFAULT_ACCESS_TIER_PORT })
    .option('--cert <file>', 'without a control plane: this access tier\'s certificate (PEM)')
    .option('--key <file>', 'without a control plane: its private key (PEM)')
    .option('--ca <file>', 'without a control plane: the Causeway CA certificate (PEM)')
    .option('--events <file>', 'without a control plane: append access events here as JSON lines (default ./access-events.jsonl, or DIR/access-events.jsonl with --data-dir)')
    .option('--data-dir <dir>', 'directory for this access tier\'s files (with a control plane: identity, last good configuration, event spool)')
    .option('--health-listen <host:port>', 'serve /healthz, /readyz and /metrics here (keep it local)', parseListen)
    .option('--log-level <level>', 'log level for the JSON logs on stdout (debug, info, warn, error)', 'info')
    .action(async (flags: AccessTierFlags) => {
      await runAccessTier(flags, deps);
    });
}

export async function runAccessTier(flags: AccessTierFlags, io: AccessTierCommandIo): Promise<AccessTier> {
  if (flags.controlPlane !== undefined) return runJoinedAccessTier(flags, flags.controlPlane, io);
  const { name, config: configFile, cert, key, ca } = requireFileFlags('access-tier', flags);
  const eventsPath = eventsPathFor(flags, io.cwd());
  // CN-09: nothing another user could have written decides who we trust, what we allow, or what the audit log says.
  for (const [file, flag] of [[cert, '--cert'], [key, '--key'], [ca, '--ca'], [configFile, '--config'], [eventsPath, '--events']] as const) await assertSafePath(file, flag, 'access-tier-file-unsafe');
  const { certPem, keyPem, caPem } = await readPemFlags('access-tier', { cert, key, ca });
  const logger = createLogger({ name: 'causeway-access-tier', level: flags.logLevel, destination: io.logDestination });
  await mkdir(path.dirname(eventsPath), { recursive: true, mode: 0o700 });

  const config = new FileConfigSource({ path: configFile, logger: logger.child({ part: 'config' }) });
  const started: Closable[] = [config];
  try {
    await config.ready();
    const events = await JsonLinesFileSink.open({ path: eventsPath, logger });
    started.push(events);
    const metrics = startMetrics('access-tier', flags, started, logger);
    const accessTier = await startAccessTier({ name, config, tls: { certPem, keyPem, caPem }, events: metrics === undefined ? events : meteredSink(events, metrics), listen: flags.listen, logger });
    started.push(accessTier);
    metrics?.track({ stats: accessTierStats(accessTier), certificatePem: () => certPem });
    if (flags.healthListen !== undefined) {
      started.push(await startHealthServer({
        ...flags.healthListen,
        logger,
        check: () => ({ ready: true, status: 'ok', message: `serving configuration ${accessTier.stats().configVersion} from ${path.resolve(configFile)}` }),
        ...(metrics === undefined ? {} : { metrics: () => metrics.scrape() }),
      }));
    }
    logger.info({ address: accessTier.address(), events: eventsPath, config: path.resolve(configFile) }, 'access tier started');
    io.onStarted(started, accessTier, logger);
    return accessTier;
  } catch (err) {
    await closeStarted(started);
    throw err;
  }
}

/** Joined to a control plane: identity, configuration, decisions and events all come from and go to it. */
async function runJoinedAccessTier(flags: AccessTierFlags, controlPlaneUrl: string, io: AccessTierCommandIo): Promise<AccessTier> {
  const fileFlags = (['config', 'cert', 'key', 'ca', 'events'] as const).filter((f) => flags[f] !== undefined);
  if (fileFlags.length > 0) throw new UserError('access-tier-flags-conflict', `${fileFlags.map((f) => `--${f}`).join(', ')} ${fileFlags.length === 1 ? 'is' : 'are'} for running without a control plane; with --control-plane the certificate, configuration and events come from and go to the control plane`);
  if (flags.dataDir === undefined) throw new UserError('access-tier-data-dir-missing', 'with --control-plane, give --data-dir DIR: the access tier keeps its identity, its last good configuration and its event spool there');
  const dataDir = path.resolve(io.cwd(), flags.dataDir);
  await assertSafePath(dataDir, '--data-dir', 'access-tier-file-unsafe');
  const logger = createLogger({ name: 'causeway-access-tier', level: flags.logLevel, destination: io.logDestination });
  const started: Closable[] = [];
  try {
    const joined = await joinAsPart('access-tier', { flags, controlPlaneUrl, dataDir, io, logger, started });
    const events = await SpoolingEventSink.open({ files: nodeSpoolFiles(path.join(dataDir, 'events')), send: httpEventSender({ controlPlaneUrl, tls: () => joined.tls() }), logger });
    started.push(events);
    const metrics = startMetrics('access-tier', flags, started, logger);
    metrics?.track({ config: () => joined.config.status(), certificatePem: () => joined.tls().certPem });
    if (flags.healthListen !== undefined) {
      started.push(await startHealthServer({
        ...flags.healthListen,
        logger,
        check: () => configStreamHealth(joined.config.status(), Date.now()),
        ...(metrics === undefined ? {} : { metrics: () => metrics.scrape() }),
      }));
    }
    if (joined.config.current() === undefined) logger.info({ controlPlane: controlPlaneUrl }, 'waiting for the first configuration from the control plane');
    const decider = createPolicyDecider({ directory: principalDirectory, onError: (err) => logger.error({ err }, 'a policy decision failed; the connection was denied') });
    const accessTier = await startAccessTier({ name: joined.name, config: joined.config, tls: joined.tls(), events: metrics === undefined ? events : meteredSink(events, metrics), decider, listen: flags.listen, logger });
    started.push(accessTier);
    metrics?.track({ stats: accessTierStats(accessTier) });
    joined.onRenewed((tls) => accessTier.setTls(tls));
    const reports = httpReportSender({ controlPlaneUrl, tls: () => joined.tls() });
    const reporter = startSessionReport({ accessTier, send: reports, version: CAUSEWAY_VERSION, logger: logger.child({ part: 'live-report' }) });
    started.push({
      close: async () => {
        await reporter.close();
        reports.close();
      },
    });
    logger.info({ address: accessTier.address(), name: joined.name, controlPlane: controlPlaneUrl, dataDir }, 'access tier started');
    io.onStarted(started, accessTier, logger);
    return accessTier;
  } catch (err) {
    await closeStarted(started);
    throw err;
  }
}

export function eventsPathFor(flags: Pick<AccessTierFlags, 'events' | 'dataDir'>, cwd: string): string {
  if (flags.events !== undefined) return path.resolve(cwd, flags.events);
  if (flags.dataDir !== undefined) return path.resolve(cwd, flags.dataDir, 'access-events.jsonl');
  return path.resolve(cwd, 'access-events.jsonl');
}

/** `host:port`, `[v6]:port` or `:port` (all addresses); port 0 picks a free port. */
export function parseListen(value: string): { host: string; port: number } {
  const text = value.startsWith(':') ? `0.0.0.0${value}` : value;
  const anyPort = text.endsWith(':0');
  const parsed = parseAuthority(anyPort ? `${text.slice(0, -1)}1` : text);
  if (!parsed.ok) throw new InvalidArgumentError(`--listen must be host:port, [IPv6]:port or :port (${parsed.message})`);
  return { host: parsed.target.host, port: anyPort ? 0 : parsed.target.port };
}
