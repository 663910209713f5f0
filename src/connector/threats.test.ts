/**
 * Attacks on the connector (THREATS AT-12, CN-05, CN-06, CN-08, CN-09), beyond connector.test.ts.
 *
 * - AT-12: a malicious "access tier" (it holds a valid access-tier certificate) speaks HTTP/2 by
 *   hand against a connector running in its own process (threats-child.testing.ts), so what the
 *   attack costs is measured in the victim alone; the same connector keeps a tunnel to a
 *   well-behaved access tier, which must keep working.
 * - CN-05, CN-06: floods, zero windows, dribbled data and a half-open tunnel against a connector in
 *   this process, with its backends here too.
 * - CN-08, CN-09: whom the connector trusts, and which files it accepts.
 */
import { test, describe, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { ClientHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Command } from 'commander';
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import { unsafePathProblem } from '../lib/fs-safety.ts';
import { mtlsServerOptions } from '../lib/pki/index.ts';
import { forgeCertificate } from '../lib/pki/forge.testing.ts';
import { stringifySpecs } from '../lib/spec/index.ts';
import { FLAG, FRAME, connectBlock, flood, frame, goawayCode, indexed, literal, literalIndexed, pingFrame, rawAccessTier, rstFrame, settingsFrame } from '../lib/tunnel/frames.testing.ts';
import type { Frame, RawPeer } from '../lib/tunnel/frames.testing.ts';
import { eventually, makeTestPki, openStream, specs, startBlackholeRelay, startEchoServer } from '../lib/tunnel/harness.testing.ts';
import type { KeyAndCert, TestPki, TestServer } from '../lib/tunnel/harness.testing.ts';
import { TUNNEL_ALPN, tunnelRequestHeaders } from '../lib/tunnel/protocol.ts';
import { openTunnelClient } from '../lib/tunnel/session.ts';
import { DEFAULT_TUNNEL_LIMITS } from '../lib/tunnel/settings.ts';
import { makeServerCert, makeTestCa } from '../../test/kit/certs.ts';
import { registerConnectorCommand } from './command.ts';
import { startConnector } from './index.ts';
import type { Connector, ConnectorOptions } from './index.ts';

const MiB = 1024 * 1024;
const CLUSTER = 'c1';
let pki: TestPki;
let connectorCert: KeyAndCert;
let edge1: KeyAndCert;
let edge2: KeyAndCert;
let echo: TestServer;

before(async () => {
  pki = await makeTestPki();
  connectorCert = await pki.issue('connector', { name: 'dc1' });
  edge1 = await pki.issue('access-tier', { name: 'edge-1' });
  edge2 = await pki.issue('access-tier', { name: 'edge-2' });
  echo = await startEchoServer();
});
after(() => echo.close());

// ---------------------------------------------------------------------------------------------
// Helpers

/** A well-behaved access tier built from the shared tunnel pieces. */
interface GoodAccessTier {
  port: number;
  address: string;
  next(): Promise<ClientHttp2Session>;
  close(): Promise<void>;
}

async function startGoodAccessTier(cert: { certPem: string; keyPem: string }, opts: { via?: (port: number) => Promise<number>; keepaliveIntervalMs?: number; keepaliveTimeoutMs?: number } = {}): Promise<GoodAccessTier> {
  const ready: ClientHttp2Session[] = [];
  const waiting: Array<(s: ClientHttp2Session) => void> = [];
  const sessions = new Set<ClientHttp2Session>();
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({ ...mtlsServerOptions({ caPem: pki.caPem, certPem: cert.certPem, keyPem: cert.keyPem }), ALPNProtocols: [TUNNEL_ALPN] }, (socket) => {
    // Default keepalive unless told: a victim busy with a flood answers PINGs late, and that is not what these tests judge.
    const { session } = openTunnelClient(socket, { ...(opts.keepaliveIntervalMs !== undefined ? { keepaliveIntervalMs: opts.keepaliveIntervalMs } : {}), ...(opts.keepaliveTimeoutMs !== undefined ? { keepaliveTimeoutMs: opts.keepaliveTimeoutMs } : {}) });
    session.on('error', () => undefined);
    sessions.add(session);
    const w = waiting.shift();
    if (w !== undefined) w(session);
    else ready.push(session);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const listenPort = (server.address() as AddressInfo).port;
  const port = opts.via === undefined ? listenPort : await opts.via(listenPort);
  return {
    port,
    address: `127.0.0.1:${port}`,
    next: () => {
      const s = ready.shift();
      return s !== undefined ? Promise.resolve(s) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}


/** Writes `payload` on a fresh stream to the echo backend and checks it comes back whole. */
async function echoWorks(session: ClientHttp2Session, payload = 'still serving'): Promise<void> {
  const opened = await openStream(session, echo.address);
  assert.equal(opened.status, 200);
  const chunks: Buffer[] = [];
  opened.stream.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((r) => opened.stream.once('end', () => r()));
  opened.stream.end(payload);
  await ended;
  assert.equal(Buffer.concat(chunks).toString(), payload);
}

/** A TCP backend that counts open connections; `mode` decides what it does with each. */
interface Backend {
  address: string;
  accepted: number;
  open(): number;
  received(): number;
  close(): Promise<void>;
}

async function startBackend(mode: 'sink' | 'never-read' | 'firehose' | 'collect'): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  let received = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    if (mode === 'sink' || mode === 'collect') {
      s.on('data', (c: Buffer) => (received += c.length));
      s.on('end', () => s.end());
    } else if (mode === 'never-read') {
      s.pause();
    } else {
      const chunk = Buffer.alloc(64 * 1024, 0x5a);
      const pump = (): void => {
        while (!s.destroyed && s.write(chunk));
        if (!s.destroyed) s.once('drain', pump);
      };
      pump();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const backend: Backend = {
    address: `127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    open: () => sockets.size,
    received: () => received,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  return backend;
}

interface VictimStats {
  rss: number;
  heapUsed: number;
  external: number;
  cpuMs: number;
  status: { activeStreams: number; tunnels: Array<{ accessTier: string; state: string; failures: number; lastError?: string }> };
}

interface Victim {
  child: ChildProcess;
  stats(): Promise<VictimStats>;
}

/** A connector in its own process that dials the attacker (edge-1) and a well-behaved access tier (edge-2). */
async function startVictim(t: TestContext, attackerPort: number, goodPort: number): Promise<Victim> {
  const script = fileURLToPath(new URL('./threats-child.testing.ts', import.meta.url));
  const input = { tls: connectorCert, accessTiers: [{ name: 'edge-1', address: `127.0.0.1:${attackerPort}` }, { name: 'edge-2', address: `127.0.0.1:${goodPort}` }], cidrs: ['127.0.0.0/8'] };
  const child = fork(script, [JSON.stringify(input)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  t.after(() => {
    if (child.connected) child.disconnect();
    child.kill();
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`the connector process exited (${String(code)})`)));
  });
  return {
    child,
    stats: () =>
      new Promise<VictimStats>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the connector process did not answer: it is gone or stuck')), 10_000);
        child.once('message', (m) => {
          clearTimeout(timer);
          resolve(m as VictimStats);
        });
        child.send('stats');
      }),
  };
}

/** Resolves once the victim has processed everything sent before: a PING sent last is answered. */
function processed(peer: RawPeer, marker = 0x5eed): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => resolve(), 10_000);
    peer.onFrame((f: Frame) => {
      if (f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0 && f.payload.readUInt32BE(4) === marker) {
        clearTimeout(timer);
        resolve();
      }
    });
    peer.socket.write(pingFrame(marker));
  });
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
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

// ---------------------------------------------------------------------------------------------

void describe('AT-12 HTTP/2 abuse from a malicious access tier against the connector (victim in its own process)', { timeout: 120_000 }, () => {
  /** The attacker (edge-1), the well-behaved access tier (edge-2) and the victim, per test. */
  async function setup(t: TestContext, read = true): Promise<{ attacker: Awaited<ReturnType<typeof rawAccessTier>>; peer: RawPeer; good: ClientHttp2Session; victim: Victim }> {
    const attacker = await rawAccessTier(edge1, pki.caPem, { read });
    const goodTier = await startGoodAccessTier(edge2);
    t.after(async () => {
      await attacker.close();
      await goodTier.close();
    });
    const victim = await startVictim(t, attacker.port, goodTier.port);
    const [peer, good] = await Promise.all([attacker.next(), goodTier.next()]);
    await echoWorks(good, 'before the attack');
    return { attacker, peer, good, victim };
  }

  void test('AT-12 rapid reset: 10,000 streams opened and reset at once leave no backend connection open, bound CPU and memory, and the other tunnel keeps working', async (t) => {
    const backend = await startBackend('sink');
    t.after(() => backend.close());
    const { peer, good, victim } = await setup(t);
    const s0 = await victim.stats();
    const sent = await flood(peer.socket, (i) => Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS, 2 * i + 1, connectBlock(backend.address)), rstFrame(2 * i + 1)]), 10_000, 250);
    assert.equal(sent, 10_000);
    if (!peer.socket.destroyed) await processed(peer);
    const s1 = await victim.stats();
    await eventually(() => (backend.open() === 0 ? true : undefined), 10_000, 'every backend connection the resets started is closed');
    await eventually(async () => ((await victim.stats()).status.activeStreams === 0 ? true : undefined), 10_000, 'no relay left');
    t.diagnostic(`10,000 reset streams: victim CPU ${Math.round(s1.cpuMs - s0.cpuMs)} ms, RSS +${mib(s1.rss - s0.rss)}, heap +${mib(s1.heapUsed - s0.heapUsed)}; backend dials started ${backend.accepted}; GOAWAY ${String(peer.goaway() === undefined ? 'none' : goawayCode(peer.goaway() as Frame))}`);
    assert.ok(s1.rss - s0.rss < 256 * MiB, `RSS grew by ${mib(s1.rss - s0.rss)}`);
    await echoWorks(good, 'after the rapid reset');
  });

  void test('AT-12 PING flood from a peer that never reads the answers: the connector stops reading it, its memory stays bounded, the other tunnel keeps working', async (t) => {
    const { peer, good, victim } = await setup(t, false);
    const s0 = await victim.stats();
    // A million PINGs; the flood stops by itself when the victim stops reading (2 s without drain).
    const sent = await flood(peer.socket, (i) => pingFrame(i), 1_000_000, 1000);
    const s1 = await victim.stats();
    t.diagnostic(`${sent} PINGs written before the victim stopped reading; victim RSS +${mib(s1.rss - s0.rss)}, CPU ${Math.round(s1.cpuMs - s0.cpuMs)} ms (before the fix: about 400 MiB per million PINGs, unbounded)`);
    assert.ok(s1.rss - s0.rss < 200 * MiB, `RSS grew by ${mib(s1.rss - s0.rss)}`);
    await echoWorks(good, 'after the PING flood');
  });

  void test('AT-12 SETTINGS flood: the tunnel is closed (GOAWAY), the connector redials, and the other tunnel keeps working', async (t) => {
    const { attacker, peer, good, victim } = await setup(t);
    await flood(peer.socket, () => settingsFrame([[0x4, 65_535]]), 200_000, 500);
    await withTimeout(peer.closed, 10_000, 'the flooding tunnel closing');
    const s = await victim.stats();
    assert.match(s.status.tunnels.find((x) => x.accessTier === 'edge-1')?.lastError ?? '', /flood|ENHANCE|ERR_HTTP2/i);
    t.diagnostic(`GOAWAY code ${String(peer.goaway() === undefined ? 'none' : goawayCode(peer.goaway() as Frame))}; last error: ${s.status.tunnels.find((x) => x.accessTier === 'edge-1')?.lastError ?? ''}`);
    const again = await withTimeout(attacker.next(), 10_000, 'the connector redialling');
    again.socket.destroy();
    await echoWorks(good, 'after the SETTINGS flood');
  });

  void test('AT-12 CONTINUATION frames without END_HEADERS: the tunnel is closed, nothing is dialled, memory stays bounded', async (t) => {
    const backend = await startBackend('sink');
    t.after(() => backend.close());
    const { peer, good, victim } = await setup(t);
    const s0 = await victim.stats();
    peer.socket.write(frame(FRAME.HEADERS, 0, 1, connectBlock(backend.address)));
    const sent = await flood(peer.socket, () => frame(FRAME.CONTINUATION, 0, 1, literal('x-junk', 'j'.repeat(16_000))), 5000, 20);
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    const s1 = await victim.stats();
    t.diagnostic(`${sent} CONTINUATION frames written before the close; GOAWAY ${String(peer.goaway() === undefined ? 'none' : goawayCode(peer.goaway() as Frame))}; victim RSS +${mib(s1.rss - s0.rss)}`);
    assert.equal(backend.accepted, 0);
    assert.ok(s1.rss - s0.rss < 128 * MiB);
    await echoWorks(good, 'after the CONTINUATION flood');
  });

  void test('AT-12 an HPACK bomb (4 KB header indexed once, referenced 2,000 times: 8 MB decoded) is refused without a dial; the tunnel then serves a good stream', async (t) => {
    const backend = await startBackend('sink');
    t.after(() => backend.close());
    const { peer, victim } = await setup(t);
    const s0 = await victim.stats();
    const block = Buffer.concat([connectBlock(backend.address), literalIndexed('x-bomb', 'b'.repeat(4000)), ...Array.from({ length: 2000 }, () => indexed(62))]);
    const pieces: Buffer[] = [];
    for (let i = 0; i < block.length; i += 16_384) pieces.push(block.subarray(i, i + 16_384));
    const refused = new Promise<Frame>((resolve) => peer.onFrame((f) => ((f.type === FRAME.RST_STREAM && f.streamId === 1) || f.type === FRAME.GOAWAY ? resolve(f) : undefined)));
    pieces.forEach((p, i) => peer.socket.write(frame(i === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, i === pieces.length - 1 ? FLAG.END_HEADERS : 0, 1, p)));
    const answer = await withTimeout(refused, 10_000, 'a refusal of the bomb');
    const s1 = await victim.stats();
    t.diagnostic(`answered with ${answer.type === FRAME.GOAWAY ? 'GOAWAY' : 'RST_STREAM'} code ${answer.payload.readUInt32BE(answer.type === FRAME.GOAWAY ? 4 : 0)}; victim RSS +${mib(s1.rss - s0.rss)}`);
    assert.equal(backend.accepted, 0);
    if (answer.type === FRAME.RST_STREAM) {
      // The bomb cost one stream; the same tunnel still opens a good one (HEADERS with :status 200, index 8).
      const ok = new Promise<Frame>((resolve) => peer.onFrame((f) => (f.type === FRAME.HEADERS && f.streamId === 3 ? resolve(f) : undefined)));
      peer.socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 3, connectBlock(backend.address)));
      const headers = await withTimeout(ok, 10_000, 'an answer to a good stream');
      assert.equal(headers.payload[0], 0x88, 'the good stream is answered 200');
    }
  });

  void test('AT-12 DATA for a stream that was never opened is a protocol error: GOAWAY, the connector redials, the other tunnel keeps working', async (t) => {
    const { attacker, peer, good } = await setup(t);
    peer.socket.write(frame(FRAME.DATA, 0, 7, Buffer.from('bytes for someone else')));
    await withTimeout(peer.closed, 10_000, 'the tunnel closing');
    assert.equal(goawayCode(peer.goaway() as Frame), 1, 'GOAWAY PROTOCOL_ERROR');
    const again = await withTimeout(attacker.next(), 10_000, 'the connector redialling');
    again.socket.destroy();
    await echoWorks(good, 'after the stray DATA');
  });
});

// ---------------------------------------------------------------------------------------------
// The connector in this process: floods, windows, dribbles, half-open tunnels.

async function localConnector(t: TestContext, address: string, extra: Partial<ConnectorOptions> = {}): Promise<Connector> {
  const config = new StaticConfigSource(snapshotFromObjects([specs.accessTier('edge-1', CLUSTER, address), specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] })]));
  const c = await startConnector({ name: 'dc1', config, tls: connectorCert, drainTimeoutMs: 200, tunnel: { backoff: { firstMs: 20, baseMs: 20, capMs: 200 } }, ...extra });
  t.after(async () => {
    c.destroy();
    await config.close();
  });
  return c;
}

void describe('CN-05 stream floods, zero windows and dribbled data on one tunnel', { timeout: 120_000 }, () => {
  void test('CN-05 a flood of 120 streams on a tunnel capped at 32 never gets more than 32 backend connections: the excess is refused or the tunnel closed, and the connector redials', async (t) => {
    const backend = await startBackend('sink');
    const attacker = await rawAccessTier(edge1, pki.caPem);
    t.after(async () => {
      await attacker.close();
      await backend.close();
    });
    const limits = { ...DEFAULT_TUNNEL_LIMITS, maxStreams: 32 };
    await localConnector(t, `127.0.0.1:${attacker.port}`, { tunnel: { limits, backoff: { firstMs: 20, baseMs: 20, capMs: 200 } } });
    const peer = await attacker.next();
    // The connector's SETTINGS (at most 32 streams) are acknowledged first, so the excess is a plain violation.
    await processed(peer);
    await flood(peer.socket, (i) => frame(FRAME.HEADERS, FLAG.END_HEADERS, 2 * i + 1, connectBlock(backend.address)), 120, 120);
    await Promise.race([peer.closed, processed(peer, 0x5eee)]);
    await new Promise((r) => setTimeout(r, 300));
    const refused = peer.frames.filter((f) => f.type === FRAME.RST_STREAM).length;
    const goaway = peer.goaway();
    t.diagnostic(`120 streams on a tunnel capped at 32: ${backend.accepted} backend connections, ${refused} streams reset, GOAWAY ${goaway === undefined ? 'none' : String(goawayCode(goaway))}`);
    assert.ok(backend.accepted <= 32, `${backend.accepted} backend connections`);
    assert.ok(refused > 0 || goaway !== undefined, 'the streams past the cap were refused');
    if (goaway !== undefined) {
      const again = await withTimeout(attacker.next(), 10_000, 'the connector redialling');
      const answered = new Promise<Frame>((resolve) => again.onFrame((f) => (f.type === FRAME.HEADERS && f.streamId === 1 ? resolve(f) : undefined)));
      again.socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, connectBlock(backend.address)));
      assert.equal((await withTimeout(answered, 10_000, 'an answer on the new tunnel')).payload[0], 0x88);
    }
  });

  void test('CN-05 a backend that never reads and a user who never reads stall only their own streams: another transfer on the same tunnel completes (20 MB, hash-checked), and a dribbled stream arrives whole', async (t) => {
    const stuck = await startBackend('never-read');
    const hose = await startBackend('firehose');
    const collector = await startBackend('collect');
    const at = await startGoodAccessTier(edge1);
    t.after(async () => {
      await at.close();
      await stuck.close();
      await hose.close();
      await collector.close();
    });
    await localConnector(t, at.address);
    const session = await at.next();

    // 1. Upload into a backend that never reads: the stream's window closes, nothing else notices.
    const up = await openStream(session, stuck.address);
    assert.equal(up.status, 200);
    const chunk = Buffer.alloc(256 * 1024, 1);
    let uploaded = 0;
    const pushUp = (): void => {
      while (uploaded < 64 * MiB && !up.stream.destroyed) {
        uploaded += chunk.length;
        if (!up.stream.write(chunk)) {
          up.stream.once('drain', pushUp);
          return;
        }
      }
    };
    pushUp();
    // 2. Download from a backend that never stops, read by nobody: a zero window on our side.
    const down = await openStream(session, hose.address);
    assert.equal(down.status, 200);
    down.stream.pause();

    // 3. Meanwhile a 20 MB echo on the same tunnel completes.
    const other = await openStream(session, echo.address);
    assert.equal(other.status, 200);
    const size = 20 * MiB;
    const sent = createHash('sha256');
    const got = createHash('sha256');
    let received = 0;
    other.stream.on('data', (c: Buffer) => {
      received += c.length;
      got.update(c);
    });
    const ended = new Promise<void>((r) => other.stream.once('end', () => r()));
    const piece = Buffer.alloc(64 * 1024);
    for (let i = 0; i < piece.length; i++) piece[i] = (i * 7 + 3) & 0xff;
    for (let n = 0; n < size; n += piece.length) {
      sent.update(piece);
      if (!other.stream.write(piece)) await new Promise((r) => other.stream.once('drain', r));
    }
    other.stream.end();
    await withTimeout(ended, 60_000, 'the other transfer finishing');
    assert.equal(received, size);
    assert.equal(got.digest('hex'), sent.digest('hex'));

    // 4. A dribbled stream: 200 one-byte DATA frames, 5 ms apart, all arrive in order.
    const drib = await openStream(session, collector.address);
    assert.equal(drib.status, 200);
    for (let i = 0; i < 200; i++) {
      drib.stream.write(Buffer.from([i & 0xff]));
      await new Promise((r) => setTimeout(r, 5));
    }
    drib.stream.end();
    await eventually(() => (collector.received() === 200 ? true : undefined), 5000, 'the dribbled bytes arriving');

    t.diagnostic(`while the echo ran: ${mib(uploaded)} written towards the backend that never reads (the stream window holds ${mib(DEFAULT_TUNNEL_LIMITS.streamWindow)}), the firehose held at the stalled reader`);
    // The stalled upload is held by flow control: at most a stream window plus relay and socket buffers ever left the user.
    assert.ok(uploaded < DEFAULT_TUNNEL_LIMITS.streamWindow + 16 * MiB, `${mib(uploaded)} accepted for a backend that reads nothing`);
    up.stream.destroy();
    down.stream.destroy();
  });
});

/** Open descriptors of this process. */
async function fdCount(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

void describe('CN-06 half-open tunnels', { timeout: 60_000 }, () => {
  void test('CN-06 a half-open tunnel (relay silently stops forwarding both ways) is detected within the keepalive budget; the relayed and the still-dialling stream fail; no descriptor leaks', { skip: process.platform !== 'linux' ? 'needs /proc/self/fd' : false }, async (t) => {
    const before = await fdCount();
    const backend = await startBackend('sink');
    let relay: Awaited<ReturnType<typeof startBlackholeRelay>> | undefined;
    const at = await startGoodAccessTier(edge1, {
      keepaliveIntervalMs: 100,
      keepaliveTimeoutMs: 400,
      via: async (port) => {
        relay = await startBlackholeRelay(port);
        return relay.port;
      },
    });
    // Dials to 127.0.0.2 never complete (a socket that is never connected): the pending stream waits on it.
    const hanging = new Set<net.Socket>();
    const dialer = (target: { host: string; port: number }): net.Socket => {
      if (target.host === '127.0.0.2') {
        const s = new net.Socket();
        hanging.add(s);
        return s;
      }
      return net.connect({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true });
    };
    const config = new StaticConfigSource(snapshotFromObjects([specs.accessTier('edge-1', CLUSTER, at.address), specs.connector('dc1', CLUSTER, { cidrs: ['127.0.0.0/8'] })]));
    const c = await startConnector({ name: 'dc1', config, tls: connectorCert, dialer, connectTimeoutMs: 60_000, drainTimeoutMs: 200, tunnel: { keepaliveIntervalMs: 100, keepaliveTimeoutMs: 400, backoff: { firstMs: 50, baseMs: 50, capMs: 200 } } });
    const session = await at.next();
    const live = await openStream(session, backend.address);
    assert.equal(live.status, 200);
    const pending = session.request(tunnelRequestHeaders('127.0.0.2:9', { session: 'p', service: 'svc' }), { endStream: false });
    pending.on('error', () => undefined);
    await eventually(() => (backend.open() === 1 && hanging.size === 1 ? true : undefined), 5000, 'one relayed and one dialling stream');
    const liveClosed = new Promise<void>((r) => live.stream.once('close', () => r()));
    const pendingClosed = new Promise<void>((r) => pending.once('close', () => r()));
    const started = Date.now();
    relay?.blackhole();
    await eventually(() => (/no PING answer/.test(c.status().tunnels[0]?.lastError ?? '') ? true : undefined), 5000, 'the connector\'s keepalive verdict');
    t.diagnostic(`keepalive verdict ${Date.now() - started} ms after the path went silent (interval 100 ms, timeout 400 ms)`);
    await eventually(() => (backend.open() === 0 ? true : undefined), 5000, 'the relayed backend connection closed');
    assert.ok([...hanging].every((s) => s.destroyed), 'the still-dialling backend socket was given up');
    await withTimeout(Promise.all([liveClosed, pendingClosed]), 5000, 'both streams failing at the access tier end');
    c.destroy();
    await config.close();
    await relay?.close();
    await at.close();
    await backend.close();
    await eventually(async () => ((await fdCount()) <= before ? true : undefined), 5000, `descriptors back to ${before}`);
  });
});

// ---------------------------------------------------------------------------------------------

void describe('CN-08 the connector pins the Causeway CA and the access-tier type', { timeout: 60_000 }, () => {
  async function impostor(cert: { certPem: string; keyPem: string }): Promise<{ port: number; appBytes: () => number; close: () => Promise<void> }> {
    let appBytes = 0;
    const sockets = new Set<net.Socket>();
    const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem, minVersion: 'TLSv1.3', ALPNProtocols: [TUNNEL_ALPN] }, (s) => {
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => (appBytes += d.length));
    });
    server.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      port: (server.address() as AddressInfo).port,
      appBytes: () => appBytes,
      close: () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    };
  }

  for (const [name, make] of [
    [
      'CN-08 a web server certificate for localhost and 127.0.0.1 from another CA (what a publicly trusted certificate for the name looks like)',
      async () => {
        const other = await makeTestCa({ commonName: 'Public Root CA' });
        return makeServerCert(other, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
      },
    ],
    [
      'CN-08 a web server certificate for the right name from our own CA but without the access-tier type',
      () => forgeCertificate({ ca: pki.ca, ekus: ['1.3.6.1.5.5.7.3.1'], dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] }),
    ],
  ] as const) {
    void test(`${name} is refused: no tunnel, no bytes sent`, async (t) => {
      const server = await impostor(await make());
      t.after(() => server.close());
      const c = await localConnector(t, `localhost:${server.port}`, { accessTiers: [{ name: 'edge-1', address: `localhost:${server.port}` }] });
      await eventually(() => ((c.status().tunnels[0]?.failures ?? 0) >= 2 ? true : undefined), 5000, 'two refused attempts');
      assert.equal(server.appBytes(), 0, 'the connector sent nothing over the impostor\'s connection');
      assert.equal(c.status().healthy, false);
      assert.match(c.status().tunnels[0]?.lastError ?? '', /certificate|CERT|verify|issuer/i);
    });
  }
});

// ---------------------------------------------------------------------------------------------

void describe('CN-09 key, config and data paths that other users can write are refused', { timeout: 30_000, skip: typeof process.getuid !== 'function' ? 'no user ids here' : false }, () => {
  let dir: string;
  const other = 4242;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-cn09-'));
    const cert = await pki.issue('connector', { name: 'dc1' });
    await writeFile(path.join(dir, 'dc1.crt'), cert.certPem);
    await writeFile(path.join(dir, 'dc1.key'), cert.keyPem, { mode: 0o600 });
    await writeFile(path.join(dir, 'ca.crt'), pki.caPem);
    await writeFile(path.join(dir, 'specs.yaml'), stringifySpecs([specs.connector('dc1', CLUSTER, { cidrs: ['10.0.0.0/8'] })]));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function run(args: string[]): Promise<void> {
    const program = new Command('causeway').exitOverride();
    registerConnectorCommand(program, {
      logDestination: new Writable({ write: (_c: Buffer, _e, cb) => cb() }),
      onStarted: (parts) => {
        void Promise.all(parts.map((p) => p.close()));
      },
    });
    await program.parseAsync(['node', 'causeway', 'connector', ...args]);
  }
  const files = (over: Partial<Record<'cert' | 'key' | 'ca' | 'config', string>> = {}): string[] => [
    '--name', 'dc1',
    '--config', over.config ?? path.join(dir, 'specs.yaml'),
    '--cert', over.cert ?? path.join(dir, 'dc1.crt'),
    '--key', over.key ?? path.join(dir, 'dc1.key'),
    '--ca', over.ca ?? path.join(dir, 'ca.crt'),
  ];
  const refused = (flag: string) => (err: Error & { code?: string }): boolean => err.code === 'connector-file-unsafe' && err.message.includes(flag) && /chmod go-w/.test(err.message);

  void test('CN-09 files of our own in a private directory are accepted (the connector starts)', async () => {
    await run(files());
  });

  void test('CN-09 a group-writable key is refused, naming --key', async (t) => {
    const key = path.join(dir, 'gw.key');
    await writeFile(key, 'x', { mode: 0o600 });
    await chmod(key, 0o620);
    t.after(() => rm(key));
    await assert.rejects(run(files({ key })), refused('--key'));
  });

  void test('CN-09 a world-writable CA is refused, naming --ca', async (t) => {
    const ca = path.join(dir, 'ww-ca.crt');
    await writeFile(ca, pki.caPem);
    await chmod(ca, 0o646);
    t.after(() => rm(ca));
    await assert.rejects(run(files({ ca })), refused('--ca'));
  });

  void test('CN-09 a spec file owned by another (non-root) user is refused, naming --config', { skip: process.getuid?.() !== 0 ? 'needs root to give a file away' : false }, async (t) => {
    const config = path.join(dir, 'theirs.yaml');
    await writeFile(config, stringifySpecs([specs.connector('dc1', CLUSTER, { cidrs: ['0.0.0.0/0'] })]), { mode: 0o644 });
    await chown(config, other, other);
    t.after(() => rm(config));
    await assert.rejects(run(files({ config })), refused('--config'));
  });

  void test('CN-09 a certificate in a world-writable directory (no sticky bit) is refused, also through a symlink from a safe place', async (t) => {
    const open = path.join(dir, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    const cert = path.join(open, 'dc1.crt');
    await writeFile(cert, 'x');
    const link = path.join(dir, 'link.crt');
    await symlink(cert, link);
    t.after(() => rm(open, { recursive: true, force: true }));
    t.after(() => rm(link, { force: true }));
    await assert.rejects(run(files({ cert })), refused('--cert'));
    await assert.rejects(run(files({ cert: link })), refused('--cert'));
  });

  void test('CN-09 a group-writable --data-dir is refused before anything is enrolled', async (t) => {
    const data = path.join(dir, 'data');
    await mkdir(data, { mode: 0o700 });
    await chmod(data, 0o770);
    t.after(() => rm(data, { recursive: true, force: true }));
    await assert.rejects(run(['--control-plane', 'https://127.0.0.1:1', '--join-token', 't', '--ca-pin', `sha256:${'0'.repeat(64)}`, '--data-dir', data]), refused('--data-dir'));
  });

  void test('CN-09 the check itself: sticky world-writable directories above are fine (like /tmp), a missing file is left to the reader, root-owned files are fine', async () => {
    assert.equal(statSync(os.tmpdir()).mode & 0o1000, 0o1000, 'the temp directory is sticky');
    assert.equal(await unsafePathProblem(path.join(dir, 'dc1.key')), undefined);
    assert.equal(await unsafePathProblem(path.join(dir, 'does-not-exist.key')), undefined);
    assert.equal(await unsafePathProblem('/etc/passwd', { uid: other }), undefined, 'root-owned and not writable by others is fine for anyone');
    assert.match((await unsafePathProblem(path.join(dir, 'does-not-exist.key'), { uid: other })) ?? '', process.getuid?.() === 0 ? /^$/ : /owned by another user/);
  });
});
