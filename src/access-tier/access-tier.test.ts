import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { MemoryEventSink } from '../lib/audit/index.ts';
import type { AccessEvent } from '../lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import { CertificateAuthority, issueKeyAndCert, mtlsClientOptions } from '../lib/pki/index.ts';
import { forgeCertificate } from '../lib/pki/forge.testing.ts';
import type { Decider } from '../lib/policy/decider.ts';
import type { SpecObject } from '../lib/spec/index.ts';
import { dialTcp } from '../lib/tunnel/dial.ts';
import type { BackendDialer } from '../lib/tunnel/dial.ts';
import { chainConnect, eventually, freePort, makeTestPki, roundTrip, specs, startEchoServer, startGreetingServer } from '../lib/tunnel/harness.testing.ts';
import type { ChainResult, KeyAndCert, TestPki, TestServer } from '../lib/tunnel/harness.testing.ts';
import { TUNNEL_ALPN, TUNNEL_HEADER, readTunnelRequest } from '../lib/tunnel/protocol.ts';
import { relay } from '../lib/tunnel/relay.ts';
import { serveTunnel } from '../lib/tunnel/session.ts';
import { dialBackend } from '../lib/tunnel/dial.ts';
import { decisionChannel } from './context.ts';
import { startAccessTier } from './index.ts';
import type { AccessTier, AccessTierOptions } from './index.ts';

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

interface Tier {
  at: AccessTier;
  events: MemoryEventSink;
  config: StaticConfigSource;
  port: number;
  objects: SpecObject[];
  chain: (o: { sni?: string | null; connect?: string; rawHead?: string | Buffer; cert?: { certPem: string; keyPem: string } | null; alpn?: string[] }) => Promise<ChainResult>;
  close: () => Promise<void>;
}

/** The standard services; `echoPort` is where the backends really are. */
function standardObjects(echoPort: number): SpecObject[] {
  return [
    specs.accessTier('edge-1', CLUSTER, '127.0.0.1:8443'),
    specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
    specs.connector('dc2', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
    // CHAIN, kubernetes: exactly kube.example.com:443, dialled at the override.
    specs.service('kube', CLUSTER, { type: 'kubernetes', domain: 'kube.example.com', port: 443, backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    // TCP mode: fixed backend, no CONNECT.
    specs.service('raw', CLUSTER, { type: 'tcp', domain: 'raw.example.com', port: 5432, backend: { target: `127.0.0.1:${echoPort}` } }),
    // CHAIN, httpConnect: whatever matches the patterns.
    specs.service('lit', CLUSTER, { type: 'tcp', domain: 'lit.example.com', port: 1, backend: { httpConnect: true, allowPatterns: [{ cidrs: ['127.0.0.1/32'], hostnames: ['*.example.com'], ports: [echoPort] }] } }),
    // Another service, to try cross-service targets (AT-02).
    specs.service('other', CLUSTER, { type: 'kubernetes', domain: 'other.example.com', port: 443, backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    // Through connectors.
    specs.service('via', CLUSTER, { type: 'kubernetes', domain: 'via.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    specs.service('via2', CLUSTER, { type: 'kubernetes', domain: 'via2.example.com', port: 443, connector: 'dc2', backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    // Another access tier's service and another cluster's: not served here.
    specs.service('elsewhere', CLUSTER, { type: 'kubernetes', accessTier: 'edge-2', domain: 'elsewhere.example.com', port: 443 }, pki.caPem),
    specs.service('foreign', 'c2', { type: 'kubernetes', domain: 'foreign.example.com', port: 443 }, pki.caPem),
  ];
}

async function startTier(opts: { objects?: SpecObject[]; revoked?: string[]; options?: Partial<AccessTierOptions> } = {}): Promise<Tier> {
  const cert = await pki.issue('access-tier', { name: 'edge-1' });
  const objects = opts.objects ?? standardObjects(echo.port);
  const config = new StaticConfigSource(snapshotFromObjects(objects, { revokedSerials: opts.revoked ?? [] }));
  const events = new MemoryEventSink();
  const at = await startAccessTier({ name: 'edge-1', config, tls: cert, events, listen: { host: '127.0.0.1', port: 0 }, ...opts.options });
  const port = at.port();
  return {
    at,
    events,
    config,
    port,
    objects,
    chain: (o) =>
      chainConnect({
        port,
        caPem: pki.caPem,
        ...(o.sni === null ? {} : { servername: o.sni ?? 'kube.example.com' }),
        ...(o.cert === null ? {} : { cert: o.cert ?? trust }),
        ...(o.connect !== undefined ? { connect: o.connect } : {}),
        ...(o.rawHead !== undefined ? { rawHead: o.rawHead } : {}),
        ...(o.alpn !== undefined ? { alpn: o.alpn } : {}),
      }),
    close: async () => {
      await at.close();
      await config.close();
    },
  };
}

/** The first event written after index `before` that matches. */
function eventAfter(t: Tier, before: number, predicate: (e: AccessEvent) => boolean): Promise<AccessEvent> {
  return eventually(() => t.events.events.slice(before).find(predicate), 5000, 'a matching access event');
}

/** A backend failure after an allow decision: the user gets `status reason`, the event keeps the decision and says why it ended. */
async function expectBackendFailure(t: Tier, r: ChainResult, status: number, reason: string): Promise<AccessEvent> {
  destroyResult(r);
  assert.equal(r.kind, 'refused');
  if (r.kind === 'refused') {
    assert.equal(r.status, status);
    assert.equal(r.reason, reason);
  }
  const event = await t.events.waitFor((e) => (e.closeReason ?? '').startsWith(`${reason}:`));
  assert.equal(event.decision, 'allow');
  return event;
}

/** Resolves when the peer hung up (the client allows half-open sockets, so that is 'end' or 'close'). */
function hungUp(socket: tls.TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.readableEnded || socket.closed) resolve();
    socket.once('end', () => resolve());
    socket.once('close', () => resolve());
    socket.resume();
  });
}

function destroyResult(r: ChainResult): void {
  if (r.kind !== 'failed') r.socket.destroy();
}

async function expectRefused(t: Tier, r: ChainResult, status: number, reason: string): Promise<AccessEvent> {
  destroyResult(r);
  assert.equal(r.kind, 'refused', `expected a ${status} refusal, got ${JSON.stringify(r.kind === 'failed' ? r : { kind: r.kind, status: r.status })}`);
  if (r.kind === 'refused') {
    assert.equal(r.status, status);
    assert.equal(r.reason, reason);
  }
  const event = await t.events.waitFor((e) => e.reasons.includes(reason));
  assert.equal(event.decision, 'deny');
  assert.equal(event.accessTier, 'edge-1');
  return event;
}

void describe('access tier: CHAIN and TCP mode to direct backends', { timeout: 60_000 }, () => {
  let t: Tier;
  before(async () => {
    t = await startTier();
  });
  after(() => t.close());

  void test('CHAIN mode relays bytes both ways to the DNS override and records one allow event with bytes and duration', async () => {
    const r = await t.chain({ connect: 'kube.example.com:443' });
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    assert.equal((await roundTrip(r.socket, 'ping through the tunnel', r.rest)).toString(), 'ping through the tunnel');
    r.socket.destroy();
    const event = await t.events.waitFor((e) => e.service === 'kube' && e.decision === 'allow');
    assert.deepEqual(
      { reasons: event.reasons, sni: event.sni, target: event.target, dialled: event.dialled, via: event.via, user: event.user, device: event.device, certSerial: event.certSerial, bytesUp: event.bytesUp, bytesDown: event.bytesDown, closeReason: event.closeReason },
      { reasons: ['trust-cert-valid'], sni: 'kube.example.com', target: 'kube.example.com:443', dialled: `127.0.0.1:${echo.port}`, via: 'direct', user: 'alice', device: 'laptop-1', certSerial: trust.serial, bytesUp: 23, bytesDown: 23, closeReason: 'closed' },
    );
    assert.ok(typeof event.durationMs === 'number' && event.durationMs >= 0);
    assert.match(event.id, /^[0-9a-f-]{36}$/);
  });

  void test('half-close works both ways: the user ends first and still receives everything the backend sends', async (tt) => {
    const greeter = await startGreetingServer('greeting before any request');
    const local = await startTier({ objects: [specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'), specs.service('g', CLUSTER, { type: 'kubernetes', domain: 'g.example.com', port: 443, backend: { dnsOverride: greeter.address } }, pki.caPem)] });
    tt.after(async () => {
      await local.close();
      await greeter.close();
    });
    const r = await local.chain({ sni: 'g.example.com', connect: 'g.example.com:443' });
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    const back = await roundTrip(r.socket, 'the request, then FIN', r.rest);
    assert.equal(back.toString(), 'greeting before any request');
    assert.equal((await greeter.received).toString(), 'the request, then FIN');
    r.socket.destroy();
  });

  void test('TCP mode relays raw bytes to the fixed backend without a CONNECT', async () => {
    const r = await t.chain({ sni: 'raw.example.com' });
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    assert.equal((await roundTrip(r.socket, 'raw bytes')).toString(), 'raw bytes');
    r.socket.destroy();
    const event = await t.events.waitFor((e) => e.service === 'raw' && e.decision === 'allow');
    assert.equal(event.target, `127.0.0.1:${echo.port}`);
    assert.equal(event.bytesUp, 9);
  });

  void test('SNI in upper case with a trailing dot is canonicalised to its service (AT-05)', async () => {
    const r = await t.chain({ sni: 'KUBE.Example.COM.', connect: 'kube.example.com:443' });
    assert.equal(r.kind, 'established');
    destroyResult(r);
    const event = await t.events.waitFor((e) => e.service === 'kube' && e.sni === 'kube.example.com' && e.decision === 'allow');
    assert.equal(event.sni, 'kube.example.com');
  });

  void test('a CONNECT target in another case or with a trailing dot is the same target', async () => {
    const r = await t.chain({ rawHead: 'CONNECT KUBE.example.com.:443 HTTP/1.1\r\n\r\n' });
    assert.equal(r.kind, 'established');
    destroyResult(r);
  });

  void test('AT-05 an unknown SNI is refused 403 unknown-service', async () => {
    await expectRefused(t, await t.chain({ sni: 'nope.example.com', connect: 'nope.example.com:443' }), 403, 'unknown-service');
  });

  void test('AT-05 a punycode SNI is compared as written, never decoded into another service', async () => {
    await expectRefused(t, await t.chain({ sni: 'xn--kube-9ja.example.com', connect: 'kube.example.com:443' }), 403, 'unknown-service');
  });

  void test('AT-05 a missing SNI is refused 403 bad-sni', async () => {
    const event = await expectRefused(t, await t.chain({ sni: null, connect: 'kube.example.com:443' }), 403, 'bad-sni');
    assert.equal(event.user, 'alice');
  });

  void test('AT-05 an IP-literal SNI is refused 403 bad-sni', async () => {
    await expectRefused(t, await t.chain({ sni: '127.0.0.1', connect: 'kube.example.com:443' }), 403, 'bad-sni');
  });

  void test('AT-05 a 255-byte SNI is refused (bad-sni or at the handshake) and recorded', async () => {
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`;
    assert.equal(long.length, 255);
    const before = t.events.events.length;
    const r = await t.chain({ sni: long, connect: 'kube.example.com:443' });
    destroyResult(r);
    if (r.kind === 'refused') assert.equal(r.reason, 'bad-sni');
    else assert.equal(r.kind, 'failed');
    await eventually(() => (t.events.events.slice(before).some((e) => e.decision === 'deny') ? true : undefined), 5000, 'a deny event');
  });

  void test('services of another access tier or another cluster are not served here', async () => {
    await expectRefused(t, await t.chain({ sni: 'elsewhere.example.com', connect: 'elsewhere.example.com:443' }), 403, 'unknown-service');
    await expectRefused(t, await t.chain({ sni: 'foreign.example.com', connect: 'foreign.example.com:443' }), 403, 'unknown-service');
  });

  void test('AT-02 a CONNECT target of another service is refused with 421', async () => {
    const event = await expectRefused(t, await t.chain({ connect: 'other.example.com:443' }), 421, 'target-not-in-service');
    assert.equal(event.service, 'kube');
    assert.equal(event.target, 'other.example.com:443');
  });

  void test('AT-02 the right host on another port is refused with 421', async () => {
    await expectRefused(t, await t.chain({ connect: 'kube.example.com:8443' }), 421, 'target-not-in-service');
  });

  void test('AT-02 the override address itself is not a valid CONNECT target of a kubernetes service', async () => {
    await expectRefused(t, await t.chain({ connect: `127.0.0.1:${echo.port}` }), 421, 'target-not-in-service');
  });

  void test('AT-10 an oversized CONNECT head is refused with 431', async () => {
    const head = `CONNECT kube.example.com:443 HTTP/1.1\r\nHost: kube.example.com:443\r\nX-Pad: ${'a'.repeat(10_000)}\r\n\r\n`;
    const before = t.events.events.length;
    const r = await t.chain({ rawHead: head });
    destroyResult(r);
    assert.equal(r.kind === 'refused' ? r.status : 0, 431);
    await eventAfter(t, before, (e) => e.decision === 'deny' && e.reasons.length === 1);
  });

  void test('AT-10 too many header lines are refused with 431', async () => {
    const head = `CONNECT kube.example.com:443 HTTP/1.1\r\n${Array.from({ length: 100 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`;
    const r = await t.chain({ rawHead: head });
    destroyResult(r);
    assert.equal(r.kind === 'refused' ? r.status : 0, 431);
  });

  for (const [name, head, status] of [
    ['AT-09 a CONNECT with Content-Length', 'CONNECT kube.example.com:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello', 400],
    ['AT-09 a CONNECT with Transfer-Encoding (CL.TE/TE.CL)', 'CONNECT kube.example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    ['AT-09 an obs-folded header', 'CONNECT kube.example.com:443 HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n', 400],
    ['AT-09 bare LF line ends', 'CONNECT kube.example.com:443 HTTP/1.1\nHost: kube.example.com:443\n\n', 400],
    ['AT-09 duplicate Host headers', 'CONNECT kube.example.com:443 HTTP/1.1\r\nHost: kube.example.com:443\r\nHost: other.example.com:443\r\n\r\n', 400],
    ['LP-06 CRLF inside the CONNECT authority', 'CONNECT kube.example.com\r\n:443 HTTP/1.1\r\n\r\n', 400],
    ['LP-06 an absolute-form request', 'GET http://kube.example.com/ HTTP/1.1\r\nHost: kube.example.com\r\n\r\n', 405],
    ['a request that is not HTTP at all', '\u0016\u0003\u0001garbage\r\n\r\n', 400],
  ] as const) {
    void test(`${name} is refused with ${status}, a reason and an event`, async () => {
      const before = t.events.events.length;
      const r = await t.chain({ rawHead: head });
      destroyResult(r);
      assert.equal(r.kind, 'refused');
      if (r.kind !== 'refused') return;
      assert.equal(r.status, status);
      assert.ok(r.reason !== undefined && r.reason.length > 0);
      const reason = r.reason;
      await eventAfter(t, before, (e) => e.decision === 'deny' && e.reasons.includes(reason));
    });
  }

  void describe('LP-03 IP-literal and hostname tricks against allow patterns (127.0.0.1/32 and *.example.com)', () => {
    for (const [authority, expected] of [
      ['0x7f.1', 'ambiguous-ip'],
      ['2130706433', 'ambiguous-ip'],
      ['017700000001', 'ambiguous-ip'],
      ['127.1', 'ambiguous-ip'],
      ['012.0.0.1', 'ambiguous-ip'],
      ['0177.0.0.1', 'ambiguous-ip'],
      ['127.0.0.1.', 'ambiguous-ip'],
      ['[64:ff9b:1::7f00:1]', 'ambiguous-ip'],
      ['user@127.0.0.1', 'bad-authority'],
      ['127.0.0.1%00', 'bad-authority'],
      ['[::1%25lo]', 'bad-authority'],
      ['127.0.0.2', 'target-not-in-service'],
      ['host.evil.com', 'target-not-in-service'],
      ['example.com', 'target-not-in-service'],
      ['example.com.evil.com', 'target-not-in-service'],
      ['evilexample.com', 'target-not-in-service'],
    ] as const) {
      void test(`${authority} is refused (${expected})`, async () => {
        const r = await t.chain({ sni: 'lit.example.com', rawHead: `CONNECT ${authority}:${echo.port} HTTP/1.1\r\n\r\n` });
        destroyResult(r);
        assert.equal(r.kind, 'refused');
        if (r.kind !== 'refused') return;
        assert.equal(r.reason, expected);
        assert.equal(r.status, expected === 'target-not-in-service' ? 421 : 400);
      });
    }

    void test('a port outside the pattern is refused 421', async () => {
      await expectRefused(t, await t.chain({ sni: 'lit.example.com', connect: `127.0.0.1:${echo.port === 65535 ? 1 : echo.port + 1}` }), 421, 'target-not-in-service');
    });

    for (const authority of ['127.0.0.1', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '[64:ff9b::7f00:1]', '[::ffff:0:127.0.0.1]']) {
      void test(`${authority} is the IPv4 address 127.0.0.1: allowed, and 127.0.0.1 is what is dialled`, async () => {
        const r = await t.chain({ sni: 'lit.example.com', rawHead: `CONNECT ${authority}:${echo.port} HTTP/1.1\r\n\r\n` });
        assert.equal(r.kind, 'established');
        destroyResult(r);
        const event = await t.events.waitFor((e) => e.service === 'lit' && e.decision === 'allow' && e.target === `127.0.0.1:${echo.port}`);
        assert.equal(event.dialled, `127.0.0.1:${echo.port}`);
      });
    }
  });

  void test('a backend that is down is a clear 502 backend-unreachable, recorded with the decision that allowed it', async (tt) => {
    const port = await freePort();
    const local = await startTier({ objects: [specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'), specs.service('down', CLUSTER, { type: 'kubernetes', domain: 'down.example.com', port: 443, backend: { dnsOverride: `127.0.0.1:${port}` } }, pki.caPem)] });
    tt.after(() => local.close());
    const r = await local.chain({ sni: 'down.example.com', connect: 'down.example.com:443' });
    destroyResult(r);
    assert.equal(r.kind, 'refused');
    if (r.kind !== 'refused') return;
    assert.equal(r.status, 502);
    assert.equal(r.reason, 'backend-unreachable');
    const event = await local.events.waitFor((e) => e.service === 'down');
    assert.equal(event.decision, 'allow');
    assert.match(event.closeReason ?? '', /^backend-unreachable: ECONNREFUSED/);
  });
});

void describe('access tier: certificates', { timeout: 60_000 }, () => {
  let t: Tier;
  before(async () => {
    t = await startTier();
  });
  after(() => t.close());

  /** An unauthenticated peer gets no HTTP answer at all: the connection just ends. */
  async function expectCut(r: ChainResult, reason: string): Promise<AccessEvent> {
    destroyResult(r);
    assert.equal(r.kind, 'failed', 'an unauthenticated client must not get an HTTP answer');
    return t.events.waitFor((e) => e.reasons.includes(reason));
  }

  void test('AT-01 no client certificate: the connection ends before anything about services is said, and it is recorded', async () => {
    const event = await expectCut(await t.chain({ cert: null, connect: 'kube.example.com:443' }), 'cert-missing');
    assert.equal(event.decision, 'deny');
    assert.equal(event.service, undefined);
  });

  void test('CA-01 an expired trust certificate is refused and recorded as cert-expired', async () => {
    const past = await CertificateAuthority.load(pki.ca.exportEncrypted('pw'), 'pw', { clock: { now: () => Date.now() - 30 * 3_600_000 } });
    const expired = await issueKeyAndCert(past, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    await expectCut(await t.chain({ cert: expired, connect: 'kube.example.com:443' }), 'cert-expired');
  });

  void test('CA-01 a trust certificate not yet valid is refused and recorded as cert-not-yet-valid', async () => {
    const early = await forgeCertificate({ ca: pki.ca, ekus: ['1.3.6.1.5.5.7.3.2', '1.3.6.1.4.1.59541.1.1'], uris: ['causeway://user/alice', 'causeway://device/laptop-1'], notBefore: new Date(Date.now() + 3_600_000), notAfter: new Date(Date.now() + 7_200_000) });
    await expectCut(await t.chain({ cert: early, connect: 'kube.example.com:443' }), 'cert-not-yet-valid');
  });

  void test('CA-02 a certificate from another CA with the same names is refused and recorded as cert-unknown-ca', async () => {
    const impostor = await CertificateAuthority.create({ commonName: 'causeway test CA' });
    const fake = await issueKeyAndCert(impostor, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    await expectCut(await t.chain({ cert: fake, connect: 'kube.example.com:443' }), 'cert-unknown-ca');
  });

  for (const [type, identity] of [
    ['connector', { name: 'dc1' }],
    ['device', { device: 'laptop-1' }],
    ['access-tier', { name: 'edge-1' }],
    ['kube-proxy', { name: 'kp' }],
  ] as const) {
    void test(`CA-03 a ${type} certificate presented as a trust certificate is refused 403 cert-wrong-type`, async () => {
      const cert = await pki.issue(type, identity);
      const event = await expectRefused(t, await t.chain({ cert, connect: 'kube.example.com:443' }), 403, 'cert-wrong-type');
      assert.equal(event.certSerial, undefined);
    });
  }

  void test('CA-06 a revoked trust certificate is refused 403 cert-revoked', async (tt) => {
    const revoked = await pki.issue('trust', { user: 'bob', device: 'laptop-2' });
    const local = await startTier({ revoked: [revoked.serial] });
    tt.after(() => local.close());
    await expectRefused(local, await local.chain({ cert: revoked, connect: 'kube.example.com:443' }), 403, 'cert-revoked');
  });

  void test('AT-11 a TLS handshake that stalls (a withheld client certificate) is closed by the handshake timeout and recorded', async (tt) => {
    const local = await startTier({ options: { limits: { handshakeTimeoutMs: 200 } } });
    tt.after(() => local.close());
    const socket = net.connect({ host: '127.0.0.1', port: local.port });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    await closed;
    await local.events.waitFor((e) => e.reasons.includes('tls-handshake-timeout'));
  });

  void test('AT-11 a slowloris CONNECT head is cut by the header timeout with 408', async (tt) => {
    const local = await startTier({ options: { limits: { headerTimeoutMs: 200 } } });
    tt.after(() => local.close());
    await expectRefused(local, await local.chain({ rawHead: 'CONNECT kube.exa' }), 408, 'header-timeout');
  });

  void test('AT-11 the per-source connection cap holds, and the refusal is recorded', async (tt) => {
    const local = await startTier({ options: { limits: { maxConnectionsPerSource: 2 } } });
    tt.after(() => local.close());
    const held = [net.connect({ host: '127.0.0.1', port: local.port }), net.connect({ host: '127.0.0.1', port: local.port })];
    for (const s of held) s.on('error', () => undefined);
    await Promise.all(held.map((s) => new Promise((r) => s.once('connect', r))));
    await eventually(() => (local.at.stats().openSockets === 2 ? true : undefined), 2000, 'two held sockets');
    const third = await local.chain({ connect: 'kube.example.com:443' });
    destroyResult(third);
    assert.equal(third.kind, 'failed');
    await local.events.waitFor((e) => e.reasons.includes('source-connection-limit'));
    assert.equal(local.at.stats().refusedBySourceCap, 1);
    for (const s of held) s.destroy();
    await eventually(() => (local.at.stats().openSockets === 0 ? true : undefined), 2000, 'sockets released');
    const again = await local.chain({ connect: 'kube.example.com:443' });
    assert.equal(again.kind, 'established');
    destroyResult(again);
  });

  void test('AT-13 a PROXY-protocol header (no load balancer is configured) is refused at the handshake and changes nothing', async () => {
    const before = t.events.events.length;
    const socket = net.connect({ host: '127.0.0.1', port: t.port });
    socket.on('error', () => undefined);
    socket.write('PROXY TCP4 203.0.113.7 127.0.0.1 51000 8443\r\n');
    await new Promise((r) => socket.once('close', r));
    const event = await eventAfter(t, before, (e) => e.decision === 'deny');
    assert.match(event.reasons[0] ?? '', /^tls-/);
    assert.match(event.source, /^127\.0\.0\.1:/);
  });

  void test('a client offering only ALPN protocols we do not speak is refused at the handshake and recorded', async () => {
    const r = await t.chain({ alpn: ['h2'], connect: 'kube.example.com:443' });
    assert.equal(r.kind, 'failed');
    await t.events.waitFor((e) => e.reasons.includes('tls-alpn-mismatch'));
  });
});

void describe('access tier: decisions, config changes and hostile callbacks', { timeout: 60_000 }, () => {
  void test('AT-07 a decider that throws closes that connection, records decision-failed, and the access tier keeps serving', async (tt) => {
    const decider: Decider = {
      decide: (input) => {
        if (input.service.metadata.name === 'other') throw new Error('hostile input made the policy engine throw');
        return { allow: true, reasons: ['ok'], mode: 'none' };
      },
    };
    const local = await startTier({ options: { decider } });
    tt.after(() => local.close());
    const r = await local.chain({ sni: 'other.example.com', connect: 'other.example.com:443' });
    destroyResult(r);
    assert.equal(r.kind, 'failed');
    await local.events.waitFor((e) => e.reasons.includes('decision-failed'));
    const ok = await local.chain({ connect: 'kube.example.com:443' });
    assert.equal(ok.kind, 'established');
    destroyResult(ok);
  });

  void test('AT-07 an event sink that throws does not take the connection or the process down', async (tt) => {
    const cert = await pki.issue('access-tier', { name: 'edge-1' });
    const config = new StaticConfigSource(snapshotFromObjects(standardObjects(echo.port)));
    const at = await startAccessTier({ name: 'edge-1', config, tls: cert, events: { write: () => { throw new Error('disk full'); }, close: () => Promise.resolve() }, listen: { host: '127.0.0.1', port: 0 } });
    tt.after(async () => {
      await at.close();
      await config.close();
    });
    const r = await chainConnect({ port: at.port(), caPem: pki.caPem, servername: 'kube.example.com', cert: trust, connect: 'kube.example.com:443' });
    assert.equal(r.kind, 'established');
    if (r.kind === 'established') assert.equal((await roundTrip(r.socket, 'still works', r.rest)).toString(), 'still works');
    destroyResult(r);
  });

  void test('a denying decider answers 403 with its first reason; permissive mode allows and records would-deny', async (tt) => {
    const decider: Decider = {
      decide: (input) =>
        input.service.metadata.name === 'other'
          ? { allow: false, reasons: ['device-untrusted', 'no-matching-role'], mode: 'enforcing' }
          : { allow: true, reasons: ['device-untrusted'], mode: 'permissive', wouldDeny: true },
    };
    const seen: unknown[] = [];
    const onDecision = (m: unknown): void => void seen.push(m);
    subscribe('causeway:access-tier:decision', onDecision);
    tt.after(() => unsubscribe('causeway:access-tier:decision', onDecision));
    const local = await startTier({ options: { decider } });
    tt.after(() => local.close());
    const denied = await expectRefused(local, await local.chain({ sni: 'other.example.com', connect: 'other.example.com:443' }), 403, 'device-untrusted');
    assert.deepEqual(denied.reasons, ['device-untrusted', 'no-matching-role']);
    const deniedMessages = seen.filter((m) => (m as AccessEvent).id === denied.id);
    assert.equal(deniedMessages.length, 1, 'one denial is published once on the decision channel');
    assert.equal((deniedMessages[0] as AccessEvent).decision, 'deny');
    const r = await local.chain({ connect: 'kube.example.com:443' });
    assert.equal(r.kind, 'established');
    destroyResult(r);
    const event = await local.events.waitFor((e) => e.service === 'kube');
    assert.equal(event.decision, 'would-deny');
    assert.ok(decisionChannel.hasSubscribers);
    assert.ok(seen.some((m) => (m as AccessEvent).decision === 'would-deny'));
  });

  void test('CA-06 revoking a live connection\'s certificate cuts it at once; a removed service cuts its connections', async (tt) => {
    const bob = await pki.issue('trust', { user: 'bob', device: 'laptop-2' });
    const local = await startTier();
    tt.after(() => local.close());
    const a = await local.chain({ cert: bob, connect: 'kube.example.com:443' });
    const b = await local.chain({ sni: 'raw.example.com' });
    const c = await local.chain({ connect: 'kube.example.com:443' });
    assert.ok(a.kind === 'established' && b.kind === 'established' && c.kind === 'established');
    await eventually(() => (local.at.liveConnections().length === 3 ? true : undefined), 2000, 'three live connections');
    const aClosed = hungUp(a.socket);
    local.config.update(snapshotFromObjects(local.objects, { revokedSerials: [bob.serial] }));
    await aClosed;
    const cutEvent = await local.events.waitFor((e) => e.user === 'bob' && e.decision === 'allow');
    assert.equal(cutEvent.closeReason, 'cert-revoked');
    assert.equal(local.at.liveConnections().length, 2);
    const bClosed = hungUp(b.socket);
    local.config.update(snapshotFromObjects(local.objects.filter((o) => o.metadata.name !== 'raw'), { revokedSerials: [bob.serial] }));
    await bClosed;
    assert.equal((await local.events.waitFor((e) => e.service === 'raw' && e.decision === 'allow')).closeReason, 'service-removed');
    assert.equal(local.at.liveConnections().length, 1);
    assert.equal(local.at.cut({ user: 'alice' }, 'user-disabled'), 1);
    await local.events.waitFor((e) => e.closeReason === 'user-disabled');
    assert.equal(local.at.cut({}, 'everything'), 0, 'an empty filter cuts nothing');
    destroyResult(c);
  });

  void test('an admin\'s SessionKill cuts exactly that session with closeReason disconnected-by-admin; an unknown id changes nothing; opens and closes are announced', async (tt) => {
    const local = await startTier();
    tt.after(() => local.close());
    let changes = 0;
    const stop = local.at.onSessionsChanged(() => changes++);
    tt.after(stop);
    const a = await local.chain({ connect: 'kube.example.com:443' });
    const b = await local.chain({ connect: 'kube.example.com:443' });
    assert.ok(a.kind === 'established' && b.kind === 'established');
    const live = await eventually(() => (local.at.liveConnections().length === 2 ? local.at.liveConnections() : undefined), 2000, 'two live connections');
    assert.equal(changes, 2);
    a.socket.write('ping');
    await eventually(() => (live.some((c) => c.bytes().up >= 4) ? true : undefined), 2000, 'bytes counted while live');
    const victim = live[0];
    const victimSocket = [a, b].find((r) => r.kind === 'established' && (r.socket.localPort === Number(victim.source.split(':').at(-1))));
    assert.ok(victimSocket !== undefined && victimSocket.kind === 'established');
    const closed = hungUp(victimSocket.socket);
    const base = snapshotFromObjects(local.objects);
    local.config.update({ ...base, version: 'kill-1', sessionKills: ['0193a1b2-0000-7000-8000-000000000000', victim.id] });
    await closed;
    const event = await local.events.waitFor((e) => e.id === victim.id);
    assert.equal(event.closeReason, 'disconnected-by-admin');
    assert.equal(event.decision, 'allow');
    assert.deepEqual(local.at.liveConnections().map((c) => c.id), [live[1].id], 'the other session stays');
    assert.equal(changes, 3, 'the close was announced');
    for (const r of [a, b]) destroyResult(r);
  });

  void test('the dialled address comes only from configuration: a changed dnsOverride applies to new connections', async (tt) => {
    const dialled: string[] = [];
    const dialer: BackendDialer = (target) => {
      dialled.push(`${target.host}:${target.port}`);
      return dialTcp({ host: '127.0.0.1', port: echo.port, kind: 'ipv4' });
    };
    const objects = [specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'), specs.service('k', CLUSTER, { type: 'kubernetes', domain: 'k.example.com', port: 443, backend: { dnsOverride: 'kube-proxy.internal:8443' } }, pki.caPem)];
    const local = await startTier({ objects, options: { dialer } });
    tt.after(() => local.close());
    const r = await local.chain({ sni: 'k.example.com', rawHead: 'CONNECT k.example.com:443 HTTP/1.1\r\nHost: k.example.com:443\r\nX-Forwarded-Host: evil.internal:22\r\nForwarded: host=evil.internal\r\n\r\n' });
    assert.equal(r.kind, 'established');
    destroyResult(r);
    assert.deepEqual(dialled, ['kube-proxy.internal:8443']);
  });

  void test('close() lets a live connection finish within the drain deadline, then cuts it with reason shutdown', async () => {
    const local = await startTier({ options: { limits: { drainTimeoutMs: 300 } } });
    const r = await local.chain({ connect: 'kube.example.com:443' });
    assert.equal(r.kind, 'established');
    if (r.kind !== 'established') return;
    r.socket.resume();
    const started = Date.now();
    await local.close();
    assert.ok(Date.now() - started >= 250);
    await hungUp(r.socket);
    assert.equal((await local.events.waitFor((e) => e.decision === 'allow')).closeReason, 'shutdown');
    const refused = await chainConnect({ port: local.port, caPem: pki.caPem, servername: 'kube.example.com', cert: trust, connect: 'kube.example.com:443', timeoutMs: 2000 });
    assert.equal(refused.kind, 'failed');
  });
});

// ---------------------------------------------------------------------------------------------
// Tunnels, with a minimal connector written here from the shared tunnel pieces.

interface FakeConnector {
  session: ServerHttp2Session | undefined;
  socket: tls.TLSSocket;
  streams: Array<{ authority: string; headers: Record<string, unknown> }>;
  closed: Promise<void>;
}

function fakeConnector(port: number, cert: { certPem: string; keyPem: string }, answer: (stream: ServerHttp2Stream, authority: string) => void = forwardToEcho, alpn = TUNNEL_ALPN): Promise<FakeConnector> {
  return new Promise((resolve) => {
    const socket = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, certPem: cert.certPem, keyPem: cert.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port, ALPNProtocols: [alpn] });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    const fake: FakeConnector = { session: undefined, socket, streams: [], closed };
    socket.once('secureConnect', () => {
      const { session } = serveTunnel(socket);
      session.on('error', () => undefined);
      fake.session = session;
      session.on('stream', (stream, headers) => {
        stream.on('error', () => undefined);
        const req = readTunnelRequest(headers);
        fake.streams.push({ authority: String(headers[':authority']), headers: { ...headers } });
        answer(stream, req.ok ? `${req.target.host}:${req.target.port}` : '');
      });
      resolve(fake);
    });
    socket.once('close', () => resolve(fake));
  });
}

function forwardToEcho(stream: ServerHttp2Stream): void {
  void dialBackend({ host: '127.0.0.1', port: echo.port, kind: 'ipv4' }).then((d) => {
    if (!d.ok) return;
    stream.respond({ ':status': 200 });
    void relay(stream, d.socket).done;
  });
}

void describe('access tier: connector tunnels', { timeout: 60_000 }, () => {
  let t: Tier;
  before(async () => {
    t = await startTier({ options: { limits: { waitForTunnelMs: 200 } } });
  });
  after(() => t.close());

  void test('CN-01 a trust certificate offering the tunnel protocol is refused and recorded', async () => {
    const fake = await fakeConnector(t.port, trust);
    await fake.closed;
    const event = await t.events.waitFor((e) => e.reasons.includes('tunnel-refused') && e.reasons.includes('cert-wrong-type'));
    assert.equal(event.decision, 'deny');
    assert.equal(t.at.stats().tunnels.length, 0);
  });

  void test('CN-01 an access-tier certificate offering the tunnel protocol is refused', async () => {
    const edge = await pki.issue('access-tier', { name: 'edge-2' });
    const fake = await fakeConnector(t.port, edge);
    await fake.closed;
    assert.equal(t.at.stats().tunnels.length, 0);
  });

  void test('CN-01 a connector certificate for a connector the configuration does not know is refused', async () => {
    const rogue = await pki.issue('connector', { name: 'rogue' });
    const fake = await fakeConnector(t.port, rogue);
    await fake.closed;
    await t.events.waitFor((e) => e.reasons.includes('unknown-connector') && e.connector === 'rogue');
  });

  void test('CN-01 a connector certificate without the tunnel ALPN is a client, and a connector is no client (403 cert-wrong-type)', async () => {
    const dc1 = await pki.issue('connector', { name: 'dc1' });
    await expectRefused(t, await t.chain({ cert: dc1, connect: 'kube.example.com:443' }), 403, 'cert-wrong-type');
  });

  void test('CN-01 connector A is identified as A from its certificate: its tunnel carries A\'s services only, never B\'s', async (tt) => {
    const dc1 = await pki.issue('connector', { name: 'dc1' });
    const fake = await fakeConnector(t.port, dc1);
    tt.after(() => fake.socket.destroy());
    await eventually(() => (t.at.stats().tunnels.some((x) => x.connector === 'dc1') ? true : undefined), 2000, 'dc1 registered');
    assert.deepEqual(t.at.stats().tunnels.map((x) => x.connector), ['dc1']);
    const viaA = await t.chain({ sni: 'via.example.com', connect: 'via.example.com:443' });
    assert.equal(viaA.kind, 'established');
    if (viaA.kind === 'established') assert.equal((await roundTrip(viaA.socket, 'through dc1', viaA.rest)).toString(), 'through dc1');
    destroyResult(viaA);
    const stream = fake.streams.at(-1);
    assert.equal(stream?.authority, `127.0.0.1:${echo.port}`);
    assert.equal(stream?.headers[TUNNEL_HEADER.user], 'alice');
    assert.equal(stream?.headers[TUNNEL_HEADER.service], 'via');
    const event = await t.events.waitFor((e) => e.service === 'via' && e.decision === 'allow');
    assert.equal(event.via, 'connector');
    assert.equal(event.connector, 'dc1');
    const viaB = await t.chain({ sni: 'via2.example.com', connect: 'via2.example.com:443' });
    await expectBackendFailure(t, viaB, 502, 'no-connector-tunnel');
    assert.equal(fake.streams.length, 1);
  });

  void test('a connector that refuses the target gives the user 502 connector-refused', async (tt) => {
    const dc2 = await pki.issue('connector', { name: 'dc2' });
    const fake = await fakeConnector(t.port, dc2, (stream) => stream.respond({ ':status': 403, [TUNNEL_HEADER.reason]: 'target-not-allowed' }, { endStream: true }));
    tt.after(() => fake.socket.destroy());
    await eventually(() => (t.at.stats().tunnels.some((x) => x.connector === 'dc2') ? true : undefined), 2000, 'dc2 registered');
    await expectBackendFailure(t, await t.chain({ sni: 'via2.example.com', connect: 'via2.example.com:443' }), 502, 'connector-refused');
  });

  void test('two tunnels of one connector share new streams (least busy first) and one dying moves new streams to the other', async (tt) => {
    const local = await startTier();
    tt.after(() => local.close());
    const dc1 = await pki.issue('connector', { name: 'dc1' });
    const first = await fakeConnector(local.port, dc1);
    const second = await fakeConnector(local.port, dc1);
    tt.after(() => {
      first.socket.destroy();
      second.socket.destroy();
    });
    await eventually(() => (local.at.stats().tunnels.length === 2 ? true : undefined), 2000, 'two tunnels');
    const held = [await local.chain({ sni: 'via.example.com', connect: 'via.example.com:443' }), await local.chain({ sni: 'via.example.com', connect: 'via.example.com:443' })];
    assert.deepEqual([first.streams.length, second.streams.length], [1, 1], 'the second stream went to the idle tunnel');
    first.socket.destroy();
    await eventually(() => (local.at.stats().tunnels.length === 1 ? true : undefined), 2000, 'the dead tunnel left the pool');
    const after = await local.chain({ sni: 'via.example.com', connect: 'via.example.com:443' });
    assert.equal(after.kind, 'established');
    assert.equal(second.streams.length, 2);
    for (const r of [...held, after]) destroyResult(r);
  });

  void test('CN-03 a connector revoked while its tunnel is up is cut at once and cannot come back', async (tt) => {
    const local = await startTier();
    tt.after(() => local.close());
    const dc1 = await pki.issue('connector', { name: 'dc1' });
    const fake = await fakeConnector(local.port, dc1);
    await eventually(() => (local.at.stats().tunnels.length === 1 ? true : undefined), 2000, 'tunnel up');
    local.config.update(snapshotFromObjects(local.objects, { revokedSerials: [dc1.serial] }));
    await fake.closed;
    assert.equal(local.at.stats().tunnels.length, 0);
    assert.equal((await local.events.waitFor((e) => e.connector === 'dc1' && e.decision === 'allow')).closeReason, 'cert-revoked');
    const again = await fakeConnector(local.port, dc1);
    await again.closed;
    await local.events.waitFor((e) => e.connector === 'dc1' && e.reasons.includes('cert-revoked') && e.decision === 'deny');
  });
});
