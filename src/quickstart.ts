/**
 * `causeway quickstart` (what `npm start` runs): in one process, an access tier, a connector, the
 * client proxy and a DEMO Kubernetes API (the fake from test/kit, clearly labelled: it is not a real
 * cluster), with a CA and certificates under a data directory (see quickstart-data.ts). It prints the
 * exact kubectl commands that work through the local proxy. It grows into the full quickstart
 * (control plane, login) when the control plane exists.
 *
 * The kubeconfig's server is the service domain, not 127.0.0.1: kubectl ignores HTTPS_PROXY for
 * loopback servers (DESIGN.md §3). Nothing resolves that name: kubectl hands it to the proxy in its
 * CONNECT, and the service's backend.dnsOverride says where it really goes.
 */
import type { Command } from 'commander';
import { JsonLinesFileSink } from './lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from './lib/config/index.ts';
import type { ConfigSnapshot } from './lib/config/index.ts';
import { CausewayError, UserError, errorCode } from './lib/errors.ts';
import type { Closable } from './lib/lifecycle.ts';
import { closeOnSignals } from './lib/lifecycle.ts';
import { createLogger, silentLogger } from './lib/log.ts';
import type { Logger } from './lib/log.ts';
import type { CertificateAuthority } from './lib/pki/index.ts';
import type { ServiceSpec } from './lib/spec/index.ts';
import { startAccessTier } from './access-tier/index.ts';
import type { AccessTier } from './access-tier/index.ts';
import { startConnector } from './connector/index.ts';
import type { Connector } from './connector/index.ts';
import { startClientProxy } from './client/proxy.ts';
import type { ClientProxy, TrustMaterial } from './client/proxy.ts';
import {
  QUICKSTART_DOMAIN, QUICKSTART_NAMES, issueToFiles, openQuickstartData, writeQuickstartKubeconfigs, writeQuickstartSpecs,
} from './quickstart-data.ts';
import type { IssuedMaterial, RuntimeAddresses } from './quickstart-data.ts';
import { startFakeKube } from '../test/kit/fake-kube/index.ts';
import type { FakeKube } from '../test/kit/fake-kube/index.ts';

export { QUICKSTART_DOMAIN, QUICKSTART_NAMES } from './quickstart-data.ts';

export const DEFAULT_DATA_DIR = './.causeway-quickstart';
export const DEFAULT_ACCESS_TIER_PORT = 8443;
export const DEFAULT_PROXY_PORT = 8081;
export const DEFAULT_KUBE_PORT = 6443;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** The parts' certificates live a week: the quickstart re-issues them on every start. */
const PART_CERT_LIFETIME_MS = 7 * DAY;
/** The trust cert keeps its default lifetime (8 h) and is renewed in the background once half of it is gone. */
const TRUST_RENEW_CHECK_MS = 10 * 60_000;
const TRUST_RENEW_BEFORE_MS = 4 * HOUR;
/** How long the quickstart waits for the connector's tunnel before printing what to run. */
const TUNNEL_WAIT_MS = 5_000;
/** How long close() lets live connections finish. */
const CLOSE_DRAIN_MS = 2_000;

export interface QuickstartOptions {
  dataDir: string;
  /** Default 8443. 0 picks a free port (tests). */
  accessTierPort?: number;
  /** The client proxy's port; default 8081. 0 picks a free port (tests). */
  proxyPort?: number;
  /** The demo API's port; default 0 here (any free port); the CLI asks for 6443 and falls back to a free one when it is taken. */
  kubePort?: number;
  logger?: Logger;
  /** Where the human instructions go (default: nowhere). */
  out?: (line: string) => void;
}

/** A command the quickstart printed, split for programs: environment, then argv (argv[0] is `kubectl`). */
export interface PrintedCommand {
  env: Record<string, string>;
  argv: string[];
  /** Exactly the line printed. */
  line: string;
}

export interface Quickstart extends Closable {
  readonly dataDir: string;
  readonly ca: CertificateAuthority;
  /** True when this run created the CA (first run, or the ca/ directory was removed). */
  readonly caCreated: boolean;
  readonly demoKube: FakeKube;
  readonly accessTier: AccessTier;
  readonly connector: Connector;
  readonly proxy: ClientProxy;
  readonly accessTierAddress: string;
  readonly proxyUrl: string;
  readonly kubeconfigPath: string;
  readonly proxyUrlKubeconfigPath: string;
  readonly specsPath: string;
  readonly eventsPath: string;
  /** The two ways to run kubectl that the quickstart printed. */
  readonly commands: { httpsProxy: PrintedCommand; proxyUrl: PrintedCommand };
  close(): Promise<void>;
}

function checkPort(name: string, port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError('QUICKSTART_BAD_PORT', `${name} must be a port number from 0 to 65535, not ${String(port)}.`);
  return port;
}

// ---------------------------------------------------------------------------------------------
// Printing

/** Quotes a word for a POSIX shell when it needs it. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

function printed(env: Record<string, string>, argv: string[]): PrintedCommand {
  const line = [...Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`), ...argv.map(shellQuote)].join(' ');
  return { env, argv, line };
}

// ---------------------------------------------------------------------------------------------
// Start

/** The demo API on `port`; when that port is taken (and it is not 0), on any free port instead. */
async function startDemoKube(port: number, material: IssuedMaterial, token: string, logger: Logger): Promise<FakeKube> {
  const options = { host: '127.0.0.1', certPem: material.certPem, keyPem: material.keyPem, caPem: material.caPem, bearerToken: token, logger };
  try {
    return await startFakeKube({ ...options, port });
  } catch (err) {
    if (port === 0 || errorCode(err) !== 'EADDRINUSE') throw err;
    logger.warn({ port }, 'DEMO Kubernetes API: the port is taken; using a free one');
    return startFakeKube({ ...options, port: 0 });
  }
}

/** Closes what was started, last first; errors are logged, never thrown. */
function closer(started: Closable[], logger: Logger): () => Promise<void> {
  return async () => {
    for (const part of [...started].reverse()) {
      try {
        await part.close();
      } catch (err) {
        logger.error({ err }, 'quickstart: error while closing');
      }
    }
  };
}

export async function startQuickstart(opts: QuickstartOptions): Promise<Quickstart> {
  const logger = opts.logger ?? silentLogger();
  const out = opts.out ?? (() => undefined);
  const accessTierPort = checkPort('The access tier port', opts.accessTierPort ?? DEFAULT_ACCESS_TIER_PORT);
  const proxyPort = checkPort('The proxy port', opts.proxyPort ?? DEFAULT_PROXY_PORT);
  const kubePort = checkPort('The demo Kubernetes API port', opts.kubePort ?? 0);
  const n = QUICKSTART_NAMES;

  const data = await openQuickstartData(opts.dataDir);
  const { paths, ca } = data;
  const started: Closable[] = [];
  const closeAll = closer(started, logger);

  try {
    const partCert = (type: 'access-tier' | 'connector', name: string): Promise<IssuedMaterial> =>
      issueToFiles(data, name, { type, identity: { name }, lifetimeMs: PART_CERT_LIFETIME_MS });
    const issueTrust = (): Promise<IssuedMaterial> => issueToFiles(data, `${n.user}-${n.device}`, { type: 'trust', identity: { user: n.user, device: n.device } });
    const [edgeCert, connectorCert, demoKubeCert, firstTrust] = await Promise.all([
      partCert('access-tier', n.accessTier),
      partCert('connector', n.connector),
      // The demo API's serving certificate comes from our CA, as a kube proxy's would; the service's
      // caPublicKey and the kubeconfig therefore trust our CA certificate.
      issueToFiles(data, n.demoKube, {
        type: 'kube-proxy',
        identity: { name: n.demoKube },
        dnsNames: [QUICKSTART_DOMAIN, 'localhost'],
        ipAddresses: ['127.0.0.1'],
        lifetimeMs: PART_CERT_LIFETIME_MS,
      }),
      issueTrust(),
    ]);
    let trust = firstTrust;

    const demoLogger = logger.child({ part: 'demo-kube', demo: true });
    const demoKube = await startDemoKube(kubePort, demoKubeCert, data.token, demoLogger);
    started.push(demoKube);
    demoLogger.info({ url: demoKube.url }, 'DEMO Kubernetes API listening (a fake from the Causeway test kit, not a real cluster)');

    const events = await JsonLinesFileSink.open({ path: paths.events, logger });
    started.push(events);

    // The access tier starts with the specs as they stand, ports this run has not bound yet filled in
    // with their defaults; the real addresses replace them before the connector and any client can
    // reach it (both start afterwards).
    const provisional: RuntimeAddresses = {
      accessTierAddress: `127.0.0.1:${accessTierPort === 0 ? DEFAULT_ACCESS_TIER_PORT : accessTierPort}`,
      kubeAddress: `127.0.0.1:${demoKube.port}`,
      proxyPort: proxyPort === 0 ? DEFAULT_PROXY_PORT : proxyPort,
    };
    const config = new StaticConfigSource(snapshotFromObjects(await writeQuickstartSpecs(data, provisional)));
    started.push(config);

    const accessTier = await startAccessTier({
      name: n.accessTier,
      listen: { host: '127.0.0.1', port: accessTierPort },
      tls: { certPem: edgeCert.certPem, keyPem: edgeCert.keyPem, caPem: ca.certPem },
      config,
      events,
      logger: logger.child({ part: 'access-tier' }),
      // Ctrl-C should not wait long for a `kubectl get -w` to finish.
      limits: { drainTimeoutMs: CLOSE_DRAIN_MS },
    }).catch((err: unknown) => {
      throw errorCode((err as { cause?: unknown }).cause) === 'EADDRINUSE'
        ? new UserError('QUICKSTART_PORT_IN_USE', `The access tier port ${accessTierPort} is taken. Stop what uses it, or choose another with --access-tier-port.`, { cause: err })
        : err;
    });
    started.push(accessTier);
    const accessTierAddress = `127.0.0.1:${accessTier.port()}`;

    const proxy = await startClientProxy({
      service: findService(config.current()),
      accessTierAddress,
      // Read on every new connection, so the renewed trust cert applies at once.
      trust: (): TrustMaterial => ({ certPem: trust.certPem, keyPem: trust.keyPem, caPem: ca.certPem }),
      hosts: ['127.0.0.1'],
      port: proxyPort,
      logger: logger.child({ part: 'client-proxy' }),
      closeGraceMs: CLOSE_DRAIN_MS,
    }).catch((err: unknown) => {
      throw errorCode(err) === 'EADDRINUSE' || errorCode((err as { cause?: unknown }).cause) === 'EADDRINUSE'
        ? new UserError('QUICKSTART_PORT_IN_USE', `The proxy port ${proxyPort} is taken. Stop what uses it, or choose another with --port.`, { cause: err })
        : err;
    });
    started.push(proxy);

    const at: RuntimeAddresses = { accessTierAddress, kubeAddress: `127.0.0.1:${demoKube.port}`, proxyPort: proxy.port() };
    config.update(snapshotFromObjects(await writeQuickstartSpecs({ ...data, caCreated: false }, at)));

    // The connector dials the access tiers its configuration names: edge-1 at the address just bound.
    const connector = await startConnector({
      name: n.connector,
      tls: { certPem: connectorCert.certPem, keyPem: connectorCert.keyPem, caPem: ca.certPem },
      config,
      logger: logger.child({ part: 'connector' }),
      drainTimeoutMs: CLOSE_DRAIN_MS,
    });
    started.push(connector);

    started.push(renewTrustInBackground(() => trust, issueTrust, (next) => (trust = next), logger));

    const proxyUrl = `http://127.0.0.1:${proxy.port()}`;
    await writeQuickstartKubeconfigs(data, proxyUrl);
    const commands = {
      httpsProxy: printed({ https_proxy: proxyUrl }, ['kubectl', '--kubeconfig', paths.kubeconfig, 'get', 'pods']),
      proxyUrl: printed({}, ['kubectl', '--kubeconfig', paths.proxyUrlKubeconfig, 'get', 'pods']),
    };

    const tunnelUp = await waitForTunnel(connector, TUNNEL_WAIT_MS);
    const row = (label: string, text: string): void => out(`  ${label.padEnd(22)}${text}`);
    out(`Causeway quickstart is running. Data directory: ${paths.dir} (${data.caCreated ? 'new CA created' : 'existing CA reused'})`);
    row(`access tier ${n.accessTier}`, accessTierAddress);
    row(`connector ${n.connector}`, `${tunnelUp ? 'tunnel up to' : 'still connecting to'} ${n.accessTier}; may reach 127.0.0.0/8 only`);
    row('client proxy', `${proxyUrl}, service ${n.service} (${QUICKSTART_DOMAIN}:443), user "${n.user}", device "${n.device}"`);
    row('DEMO Kubernetes API', `${demoKube.url}: a fake API server from the Causeway test kit, NOT a real cluster`);
    row('access events', paths.events);
    out('');
    out('Run kubectl through Causeway:');
    out(`  ${commands.httpsProxy.line}`);
    out('or, with proxy-url in the kubeconfig:');
    out(`  ${commands.proxyUrl.line}`);
    out('');
    out('Press Ctrl-C to stop.');

    let closing: Promise<void> | undefined;
    return {
      dataDir: paths.dir,
      ca,
      caCreated: data.caCreated,
      demoKube,
      accessTier,
      connector,
      proxy,
      accessTierAddress,
      proxyUrl,
      kubeconfigPath: paths.kubeconfig,
      proxyUrlKubeconfigPath: paths.proxyUrlKubeconfig,
      specsPath: paths.specs,
      eventsPath: paths.events,
      commands,
      close: () => (closing ??= closeAll()),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/** Resolves true once the connector has its tunnel up, false after timeoutMs. */
async function waitForTunnel(connector: Connector, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (connector.status().state !== 'up') {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return true;
}

function findService(snapshot: ConfigSnapshot | undefined): ServiceSpec {
  const service = snapshot?.services.find((s) => s.metadata.name === QUICKSTART_NAMES.service);
  if (service === undefined) throw new CausewayError('QUICKSTART_NO_SERVICE', `the quickstart's configuration has no Service ${QUICKSTART_NAMES.service}; this is a bug`);
  return service;
}

/**
 * Renews the trust cert once half its lifetime is gone (checked every 10 minutes); the proxy picks the
 * new one up on its next connection. A failure is logged and retried at the next check.
 */
function renewTrustInBackground(
  current: () => IssuedMaterial,
  issue: () => Promise<IssuedMaterial>,
  swap: (next: IssuedMaterial) => void,
  logger: Logger,
): Closable {
  let renewing = false;
  const timer = setInterval(() => {
    const { notAfter } = current();
    if (renewing || notAfter.getTime() - Date.now() > TRUST_RENEW_BEFORE_MS) return;
    renewing = true;
    issue()
      .then((next) => {
        swap(next);
        logger.info({ notAfter: next.notAfter.toISOString() }, 'quickstart: trust certificate renewed');
      })
      .catch((err: unknown) => logger.error({ err }, 'quickstart: renewing the trust certificate failed; trying again in 10 minutes'))
      .finally(() => {
        renewing = false;
      });
  }, TRUST_RENEW_CHECK_MS);
  timer.unref();
  return { close: () => Promise.resolve(clearInterval(timer)) };
}

// ---------------------------------------------------------------------------------------------
// Command

function parsePortFlag(name: string) {
  return (value: string): number => {
    const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
    if (!(port >= 0 && port <= 65535)) throw new UserError('QUICKSTART_BAD_PORT', `${name} must be a port number from 0 to 65535, not "${value}".`);
    return port;
  };
}

interface QuickstartFlags {
  dataDir: string;
  port: number;
  accessTierPort: number;
  kubePort: number;
  logLevel: string;
}

/** Adds `causeway quickstart`. */
export function registerQuickstartCommand(program: Command): void {
  program
    .command('quickstart')
    .description('Run an access tier, a connector, the client proxy and a DEMO Kubernetes API in one process, and print the kubectl command that works through them')
    .option('--data-dir <dir>', 'where the CA, certificates, specs and kubeconfigs are kept (reused on later runs)', DEFAULT_DATA_DIR)
    .option('--port <port>', 'the client proxy port', parsePortFlag('--port'), DEFAULT_PROXY_PORT)
    .option('--access-tier-port <port>', 'the access tier port', parsePortFlag('--access-tier-port'), DEFAULT_ACCESS_TIER_PORT)
    .option('--kube-port <port>', 'the DEMO Kubernetes API port (a free one is used when it is taken)', parsePortFlag('--kube-port'), DEFAULT_KUBE_PORT)
    .option('--log-level <level>', 'log level (logs go to stderr as JSON lines)', 'info')
    .action(async (flags: QuickstartFlags) => {
      const logger = createLogger({ name: 'causeway-quickstart', level: flags.logLevel, destination: process.stderr });
      const quickstart = await startQuickstart({
        dataDir: flags.dataDir,
        proxyPort: flags.port,
        accessTierPort: flags.accessTierPort,
        kubePort: flags.kubePort,
        logger,
        out: (line) => void process.stdout.write(`${line}\n`),
      });
      closeOnSignals([quickstart], logger);
    });
}
