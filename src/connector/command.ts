/**
 * `causeway connector`: runs a connector in the foreground (DESIGN.md §5), in one of two ways.
 *
 * Joined to a control plane (the normal way):
 *
 *   causeway connector --control-plane https://cp:8440 --join-token T --ca-pin sha256:… --data-dir DIR
 *                      [--health-listen 127.0.0.1:8082] [--log-level info]
 *
 *   The first start enrolls with the single-use join token (also read from CAUSEWAY_JOIN_TOKEN) and
 *   keeps the identity under DIR; later starts reuse it. The certificate is renewed automatically
 *   and used for every new tunnel. The connector follows its Connector spec and the AccessTier
 *   specs of its cluster through the config stream, keeping the last good configuration in DIR.
 *
 * From files (no control plane):
 *
 *   causeway connector --name dc1 --config specs.yaml --cert dc1.crt --key dc1.key --ca ca.crt [--log-level info]
 *
 *   The spec file is watched and reloaded on change: the connector follows its own Connector spec
 *   (cluster, allow-list) and dials every AccessTier of that cluster.
 *
 * This is an entry point: it reads files and the environment. Logs are JSON on stdout. With
 * --health-listen, /healthz, /readyz and Prometheus /metrics (src/lib/metrics) answer on that
 * (local) address. SIGTERM or SIGINT drains streams (up to 10 s) and exits.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { FileConfigSource } from '../lib/config/index.ts';
import { UserError } from '../lib/errors.ts';
import { assertSafePath } from '../lib/fs-safety.ts';
import { configStreamHealth, startHealthServer } from '../lib/health/server.ts';
import type { HealthReport } from '../lib/health/server.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { httpReportSender, startPeerReporter } from '../lib/live/reporter.ts';
import type { ConnectorReport } from '../lib/live/wire.ts';
import { createLogger } from '../lib/log.ts';
import { connectorStats } from '../lib/metrics/index.ts';
import { parseAuthority } from '../lib/net/target.ts';
import { CAUSEWAY_VERSION } from '../lib/version.ts';
import { closeStarted, defaultPartCommandIo, joinAsPart, readPemFlags, requireFileFlags, startMetrics } from '../part-command.ts';
import type { PartCommandIo } from '../part-command.ts';
import { startConnector } from './connector.ts';
import type { Connector, ConnectorStatus } from './connector.ts';

/** What the command touches outside itself; tests replace it. `onStarted` is called once the connector runs. */
export type ConnectorCommandIo = PartCommandIo<Connector>;

const defaultIo: ConnectorCommandIo = defaultPartCommandIo();

export interface ConnectorFlags {
  /** Required from files; with a control plane, the enrolled name (and checked against it when given). */
  name?: string;
  config?: string;
  cert?: string;
  key?: string;
  ca?: string;
  logLevel: string;
  controlPlane?: string;
  joinToken?: string;
  caPin?: string;
  dataDir?: string;
  healthListen?: { host: string; port: number };
}

export function registerConnectorCommand(program: Command, io: Partial<ConnectorCommandIo> = {}): Command {
  const deps: ConnectorCommandIo = { ...defaultIo, ...io };
  return program
    .command('connector')
    .description('Run a connector: dials out to the access tiers of its cluster and reaches backends they ask for, within its allow-list')
    .option('--control-plane <url>', 'join this control plane (https://host:port) and follow its configuration')
    .option('--join-token <token>', 'the single-use token from `causeway join-token create connector NAME` (first start only; also CAUSEWAY_JOIN_TOKEN)')
    .option('--ca-pin <sha256:hex>', 'the CA pin printed with the join token (first start only)')
    .option('--data-dir <dir>', 'with a control plane: where the connector keeps its identity and last good configuration')
    .option('--health-listen <host:port>', 'serve /healthz, /readyz and /metrics here (keep it local)', parseHealthListen)
    .option('--name <name>', 'this connector\'s name (its Connector spec and certificate carry it); from files, required')
    .option('--config <file>', 'without a control plane: spec YAML with the Connector and AccessTier documents; reloaded when it changes')
    .option('--cert <file>', 'without a control plane: this connector\'s certificate (PEM)')
    .option('--key <file>', 'without a control plane: its private key (PEM)')
    .option('--ca <file>', 'without a control plane: the Causeway CA certificate (PEM)')
    .option('--log-level <level>', 'log level for the JSON logs on stdout (debug, info, warn, error)', 'info')
    .action(async (flags: ConnectorFlags) => {
      await runConnector(flags, deps);
    });
}

export async function runConnector(flags: ConnectorFlags, io: ConnectorCommandIo): Promise<Connector> {
  if (flags.controlPlane !== undefined) return runJoinedConnector(flags, flags.controlPlane, io);
  const { name, config: configFile, cert, key, ca } = requireFileFlags('connector', flags);
  // CN-09: nothing another user could have written decides who we trust or what we dial.
  for (const [file, flag] of [[cert, '--cert'], [key, '--key'], [ca, '--ca'], [configFile, '--config']] as const) await assertSafePath(file, flag, 'connector-file-unsafe');
  const { certPem, keyPem, caPem } = await readPemFlags('connector', { cert, key, ca });
  const logger = createLogger({ name: 'causeway-connector', level: flags.logLevel, destination: io.logDestination });
  const config = new FileConfigSource({ path: configFile, logger: logger.child({ part: 'config' }) });
  const started: Closable[] = [config];
  try {
    await config.ready();
    const metrics = startMetrics('connector', flags, started, logger);
    const connector = await startConnector({ name, config, tls: { certPem, keyPem, caPem }, logger });
    started.push(connector);
    metrics?.track({ stats: connectorStats(connector), certificatePem: () => certPem });
    if (flags.healthListen !== undefined) {
      started.push(await startHealthServer({ ...flags.healthListen, logger, check: () => tunnelHealth(connector), ...(metrics === undefined ? {} : { metrics: () => metrics.scrape() }) }));
    }
    const status = connector.status();
    if (status.problem !== undefined) logger.warn({ problem: status.problem }, 'the connector has nothing to do yet');
    logger.info({ config: path.resolve(configFile), accessTiers: status.tunnels.map((t) => `${t.accessTier} ${t.address}`) }, 'connector started');
    io.onStarted(started, connector, logger);
    return connector;
  } catch (err) {
    await closeStarted(started);
    throw err;
  }
}

/** Joined to a control plane: identity and configuration come from it. */
async function runJoinedConnector(flags: ConnectorFlags, controlPlaneUrl: string, io: ConnectorCommandIo): Promise<Connector> {
  const fileFlags = (['config', 'cert', 'key', 'ca'] as const).filter((f) => flags[f] !== undefined);
  if (fileFlags.length > 0) throw new UserError('connector-flags-conflict', `${fileFlags.map((f) => `--${f}`).join(', ')} ${fileFlags.length === 1 ? 'is' : 'are'} for running without a control plane; with --control-plane the certificate and configuration come from the control plane`);
  if (flags.dataDir === undefined) throw new UserError('connector-data-dir-missing', 'with --control-plane, give --data-dir DIR: the connector keeps its identity and its last good configuration there');
  const dataDir = path.resolve(io.cwd(), flags.dataDir);
  await assertSafePath(dataDir, '--data-dir', 'connector-file-unsafe');
  const logger = createLogger({ name: 'causeway-connector', level: flags.logLevel, destination: io.logDestination });
  const started: Closable[] = [];
  try {
    const joined = await joinAsPart('connector', { flags, controlPlaneUrl, dataDir, io, logger, started });
    const current: { connector?: Connector } = {};
    const metrics = startMetrics('connector', flags, started, logger);
    metrics?.track({ config: () => joined.config.status(), certificatePem: () => joined.tls().certPem });
    if (flags.healthListen !== undefined) {
      started.push(await startHealthServer({
        ...flags.healthListen,
        logger,
        check: () => {
          const config = configStreamHealth(joined.config.status(), Date.now());
          if (!config.ready || current.connector === undefined) return config;
          const tunnels = tunnelHealth(current.connector);
          return tunnels.status === 'ok' ? config : { ...tunnels, details: { ...config.details, ...tunnels.details }, message: config.status === 'ok' ? tunnels.message : `${config.message}; ${tunnels.message}` };
        },
        ...(metrics === undefined ? {} : { metrics: () => metrics.scrape() }),
      }));
    }
    if (joined.config.current() === undefined) logger.info({ controlPlane: controlPlaneUrl }, 'waiting for the first configuration from the control plane');
    const connector = await startConnector({ name: joined.name, config: joined.config, tls: joined.tls(), logger });
    current.connector = connector;
    started.push(connector);
    metrics?.track({ stats: connectorStats(connector) });
    joined.onRenewed((tls) => connector.setTls(tls));
    // Its tunnels, every 5 s, for the console's health view (src/lib/live).
    const reports = httpReportSender({ controlPlaneUrl, tls: () => joined.tls() });
    const startedAt = new Date().toISOString();
    const reporter = startPeerReporter({ build: () => connectorReport(connector.status(), CAUSEWAY_VERSION, startedAt), send: reports, logger: logger.child({ part: 'live-report' }) });
    started.push({
      close: async () => {
        await reporter.close();
        reports.close();
      },
    });
    const status = connector.status();
    if (status.problem !== undefined) logger.warn({ problem: status.problem }, 'the connector has nothing to do yet');
    logger.info({ name: joined.name, controlPlane: controlPlaneUrl, dataDir, accessTiers: status.tunnels.map((t) => `${t.accessTier} ${t.address}`) }, 'connector started');
    io.onStarted(started, connector, logger);
    return connector;
  } catch (err) {
    await closeStarted(started);
    throw err;
  }
}

/** The connector's live report (src/lib/live/wire.ts): its tunnels that are up. */
export function connectorReport(status: ConnectorStatus, version: string, startedAt: string): ConnectorReport {
  return { version, startedAt, tunnels: status.tunnels.filter((t) => t.state === 'up').map((t) => ({ accessTier: t.accessTier, since: t.since, streams: t.activeStreams })) };
}

/** Ready while at least one tunnel is up; degraded while some are down. */
function tunnelHealth(connector: Connector): HealthReport {
  const status = connector.status();
  const up = status.tunnels.filter((t) => t.state === 'up').length;
  const details = { state: status.state, tunnelsUp: up, tunnels: status.tunnels.length, ...(status.problem === undefined ? {} : { problem: status.problem }) };
  if (status.state === 'up') return { ready: true, status: 'ok', message: `${up} tunnel${up === 1 ? '' : 's'} up`, details };
  if (status.healthy) return { ready: true, status: 'degraded', message: `${up} of ${status.tunnels.length} tunnels up`, details };
  return { ready: false, status: 'unavailable', message: status.problem ?? `no tunnel up (${status.state})`, details };
}

/** `host:port`, `[v6]:port` or `:port` (all addresses). */
function parseHealthListen(value: string): { host: string; port: number } {
  const text = value.startsWith(':') ? `0.0.0.0${value}` : value;
  const parsed = parseAuthority(text);
  if (!parsed.ok) throw new InvalidArgumentError(`--health-listen must be host:port, [IPv6]:port or :port (${parsed.message})`);
  return { host: parsed.target.host, port: parsed.target.port };
}
