/**
 * Attacks on the tunnel session itself (THREATS AT-12, CN-05), both ends in this process: the
 * bounds that hold whichever part sits on top. The whole-part versions (a victim in its own
 * process, the other tunnels still working) are in src/access-tier and src/connector threats tests.
 */
import { test, describe, before } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import type { ClientHttp2Session, ClientHttp2Stream, ServerHttp2Session } from 'node:http2';
import { mtlsClientOptions, mtlsServerOptions } from '../pki/index.ts';
import { FLAG, FRAME, FrameReader, PREFACE, connectBlock, flood, frame, goawayCode, pingFrame, rstFrame, settingsFrame } from './frames.testing.ts';
import type { Frame } from './frames.testing.ts';
import { eventually, makeTestPki } from './harness.testing.ts';
import type { TestPki } from './harness.testing.ts';
import { TUNNEL_ALPN, tunnelRequestHeaders } from './protocol.ts';
import { openTunnelClient, serveTunnel } from './session.ts';
import type { TunnelSessionOptions } from './session.ts';
import { DEFAULT_TUNNEL_LIMITS } from './settings.ts';
import type { TunnelLimits } from './settings.ts';
import { MAX_QUEUED_WRITES, TunnelTransport } from './transport.ts';

const MiB = 1024 * 1024;
let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});

/** A TLS pair like the tunnel's: the "access tier" accepts, the "connector" dials. Both raw, for the caller to wrap. */
async function tlsPair(t: TestContext): Promise<{ accepted: tls.TLSSocket; dialled: tls.TLSSocket }> {
  const at = await pki.issue('access-tier', { name: 'edge-1' });
  const cn = await pki.issue('connector', { name: 'dc1' });
  const server = tls.createServer({ ...mtlsServerOptions({ caPem: pki.caPem, certPem: at.certPem, keyPem: at.keyPem }), ALPNProtocols: [TUNNEL_ALPN] });
  const acceptedP = new Promise<tls.TLSSocket>((resolve) => server.once('secureConnection', resolve));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const dialled = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, certPem: cn.certPem, keyPem: cn.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port: (server.address() as AddressInfo).port, ALPNProtocols: [TUNNEL_ALPN] });
  dialled.on('error', () => undefined);
  await new Promise<void>((r, j) => {
    dialled.once('secureConnect', () => r());
    dialled.once('error', j);
  });
  const accepted = await acceptedP;
  accepted.on('error', () => undefined);
  t.after(() => {
    accepted.destroy();
    dialled.destroy();
    server.close();
  });
  return { accepted, dialled };
}

void describe('AT-12 the connector end of a tunnel against a peer that floods and never reads', { timeout: 60_000 }, () => {
  void test('AT-12 a PING flood from a peer that never reads: the connector end stops reading after a bounded number of answers, then its keepalive drops the peer', async (t) => {
    const { accepted, dialled } = await tlsPair(t);
    // The attacker is the access tier's end, speaking frames by hand and reading nothing.
    accepted.pause();
    accepted.write(Buffer.concat([PREFACE, settingsFrame()]));
    let pings = 0;
    let dead: string | undefined;
    const { session } = serveTunnel(dialled, { keepaliveIntervalMs: 200, keepaliveTimeoutMs: 800, onDead: (d) => (dead = d) });
    session.on('error', () => undefined);
    session.on('ping', () => pings++);
    const sent = await flood(accepted, (i) => pingFrame(i), 1_000_000, 1000);
    t.diagnostic(`the attacker wrote ${sent} PINGs before the victim stopped reading; the victim answered ${pings}`);
    // Kernel buffers on both sides absorb some answers; everything else waits, bounded by the transport.
    assert.ok(pings < 600_000, `${pings} PINGs answered to a peer that reads nothing`);
    await eventually(() => (dead !== undefined ? true : undefined), 10_000, 'the keepalive giving up on the flooder');
    assert.ok(session.destroyed);
  });

  void test('AT-12 the transport under the connector\'s session holds a write once the writes waiting on a stuck socket pass the count bound, and lets it go when the socket drains', async () => {
    let drained: (() => void) | undefined;
    // A socket stand-in that never flushes until told: every write stays queued.
    const stuck = new Duplex({
      read() {},
      write(_chunk, _enc, cb) {
        drained = () => cb();
      },
      writev(_chunks, cb) {
        drained = () => cb();
      },
      highWaterMark: 1,
    });
    const transport = new TunnelTransport(stuck as unknown as tls.TLSSocket, { maxQueuedBytes: 64 * MiB, maxQueuedWrites: 100 });
    let completed = 0;
    for (let i = 0; i < 150; i++) transport.write(Buffer.alloc(17), () => completed++);
    await new Promise((r) => setImmediate(r));
    assert.ok(completed <= 101, `${completed} writes completed with 150 queued and a bound of 100`);
    assert.ok(completed > 0);
    // The socket flushes: the held write completes and the rest follow.
    for (let i = 0; i < 200 && drained !== undefined; i++) {
      const d = drained;
      drained = undefined;
      d();
      await new Promise((r) => setImmediate(r));
    }
    await eventually(() => (completed === 150 ? true : undefined), 2000, 'every write completed after the drain');
    assert.ok(MAX_QUEUED_WRITES >= 16_384, 'the default leaves room for a window of DATA frames');
    transport.destroy();
  });
});

/** `p`, or a rejection after `ms`; the timer never outlives the race. */
async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The real tunnel ends over a TLS pair: the access tier's client and the connector's server. */
async function tunnel(t: TestContext, opts: { limits?: TunnelLimits; session?: TunnelSessionOptions } = {}): Promise<{ client: ClientHttp2Session; server: ServerHttp2Session }> {
  const { accepted, dialled } = await tlsPair(t);
  const session: TunnelSessionOptions = { ...opts.session, ...(opts.limits !== undefined ? { limits: opts.limits } : {}) };
  const client = openTunnelClient(accepted, session).session;
  const server = serveTunnel(dialled, session).session;
  client.on('error', () => undefined);
  server.on('error', () => undefined);
  t.after(() => {
    client.destroy();
    server.destroy();
  });
  return { client, server };
}

function open(client: ClientHttp2Session): Promise<ClientHttp2Stream> {
  return new Promise((resolve, reject) => {
    const stream = client.request(tunnelRequestHeaders('x.example:1', { session: 's', service: 'svc' }), { endStream: false });
    stream.on('error', () => undefined);
    stream.once('response', () => resolve(stream));
    stream.once('close', () => reject(new Error(`closed before its response (rst ${String(stream.rstCode)})`)));
  });
}

void describe('CN-05 the session window is never held by stalled streams', { timeout: 60_000 }, () => {
  void test('CN-05 ten streams whose readers stall (80 MB held, more than the 64 MiB session window) do not stop an eleventh stream on the same tunnel', async (t) => {
    const { client, server } = await tunnel(t);
    const stalled: Array<{ received: number }> = [];
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200 });
      const path = stalled.length < 10 ? 'stall' : 'echo';
      if (path === 'stall') {
        stream.pause();
        stalled.push({ received: 0 });
      } else {
        stream.pipe(stream);
      }
    });
    const streams: ClientHttp2Stream[] = [];
    for (let i = 0; i < 10; i++) streams.push(await open(client));
    const chunk = Buffer.alloc(1 * MiB, 0x41);
    for (const s of streams) for (let i = 0; i < 9; i++) s.write(chunk);
    await new Promise((r) => setTimeout(r, 500));
    const other = await open(client);
    const size = 4 * MiB;
    let back = 0;
    other.on('data', (c: Buffer) => (back += c.length));
    const ended = new Promise<void>((r) => other.once('end', () => r()));
    other.end(Buffer.alloc(size, 0x42));
    await withTimeout(ended, 20_000, 'the eleventh stream finishing beside the stalled ones');
    assert.equal(back, size);
    t.diagnostic(`session window left at the receiver: ${String(server.state.localWindowSize)} of ${DEFAULT_TUNNEL_LIMITS.sessionWindow}; stalled streams hold their windows in memory (no per-tunnel cap below streams × window yet: see the access tier's CN-05 test)`);
    for (const s of streams) s.destroy();
  });
});

void describe('AT-12 rapid reset beyond the configured rate', { timeout: 60_000 }, () => {
  void test('AT-12 a reset flood past the server\'s reset burst and rate ends the session with an error GOAWAY (the limits we raise for kubectl still bound it)', async (t) => {
    const { accepted, dialled } = await tlsPair(t);
    const frames: Frame[] = [];
    const reader = new FrameReader();
    accepted.on('data', (d: Buffer) => frames.push(...reader.push(d)));
    accepted.write(Buffer.concat([PREFACE, settingsFrame()]));
    const limits = { ...DEFAULT_TUNNEL_LIMITS, resetBurst: 200, resetRate: 50 };
    const { session } = serveTunnel(dialled, { limits });
    session.on('error', () => undefined);
    let streams = 0;
    session.on('stream', (stream) => {
      streams++;
      stream.on('error', () => undefined);
    });
    const closed = new Promise<void>((r) => session.once('close', () => r()));
    await flood(accepted, (i) => Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS, 2 * i + 1, connectBlock('a.example:1')), rstFrame(2 * i + 1)]), 5000, 250);
    await withTimeout(closed, 10_000, 'a GOAWAY after 5,000 resets with a burst of 200');
    const goaway = frames.find((f) => f.type === FRAME.GOAWAY);
    t.diagnostic(`${streams} streams seen before the session ended; GOAWAY code ${goaway === undefined ? 'none' : String(goawayCode(goaway))}`);
    assert.ok(goaway !== undefined, 'a GOAWAY was sent');
    assert.notEqual(goawayCode(goaway), 0, 'an error code (nghttp2 says INTERNAL_ERROR or ENHANCE_YOUR_CALM)');
    assert.ok(streams < 5000);
  });

  void test('AT-12 with the default limits, 10,000 streams opened and reset back to back on one tunnel (no waiting for answers) are absorbed: no GOAWAY, the tunnel still serves', async (t) => {
    const { client, server } = await tunnel(t);
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200 });
    });
    let goaway = false;
    client.once('goaway', () => (goaway = true));
    for (let i = 0; i < 10_000; i += 500) {
      const batch = Array.from({ length: 500 }, () => client.request(tunnelRequestHeaders('x.example:1', { session: 's', service: 'svc' }), { endStream: false }));
      for (const s of batch) {
        s.on('error', () => undefined);
        s.close(0x8);
      }
      await Promise.all(batch.map((s) => new Promise((r) => (s.closed ? r(undefined) : s.once('close', r)))));
    }
    assert.equal(goaway, false);
    const stream = await open(client);
    stream.close(0x8);
  });
});
