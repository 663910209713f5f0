/**
 * Data-path attacks that need both parts for real (access tier ⇐ tunnel ⇐ connector, in this
 * process, loopback only): a DNS override the connector's own allow-list forbids, a service's
 * stream flood that must not starve another service on the same tunnel (CN-05), and a CONNECT that
 * loops back into the access tier itself, which must be decided again from scratch.
 */
import { test, describe, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { startAccessTier } from '../../src/access-tier/index.ts';
import type { AccessTier, AccessTierLimits } from '../../src/access-tier/index.ts';
import { startConnector } from '../../src/connector/index.ts';
import { MemoryEventSink } from '../../src/lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../../src/lib/config/index.ts';
import { mtlsClientOptions } from '../../src/lib/pki/index.ts';
import type { SpecObject } from '../../src/lib/spec/index.ts';
import { chainConnect, eventually, makeTestPki, roundTrip, specs, startEchoServer } from '../../src/lib/tunnel/harness.testing.ts';
import type { ChainResult, KeyAndCert, TestPki, TestServer } from '../../src/lib/tunnel/harness.testing.ts';

const CLUSTER = 'c1';
let pki: TestPki;
let trust: KeyAndCert;
let echo: TestServer;

before(async () => {
  pki = await makeTestPki();
  trust = await pki.issue('trust', { user: 'alice', device: 'laptop-1' });
  echo = await startEchoServer();
});
after(() => echo.close());

interface Chain {
  at: AccessTier;
  events: MemoryEventSink;
  connect(sni: string, target: string): Promise<ChainResult>;
}

async function startChain(t: TestContext, objects: SpecObject[], limits: Partial<AccessTierLimits> = {}): Promise<Chain> {
  const config = new StaticConfigSource(snapshotFromObjects(objects));
  const events = new MemoryEventSink();
  const at = await startAccessTier({ name: 'edge-1', config, tls: await pki.issue('access-tier', { name: 'edge-1' }), events, listen: { host: '127.0.0.1', port: 0 }, limits: { waitForTunnelMs: 2000, ...limits } });
  const connector = await startConnector({ name: 'dc1', config, tls: await pki.issue('connector', { name: 'dc1' }), accessTiers: [{ name: 'edge-1', address: `127.0.0.1:${at.port()}` }], drainTimeoutMs: 200 });
  t.after(async () => {
    connector.destroy();
    at.destroy();
    await config.close();
  });
  await eventually(() => (at.stats().tunnels.length === 1 ? true : undefined), 5000, 'the tunnel up');
  return {
    at,
    events,
    connect: (sni, target) => chainConnect({ port: at.port(), caPem: pki.caPem, servername: sni, cert: trust, connect: target }),
  };
}

function done(r: ChainResult): void {
  if (r.kind !== 'failed') r.socket.destroy();
}

void describe('data path threats with both parts', { timeout: 60_000 }, () => {
  void test('a dnsOverride pointing where the connector\'s own allow-list forbids is refused by the connector: 502 connector-refused, nothing dialled', async (t) => {
    // A backend on 127.0.0.2, outside the connector's 127.0.0.1/32.
    let accepted = 0;
    const forbidden = net.createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      forbidden.once('error', reject);
      forbidden.listen(0, '127.0.0.2', () => resolve());
    }).catch(() => t.skip('this machine cannot bind 127.0.0.2'));
    if (!forbidden.listening) return;
    t.after(() => new Promise<void>((r) => forbidden.close(() => r())));
    const port = (forbidden.address() as AddressInfo).port;
    const chain = await startChain(t, [
      specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'),
      specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.1/32'] }),
      specs.service('k', CLUSTER, { type: 'kubernetes', domain: 'k.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: `127.0.0.2:${port}` } }, pki.caPem),
    ]);
    const r = await chain.connect('k.example.com', 'k.example.com:443');
    done(r);
    assert.equal(r.kind, 'refused');
    if (r.kind === 'refused') {
      assert.equal(r.status, 502);
      assert.equal(r.reason, 'connector-refused');
    }
    const event = await chain.events.waitFor((e) => e.service === 'k');
    assert.equal(event.dialled, `127.0.0.2:${port}`);
    assert.match(event.closeReason ?? '', /target-not-allowed/);
    assert.equal(accepted, 0);
  });

  void test('CN-05 one service holding its per-tunnel stream cap gets 503 connector-busy while another service on the same tunnel still connects', async (t) => {
    const chain = await startChain(t, [
      specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'),
      specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
      specs.service('flood', CLUSTER, { type: 'kubernetes', domain: 'flood.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: echo.address } }, pki.caPem),
      specs.service('calm', CLUSTER, { type: 'kubernetes', domain: 'calm.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: echo.address } }, pki.caPem),
    ], { maxStreamsPerServicePerTunnel: 4 });
    const held: ChainResult[] = [];
    t.after(() => held.forEach(done));
    for (let i = 0; i < 4; i++) {
      const r = await chain.connect('flood.example.com', 'flood.example.com:443');
      held.push(r);
      assert.equal(r.kind, 'established');
    }
    const over = await chain.connect('flood.example.com', 'flood.example.com:443');
    done(over);
    assert.equal(over.kind === 'refused' ? `${over.status} ${String(over.reason)}` : over.kind, '503 connector-busy');
    const calm = await chain.connect('calm.example.com', 'calm.example.com:443');
    assert.equal(calm.kind, 'established');
    if (calm.kind === 'established') assert.equal((await roundTrip(calm.socket, 'not starved', calm.rest)).toString(), 'not starved');
    done(calm);
  });

  void test('a CONNECT that loops back into the access tier (a pattern that allows its own address) buys nothing: the inner hop needs its own certificate and is decided and recorded again', async (t) => {
    const config = new StaticConfigSource(snapshotFromObjects([specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1')]));
    const events = new MemoryEventSink();
    const at = await startAccessTier({ name: 'edge-1', config, tls: await pki.issue('access-tier', { name: 'edge-1' }), events, listen: { host: '127.0.0.1', port: 0 } });
    t.after(async () => {
      at.destroy();
      await config.close();
    });
    // An over-broad service: any loopback address and port, the access tier's own included.
    config.update(snapshotFromObjects([
      specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'),
      specs.service('loop', CLUSTER, { type: 'tcp', domain: 'loop.example.com', port: 1, backend: { httpConnect: true, allowPatterns: [{ cidrs: ['127.0.0.0/8'], ports: ['1-65535'] }] } }),
      specs.service('kube', CLUSTER, { type: 'kubernetes', domain: 'kube.example.com', port: 443, backend: { dnsOverride: echo.address } }, pki.caPem),
    ]));
    const outer = await chainConnect({ port: at.port(), caPem: pki.caPem, servername: 'loop.example.com', cert: trust, connect: `127.0.0.1:${at.port()}` });
    assert.equal(outer.kind, 'established');
    if (outer.kind !== 'established') return;
    t.after(() => outer.socket.destroy());
    // Inside the tunnel, a second TLS handshake with the same access tier, without a certificate.
    let innerBytes = 0;
    const inner = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, expectServerType: 'access-tier' }), socket: outer.socket, servername: 'kube.example.com' });
    // chainConnect left the tunnel paused at the 200.
    outer.socket.resume();
    inner.on('secureConnect', () => inner.write('CONNECT kube.example.com:443 HTTP/1.1\r\n\r\n'));
    inner.on('data', (d: Buffer) => (innerBytes += d.length));
    inner.on('error', () => undefined);
    t.after(() => inner.destroy());
    const denied = await events.waitFor((e) => e.reasons.includes('cert-missing'));
    // The inner hop's source is the access tier itself: the outer allow event is what names the user's address.
    assert.match(denied.source, /^127\.0\.0\.1:/);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(innerBytes, 0, 'the inner hop got no answer at all');
    assert.equal(events.events.filter((e) => e.decision !== 'deny').length, 0, 'nothing but the denial was decided so far (the outer connection is still open)');
    inner.destroy();
    outer.socket.destroy();
    const outerEvent = await events.waitFor((e) => e.service === 'loop' && e.decision === 'allow');
    assert.equal(outerEvent.target, `127.0.0.1:${at.port()}`);
  });
});
