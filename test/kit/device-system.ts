/**
 * The whole system for device-trust end-to-end tests (issue 5), as people run it:
 *
 *   kubectl ──> client proxy (trust.crt from $CAUSEWAY_HOME) ══mTLS══> access tier <══ connector ──> fake Kubernetes API
 *                                                                         │ config stream, events
 *                                 causeway login / device report ──> control plane (`causeway server`'s startServer)
 *
 * The control plane is the real `causeway server` (startServer: SQLite in a temp dir, its own CA,
 * the OIDC provider with the built-in directory, the trust engine and device managers, the peer
 * plugins). The access tier and the connector are started by their commands and enrolled with join
 * tokens made through the admin API, as in control-plane.test.ts. Users log in with the real CLI
 * (bin/causeway.js in a child process, CAUSEWAY_HOME in a temp dir) or with the same commands in
 * this process when a test must choose what the machine reports (posture factors, serial number).
 *
 * With the `kubeProxy` option, Causeway's kube proxy (`causeway kube-proxy`, enrolled with a join
 * token, following the config stream) sits between the connector and the fake API, which then
 * trusts only the proxy's token and requires impersonation; kubectl authenticates with the exec
 * credential plugin (`causeway kube-credential --cluster e2e`):
 *
 *   kubectl ──> client proxy ══> access tier <══ connector ──> kube proxy ──Impersonate-*──> fake Kubernetes API
 *
 * Everything listens on 127.0.0.1; `close()` stops all of it and removes the temp dir.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { registerAccessTierCommand } from '../../src/access-tier/command.ts';
import type { AccessTier } from '../../src/access-tier/index.ts';
import { registerAdminCommands } from '../../src/admin-cli/index.ts';
import { trustFromFiles } from '../../src/client/command.ts';
import { defaultDeviceIo, registerDeviceCommands } from '../../src/client/device-command.ts';
import type { DeviceIo } from '../../src/client/device-command.ts';
import { registerIdentityCommands } from '../../src/client/identity-command.ts';
import { startClientProxy } from '../../src/client/proxy.ts';
import type { ClientProxy } from '../../src/client/proxy.ts';
import type { CollectedPosture } from '../../src/client/posture/index.ts';
import { registerConnectorCommand } from '../../src/connector/command.ts';
import type { Connector } from '../../src/connector/index.ts';
import { registerKubeProxyCommand } from '../../src/kube-proxy/command.ts';
import type { KubeProxy } from '../../src/kube-proxy/index.ts';
import { startServer } from '../../src/control-plane/command.ts';
import type { RunningServer } from '../../src/control-plane/command.ts';
import type { AccessEvent } from '../../src/lib/audit/index.ts';
import { systemClock } from '../../src/lib/clock.ts';
import type { Closable } from '../../src/lib/lifecycle.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { signPostureReport } from '../../src/lib/posture/index.ts';
import { SessionStore, createTrustingFetch, freshSession } from '../../src/lib/session/index.ts';
import { parseSpecDocuments } from '../../src/lib/spec/index.ts';
import type { ServiceSpec } from '../../src/lib/spec/index.ts';
import type { FactorValues } from '../../src/lib/trust/index.ts';
import { makeServerCert, makeTestCa } from './certs.ts';
import { startFakeKube } from './fake-kube/index.ts';
import type { FakeKube, FakeKubeOptions } from './fake-kube/index.ts';
import { repoRoot, writeKubeconfig } from './kubectl.ts';
import { freePort } from './ports.ts';

export const PASSWORD = 'correct horse battery staple';
export const DOMAIN = 'kube.devices.causeway.test';
export const SERVICE = 'e2e-k8s';
/** The cluster name of the Service (and the kube proxy's --cluster-name). */
export const CLUSTER = 'e2e';
/** The kube proxy's own credential at the fake API (its "service account token"), with the kubeProxy option. */
export const KUBE_PROXY_TOKEN = 'e2e-kube-proxy-sa-token-0123456789';
const BIN = join(repoRoot, 'bin', 'causeway.js');
const SERIAL_FILE = '/sys/class/dmi/id/product_serial';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ApiAnswer {
  status: number;
  body: unknown;
}

export interface InProcessRun {
  out: string[];
  err: string[];
  error: (Error & { code?: string }) | undefined;
}

/** What an in-process client run pretends about the machine. */
export interface MachineFacts {
  /** The factors every posture report carries (read at each report, so a test may change them). */
  factors: () => FactorValues;
  /** The serial number /sys/class/dmi/id/product_serial would hold. */
  serial?: string;
  hostname?: string;
}

export interface DeviceSystem {
  readonly dir: string;
  readonly publicUrl: string;
  readonly caFile: string;
  readonly caPem: string;
  readonly server: RunningServer;
  readonly kube: FakeKube;
  readonly accessTier: AccessTier;
  readonly accessTierAddress: string;
  readonly service: ServiceSpec;
  /** With the kubeProxy option: the running kube proxy, and the CA of its serving certificate (the Service's caPublicKey). */
  readonly kubeProxy: KubeProxy | undefined;
  readonly kubeProxyServingCa: string | undefined;
  /** With the kubeProxy option: what `causeway kube-proxy` printed at start. */
  readonly kubeProxyPrinted: string;
  /** The admin API with the first admin token. */
  api(method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** PUT of a spec document through the admin API (create or replace). */
  put(kind: string, name: string, spec: unknown): Promise<void>;
  /** The real CLI (bin/causeway.js) in a child process, with only PATH, HOME and `env`. */
  cli(args: string[], options?: { env?: Record<string, string>; stdin?: string; timeoutMs?: number }): Promise<CliResult>;
  /** `causeway login URL --ca-file … --user alice --password-stdin` with the real CLI; fails the test when it fails. */
  login(home: string, extra?: string[]): Promise<CliResult>;
  /** The client commands (login, device report, whoami) in this process, with the machine's facts replaced. */
  run(home: string, args: string[], machine: MachineFacts, stdin?: string): Promise<InProcessRun>;
  /** A client proxy for the service, with the trust certificate files of `home` (re-read when they change). */
  proxyFor(home: string): Promise<ClientProxy>;
  /**
   * A kubeconfig and environment for kubectl through this proxy. With `home` (needed with the
   * kubeProxy option) the kubeconfig's user runs `causeway kube-credential --cluster e2e` with that
   * home, and `cluster` overrides the plugin's --cluster (a token for another cluster).
   */
  kubectlSetup(proxy: ClientProxy, name: string, home?: string, cluster?: string): { kubeconfig: string; env: Record<string, string> };
  /** device.json of a home. */
  deviceId(home: string): Promise<string>;
  /** A posture nonce for the device of `home`, with that home's session. */
  nonce(home: string, deviceId?: string): Promise<string>;
  /** POSTs a posture report body to the device's posture route with the session of `home`. */
  sendReport(home: string, body: string, deviceId?: string): Promise<ApiAnswer>;
  /** Nonce, sign with the device key of `home`, send: what `causeway device report` does, with chosen factors. */
  report(home: string, factors: FactorValues): Promise<ApiAnswer>;
  /** Access events at the control plane (GET /api/v1/events), newest first. */
  events(query: Record<string, string>): Promise<AccessEvent[]>;
  /** Polls the events API until one matches; fails after timeoutMs. */
  waitForEvent(query: Record<string, string>, match: (e: AccessEvent) => boolean, what: string, timeoutMs?: number): Promise<AccessEvent>;
  close(): Promise<void>;
}

export interface DeviceSystemOptions {
  /** Environment of the control plane (device managers' secrets by {env: NAME}). */
  env?: Record<string, string>;
  /** --trust-cert-lifetime, minutes. */
  trustCertLifetime?: number;
  /** Put the kube proxy between the connector and the fake API (see the module comment). */
  kubeProxy?: {
    /** More `causeway kube-proxy` flags. */
    args?: string[];
    /** The fake API's stand-in for RBAC, asked with the impersonated user. */
    authorize?: FakeKubeOptions['authorize'];
  };
}

/** Polls until `check` holds; fails (never hangs) after timeoutMs. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves with `work`, or fails after ms. */
export async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function doc(kind: string, name: string, spec: unknown): Record<string, unknown> {
  return { apiVersion: 'causeway/v1', kind, metadata: { name }, spec };
}

export async function startDeviceSystem(options: DeviceSystemOptions = {}): Promise<DeviceSystem> {
  const toClose: Array<() => Promise<unknown>> = [];
  const closeAll = async (): Promise<void> => {
    for (const close of toClose.splice(0).reverse()) await close().catch(() => undefined);
  };
  const quiet = new Writable({ write: (_chunk, _enc, cb) => cb() });
  try {
    const dir = await mkdtemp(join(tmpdir(), 'causeway-e2e-devices-'));
    toClose.push(() => rm(dir, { recursive: true, force: true }));
    await chmod(dir, 0o700);
    const dataDir = join(dir, 'data');
    const port = await freePort();
    const publicUrl = `https://localhost:${port}`;
    const server = await startServer(
      { dataDir, listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl, logLevel: 'silent', ...(options.trustCertLifetime === undefined ? {} : { trustCertLifetime: options.trustCertLifetime }) },
      { env: { ...options.env }, print: () => undefined },
      silentLogger(),
    );
    toClose.push(() => server.close());
    const caFile = join(dataDir, 'ca.crt');
    const caPem = await readFile(caFile, 'utf8');
    const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
    const adminFetch = createTrustingFetch({ caPem });

    const api = async (method: string, path: string, body?: unknown): Promise<ApiAnswer> => {
      const headers: Record<string, string> = { authorization: `Bearer ${adminToken}`, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await adminFetch(`${publicUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      const text = await res.text();
      return { status: res.status, body: text === '' ? undefined : (JSON.parse(text) as unknown) };
    };
    const put = async (kind: string, name: string, spec: unknown): Promise<void> => {
      const r = await api('PUT', `/api/v1/objects/${kind.toLowerCase()}/${name}`, doc(kind, name, spec));
      assert.ok(r.status === 200 || r.status === 201, `PUT ${kind}/${name}: ${r.status} ${JSON.stringify(r.body)}`);
    };

    // The fake API, serving a certificate of the cluster's own CA for the service domain.
    const kubeCa = await makeTestCa({ commonName: 'e2e devices cluster CA' });
    const kubeCert = await makeServerCert(kubeCa, { dnsNames: [DOMAIN, 'localhost'], ipAddresses: ['127.0.0.1'] });
    const kubeAuth: FakeKubeOptions =
      options.kubeProxy === undefined ? { bearerToken: 'kubectl-test-token' } : { impersonation: { proxyToken: KUBE_PROXY_TOKEN }, ...(options.kubeProxy.authorize === undefined ? {} : { authorize: options.kubeProxy.authorize }) };
    const kube = await startFakeKube({ host: '127.0.0.1', port: 0, certPem: kubeCert.certPem, keyPem: kubeCert.keyPem, caPem: kubeCert.caPem, ...kubeAuth });
    toClose.push(() => kube.close());

    const joinToken = async (kind: 'access-tier' | 'connector' | 'kube-proxy', name: string): Promise<{ token: string; caPin: string }> => {
      const r = await api('POST', '/api/v1/join-tokens', { kind, name });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body as { token: string; caPin: string };
    };

    // causeway kube-proxy --control-plane URL --join-token T --ca-pin PIN --data-dir DIR --cluster-name e2e …
    let kubeProxy: KubeProxy | undefined;
    let kubeProxyServingCa: string | undefined;
    let kubeProxyPrinted = '';
    if (options.kubeProxy !== undefined) {
      const kpJoin = await joinToken('kube-proxy', 'kp-e2e');
      const backendDir = join(dir, 'kube-proxy-backend');
      await mkdir(backendDir, { recursive: true, mode: 0o700 });
      const backendKubeconfig = writeKubeconfig(backendDir, { server: kube.url, caPem: kube.caPem, token: KUBE_PROXY_TOKEN });
      let kpParts: Closable[] = [];
      const kpProgram = new Command('causeway').exitOverride();
      registerKubeProxyCommand(kpProgram, {
        cwd: () => dir,
        env: () => ({ CAUSEWAY_JOIN_TOKEN: kpJoin.token }),
        logDestination: quiet,
        print: (text) => (kubeProxyPrinted += text),
        serviceAccountDir: join(dir, 'no-service-account'),
        onStarted: (parts, started) => {
          kpParts = parts;
          kubeProxy = started;
        },
      });
      await kpProgram.parseAsync(['node', 'causeway', 'kube-proxy', '--control-plane', publicUrl, '--ca-pin', kpJoin.caPin, '--data-dir', 'kube-proxy', '--cluster-name', CLUSTER, '--listen', '127.0.0.1:0', '--backend-kubeconfig', backendKubeconfig, '--serving-name', DOMAIN, ...(options.kubeProxy.args ?? [])]);
      toClose.push(async () => {
        for (const part of [...kpParts].reverse()) await part.close();
      });
      assert.ok(kubeProxy !== undefined);
      kubeProxyServingCa = await readFile(join(dir, 'kube-proxy', 'serving-ca.crt'), 'utf8');
    }
    const backendAddress = kubeProxy === undefined ? `127.0.0.1:${kube.port}` : `127.0.0.1:${kubeProxy.port}`;
    const backendCa = kubeProxyServingCa ?? kubeCa.certPem;

    // causeway access-tier --control-plane URL --join-token T --ca-pin PIN --data-dir DIR --listen …
    const edgeJoin = await joinToken('access-tier', 'edge-1');
    let accessTier: AccessTier | undefined;
    let accessParts: Closable[] = [];
    const program = new Command('causeway').exitOverride();
    registerAccessTierCommand(program, {
      cwd: () => dir,
      env: () => ({}),
      logDestination: quiet,
      onStarted: (parts, started) => {
        accessParts = parts;
        accessTier = started;
      },
    });
    await program.parseAsync(['node', 'causeway', 'access-tier', '--control-plane', publicUrl, '--join-token', edgeJoin.token, '--ca-pin', edgeJoin.caPin, '--data-dir', 'edge', '--listen', '127.0.0.1:0', '--health-listen', '127.0.0.1:0']);
    assert.ok(accessTier !== undefined);
    toClose.push(async () => {
      for (const part of [...accessParts].reverse()) await part.close();
    });
    const accessTierAddress = `127.0.0.1:${accessTier.port()}`;

    const serviceDoc = doc('Service', SERVICE, {
      type: 'kubernetes',
      cluster: 'e2e',
      accessTier: 'edge-1',
      connector: 'dc1',
      domain: DOMAIN,
      port: 443,
      backend: { dnsOverride: backendAddress },
      kubernetes: { clusterName: CLUSTER, caPublicKey: backendCa },
      policy: { name: 'k8s', mode: 'enforcing' },
    });
    await put('AccessTier', 'edge-1', { cluster: 'e2e', address: accessTierAddress });
    await put('Connector', 'dc1', { cluster: 'e2e', allowedCidrs: ['127.0.0.0/8'] });
    await put('Role', 'eng', { users: { groups: ['eng'] } });
    // The policy asks for Medium: a Low device (firewall off) is denied.
    await put('Policy', 'k8s', { access: [{ roles: ['eng'], trustLevel: 'Medium' }] });
    await put('Service', SERVICE, serviceDoc.spec);
    const parsed = parseSpecDocuments(JSON.stringify(serviceDoc));
    assert.ok(parsed.ok);
    const service = parsed.objects[0] as ServiceSpec;

    // alice, in group eng, with a password.
    const user = await api('POST', '/api/v1/users', { name: 'alice', email: 'alice@example.com', groups: ['eng'] });
    assert.equal(user.status, 201, JSON.stringify(user.body));
    const password = await api('PUT', '/api/v1/users/alice/password', { password: PASSWORD });
    assert.equal(password.status, 204, JSON.stringify(password.body));

    // causeway connector --control-plane URL --join-token T --ca-pin PIN --data-dir DIR
    const dcJoin = await joinToken('connector', 'dc1');
    let connector: Connector | undefined;
    let connectorParts: Closable[] = [];
    const connectorProgram = new Command('causeway').exitOverride();
    registerConnectorCommand(connectorProgram, {
      cwd: () => dir,
      env: () => ({ CAUSEWAY_JOIN_TOKEN: dcJoin.token }),
      logDestination: quiet,
      onStarted: (parts, started) => {
        connectorParts = parts;
        connector = started;
      },
    });
    await connectorProgram.parseAsync(['node', 'causeway', 'connector', '--control-plane', publicUrl, '--ca-pin', dcJoin.caPin, '--data-dir', 'dc1']);
    assert.ok(connector !== undefined);
    toClose.push(async () => {
      for (const part of [...connectorParts].reverse()) await part.close();
    });
    const edge = accessTier;
    await until(() => edge.stats().tunnels.some((t) => t.connector === 'dc1'), 15_000, "the connector's tunnel to the access tier");
    const kp = kubeProxy;
    if (kp !== undefined) await until(() => kp.stats().ready, 15_000, "the kube proxy's first configuration");

    const noClientConfig = join(dir, 'no-client-config.yaml');
    const cli = (args: string[], o: { env?: Record<string, string>; stdin?: string; timeoutMs?: number } = {}): Promise<CliResult> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [BIN, ...args], {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'no-home'), CAUSEWAY_CLIENT_CONFIG: noClientConfig, ...o.env },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 90_000);
        child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
        child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
        child.stdin.on('error', () => undefined);
        child.stdin.end(o.stdin ?? '');
      });

    const login = async (home: string, extra: string[] = []): Promise<CliResult> => {
      const r = await cli(['login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin', ...extra], { env: { CAUSEWAY_HOME: home }, stdin: `${PASSWORD}\n` });
      assert.equal(r.code, 0, `causeway login:\n${r.stdout}\n${r.stderr}`);
      return r;
    };

    const run = async (home: string, args: string[], machine: MachineFacts, stdin = ''): Promise<InProcessRun> => {
      const result: InProcessRun = { out: [], err: [], error: undefined };
      const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => result.out.push(s), writeErr: (s) => result.err.push(s) });
      const env = { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: noClientConfig };
      const device: Partial<DeviceIo> = {
        env,
        platform: 'linux',
        hostname: () => machine.hostname ?? 'laptop-e2e',
        readFile: (path) => (path === SERIAL_FILE ? (machine.serial === undefined ? Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' })) : Promise.resolve(`${machine.serial}\n`)) : readFile(path, 'utf8')),
        collect: (): Promise<CollectedPosture> => Promise.resolve({ factors: structuredClone(machine.factors()), problems: [] }),
      };
      registerIdentityCommands(program, {
        env,
        homedir: () => join(dir, 'no-home'),
        out: (line) => result.out.push(line),
        err: (line) => result.err.push(line),
        readStdin: () => Promise.resolve(stdin),
        openBrowser: undefined,
        setExitCode: () => undefined,
        device,
      });
      registerDeviceCommands(program, { ...defaultDeviceIo, ...device, homedir: () => join(dir, 'no-home'), out: (line) => result.out.push(line), err: (line) => result.err.push(line) });
      try {
        await program.parseAsync(['node', 'causeway', ...args]);
      } catch (error) {
        result.error = error as Error & { code?: string };
      }
      return result;
    };

    const proxyFor = async (home: string): Promise<ClientProxy> => {
      const trust = trustFromFiles({ certPath: join(home, 'trust.crt'), keyPath: join(home, 'trust.key'), caPath: join(home, 'ca.crt') });
      const proxy = await startClientProxy({ service, accessTierAddress, trust, hosts: ['127.0.0.1'], port: 0, logger: silentLogger(), closeGraceMs: 300 });
      toClose.push(() => proxy.close());
      return proxy;
    };

    const kubeDir = join(dir, 'kubeconfigs');
    await mkdir(kubeDir, { recursive: true });
    const kubectlSetup = (proxy: ClientProxy, name: string, home?: string, cluster = CLUSTER): { kubeconfig: string; env: Record<string, string> } => ({
      kubeconfig: writeKubeconfig(kubeDir, {
        server: `https://${DOMAIN}`,
        caPem: backendCa,
        fileName: `kubeconfig-${name}`,
        ...(home === undefined ? {} : { exec: { command: process.execPath, args: [BIN, 'kube-credential', '--cluster', cluster], env: { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: noClientConfig, HOME: join(dir, 'no-home') } } }),
      }),
      env: { HTTPS_PROXY: `http://127.0.0.1:${proxy.port()}` },
    });

    const deviceId = async (home: string): Promise<string> => (JSON.parse(await readFile(join(home, 'device.json'), 'utf8')) as { id: string }).id;

    const userApi = async (home: string, method: string, path: string, body?: string): Promise<ApiAnswer> => {
      const session = await freshSession(new SessionStore({ home }), { clock: systemClock });
      const fetchFn = createTrustingFetch(session.caPem === undefined ? {} : { caPem: session.caPem });
      const headers: Record<string, string> = { authorization: `Bearer ${session.accessToken}`, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetchFn(`${session.server}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
      const text = await res.text();
      return { status: res.status, body: text === '' ? undefined : (JSON.parse(text) as unknown) };
    };
    const nonce = async (home: string, id?: string): Promise<string> => {
      const device = id ?? (await deviceId(home));
      const r = await userApi(home, 'POST', `/api/v1/me/devices/${device}/posture/nonce`, '{}');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body as { nonce: string }).nonce;
    };
    const sendReport = async (home: string, body: string, id?: string): Promise<ApiAnswer> => userApi(home, 'POST', `/api/v1/me/devices/${id ?? (await deviceId(home))}/posture`, body);
    const report = async (home: string, factors: FactorValues): Promise<ApiAnswer> => {
      const id = await deviceId(home);
      const n = await nonce(home, id);
      const key = await readFile(join(home, 'device.key'), 'utf8');
      return sendReport(home, signPostureReport({ deviceId: id, nonce: n, timestamp: Date.now(), factors }, key), id);
    };

    const events = async (query: Record<string, string>): Promise<AccessEvent[]> => {
      const r = await api('GET', `/api/v1/events?${new URLSearchParams({ limit: '500', ...query }).toString()}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body as { events: AccessEvent[] }).events;
    };
    const waitForEvent = async (query: Record<string, string>, match: (e: AccessEvent) => boolean, what: string, timeoutMs = 20_000): Promise<AccessEvent> => {
      let found: AccessEvent | undefined;
      await until(async () => (found = (await events(query)).find(match)) !== undefined, timeoutMs, what);
      return found as AccessEvent;
    };

    return {
      dir,
      publicUrl,
      caFile,
      caPem,
      server,
      kube,
      accessTier: edge,
      accessTierAddress,
      service,
      kubeProxy,
      kubeProxyServingCa,
      get kubeProxyPrinted() {
        return kubeProxyPrinted;
      },
      api,
      put,
      cli,
      login,
      run,
      proxyFor,
      kubectlSetup,
      deviceId,
      nonce,
      sendReport,
      report,
      events,
      waitForEvent,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/** A home directory for one machine's client files (0700, as login would make it). */
export async function newHome(system: DeviceSystem, name: string): Promise<string> {
  const home = join(system.dir, `home-${name}`);
  await mkdir(home, { recursive: true, mode: 0o700 });
  await chmod(home, 0o700);
  return home;
}

/** Writes a file under the system's dir (e.g. a spec for the CLI). */
export async function writeIn(system: DeviceSystem, name: string, text: string): Promise<string> {
  const path = join(system.dir, name);
  await writeFile(path, text, { mode: 0o600 });
  return path;
}

/** The admin CLI in this process, against the system (for `causeway device …`). */
export async function admin(system: DeviceSystem, args: string[]): Promise<{ out: string[]; error: (Error & { code?: string }) | undefined }> {
  const out: string[] = [];
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => out.push(s) });
  const token = (await readFile(join(system.server.dataDir, 'admin-token'), 'utf8')).trim();
  registerAdminCommands(program, {
    env: { CAUSEWAY_SERVER: system.publicUrl, CAUSEWAY_TOKEN: token, CAUSEWAY_CA_FILE: system.caFile },
    out: (line) => out.push(line),
    err: (line) => out.push(line),
    readStdin: () => Promise.resolve(''),
  });
  try {
    await program.parseAsync(['node', 'causeway', ...args]);
    return { out, error: undefined };
  } catch (error) {
    return { out, error: error as Error & { code?: string } };
  }
}
