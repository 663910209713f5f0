/**
 * `causeway proxy SERVICE [--port N]`: the client proxy in the foreground (DESIGN.md §5).
 *
 * This is an entry point: it reads the environment and files. The service comes from `--config FILE` or
 * `$CAUSEWAY_HOME/services.yaml` (Service and AccessTier documents) when given or present, else from the
 * logged-in user's catalog at the control plane (catalog.ts). The trust certificate comes from files under
 * `$CAUSEWAY_HOME` (default `~/.config/causeway`): `trust.crt`, `trust.key` and `ca.crt`; flags override each path.
 * The trust files are re-read whenever they change, so a renewed certificate applies to the next connection.
 * With the default trust files, the trust certificate is renewed (trust-renewal.ts) and this machine's
 * posture reported every few minutes (posture-reporting.ts, `--posture-interval`) while the proxy runs.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { closeOnSignals } from '../lib/lifecycle.ts';
import { createLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import { formatProblems, parseSpecDocuments } from '../lib/spec/index.ts';
import type { AccessTierSpec, ServiceSpec, SpecObject } from '../lib/spec/index.ts';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { defaultDeviceIo, deviceContext } from './device-command.ts';
import type { DeviceIo } from './device-command.ts';
import { proxyModeFor, startClientProxy } from './proxy.ts';
import { fetchCatalog, findEntry, proxyInputFor } from './catalog.ts';
import { SessionStore } from '../lib/session/index.ts';
import { DEFAULT_REPORT_INTERVAL_MS, startPostureReporting } from './posture-reporting.ts';
import type { PostureReporting, PostureReportingOptions } from './posture-reporting.ts';
import { renewalTime, startTrustRenewal } from './trust-renewal.ts';
import type { Timers, TrustRenewal } from './trust-renewal.ts';
import type { ClientProxy, TrustMaterial } from './proxy.ts';

/** What the command touches outside itself; tests replace it. */
export interface ProxyCommandIo {
  env: NodeJS.ProcessEnv;
  homedir: () => string;
  /** Receives the one start-up line. */
  print: (line: string) => void;
  /** Called once the proxy listens; the default closes it on SIGTERM/SIGINT. */
  onStarted: (proxy: ClientProxy, logger: Logger) => void;
  /**
   * Replaces parts of the trust renewal's and the posture reports' io (tests): `timers` schedule both,
   * `reporting` tunes the periodic reports (its `clock` schedules them; reports are signed with `clock`),
   * `onRenewal` / `onReporting` receive the running ones.
   */
  device?: Partial<DeviceIo> & {
    timers?: Timers;
    reporting?: Partial<Pick<PostureReportingOptions, 'clock' | 'firstDelayMs' | 'jitter' | 'random' | 'onReport'>>;
    onRenewal?: (renewal: TrustRenewal) => void;
    onReporting?: (reporting: PostureReporting) => void;
  };
}

const defaultIo: ProxyCommandIo = {
  env: process.env,
  homedir: () => os.homedir(),
  print: (line) => process.stdout.write(`${line}\n`),
  onStarted: (proxy, logger) => closeOnSignals([proxy], logger),
};

interface ProxyFlags {
  port?: number;
  config?: string;
  cert?: string;
  key?: string;
  ca?: string;
  postureInterval: number;
  logLevel: string;
}

export function registerProxyCommand(program: Command, io: Partial<ProxyCommandIo> = {}): Command {
  const deps: ProxyCommandIo = { ...defaultIo, ...io };
  return program
    .command('proxy')
    .description('Run the local proxy for a service in the foreground (kubectl: https_proxy=http://127.0.0.1:PORT)')
    .argument('<service>', 'the service name, as in the catalog')
    .option('--port <n>', "listen on this port instead of the service's (when the service allows it)", parsePortFlag)
    .option('--config <file>', 'the service catalog (default: $CAUSEWAY_HOME/services.yaml)')
    .option('--cert <file>', 'the trust certificate (default: $CAUSEWAY_HOME/trust.crt)')
    .option('--key <file>', "the trust certificate's key (default: $CAUSEWAY_HOME/trust.key)")
    .option('--ca <file>', 'the Causeway CA certificate (default: $CAUSEWAY_HOME/ca.crt)')
    .option('--posture-interval <minutes>', "while it runs with the default trust files, report this machine's posture this often", parseMinutesFlag, DEFAULT_REPORT_INTERVAL_MS / 60_000)
    .option('--log-level <level>', 'log level for the JSON logs on stderr (debug, info, warn, error)', 'warn')
    .action(async (serviceName: string, flags: ProxyFlags) => {
      await runProxy(serviceName, flags, deps);
    });
}

async function runProxy(serviceName: string, flags: ProxyFlags, io: ProxyCommandIo): Promise<void> {
  const home = io.env.CAUSEWAY_HOME !== undefined && io.env.CAUSEWAY_HOME !== '' ? io.env.CAUSEWAY_HOME : path.join(io.homedir(), '.config', 'causeway');
  const catalogPath = flags.config ?? path.join(home, 'services.yaml');
  // File mode with --config or an existing services.yaml; else a logged-in user's catalog from the control plane (catalog.ts).
  const { service, accessTierAddress } =
    flags.config === undefined && !fs.existsSync(catalogPath) && (await new SessionStore({ home }).read()) !== undefined
      ? await catalogTarget(serviceName, io)
      : resolveProxyTarget(readCatalog(catalogPath), serviceName, catalogPath);
  const port = chooseListenPort(service, flags.port);
  const trust = trustFromFiles({
    certPath: flags.cert ?? path.join(home, 'trust.crt'),
    keyPath: flags.key ?? path.join(home, 'trust.key'),
    caPath: flags.ca ?? path.join(home, 'ca.crt'),
  });
  trust(); // fail now, with the file's name, rather than on the first connection
  const logger = createLogger({ name: 'causeway-proxy', level: flags.logLevel, destination: process.stderr });

  let proxy: ClientProxy;
  try {
    proxy = await startClientProxy({ service, accessTierAddress, trust, port, logger });
  } catch (err) {
    if (errorCode(err) === 'PORT_IN_USE') {
      const holder = describePortHolder(port);
      throw new UserError(
        'PORT_IN_USE',
        `Port ${port} is already in use${holder === undefined ? '' : ` by ${holder}`}. Stop it${service.spec.client.allowUserOverride ? ', or choose another port with --port N' : ''}.`,
        { cause: err },
      );
    }
    throw err;
  }
  io.print(startLine(service, proxy.port()));
  // While the proxy runs with the trust files in $CAUSEWAY_HOME (files given by flags are the user's to
  // manage), the trust certificate is renewed and this machine's posture is reported every few minutes.
  const background: Array<{ close(): void | Promise<void> }> = [];
  try {
    if (flags.cert === undefined && flags.key === undefined) {
      const deviceIo: DeviceIo = { ...defaultDeviceIo, env: io.env, homedir: io.homedir, ...io.device };
      const ctx = deviceContext(deviceIo);
      const timers = io.device?.timers === undefined ? {} : { timers: io.device.timers };
      const renewal = await startTrustRenewal({ ctx, clock: deviceIo.clock, logger, ...timers });
      background.push(renewal);
      io.device?.onRenewal?.(renewal);
      const scheduleClock = io.device?.reporting?.clock ?? deviceIo.clock;
      const reporting = startPostureReporting({
        ...io.device?.reporting,
        ctx,
        clock: scheduleClock,
        logger,
        ...timers,
        intervalMs: flags.postureInterval * 60_000,
        // A report that newly allows a trust certificate renews it at once (e.g. back from AlwaysDeny); the
        // first report only when the certificate held is due or gone (else the renewal's own schedule stands).
        onTrustAllowed: async (_trust, first) => {
          if (first) {
            const held = await ctx.files.readTrust().catch(() => undefined);
            if (held !== undefined && renewalTime(held) > deviceIo.clock.now()) return;
          }
          await renewal.renewNow();
        },
      });
      background.unshift(reporting);
      io.device?.onReporting?.(reporting);
    }
  } catch (err) {
    for (const part of background) await part.close();
    await proxy.close();
    throw err;
  }
  io.onStarted(withBackground(proxy, background), logger);
}

/** The proxy, whose close() (and destroy()) first stops what runs beside it: posture reports, trust renewal. */
function withBackground(proxy: ClientProxy, background: Array<{ close(): void | Promise<void> }>): ClientProxy {
  if (background.length === 0) return proxy;
  const stopBackground = async (): Promise<void> => {
    for (const part of background) await part.close();
  };
  const close = async (): Promise<void> => {
    await stopBackground();
    await proxy.close();
  };
  return {
    mode: proxy.mode,
    port: () => proxy.port(),
    addresses: () => proxy.addresses(),
    stats: () => proxy.stats(),
    close,
    destroy: () => {
      void stopBackground().catch(() => undefined);
      proxy.destroy();
    },
    [Symbol.asyncDispose]: close,
  };
}

/** The line printed once the proxy listens: what to run next. */
export function startLine(service: ServiceSpec, port: number): string {
  const name = service.metadata.name;
  const here = `127.0.0.1:${port}`;
  if (service.spec.type === 'kubernetes') return `Proxying ${name} on ${here} — try: https_proxy=http://${here} kubectl get pods`;
  if (proxyModeFor(service) === 'tcp') return `Proxying ${name} on ${here} — point your client at ${here}`;
  return `Proxying ${name} on ${here} — use http://${here} as the HTTPS proxy (https_proxy) for its targets`;
}

/** The service from the logged-in user's catalog (GET /api/v1/me/services for this machine's device). */
async function catalogTarget(serviceName: string, io: ProxyCommandIo): Promise<{ service: ServiceSpec; accessTierAddress: string }> {
  const ctx = deviceContext({ ...defaultDeviceIo, env: io.env, homedir: io.homedir, ...io.device });
  const entry = findEntry(await fetchCatalog(ctx), serviceName);
  if (!entry.access.allowed) io.print(`Warning: ${entry.name} would be refused now: ${entry.access.explanation}`);
  return proxyInputFor(entry);
}

function readCatalog(file: string): SpecObject[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') {
      throw new UserError('CATALOG_NOT_FOUND', `No service catalog at ${file}. Log in (causeway login) to use your organisation's catalog, put the Service and AccessTier specs there, or pass --config FILE.`, { cause: err });
    }
    throw new UserError('CATALOG_UNREADABLE', `Cannot read the service catalog ${file}: ${errorMessage(err)}.`, { cause: err });
  }
  const parsed = parseSpecDocuments(text, file);
  if (!parsed.ok) throw new UserError('CATALOG_INVALID', `The service catalog has problems; fix them and retry:\n${formatProblems(parsed.problems)}`);
  return parsed.objects;
}

/**
 * Finds the service and the access tier to reach it through: the one its `accessTier` names, or for
 * "*" the first AccessTier of the service's cluster, in catalog order.
 */
export function resolveProxyTarget(objects: SpecObject[], serviceName: string, source = 'the catalog'): { service: ServiceSpec; accessTierAddress: string } {
  const services = objects.filter((o): o is ServiceSpec => o.kind === 'Service');
  const service = services.find((s) => s.metadata.name === serviceName);
  if (service === undefined) {
    const known = services.map((s) => s.metadata.name).sort();
    throw new UserError(
      'UNKNOWN_SERVICE',
      `No service named "${printable(serviceName)}" in ${source}. ${known.length === 0 ? 'It lists no services.' : `Known services: ${known.join(', ')}.`}`,
    );
  }
  const tiers = objects.filter((o): o is AccessTierSpec => o.kind === 'AccessTier');
  const wanted = service.spec.accessTier;
  const tier = wanted === '*' ? tiers.find((t) => t.spec.cluster === service.spec.cluster) : tiers.find((t) => t.metadata.name === wanted);
  if (tier === undefined) {
    throw new UserError(
      'NO_ACCESS_TIER',
      wanted === '*'
        ? `Service "${service.metadata.name}" uses any access tier of cluster "${service.spec.cluster}", but ${source} has no AccessTier in that cluster. Add one.`
        : `Service "${service.metadata.name}" uses access tier "${wanted}", which ${source} does not define. Add it.`,
    );
  }
  return { service, accessTierAddress: tier.spec.address };
}

/** The service's listen port, or the user's when the service allows overriding it. */
export function chooseListenPort(service: ServiceSpec, requested: number | undefined): number {
  const own = service.spec.client.listenPort;
  if (requested === undefined || requested === own) return own;
  if (!service.spec.client.allowUserOverride) {
    throw new UserError(
      'PORT_OVERRIDE_NOT_ALLOWED',
      `Service "${service.metadata.name}" listens on port ${own}, and its administrator does not allow choosing another (client.allowUserOverride is false). Run without --port.`,
    );
  }
  return requested;
}

function parseMinutesFlag(value: string): number {
  if (!/^[0-9]{1,3}(\.[0-9]+)?$/.test(value) || Number(value) < 1 || Number(value) > 60) throw new InvalidArgumentError('must be a number of minutes from 1 to 60');
  return Number(value);
}

function parsePortFlag(value: string): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) throw new InvalidArgumentError('must be a port number from 1 to 65535 (or 0 for any free port)');
  return Number(value);
}

/**
 * A trust getter backed by files. Each call checks the three files' identity (inode, size, mtime) and
 * re-reads them only when one changed, so a renewal written by `causeway login` (or the agent) applies to
 * the next connection without a restart. A missing file throws a UserError that names it.
 */
export function trustFromFiles(paths: { certPath: string; keyPath: string; caPath: string }): () => TrustMaterial {
  let cached: { signature: string; material: TrustMaterial } | undefined;
  const files = [paths.certPath, paths.keyPath, paths.caPath];
  return () => {
    const signature = files.map((file) => statSignature(file)).join('|');
    if (cached?.signature === signature) return cached.material;
    const [certPem, keyPem, caPem] = files.map((file) => readPem(file));
    const material = { certPem, keyPem, caPem };
    // A renewal writes the key, then the certificate: between the two, keep the pair we had.
    if (cached !== undefined && !keyMatches(certPem, keyPem)) return cached.material;
    cached = { signature, material };
    return material;
  };
}

function keyMatches(certPem: string, keyPem: string): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function statSignature(file: string): string {
  try {
    const st = fs.statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch (err) {
    throw trustFileError(file, err);
  }
}

function readPem(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw trustFileError(file, err);
  }
  if (!text.includes('-----BEGIN ')) throw new UserError('TRUST_FILE_INVALID', `${file} is not a PEM file. Run \`causeway login\` to get a trust certificate.`);
  return text;
}

function trustFileError(file: string, err: unknown): UserError {
  return errorCode(err) === 'ENOENT'
    ? new UserError('TRUST_FILE_MISSING', `${file} does not exist. Run \`causeway login\` to get a trust certificate, or pass --cert, --key and --ca.`, { cause: err })
    : new UserError('TRUST_FILE_UNREADABLE', `Cannot read ${file}: ${errorMessage(err)}.`, { cause: err });
}

/**
 * Best effort: which process listens on a TCP port. Linux: the socket's inode from /proc/net/tcp{,6},
 * then the process whose fd points at it (only our own processes are visible without privileges; for
 * others we can still name the user id). Elsewhere: lsof. Undefined when nothing can tell.
 */
export function describePortHolder(port: number): string | undefined {
  try {
    if (process.platform === 'linux') return describeFromProc(port);
    const out = execFileSync('lsof', ['-nP', `-iTCP:${port}`, '-sTCP:LISTEN', '-Fpc'], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
    const pid = /^p(\d+)$/m.exec(out)?.[1];
    const command = /^c(.+)$/m.exec(out)?.[1];
    return pid === undefined ? undefined : `${command ?? 'a process'} (pid ${pid})`;
  } catch {
    return undefined;
  }
}

function describeFromProc(port: number): string | undefined {
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  const listening: Array<{ inode: string; uid: string }> = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== '0A') continue;
      if (cols[1]?.split(':')[1] === portHex) listening.push({ inode: cols[9], uid: cols[7] });
    }
  }
  if (listening.length === 0) return undefined;
  const targets = new Set(listening.map((l) => `socket:[${l.inode}]`));
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (targets.has(link)) {
        let command = 'a process';
        try {
          command = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        } catch {
          // the process may have exited meanwhile; the pid is still worth printing
        }
        return `${command} (pid ${pid})`;
      }
    }
  }
  const uid = listening[0]?.uid;
  return uid === undefined ? undefined : `a process of user id ${uid}`;
}

function printable(value: string): string {
  return value.slice(0, 80).replace(/[^\x20-\x7e]/g, '?');
}
