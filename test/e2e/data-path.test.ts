/**
 * The data path with both parts for real: a minimal CHAIN client (TLS 1.3 + trust cert + CONNECT)
 * → access tier ⇐ tunnel ⇐ connector → TCP backends, all on 127.0.0.1 in this process. The access
 * tier and connector are each tested alone beside their sources; here they meet: bytes and
 * half-close through the tunnel, a 50 MB transfer with its hash, the connector's own allow-list,
 * and the faults (connector killed mid-stream, connector back, failover between two connectors of
 * one name, backend down, access tier restarted, a half-open tunnel). Waits are bounded retry loops,
 * never timed assertions.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAccessTier } from '../../src/access-tier/index.ts';
import type { AccessTier } from '../../src/access-tier/index.ts';
import { startConnector } from '../../src/connector/index.ts';
import type { Connector } from '../../src/connector/index.ts';
import { MemoryEventSink } from '../../src/lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../../src/lib/config/index.ts';
import type { SpecObject } from '../../src/lib/spec/index.ts';
import { chainConnect, eventually, freePort, hashTransfer, makeTestPki, roundTrip, specs, startBlackholeRelay, startEchoServer, startGreetingServer } from '../../src/lib/tunnel/harness.testing.ts';
import type { ChainResult, KeyAndCert, TestPki, TestServer } from '../../src/lib/tunnel/harness.testing.ts';

const CLUSTER = 'c1';
let pki: TestPki;
let trust: KeyAndCert;
let edgeCert: KeyAndCert;
let dc1Cert: KeyAndCert;
let echo: TestServer;

before(async () => {
  pki = await makeTestPki();
  trust = await pki.issue('trust', { user: 'alice', device: 'laptop-1' });
  edgeCert = await pki.issue('access-tier', { name: 'edge-1' });
  dc1Cert = await pki.issue('connector', { name: 'dc1' });
  echo = await startEchoServer();
});
after(() => echo.close());

function objects(accessTierAddress: string, extra: SpecObject[] = []): SpecObject[] {
  return [
    specs.accessTier('edge-1', CLUSTER, accessTierAddress),
    // The connector may reach loopback only; 127.0.0.2 is outside it.
    specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.1/32'] }),
    specs.service('db', CLUSTER, { type: 'tcp', domain: 'db.example.com', port: 5432, connector: 'dc1', backend: { httpConnect: true, allowPatterns: [{ cidrs: ['127.0.0.0/8'], ports: ['1-65535'] }] } }),
    ...extra,
  ];
}

interface Chain {
  at: AccessTier;
  port: number;
  events: MemoryEventSink;
  config: StaticConfigSource;
  connectors: Connector[];
  startConnector(): Promise<Connector>;
  restartAccessTier(): Promise<void>;
  connect(target: string, sni?: string): Promise<ChainResult>;
  close(): Promise<void>;
}

async function startChain(options: { extra?: SpecObject[]; viaRelay?: (port: number) => Promise<number>; keepalive?: { intervalMs: number; timeoutMs: number } } = {}): Promise<Chain> {
  const events = new MemoryEventSink();
  const config = new StaticConfigSource(snapshotFromObjects(objects('127.0.0.1:1', options.extra)));
  const limits = options.keepalive === undefined ? {} : { keepaliveIntervalMs: options.keepalive.intervalMs, keepaliveTimeoutMs: options.keepalive.timeoutMs };
  let at = await startAccessTier({ name: 'edge-1', config, tls: edgeCert, events, listen: { host: '127.0.0.1', port: 0 }, limits });
  const port = at.port();
  const dialPort = options.viaRelay === undefined ? port : await options.viaRelay(port);
  config.update(snapshotFromObjects(objects(`127.0.0.1:${dialPort}`, options.extra)));
  const chain: Chain = {
    at,
    port,
    events,
    config,
    connectors: [],
    startConnector: async () => {
      const connector = await startConnector({
        name: 'dc1',
        config,
        tls: dc1Cert,
        drainTimeoutMs: 500,
        tunnel: { backoff: { firstMs: 50, baseMs: 100, capMs: 1000 }, ...(options.keepalive === undefined ? {} : { keepaliveIntervalMs: options.keepalive.intervalMs, keepaliveTimeoutMs: options.keepalive.timeoutMs }) },
      });
      chain.connectors.push(connector);
      return connector;
    },
    restartAccessTier: async () => {
      await at.close();
      at = await startAccessTier({ name: 'edge-1', config, tls: edgeCert, events, listen: { host: '127.0.0.1', port }, limits });
      chain.at = at;
    },
    connect: (target, sni = 'db.example.com') => chainConnect({ port, caPem: pki.caPem, servername: sni, cert: trust, connect: target }),
    close: async () => {
      for (const c of chain.connectors) c.destroy();
      await chain.at.close();
      await config.close();
    },
  };
  return chain;
}

async function tunnelsUp(chain: Chain, n: number): Promise<void> {
  await eventually(() => (chain.at.stats().tunnels.length === n ? true : undefined), 5000, `${n} tunnel(s) registered`);
}

/** Retries a CONNECT until it is established (bounded): "new connections work again". */
async function establishedSoon(chain: Chain, target: string, withinMs: number): Promise<{ result: Extract<ChainResult, { kind: 'established' }>; attempts: number; ms: number }> {
  const started = Date.now();
  let attempts = 0;
  const result = await eventually(async () => {
    attempts++;
    const r = await chain.connect(target);
    if (r.kind === 'established') return r;
    if (r.kind !== 'failed') r.socket.destroy();
    return undefined;
  }, withinMs, `an established connection to ${target}`);
  return { result, attempts, ms: Date.now() - started };
}

void describe('data path: access tier ⇐ tunnel ⇐ connector', { timeout: 120_000 }, () => {
  let chain: Chain;
  before(async () => {
    chain = await startChain();
    await chain.startConnector();
    await tunnelsUp(chain, 1);
  });
  after(() => chain.close());

  void test('bytes flow both ways through the tunnel, and half-close works in each direction', async (t) => {
    const greeter = await startGreetingServer('the backend speaks first');
    t.after(() => greeter.close());
    const r = await chain.connect(greeter.address);
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    const back = await roundTrip(r.socket, 'the user writes, then half-closes', r.rest);
    assert.equal(back.toString(), 'the backend speaks first');
    assert.equal((await greeter.received).toString(), 'the user writes, then half-closes');
    r.socket.destroy();
    const event = await chain.events.waitFor((e) => e.target === greeter.address && e.decision === 'allow');
    assert.equal(event.via, 'connector');
    assert.equal(event.connector, 'dc1');
    assert.equal(event.bytesUp, 33);
    assert.equal(event.bytesDown, 24);
    assert.equal(event.closeReason, 'closed');
  });

  void test('a 50 MB echo (bulk both ways at once) arrives whole: the hash of what comes back equals the hash of what was sent', async (t) => {
    const r = await chain.connect(echo.address);
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    const size = 50 * 1024 * 1024;
    const started = performance.now();
    const h = await hashTransfer(r.socket, size, r.rest);
    const seconds = (performance.now() - started) / 1000;
    r.socket.destroy();
    assert.equal(h.bytes, size);
    assert.equal(h.received, h.sent);
    const event = await chain.events.waitFor((e) => e.bytesUp === size);
    assert.equal(event.bytesDown, size);
    t.diagnostic(`50 MiB each way in ${seconds.toFixed(2)} s, everything in one process`);
  });

  void test('the connector refuses a target outside its own allow-list even when the service allows it (502 connector-refused)', async () => {
    const r = await chain.connect(`127.0.0.2:${echo.port}`);
    if (r.kind !== 'failed') r.socket.destroy();
    assert.equal(r.kind, 'refused');
    if (r.kind !== 'refused') return;
    assert.equal(r.status, 502);
    assert.equal(r.reason, 'connector-refused');
    const event = await chain.events.waitFor((e) => e.target === `127.0.0.2:${echo.port}`);
    assert.match(event.closeReason ?? '', /^connector-refused: connector dc1 answered 403 target-not-allowed/);
  });

  void test('a backend that is down is a clear 502 backend-unreachable through the connector', async () => {
    const port = await freePort();
    const r = await chain.connect(`127.0.0.1:${port}`);
    if (r.kind !== 'failed') r.socket.destroy();
    assert.equal(r.kind === 'refused' ? `${r.status} ${r.reason ?? ''}` : r.kind, '502 backend-unreachable');
  });
});

void describe('data path: faults', { timeout: 120_000 }, () => {
  void test('connector killed mid-stream: the client\'s connection ends promptly; a connector back brings new connections back', async (t) => {
    const chain = await startChain();
    t.after(() => chain.close());
    const first = await chain.startConnector();
    await tunnelsUp(chain, 1);
    const r = await chain.connect(echo.address);
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    const ended = new Promise<string>((resolve) => {
      r.socket.once('end', () => resolve('end'));
      r.socket.once('close', () => resolve('close'));
      r.socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      r.socket.resume();
    });
    r.socket.write('in flight');
    first.destroy();
    assert.ok(['end', 'close', 'ECONNRESET'].includes(await ended));
    r.socket.destroy();
    const event = await chain.events.waitFor((e) => e.target === echo.address && e.decision === 'allow');
    assert.equal(event.closeReason, 'tunnel-lost');
    await tunnelsUp(chain, 0);
    const refused = await chain.connect(echo.address);
    if (refused.kind !== 'failed') refused.socket.destroy();
    assert.equal(refused.kind === 'refused' ? refused.reason : refused.kind, 'no-connector-tunnel');
    await chain.startConnector();
    const back = await establishedSoon(chain, echo.address, 2000);
    t.diagnostic(`new connections worked again ${back.ms} ms after the connector started (${back.attempts} attempt(s))`);
    assert.equal((await roundTrip(back.result.socket, 'back again', back.result.rest)).toString(), 'back again');
    back.result.socket.destroy();
  });

  void test('two connectors of one name: one killed, new connections go to the other at once', async (t) => {
    const chain = await startChain();
    t.after(() => chain.close());
    const a = await chain.startConnector();
    await chain.startConnector();
    await tunnelsUp(chain, 2);
    const held = await chain.connect(echo.address);
    t.after(() => {
      if (held.kind !== 'failed') held.socket.destroy();
    });
    assert.equal(held.kind, 'established');
    a.destroy();
    await tunnelsUp(chain, 1);
    for (let i = 0; i < 5; i++) {
      const r = await chain.connect(echo.address);
      assert.equal(r.kind, 'established', `connection ${i} after the failover`);
      if (r.kind !== 'established') continue;
      assert.equal((await roundTrip(r.socket, `n${i}`, r.rest)).toString(), `n${i}`);
      r.socket.destroy();
    }
  });

  void test('access tier restarted: the connector reconnects and the next CONNECT works', async (t) => {
    const chain = await startChain();
    t.after(() => chain.close());
    const connector = await chain.startConnector();
    await tunnelsUp(chain, 1);
    await chain.restartAccessTier();
    const back = await establishedSoon(chain, echo.address, 5000);
    t.diagnostic(`the next CONNECT worked ${back.ms} ms after the restart (${back.attempts} attempt(s))`);
    assert.equal((await roundTrip(back.result.socket, 'after restart', back.result.rest)).toString(), 'after restart');
    back.result.socket.destroy();
    assert.equal(connector.status().state, 'up');
  });

  void test('CN-06 a half-open tunnel (no FIN, silence) is dropped by both ends: the client\'s stream ends and the connector redials', async (t) => {
    let relay: Awaited<ReturnType<typeof startBlackholeRelay>> | undefined;
    const chain = await startChain({
      keepalive: { intervalMs: 100, timeoutMs: 400 },
      viaRelay: async (port) => {
        relay = await startBlackholeRelay(port);
        return relay.port;
      },
    });
    t.after(async () => {
      await chain.close();
      await relay?.close();
    });
    const connector = await chain.startConnector();
    await tunnelsUp(chain, 1);
    const r = await chain.connect(echo.address);
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    const ended = new Promise<void>((resolve) => {
      r.socket.once('end', () => resolve());
      r.socket.once('close', () => resolve());
      r.socket.resume();
    });
    relay?.blackhole();
    await ended;
    r.socket.destroy();
    await tunnelsUp(chain, 0);
    assert.equal((await chain.events.waitFor((e) => e.target === echo.address && e.decision === 'allow')).closeReason, 'tunnel-lost');
    await eventually(() => (/no PING answer/.test(connector.status().tunnels[0]?.lastError ?? '') ? true : undefined), 5000, 'the connector\'s keepalive verdict');
  });
});
