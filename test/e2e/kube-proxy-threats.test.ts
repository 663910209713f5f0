/**
 * Attacks on the kube proxy that need the whole chain (THREATS KP-*, OP-05), each a named test:
 * kubectl and hand-written HTTP/1.1 through the client proxy, access tier and connector to
 * `causeway kube-proxy`, in front of the fake API that trusts only the proxy and requires
 * impersonation (so a request it serves shows the identity the proxy asserted, and a client
 * identity header reaching it is refused loudly). Socket-level attacks on the proxy alone live in
 * src/kube-proxy/*.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { ClientProxy } from '../../src/client/proxy.ts';
import type { KubeEvent } from '../../src/lib/audit/index.ts';
import { kubectlBinaries, runKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary } from '../kit/kubectl.ts';
import { CLUSTER, DOMAIN, newHome, startDeviceSystem, until } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();
const OTHER_DOMAIN = 'kube.other.causeway.test';

let system: DeviceSystem;
let home: string;
let proxy: ClientProxy;
let token: string;

async function credential(cluster: string): Promise<string> {
  const r = await system.cli(['kube-credential', '--cluster', cluster], { env: { CAUSEWAY_HOME: home } });
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { status: { token: string } }).status.token;
}

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  system = await startDeviceSystem({ kubeProxy: {} });
  await system.put('Policy', 'k8s', { access: [{ roles: ['eng'], trustLevel: 'Low' }] });
  // A second cluster, so that Causeway issues tokens for another audience.
  await system.put('Service', 'other-k8s', {
    type: 'kubernetes',
    cluster: 'e2e',
    accessTier: 'edge-1',
    connector: 'dc1',
    domain: OTHER_DOMAIN,
    port: 443,
    backend: { dnsOverride: '127.0.0.1:9' },
    kubernetes: { clusterName: 'other', caPublicKey: system.kubeProxyServingCa },
    policy: { name: 'k8s', mode: 'enforcing' },
  });
  home = await newHome(system, 'alice');
  await system.login(home);
  proxy = await system.proxyFor(home);
  token = await credential(CLUSTER);
});

after(async () => {
  await system?.close();
});

/** A TLS connection to the kube proxy through the client proxy (CONNECT), the access tier and the connector. */
async function throughChain(): Promise<TLSSocket> {
  const raw = netConnect({ host: '127.0.0.1', port: proxy.port() });
  await new Promise<void>((resolve, reject) => {
    raw.once('error', reject);
    raw.once('connect', () => resolve());
  });
  raw.write(`CONNECT ${DOMAIN}:443 HTTP/1.1\r\nHost: ${DOMAIN}:443\r\n\r\n`);
  const head = await new Promise<string>((resolve, reject) => {
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        raw.off('data', onData);
        resolve(text);
      }
    };
    raw.on('data', onData);
    raw.once('error', reject);
  });
  assert.match(head, /^HTTP\/1\.1 200/, head);
  const tls = tlsConnect({ socket: raw, servername: DOMAIN, ca: system.kubeProxyServingCa });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => resolve());
    tls.once('error', reject);
  });
  return tls;
}

/** Everything the socket receives until it closes or goes quiet for `quietMs`. */
function collect(socket: TLSSocket, quietMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    let timer = setTimeout(() => done(false), quietMs);
    const done = (closed: boolean): void => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      resolve({ text, closed });
    };
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      clearTimeout(timer);
      timer = setTimeout(() => done(false), quietMs);
    });
    socket.once('close', () => done(true));
    socket.on('error', () => undefined);
  });
}

function request(path: string, headers: Array<[string, string]>, method = 'GET'): string {
  return `${method} ${path} HTTP/1.1\r\nHost: ${DOMAIN}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

/** One request on a fresh connection; the answer's status and body. */
async function exchange(path: string, headers: Array<[string, string]>): Promise<{ status: number; text: string }> {
  const socket = await throughChain();
  socket.write(request(path, [...headers, ['Connection', 'close']]));
  const { text } = await collect(socket, 5000);
  socket.destroy();
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text };
}

async function kubeEvents(query: Record<string, string>): Promise<KubeEvent[]> {
  const r = await system.api('GET', `/api/v1/kube-events?${new URLSearchParams({ limit: '500', ...query }).toString()}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return (r.body as { events: KubeEvent[] }).events;
}

const PODS = '/api/v1/namespaces/default/pods';

function podsRequests(): number {
  return system.kube.requests.filter((q) => q.path === PODS).length;
}

void test('OP-05 a token for another cluster\'s audience is refused by the kube proxy; kubectl says to log in and the API server sees nothing', async () => {
  const other = await credential('other');
  assert.notEqual(other, token);
  const before = podsRequests();
  const direct = await exchange(PODS, [['Authorization', `Bearer ${other}`]]);
  assert.equal(direct.status, 401, direct.text);
  assert.match(direct.text, /"kind":"Status"/);
  for (const bin of binaries) {
    const setup = system.kubectlSetup(proxy, `other-${bin.version}`, home, 'other');
    const r = await runKubectl(bin.path, ['get', 'pods'], { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 60_000 });
    assert.notEqual(r.code, 0, `kubectl ${bin.version}`);
    assert.match(r.stderr, /Unauthorized|must be logged in/, `kubectl ${bin.version}: ${r.stderr}`);
  }
  assert.equal(podsRequests(), before, 'no request reached the API server');
  await until(async () => (await kubeEvents({ type: 'kube-request', decision: 'deny' })).some((e) => e.code === 401 && e.path === PODS), 20_000, 'the refusal at the control plane');
});

void test('KP-01 client Impersonate-* in any casing and X-Remote-* never reach the API server; the caller stays alice', async () => {
  system.kube.clearRequests();
  const answer = await exchange(PODS, [
    ['Authorization', `Bearer ${token}`],
    ['Impersonate-User', 'admin'],
    ['Impersonate-Group', 'system:masters'],
    ['IMPERSONATE-GROUP', 'system:masters'],
    ['impersonate-group', 'system:masters'],
    ['iMpErSoNaTe-ExTrA-scopes', 'cluster-admin'],
    ['Impersonate-Uid', '0'],
    ['X-Remote-User', 'root'],
    ['X-Remote-Group', 'system:masters'],
    ['x-remote-extra-scopes', 'all'],
  ]);
  // The fake API refuses any X-Remote-* with 400 and requires exactly one Impersonate-User: a 200 means all were dropped.
  assert.equal(answer.status, 200, answer.text);
  const seen = system.kube.requests.find((q) => q.path === PODS);
  assert.equal(seen?.user?.user, 'alice@example.com');
  assert.deepEqual(seen?.user?.groups, ['eng', 'system:authenticated']);
  assert.deepEqual(Object.keys(seen?.user?.extra ?? {}), ['causeway.dev/device']);
  assert.ok(seen !== undefined && !seen.rawHeaders.some((h) => /^impersonate-uid$/i.test(h)), 'no client Impersonate-Uid');
});

void test('KP-01 Connection: Impersonate-User, Impersonate-Group, Authorization cannot strip the proxy\'s own headers', async () => {
  system.kube.clearRequests();
  const answer = await exchange(PODS, [['Authorization', `Bearer ${token}`], ['Connection', 'Impersonate-User, Impersonate-Group, Authorization, Keep-Alive']]);
  assert.equal(answer.status, 200, answer.text);
  const seen = system.kube.requests.find((q) => q.path === PODS);
  assert.equal(seen?.user?.user, 'alice@example.com', 'impersonated, not sent as the proxy\'s own account');
  assert.equal(seen?.authError, undefined);
});

void test('KP-04 a token in the query string is refused and never forwarded, with or without an Authorization header', async () => {
  const before = podsRequests();
  const queryOnly = await exchange(`${PODS}?access_token=${encodeURIComponent(token)}`, []);
  assert.equal(queryOnly.status, 401, queryOnly.text);
  const both = await exchange(`${PODS}?access_token=${encodeURIComponent(token)}`, [['Authorization', `Bearer ${token}`]]);
  assert.equal(both.status, 401, both.text);
  assert.equal(podsRequests(), before);
  assert.ok(!system.kube.requests.some((q) => q.url.includes(token)), 'the token never reached the API server');
});

void test('KP-04 a second request on a kept-alive connection with another token is that token\'s request', async () => {
  const socket = await throughChain();
  socket.write(request(PODS, [['Authorization', `Bearer ${token}`]]));
  const first = await collect(socket, 2500);
  assert.match(first.text, /^HTTP\/1\.1 200/);
  assert.equal(first.closed, false, 'kept alive');
  const forged = `${token.split('.').slice(0, 2).join('.')}.${randomBytes(64).toString('base64url')}`;
  const before = podsRequests();
  socket.write(request(PODS, [['Authorization', `Bearer ${forged}`]]));
  const second = await collect(socket, 2500);
  assert.match(second.text, /^HTTP\/1\.1 401/, second.text);
  assert.equal(podsRequests(), before, 'the forged request did not ride on the first one\'s identity');
  socket.destroy();
});

void test('KP-05 after a refused upgrade the socket is closed and later bytes never reach the API server', async () => {
  system.kube.clearRequests();
  const socket = await throughChain();
  socket.write(request('/api/v1/namespaces/default/pods/ghost/exec?command=sh&stdout=true', [
    ['Authorization', `Bearer ${token}`],
    ['Connection', 'Upgrade'],
    ['Upgrade', 'websocket'],
    ['Sec-WebSocket-Version', '13'],
    ['Sec-WebSocket-Key', randomBytes(16).toString('base64')],
    ['Sec-WebSocket-Protocol', 'v5.channel.k8s.io'],
  ]));
  // Smuggled right behind the upgrade, as if the connection had been switched.
  socket.write(request('/api/v1/namespaces/kube-system/secrets', [['X-Smuggled', 'yes']]));
  const answer = await collect(socket, 5000);
  assert.match(answer.text, /^HTTP\/1\.1 404/, answer.text);
  assert.ok(answer.closed, 'the client socket is closed after the refusal');
  assert.ok(!system.kube.requests.some((q) => q.path.includes('secrets') || q.headers['x-smuggled'] !== undefined), 'the smuggled request never reached the API server');
});

void test('KP-05 Upgrade: h2c is refused with 400 and the socket closed; the API server sees nothing', async () => {
  system.kube.clearRequests();
  const socket = await throughChain();
  socket.write(request(PODS, [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAAQAoAAAAAIAAAAA']]));
  const answer = await collect(socket, 5000);
  assert.match(answer.text, /^HTTP\/1\.1 400/, answer.text);
  assert.equal(system.kube.requests.length, 0);
  socket.destroy();
});
