import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { constants as h2 } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import { CertificateAuthority, issueKeyAndCert, mtlsServerOptions } from '../lib/pki/index.ts';
import type { SpecObject } from '../lib/spec/index.ts';
import { eventually, freePort, makeTestPki, openStream, specs, startBlackholeRelay, startEchoServer, startGreetingServer } from '../lib/tunnel/harness.testing.ts';
import type { KeyAndCert, TestPki, TestServer } from '../lib/tunnel/harness.testing.ts';
import { TUNNEL_ALPN } from '../lib/tunnel/protocol.ts';
import { openTunnelClient } from '../lib/tunnel/session.ts';
import { backoffDelay } from './backoff.ts';
import { connectorView, startConnector } from './index.ts';
import type { Connector, ConnectorOptions } from './index.ts';

const CLUSTER = 'c1';
let pki: TestPki;
let connectorCert: KeyAndCert;
let echo: TestServer;

before(async () => {
  pki = await makeTestPki();
  connectorCert = await pki.issue('connector', { name: 'dc1' });
  echo = await startEchoServer();
});
after(() => echo.close());

/** A minimal access tier written from the shared tunnel pieces: accepts tunnels, opens streams on them. */
interface FakeAccessTier {
  port: number;
  address: string;
  sessions: ClientHttp2Session[];
  /** Resolves with the next tunnel that registers. */
  nextTunnel(): Promise<ClientHttp2Session>;
  close(): Promise<void>;
}

async function startFakeAccessTier(cert?: { certPem: string; keyPem: string }, port = 0): Promise<FakeAccessTier> {
  const own = cert ?? (await pki.issue('access-tier', { name: 'edge-1' }));
  const sessions: ClientHttp2Session[] = [];
  const waiting: Array<(s: ClientHttp2Session) => void> = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({ ...mtlsServerOptions({ caPem: pki.caPem, certPem: own.certPem, keyPem: own.keyPem }), ALPNProtocols: [TUNNEL_ALPN] }, (socket) => {
    const { session } = openTunnelClient(socket);
    session.on('error', () => undefined);
    sessions.push(session);
    waiting.shift()?.(session);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const actual = (server.address() as AddressInfo).port;
  return {
    port: actual,
    address: `127.0.0.1:${actual}`,
    sessions,
    nextTunnel: () => new Promise((resolve) => waiting.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}


function readAll(stream: ClientHttp2Stream): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

function objects(accessTierAddresses: Array<[string, string]>, allow: { cidrs?: string[]; domains?: string[] } = { cidrs: ['127.0.0.0/8'] }): SpecObject[] {
  return [...accessTierAddresses.map(([name, address]) => specs.accessTier(name, CLUSTER, address)), specs.connector('dc1', CLUSTER, allow), specs.accessTier('far-away', 'c2', '127.0.0.1:1')];
}

async function start(config: StaticConfigSource, extra: Partial<ConnectorOptions> = {}): Promise<Connector> {
  return startConnector({ name: 'dc1', config, tls: connectorCert, drainTimeoutMs: 500, tunnel: { backoff: { firstMs: 20, baseMs: 20, capMs: 200 } }, ...extra });
}

void describe('connector', { timeout: 60_000 }, () => {
  let at: FakeAccessTier;
  let config: StaticConfigSource;
  let connector: Connector;
  let session: ClientHttp2Session;

  before(async () => {
    at = await startFakeAccessTier();
    config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', at.address]])));
    const tunnel = at.nextTunnel();
    connector = await start(config);
    session = await tunnel;
  });
  after(async () => {
    await connector.close();
    await config.close();
    await at.close();
  });

  void test('dials the access tiers of its own cluster only, and reports the tunnel up', async () => {
    await eventually(() => (connector.status().state === 'up' ? true : undefined), 2000, 'state up');
    const status = connector.status();
    assert.equal(status.healthy, true);
    assert.equal(status.cluster, CLUSTER);
    assert.deepEqual(status.tunnels.map((t) => t.accessTier), ['edge-1']);
  });

  void test('answers 200 once the backend is connected, then relays with half-close both ways', async (tt) => {
    const greeter = await startGreetingServer('backend speaks first');
    tt.after(() => greeter.close());
    const opened = await openStream(session, greeter.address);
    assert.equal(opened.status, 200);
    const received = readAll(opened.stream);
    opened.stream.end('user request then END_STREAM');
    assert.equal((await greeter.received).toString(), 'user request then END_STREAM');
    assert.equal((await received).toString(), 'backend speaks first');
  });

  void test('refuses a target outside its allow-list with 403 target-not-allowed, without dialling (defence in depth)', async () => {
    const before = echo.accepted;
    for (const authority of ['10.1.2.3:5432', 'db.example.com:5432', '[::1]:22']) {
      const opened = await openStream(session, authority);
      assert.equal(opened.status, 403, authority);
      assert.equal(opened.reason, 'target-not-allowed');
    }
    assert.equal(echo.accepted, before);
  });

  void test('a malformed :authority is 400 bad-request', async () => {
    const opened = await openStream(session, '127.1:80');
    assert.equal(opened.status, 400);
    assert.equal(opened.reason, 'bad-request');
  });

  void test('a backend that is down is 502 backend-unreachable', async () => {
    const opened = await openStream(session, `127.0.0.1:${await freePort()}`);
    assert.equal(opened.status, 502);
    assert.equal(opened.reason, 'backend-unreachable');
  });

  void test('a backend that never answers is 502 backend-timeout after the connect timeout', async (tt) => {
    const local = await startFakeAccessTier();
    const localConfig = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', local.address]])));
    const tunnel = local.nextTunnel();
    const stuck: net.Socket[] = [];
    const slow = await start(localConfig, {
      connectTimeoutMs: 100,
      dialer: () => {
        const s = new net.Socket();
        stuck.push(s);
        return s;
      },
    });
    tt.after(async () => {
      await slow.close();
      await localConfig.close();
      await local.close();
    });
    const opened = await openStream(await tunnel, '127.0.0.1:9');
    assert.equal(opened.status, 502);
    assert.equal(opened.reason, 'backend-timeout');
    assert.ok(stuck.every((s) => s.destroyed));
  });

  void test('follows its allow-list: allowed domains match names below them, on a label boundary', async (tt) => {
    const local = await startFakeAccessTier();
    const dialled: string[] = [];
    const localConfig = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', local.address]], { domains: ['.svc.cluster.local'] })));
    const tunnel = local.nextTunnel();
    const c = await start(localConfig, {
      dialer: (t) => {
        dialled.push(`${t.host}:${t.port}`);
        return net.connect({ host: '127.0.0.1', port: echo.port, allowHalfOpen: true });
      },
    });
    tt.after(async () => {
      await c.close();
      await localConfig.close();
      await local.close();
    });
    const s = await tunnel;
    assert.equal((await openStream(s, 'kube-proxy.causeway.svc.cluster.local:8443')).status, 200);
    assert.equal((await openStream(s, 'svc.cluster.local:8443')).status, 403);
    assert.equal((await openStream(s, 'evilsvc.cluster.local:8443')).status, 403);
    assert.equal((await openStream(s, `127.0.0.1:${echo.port}`)).status, 403);
    assert.deepEqual(dialled, ['kube-proxy.causeway.svc.cluster.local:8443']);
    // A config change narrows it for new streams at once.
    localConfig.update(snapshotFromObjects(objects([['edge-1', local.address]], { domains: [] })));
    assert.equal((await openStream(s, 'kube-proxy.causeway.svc.cluster.local:8443')).status, 403);
  });
});

void describe('connector: tunnels come and go', { timeout: 60_000 }, () => {
  void test('reconnects with backoff when the access tier drops the tunnel, and when it restarts on the same port', async (tt) => {
    let at = await startFakeAccessTier();
    const port = at.port;
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', at.address]])));
    let tunnel = at.nextTunnel();
    const c = await start(config);
    tt.after(async () => {
      await c.close();
      await config.close();
      await at.close();
    });
    (await tunnel).destroy();
    tunnel = at.nextTunnel();
    assert.equal((await openStream(await tunnel, `127.0.0.1:${echo.port}`)).status, 200);
    await at.close();
    await eventually(() => (c.status().state !== 'up' ? true : undefined), 2000, 'tunnel noticed down');
    at = await startFakeAccessTier(undefined, port);
    tunnel = at.nextTunnel();
    assert.equal((await openStream(await tunnel, `127.0.0.1:${echo.port}`)).status, 200);
    await eventually(() => (c.status().state === 'up' ? true : undefined), 2000, 'state up again');
  });

  void test('follows the AccessTier specs of its cluster: a new one is dialled, a removed one is closed', async (tt) => {
    const one = await startFakeAccessTier();
    const two = await startFakeAccessTier(await pki.issue('access-tier', { name: 'edge-2' }));
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', one.address]])));
    const first = one.nextTunnel();
    const c = await start(config);
    tt.after(async () => {
      await c.close();
      await config.close();
      await one.close();
      await two.close();
    });
    await first;
    const second = two.nextTunnel();
    config.update(snapshotFromObjects(objects([['edge-1', one.address], ['edge-2', two.address]])));
    await second;
    await eventually(() => (c.status().tunnels.filter((t) => t.state === 'up').length === 2 ? true : undefined), 2000, 'two tunnels up');
    const closed = new Promise((r) => one.sessions[0]?.once('close', r));
    config.update(snapshotFromObjects(objects([['edge-2', two.address]])));
    await closed;
    assert.deepEqual(c.status().tunnels.map((t) => t.accessTier), ['edge-2']);
  });

  void test('an explicit access tier list replaces the specs\' addresses', async (tt) => {
    const at = await startFakeAccessTier();
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', '127.0.0.1:1']])));
    const tunnel = at.nextTunnel();
    const c = await start(config, { accessTiers: [{ name: 'edge-1', address: at.address }] });
    tt.after(async () => {
      await c.close();
      await config.close();
      await at.close();
    });
    assert.equal((await openStream(await tunnel, `127.0.0.1:${echo.port}`)).status, 200);
  });

  for (const [name, makeCert] of [
    ['an access-tier certificate with another name', () => pki.issue('access-tier', { name: 'edge-9' })],
    ['a trust certificate', () => pki.issue('trust', { user: 'mallory', device: 'd' })],
    ['CN-08 a certificate from another CA with the same name', async () => issueKeyAndCert(await CertificateAuthority.create(), { type: 'access-tier', identity: { name: 'edge-1' } })],
  ] as const) {
    void test(`refuses an access tier that presents ${name}, and keeps retrying`, async (tt) => {
      const impostor = await startFakeAccessTier(await makeCert());
      const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', impostor.address]])));
      const c = await start(config);
      tt.after(async () => {
        await c.close();
        await config.close();
        await impostor.close();
      });
      await eventually(() => ((c.status().tunnels[0]?.failures ?? 0) >= 2 ? true : undefined), 5000, 'two failed attempts');
      assert.equal(impostor.sessions.length, 0);
      assert.equal(c.status().healthy, false);
      assert.match(c.status().tunnels[0]?.lastError ?? '', /certificate|CERT|verify|signature/i);
    });
  }

  void test('without its own Connector spec it dials nothing and says why', async (tt) => {
    const config = new StaticConfigSource(snapshotFromObjects([specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1')]));
    const c = await start(config);
    tt.after(async () => {
      await c.close();
      await config.close();
    });
    const status = c.status();
    assert.equal(status.state, 'unconfigured');
    assert.match(status.problem ?? '', /no Connector spec is named "dc1"/);
  });

  void test('close() drains: a stream in flight may finish before the deadline; the tunnel then closes', async () => {
    const at = await startFakeAccessTier();
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', at.address]])));
    const tunnel = at.nextTunnel();
    const c = await start(config, { drainTimeoutMs: 5000 });
    const opened = await openStream(await tunnel, `127.0.0.1:${echo.port}`);
    const closing = c.close();
    let closed = false;
    void closing.then(() => {
      closed = true;
    });
    const echoed = readAll(opened.stream);
    opened.stream.end('last words');
    assert.equal((await echoed).toString(), 'last words');
    await closing;
    assert.equal(closed, true);
    assert.equal(c.status().state, 'closed');
    await config.close();
    await at.close();
  });

  void test('CN-06 a half-open tunnel (access tier gone silent, no FIN) is detected by keepalive; its backend connections are closed', async (tt) => {
    const at = await startFakeAccessTier();
    const relay = await startBlackholeRelay(at.port);
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', `127.0.0.1:${relay.port}`]])));
    const tunnel = at.nextTunnel();
    const c = await start(config, { tunnel: { keepaliveIntervalMs: 100, keepaliveTimeoutMs: 400, backoff: { firstMs: 20, baseMs: 20, capMs: 200 } } });
    tt.after(async () => {
      await c.close();
      await config.close();
      await relay.close();
      await at.close();
    });
    const backend = await startEchoServer();
    tt.after(() => backend.close());
    const opened = await openStream(await tunnel, backend.address);
    assert.equal(opened.status, 200);
    await eventually(() => (backend.accepted === 1 ? true : undefined), 2000, 'backend connected');
    relay.blackhole();
    await eventually(() => (/no PING answer/.test(c.status().tunnels[0]?.lastError ?? '') ? true : undefined), 5000, 'keepalive verdict');
    assert.equal(c.status().activeStreams, 0);
  });
});

void describe('connector: stream floods', { timeout: 120_000 }, () => {
  void test('10,000 aborted streams (RST_STREAM CANCEL after 200) on one tunnel leave it working and leave no backend sockets behind', async (tt) => {
    const at = await startFakeAccessTier();
    const backend = await startEchoServer();
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', at.address]])));
    const tunnel = at.nextTunnel();
    const c = await start(config);
    tt.after(async () => {
      await c.close();
      await config.close();
      await at.close();
      await backend.close();
    });
    const s = await tunnel;
    let goaway = false;
    s.once('goaway', () => {
      goaway = true;
    });
    const started = performance.now();
    for (let i = 0; i < 10_000; i += 250) {
      await Promise.all(
        Array.from({ length: 250 }, async () => {
          const opened = await openStream(s, backend.address);
          assert.equal(opened.status, 200);
          const closed = new Promise((r) => opened.stream.once('close', r));
          opened.stream.close(h2.NGHTTP2_CANCEL);
          await closed;
        }),
      );
    }
    tt.diagnostic(`10,000 streams opened to a backend and aborted in ${Math.round(performance.now() - started)} ms`);
    assert.equal(goaway, false);
    assert.equal((await openStream(s, backend.address)).status, 200);
    await eventually(() => (c.status().activeStreams <= 1 ? true : undefined), 5000, 'relays released');
    assert.equal(backend.accepted, 10_001);
  });

  void test('10,000 idle streams fit on one tunnel (memory per stream reported; backend in another process)', async (tt) => {
    const sink = await startSinkProcess();
    const at = await startFakeAccessTier();
    const config = new StaticConfigSource(snapshotFromObjects(objects([['edge-1', at.address]])));
    const tunnel = at.nextTunnel();
    const c = await start(config);
    tt.after(async () => {
      await c.close();
      await config.close();
      await at.close();
      sink.child.kill();
    });
    const s = await tunnel;
    const gc = (globalThis as { gc?: () => void }).gc;
    const streams: ClientHttp2Stream[] = [];
    for (let i = 0; i < 200; i++) streams.push((await openStream(s, `127.0.0.1:${sink.port}`)).stream);
    gc?.();
    const before = process.memoryUsage();
    for (let i = 200; i < 10_000; i += 400) {
      const batch = await Promise.all(Array.from({ length: 400 }, () => openStream(s, `127.0.0.1:${sink.port}`)));
      for (const o of batch) {
        assert.equal(o.status, 200);
        streams.push(o.stream);
      }
    }
    gc?.();
    const afterOpen = process.memoryUsage();
    const n = streams.length - 200;
    tt.diagnostic(
      `${streams.length} idle streams; per stream, connector and fake access tier together in this process: ${((afterOpen.rss - before.rss) / n / 1024).toFixed(1)} KiB RSS, ${((afterOpen.heapUsed - before.heapUsed) / n / 1024).toFixed(1)} KiB JS heap${gc === undefined ? ' (run with --expose-gc for steadier numbers)' : ''}`,
    );
    assert.equal(c.status().activeStreams, 10_200);
    assert.equal(streams.filter((x) => !x.closed).length, 10_200);
  });
});

/** A TCP sink in a child process, so its sockets count against neither this process's memory nor its descriptors. */
async function startSinkProcess(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ['-e', "const s=require('net').createServer(c=>{c.on('error',()=>{});c.resume()});s.listen(0,'127.0.0.1',()=>process.stdout.write(String(s.address().port)+'\\n'));process.on('disconnect',()=>process.exit(0))"], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', () => reject(new Error('the sink process exited')));
  });
  child.unref();
  return { child, port };
}

void describe('backoff and configuration view', () => {
  void test('the first retry comes within firstMs, later ones within an exponential bound capped at capMs (full jitter)', () => {
    const opts = { firstMs: 100, baseMs: 250, capMs: 5000 };
    assert.equal(backoffDelay(0, { ...opts, random: () => 0.999 }), 99);
    assert.equal(backoffDelay(1, { ...opts, random: () => 0.999 }), 499);
    assert.equal(backoffDelay(3, { ...opts, random: () => 0.999 }), 1998);
    assert.equal(backoffDelay(50, { ...opts, random: () => 0.999 }), 4995);
    assert.equal(backoffDelay(7, { ...opts, random: () => 0 }), 0);
    for (let attempt = 0; attempt < 40; attempt++) {
      const d = backoffDelay(attempt);
      assert.ok(d >= 0 && d < 5000, `attempt ${attempt}: ${d}`);
    }
  });

  void test('connectorView takes its cluster\'s access tiers and compiles its allow-list', () => {
    const snapshot = snapshotFromObjects(objects([['edge-1', '10.0.0.1:8443'], ['edge-2', 'edge-2.example.com:8443']]));
    const view = connectorView(snapshot, 'dc1');
    assert.ok(view.ok);
    assert.deepEqual(view.accessTiers, [
      { name: 'edge-1', address: '10.0.0.1:8443' },
      { name: 'edge-2', address: 'edge-2.example.com:8443' },
    ]);
    assert.equal(connectorView(snapshot, 'dc9').ok, false);
  });
});
