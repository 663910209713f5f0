/**
 * Attacks on the local client proxy (THREATS LP-01, LP-02), beyond proxy.test.ts: a web page that
 * rebinds its name to 127.0.0.1 against a TCP-mode listener (which forwards raw bytes, so CHAIN
 * mode's CONNECT checks do not apply), and reachability from the machine's other interfaces.
 */
import { test, describe, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { CertificateAuthority, issueKeyAndCert, mtlsServerOptions } from '../lib/pki/index.ts';
import { parseSpecDocuments } from '../lib/spec/index.ts';
import type { ServiceSpec } from '../lib/spec/index.ts';
import { foreignWebRequest, startClientProxy } from './proxy.ts';
import type { ClientProxy } from './proxy.ts';

let ca: CertificateAuthority;
let edge: { certPem: string; keyPem: string; caPem: string };
let trust: { certPem: string; keyPem: string; caPem: string };

function tcpService(name: string, listenPort: number): ServiceSpec {
  const parsed = parseSpecDocuments(`
apiVersion: causeway/v1
kind: Service
metadata: {name: ${name}}
spec:
  type: tcp
  cluster: global-edge
  accessTier: edge-1
  domain: app.corp.example.com
  port: 8080
  showInCatalog: true
  autorun: false
  backend: {target: "app.internal:8080"}
  client: {listenPort: ${listenPort}, allowUserOverride: true}
`);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return parsed.objects[0] as ServiceSpec;
}

before(async () => {
  ca = await CertificateAuthority.create();
  edge = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
  trust = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
});

interface Backend {
  port: number;
  /** Every byte any connection sent. */
  received: () => Buffer;
  connections: () => number;
}

/** An HTTP-ish internal service: answers every request with a secret, and greets first when asked to. */
async function startBackend(t: TestContext, greet = false): Promise<Backend> {
  const chunks: Buffer[] = [];
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    if (greet) s.write('220 internal service ready\r\n');
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (d.toString('latin1').startsWith('GET ')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\ninternal-secret');
    });
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  return { port: (server.address() as AddressInfo).port, received: () => Buffer.concat(chunks), connections: () => connections };
}

/** A stand-in access tier in TCP mode: mutual TLS, then raw bytes to the backend. */
async function startTcpAccessTier(t: TestContext, backendPort: number): Promise<string> {
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({ ...mtlsServerOptions(edge), allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    const backend = net.connect({ host: '127.0.0.1', port: backendPort, allowHalfOpen: true });
    backend.on('error', () => socket.destroy());
    socket.on('close', () => backend.destroy());
    socket.pipe(backend);
    backend.pipe(socket);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function startTcpProxy(t: TestContext, accessTierAddress: string): Promise<ClientProxy> {
  const proxy = await startClientProxy({ service: tcpService('internal-app', 18080), accessTierAddress, trust, hosts: ['127.0.0.1'], port: 0 });
  t.after(() => proxy.destroy());
  assert.equal(proxy.mode, 'tcp');
  return proxy;
}

/** Sends bytes to the proxy and collects what comes back until it closes (or 3 s). */
function exchange(port: number, bytes: string | Buffer, opts: { waitForBytes?: number } = {}): Promise<{ answer: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let closed = false;
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ answer: Buffer.concat(chunks), closed });
    };
    const timer = setTimeout(done, 3000);
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.waitForBytes !== undefined && Buffer.concat(chunks).length >= opts.waitForBytes) done();
    });
    socket.on('close', () => {
      closed = true;
      done();
    });
    socket.write(bytes);
  });
}

void describe('LP-02 DNS rebinding against a TCP-mode listener', { timeout: 30_000 }, () => {
  const rebound = (host: string, extra = ''): string => `GET /api/secrets HTTP/1.1\r\nHost: ${host}\r\nAccept: */*\r\n${extra}\r\n`;

  void test('LP-02 a browser request for a rebound name (Host: attacker.example) is refused before a byte reaches the service', async (t) => {
    const backend = await startBackend(t);
    const proxy = await startTcpProxy(t, await startTcpAccessTier(t, backend.port));
    const r = await exchange(proxy.port(), rebound(`rebind.attacker.example:${proxy.port()}`, 'Origin: http://rebind.attacker.example\r\n'));
    assert.equal(r.closed, true);
    assert.ok(!r.answer.toString().includes('internal-secret'), 'the page read the internal service');
    assert.equal(backend.received().length, 0, 'nothing was forwarded');
    assert.equal(proxy.stats().refused, 1);
  });

  void test('LP-02 a cross-origin request that keeps Host: localhost (Origin of another site, or null) is refused', async (t) => {
    const backend = await startBackend(t);
    const proxy = await startTcpProxy(t, await startTcpAccessTier(t, backend.port));
    for (const origin of ['https://evil.example', 'null']) {
      const r = await exchange(proxy.port(), `POST /api/delete HTTP/1.1\r\nHost: localhost:${proxy.port()}\r\nOrigin: ${origin}\r\nContent-Length: 0\r\n\r\n`);
      assert.equal(r.closed, true, origin);
    }
    assert.equal(backend.received().length, 0);
  });

  void test('LP-02 the user\'s own browser and tools still get through: Host localhost, 127.0.0.1, [::1], the service domain or the backend name', async (t) => {
    const backend = await startBackend(t);
    const proxy = await startTcpProxy(t, await startTcpAccessTier(t, backend.port));
    for (const host of [`localhost:${proxy.port()}`, `127.0.0.1:${proxy.port()}`, `[::1]:${proxy.port()}`, 'app.corp.example.com:8080', 'APP.internal.:8080', 'dev.localhost']) {
      const r = await exchange(proxy.port(), rebound(host, `Origin: http://${host}\r\n`), { waitForBytes: 50 });
      assert.ok(r.answer.toString().includes('internal-secret'), `${host}: ${r.answer.toString()}`);
    }
  });

  void test('LP-02 non-HTTP protocols are not looked at: a database startup packet and a server-first greeting pass untouched', async (t) => {
    const backend = await startBackend(t, true);
    const proxy = await startTcpProxy(t, await startTcpAccessTier(t, backend.port));
    const startup = Buffer.from('0000000804d2162f', 'hex');
    const r = await exchange(proxy.port(), startup, { waitForBytes: 28 });
    assert.match(r.answer.toString(), /^220 internal service ready/);
    await new Promise((r2) => setTimeout(r2, 100));
    assert.ok(backend.received().equals(startup));
  });

  void test('LP-02 the check itself: only an HTTP/1 request line triggers it, and only foreign names fail it', () => {
    const own = new Set(['app.corp.example.com', 'app.internal']);
    const cases: Array<[string, boolean]> = [
      ['GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n', true],
      ['GET / HTTP/1.1\r\nHost: 10.0.0.5:8080\r\n\r\n', true],
      ['GET / HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n\r\n', true],
      ['GET / HTTP/1.1\r\nHost: localhost.evil.example\r\n\r\n', true],
      ['GET / HTTP/1.1\r\nHost: localhost\r\nOrigin: http://127.0.0.1.nip.io\r\n\r\n', true],
      ['GET / HTTP/1.1\r\nHost: 127.0.0.2:1\r\n\r\n', false],
      ['GET / HTTP/1.1\r\nHost: app.internal\r\n\r\n', false],
      ['OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n', false],
      ['\u0016\u0003\u0001\u0002\u0000\u0001', false],
      ['SSH-2.0-OpenSSH_9.6\r\n', false],
      ['get / HTTP/1.1\r\nHost: evil.example\r\n\r\n', false],
    ];
    for (const [text, foreign] of cases) assert.equal(foreignWebRequest(Buffer.from(text, 'latin1'), own) !== undefined, foreign, JSON.stringify(text));
  });
});

void describe('LP-01 the proxy is reachable from this machine only', { timeout: 30_000 }, () => {
  let proxy: ClientProxy;
  before(async () => {
    proxy = await startClientProxy({ service: tcpService('internal-app', 18080), accessTierAddress: '127.0.0.1:1', trust, port: 0 });
  });
  after(() => proxy.close());

  void test('LP-01 every non-loopback address of this machine refuses connections on the proxy\'s port', async (t) => {
    const addresses = Object.values(os.networkInterfaces())
      .flat()
      .filter((a): a is os.NetworkInterfaceInfo => a !== undefined && !a.internal && (a.family === 'IPv4' || !a.address.startsWith('fe80')));
    if (addresses.length === 0) {
      t.skip('this machine has no non-loopback address');
      return;
    }
    for (const a of addresses) {
      const outcome = await new Promise<string>((resolve) => {
        const s = net.connect({ host: a.address, port: proxy.port(), timeout: 2000 });
        s.once('connect', () => {
          s.destroy();
          resolve('connected');
        });
        s.once('timeout', () => {
          s.destroy();
          resolve('timeout');
        });
        s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      });
      assert.notEqual(outcome, 'connected', `${a.address} reached the proxy`);
    }
    for (const a of proxy.addresses()) assert.ok(a.host === '127.0.0.1' || a.host === '::1', a.host);
  });
});
