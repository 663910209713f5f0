/**
 * `causeway login | logout | whoami | kube-credential` (DESIGN §5): the client side of identity.
 *
 * This is an entry point: it reads argv, the environment, stdin and files, and wires the real
 * dependencies. The session lives in `$CAUSEWAY_HOME/session.json` (src/lib/session).
 *
 * kube-credential runs on every kubectl command, often several at once, so it stays light: it loads
 * src/lib/session only (no OIDC client library, no server code; main.ts loads this module alone for
 * it), answers from the session's cache while the kube token has a minute left, and otherwise
 * refreshes and exchanges under the session lock. When a login is needed it fails with the one line
 * kubectl shows the user.
 */
import { spawn } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { Command } from 'commander';
import { assertSafePath } from '../lib/fs-safety.ts';
import { CausewayError, UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { systemClock } from '../lib/clock.ts';
import type { Clock } from '../lib/clock.ts';
import { SessionStore, causewayHome, connectionError, createTrustingFetch, freshSession, kubeToken, notLoggedIn, revokeSession } from '../lib/session/index.ts';
import type { ClientCertificate, FetchLike, Session } from '../lib/session/index.ts';
import type { DeviceIo } from './device-command.ts';
import { DeviceFiles } from './device-files.ts';

/** What the commands touch outside themselves; tests replace it. */
export interface IdentityIo {
  env: NodeJS.ProcessEnv;
  homedir: () => string;
  /** A line of normal output (stdout). */
  out: (line: string) => void;
  /** A line for the user (stderr). */
  err: (line: string) => void;
  readFile: (path: string) => Promise<string>;
  readStdin: () => Promise<string>;
  /** Opens a URL in the user's browser; undefined when this machine has no way to. */
  openBrowser: ((url: string) => Promise<void>) | undefined;
  /** Sets the process's exit code (kube-credential reports failures itself, in kubectl's format). */
  setExitCode: (code: number) => void;
  clock: Clock;
  /** Replaces the trusting fetch (tests). */
  fetchFor?: (caPem: string | undefined) => FetchLike;
  /** Checks a CA file before reading it (CN-09); tests may relax it. */
  assertSafeFile: (path: string, what: string) => Promise<void>;
  /** Replaces parts of the device steps' io (posture collectors, machine facts, the mTLS POST; tests). */
  device?: Partial<DeviceIo>;
}

/** xdg-open (Linux and the BSDs, with a display) or open (macOS); undefined elsewhere. */
export function systemBrowserOpener(env: NodeJS.ProcessEnv, platform: NodeJS.Platform): ((url: string) => Promise<void>) | undefined {
  let command: string;
  if (platform === 'darwin') command = 'open';
  else if (platform === 'win32') return undefined;
  else if ((env.DISPLAY ?? '') !== '' || (env.WAYLAND_DISPLAY ?? '') !== '') command = 'xdg-open';
  else return undefined;
  return (url) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(command, [url], { stdio: 'ignore', detached: true });
      child.once('error', reject);
      child.once('spawn', () => {
        child.unref();
        resolve();
      });
    });
}

const defaultIo: IdentityIo = {
  env: process.env,
  homedir: () => os.homedir(),
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  readFile: (path) => readFile(path, 'utf8'),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
  openBrowser: systemBrowserOpener(process.env, process.platform),
  setExitCode: (code) => {
    process.exitCode = code;
  },
  clock: systemClock,
  assertSafeFile: (path, what) => assertSafePath(path, what, 'CA_FILE_UNSAFE'),
};

interface LoginFlags {
  caFile?: string;
  deviceCode?: boolean;
  user?: string;
  passwordStdin?: boolean;
  totpStdin?: boolean;
  browser: boolean;
  ownership?: string;
}

export function registerIdentityCommands(program: Command, io: Partial<IdentityIo> = {}): void {
  const deps: IdentityIo = { ...defaultIo, ...io };
  program
    .command('login')
    .description('Log in to a Causeway control plane (browser by default; --device-code on a machine without one; --user NAME --password-stdin for built-in users in scripts)')
    .argument('[url]', "the control plane's URL (default: the current session's server, else $CAUSEWAY_SERVER, else the client settings' controlPlane)")
    .option('--ca-file <file>', "the control plane's CA certificate (default: $CAUSEWAY_CA_FILE, else the system CAs); remembered in the session")
    .option('--device-code', 'print a code and a URL to open on another device, and wait')
    .option('--user <name>', 'a built-in user (with --password-stdin)')
    .option('--password-stdin', "read the user's password from the first line of standard input")
    .option('--totp-stdin', 'also read a TOTP code from the second line of standard input')
    .option('--no-browser', 'print the login URL instead of opening a browser')
    .option('--ownership <kind>', "who owns this device, told to the server when it is registered: corporate-dedicated, corporate-shared, employee-owned or other (default: the managed client config's deviceOwnership, else other)")
    .action(async (url: string | undefined, flags: LoginFlags) => {
      await runLogin(url, flags, deps);
    });
  program
    .command('logout')
    .description('Revoke the login session at the server and delete it here (works offline too)')
    .action(async () => {
      await runLogout(deps);
    });
  program
    .command('whoami')
    .description('Who the login session is: user, groups, admin scope, device, token expiry')
    .option('-o, --output <format>', 'table or json', 'table')
    .action(async (flags: { output: string }) => {
      await runWhoami(flags.output, deps);
    });
  program
    .command('kube-credential')
    .description('kubectl exec credential plugin: prints an ExecCredential with an ID token for the cluster')
    .requiredOption('--cluster <name>', "the cluster's name (the Kubernetes service's spec.kubernetes.clusterName)")
    .action(async (flags: { cluster: string }) => {
      await runKubeCredential(flags.cluster, deps);
    });
}

function storeFor(io: IdentityIo): SessionStore {
  return new SessionStore({ home: causewayHome(io.env, io.homedir()) });
}

function sessionDeps(io: IdentityIo): { clock: Clock; fetchFor?: (caPem: string | undefined) => FetchLike } {
  return { clock: io.clock, ...(io.fetchFor === undefined ? {} : { fetchFor: io.fetchFor }) };
}

async function readCa(file: string, io: IdentityIo): Promise<string> {
  await io.assertSafeFile(file, '--ca-file');
  let text: string;
  try {
    text = await io.readFile(file);
  } catch (err) {
    throw new UserError('CA_FILE_UNREADABLE', `cannot read the CA file ${file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new UserError('CA_FILE_INVALID', `${file} holds no PEM certificate; pass the control plane's CA certificate (DATA/ca.crt)`);
  return text;
}

async function runLogin(urlArg: string | undefined, flags: LoginFlags, io: IdentityIo): Promise<void> {
  const store = storeFor(io);
  const existing = await store.read().catch(() => undefined);
  // The client settings (settings.ts: the managed client config over settings.yaml) name the control plane when nothing else does.
  const settings = await import('./settings.ts')
    .then(async (m) => (await m.loadClientSettings({ env: io.env, homedir: io.homedir, readFile: io.readFile })).settings)
    .catch((err: unknown) => {
      io.err(`Ignoring the client settings: ${errorMessage(err)}`);
      return undefined;
    });
  const url = urlArg ?? existing?.server ?? nonEmpty(io.env.CAUSEWAY_SERVER) ?? settings?.controlPlane;
  if (url === undefined) throw new UserError('NO_SERVER', "which control plane? run causeway login URL (such as https://cp.example.com:8440)");
  if (flags.deviceCode === true && flags.user !== undefined) throw new UserError('BAD_FLAGS', 'choose one: --device-code, or --user with --password-stdin');
  if (flags.user !== undefined && flags.passwordStdin !== true) throw new UserError('BAD_FLAGS', 'with --user, pass the password on standard input and add --password-stdin');
  if (flags.passwordStdin === true && flags.user === undefined) throw new UserError('BAD_FLAGS', '--password-stdin needs --user NAME');
  if (flags.totpStdin === true && flags.passwordStdin !== true) throw new UserError('BAD_FLAGS', '--totp-stdin goes with --user NAME --password-stdin');

  const caFile = flags.caFile ?? nonEmpty(io.env.CAUSEWAY_CA_FILE);
  let caPem: string | undefined;
  if (caFile !== undefined) caPem = await readCa(caFile, io);
  else if (existing !== undefined && existing.caPem !== undefined && urlArg === undefined) caPem = existing.caPem;
  else if (settings?.caFile !== undefined && url === settings.controlPlane) caPem = await readCa(settings.caFile, io);

  const device = await import('./device-command.ts');
  const ownership = flags.ownership === undefined ? undefined : device.parseOwnership(flags.ownership);
  const login = await import('./login.ts');
  const target = { server: url, ...(caPem === undefined ? {} : { caPem }) };
  const loginDeps = { clock: io.clock, say: io.err, ...(io.fetchFor === undefined ? {} : { fetch: io.fetchFor(caPem) }) };
  let session: Session;
  if (flags.user !== undefined) {
    const lines = (await io.readStdin()).split(/\r?\n/);
    const password = lines[0] ?? '';
    if (password === '') throw new UserError('NO_PASSWORD', 'no password on standard input: pipe it in, as in: causeway login URL --user NAME --password-stdin < file');
    const totp = flags.totpStdin === true ? (lines[1] ?? '').trim() : undefined;
    if (totp === '') throw new UserError('NO_TOTP', '--totp-stdin was given but standard input has no second line with the code');
    session = await login.passwordLogin(target, { user: flags.user, password, ...(totp === undefined ? {} : { totp }) }, loginDeps);
  } else if (flags.deviceCode === true) {
    session = await login.deviceLogin(target, loginDeps);
  } else {
    session = await login.browserLogin(target, loginDeps, flags.browser && io.openBrowser !== undefined ? { openBrowser: io.openBrowser } : {});
  }
  // A session for another server (or user) is replaced; revoking the old one is logout's job.
  await store.withLock(() => store.write(session));
  io.err(`Logged in to ${session.server} as ${session.user.name}${session.user.groups.length === 0 ? '' : ` (groups: ${session.user.groups.join(', ')})`}.`);
  // This machine's device: registered (or reused), posture reported, trust certificate fetched.
  await device.deviceAfterLogin(deviceIoOf(io, device.defaultDeviceIo), { store, ...(ownership === undefined ? {} : { ownership }) });
}

function deviceIoOf(io: IdentityIo, defaults: DeviceIo): DeviceIo {
  return {
    ...defaults,
    env: io.env,
    homedir: io.homedir,
    out: io.out,
    err: io.err,
    readFile: io.readFile,
    clock: io.clock,
    ...(io.fetchFor === undefined ? {} : { fetchFor: io.fetchFor }),
    ...io.device,
  };
}

async function runLogout(io: IdentityIo): Promise<void> {
  const store = storeFor(io);
  let session: Session | undefined;
  try {
    session = await store.read();
  } catch (err) {
    // A damaged session file is still removed.
    if (errorCode(err) !== 'SESSION_INVALID') throw err;
  }
  if (session === undefined) {
    const removed = await store.remove();
    io.err(removed ? 'Removed a damaged session file.' : 'Not logged in.');
    return;
  }
  let note: string;
  try {
    const revoked = await revokeSession(session, sessionDeps(io));
    note = revoked ? `the session was revoked at ${session.server}` : `${session.server} did not confirm the revocation`;
  } catch (err) {
    note = `${session.server} was not reached (${errorMessage(err)}), so the session was only deleted here; it ends on its own when its tokens expire`;
  }
  await store.withLock(() => store.remove());
  io.err(`Logged out: ${note}.`);
}

interface WhoamiAnswer {
  user?: { id?: string; name?: string; email?: string | null; groups?: string[]; source?: string };
  scope?: string;
  kinds?: string[];
  method?: string;
  device?: { id?: string; platform?: string; hostname?: string | null; trust?: { level?: string | null; reasons?: string[]; explanation?: string | null } | null } | null;
  tokenExpiresAt?: string | null;
}

function deviceLine(device: WhoamiAnswer['device']): string {
  if (device === null || device === undefined) return 'none';
  const name = [device.hostname, device.platform].filter((v): v is string => typeof v === 'string' && v !== '').map(printable).join(', ');
  return `${printable(device.id ?? '?')}${name === '' ? '' : ` (${name})`}`;
}

function trustLine(device: WhoamiAnswer['device']): string {
  const trust = device?.trust;
  if (trust === null || trust === undefined) return '-';
  const reasons = (trust.reasons ?? []).map(printable);
  return `${printable(trust.level ?? 'unknown')}${reasons.length === 0 ? '' : ` (${reasons.join('; ')})`}`;
}

async function runWhoami(output: string, io: IdentityIo): Promise<void> {
  if (output !== 'table' && output !== 'json') throw new UserError('BAD_FLAGS', '-o must be table or json');
  const store = storeFor(io);
  const session = await freshSession(store, sessionDeps(io));
  const fetchFn = (io.fetchFor ?? ((caPem) => createTrustingFetch(caPem === undefined ? {} : { caPem })))(session.caPem);
  // This machine's device, when it is registered at this server: the server shows its trust.
  const files = new DeviceFiles({ home: store.home });
  const state = await files.readState().catch(() => undefined);
  const deviceId = state !== undefined && state.server === session.server ? state.id : undefined;
  const trustCert = deviceId === undefined ? undefined : await files.readTrust().catch(() => undefined);
  const query = deviceId === undefined ? '' : `?device=${encodeURIComponent(deviceId)}`;
  const res = await fetchFn(`${session.server}/api/v1/whoami${query}`, { method: 'GET', headers: { accept: 'application/json', authorization: `Bearer ${session.accessToken}` }, redirect: 'manual' }).catch((err: unknown) => {
    throw connectionError(session.server, err);
  });
  const text = await res.text();
  if (res.status === 401) throw notLoggedIn(session.server);
  if (res.status !== 200) throw new CausewayError('WHOAMI_FAILED', `${session.server} answered HTTP ${res.status} to whoami`);
  let answer: WhoamiAnswer;
  try {
    answer = JSON.parse(text) as WhoamiAnswer;
  } catch (err) {
    throw new CausewayError('WHOAMI_FAILED', `${session.server} answered whoami with something other than JSON`, { cause: err });
  }
  // What the managed client config (settings.ts) says about this machine: informational (the server's trust comes from posture and MDM).
  const managed = await import('./settings.ts')
    .then((m) => m.loadClientSettings({ env: io.env, homedir: io.homedir, readFile: io.readFile }))
    .then((loaded) => (loaded.managedPresent ? { file: loaded.managedFile, mdmPresent: loaded.settings.mdmPresent ?? null } : null))
    .catch((err: unknown) => {
      io.err(`Ignoring the client settings: ${errorMessage(err)}`);
      return null;
    });
  if (output === 'json') {
    io.out(JSON.stringify({ server: session.server, ...answer, trustCertExpiresAt: trustCert === undefined ? null : new Date(trustCert.notAfter).toISOString(), managedConfig: managed }, null, 2));
    return;
  }
  const user = answer.user ?? {};
  const kinds = answer.kinds ?? [];
  const rows: Array<[string, string]> = [
    ['server', session.server],
    ['user', `${printable(user.name ?? session.user.name)}${user.email === undefined || user.email === null ? '' : ` <${printable(user.email)}>`}`],
    ['source', printable(user.source ?? '-')],
    ['groups', (user.groups ?? session.user.groups).map(printable).join(', ') || '-'],
    ['admin', `${printable(answer.scope ?? 'none')}${kinds.length === 0 ? '' : ` (kinds: ${kinds.map(printable).join(', ')})`}`],
    ['device', deviceLine(answer.device)],
    ['trust', trustLine(answer.device)],
    ...(answer.device?.trust?.explanation === undefined || answer.device.trust.explanation === null ? [] : [['why', printable(answer.device.trust.explanation)] as [string, string]]),
    ['trust cert', trustCert === undefined ? 'none' : `valid until ${new Date(trustCert.notAfter).toISOString()}`],
    ...(managed === null ? [] : [['managed', `${managed.file}${managed.mdmPresent === null ? '' : managed.mdmPresent ? ' (MDM present)' : ' (no MDM)'}`] as [string, string]]),
    ['expires', answer.tokenExpiresAt ?? new Date(session.accessTokenExpiresAt).toISOString()],
  ];
  for (const [key, value] of rows) io.out(`${`${key}:`.padEnd(12)}${value}`);
}

/**
 * This machine's device certificate and key (device.crt, device.key) when device.json says they are
 * registered at `server`: the token exchange presents them, so the kube ID token names the device.
 * Anything missing, unreadable or not matching: none (the token then has no device).
 */
function deviceCredentials(home: string): (server: string) => Promise<ClientCertificate | undefined> {
  return async (server) => {
    const files = new DeviceFiles({ home });
    const state = await files.readState();
    if (state === undefined || state.server !== server) return undefined;
    const certPem = await files.readDeviceCert();
    const key = await files.readKey();
    if (certPem === undefined || key === undefined) return undefined;
    try {
      if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(key.privateKeyPem))) return undefined;
    } catch {
      return undefined;
    }
    return { certPem, keyPem: key.privateKeyPem };
  };
}

/** RFC 3339 in UTC without fractional seconds, as Kubernetes writes times. */
function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

async function runKubeCredential(cluster: string, io: IdentityIo): Promise<void> {
  try {
    if (cluster === '' || /[\s/]/.test(cluster)) throw new UserError('BAD_FLAGS', `"${printable(cluster)}" is not a cluster name; pass the Kubernetes service's clusterName with --cluster`);
    const store = storeFor(io);
    const token = await kubeToken(store, cluster, { ...sessionDeps(io), deviceCredentials: deviceCredentials(store.home) });
    io.out(JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: token.token, expirationTimestamp: rfc3339(token.expiresAt) } }));
  } catch (err) {
    // kubectl shows the plugin's stderr to the user: one line that says what to do.
    const message = err instanceof CausewayError ? err.message : `unexpected error: ${errorMessage(err)}`;
    io.err(`causeway: ${message.split('\n')[0]}`);
    io.setExitCode(1);
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function printable(value: string): string {
  return value.slice(0, 200).replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?');
}
