import { test, describe, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { CertificateAuthority, issueKeyAndCert, mtlsServerOptions } from '../lib/pki/index.ts';
import { formatConnectResponse, parseConnectHead, parseConnectResponseHead } from '../lib/net/connect-request.ts';
import { parseSpecDocuments } from '../lib/spec/index.ts';
import type { ServiceSpec } from '../lib/spec/index.ts';
import { errorCode } from '../lib/errors.ts';
import { loopbackProblem, proxyModeFor, startClientProxy } from './proxy.ts';
import type { ClientProxy, ClientProxyOptions, TrustMaterial } from './proxy.ts';

// ---------------------------------------------------------------------------------------------
// Fixtures

const DOMAIN = 'mykube.corp.example.com';

function serviceFromYaml(yaml: string): ServiceSpec {
  const parsed = parseSpecDocuments(yaml);
  if (!parsed.ok) throw new Error(`fixture spec is invalid: ${JSON.stringify(parsed.problems)}`);
  const service = parsed.objects.find((o): o is ServiceSpec => o.kind === 'Service');
  if (service === undefined) throw new Error('fixture has no Service');
  return service;
}

let kubeService: ServiceSpec;
let dbService: ServiceSpec;
let webService: ServiceSpec;

function makeServices(caPem: string): void {
  kubeService = serviceFromYaml(`
apiVersion: causeway/v1
kind: Service
metadata: {name: prod-k8s}
spec:
  type: kubernetes
  cluster: global-edge
  accessTier: edge-1
  domain: ${DOMAIN}
  port: 443
  showInCatalog: true
  autorun: false
  backend: {dnsOverride: "kube-proxy.causeway.svc.cluster.local:8443"}
  client: {listenPort: 8081, allowUserOverride: true}
  kubernetes: {clusterName: prod, caPublicKey: ${JSON.stringify(caPem)}}
`);

  dbService = serviceFromYaml(`
apiVersion: causeway/v1
kind: Service
metadata: {name: orders-db}
spec:
  type: tcp
  cluster: global-edge
  accessTier: edge-1
  domain: orders-db.corp.example.com
  port: 5432
  showInCatalog: true
  autorun: false
  backend: {target: "orders.db.internal:5432"}
  client: {listenPort: 15432, allowUserOverride: false}
`);

  webService = serviceFromYaml(`
apiVersion: causeway/v1
kind: Service
metadata: {name: internal-web}
spec:
  type: tcp
  cluster: global-edge
  accessTier: edge-1
  domain: web.corp.example.com
  port: 443
  showInCatalog: true
  autorun: false
  backend:
    httpConnect: true
    allowPatterns: [{hostnames: ["*.example.com"], cidrs: ["10.1.0.0/16"], ports: [443, 8443]}]
  client: {listenPort: 18443, allowUserOverride: true}
`);
}

interface Keys {
  certPem: string;
  keyPem: string;
  caPem: string;
  serial: string;
}

let ca: CertificateAuthority;
let accessTierKeys: Keys;
let connectorKeys: Keys;
let trustA: Keys;
let trustB: Keys;
let foreignTrust: Keys;
let expiredTrust: Keys;

before(async () => {
  ca = await CertificateAuthority.create();
  makeServices(ca.certPem);
  accessTierKeys = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
  connectorKeys = await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } });
  trustA = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
  trustB = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
  const otherCa = await CertificateAuthority.create({ commonName: 'Causeway CA' });
  foreignTrust = { ...(await issueKeyAndCert(otherCa, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } })), caPem: ca.certPem };
  const pastCa = await CertificateAuthority.create({ clock: { now: () => Date.now() - 10 * 3600_000 } });
  expiredTrust = { ...(await issueKeyAndCert(pastCa, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' }, lifetimeMs: 3600_000 })), caPem: ca.certPem };
});

function trustOf(keys: Keys): TrustMaterial {
  return { certPem: keys.certPem, keyPem: keys.keyPem, caPem: keys.caPem };
}

// ---------------------------------------------------------------------------------------------
// Backends and the stand-in access tier

async function listenOn(t: TestContext, server: net.Server): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    if (server.listening) await once(server, 'close');
  });
  return (server.address() as net.AddressInfo).port;
}

/** Echoes every byte and ends after the client ends. */
async function startEcho(t: TestContext): Promise<number> {
  return listenOn(
    t,
    net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    }),
  );
}

/** Reads until the client ends, then answers with the byte count and hash, and ends: shows half-close works both ways. */
async function startDigest(t: TestContext): Promise<number> {
  return listenOn(
    t,
    net.createServer({ allowHalfOpen: true }, (s) => {
      const hash = createHash('sha256');
      let n = 0;
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        n += d.length;
        hash.update(d);
      });
      s.on('end', () => s.end(`${n}:${hash.digest('hex')}`));
    }),
  );
}

interface StandInSession {
  sni: string | false | null;
  resumed: boolean;
  peerSerial: string | undefined;
  /** The raw CONNECT head as received (CHAIN mode). */
  head?: string;
}

interface StandIn {
  address: string;
  /** TCP connections accepted, before any TLS. */
  tcpConnections: number;
  sessions: StandInSession[];
  tlsErrors: Error[];
}

interface StandInOptions {
  keys?: Keys;
  backendPort: number;
  mode?: 'chain' | 'tcp';
  domain?: string;
  /** Answer for a CONNECT authority; undefined means 200 and relay to the backend. */
  answer?: (authority: string) => Buffer | 'close' | 'hang' | undefined;
}

/**
 * A small access tier: TLS 1.3 with our mTLS server options, checks SNI, reads one CONNECT head
 * (CHAIN) or nothing (TCP), answers, and relays to a loopback backend.
 */
async function startStandIn(t: TestContext, opts: StandInOptions): Promise<StandIn> {
  const keys = opts.keys ?? accessTierKeys;
  const domain = opts.domain ?? DOMAIN;
  const state: StandIn = { address: '', tcpConnections: 0, sessions: [], tlsErrors: [] };
  const server = tls.createServer({ ...mtlsServerOptions(keys), allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    const session: StandInSession = { sni: socket.servername, resumed: socket.isSessionReused(), peerSerial: socket.getPeerX509Certificate()?.serialNumber };
    state.sessions.push(session);
    const relayTo = (leftover: Buffer): void => {
      const backend = net.connect({ host: '127.0.0.1', port: opts.backendPort, allowHalfOpen: true });
      backend.on('error', () => socket.destroy());
      socket.on('close', () => backend.destroy());
      if (leftover.length > 0) backend.write(leftover);
      socket.pipe(backend);
      backend.pipe(socket);
    };
    if (socket.servername !== domain) {
      socket.end(formatConnectResponse(421, 'sni-unknown', 'no such service'));
      return;
    }
    if (opts.mode === 'tcp') {
      relayTo(Buffer.alloc(0));
      return;
    }
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const parsed = parseConnectHead(buf);
      if (parsed.state === 'incomplete') return;
      socket.off('data', onData);
      socket.pause();
      session.head = buf.subarray(0, parsed.state === 'done' ? parsed.headLength : buf.length).toString('latin1');
      if (parsed.state === 'error') {
        socket.end(formatConnectResponse(parsed.status, parsed.code, parsed.message));
        return;
      }
      const answer = opts.answer?.(parsed.authority);
      if (answer === 'close') {
        socket.destroy();
        return;
      }
      if (answer === 'hang') return;
      if (answer !== undefined) {
        socket.end(answer);
        return;
      }
      socket.write(formatConnectResponse(200));
      relayTo(buf.subarray(parsed.headLength));
    };
    socket.on('data', onData);
  });
  server.on('connection', () => (state.tcpConnections += 1));
  server.on('tlsClientError', (err) => state.tlsErrors.push(err));
  const port = await listenOn(t, server);
  state.address = `127.0.0.1:${port}`;
  return state;
}

async function startProxy(t: TestContext, opts: Partial<ClientProxyOptions> & { accessTierAddress: string }): Promise<ClientProxy> {
  const proxy = await startClientProxy({ service: kubeService, trust: trustOf(trustA), hosts: ['127.0.0.1'], port: 0, ...opts });
  t.after(() => proxy.destroy());
  return proxy;
}

// ---------------------------------------------------------------------------------------------
// Local clients (what kubectl does)

interface Answer {
  status: number;
  reason: string | undefined;
  body: string;
  raw: string;
}

/** Sends bytes, then reads until the proxy closes, and parses what came back. */
async function exchange(port: number, bytes: Buffer | string, opts: { end?: boolean } = {}): Promise<Answer> {
  const socket = net.connect({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => {});
  socket.write(bytes);
  if (opts.end === true) socket.end();
  await once(socket, 'close');
  const raw = Buffer.concat(chunks);
  return parseAnswer(raw);
}

function parseAnswer(raw: Buffer): Answer {
  const parsed = parseConnectResponseHead(raw);
  if (parsed.state !== 'done') return { status: 0, reason: undefined, body: '', raw: raw.toString('latin1') };
  return {
    status: parsed.status,
    reason: parsed.reason,
    body: raw.subarray(parsed.headLength, parsed.headLength + parsed.bodyLength).toString('utf8'),
    raw: raw.toString('latin1'),
  };
}

function connectHead(authority: string, extra = ''): string {
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\nUser-Agent: kubectl/v1.35.0\r\n${extra}\r\n`;
}

interface Tunnel {
  socket: net.Socket;
  status: number;
  reason: string | undefined;
  /** Bytes that came after the answer's head. */
  rest: Buffer;
}

/** Opens a CONNECT tunnel through the proxy; on 200 the socket is the tunnel. */
async function openTunnel(t: TestContext, port: number, authority = `${DOMAIN}:443`, extra = ''): Promise<Tunnel> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  socket.setNoDelay(true);
  t.after(() => socket.destroy());
  socket.write(connectHead(authority, extra));
  let buf = Buffer.alloc(0);
  for (;;) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    buf = Buffer.concat([buf, chunk]);
    const parsed = parseConnectResponseHead(buf);
    if (parsed.state === 'incomplete') continue;
    if (parsed.state === 'error') throw new Error(`bad answer: ${buf.toString('latin1')}`);
    socket.pause();
    return { socket, status: parsed.status, reason: parsed.reason, rest: buf.subarray(parsed.headLength) };
  }
}

/** Writes `data`, ends, and collects everything until the tunnel ends. */
async function roundTrip(socket: net.Socket, data: Buffer | string, first: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const chunks: Buffer[] = [first];
  socket.on('data', (d: Buffer) => chunks.push(d));
  const ended = once(socket, 'end');
  socket.resume();
  socket.end(data);
  await ended;
  return Buffer.concat(chunks);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

// ---------------------------------------------------------------------------------------------

void describe('client proxy, CHAIN mode', () => {
  void test('a CONNECT to the service domain opens a tunnel that carries bytes both ways', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const tunnel = await openTunnel(t, proxy.port());
    assert.equal(tunnel.status, 200);
    const echoed = await roundTrip(tunnel.socket, 'GET /api HTTP/1.1\r\n\r\n', tunnel.rest);
    assert.equal(echoed.toString(), 'GET /api HTTP/1.1\r\n\r\n');
    assert.equal(standIn.sessions.length, 1);
    assert.equal(standIn.sessions[0]?.sni, DOMAIN);
    assert.equal(standIn.sessions[0]?.peerSerial, trustA.serial);
    const stats = proxy.stats();
    assert.equal(stats.connections, 1);
    assert.equal(stats.bytesUp, 21);
    assert.equal(stats.bytesDown, 21);
  });

  void test('the access tier receives only a clean CONNECT with the canonical authority', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const tunnel = await openTunnel(t, proxy.port(), 'MyKube.Corp.Example.COM.:443', 'X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\n');
    assert.equal(tunnel.status, 200);
    tunnel.socket.destroy();
    assert.equal(standIn.sessions[0]?.head, `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nHost: ${DOMAIN}:443\r\n\r\n`);
  });

  void test('half-close: the client ends its side and still receives the backend answer, then the end', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startDigest(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const tunnel = await openTunnel(t, proxy.port());
    const answer = await roundTrip(tunnel.socket, 'hello', tunnel.rest);
    assert.equal(answer.toString(), `5:${createHash('sha256').update('hello').digest('hex')}`);
  });

  void test('bytes the client sends right after the CONNECT head reach the backend after the 200', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const socket = net.connect({ host: '127.0.0.1', port: proxy.port(), allowHalfOpen: true });
    t.after(() => socket.destroy());
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.end(connectHead(`${DOMAIN}:443`) + 'early-bytes');
    await once(socket, 'end');
    assert.equal(Buffer.concat(chunks).toString('latin1'), 'HTTP/1.1 200 Connection established\r\n\r\nearly-bytes');
  });

  void test('a 20 MB transfer each way arrives intact (hash-checked)', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const tunnel = await openTunnel(t, proxy.port());
    const payload = randomBytes(20 * 1024 * 1024);
    const started = performance.now();
    const hash = createHash('sha256');
    let received = tunnel.rest.length;
    hash.update(tunnel.rest);
    tunnel.socket.on('data', (d: Buffer) => {
      received += d.length;
      hash.update(d);
    });
    const ended = once(tunnel.socket, 'end');
    tunnel.socket.resume();
    tunnel.socket.end(payload);
    await ended;
    const seconds = (performance.now() - started) / 1000;
    assert.equal(received, payload.length);
    assert.equal(hash.digest('hex'), createHash('sha256').update(payload).digest('hex'));
    assert.equal(proxy.stats().bytesUp, payload.length);
    assert.equal(proxy.stats().bytesDown, payload.length);
    t.diagnostic(`20 MiB echoed through proxy + stand-in in ${seconds.toFixed(2)} s (${((2 * 8 * payload.length) / seconds / 1e9).toFixed(2)} Gbit/s both ways together)`);
  });

  void test("the access tier's 403 with its reason and message is passed back to the client", async (t) => {
    const standIn = await startStandIn(t, {
      backendPort: await startEcho(t),
      answer: () => formatConnectResponse(403, 'device-untrusted', 'Your device trust level is Low; policy k8s-prod needs Medium.'),
    });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 403);
    assert.equal(answer.reason, 'device-untrusted');
    assert.match(answer.body, /trust level is Low; policy k8s-prod needs Medium/);
  });

  void test('an answer from the access tier with control characters and an odd status is sanitised', async (t) => {
    const standIn = await startStandIn(t, {
      backendPort: await startEcho(t),
      answer: () => Buffer.from('HTTP/1.1 302 Found\r\nX-Causeway-Reason: Weird Reason!\r\nContent-Length: 22\r\n\r\nline1\r\nline2\x1b[31m\u202eok'),
    });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'weirdreason');
    assert.doesNotMatch(answer.body.trimEnd(), /\p{Cc}|\p{Cf}/u);
    assert.match(answer.body, /line1/);
  });

  void test('an access tier that closes without a word after the handshake gives 502 access-tier-tls-failed (how a refused certificate looks)', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t), answer: () => 'close' });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-tls-failed');
    assert.match(answer.body, /causeway login/);
  });

  void test('an access tier that closes in the middle of its answer gives 502 access-tier-closed', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t), answer: () => Buffer.from('HTTP/1.1 403 Forb') });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-closed');
  });

  void test('an unreachable access tier gives 502 access-tier-unreachable naming the address', async (t) => {
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const address = `127.0.0.1:${(closed.address() as net.AddressInfo).port}`;
    closed.close();
    await once(closed, 'close');
    const proxy = await startProxy(t, { accessTierAddress: address });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-unreachable');
    assert.ok(answer.body.includes(address), answer.body);
  });

  void test('an access tier that never answers the CONNECT gives 502 after the connect timeout', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t), answer: () => 'hang' });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address, connectTimeoutMs: 200 });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-unreachable');
  });

  void test('CA-03 an access tier presenting a connector certificate gives 502 access-tier-tls-failed', async (t) => {
    const standIn = await startStandIn(t, { keys: connectorKeys, backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-tls-failed');
    assert.match(answer.body, /causeway login/);
    assert.equal(standIn.sessions.length, 0);
  });

  void test('CA-02 a trust certificate the access tier refuses (another CA) gives 502 access-tier-tls-failed', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address, trust: trustOf(foreignTrust) });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-tls-failed');
    assert.equal(standIn.sessions.length, 0);
  });

  void test('CA-01 an expired trust certificate gives 502 access-tier-tls-failed saying when it expired', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address, trust: trustOf(expiredTrust) });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'access-tier-tls-failed');
    assert.match(answer.body, /expired at .*causeway login/);
  });

  void test('a trust getter that throws gives 502 trust-cert-unavailable without dialling', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, {
      accessTierAddress: standIn.address,
      trust: () => {
        throw new Error('no trust.crt');
      },
    });
    const answer = await exchange(proxy.port(), connectHead(`${DOMAIN}:443`));
    assert.equal(answer.status, 502);
    assert.equal(answer.reason, 'trust-cert-unavailable');
    assert.equal(standIn.tcpConnections, 0);
  });

  void test('a renewed trust certificate from the getter is used for the next connection', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    let current = trustA;
    const proxy = await startProxy(t, { accessTierAddress: standIn.address, trust: () => trustOf(current) });
    for (const expected of [trustA, trustA, trustB, trustB]) {
      current = expected;
      const tunnel = await openTunnel(t, proxy.port());
      assert.equal(tunnel.status, 200);
      await roundTrip(tunnel.socket, 'x', tunnel.rest);
    }
    assert.deepEqual(
      standIn.sessions.map((s) => s.peerSerial),
      [trustA.serial, trustA.serial, trustB.serial, trustB.serial],
    );
    // The second connection under each certificate resumes; the first under a new certificate never does.
    assert.deepEqual(
      standIn.sessions.map((s) => s.resumed),
      [false, true, false, true],
    );
  });

  void test('LP-05 Proxy-Authorization sent by the client never reaches the access tier and is never echoed', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const secret = 'Basic c2VjcmV0LXVzZXI6aHVudGVyMg==';
    const tunnel = await openTunnel(t, proxy.port(), `${DOMAIN}:443`, `Proxy-Authorization: ${secret}\r\nproxy-authorization: ${secret}\r\n`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.destroy();
    const head = standIn.sessions[0]?.head ?? '';
    assert.doesNotMatch(head, /proxy-authorization/i);
    assert.ok(!head.includes('c2VjcmV0'));
    const refused = await exchange(proxy.port(), connectHead('evil.example.com:443', `Proxy-Authorization: ${secret}\r\n`));
    assert.equal(refused.status, 403);
    assert.ok(!refused.raw.includes('c2VjcmV0'), refused.raw);
  });
});

void describe('client proxy request checks', () => {
  // One proxy and stand-in shared by the batteries; the stand-in counts every TCP connection it sees.
  let standIn: StandIn;
  let proxy: ClientProxy;
  const cleanups: Array<() => Promise<void> | void> = [];

  before(async () => {
    const ctx = { after: (fn: () => Promise<void> | void) => cleanups.push(fn) } as unknown as TestContext;
    const echoPort = await startEcho(ctx);
    standIn = await startStandIn(ctx, { backendPort: echoPort });
    proxy = await startClientProxy({ service: kubeService, accessTierAddress: standIn.address, trust: trustOf(trustA), hosts: ['127.0.0.1'], port: 0, headerTimeoutMs: 300 });
  });
  after(async () => {
    await proxy.close();
    for (const fn of cleanups.reverse()) await fn();
  });

  const refusedTargets: Array<[string, string]> = [
    ['0x7f.1:443', 'hex IPv4 shorthand'],
    ['2130706433:443', 'IPv4 as one decimal number'],
    ['017700000001:443', 'IPv4 as one octal number'],
    ['127.1:443', 'two-part IPv4'],
    ['012.0.0.1:443', 'octal first part'],
    ['127.0.0.1:443', 'plain loopback'],
    ['[::ffff:127.0.0.1]:443', 'IPv4-mapped IPv6, dotted'],
    ['[::ffff:7f00:1]:443', 'IPv4-mapped IPv6, hex'],
    ['[64:ff9b::7f00:1]:443', 'NAT64 well-known prefix'],
    ['[64:ff9b:1::7f00:1]:443', 'NAT64 local-use prefix'],
    [`${DOMAIN}.evil.com:443`, 'the service domain as a prefix of another'],
    [`evil${DOMAIN}:443`, 'a lookalike with a prefix'],
    ['mykube-corp.example.com:443', 'a lookalike with a hyphen'],
    [`user@${DOMAIN}:443`, 'userinfo'],
    [`${DOMAIN}%00.evil.com:443`, 'percent-encoded NUL'],
    [`${DOMAIN}:8443`, 'another port'],
    [`${DOMAIN}:0443`, 'a port with a leading zero'],
    [`${DOMAIN}`, 'no port'],
    [`[${DOMAIN}]:443`, 'a name in brackets'],
  ];

  for (const [authority, what] of refusedTargets) {
    void test(`LP-03 a CONNECT to ${authority} (${what}) is refused with a reason and nothing is dialled`, async () => {
      const before = standIn.tcpConnections;
      const answer = await exchange(proxy.port(), `CONNECT ${authority} HTTP/1.1\r\n\r\n`);
      assert.ok(answer.status === 403 || answer.status === 400, `status ${answer.status}: ${answer.raw}`);
      assert.ok(answer.reason !== undefined && answer.reason.length > 0, answer.raw);
      assert.equal(standIn.tcpConnections, before);
    });
  }

  void test('LP-03 a target outside the service gets 403 target-not-allowed naming the service and what it accepts', async () => {
    const answer = await exchange(proxy.port(), connectHead('evil.example.com:443'));
    assert.equal(answer.status, 403);
    assert.equal(answer.reason, 'target-not-allowed');
    assert.match(answer.body, /prod-k8s/);
    assert.match(answer.body, new RegExp(`only ${DOMAIN.replace(/\./g, '\\.')}:443`));
  });

  for (const authority of [`${DOMAIN}.:443`, 'MYKUBE.Corp.Example.COM:443']) {
    void test(`LP-03 ${authority} (trailing dot or upper case) is the service domain and is accepted`, async (t) => {
      const tunnel = await openTunnel(t, proxy.port(), authority);
      assert.equal(tunnel.status, 200);
      const echoed = await roundTrip(tunnel.socket, 'ping', tunnel.rest);
      assert.equal(echoed.toString(), 'ping');
      assert.equal(standIn.sessions.at(-1)?.head, `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nHost: ${DOMAIN}:443\r\n\r\n`);
    });
  }

  const malformed: Array<[string, string, number]> = [
    ['LP-06 CRLF inside the CONNECT authority', `CONNECT ${DOMAIN}:443\r\nHost: evil.example.com:443 HTTP/1.1\r\n\r\n`, 400],
    ['LP-06 a bare LF inside the CONNECT authority', `CONNECT ${DOMAIN}:443\nX: y HTTP/1.1\r\n\r\n`, 400],
    ['LP-06 an absolute-form GET', `GET http://${DOMAIN}:443/api HTTP/1.1\r\nHost: ${DOMAIN}:443\r\n\r\n`, 405],
    ['LP-02 an origin-form GET such as a DNS-rebinding page sends', 'GET / HTTP/1.1\r\nHost: attacker.example:8081\r\nOrigin: http://attacker.example:8081\r\n\r\n', 405],
    ['LP-02 a POST from a web page', 'POST /api HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nContent-Length: 2\r\n\r\n{}', 405],
    ['LP-02 a Host header that does not match the CONNECT authority', `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nHost: evil.example.com:443\r\n\r\n`, 400],
    ['LP-02 a CONNECT carrying an Origin header', `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nOrigin: https://attacker.example\r\n\r\n`, 403],
    ['AT-09 a CONNECT with Content-Length', `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello`, 400],
    ['AT-09 a CONNECT with Transfer-Encoding', `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n`, 400],
    ['AT-09 an obs-fold header line', `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n`, 400],
    ['AT-10 an oversized head', `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ];
  for (const [name, request, status] of malformed) {
    void test(`${name} is refused with ${status} and nothing is dialled`, async () => {
      const before = standIn.tcpConnections;
      const answer = await exchange(proxy.port(), request);
      assert.equal(answer.status, status, answer.raw);
      assert.ok(answer.reason !== undefined, answer.raw);
      assert.equal(standIn.tcpConnections, before);
    });
  }

  void test('a client that never finishes its CONNECT head gets 408 after the header timeout', async () => {
    const answer = await exchange(proxy.port(), `CONNECT ${DOMAIN}:443 HTTP/1.1\r\nHost: ${DOMAIN}`);
    assert.equal(answer.status, 408);
    assert.equal(answer.reason, 'header-timeout');
  });

  void test('a client that ends before finishing its CONNECT head gets 400 at once', async () => {
    const answer = await exchange(proxy.port(), `CONNECT ${DOMAIN}:44`, { end: true });
    assert.equal(answer.status, 400);
  });

  void test('X-03 random bytes and mangled requests never crash the proxy and never open an upstream connection', async () => {
    const before = standIn.tcpConnections;
    const request = fc.oneof(
      fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
      fc
        .tuple(
          fc.constantFrom('CONNECT ', 'GET ', 'connect ', 'CONNECT  ', ''),
          fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom(DOMAIN, `${DOMAIN}:443`, `[${DOMAIN}]:443`, '127.0.0.1:443')),
          fc.string({ maxLength: 40 }),
          fc.constantFrom(' HTTP/1.1\r\n', ' HTTP/1.1\n', '\r\n', ' HTTP/2\r\n\r\n', ' HTTP/1.1\r\nHost: x\r\n\r\n'),
          fc.string({ maxLength: 80 }),
        )
        .map(([m, a, junk, v, tail]) => Buffer.from(`${m}${a}${junk}${v}${tail}`, 'utf8')),
    );
    await fc.assert(
      fc.asyncProperty(request, async (bytes) => {
        const answer = await exchange(proxy.port(), bytes, { end: true });
        // Either an error status with a reason, or (never here) a tunnel; a closed socket without an answer is not allowed.
        assert.ok(answer.status >= 400 && answer.status <= 499, `status ${answer.status} for ${JSON.stringify(bytes.toString('latin1'))}`);
        assert.equal(standIn.tcpConnections, before);
      }),
      { numRuns: 300 },
    );
    // And the proxy still works.
    const answer = await exchange(proxy.port(), connectHead('evil.example.com:443'));
    assert.equal(answer.status, 403);
  });
});

void describe('client proxy for httpConnect tcp services', () => {
  void test('targets matching the allow patterns are accepted and re-sent canonically', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t), domain: 'web.corp.example.com' });
    const proxy = await startProxy(t, { service: webService, accessTierAddress: standIn.address });
    assert.equal(proxy.mode, 'chain');
    for (const [authority, canonical] of [
      ['App.Example.com:443', 'app.example.com:443'],
      ['db.example.com.:8443', 'db.example.com:8443'],
      ['10.1.2.3:443', '10.1.2.3:443'],
      ['[::ffff:10.1.2.3]:443', '10.1.2.3:443'],
    ] as const) {
      const tunnel = await openTunnel(t, proxy.port(), authority);
      assert.equal(tunnel.status, 200, authority);
      tunnel.socket.destroy();
      await new Promise((resolve) => setImmediate(resolve));
      assert.match(standIn.sessions.at(-1)?.head ?? '', new RegExp(`^CONNECT ${canonical.replace(/[.[\]]/g, '\\$&')} HTTP/1.1\r\n`));
    }
  });

  void test('LP-03 targets outside the allow patterns are refused with 403 and nothing is dialled', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t), domain: 'web.corp.example.com' });
    const proxy = await startProxy(t, { service: webService, accessTierAddress: standIn.address });
    for (const authority of ['example.com:443', 'evilexample.com:443', 'app.example.com.evil.com:443', 'app.example.com:80', '10.2.0.1:443', '127.0.0.1:443', '[::ffff:127.0.0.1]:443']) {
      const answer = await exchange(proxy.port(), connectHead(authority));
      assert.equal(answer.status, 403, authority);
      assert.equal(answer.reason, 'target-not-allowed');
      assert.match(answer.body, /internal-web/);
    }
    assert.equal(standIn.tcpConnections, 0);
  });
});

void describe('client proxy, TCP mode', () => {
  void test('a tcp service with a fixed target forwards raw bytes both ways through the TLS tunnel, with half-close', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startDigest(t), mode: 'tcp', domain: 'orders-db.corp.example.com' });
    const proxy = await startProxy(t, { service: dbService, accessTierAddress: standIn.address });
    assert.equal(proxy.mode, 'tcp');
    assert.equal(proxyModeFor(dbService), 'tcp');
    const socket = net.connect({ host: '127.0.0.1', port: proxy.port(), allowHalfOpen: true });
    t.after(() => socket.destroy());
    const payload = randomBytes(256 * 1024);
    const answer = await roundTrip(socket, payload);
    assert.equal(answer.toString(), `${payload.length}:${createHash('sha256').update(payload).digest('hex')}`);
    assert.equal(standIn.sessions[0]?.sni, 'orders-db.corp.example.com');
    assert.equal(standIn.sessions[0]?.head, undefined);
  });

  void test('a tcp-mode connection whose access tier is down is closed', async (t) => {
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const address = `127.0.0.1:${(closed.address() as net.AddressInfo).port}`;
    closed.close();
    await once(closed, 'close');
    const proxy = await startProxy(t, { service: dbService, accessTierAddress: address });
    const socket = net.connect({ host: '127.0.0.1', port: proxy.port() });
    socket.on('error', () => {});
    await once(socket, 'close');
    assert.equal(proxy.stats().refused, 1);
  });
});

void describe('client proxy listeners and lifecycle', () => {
  for (const host of ['0.0.0.0', '::', '192.168.1.10', '10.0.0.1', 'localhost', '::ffff:127.0.0.1', '127.1', 'example.com']) {
    void test(`LP-01 listening on ${host} is refused`, async () => {
      await assert.rejects(
        startClientProxy({ service: kubeService, accessTierAddress: '127.0.0.1:1', trust: trustOf(trustA), hosts: [host], port: 0 }),
        (err: unknown) => errorCode(err) === 'NON_LOOPBACK_LISTEN',
      );
    });
  }

  void test('LP-01 loopback addresses are accepted: 127.0.0.0/8 and ::1 in any spelling', () => {
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', '0:0:0:0:0:0:0:1']) assert.equal(loopbackProblem(host), undefined, host);
  });

  void test('LP-01 by default the proxy listens on 127.0.0.1 (and ::1 where the machine has IPv6), one port for all', async (t) => {
    const proxy = await startClientProxy({ service: kubeService, accessTierAddress: '127.0.0.1:1', trust: trustOf(trustA), port: 0 });
    t.after(() => proxy.close());
    const addresses = proxy.addresses();
    assert.ok(addresses.some((a) => a.host === '127.0.0.1'));
    for (const a of addresses) {
      assert.equal(loopbackProblem(a.host), undefined);
      assert.equal(a.port, proxy.port());
    }
  });

  void test('a port already in use is a PORT_IN_USE error naming the port', async (t) => {
    const holder = net.createServer();
    const port = await listenOn(t, holder);
    await assert.rejects(
      startClientProxy({ service: kubeService, accessTierAddress: '127.0.0.1:1', trust: trustOf(trustA), hosts: ['127.0.0.1'], port }),
      (err: unknown) => errorCode(err) === 'PORT_IN_USE' && err instanceof Error && err.message.includes(String(port)),
    );
  });

  void test('close() stops the listener and ends live relays', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const port = proxy.port();
    const tunnel = await openTunnel(t, port);
    tunnel.socket.resume();
    tunnel.socket.write('still here');
    await once(tunnel.socket, 'data');
    const ended = once(tunnel.socket, 'end');
    await proxy.close();
    await ended;
    assert.equal(proxy.stats().active, 0);
    const refused = net.connect({ host: '127.0.0.1', port });
    const [err] = (await once(refused, 'error')) as [Error];
    assert.equal(errorCode(err), 'ECONNREFUSED');
  });

  void test('await using closes the proxy when the scope ends', async () => {
    let port: number;
    {
      await using proxy = await startClientProxy({ service: kubeService, accessTierAddress: '127.0.0.1:1', trust: trustOf(trustA), hosts: ['127.0.0.1'], port: 0 });
      port = proxy.port();
    }
    const probe = net.connect({ host: '127.0.0.1', port });
    const [err] = (await once(probe, 'error')) as [Error];
    assert.equal(errorCode(err), 'ECONNREFUSED');
  });

  void test('destroy() cuts live relays at once', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const proxy = await startProxy(t, { accessTierAddress: standIn.address });
    const tunnel = await openTunnel(t, proxy.port());
    tunnel.socket.on('error', () => {});
    tunnel.socket.resume();
    const ended = new Promise((resolve) => {
      tunnel.socket.once('end', resolve);
      tunnel.socket.once('close', resolve);
    });
    proxy.destroy();
    await ended;
    assert.equal(proxy.stats().active, 0);
  });
});

void describe('client proxy new-connection cost (measured, not asserted)', () => {
  void test('new tunnels with and without TLS session resumption: every one succeeds, resumption is used when enabled', async (t) => {
    const standIn = await startStandIn(t, { backendPort: await startEcho(t) });
    const rounds = 200;
    const withResumption = await startProxy(t, { accessTierAddress: standIn.address, sessionResumption: true });
    const without = await startProxy(t, { accessTierAddress: standIn.address, sessionResumption: false });
    const samples = new Map<ClientProxy, number[]>([[withResumption, []], [without, []]]);
    const once1 = async (proxy: ClientProxy): Promise<void> => {
      const started = performance.now();
      const tunnel = await openTunnel(t, proxy.port());
      assert.equal(tunnel.status, 200);
      tunnel.socket.resume();
      tunnel.socket.write('x');
      if (tunnel.rest.length === 0) await once(tunnel.socket, 'data');
      samples.get(proxy)?.push(performance.now() - started);
      tunnel.socket.destroy();
    };
    // Alternate, so the machine's noise (other work on the same two cores) lands on both alike.
    for (let i = 0; i < rounds; i++) {
      await once1(i % 2 === 0 ? withResumption : without);
      await once1(i % 2 === 0 ? without : withResumption);
    }
    assert.equal(withResumption.stats().handshakes, rounds);
    assert.ok(withResumption.stats().resumedHandshakes >= rounds - 1, `resumed ${withResumption.stats().resumedHandshakes}`);
    assert.equal(without.stats().resumedHandshakes, 0);
    for (const [proxy, label] of [[without, 'off'], [withResumption, 'on ']] as const) {
      const sorted = (samples.get(proxy) ?? []).sort((a, b) => a - b);
      t.diagnostic(
        `new tunnel (local CONNECT, mTLS to stand-in, CONNECT, 200, 1-byte echo), resumption ${label}: ` +
          `p50 ${percentile(sorted, 50).toFixed(2)} ms, p90 ${percentile(sorted, 90).toFixed(2)} ms, p99 ${percentile(sorted, 99).toFixed(2)} ms (n=${sorted.length})`,
      );
    }
  });
});
