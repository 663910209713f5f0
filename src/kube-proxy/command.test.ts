/**
 * `causeway kube-proxy` as a command: without a control plane in front of the fake API server (which
 * trusts only the proxy and requires impersonation), the serving CA made once, printed and kept
 * across restarts, the leaf reissued when its names change, events as JSON lines, the health
 * endpoints; the in-cluster backend and its rotating token; and every flag mistake refused with a
 * message that says what to do.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { Command } from 'commander';
import { makeServerCert, makeTestCa } from '../../test/kit/certs.ts';
import { startFakeKube } from '../../test/kit/fake-kube/index.ts';
import type { FakeKube } from '../../test/kit/fake-kube/index.ts';
import { writeKubeconfig } from '../../test/kit/kubectl.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { idTokenClaims, startTestIssuer } from '../lib/oidc/test-issuer.testing.ts';
import type { TestIssuer } from '../lib/oidc/test-issuer.testing.ts';
import { backendFromFlags, registerKubeProxyCommand, rotatingTokenFile } from './command.ts';
import type { KubeProxy } from './index.ts';

const PROXY_TOKEN = 'kube-proxy-sa-token-0123456789';
const quiet = new Writable({ write: (_c, _e, cb) => cb() });

interface Started {
  proxy: KubeProxy;
  parts: Closable[];
  printed: string;
  stop: () => Promise<void>;
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'causeway-kube-proxy-command-'));
  await chmod(dir, 0o700);
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `causeway kube-proxy ARGS` in this process, as main.ts would, and returns what started. */
async function run(dir: string, args: string[], io: { env?: Record<string, string>; serviceAccountDir?: string } = {}): Promise<Started> {
  let proxy: KubeProxy | undefined;
  let parts: Closable[] = [];
  let printed = '';
  const program = new Command('causeway').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  registerKubeProxyCommand(program, {
    cwd: () => dir,
    env: () => io.env ?? {},
    logDestination: quiet,
    print: (text) => (printed += text),
    serviceAccountDir: io.serviceAccountDir ?? path.join(dir, 'no-service-account'),
    onStarted: (started, p) => {
      parts = started;
      proxy = p;
    },
  });
  await program.parseAsync(['node', 'causeway', 'kube-proxy', ...args]);
  assert.ok(proxy !== undefined);
  return {
    proxy,
    parts,
    printed,
    stop: async () => {
      for (const part of [...parts].reverse()) await part.close();
    },
  };
}

/** Runs the command and returns the error it fails with. */
async function failure(dir: string, args: string[], io: { env?: Record<string, string>; serviceAccountDir?: string } = {}): Promise<Error & { code?: string }> {
  try {
    const started = await run(dir, args, io);
    await started.stop();
  } catch (err) {
    return err as Error & { code?: string };
  }
  assert.fail(`causeway kube-proxy ${args.join(' ')} started`);
}

function get(url: string, caPem: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: caPem, headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface World {
  dir: string;
  kube: FakeKube;
  issuer: TestIssuer;
  issuerCa: string;
  kubeconfig: string;
  base: string[];
}

async function world(t: { after: (fn: () => Promise<void>) => void }): Promise<World> {
  const dir = await tempDir(t);
  const kube = await startFakeKube({ impersonation: { proxyToken: PROXY_TOKEN } });
  t.after(() => kube.close());
  const ca = await makeTestCa({ commonName: 'issuer CA' });
  const issuer = await startTestIssuer({ tls: await makeServerCert(ca, { ipAddresses: ['127.0.0.1'] }) });
  t.after(() => issuer.close());
  await issuer.addKey('ES256');
  const issuerCa = path.join(dir, 'issuer-ca.crt');
  await writeFile(issuerCa, ca.certPem, { mode: 0o600 });
  const kubeconfig = writeKubeconfig(path.join(dir, 'backend'), { server: kube.url, caPem: kube.caPem, token: PROXY_TOKEN });
  await chmod(path.join(dir, 'backend'), 0o700);
  const base = ['--cluster-name', 'prod', '--issuer', issuer.issuer, '--issuer-ca', issuerCa, '--backend-kubeconfig', kubeconfig, '--listen', '127.0.0.1:0', '--data-dir', 'state'];
  return { dir, kube, issuer, issuerCa, kubeconfig, base };
}

void test('without a control plane: tokens verified, the API server reached with impersonation, the serving CA printed and kept, events as JSON lines, health answered', async (t) => {
  const w = await world(t);
  const first = await run(w.dir, [...w.base, '--health-listen', '127.0.0.1:0', '--serving-name', 'kube.prod.example.com', '--username-prefix', 'causeway:', '--groups-prefix', 'causeway:']);
  t.after(() => first.stop());
  const caPem = await readFile(path.join(w.dir, 'state', 'serving-ca.crt'), 'utf8');
  assert.ok(first.printed.includes(caPem.trim()), 'the serving CA PEM is printed');
  assert.match(first.printed, /kubernetes\.caPublicKey/);
  const leaf = new X509Certificate(await readFile(path.join(w.dir, 'state', 'serving.crt')));
  assert.ok(leaf.checkHost('kube.prod.example.com') !== undefined && leaf.checkHost('causeway-kube-proxy.causeway.svc.cluster.local') !== undefined);
  assert.ok(leaf.verify(new X509Certificate(caPem).publicKey));
  assert.equal((await readFile(path.join(w.dir, 'state', 'serving-ca.key'))).length > 0, true);

  const token = await w.issuer.sign(idTokenClaims(w.issuer.issuer, 'kubernetes:prod', Date.now(), { groups: ['eng'] }));
  const answer = await get(`${first.proxy.url}/api/v1/namespaces/default/pods`, caPem, token);
  assert.equal(answer.status, 200, answer.body);
  assert.deepEqual(w.kube.requests.at(-1)?.user, { user: 'causeway:ada@example.com', groups: ['causeway:eng', 'system:authenticated'], extra: w.kube.requests.at(-1)?.user?.extra, impersonator: 'system:serviceaccount:causeway:causeway-kube-proxy' });
  const otherCluster = await w.issuer.sign(idTokenClaims(w.issuer.issuer, 'kubernetes:staging', Date.now()));
  assert.equal((await get(`${first.proxy.url}/api/v1/namespaces/default/pods`, caPem, otherCluster)).status, 401, 'another cluster\'s audience');

  const health = first.parts.find((p) => 'url' in p && String((p as { url: string }).url).startsWith('http://')) as unknown as { url: string } | undefined;
  assert.ok(health !== undefined, 'a health server runs');
  const readyz = await fetch(`${health.url}/readyz`);
  assert.equal(readyz.status, 200);
  const metrics = await (await fetch(`${health.url}/metrics`)).text();
  assert.match(metrics, /^causeway_kube_proxy_requests_total [1-9]/m);
  assert.match(metrics, /^causeway_kube_proxy_denied_total [1-9]/m);
  await first.stop();

  const lines = (await readFile(path.join(w.dir, 'state', 'kube-events.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { type: string; user: string; decision: string; clusterName: string; kubeProxy: string });
  assert.ok(lines.some((e) => e.type === 'kube-request' && e.user === 'causeway:ada@example.com' && e.decision === 'allow' && e.clusterName === 'prod' && e.kubeProxy === 'prod'));
  assert.ok(lines.some((e) => e.decision === 'deny'));

  // A restart keeps the CA (the Service's caPublicKey stays right) and reissues the leaf for a new name.
  const second = await run(w.dir, [...w.base, '--serving-name', 'kube.prod.example.com', '--serving-name', '10.0.0.7']);
  t.after(() => second.stop());
  assert.equal(await readFile(path.join(w.dir, 'state', 'serving-ca.crt'), 'utf8'), caPem);
  assert.doesNotMatch(second.printed, /\(new\)/);
  const reissued = new X509Certificate(await readFile(path.join(w.dir, 'state', 'serving.crt')));
  assert.notEqual(reissued.serialNumber, leaf.serialNumber);
  assert.ok(reissued.checkIP('10.0.0.7') !== undefined);
  assert.equal((await get(`${second.proxy.url}/version`, caPem, token)).status, 200);
});

void test('the in-cluster backend: KUBERNETES_SERVICE_HOST/PORT and the service account CA; the token is re-read when the kubelet rotates it', async (t) => {
  const dir = await tempDir(t);
  const sa = path.join(dir, 'sa');
  await mkdir(sa, { mode: 0o700 });
  const ca = await makeTestCa();
  await writeFile(path.join(sa, 'ca.crt'), ca.certPem);
  await writeFile(path.join(sa, 'token'), 'first-token\n');
  const io = { cwd: () => dir, env: () => ({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }), serviceAccountDir: sa };
  const backend = await backendFromFlags({}, io);
  assert.equal(backend.url, 'https://10.96.0.1:443');
  assert.equal(backend.caPem, ca.certPem);
  assert.equal(backend.token?.(), 'first-token');
  const elsewhere = await backendFromFlags({ backend: 'https://[fd00::1]:6443' }, io);
  assert.equal(elsewhere.url, 'https://[fd00::1]:6443');

  let now = 0;
  const token = rotatingTokenFile(path.join(sa, 'token'), () => now);
  assert.equal(token(), 'first-token');
  await writeFile(path.join(sa, 'token'), 'second-token\n');
  await utimes(path.join(sa, 'token'), new Date(), new Date(Date.now() + 5000));
  assert.equal(token(), 'first-token', 'not looked at again within 5 s');
  now += 6000;
  assert.equal(token(), 'second-token');
  await rm(path.join(sa, 'token'));
  now += 6000;
  assert.equal(token(), 'second-token', 'a token file missing mid-rotation keeps the last good token');

  await writeFile(path.join(sa, 'token'), 'third-token\n');
  const outside = await backendFromFlags({}, { ...io, env: () => ({}) }).catch((err: Error & { code?: string }) => err);
  assert.equal((outside as { code?: string }).code, 'KUBE_BACKEND_INVALID');
  assert.match((outside as Error).message, /--backend-kubeconfig/);
});

void test('flag mistakes are refused before anything starts, each saying what to do', async (t) => {
  const w = await world(t);
  const without = (flag: string, list = w.base): string[] => {
    const i = list.indexOf(flag);
    return [...list.slice(0, i), ...list.slice(i + 2)];
  };
  const cases: Array<[string, string[], string, RegExp]> = [
    ['no cluster name', without('--cluster-name'), 'kube-proxy-cluster-name-missing', /--cluster-name NAME/],
    ['no issuer and no control plane', without('--issuer'), 'kube-proxy-issuer-missing', /--control-plane URL .* or --issuer URL/],
    ['a join token without a control plane', [...w.base, '--join-token', 'x'], 'kube-proxy-flags-conflict', /--join-token need --control-plane/],
    ['a control plane without a data dir', [...without('--data-dir'), '--control-plane', 'https://127.0.0.1:1'], 'kube-proxy-data-dir-missing', /--data-dir DIR/],
    ['--events with a control plane', [...w.base, '--control-plane', 'https://127.0.0.1:1', '--events', 'e.jsonl'], 'kube-proxy-flags-conflict', /--events is for running without a control plane/],
    ['half a serving certificate', [...w.base, '--tls-cert', 'x.crt'], 'kube-proxy-flags-conflict', /both --tls-cert and --tls-key/],
    ['an http issuer', [...without('--issuer'), '--issuer', 'http://127.0.0.1:1'], 'kube-proxy-issuer-invalid', /https:\/\/ URL/],
    ['an http backend', [...without('--backend-kubeconfig'), '--backend', 'http://10.0.0.1'], 'kube-proxy-not-in-cluster', /service account/],
  ];
  for (const [name, args, code, message] of cases) {
    const err = await failure(w.dir, args);
    assert.equal(err.code, code, `${name}: ${err.message}`);
    assert.match(err.message, message, name);
  }
  const sa = path.join(w.dir, 'sa');
  await mkdir(sa, { mode: 0o700 });
  await writeFile(path.join(sa, 'ca.crt'), w.kube.caPem);
  await writeFile(path.join(sa, 'token'), PROXY_TOKEN);
  const http = await failure(w.dir, [...without('--backend-kubeconfig'), '--backend', 'http://10.0.0.1'], { serviceAccountDir: sa });
  assert.match(http.message, /--backend must be https:\/\//);
  const insecure = path.join(w.dir, 'backend', 'insecure.yaml');
  await writeFile(insecure, (await readFile(w.kubeconfig, 'utf8')).replace(/certificate-authority-data: .*/, 'insecure-skip-tls-verify: true'), { mode: 0o600 });
  assert.match((await failure(w.dir, [...without('--backend-kubeconfig'), '--backend-kubeconfig', insecure])).message, /insecure-skip-tls-verify/);
  // CN-09: a data directory another user could write is not ours.
  await mkdir(path.join(w.dir, 'open'), { mode: 0o777 });
  await chmod(path.join(w.dir, 'open'), 0o777);
  const open = await failure(w.dir, [...without('--data-dir'), '--data-dir', 'open']);
  assert.equal(open.code, 'kube-proxy-file-unsafe');
  assert.equal(w.kube.requests.length, 0, 'nothing reached the API server');
});
