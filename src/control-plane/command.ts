/**
 * `causeway server`: the control plane. An entry point: it reads flags, the environment and files,
 * and wires the real dependencies into createControlPlane.
 *
 * Data directory (`--data-dir`, default ./causeway-data, mode 0700):
 *   causeway.db     the SQLite database, unless --database names another (postgres://… for replicas)
 *   ca-passphrase   the CA key passphrase, generated on first start when neither
 *                   --ca-passphrase-file nor CAUSEWAY_CA_PASSPHRASE gives one (0600)
 *   ca.crt          the CA certificate (public), rewritten on every start, for the CLI's --ca-file
 *   admin-token     the first admin API token, written once when the installation is created (0600)
 *
 * The CA itself (encrypted key and certificate) lives in the database, so replicas share it.
 * Parts reach the routes of PEER_PLUGINS (config stream, enrollment, event batches) on the same listener with their
 * certificates or join tokens.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import type { FastifyPluginAsync } from 'fastify';
import { PASSPHRASE_ENV, exists, readPassphraseFile, writeNewPassphrase, writeReplacing } from '../cli-files.ts';
import { UserError } from '../lib/errors.ts';
import { assertSafePath } from '../lib/fs-safety.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { closeOnSignals } from '../lib/lifecycle.ts';
import { createLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import { caPin, loadOrCreateCa, storedCaExists } from './ca-store.ts';
import { createIdentity, DEFAULT_KUBE_TOKEN_TTL_SECONDS, loadOrCreateSecretBox } from './identity/index.ts';
import type { Identity, SigningAlgorithm } from './identity/index.ts';
import { createControlPlane, issueServingCertificate } from './server.ts';
import type { ControlPlane, ControlPlanePluginOptions, Listener } from './server.ts';
import { openStore, redactUrl } from './store/index.ts';
import { createDeviceTrust } from './trust/index.ts';
import type { Store } from './store/index.ts';
import { enrollmentPlugin } from './enroll/index.ts';
import { eventsIngestPlugin } from './events-ingest/index.ts';
import { configStreamPlugin } from './stream/index.ts';

export { PASSPHRASE_ENV };
export const DEFAULT_DATA_DIR = './causeway-data';
export const DEFAULT_LISTEN = '0.0.0.0:8440';
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9090';

const DAY = 86_400_000;
/** The serving certificate lives 30 days and is renewed in place when fewer than 10 remain. */
const SERVING_CERT_LIFETIME_MS = 30 * DAY;
const SERVING_CERT_RENEW_BEFORE_MS = 10 * DAY;
const SERVING_CERT_CHECK_MS = 6 * 3_600_000;

/** The routes parts call with their certificates, from the modules that own them. */
const PEER_PLUGINS: Array<FastifyPluginAsync<ControlPlanePluginOptions>> = [configStreamPlugin, enrollmentPlugin, eventsIngestPlugin];

export interface ServerFlags {
  dataDir: string;
  database?: string;
  listen: string;
  publicUrl?: string;
  metricsListen: string;
  caPassphraseFile?: string;
  insecureHttp?: boolean;
  logLevel: string;
  /** Signing algorithm of ID tokens and kube tokens. Default RS256. */
  idTokenAlg?: SigningAlgorithm;
  /** Lifetime of kube ID tokens, in seconds. Default 600. */
  kubeTokenTtl?: number;
  /** Lifetime of device trust certificates, in minutes. Default 480 (8 h). */
  trustCertLifetime?: number;
  /** Serve the web console (commander's --no-console sets false). Default true. */
  console?: boolean;
  /** The built console. Default: <package root>/dist/web. */
  consoleDir?: string;
}

export interface ServerCommandIo {
  env: NodeJS.ProcessEnv;
  /** Human lines (where things are, what to run next). */
  print: (line: string) => void;
  /** Where the JSON logs go. Default stderr. */
  logDestination?: NodeJS.WritableStream;
  /** Called once everything listens; the default closes it on SIGTERM/SIGINT. */
  onStarted: (server: RunningServer, logger: Logger) => void;
}

const defaultIo: ServerCommandIo = {
  env: process.env,
  print: (line) => process.stdout.write(`${line}\n`),
  onStarted: (server, logger) => closeOnSignals([server], logger),
};

export interface RunningServer extends Closable {
  controlPlane: ControlPlane;
  store: Store;
  listener: Listener;
  metricsListener: Listener | undefined;
  dataDir: string;
  publicUrl: string;
  /** True when this start created the installation (CA and first admin token). */
  created: boolean;
}

export function registerServerCommand(program: Command, io: Partial<ServerCommandIo> = {}): Command {
  const deps: ServerCommandIo = { ...defaultIo, ...io };
  return program
    .command('server')
    .description('Run the control plane (Command Center API, CA, config stream)')
    .option('--data-dir <dir>', 'where the database, CA certificate and first admin token live', DEFAULT_DATA_DIR)
    .option('--database <url>', 'sqlite:PATH or postgres://user@host:5432/db (default: sqlite in the data directory)')
    .option('--listen <host:port>', 'the public API listener', DEFAULT_LISTEN)
    .option('--public-url <url>', 'where parts and people reach this server, e.g. https://cp.example.com:8440 (default: this host\'s name and the listen port)')
    .option('--metrics-listen <host:port|off>', 'the /metrics and detailed health listener (keep it private)', DEFAULT_METRICS_LISTEN)
    .option('--ca-passphrase-file <file>', `file holding the CA key passphrase (else ${PASSPHRASE_ENV}, else DATA/ca-passphrase, generated on first start)`)
    .option('--insecure-http', 'serve plain HTTP instead of HTTPS (development only: tokens cross the network in the clear)')
    .option('--log-level <level>', 'log level for the JSON logs on stderr (debug, info, warn, error)', 'info')
    .option('--id-token-alg <alg>', 'signing algorithm of ID tokens and kube tokens: RS256 (what kube-apiserver expects) or ES256', parseIdTokenAlg, 'RS256')
    .option('--kube-token-ttl <seconds>', `lifetime of the ID tokens kube-credential gets, in seconds (60 to 3600)`, parseKubeTokenTtl, DEFAULT_KUBE_TOKEN_TTL_SECONDS)
    .option('--trust-cert-lifetime <minutes>', 'lifetime of the trust certificates devices get, in minutes (5 to 1440)', parseTrustCertLifetime, 480)
    .option('--no-console', 'do not serve the web console (login, /console/*, the app at /); the API is unchanged')
    .option('--console-dir <dir>', 'the built web console (default: dist/web in the Causeway package)')
    .action(async (flags: ServerFlags) => {
      const logger = createLogger({ name: 'causeway-server', level: flags.logLevel, destination: deps.logDestination ?? process.stderr });
      const server = await startServer(flags, deps, logger);
      deps.onStarted(server, logger);
    });
}

/** Starts everything `causeway server` runs; exported for tests and embedding. */
export async function startServer(flags: ServerFlags, io: Pick<ServerCommandIo, 'env' | 'print'>, logger: Logger): Promise<RunningServer> {
  const dataDir = resolve(flags.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const listen = parseHostPort(flags.listen, '--listen');
  const metricsListen = flags.metricsListen === 'off' ? undefined : parseHostPort(flags.metricsListen, '--metrics-listen');
  const insecure = flags.insecureHttp === true;
  const publicUrl = flags.publicUrl ?? `${insecure ? 'http' : 'https'}://${hostname()}:${listen.port}`;
  if (!insecure && publicUrl.startsWith('http:')) throw new UserError('PUBLIC_URL_INVALID', '--public-url is http:// but the server serves HTTPS: use https://, or add --insecure-http for development');

  const databaseUrl = flags.database ?? `sqlite:${join(dataDir, 'causeway.db')}`;
  const store = await openStore({ url: databaseUrl, logger });
  const cleanup: Closable[] = [store];
  try {
    logger.info({ database: redactUrl(databaseUrl) }, 'store open');
    const passphrase = await resolvePassphrase(flags, io, store, dataDir, logger);
    const { ca, created } = await loadOrCreateCa(store, { passphrase });
    const caPath = join(dataDir, 'ca.crt');
    await writeReplacing(caPath, ca.certPem, 0o644);
    if (created) {
      logger.info({ caPin: caPin(ca.certPem) }, 'created the installation\'s CA (its key is encrypted in the database)');
      const { token, record } = await store.createApiToken({ name: 'first-admin', scope: 'admin' }, { actor: 'system' });
      const tokenPath = join(dataDir, 'admin-token');
      await writeReplacing(tokenPath, `${token}\n`, 0o600);
      logger.info({ path: tokenPath, tokenId: record.id }, 'created the first admin API token; it is in this file (mode 0600)');
    }

    const identity = await startIdentity(flags, io, store, passphrase, publicUrl, logger);
    cleanup.push(identity);
    // Device trust: the engine scores devices, the device managers' secrets come from the environment or files.
    const trust = createDeviceTrust({ store, logger, resolveSecret: (ref) => resolveSecret(ref, io.env) });
    cleanup.push(trust);
    const consoleDir = flags.console === false ? undefined : resolve(flags.consoleDir ?? join(packageRoot(), 'dist', 'web'));
    const controlPlane = await createControlPlane({ store, ca, publicUrl, logger, plugins: PEER_PLUGINS, processMetrics: true, identity, trust, trustCertLifetimeMs: (flags.trustCertLifetime ?? 480) * 60_000, ...(consoleDir === undefined ? {} : { console: { dir: consoleDir } }) });
    cleanup.push(controlPlane);
    let listener: Listener;
    let renewal: NodeJS.Timeout | undefined;
    if (insecure) {
      listener = await controlPlane.listen({ host: listen.host, port: listen.port, insecureHttp: true });
    } else {
      const issue = () => issueServingCertificate(ca, { publicUrl, listenHost: listen.host, extraNames: [hostname()], lifetimeMs: SERVING_CERT_LIFETIME_MS });
      let serving = await issue();
      listener = await controlPlane.listen({ host: listen.host, port: listen.port, tls: serving });
      const bound = listener;
      renewal = setInterval(() => {
        if (serving.notAfter.getTime() - Date.now() > SERVING_CERT_RENEW_BEFORE_MS) return;
        issue().then((next) => {
          serving = next;
          bound.setCertificate(next);
          logger.info({ notAfter: next.notAfter.toISOString() }, 'renewed the serving certificate');
        }, (err: unknown) => logger.error({ err }, 'renewing the serving certificate failed; will retry'));
      }, SERVING_CERT_CHECK_MS);
      renewal.unref();
    }
    const metricsListener = metricsListen === undefined ? undefined : await controlPlane.listenMetrics(metricsListen);

    const tokenPath = join(dataDir, 'admin-token');
    io.print(`Causeway control plane: ${publicUrl} (listening on ${listener.url})`);
    if (metricsListener !== undefined) io.print(`Metrics and health: ${metricsListener.url}/metrics`);
    if (consoleDir !== undefined) io.print(`Web console: ${publicUrl}/${existsSync(join(consoleDir, 'index.html')) ? '' : ` (not built: run npm run build:web)`}`);
    io.print(`CA certificate: ${caPath} (pin ${caPin(ca.certPem)})`);
    if (created) io.print(`First admin API token: written to ${tokenPath} (mode 0600). Keep it secret; create others with \`causeway token create\`.`);
    io.print(`Try: CAUSEWAY_SERVER=${publicUrl} CAUSEWAY_TOKEN=$(cat ${tokenPath}) CAUSEWAY_CA_FILE=${caPath} causeway get services`);

    let closing: Promise<void> | undefined;
    return {
      controlPlane,
      store,
      listener,
      metricsListener,
      dataDir,
      publicUrl,
      created,
      close() {
        closing ??= (async () => {
          clearInterval(renewal);
          await controlPlane.close();
          await store.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    for (const part of cleanup.reverse()) await part.close().catch(() => undefined);
    throw err;
  }
}

/** The directory of Causeway's package.json (from src/… when run from sources, dist/src/… when built). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** The OIDC provider and its pieces, sealed by the CA passphrase. */
async function startIdentity(flags: ServerFlags, io: Pick<ServerCommandIo, 'env'>, store: Store, passphrase: string, publicUrl: string, logger: Logger): Promise<Identity> {
  const secretBox = await loadOrCreateSecretBox(store, { passphrase });
  return createIdentity({
    store,
    secretBox,
    publicUrl,
    logger,
    resolveSecret: (ref) => resolveSecret(ref, io.env),
    idTokenSigningAlg: flags.idTokenAlg ?? 'RS256',
    kubeTokenTtlSeconds: flags.kubeTokenTtl ?? DEFAULT_KUBE_TOKEN_TTL_SECONDS,
  });
}

/**
 * A secret named by a spec (an IdentityProvider's client secret): `{env: NAME}` from the environment,
 * `{file: PATH}` from a file that only this user (or root) could have written (CN-09), trailing newline
 * dropped.
 */
export async function resolveSecret(ref: { env?: string; file?: string }, env: NodeJS.ProcessEnv): Promise<string> {
  if (ref.env !== undefined && ref.file !== undefined) throw new UserError('SECRET_REF_INVALID', 'a secret reference names either env or file, not both');
  if (ref.env !== undefined) {
    const value = env[ref.env];
    if (value === undefined || value === '') throw new UserError('SECRET_MISSING', `the environment variable ${ref.env} is not set: give the server the secret in it, or name a file instead`);
    return value;
  }
  if (ref.file !== undefined) {
    await assertSafePath(ref.file, 'the secret file', 'SECRET_FILE_UNSAFE');
    let text: string;
    try {
      text = await readFile(ref.file, 'utf8');
    } catch (err) {
      throw new UserError('SECRET_FILE_UNREADABLE', `cannot read the secret file ${ref.file}: check that it exists and this server's user may read it`, { cause: err });
    }
    const value = text.replace(/\r?\n$/, '');
    if (value === '') throw new UserError('SECRET_MISSING', `the secret file ${ref.file} is empty`);
    return value;
  }
  throw new UserError('SECRET_REF_INVALID', 'a secret reference names env or file');
}

function parseIdTokenAlg(value: string): SigningAlgorithm {
  if (value !== 'RS256' && value !== 'ES256') throw new InvalidArgumentError('--id-token-alg must be RS256 or ES256');
  return value;
}

function parseKubeTokenTtl(value: string): number {
  const seconds = /^[0-9]{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(seconds >= 60 && seconds <= 3600)) throw new InvalidArgumentError('--kube-token-ttl must be a number of seconds from 60 to 3600');
  return seconds;
}

function parseTrustCertLifetime(value: string): number {
  const minutes = /^[0-9]{1,4}$/.test(value) ? Number(value) : NaN;
  if (!(minutes >= 5 && minutes <= 1440)) throw new InvalidArgumentError('--trust-cert-lifetime must be a number of minutes from 5 to 1440');
  return minutes;
}

/** --ca-passphrase-file, else CAUSEWAY_CA_PASSPHRASE, else DATA/ca-passphrase, else (first start only) a new one there. */
async function resolvePassphrase(flags: ServerFlags, io: Pick<ServerCommandIo, 'env' | 'print'>, store: Store, dataDir: string, logger: Logger): Promise<string> {
  if (flags.caPassphraseFile !== undefined) return readPassphrase(flags.caPassphraseFile);
  const fromEnv = io.env[PASSPHRASE_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const path = join(dataDir, 'ca-passphrase');
  if (await exists(path)) return readPassphrase(path);
  if (await storedCaExists(store)) {
    throw new UserError('CA_PASSPHRASE_MISSING', `The database already holds a CA, created by another server: give this one the same passphrase with --ca-passphrase-file or ${PASSPHRASE_ENV}.`);
  }
  const passphrase = await writeNewPassphrase(path);
  logger.info({ path }, 'generated the CA key passphrase into this file (mode 0600); keep it apart from database backups, and give the same one to every replica');
  io.print(`CA key passphrase: generated into ${path} (mode 0600). Back it up apart from the database.`);
  return passphrase;
}

/** The server refuses an empty passphrase file (`causeway ca` takes what the file holds). */
async function readPassphrase(path: string): Promise<string> {
  const passphrase = await readPassphraseFile(path);
  if (passphrase === '') throw new UserError('CA_PASSPHRASE_EMPTY', `The CA passphrase file ${path} is empty.`);
  return passphrase;
}

/** `HOST:PORT`, `[::1]:PORT` or `:PORT` (all addresses). */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(text);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || port > 65535) throw new InvalidArgumentError(`${flag} must be HOST:PORT, such as 0.0.0.0:8440 or [::1]:8440`);
  const host = match[1] ?? match[2];
  return { host: host === '' ? '0.0.0.0' : host, port };
}
