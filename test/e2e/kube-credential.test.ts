/**
 * kubectl with Causeway's exec credential plugin, end to end: a real control plane (`causeway
 * server`'s startServer, with its OIDC provider, built-in directory and login page), a built-in user
 * with a password and a Service of type kubernetes for cluster `prod`, created with the real CLI;
 * `causeway login --user … --password-stdin` and `causeway login --device-code` run as the real CLI
 * (bin/causeway.js with CAUSEWAY_HOME in a temp dir); a kubeconfig whose user runs
 * `causeway kube-credential --cluster prod`; and the fake Kubernetes API verifying the bearer token
 * against Causeway's discovery and JWKS, as kube-apiserver's --oidc-* flags would. Every kubectl the
 * kit has (the pinned 1.35 and the system one) is driven.
 *
 * Then: the token is cached between kubectl calls (token exchanges counted in the audit log); after
 * a restart with short-lived kube tokens, a disabled user's token expires, the fake API refuses it,
 * and the plugin fails with the line that says to log in; logout makes the next call fail the same way.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/lib/log.ts';
import { jwtPayload } from '../../src/lib/session/index.ts';
import { TestBrowser } from '../../src/lib/session/test-provider.testing.ts';
import { startServer } from '../../src/control-plane/command.ts';
import type { RunningServer } from '../../src/control-plane/command.ts';
import { startFakeKube } from '../kit/fake-kube/index.ts';
import type { FakeKube, RecordedRequest } from '../kit/fake-kube/index.ts';
import { kubectlBinaries, repoRoot, runKubectl, writeKubeconfig } from '../kit/kubectl.ts';
import type { KubectlBinary } from '../kit/kubectl.ts';
import { freePort } from '../kit/ports.ts';

const PASSWORD = 'correct horse battery staple';
const BIN = join(repoRoot, 'bin', 'causeway.js');

let dir: string;
let dataDir: string;
let port: number;
let publicUrl: string;
let caFile: string;
let caPem: string;
let adminToken: string;
let server: RunningServer | undefined;
let kube: FakeKube | undefined;
let kubectls: KubectlBinary[];

async function start(kubeTokenTtl: number): Promise<RunningServer> {
  return startServer(
    { dataDir, listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl, logLevel: 'silent', kubeTokenTtl },
    { env: {}, print: () => undefined },
    silentLogger(),
  );
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real CLI in a child process, with only the environment given (and PATH). */
function cli(args: string[], options: { env?: Record<string, string>; stdin?: string; onStderrLine?: (line: string) => void; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'no-home'), ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let partial = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
      const lines = (partial + b.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) options.onStderrLine?.(line);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
  });
}

function adminEnv(): Record<string, string> {
  return { CAUSEWAY_SERVER: publicUrl, CAUSEWAY_TOKEN: adminToken, CAUSEWAY_CA_FILE: caFile };
}

async function ok(args: string[], options: Parameters<typeof cli>[1] = {}): Promise<CliResult> {
  const result = await cli(args, options);
  assert.equal(result.code, 0, `causeway ${args.join(' ')}:\n${result.stdout}\n${result.stderr}`);
  return result;
}

async function exchanges(): Promise<number> {
  assert.ok(server !== undefined);
  return (await server.store.queryAuditEvents({ action: 'token-exchange', limit: 1000 })).events.length;
}

function kubeconfigFor(home: string, name: string): string {
  assert.ok(kube !== undefined);
  return writeKubeconfig(dir, {
    server: kube.url,
    caPem: kube.caPem,
    exec: { command: process.execPath, args: [BIN, 'kube-credential', '--cluster', 'prod'], env: { CAUSEWAY_HOME: home } },
    fileName: `kubeconfig-${name}`,
  });
}

function getWithToken(token: string): Promise<number> {
  assert.ok(kube !== undefined);
  const { url, caPem: kubeCa } = kube;
  return new Promise((resolve, reject) => {
    const req = request(`${url}/api/v1/namespaces/default/pods`, { ca: kubeCa, headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'causeway-e2e-kube-credential-'));
  await chmod(dir, 0o700);
  dataDir = join(dir, 'data');
  port = await freePort();
  publicUrl = `https://localhost:${port}`;
  server = await start(600);
  caFile = join(dataDir, 'ca.crt');
  caPem = await readFile(caFile, 'utf8');
  adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  kubectls = await kubectlBinaries();
  kube = await startFakeKube({ oidc: { issuer: publicUrl, audience: 'kubernetes:prod', caPem, clockToleranceSec: 0 } });
  assert.ok(kubectls.length > 0, 'a kubectl to test with');

  await ok(['user', 'add', 'alice', '--groups', 'eng', '--email', 'alice@example.com', '--password-stdin'], { env: adminEnv(), stdin: `${PASSWORD}\n` });
  const specs = join(dir, 'specs.yaml');
  await writeFile(
    specs,
    `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: global-edge, address: "edge.example.com:8443"}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: prod-k8s}
spec:
  type: kubernetes
  cluster: global-edge
  accessTier: edge-1
  domain: kube.prod.example.com
  port: 443
  kubernetes:
    clusterName: prod
    caPublicKey: |
${kube.caPem.trim().split('\n').map((line) => `      ${line}`).join('\n')}
`,
  );
  await ok(['apply', '-f', specs], { env: adminEnv() });
});

after(async () => {
  await kube?.close();
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

void describe('kubectl with causeway kube-credential against a real control plane', () => {
  let home: string;

  void test('causeway login --user --password-stdin, then every kubectl gets pods with the plugin\'s token, verified against Causeway\'s JWKS and naming the logged-in device; later calls use the cached token', async () => {
    home = join(dir, 'home-password');
    const login = await ok(['login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin'], { env: { CAUSEWAY_HOME: home }, stdin: `${PASSWORD}\n` });
    assert.match(login.stderr, /Logged in to https:\/\/localhost:\d+ as alice/);
    assert.ok(kube !== undefined);
    // The login registered this machine; kube-credential presents its device certificate in the token exchange.
    const device = JSON.parse(await readFile(join(home, 'device.json'), 'utf8')) as { id: string };

    const before = await exchanges();
    const kubeconfig = kubeconfigFor(home, 'password');
    for (const kubectl of kubectls) {
      for (let round = 0; round < 2; round++) {
        kube.clearRequests();
        const got = await runKubectl(kubectl.path, ['get', 'pods', '-o', 'name'], { kubeconfig, timeoutMs: 60_000 });
        assert.equal(got.code, 0, `kubectl ${kubectl.version}: ${got.stderr}`);
        assert.match(got.stdout, /^pod\/web-0$/m);
        const seen: RecordedRequest | undefined = kube.requests.find((r) => r.path === '/api/v1/namespaces/default/pods');
        assert.deepEqual(seen?.user, { user: 'alice@example.com', groups: ['eng', 'system:authenticated'] }, `kubectl ${kubectl.version} round ${round}`);
        const bearer = /^Bearer (\S+)$/.exec(String(seen?.headers.authorization ?? ''));
        assert.ok(bearer !== null, 'kubectl sent a bearer token');
        const sent = jwtPayload(bearer[1]);
        assert.equal(sent.device, device.id, 'the ID token kubectl sent names the logged-in device');
        assert.equal(typeof sent.device_trust, 'string', 'and carries its trust level');
      }
    }
    assert.equal((await exchanges()) - before, 1, 'one token exchange; every later call used the cached token');
    const session = JSON.parse(await readFile(join(home, 'session.json'), 'utf8')) as { kubeTokens: Record<string, { token: string }> };
    const claims = jwtPayload(session.kubeTokens.prod.token);
    assert.equal(claims.aud, 'kubernetes:prod');
    assert.equal(claims.iss, publicUrl);
  });

  void test('causeway whoami shows the session\'s user', async () => {
    const me = await ok(['whoami', '-o', 'json'], { env: { CAUSEWAY_HOME: home } });
    const parsed = JSON.parse(me.stdout) as { user: { name: string; groups: string[] }; scope: string };
    assert.equal(parsed.user.name, 'alice');
    assert.deepEqual(parsed.user.groups, ['eng']);
    assert.equal(parsed.scope, 'none');
  });

  void test('the admin CLI uses the login session when no API token is given: refused without an AdminBinding, allowed with one', async () => {
    const refused = await cli(['get', 'service'], { env: { CAUSEWAY_HOME: home } });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /AdminBinding/);
    const binding = join(dir, 'binding.yaml');
    await writeFile(binding, 'apiVersion: causeway/v1\nkind: AdminBinding\nmetadata: {name: eng-viewers}\nspec: {role: viewer, groups: [eng]}\n');
    await ok(['apply', '-f', binding], { env: adminEnv() });
    try {
      const listed = await ok(['get', 'service'], { env: { CAUSEWAY_HOME: home } });
      assert.match(listed.stdout, /^prod-k8s\s/m);
    } finally {
      await ok(['delete', 'adminbinding', 'eng-viewers'], { env: adminEnv() });
    }
  });

  void test('device-code login driven through the device page and the login page gives a session kubectl works with', async () => {
    const deviceHome = join(dir, 'home-device');
    let approval: Promise<string> | undefined;
    const login = await ok(['login', publicUrl, '--ca-file', caFile, '--device-code'], {
      env: { CAUSEWAY_HOME: deviceHome },
      onStderrLine: (line) => {
        const m = /enter the code (\S+)$/.exec(line);
        if (m === null || approval !== undefined) return;
        approval = (async () => {
          const browser = new TestBrowser(caPem);
          const input = await browser.go(`${publicUrl}/oidc/device`);
          const confirm = await browser.submit(input, { user_code: m[1] });
          const loginPage = await browser.submit(confirm, {});
          const done = await browser.submit(loginPage, { name: 'alice', password: PASSWORD });
          return done.body;
        })();
      },
    });
    assert.ok(approval !== undefined, login.stderr);
    assert.match(await approval, /device is logged in/);
    assert.match(login.stderr, /Logged in to .* as alice/);
    const [kubectl] = kubectls;
    const got = await runKubectl(kubectl.path, ['get', 'pods', '-o', 'name'], { kubeconfig: kubeconfigFor(deviceHome, 'device'), timeoutMs: 60_000 });
    assert.equal(got.code, 0, got.stderr);
  });

  void test('browser login (--no-browser prints the URL; the login page is filled over HTTP) gives a session with a refresh token', async () => {
    const browserHome = join(dir, 'home-browser');
    let landed: Promise<{ status: number; body: string }> | undefined;
    const login = await ok(['login', publicUrl, '--ca-file', caFile, '--no-browser'], {
      env: { CAUSEWAY_HOME: browserHome },
      onStderrLine: (line) => {
        if (!line.startsWith(`${publicUrl}/oidc/auth?`) || landed !== undefined) return;
        landed = (async () => {
          const browser = new TestBrowser(caPem);
          const loginPage = await browser.go(line);
          // The form posts back to the login page, which redirects to the CLI's loopback listener.
          return browser.submit(loginPage, { name: 'alice', password: PASSWORD });
        })();
      },
    });
    assert.ok(landed !== undefined, login.stderr);
    const page = await landed;
    assert.equal(page.status, 200);
    assert.match(page.body, /Logged in to Causeway/);
    const session = JSON.parse(await readFile(join(browserHome, 'session.json'), 'utf8')) as { refreshToken?: string; user: { name: string } };
    assert.equal(session.user.name, 'alice');
    assert.ok(session.refreshToken !== undefined && session.refreshToken !== '', 'offline_access gave a refresh token');
  });

  void test('logout revokes the session and the next kube-credential fails with the line that says to log in', async () => {
    const logoutHome = join(dir, 'home-logout');
    await ok(['login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin'], { env: { CAUSEWAY_HOME: logoutHome }, stdin: `${PASSWORD}\n` });
    const out = await ok(['logout'], { env: { CAUSEWAY_HOME: logoutHome } });
    assert.match(out.stderr, /Logged out: the session was revoked/);
    const [kubectl] = kubectls;
    const got = await runKubectl(kubectl.path, ['get', 'pods'], { kubeconfig: kubeconfigFor(logoutHome, 'logout'), timeoutMs: 60_000 });
    assert.notEqual(got.code, 0);
    assert.ok(got.stderr.includes('causeway: not logged in: run causeway login <control plane URL>'), got.stderr);
  });

  void test('with short-lived kube tokens, a disabled user\'s token expires, the API refuses it, and kubectl shows the plugin\'s message', async () => {
    // Restart with 2-second kube tokens (the store keeps the session, keys and users).
    assert.ok(server !== undefined);
    await server.close();
    server = undefined;
    server = await start(2);
    const shortHome = join(dir, 'home-short');
    await ok(['login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin'], { env: { CAUSEWAY_HOME: shortHome }, stdin: `${PASSWORD}\n` });
    const kubeconfig = kubeconfigFor(shortHome, 'short');
    const [kubectl] = kubectls;
    const working = await runKubectl(kubectl.path, ['get', 'pods', '-o', 'name'], { kubeconfig, timeoutMs: 60_000 });
    assert.equal(working.code, 0, working.stderr);
    const credential = await ok(['kube-credential', '--cluster', 'prod'], { env: { CAUSEWAY_HOME: shortHome } });
    const token = (JSON.parse(credential.stdout) as { status: { token: string; expirationTimestamp: string } }).status;
    assert.equal(await getWithToken(token.token), 200);

    await ok(['user', 'disable', 'alice'], { env: adminEnv() });
    // Wait (without asserting on time) until the last token is past its exp, then it is refused.
    const exp = (jwtPayload(token.token).exp as number) * 1000;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, exp - Date.now()) + 1100));
    assert.equal(await getWithToken(token.token), 401);
    assert.ok(kube !== undefined);
    assert.equal(kube.requests.at(-1)?.authError, 'TOKEN_EXPIRED');

    const refused = await runKubectl(kubectl.path, ['get', 'pods'], { kubeconfig, timeoutMs: 60_000 });
    assert.notEqual(refused.code, 0);
    assert.ok(refused.stderr.includes(`causeway: not logged in to ${publicUrl} (or the session expired): run causeway login ${publicUrl}`), refused.stderr);
    await ok(['user', 'enable', 'alice'], { env: adminEnv() });
  });
});
