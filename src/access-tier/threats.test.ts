/**
 * Attacks on the access tier (THREATS AT-01, AT-05, AT-07, AT-09–AT-14, CN-01, CN-05, CN-06), beyond
 * access-tier.test.ts: what an unauthenticated peer can learn, SNI spellings and hostile handshakes
 * (fast-check), smuggling with the socket closed and memory measured, slow and withheld handshakes
 * with per-source caps from two source addresses, HTTP/2 abuse from a malicious connector against an
 * access tier in its own process (threats-child.testing.ts), PROXY-protocol and forwarding headers,
 * TLS 1.2, session resumption after a revocation, stalled readers and half-open tunnels.
 */
import { test, describe, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import fc from 'fast-check';
import { MemoryEventSink } from '../lib/audit/index.ts';
import type { AccessEvent } from '../lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import { parseConnectResponseHead } from '../lib/net/connect-request.ts';
import { canonicalHostname } from '../lib/net/target.ts';
import { CertificateAuthority, issueKeyAndCert, mtlsClientOptions } from '../lib/pki/index.ts';
import type { Decider, DecisionInput } from '../lib/policy/decider.ts';
import type { SpecObject } from '../lib/spec/index.ts';
import { DEFAULT_TUNNEL_LIMITS } from '../lib/tunnel/settings.ts';
import { dialBackend } from '../lib/tunnel/dial.ts';
import { FLAG, FRAME, STATUS_200, flood, frame, goawayCode, indexed, literal, literalIndexed, pingFrame, rawConnector, settingsFrame } from '../lib/tunnel/frames.testing.ts';
import type { Frame, RawPeer } from '../lib/tunnel/frames.testing.ts';
import { eventually, makeTestPki, roundTrip, specs, startBlackholeRelay, startEchoServer } from '../lib/tunnel/harness.testing.ts';
import type { KeyAndCert, TestPki, TestServer } from '../lib/tunnel/harness.testing.ts';
import { TUNNEL_ALPN, readTunnelRequest } from '../lib/tunnel/protocol.ts';
import { relay } from '../lib/tunnel/relay.ts';
import { serveTunnel } from '../lib/tunnel/session.ts';
import type { TunnelSessionOptions } from '../lib/tunnel/session.ts';
import { startAccessTier } from './index.ts';
import type { AccessTier, AccessTierOptions } from './index.ts';

const MiB = 1024 * 1024;
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

function standardObjects(echoPort: number): SpecObject[] {
  return [
    specs.accessTier('edge-1', CLUSTER, '127.0.0.1:8443'),
    specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
    specs.connector('dc2', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
    specs.service('kube', CLUSTER, { type: 'kubernetes', domain: 'kube.example.com', port: 443, backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    specs.service('raw', CLUSTER, { type: 'tcp', domain: 'raw.example.com', port: 5432, backend: { target: `127.0.0.1:${echoPort}` } }),
    specs.service('other', CLUSTER, { type: 'kubernetes', domain: 'other.example.com', port: 443, backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    specs.service('via', CLUSTER, { type: 'kubernetes', domain: 'via.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
    specs.service('via2', CLUSTER, { type: 'kubernetes', domain: 'via2.example.com', port: 443, connector: 'dc2', backend: { dnsOverride: `127.0.0.1:${echoPort}` } }, pki.caPem),
  ];
}

interface Tier {
  at: AccessTier;
  events: MemoryEventSink;
  config: StaticConfigSource;
  port: number;
  objects: SpecObject[];
}

async function startTier(t: TestContext | undefined, opts: { objects?: SpecObject[]; revoked?: string[]; options?: Partial<AccessTierOptions> } = {}): Promise<Tier> {
  const cert = await pki.issue('access-tier', { name: 'edge-1' });
  const objects = opts.objects ?? standardObjects(echo.port);
  const config = new StaticConfigSource(snapshotFromObjects(objects, { revokedSerials: opts.revoked ?? [] }));
  const events = new MemoryEventSink();
  const at = await startAccessTier({ name: 'edge-1', config, tls: cert, events, listen: { host: '127.0.0.1', port: 0 }, ...opts.options });
  const tier = { at, events, config, port: at.port(), objects };
  t?.after(async () => {
    at.destroy();
    await config.close();
  });
  return tier;
}

/** What a client sees of one connection: the handshake, the bytes it got back, how it ended. */
interface Seen {
  secure: boolean;
  resumed: boolean;
  tickets: number;
  bytes: Buffer;
  status?: number;
  reason?: string;
  error?: string;
  ended: 'end' | 'close' | 'timeout';
}

interface DialOptions {
  port: number;
  servername?: string;
  cert?: { certPem: string; keyPem: string } | null;
  /** Sent after the handshake; undefined sends nothing. */
  send?: string | Buffer;
  session?: Buffer;
  localAddress?: string;
  timeoutMs?: number;
  /** Keep the socket open after the first answer instead of waiting for the server to end it. */
  keep?: boolean;
  /** After a 200, wait for the connection to end too (by default a tunnel that is up settles at once). */
  untilEnd?: boolean;
  extra?: tls.ConnectionOptions;
  onSession?: (ticket: Buffer) => void;
}

/** Connects like a client proxy would and records everything it observes until the server hangs up (or the timeout). */
function dial(o: DialOptions): Promise<Seen & { socket: tls.TLSSocket }> {
  return new Promise((resolve) => {
    const cert = o.cert === null ? {} : { certPem: (o.cert ?? trust).certPem, keyPem: (o.cert ?? trust).keyPem };
    const socket = tls.connect({
      ...mtlsClientOptions({ caPem: pki.caPem, expectServerType: 'access-tier', ...cert }),
      host: '127.0.0.1',
      port: o.port,
      ...(o.servername !== undefined ? { servername: o.servername } : {}),
      ...(o.session !== undefined ? { session: o.session } : {}),
      ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}),
      ...o.extra,
      allowHalfOpen: true,
    } as tls.ConnectionOptions);
    const seen: Seen & { socket: tls.TLSSocket } = { secure: false, resumed: false, tickets: 0, bytes: Buffer.alloc(0), ended: 'timeout', socket };
    let done = false;
    const finish = (how: Seen['ended']): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      seen.ended = how;
      const head = parseConnectResponseHead(seen.bytes);
      if (head.state === 'done') {
        seen.status = head.status;
        if (head.reason !== undefined) seen.reason = head.reason;
      }
      if (!o.keep || how !== 'timeout') socket.destroy();
      resolve(seen);
    };
    const timer = setTimeout(() => finish('timeout'), o.timeoutMs ?? 5000);
    socket.on('secureConnect', () => {
      seen.secure = true;
      seen.resumed = socket.isSessionReused();
      if (o.send !== undefined) socket.write(o.send);
    });
    socket.on('session', (ticket: Buffer) => {
      seen.tickets++;
      o.onSession?.(ticket);
    });
    socket.on('data', (d: Buffer) => {
      seen.bytes = Buffer.concat([seen.bytes, d]);
      // A tunnel is up: nothing more to wait for. An error answer: wait for the access tier to hang up.
      const head = parseConnectResponseHead(seen.bytes);
      if (head.state === 'done' && (o.keep === true || (head.status === 200 && o.untilEnd !== true))) finish('timeout');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      seen.error ??= err.code ?? err.message;
    });
    socket.on('end', () => finish('end'));
    socket.on('close', () => finish('close'));
  });
}

const connectHead = (authority: string, extra = ''): string => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`;

/** Writes, ends and reads everything back on an established tunnel. */
async function echoes(socket: tls.TLSSocket, payload: string, rest: Buffer = Buffer.alloc(0)): Promise<void> {
  assert.equal((await roundTrip(socket, payload, rest)).toString(), payload);
}

/** A CONNECT that must be established; returns the socket with its bytes after the 200. */
async function established(o: DialOptions): Promise<{ socket: tls.TLSSocket; rest: Buffer }> {
  const seen = await dial({ ...o, keep: true });
  assert.equal(seen.status, 200, `expected 200, got ${String(seen.status)} ${seen.reason ?? ''} ${seen.error ?? ''}`);
  const head = parseConnectResponseHead(seen.bytes);
  assert.ok(head.state === 'done');
  seen.socket.removeAllListeners('data');
  seen.socket.removeAllListeners('end');
  seen.socket.removeAllListeners('close');
  return { socket: seen.socket, rest: seen.bytes.subarray(head.headLength) };
}

function printable(s: string): boolean {
  return /^[\x21-\x7e…]*$/.test(s);
}

/** `p`, or a rejection after `ms`; the timer never outlives the race (it would keep the test process alive). */
async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function mib(n: number): string {
  return `${(n / MiB).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------------------------

void describe('AT-01 an unauthenticated peer learns nothing about services', { timeout: 60_000 }, () => {
  let t: Tier;
  before(async () => {
    t = await startTier(undefined);
  });
  after(async () => {
    t.at.destroy();
    await t.config.close();
  });

  const snis: Array<string | undefined> = ['kube.example.com', 'raw.example.com', 'nope.example.com', undefined];
  const shape = (s: Seen): string => JSON.stringify({ secure: s.secure, tickets: s.tickets, bytes: s.bytes.length, status: s.status, reason: s.reason, ended: s.ended === 'timeout' ? 'timeout' : 'closed' });

  void test('AT-01 without a client certificate every SNI (CHAIN service, TCP service, unknown, none) sees the same thing: no byte, no session ticket, the connection ends', async () => {
    const seen = [];
    for (const sni of snis) seen.push(await dial({ port: t.port, cert: null, ...(sni !== undefined ? { servername: sni } : {}), send: connectHead('kube.example.com:443') }));
    for (const s of seen) {
      assert.equal(s.bytes.length, 0, 'not one byte of application data');
      assert.equal(s.tickets, 0, 'no resumption material for a stranger');
      assert.notEqual(s.ended, 'timeout');
    }
    assert.equal(new Set(seen.map(shape)).size, 1, seen.map(shape).join('\n'));
    const events = t.events.events.filter((e) => e.reasons.includes('cert-missing'));
    assert.equal(events.length, snis.length);
    assert.ok(events.every((e) => e.service === undefined && e.decision === 'deny'));
  });

  void test('AT-01 a certificate from another CA: the same for every SNI, nothing said', async () => {
    const impostor = await CertificateAuthority.create({ commonName: 'causeway test CA' });
    const fake = await issueKeyAndCert(impostor, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    const seen = [];
    for (const sni of snis) seen.push(await dial({ port: t.port, cert: fake, ...(sni !== undefined ? { servername: sni } : {}), send: connectHead('kube.example.com:443') }));
    assert.ok(seen.every((s) => s.bytes.length === 0 && s.tickets === 0));
    assert.equal(new Set(seen.map(shape)).size, 1, seen.map(shape).join('\n'));
  });

  void test('AT-01 a certificate of our CA that we refuse (a device certificate) gets the same answer for a TCP service, a CHAIN service and an unknown name', async () => {
    const device = await pki.issue('device', { device: 'laptop-1' });
    const seen = [];
    for (const sni of snis) seen.push(await dial({ port: t.port, cert: device, ...(sni !== undefined ? { servername: sni } : {}), send: connectHead('kube.example.com:443') }));
    assert.ok(seen.every((s) => s.status === 403 && s.reason === 'cert-wrong-type'), seen.map(shape).join('\n'));
    assert.equal(new Set(seen.map(shape)).size, 1, seen.map(shape).join('\n'));
  });

  void test('AT-01 the certificate the access tier shows names no service', async () => {
    const seen = await dial({ port: t.port, cert: null, servername: 'kube.example.com' });
    const peer = seen.socket.getPeerX509Certificate();
    const names = `${peer?.subject ?? ''} ${peer?.subjectAltName ?? ''}`;
    for (const domain of ['kube', 'raw', 'other', 'via', 'example.com']) assert.ok(!names.includes(domain), names);
  });
});

// ---------------------------------------------------------------------------------------------

void describe('AT-05 exactly one service\'s policy applies to an SNI', { timeout: 60_000 }, () => {
  /** A decider that allows and remembers every call. */
  function recordingDecider(): { decider: Decider; calls: DecisionInput[] } {
    const calls: DecisionInput[] = [];
    return { calls, decider: { decide: (input) => (calls.push(input), { allow: true, reasons: ['ok'], mode: 'none' }) } };
  }

  void test('AT-05 SNI spellings of one service reach that service\'s policy once per connection; missing, doubled-dot and IP SNIs reach no policy', async (t) => {
    const rec = recordingDecider();
    const tier = await startTier(t, { options: { decider: rec.decider } });
    for (const sni of ['kube.example.com', 'KUBE.EXAMPLE.COM', 'Kube.Example.Com.']) {
      const before = rec.calls.length;
      const { socket } = await established({ port: tier.port, servername: sni, send: connectHead('kube.example.com:443') });
      socket.destroy();
      assert.equal(rec.calls.length - before, 1, sni);
      assert.equal(rec.calls.at(-1)?.service.metadata.name, 'kube');
    }
    for (const sni of [undefined, 'kube.example.com..', '.kube.example.com', '127.0.0.1', 'kube.example.com\u212a']) {
      const before = rec.calls.length;
      const seen = await dial({ port: tier.port, ...(sni !== undefined ? { servername: sni } : {}), send: connectHead('kube.example.com:443') });
      assert.equal(seen.status, 403, `${String(sni)}: ${String(seen.status)}`);
      assert.ok(seen.reason === 'bad-sni' || seen.reason === 'unknown-service', String(seen.reason));
      assert.equal(rec.calls.length, before, `${String(sni)} reached a policy`);
    }
  });

  void test('AT-05 two services whose domains are one name in different spellings serve neither: 502 service-misconfigured, no policy asked', async (t) => {
    const rec = recordingDecider();
    const objects = [
      specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'),
      specs.service('dup-a', CLUSTER, { type: 'kubernetes', domain: 'Dup.Example.com', port: 443, backend: { dnsOverride: echo.address } }, pki.caPem),
      specs.service('dup-b', CLUSTER, { type: 'kubernetes', domain: 'dup.example.com.', port: 443, backend: { dnsOverride: echo.address } }, pki.caPem),
    ];
    const tier = await startTier(t, { objects, options: { decider: rec.decider } });
    for (const sni of ['dup.example.com', 'DUP.example.COM.']) {
      const seen = await dial({ port: tier.port, servername: sni, send: connectHead('dup.example.com:443') });
      assert.equal(seen.status, 502);
      assert.equal(seen.reason, 'service-misconfigured');
    }
    assert.equal(rec.calls.length, 0);
  });

  void test('AT-05 a 253-character domain is reached with its trailing dot (254-byte SNI); one byte more is refused', async (t) => {
    const label = (c: string, n: number): string => c.repeat(n);
    const domain = `${label('a', 63)}.${label('b', 63)}.${label('c', 63)}.${label('d', 61)}`;
    assert.equal(domain.length, 253);
    const objects = [specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'), specs.service('long', CLUSTER, { type: 'kubernetes', domain, port: 443, backend: { dnsOverride: echo.address } }, pki.caPem)];
    const tier = await startTier(t, { objects });
    const { socket, rest } = await established({ port: tier.port, servername: `${domain}.`, send: connectHead(`${domain}:443`) });
    await echoes(socket, 'long name', rest);
    const seen = await dial({ port: tier.port, servername: `${domain}.x`, send: connectHead(`${domain}:443`) });
    assert.notEqual(seen.status, 200);
  });
});

// ---------------------------------------------------------------------------------------------

/** The ClientHello a real client sends, with a 32-byte SNI we can find and replace. */
const SNI_PLACEHOLDER = 'sni-placeholder-0123456789abcdef';

async function captureClientHello(): Promise<{ hello: Buffer; sniOffset: number }> {
  const server = net.createServer();
  const got = new Promise<Buffer>((resolve) => server.once('connection', (s: net.Socket) => s.once('data', (d: Buffer) => {
    resolve(d);
    s.destroy();
  })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const c = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, certPem: trust.certPem, keyPem: trust.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername: SNI_PLACEHOLDER, ALPNProtocols: ['http/1.1', TUNNEL_ALPN] });
  c.on('error', () => undefined);
  const hello = await got;
  c.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  return { hello, sniOffset: hello.indexOf(SNI_PLACEHOLDER) };
}

/** Sends raw bytes and waits for the server to close (or `waitMs`); never throws. */
function sendRaw(port: number, bytes: Buffer, waitMs: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    const timer = setTimeout(() => s.destroy(), waitMs);
    s.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    s.on('data', () => undefined);
    s.write(bytes);
  });
}

void describe('AT-07 hostile handshakes and heads cost their own connection only (fast-check)', { timeout: 180_000 }, () => {
  let tier: Tier;
  let held: { socket: tls.TLSSocket; rest: Buffer };
  before(async () => {
    tier = await startTier(undefined, { options: { limits: { handshakeTimeoutMs: 300, headerTimeoutMs: 300, lingerMs: 200 } } });
    // A connection established before the attacks, kept through them.
    held = await established({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443') });
  });
  after(async () => {
    held.socket.destroy();
    tier.at.destroy();
    await tier.config.close();
  });

  async function stillServing(): Promise<void> {
    const { socket, rest } = await established({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443') });
    await echoes(socket, 'a valid connection after the attack', rest);
  }

  void test('AT-07 mutated ClientHellos (flipped bytes, truncations, random SNI bytes, random records) close only their connections', async () => {
    const { hello, sniOffset } = await captureClientHello();
    assert.ok(sniOffset > 0, 'found the SNI in the ClientHello');
    const mutation = fc.oneof(
      fc.record({
        flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 12 }),
        sni: fc.option(fc.uint8Array({ minLength: SNI_PLACEHOLDER.length, maxLength: SNI_PLACEHOLDER.length }), { nil: undefined }),
        cut: fc.option(fc.nat(), { nil: undefined }),
      }).map(({ flips, sni, cut }) => {
        const b = Buffer.from(hello);
        if (sni !== undefined) Buffer.from(sni).copy(b, sniOffset);
        for (const [pos, value] of flips) b[pos % b.length] = value;
        return cut === undefined ? b : b.subarray(0, cut % b.length);
      }),
      // A TLS record header of any type and length followed by junk.
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ maxLength: 512 })).map(([type, len, body]) => {
        const head = Buffer.from([type, 3, 1, (len >> 8) & 0xff, len & 0xff]);
        return Buffer.concat([head, Buffer.from(body)]);
      }),
      fc.uint8Array({ minLength: 1, maxLength: 600 }).map((b) => Buffer.from(b)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 16, maxLength: 16 }), async (batch) => {
        await Promise.all(batch.map((bytes) => sendRaw(tier.port, bytes, 700)));
      }),
      { numRuns: 10 },
    );
    await eventually(() => (tier.at.stats().openSockets === 1 ? true : undefined), 5000, 'only the held connection left open');
    await echoes(held.socket, 'the held connection still works', held.rest);
    await stillServing();
  });

  void test('AT-07 hostile SNI strings in real handshakes: refused or served as their service, recorded printable, never a crash', async () => {
    const known = new Set(['kube.example.com', 'raw.example.com', 'other.example.com', 'via.example.com', 'via2.example.com']);
    const sni = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.string({ unit: 'grapheme', maxLength: 40 }),
      fc.stringMatching(/^[A-Za-z0-9._-]{1,70}$/),
      fc.constantFrom('kube.example.com', 'KUBE.example.com.', 'kube.example.com..', 'xn--kube-9ja.example.com', '*.example.com', 'kube.example.com\u0000.evil', '../../etc/passwd', '%6bube.example.com', 'kube\u3002example\u3002com'),
    );
    await fc.assert(
      fc.asyncProperty(sni, async (name) => {
        let seen: Seen;
        try {
          seen = await dial({ port: tier.port, servername: name, send: connectHead('kube.example.com:443'), timeoutMs: 3000 });
        } catch {
          return; // the client library refused to send this name
        }
        // Node hands the name to OpenSSL as a C string: what goes on the wire ends at the first NUL.
        const wire = name.split('\u0000')[0] ?? '';
        if (seen.status === 200) assert.ok(known.has(canonicalHostname(wire) ?? ''), `served ${JSON.stringify(name)}`);
        else assert.notEqual(seen.ended, 'timeout', `no answer for ${JSON.stringify(name)}`);
      }),
      { numRuns: 120 },
    );
    for (const e of tier.events.events) if (e.sni !== undefined) assert.ok(printable(e.sni), `recorded SNI ${JSON.stringify(e.sni)}`);
    await stillServing();
  });

  void test('AT-07 hostile ALPN lists are refused at the handshake or served as a client; nothing else', async () => {
    const alpn = fc.array(fc.oneof(fc.constantFrom('h2', 'http/1.1', TUNNEL_ALPN, 'causeway-tunnel/2', 'CAUSEWAY-TUNNEL/1', 'x'.repeat(255)), fc.stringMatching(/^[\x21-\x7e]{1,40}$/)), { minLength: 1, maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(alpn, async (protocols) => {
        let seen: Seen;
        try {
          seen = await dial({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443'), extra: { ALPNProtocols: protocols }, timeoutMs: 3000 });
        } catch {
          return;
        }
        const offered = protocols.includes(TUNNEL_ALPN) || protocols.includes('http/1.1');
        if (!offered) assert.equal(seen.bytes.length, 0, `served ${JSON.stringify(protocols)}`);
        // A trust certificate offering the tunnel protocol is a refused connector: no HTTP answer either.
        if (seen.status !== undefined) assert.ok(protocols.includes('http/1.1') && seen.status === 200, `${JSON.stringify(protocols)} answered ${seen.status}`);
      }),
      { numRuns: 60 },
    );
    await stillServing();
  });

  void test('AT-07 X-03 random CONNECT heads inside TLS get an error status or a tunnel to the service, never a hang or a crash', async () => {
    const head = fc.oneof(
      fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
      fc
        .tuple(
          fc.constantFrom('CONNECT ', 'GET ', 'connect ', 'CONNECT  ', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', ''),
          fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('kube.example.com:443', 'KUBE.example.com.:443', 'other.example.com:443', '127.0.0.1:443', `127.0.0.1:${echo.port}`, '[::1]:443', 'kube.example.com:0443')),
          fc.constantFrom(' HTTP/1.1\r\n', ' HTTP/1.0\r\n', ' HTTP/1.1\n', ' HTTP/2\r\n', '\r\n'),
          fc.array(fc.constantFrom('Host: kube.example.com:443\r\n', 'Content-Length: 0\r\n', 'Transfer-Encoding: chunked\r\n', 'X: \u0000\r\n', ' folded\r\n', 'X-Forwarded-For: 10.0.0.1\r\n', `X-Big: ${'b'.repeat(3000)}\r\n`), { maxLength: 5 }),
          fc.constantFrom('\r\n', '', '\n', '\r\n\r\nsmuggled'),
        )
        .map(([m, a, v, hs, end]) => Buffer.from(`${m}${a}${v}${hs.join('')}${end}`, 'latin1')),
    );
    // Ten heads at a time: an incomplete one waits for the header deadline.
    await fc.assert(
      fc.asyncProperty(fc.array(head, { minLength: 10, maxLength: 10 }), async (batch) => {
        await Promise.all(
          batch.map(async (bytes) => {
            const seen = await dial({ port: tier.port, servername: 'kube.example.com', send: bytes, timeoutMs: 3000 });
            if (seen.status === 200) return;
            if (seen.status !== undefined) assert.ok(seen.status >= 400 && seen.status <= 499, `status ${seen.status} for ${JSON.stringify(bytes.toString('latin1'))}`);
            else assert.equal(seen.bytes.length, 0, `an answer that is not HTTP for ${JSON.stringify(bytes.toString('latin1'))}`);
            assert.notEqual(seen.ended, 'timeout', `no end for ${JSON.stringify(bytes.toString('latin1'))}`);
          }),
        );
      }),
      { numRuns: 15 },
    );
    await stillServing();
  });
});

// ---------------------------------------------------------------------------------------------

void describe('AT-09 and AT-10 smuggling and oversized heads: refused, closed, nothing reaches a backend', { timeout: 120_000 }, () => {
  let tier: Tier;
  let backend: TestServer;
  before(async () => {
    backend = await startEchoServer();
    tier = await startTier(undefined, { objects: [specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'), specs.service('kube', CLUSTER, { type: 'kubernetes', domain: 'kube.example.com', port: 443, backend: { dnsOverride: backend.address } }, pki.caPem)], options: { limits: { lingerMs: 300 } } });
  });
  after(async () => {
    tier.at.destroy();
    await tier.config.close();
    await backend.close();
  });

  const smuggled = 'GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n';
  for (const [name, head, status] of [
    ['AT-09 CL.TE: Content-Length and Transfer-Encoding together', `CONNECT kube.example.com:443 HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`, 400],
    ['AT-09 TE.CL: Transfer-Encoding then Content-Length', `CONNECT kube.example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n${smuggled}`, 400],
    ['AT-09 duplicate Content-Length', `CONNECT kube.example.com:443 HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n${smuggled}`, 400],
    ['AT-09 a chunk extension', `CONNECT kube.example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n${smuggled}`, 400],
    ['AT-09 Transfer-Encoding hidden by obs-fold', `CONNECT kube.example.com:443 HTTP/1.1\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n${smuggled}`, 400],
    ['AT-09 a space before the colon', `CONNECT kube.example.com:443 HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n${smuggled}`, 400],
    ['AT-09 bare LF line ends', `CONNECT kube.example.com:443 HTTP/1.1\nHost: kube.example.com:443\n\n${smuggled}`, 400],
    ['AT-09 a bare CR inside a header', `CONNECT kube.example.com:443 HTTP/1.1\r\nX-A: 1\rTransfer-Encoding: chunked\r\n\r\n${smuggled}`, 400],
    ['AT-09 a NUL in a header value', `CONNECT kube.example.com:443 HTTP/1.1\r\nX-A: a\u0000b\r\n\r\n${smuggled}`, 400],
    ['AT-10 a 64 KiB header', `CONNECT kube.example.com:443 HTTP/1.1\r\nX-Pad: ${'p'.repeat(64 * 1024)}\r\n\r\n${smuggled}`, 431],
    ['AT-10 200 header lines', `CONNECT kube.example.com:443 HTTP/1.1\r\n${Array.from({ length: 200 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n${smuggled}`, 431],
  ] as const) {
    void test(`${name}: ${status}, the access tier closes the socket although the client keeps it open, and no byte reaches the backend`, async () => {
      const before = backend.accepted;
      const seen = await dial({ port: tier.port, servername: 'kube.example.com', send: head, timeoutMs: 5000 });
      assert.equal(seen.status, status, seen.bytes.toString('latin1').split('\r\n')[0]);
      assert.notEqual(seen.ended, 'timeout', 'the access tier closed the connection');
      assert.equal(backend.accepted, before, 'nothing was dialled');
    });
  }

  void test('AT-10 1,000 oversized heads: memory stays about flat (measured, loosely bounded)', async (t) => {
    const gc = (globalThis as { gc?: () => void }).gc;
    const head = Buffer.from(`CONNECT kube.example.com:443 HTTP/1.1\r\nX-Pad: ${'p'.repeat(16 * 1024)}\r\n\r\n`);
    // Warm up, so the first measurement is not of cold code and empty pools.
    await Promise.all(Array.from({ length: 20 }, () => dial({ port: tier.port, servername: 'kube.example.com', send: head })));
    gc?.();
    const before = process.memoryUsage();
    for (let i = 0; i < 1000; i += 10) {
      const seen = await Promise.all(Array.from({ length: 10 }, () => dial({ port: tier.port, servername: 'kube.example.com', send: head })));
      for (const s of seen) assert.equal(s.status, 431);
    }
    gc?.();
    const afterAll = process.memoryUsage();
    t.diagnostic(`1,000 oversized heads (16 KiB each): RSS ${mib(afterAll.rss - before.rss)}, heap ${mib(afterAll.heapUsed - before.heapUsed)}, external ${mib(afterAll.external - before.external)} (client and access tier in this process${gc === undefined ? '; run with --expose-gc for steadier numbers' : ''})`);
    assert.ok(afterAll.heapUsed - before.heapUsed < 64 * MiB, `heap grew ${mib(afterAll.heapUsed - before.heapUsed)}`);
    await eventually(() => (tier.at.stats().openSockets === 0 ? true : undefined), 5000, 'every socket closed');
  });
});

// ---------------------------------------------------------------------------------------------

void describe('AT-11 slow and withheld handshakes, per-source caps', { timeout: 60_000 }, () => {
  void test('AT-11 a CONNECT head dribbled one byte at a time is cut at the header deadline (an absolute deadline, not an idle one): 408 arrives before the head is complete', async (t) => {
    const tier = await startTier(t, { options: { limits: { headerTimeoutMs: 400 } } });
    const seen = await new Promise<{ status: number | undefined; sentBytes: number; total: number }>((resolve) => {
      const head = connectHead('kube.example.com:443');
      const socket = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, certPem: trust.certPem, keyPem: trust.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port: tier.port, servername: 'kube.example.com' });
      let sent = 0;
      let bytes = Buffer.alloc(0);
      let timer: NodeJS.Timeout | undefined;
      socket.on('error', () => undefined);
      socket.on('secureConnect', () => {
        timer = setInterval(() => {
          if (sent < head.length && !socket.destroyed) socket.write(head[sent++] ?? '');
        }, 40);
      });
      socket.on('data', (d: Buffer) => (bytes = Buffer.concat([bytes, d])));
      socket.on('close', () => {
        clearInterval(timer);
        const parsed = parseConnectResponseHead(bytes);
        resolve({ status: parsed.state === 'done' ? parsed.status : undefined, sentBytes: sent, total: head.length });
      });
    });
    assert.equal(seen.status, 408);
    assert.ok(seen.sentBytes < seen.total, `the head was cut after ${seen.sentBytes} of ${seen.total} bytes`);
    await tier.events.waitFor((e) => e.reasons.includes('header-timeout'));
  });

  void test('AT-11 a TLS client that sends its ClientHello and then withholds its certificate is closed by the handshake timeout and recorded', async (t) => {
    const tier = await startTier(t, { options: { limits: { handshakeTimeoutMs: 300 } } });
    // A TCP relay that forwards the client's first flight (the ClientHello) and swallows everything after it.
    let forwarded = 0;
    const relayServer = net.createServer((inbound) => {
      const out = net.connect({ host: '127.0.0.1', port: tier.port });
      inbound.on('error', () => undefined);
      out.on('error', () => undefined);
      inbound.on('data', (d: Buffer) => {
        if (forwarded++ === 0) out.write(d);
      });
      out.on('data', (d: Buffer) => inbound.write(d));
      out.on('close', () => inbound.destroy());
      inbound.on('close', () => out.destroy());
    });
    await new Promise<void>((r) => relayServer.listen(0, '127.0.0.1', r));
    t.after(() => new Promise<void>((r) => relayServer.close(() => r())));
    const started = Date.now();
    const seen = await dial({ port: (relayServer.address() as AddressInfo).port, servername: 'kube.example.com', send: connectHead('kube.example.com:443'), timeoutMs: 5000 });
    assert.notEqual(seen.ended, 'timeout', 'the access tier gave up on the handshake');
    assert.equal(seen.status, undefined);
    t.diagnostic(`closed ${Date.now() - started} ms after the ClientHello (handshake timeout 300 ms); the client ${seen.secure ? 'finished its side' : 'never finished its side'}`);
    await tier.events.waitFor((e) => e.reasons.includes('tls-handshake-timeout'));
    await eventually(() => (tier.at.stats().openSockets === 0 ? true : undefined), 2000, 'the socket released');
  });

  void test('AT-11 the per-source cap refuses a fourth connection from 127.0.0.1 while 127.0.0.2 still gets in', async (t) => {
    const tier = await startTier(t, { options: { limits: { maxConnectionsPerSource: 3 } } });
    const held = Array.from({ length: 3 }, () => net.connect({ host: '127.0.0.1', port: tier.port, localAddress: '127.0.0.1' }));
    t.after(() => {
      for (const s of held) s.destroy();
    });
    for (const s of held) s.on('error', () => undefined);
    await Promise.all(held.map((s) => new Promise((r) => s.once('connect', r))));
    await eventually(() => (tier.at.stats().openSockets === 3 ? true : undefined), 2000, 'three held sockets');
    const refused = await dial({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443'), localAddress: '127.0.0.1' });
    assert.equal(refused.status, undefined);
    assert.notEqual(refused.ended, 'timeout');
    let other: { socket: tls.TLSSocket; rest: Buffer };
    try {
      other = await established({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443'), localAddress: '127.0.0.2' });
    } catch (err) {
      if (/EADDRNOTAVAIL|EINVAL/.test(String(err))) {
        t.skip('this machine cannot bind 127.0.0.2');
        return;
      }
      throw err;
    }
    await echoes(other.socket, 'from another source', other.rest);
    const event = await tier.events.waitFor((e) => e.decision === 'allow');
    assert.match(event.source, /^127\.0\.0\.2:/);
    assert.equal(tier.at.stats().refusedBySourceCap, 1);
  });
});

// ---------------------------------------------------------------------------------------------
// A well-behaved connector built from the shared tunnel pieces, relaying to the echo backend.

interface FakeConnector {
  session: ServerHttp2Session | undefined;
  socket: tls.TLSSocket;
  closed: Promise<void>;
}

function fakeConnector(port: number, cert: { certPem: string; keyPem: string }, answer: (stream: ServerHttp2Stream, authority: string) => void = forwardToEcho, session: TunnelSessionOptions = {}): Promise<FakeConnector> {
  return new Promise((resolve) => {
    const socket = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, certPem: cert.certPem, keyPem: cert.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port, ALPNProtocols: [TUNNEL_ALPN] });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    const fake: FakeConnector = { session: undefined, socket, closed };
    socket.once('secureConnect', () => {
      const served = serveTunnel(socket, session);
      served.session.on('error', () => undefined);
      fake.session = served.session;
      served.session.on('stream', (stream, headers) => {
        stream.on('error', () => undefined);
        const req = readTunnelRequest(headers);
        answer(stream, req.ok ? `${req.target.host}:${req.target.port}` : '');
      });
      resolve(fake);
    });
    socket.once('close', () => resolve(fake));
  });
}

function forwardToEcho(stream: ServerHttp2Stream, authority: string): void {
  const [host, port] = [authority.slice(0, authority.lastIndexOf(':')), Number(authority.slice(authority.lastIndexOf(':') + 1))];
  void dialBackend({ host, port, kind: 'ipv4' }).then((d) => {
    if (!d.ok) {
      stream.close();
      return;
    }
    stream.respond({ ':status': 200 });
    void relay(stream, d.socket).done;
  });
}

interface VictimStats {
  rss: number;
  heapUsed: number;
  external: number;
  cpuMs: number;
  stats: { openSockets: number; tunnels: Array<{ connector: string; activeStreams: number }> };
  events: AccessEvent[];
}

interface VictimTier {
  port: number;
  child: ChildProcess;
  stats(): Promise<VictimStats>;
}

async function startVictimTier(objects: SpecObject[], limits: Record<string, unknown> = {}): Promise<VictimTier> {
  const script = fileURLToPath(new URL('./threats-child.testing.ts', import.meta.url));
  const tlsMaterial = await pki.issue('access-tier', { name: 'edge-1' });
  const child = fork(script, [JSON.stringify({ tls: tlsMaterial, objects, limits })], { execArgv: ['--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`the access tier process exited (${String(code)})`)));
  });
  return {
    port,
    child,
    stats: () =>
      new Promise<VictimStats>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the access tier process did not answer: it is gone or stuck')), 10_000);
        child.once('message', (m) => {
          clearTimeout(timer);
          resolve(m as VictimStats);
        });
        child.send('stats');
      }),
  };
}

void describe('AT-12 HTTP/2 abuse from a malicious connector (valid connector certificate) against an access tier in its own process', { timeout: 180_000 }, () => {
  let victim: VictimTier;
  let good: FakeConnector;
  let dc1: KeyAndCert;
  before(async () => {
    victim = await startVictimTier(standardObjects(echo.port), { waitForTunnelMs: 100, streamOpenTimeoutMs: 3000 });
    dc1 = await pki.issue('connector', { name: 'dc1' });
    good = await fakeConnector(victim.port, await pki.issue('connector', { name: 'dc2' }));
  });
  after(() => {
    good.socket.destroy();
    if (victim.child.connected) victim.child.disconnect();
    victim.child.kill();
  });

  /** The other connector's service and a direct service still work, and the victim still answers. */
  async function othersStillWork(): Promise<VictimStats> {
    const a = await established({ port: victim.port, servername: 'via2.example.com', send: connectHead('via2.example.com:443') });
    await echoes(a.socket, 'through the other connector', a.rest);
    const b = await established({ port: victim.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443') });
    await echoes(b.socket, 'direct', b.rest);
    return victim.stats();
  }

  /** A user connection through the malicious connector; resolves with the stream id it opened. */
  async function userThrough(peer: RawPeer): Promise<{ streamId: number; user: Promise<Seen & { socket: tls.TLSSocket }> }> {
    const opened = new Promise<number>((resolve) => peer.onFrame((f) => (f.type === FRAME.HEADERS ? resolve(f.streamId) : undefined)));
    const user = dial({ port: victim.port, servername: 'via.example.com', send: connectHead('via.example.com:443'), timeoutMs: 8000, untilEnd: true });
    return { streamId: await withTimeout(opened, 5000, 'a stream from the access tier'), user };
  }

  async function registered(): Promise<void> {
    await eventually(async () => ((await victim.stats()).stats.tunnels.some((x) => x.connector === 'dc1') ? true : undefined), 5000, 'dc1 registered');
  }

  void test('AT-12 a PING flood from a connector that never reads: the tunnel is closed, the access tier\'s memory stays bounded, the other connector keeps working', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem, { read: false });
    await registered();
    const s0 = await victim.stats();
    const sent = await flood(peer.socket, (i) => pingFrame(i), 1_000_000, 1000);
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    const s1 = await othersStillWork();
    assert.ok(s1.rss - s0.rss < 200 * MiB, `RSS grew by ${mib(s1.rss - s0.rss)}`);
    const ended = s1.events.filter((e) => e.connector === 'dc1' && e.decision === 'allow').at(-1);
    assert.match(ended?.closeReason ?? '', /error|ERR_HTTP2/);
    console.log(`# PING flood: ${sent} PINGs written, victim RSS +${mib(s1.rss - s0.rss)}, CPU ${Math.round(s1.cpuMs - s0.cpuMs)} ms, tunnel closed with ${ended?.closeReason ?? '?'}`);
  });

  void test('AT-12 a SETTINGS flood closes the tunnel; the other connector keeps working', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem);
    await registered();
    const s0 = await victim.stats();
    await flood(peer.socket, () => settingsFrame([[0x4, 65_535]]), 200_000, 500);
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    const s1 = await othersStillWork();
    console.log(`# SETTINGS flood: GOAWAY ${peer.goaway() === undefined ? 'none' : String(goawayCode(peer.goaway() as Frame))}, victim RSS +${mib(s1.rss - s0.rss)}, CPU ${Math.round(s1.cpuMs - s0.cpuMs)} ms`);
  });

  void test('AT-12 an HPACK bomb in a response (8 MB decoded): the user gets 502, the access tier survives, the other connector keeps working', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem);
    await registered();
    const { streamId, user } = await userThrough(peer);
    const block = Buffer.concat([STATUS_200, literalIndexed('x-bomb', 'b'.repeat(4000)), ...Array.from({ length: 2000 }, () => indexed(62))]);
    const pieces: Buffer[] = [];
    for (let i = 0; i < block.length; i += 16_384) pieces.push(block.subarray(i, i + 16_384));
    pieces.forEach((p, i) => peer.socket.write(frame(i === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, i === pieces.length - 1 ? FLAG.END_HEADERS : 0, streamId, p)));
    const seen = await user;
    assert.equal(seen.status, 502, `the user got ${String(seen.status)}`);
    await othersStillWork();
    peer.socket.destroy();
  });

  void test('AT-12 CONTINUATION frames without END_HEADERS in a response: the tunnel is closed, the user gets an answer, the other connector keeps working', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem);
    await registered();
    const s0 = await victim.stats();
    const { streamId, user } = await userThrough(peer);
    peer.socket.write(frame(FRAME.HEADERS, 0, streamId, STATUS_200));
    await flood(peer.socket, () => frame(FRAME.CONTINUATION, 0, streamId, literal('x-junk', 'j'.repeat(16_000))), 5000, 20);
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    const seen = await user;
    assert.ok(seen.status === 502 || seen.status === undefined, String(seen.status));
    assert.notEqual(seen.ended, 'timeout');
    const s1 = await othersStillWork();
    assert.ok(s1.rss - s0.rss < 128 * MiB);
  });

  void test('AT-12 a connector that answers 200 and then sends DATA for a stream it was never given: the tunnel is closed (PROTOCOL_ERROR) and that user\'s connection ends', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem);
    await registered();
    const { streamId, user } = await userThrough(peer);
    peer.socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, streamId, STATUS_200));
    peer.socket.write(frame(FRAME.DATA, 0, streamId + 2, Buffer.from('bytes for a stream that does not exist')));
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    assert.equal(goawayCode(peer.goaway() as Frame), 1);
    const seen = await user;
    assert.notEqual(seen.ended, 'timeout', 'the user connection ended with its tunnel');
    assert.ok(!seen.bytes.toString('latin1').includes('does not exist'), 'nothing of the stray DATA reached the user');
    await othersStillWork();
  });

  void test('AT-12 a PUSH_PROMISE (push is disabled) closes the tunnel; the other connector keeps working', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem);
    await registered();
    const { streamId, user } = await userThrough(peer);
    const promised = Buffer.alloc(4);
    promised.writeUInt32BE(2);
    peer.socket.write(frame(FRAME.PUSH_PROMISE, FLAG.END_HEADERS, streamId, Buffer.concat([promised, STATUS_200])));
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    assert.notEqual((await user).ended, 'timeout');
    await othersStillWork();
  });

  void test('AT-12 a connector that allows zero concurrent streams: its users get 503 connector-busy at once instead of waiting', async () => {
    const peer = await rawConnector(victim.port, dc1, pki.caPem);
    peer.socket.write(settingsFrame([[0x3, 0]]));
    await registered();
    await new Promise((r) => setTimeout(r, 200));
    const seen = await dial({ port: victim.port, servername: 'via.example.com', send: connectHead('via.example.com:443') });
    assert.equal(seen.status, 503);
    assert.equal(seen.reason, 'connector-busy');
    peer.socket.destroy();
    await othersStillWork();
  });
});

// ---------------------------------------------------------------------------------------------

void describe('AT-13 and AT-14 the recorded source is the TCP peer, whatever the client claims', { timeout: 60_000 }, () => {
  void test('AT-13 a PROXY protocol v2 header before the handshake is refused; a PROXY v1 line as the CONNECT head is refused (4xx); neither address is recorded', async (t) => {
    const tier = await startTier(t);
    const v2 = Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a', 'hex'), Buffer.from([0x21, 0x11, 0x00, 0x0c]), Buffer.from([203, 0, 113, 7, 127, 0, 0, 1]), Buffer.from([0xc3, 0x50, 0x20, 0xfb])]);
    await sendRaw(tier.port, v2, 2000);
    const seen = await dial({ port: tier.port, servername: 'kube.example.com', send: 'PROXY TCP4 203.0.113.7 127.0.0.1 51000 8443\r\nCONNECT kube.example.com:443 HTTP/1.1\r\n\r\n' });
    assert.ok(seen.status === 400 || seen.status === 405, String(seen.status));
    await eventually(() => (tier.events.events.length >= 2 ? true : undefined), 2000, 'two events');
    for (const e of tier.events.events) {
      assert.match(e.source, /^127\.0\.0\.1:\d+$/);
      assert.ok(!JSON.stringify(e).includes('203.0.113.7'), JSON.stringify(e));
    }
  });

  void test('AT-14 X-Forwarded-For, Forwarded, X-Real-IP and friends inside the CONNECT change neither the decision, nor its input, nor the recorded source', async (t) => {
    const inputs: DecisionInput[] = [];
    const decider: Decider = { decide: (input) => (inputs.push(input), { allow: true, reasons: ['ok'], mode: 'none' }) };
    const tier = await startTier(t, { options: { decider } });
    const plain = await established({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443') });
    plain.socket.destroy();
    const forged = 'X-Forwarded-For: 10.1.2.3, 203.0.113.7\r\nForwarded: for=203.0.113.7;proto=https;by=10.0.0.1\r\nX-Real-IP: 203.0.113.7\r\nTrue-Client-IP: 203.0.113.7\r\nCF-Connecting-IP: 203.0.113.7\r\nX-Forwarded-Host: other.example.com:443\r\nX-Causeway-User: root\r\n';
    const spoofed = await established({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443', forged) });
    await echoes(spoofed.socket, 'the headers are not forwarded either', spoofed.rest);
    assert.equal(inputs.length, 2);
    const strip = (i: DecisionInput): string => JSON.stringify({ service: i.service.metadata.name, user: i.identity.user, device: i.identity.device, target: i.target });
    assert.equal(strip(inputs[0]), strip(inputs[1]));
    assert.ok(!JSON.stringify(inputs[1], (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)).includes('203.0.113.7'));
    const events = await eventually(() => {
      const allowed = tier.events.events.filter((e) => e.decision === 'allow');
      return allowed.length === 2 ? allowed : undefined;
    }, 5000, 'two allow events');
    for (const e of events) {
      assert.match(e.source, /^127\.0\.0\.1:\d+$/);
      assert.ok(!JSON.stringify(e).includes('203.0.113.7') && !JSON.stringify(e).includes('root'), JSON.stringify(e));
      assert.equal(e.target, 'kube.example.com:443');
    }
  });
});

// ---------------------------------------------------------------------------------------------

void describe('TLS versions and session resumption', { timeout: 60_000 }, () => {
  void test('TLS 1.2 is refused at the handshake (so there is no renegotiation to abuse) and recorded', async (t) => {
    const tier = await startTier(t);
    const seen = await dial({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443'), extra: { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } });
    assert.equal(seen.secure, false);
    assert.match(seen.error ?? '', /PROTOCOL_VERSION|VERSION/);
    await tier.events.waitFor((e) => e.decision === 'deny' && e.reasons.some((r) => r.startsWith('tls-')));
  });

  void test('CA-06 a trust certificate revoked after its session ticket was issued cannot resume into access: resumed, then 403 cert-revoked', async (t) => {
    const bob = await pki.issue('trust', { user: 'bob', device: 'laptop-2' });
    const tier = await startTier(t);
    let ticket: Buffer | undefined;
    const first = await established({ port: tier.port, servername: 'kube.example.com', cert: bob, send: connectHead('kube.example.com:443'), onSession: (s) => (ticket = s) });
    await echoes(first.socket, 'before the revocation', first.rest);
    assert.ok(ticket !== undefined, 'a session ticket was issued');
    tier.config.update(snapshotFromObjects(tier.objects, { revokedSerials: [bob.serial] }));
    const again = await dial({ port: tier.port, servername: 'kube.example.com', cert: bob, session: ticket, send: connectHead('kube.example.com:443') });
    assert.equal(again.resumed, true, 'the session was resumed (the test exercises resumption)');
    assert.equal(again.status, 403);
    assert.equal(again.reason, 'cert-revoked');
  });

  void test('a session resumed under another SNI is decided for the service of the SNI it now sends', async (t) => {
    const inputs: string[] = [];
    const tier = await startTier(t, { options: { decider: { decide: (i) => (inputs.push(i.service.metadata.name), { allow: true, reasons: ['ok'], mode: 'none' }) } } });
    let ticket: Buffer | undefined;
    const first = await established({ port: tier.port, servername: 'kube.example.com', send: connectHead('kube.example.com:443'), onSession: (s) => (ticket = s) });
    await echoes(first.socket, 'first', first.rest);
    const other = await dial({ port: tier.port, servername: 'other.example.com', session: ticket, send: connectHead('kube.example.com:443') });
    assert.equal(other.status, 421, 'kube\'s target is not other\'s');
    const right = await established({ port: tier.port, servername: 'other.example.com', session: ticket, send: connectHead('other.example.com:443') });
    right.socket.destroy();
    assert.deepEqual(inputs, ['kube', 'other']);
  });
});

// ---------------------------------------------------------------------------------------------

void describe('connector tunnels: CN-01, CN-05, CN-06 at the access tier', { timeout: 120_000 }, () => {
  void test('CN-01 a valid connector certificate whose Connector spec is in another cluster is refused', async (t) => {
    const objects = [...standardObjects(echo.port), specs.connector('dc9', 'c9', { cidrs: ['127.0.0.0/8'] })];
    const tier = await startTier(t, { objects });
    const fake = await fakeConnector(tier.port, await pki.issue('connector', { name: 'dc9' }));
    await fake.closed;
    await tier.events.waitFor((e) => e.connector === 'dc9' && e.reasons.includes('unknown-connector'));
    assert.equal(tier.at.stats().tunnels.length, 0);
  });

  void test('CN-05 a user who stops reading stalls only their own stream: another user on the same tunnel transfers 8 MB', async (t) => {
    const hose = net.createServer((s) => {
      s.on('error', () => undefined);
      const chunk = Buffer.alloc(64 * 1024, 0x5a);
      const pump = (): void => {
        while (!s.destroyed && s.write(chunk));
        if (!s.destroyed) s.once('drain', pump);
      };
      pump();
    });
    const hoseSockets = new Set<net.Socket>();
    hose.on('connection', (s: net.Socket) => {
      hoseSockets.add(s);
      s.on('close', () => hoseSockets.delete(s));
    });
    await new Promise<void>((r) => hose.listen(0, '127.0.0.1', r));
    const hosePort = (hose.address() as AddressInfo).port;
    t.after(() => new Promise<void>((r) => {
      for (const s of hoseSockets) s.destroy();
      hose.close(() => r());
    }));
    const objects = [
      specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'),
      specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
      specs.service('hose', CLUSTER, { type: 'kubernetes', domain: 'hose.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: `127.0.0.1:${hosePort}` } }, pki.caPem),
      specs.service('via', CLUSTER, { type: 'kubernetes', domain: 'via.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: echo.address } }, pki.caPem),
    ];
    const tier = await startTier(t, { objects });
    const fake = await fakeConnector(tier.port, await pki.issue('connector', { name: 'dc1' }));
    t.after(() => fake.socket.destroy());
    await eventually(() => (tier.at.stats().tunnels.length === 1 ? true : undefined), 2000, 'tunnel up');
    const stalled = await established({ port: tier.port, servername: 'hose.example.com', send: connectHead('hose.example.com:443') });
    stalled.socket.pause();
    await new Promise((r) => setTimeout(r, 300));
    const other = await established({ port: tier.port, servername: 'via.example.com', send: connectHead('via.example.com:443') });
    const payload = Buffer.alloc(8 * MiB, 0x61);
    const back = await withTimeout(roundTrip(other.socket, payload, other.rest), 30_000, 'the other transfer');
    assert.equal(back.length, payload.length);
    stalled.socket.destroy();
  });

  // What holds today is the per-stream bound: HTTP/2 flow control stops the connector once a stalled
  // user's stream window (8 MiB) is buffered. There is no per-tunnel budget below streams × window
  // yet (1,024 stalled connections from one source could hold ~8 GiB); see the issue notes.
  void test('CN-05 a user who stops reading while the backend sends holds at most one stream window of access-tier memory', async (t) => {
    const hose = net.createServer((s) => {
      s.on('error', () => undefined);
      const chunk = Buffer.alloc(64 * 1024, 0x5a);
      const pump = (): void => {
        while (!s.destroyed && s.write(chunk));
        if (!s.destroyed) s.once('drain', pump);
      };
      pump();
    });
    const hoseSockets = new Set<net.Socket>();
    hose.on('connection', (s: net.Socket) => {
      hoseSockets.add(s);
      s.on('close', () => hoseSockets.delete(s));
    });
    await new Promise<void>((r) => hose.listen(0, '127.0.0.1', r));
    const hosePort = (hose.address() as AddressInfo).port;
    t.after(() => new Promise<void>((r) => {
      for (const s of hoseSockets) s.destroy();
      hose.close(() => r());
    }));
    const objects = [
      specs.accessTier('edge-1', CLUSTER, '127.0.0.1:1'),
      specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] }),
      specs.service('hose', CLUSTER, { type: 'kubernetes', domain: 'hose.example.com', port: 443, connector: 'dc1', backend: { dnsOverride: `127.0.0.1:${hosePort}` } }, pki.caPem),
    ];
    const victim = await startVictimTier(objects);
    t.after(() => {
      if (victim.child.connected) victim.child.disconnect();
      victim.child.kill();
    });
    const fake = await fakeConnector(victim.port, await pki.issue('connector', { name: 'dc1' }));
    t.after(() => fake.socket.destroy());
    await eventually(async () => ((await victim.stats()).stats.tunnels.length === 1 ? true : undefined), 5000, 'tunnel up');
    const s0 = await victim.stats();
    const users: tls.TLSSocket[] = [];
    t.after(() => {
      for (const u of users) u.destroy();
    });
    for (let i = 0; i < 16; i++) {
      const u = await established({ port: victim.port, servername: 'hose.example.com', send: connectHead('hose.example.com:443') });
      u.socket.pause();
      users.push(u.socket);
    }
    await new Promise((r) => setTimeout(r, 4000));
    const s1 = await victim.stats();
    t.diagnostic(`16 users who stopped reading: access tier RSS +${mib(s1.rss - s0.rss)}, external +${mib(s1.external - s0.external)}`);
    const perStream = DEFAULT_TUNNEL_LIMITS.streamWindow + 2 * MiB;
    assert.ok(s1.rss - s0.rss < 16 * perStream, `16 stalled streams hold ${mib(s1.rss - s0.rss)}, more than 16 stream windows`);
  });

  void test('CN-06 a half-open tunnel with a stream still opening: the user gets 502 within the keepalive budget and no descriptor leaks', { skip: process.platform !== 'linux' ? 'needs /proc/self/fd' : false }, async (t) => {
    const fds = async (): Promise<number> => (await readdir('/proc/self/fd')).length;
    const before = await fds();
    const tier = await startTier(undefined, { options: { limits: { keepaliveIntervalMs: 100, keepaliveTimeoutMs: 400, waitForTunnelMs: 0, streamOpenTimeoutMs: 30_000 } } });
    const relayHandle = await startBlackholeRelay(tier.port);
    // A connector that never answers its streams, reached through the relay.
    const fake = await fakeConnector(relayHandle.port, await pki.issue('connector', { name: 'dc1' }), () => undefined, { keepaliveIntervalMs: 100, keepaliveTimeoutMs: 400 });
    await eventually(() => (tier.at.stats().tunnels.length === 1 ? true : undefined), 2000, 'tunnel up');
    const user = dial({ port: tier.port, servername: 'via.example.com', send: connectHead('via.example.com:443'), timeoutMs: 10_000 });
    await eventually(() => (tier.at.stats().tunnels[0]?.activeStreams === 1 ? true : undefined), 2000, 'the stream opening');
    const started = Date.now();
    relayHandle.blackhole();
    const seen = await user;
    t.diagnostic(`the user got ${String(seen.status)} ${seen.reason ?? ''} ${Date.now() - started} ms after the path went silent (interval 100 ms, timeout 400 ms)`);
    assert.equal(seen.status, 502);
    await tier.events.waitFor((e) => e.connector === 'dc1' && e.closeReason === 'keepalive-timeout');
    fake.socket.destroy();
    tier.at.destroy();
    await tier.config.close();
    await relayHandle.close();
    await eventually(async () => ((await fds()) <= before ? true : undefined), 5000, `descriptors back to ${before}`);
  });
});
