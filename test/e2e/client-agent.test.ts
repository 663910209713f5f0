/**
 * The client as people use it every day (issue 7), with the real CLI in child processes (HOME,
 * CAUSEWAY_HOME and KUBECONFIG in a temp dir) against the whole system of test/kit/device-system.ts, and
 * every kubectl the kit has:
 *
 * - `causeway login`, then `causeway services` lists both Kubernetes services;
 * - `causeway connect e2e-k8s` starts the background agent on demand (detached), which starts the local
 *   proxy on the service's listen port and writes cluster, context and user into the kubeconfig. The
 *   service has authentication 'oidc' (the default): its fake API trusts only Causeway's ID tokens for
 *   audience `kubernetes:e2e` (verified against the control plane's discovery and JWKS, as
 *   kube-apiserver's --oidc-* flags do), and the kubeconfig's user `causeway-e2e` runs the exec plugin
 *   `causeway kube-credential --cluster e2e`. Then plain `kubectl --context e2e get pods` works with NO
 *   proxy or Causeway environment variables (kubectl gets PATH, HOME and KUBECONFIG, as in any shell; the
 *   client's home is the default ~/.config/causeway), and the fake API saw alice's email;
 * - a second Kubernetes service (its own fake API, its own CA, authentication 'cluster': the context uses
 *   the kubeconfig's existing user of the cluster's name, a static token) connects on its own port; both
 *   kubeconfig user shapes work at once;
 * - `causeway status` lists both connections; `causeway disconnect e2e-k8s` makes kubectl fail with a
 *   clear error (connection refused at the local proxy's port) while the other keeps working;
 * - autorun: the agent started with `causeway agent` (foreground) brings up the service the catalog marks
 *   autorun and the one the managed client config lists, and exits cleanly on SIGTERM.
 * Every agent started here is shut down in `after` (its pid from its status, SIGTERM).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { delimiter, dirname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { agentRequest, agentStatus } from '../../src/client/agent-client.ts';
import type { AgentStatus } from '../../src/client/agent-client.ts';
import { isExecutable, resolveCausewayCommand } from '../../src/client/kubeconfig.ts';
import { jwtPayload } from '../../src/lib/session/index.ts';
import { makeServerCert, makeTestCa } from '../kit/certs.ts';
import { DOMAIN, SERVICE, startDeviceSystem, until } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';
import { startFakeKube } from '../kit/fake-kube/index.ts';
import type { FakeKube } from '../kit/fake-kube/index.ts';
import { kubectlBinaries, repoRoot, runKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary, KubectlResult } from '../kit/kubectl.ts';
import { freePort } from '../kit/ports.ts';
import { makeUserHome } from '../kit/user-home.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();
const SECOND = 'e2e-k8s-2';
const SECOND_DOMAIN = 'kube2.devices.causeway.test';
const TOKEN = 'kubectl-test-token';
const BIN = join(repoRoot, 'bin', 'causeway.js');
/** The first service's Kubernetes cluster name (its context, and the audience of its tokens). */
const FIRST = 'e2e';
const PODS = '/api/v1/namespaces/default/pods';
/**
 * The user's PATH, for the CLI, the agent and kubectl (whose exec plugin inherits it): this test's PATH with
 * the directory of the Node running it first. Under npm scripts and npx, node_modules/.bin (the pinned Node)
 * already comes first; this keeps it so when the runner was started some other way, so the plugin's
 * `#!/usr/bin/env node` (bin/causeway.js) never finds an older system Node that cannot run the sources.
 */
const USER_PATH = [dirname(process.execPath), process.env.PATH ?? '/usr/bin:/bin'].join(delimiter);

let system: DeviceSystem;
/** The first cluster's API: only Causeway's ID tokens for kubernetes:e2e get in. */
let kube1: FakeKube;
let kube2: FakeKube;
/** The user's home directory ($HOME of the CLI and of kubectl). */
let userHome: string;
/** The client's home: the default, ~/.config/causeway, so kubectl's exec plugin finds it with HOME alone. */
let home: string;
let kubeconfig: string;
let managedConfig: string;
let port1: number;
let port2: number;
const agentPids = new Set<number>();

function cliEnv(): Record<string, string> {
  // No CAUSEWAY_HOME: the CLI and the agent find the client's home under HOME, as kubectl's exec plugin will.
  return { PATH: USER_PATH, KUBECONFIG: kubeconfig, HOME: userHome, CAUSEWAY_CLIENT_CONFIG: managedConfig };
}

async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await system.cli(args, { env: cliEnv(), timeoutMs: 120_000 });
  return r;
}

async function remember(): Promise<AgentStatus | null> {
  const status = await agentStatus(home);
  if (status !== null) agentPids.add(status.pid);
  return status;
}

async function stopAgent(): Promise<void> {
  const status = await remember();
  if (status === null) return;
  await agentRequest(home, 'POST', '/v1/shutdown').catch(() => undefined);
  await until(async () => (await agentStatus(home).catch(() => null)) === null && !existsSync(join(home, 'agent.sock')), 30_000, 'the agent stopping');
}

function kubectl(bin: KubectlBinary, context: string, args: string[] = ['get', 'pods', '-o', 'name']): Promise<KubectlResult> {
  // Only PATH, HOME and KUBECONFIG (what any shell has; the kit adds its own KUBECACHEDIR): no HTTPS_PROXY, no
  // CAUSEWAY_*; the kubeconfig carries the proxy-url and the exec plugin.
  return runKubectl(bin.path, ['--context', context, ...args, '--request-timeout=15s'], { kubeconfig, env: { PATH: USER_PATH, HOME: userHome }, timeoutMs: 60_000 });
}

interface KubeconfigFile {
  users: Array<{ name: string; user: Record<string, unknown> }>;
  contexts: Array<{ name: string; context: { cluster: string; user: string } }>;
}

async function readKubeconfig(): Promise<KubeconfigFile> {
  return parseYaml(await readFile(kubeconfig, 'utf8')) as KubeconfigFile;
}

/** The exec plugin command the agent writes for this environment (kubeconfig.ts resolveCausewayCommand). */
function expectedPlugin(): { command: string; args: string[] } {
  return resolveCausewayCommand({ pathEnv: USER_PATH, script: BIN, execPath: process.execPath, isExecutable });
}

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  system = await startDeviceSystem();
  port1 = await freePort();
  port2 = await freePort();
  // The first cluster's API trusts Causeway as its OIDC issuer (kube-apiserver --oidc-issuer-url, --oidc-client-id
  // kubernetes:e2e, --oidc-ca-file): the kit's fake API with its static token is replaced by this one.
  const ca1 = await makeTestCa({ commonName: 'e2e first cluster CA' });
  const cert1 = await makeServerCert(ca1, { dnsNames: [DOMAIN], ipAddresses: ['127.0.0.1'] });
  kube1 = await startFakeKube({
    host: '127.0.0.1',
    port: 0,
    certPem: cert1.certPem,
    keyPem: cert1.keyPem,
    caPem: cert1.caPem,
    oidc: { issuer: system.publicUrl, audience: `kubernetes:${FIRST}`, caPem: system.caPem },
  });
  // The first service, now in the catalog on a fixed port, reaching that API; authentication is not given, so
  // it is the default, 'oidc'.
  await system.put('Service', SERVICE, {
    ...system.service.spec,
    showInCatalog: true,
    autorun: false,
    client: { listenPort: port1, allowUserOverride: false },
    backend: { ...system.service.spec.backend, dnsOverride: `127.0.0.1:${kube1.port}` },
    kubernetes: { clusterName: FIRST, caPublicKey: ca1.certPem },
  });
  // A second cluster: its own fake API and CA, reached through the same access tier and connector.
  const ca2 = await makeTestCa({ commonName: 'e2e second cluster CA' });
  const cert2 = await makeServerCert(ca2, { dnsNames: [SECOND_DOMAIN], ipAddresses: ['127.0.0.1'] });
  kube2 = await startFakeKube({ host: '127.0.0.1', port: 0, certPem: cert2.certPem, keyPem: cert2.keyPem, caPem: cert2.caPem, bearerToken: TOKEN });
  await system.put('Service', SECOND, {
    type: 'kubernetes',
    cluster: 'e2e',
    accessTier: 'edge-1',
    connector: 'dc1',
    domain: SECOND_DOMAIN,
    port: 443,
    showInCatalog: true,
    autorun: false,
    backend: { dnsOverride: `127.0.0.1:${kube2.port}` },
    client: { listenPort: port2, allowUserOverride: true },
    kubernetes: { clusterName: 'second', caPublicKey: ca2.certPem, authentication: 'cluster' },
    policy: { name: 'k8s', mode: 'enforcing' },
  });
  // Laptops the user owns are trusted without conditions here: the agent reports this machine's real posture
  // in the background, which must not decide these tests (device trust has its own e2e).
  await system.put('TrustProfile', 'laptops', { appliesTo: { ownership: ['other'] }, staleAfter: '15m', factors: [] });
  ({ userHome, home, kubeconfig } = await makeUserHome(join(system.dir, 'user-home')));
  managedConfig = join(system.dir, 'client.yaml');
  await writeFile(managedConfig, '{}\n', { mode: 0o600 });
  // The user's own kubeconfig: an unrelated cluster, and the clusters' own credentials as users named after them
  // (the first cluster's is no longer what its context uses; the second cluster's is).
  await writeFile(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: unrelated',
      '  cluster:',
      '    server: https://unrelated.example.com:6443',
      'users:',
      '- name: e2e',
      '  user:',
      `    token: ${TOKEN}`,
      '- name: second',
      '  user:',
      `    token: ${TOKEN}`,
      'contexts:',
      '- name: unrelated',
      '  context:',
      '    cluster: unrelated',
      '    user: e2e',
      'current-context: unrelated',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  await system.login(home);
  // A compliant device: the policy asks for Medium.
  const good = await system.report(home, { firewall: true });
  assert.equal(good.status, 200, JSON.stringify(good.body));
});

after(async () => {
  if (home !== undefined) await stopAgent().catch(() => undefined);
  for (const pid of agentPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await kube2?.close();
  await kube1?.close();
  await system?.close();
});

void describe('causeway services, connect, status, disconnect with the background agent', () => {
  void test('causeway services lists both Kubernetes services of the catalog', async () => {
    const r = await cli(['services']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${SERVICE}\\s+kubernetes\\s+${DOMAIN.replace(/\./g, '\\.')}`, 'm'));
    assert.match(r.stdout, new RegExp(`^${SECOND}\\s+kubernetes\\s+${SECOND_DOMAIN.replace(/\./g, '\\.')}`, 'm'));
  });

  void test('causeway connect starts the agent and the local proxy, and writes the kubeconfig context without touching the rest', async () => {
    const r = await cli(['connect', SERVICE]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Connected ${SERVICE} on 127\\.0\\.0\\.1:${port1}; kubectl --context e2e get pods`, 'm'));
    const status = await remember();
    assert.ok(status !== null, 'the agent runs');
    assert.notEqual(status.pid, process.pid);
    const text = await readFile(kubeconfig, 'utf8');
    assert.match(text, /- name: unrelated\n {2}cluster:\n {4}server: https:\/\/unrelated\.example\.com:6443\n/, 'the unrelated cluster is untouched');
    assert.match(text, new RegExp(`proxy-url: http://localhost:${port1}`));
    assert.match(text, /current-context: unrelated/, 'the current context is left alone');
    assert.ok(existsSync(`${kubeconfig}.causeway.bak`), 'the previous file is backed up');
    // authentication 'oidc': the context's user is Causeway's exec plugin, with no environment of its own.
    const parsed = await readKubeconfig();
    assert.deepEqual(parsed.contexts.find((c) => c.name === FIRST)?.context, { cluster: FIRST, user: `causeway-${FIRST}` });
    const plugin = expectedPlugin();
    assert.deepEqual(parsed.users.find((u) => u.name === `causeway-${FIRST}`)?.user, {
      exec: {
        apiVersion: 'client.authentication.k8s.io/v1',
        command: plugin.command,
        args: [...plugin.args, 'kube-credential', '--cluster', FIRST],
        interactiveMode: 'Never',
        provideClusterInfo: false,
      },
    });
    assert.deepEqual(parsed.users.find((u) => u.name === FIRST)?.user, { token: TOKEN }, "the user's own entry of that name is untouched");
  });

  for (const bin of binaries) {
    void test(`kubectl ${bin.version}: plain kubectl --context e2e get pods works with no proxy environment, through the exec plugin; the API verified alice's ID token`, async () => {
      kube1.clearRequests();
      const r = await kubectl(bin, FIRST);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^pod\/web-1$/m);
      const seen = kube1.requests.find((q) => q.path === PODS);
      assert.ok(seen !== undefined, `the first cluster's API was asked for pods: ${JSON.stringify(kube1.requests.map((q) => [q.path, q.authError]))}`);
      assert.deepEqual(seen.user, { user: 'alice@example.com', groups: ['eng', 'system:authenticated'] });
      const bearer = /^Bearer (\S+)$/.exec(String(seen.headers.authorization ?? ''));
      assert.ok(bearer !== null, 'kubectl sent a bearer token');
      const claims = jwtPayload(bearer[1]);
      assert.equal(claims.aud, `kubernetes:${FIRST}`);
      assert.equal(claims.iss, system.publicUrl);
      assert.equal(claims.device, await system.deviceId(home), 'the token names the logged-in device');
      // The API takes nothing else: the kubeconfig's old static-token user for this cluster is refused.
      kube1.clearRequests();
      const stale = await kubectl(bin, FIRST, ['--user', FIRST, 'get', 'pods', '-o', 'name']);
      assert.notEqual(stale.code, 0);
      assert.match(stale.stderr, /Unauthorized|must be logged in/, stale.stderr);
      assert.ok(kube1.requests.length > 0, 'the refusal came from the API');
      for (const q of kube1.requests) assert.deepEqual([q.path, q.user, q.authError], [q.path, undefined, 'TOKEN_MALFORMED'], 'every request was refused as not an ID token');
    });
  }

  void test('a port held by another process: connect fails with PORT_IN_USE naming that process', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(port2, '127.0.0.1', r));
    try {
      const r = await cli(['connect', SECOND]);
      assert.equal(r.code, 2, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, new RegExp(`Port ${port2} is already in use by \\S+ \\(pid ${process.pid}\\)\\. Stop it, or choose another port with --port N.*\\(PORT_IN_USE\\)`));
    } finally {
      await new Promise<void>((r) => holder.close(() => r()));
    }
  });

  void test('a second Kubernetes service connects on its own port; both work at once', async () => {
    const r = await cli(['connect', SECOND]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Connected ${SECOND} on 127\\.0\\.0\\.1:${port2}; kubectl --context second get pods`, 'm'));
    // authentication 'cluster': the context uses the kubeconfig's own user of the cluster's name; no Causeway user.
    const parsed = await readKubeconfig();
    assert.deepEqual(parsed.contexts.find((c) => c.name === 'second')?.context, { cluster: 'second', user: 'second' });
    assert.deepEqual(parsed.users.find((u) => u.name === 'second')?.user, { token: TOKEN });
    assert.equal(parsed.users.find((u) => u.name === 'causeway-second'), undefined);
    assert.ok(parsed.users.some((u) => u.name === `causeway-${FIRST}`), "the first service's user is kept");
    for (const bin of binaries) {
      kube1.clearRequests();
      kube2.clearRequests();
      const [a, b] = await Promise.all([kubectl(bin, FIRST), kubectl(bin, 'second')]);
      assert.equal(a.code, 0, `${bin.version} e2e: ${a.stderr}`);
      assert.equal(b.code, 0, `${bin.version} second: ${b.stderr}`);
      assert.deepEqual(kube1.requests.find((q) => q.path === PODS)?.user?.user, 'alice@example.com', `${bin.version}: the first cluster saw alice's ID token`);
      assert.deepEqual(kube2.requests.find((q) => q.path === PODS)?.user?.user, 'token-user', `${bin.version}: the second cluster saw its own token`);
    }
  });

  void test('causeway status lists both connections with their ports and bytes, the trust certificate and the device', async () => {
    const r = await cli(['status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Logged in to https:\/\/localhost:\d+ as alice/);
    assert.match(r.stdout, /Trust certificate: valid until \d{4}-/);
    assert.match(r.stdout, new RegExp(`^${SERVICE}\\s+kubernetes\\s+${port1}\\s`, 'm'));
    assert.match(r.stdout, new RegExp(`^${SECOND}\\s+kubernetes\\s+${port2}\\s`, 'm'));
    const json = await cli(['status', '-o', 'json']);
    const parsed = JSON.parse(json.stdout) as { running: boolean } & AgentStatus;
    assert.equal(parsed.running, true);
    const first = parsed.connections.find((c) => c.service === SERVICE);
    assert.ok(first !== undefined && first.bytesDown > 0 && first.bytesUp > 0, JSON.stringify(parsed.connections));
  });

  void test('causeway disconnect stops one proxy: kubectl for it fails with connection refused at the local port, the other still works', async () => {
    const r = await cli(['disconnect', SERVICE]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Disconnected ${SERVICE}\\.`));
    for (const bin of binaries) {
      const refused = await kubectl(bin, FIRST);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, new RegExp(`127\\.0\\.0\\.1:${port1}.*connection refused|localhost:${port1}.*connection refused|proxyconnect.*connection refused`, 'i'), refused.stderr);
      const still = await kubectl(bin, 'second');
      assert.equal(still.code, 0, still.stderr);
    }
    await stopAgent();
  });
});

void describe('autorun', () => {
  let agent: ChildProcess | undefined;
  let agentLog = '';

  after(() => {
    agent?.kill('SIGKILL');
  });

  void test('causeway agent (foreground) brings up the catalog\'s autorun service and the managed config\'s list once logged in, and exits cleanly on SIGTERM', async () => {
    await system.put('Service', SECOND, { ...((await system.api('GET', `/api/v1/objects/service/${SECOND}`)).body as { spec: Record<string, unknown> }).spec, autorun: true });
    await writeFile(managedConfig, `autorun: [${SERVICE}]\n`, { mode: 0o600 });
    const child = spawn(process.execPath, [BIN, 'agent', '--no-app'], { env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    agent = child;
    child.stderr.on('data', (b: Buffer) => (agentLog += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await until(async () => ((await agentStatus(home).catch(() => null))?.connections.length ?? 0) === 2, 60_000, 'both autorun services up').catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; agent: ${agentLog}; status: ${JSON.stringify(await agentStatus(home).catch(() => null))}; log: ${await readFile(join(home, 'agent.log'), 'utf8').catch(() => '')}`);
    });
    const status = await remember();
    assert.ok(status !== null);
    assert.equal(status.pid, child.pid);
    assert.deepEqual(status.connections.map((c) => [c.service, c.port, c.autorun]), [[SERVICE, port1, true], [SECOND, port2, true]]);
    for (const bin of binaries) {
      for (const context of [FIRST, 'second']) {
        const r = await kubectl(bin, context);
        assert.equal(r.code, 0, `${bin.version} ${context}: ${r.stderr}`);
      }
    }
    child.kill('SIGTERM');
    assert.equal(await exited, 0, agentLog);
    assert.equal(existsSync(join(home, 'agent.sock')), false, 'the socket is removed');
    assert.equal(await agentStatus(home), null);
  });
});
