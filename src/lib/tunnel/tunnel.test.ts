import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { constants as h2 } from 'node:http2';
import type { ClientHttp2Session, ServerHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { mtlsClientOptions, mtlsServerOptions } from '../pki/index.ts';
import { dialBackend } from './dial.ts';
import { freePort, makeTestPki, startBlackholeRelay, startEchoServer, startGreetingServer, eventually } from './harness.testing.ts';
import type { TestPki } from './harness.testing.ts';
import { TUNNEL_ALPN, TUNNEL_HEADER, readRefusal, readTunnelRequest, tunnelRequestHeaders } from './protocol.ts';
import { abortDuplex, relay } from './relay.ts';
import { openTunnelClient, serveTunnel } from './session.ts';
import type { TunnelSessionOptions } from './session.ts';
import { DEFAULT_TUNNEL_LIMITS } from './settings.ts';

let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});

void describe('tunnel protocol', () => {
  void test('request headers round-trip, with identity values percent-encoded so no byte can break a header', () => {
    const headers = tunnelRequestHeaders('db.internal:5432', { session: 's-1', service: 'pg', user: 'ann\r\nx: y', device: 'd 1' });
    assert.equal(headers[TUNNEL_HEADER.user], 'ann%0D%0Ax%3A%20y');
    const read = readTunnelRequest(headers as Record<string, string>);
    assert.ok(read.ok);
    assert.deepEqual(read.target, { host: 'db.internal', port: 5432, kind: 'dns' });
    assert.deepEqual(read.meta, { session: 's-1', service: 'pg', user: 'ann\r\nx: y', device: 'd 1' });
  });

  void test('the connector refuses anything but a CONNECT to a canonical host:port (LP-03 forms included)', () => {
    for (const [headers, why] of [
      [{ ':method': 'GET', ':authority': 'a.example:1' }, 'GET'],
      [{ ':method': 'CONNECT' }, 'no authority'],
      [{ ':method': 'CONNECT', ':authority': '127.1:80' }, 'short IPv4'],
      [{ ':method': 'CONNECT', ':authority': '2130706433:80' }, 'decimal IPv4'],
      [{ ':method': 'CONNECT', ':authority': 'a.example' }, 'no port'],
      [{ ':method': 'CONNECT', ':authority': 'user@a.example:1' }, 'userinfo'],
    ] as const) {
      const read = readTunnelRequest(headers);
      assert.equal(read.ok, false, why);
      if (!read.ok) assert.equal(read.refusal, 'bad-request');
    }
  });

  void test('only known refusal reasons are read back', () => {
    assert.equal(readRefusal({ [TUNNEL_HEADER.reason]: 'backend-timeout' }), 'backend-timeout');
    assert.equal(readRefusal({ [TUNNEL_HEADER.reason]: 'made-up' }), undefined);
    assert.equal(readRefusal({}), undefined);
  });
});

/** Two connected TCP sockets through a throwaway server. */
async function socketPair(): Promise<{ a: net.Socket; b: net.Socket; close: () => Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const b = await accepted;
  await new Promise<void>((r) => (a.connecting ? a.once('connect', () => r()) : r()));
  // Resets are part of what these tests provoke; each test asserts the errors it expects.
  a.on('error', () => undefined);
  b.on('error', () => undefined);
  return { a, b, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function collect(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

void describe('relay', { timeout: 10_000 }, () => {
  void test('carries bytes both ways and propagates half-close in each direction independently', async (t) => {
    const left = await socketPair();
    const right = await socketPair();
    t.after(async () => {
      for (const s of [left.a, left.b, right.a, right.b]) s.destroy();
      await left.close();
      await right.close();
    });
    // user = left.a … [left.b ⇄ relay ⇄ right.a] … right.b = backend
    const r = relay(left.b, right.a);
    const atBackend = collect(right.b);
    const atUser = collect(left.a);
    left.a.end('request');
    assert.equal((await atBackend).toString(), 'request');
    // The user has half-closed; the backend can still answer at length.
    right.b.write('response part 1, ');
    right.b.end('part 2');
    assert.equal((await atUser).toString(), 'response part 1, part 2');
    const result = await r.done;
    assert.equal(result.outcome, 'done');
    assert.equal(left.b.bytesRead, 7);
    assert.equal(right.a.bytesRead, 23);
  });

  void test('a reset on one side resets the other at once (never a clean FIN), so nothing hangs', async (t) => {
    const left = await socketPair();
    const right = await socketPair();
    t.after(async () => {
      for (const s of [left.a, left.b, right.a, right.b]) s.destroy();
      await left.close();
      await right.close();
    });
    const r = relay(left.b, right.a);
    const backendError = new Promise<string | undefined>((resolve) => right.b.once('error', (err: NodeJS.ErrnoException) => resolve(err.code)));
    left.a.resetAndDestroy();
    const result = await r.done;
    assert.ok(result.outcome === 'client-error' || result.outcome === 'client-closed', result.outcome);
    assert.equal(await backendError, 'ECONNRESET');
  });

  void test('abort(reason) cuts both sides and reports the reason', async (t) => {
    const left = await socketPair();
    const right = await socketPair();
    t.after(async () => {
      for (const s of [left.a, left.b, right.a, right.b]) s.destroy();
      await left.close();
      await right.close();
    });
    left.a.on('error', () => undefined);
    right.b.on('error', () => undefined);
    const r = relay(left.b, right.a);
    r.abort('cert-revoked');
    assert.deepEqual(await r.done, { outcome: 'aborted', detail: 'cert-revoked' });
    assert.ok(left.b.destroyed && right.a.destroyed);
  });

  void test('aborting a socket whose FIN is under way closes it (no leaked descriptor) and resets one that did not', async (t) => {
    const pair = await socketPair();
    const other = await socketPair();
    t.after(async () => {
      for (const s of [pair.a, pair.b, other.a, other.b]) s.destroy();
      await pair.close();
      await other.close();
    });
    // The FIN is still being sent (libuv's shutdown request in flight) when the abort comes.
    pair.b.end('last bytes');
    const closed = new Promise<void>((r) => pair.b.once('close', () => r()));
    abortDuplex(pair.b);
    await closed;
    const reset = new Promise<string | undefined>((r) => other.a.once('error', (err: NodeJS.ErrnoException) => r(err.code)));
    abortDuplex(other.b);
    assert.equal(await reset, 'ECONNRESET');
  });

  void test('a side that closed before the relay started still settles it', async (t) => {
    const left = await socketPair();
    const right = await socketPair();
    t.after(async () => {
      for (const s of [left.a, left.b, right.a, right.b]) s.destroy();
      await left.close();
      await right.close();
    });
    left.b.destroy();
    await new Promise((r) => left.b.once('close', r));
    const result = await relay(left.b, right.a).done;
    assert.equal(result.outcome, 'client-closed');
    assert.ok(right.a.destroyed);
  });
});

void describe('dialBackend', { timeout: 10_000 }, () => {
  void test('connects with TCP_NODELAY to a listening backend', async (t) => {
    const echo = await startEchoServer();
    t.after(() => echo.close());
    const result = await dialBackend({ host: '127.0.0.1', port: echo.port, kind: 'ipv4' });
    assert.ok(result.ok);
    result.socket.destroy();
  });

  void test('a closed port is backend-unreachable with the errno as detail', async () => {
    const port = await freePort();
    const result = await dialBackend({ host: '127.0.0.1', port, kind: 'ipv4' });
    assert.deepEqual(result, { ok: false, reason: 'backend-unreachable', detail: 'ECONNREFUSED' });
  });

  void test('a backend that never answers is backend-timeout after the connect timeout, and the socket is gone', async () => {
    const stuck = new net.Socket();
    const result = await dialBackend({ host: 'never.invalid', port: 1, kind: 'dns' }, { dialer: () => stuck, timeoutMs: 50 });
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.reason, 'backend-timeout');
    assert.ok(stuck.destroyed);
  });

  void test('aborting the dial (the user went away) gives up at once', async () => {
    const stuck = new net.Socket();
    const controller = new AbortController();
    const pending = dialBackend({ host: 'never.invalid', port: 1, kind: 'dns' }, { dialer: () => stuck, timeoutMs: 60_000, signal: controller.signal });
    controller.abort();
    assert.deepEqual(await pending, { ok: false, reason: 'backend-unreachable', detail: 'aborted' });
    assert.ok(stuck.destroyed);
  });
});

interface TunnelPair {
  client: ClientHttp2Session;
  server: ServerHttp2Session;
  serverSocket: tls.TLSSocket;
  close: () => Promise<void>;
}

/**
 * A tunnel like the real one: the "connector" dials the "access tier" (optionally through a relay),
 * the access tier runs the HTTP/2 client over the accepted socket, the connector the server.
 */
async function tunnelPair(opts: { via?: (port: number) => Promise<number>; session?: TunnelSessionOptions; onStream?: (s: ServerHttp2Session) => void } = {}): Promise<TunnelPair> {
  const at = await pki.issue('access-tier', { name: 'edge-1' });
  const cn = await pki.issue('connector', { name: 'dc1' });
  const server = tls.createServer({ ...mtlsServerOptions({ caPem: pki.caPem, certPem: at.certPem, keyPem: at.keyPem }), ALPNProtocols: [TUNNEL_ALPN] });
  const accepted = new Promise<ClientHttp2Session>((resolve) => {
    server.once('secureConnection', (socket: tls.TLSSocket) => resolve(openTunnelClient(socket, opts.session).session));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const listenPort = (server.address() as AddressInfo).port;
  const dialPort = opts.via === undefined ? listenPort : await opts.via(listenPort);
  const serverSocket = tls.connect({ ...mtlsClientOptions({ caPem: pki.caPem, certPem: cn.certPem, keyPem: cn.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port: dialPort, ALPNProtocols: [TUNNEL_ALPN] });
  await new Promise<void>((r, j) => {
    serverSocket.once('secureConnect', () => r());
    serverSocket.once('error', j);
  });
  const { session: serverSession } = serveTunnel(serverSocket, opts.session);
  serverSession.on('error', () => undefined);
  opts.onStream?.(serverSession);
  const client = await accepted;
  client.on('error', () => undefined);
  return {
    client,
    server: serverSession,
    serverSocket,
    close: async () => {
      client.destroy();
      serverSession.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function answerEveryStream(session: ServerHttp2Session): void {
  session.on('stream', (stream) => {
    stream.on('error', () => undefined);
    stream.respond({ ':status': 200 });
    stream.resume();
    stream.on('end', () => stream.end());
  });
}

function openStream(client: ClientHttp2Session): Promise<ReturnType<ClientHttp2Session['request']>> {
  return new Promise((resolve, reject) => {
    const stream = client.request(tunnelRequestHeaders('x.example:1', { session: 's', service: 'svc' }), { endStream: false });
    stream.on('error', () => undefined);
    stream.once('response', () => resolve(stream));
    stream.once('close', () => reject(new Error(`stream closed before its response (rst ${String(stream.rstCode)})`)));
  });
}

void describe('tunnel sessions', { timeout: 120_000 }, () => {
  void test('a stream is a byte pipe with half-close both ways over the tuned session', async (t) => {
    const backend = await startGreetingServer('hello from the backend');
    const pair = await tunnelPair({
      onStream: (s) =>
        s.on('stream', (stream) => {
          void dialBackend({ host: '127.0.0.1', port: backend.port, kind: 'ipv4' }).then((d) => {
            assert.ok(d.ok);
            stream.respond({ ':status': 200 });
            void relay(stream, d.socket).done;
          });
        }),
    });
    t.after(async () => {
      await pair.close();
      await backend.close();
    });
    const stream = await openStream(pair.client);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((r) => stream.once('end', () => r()));
    stream.end('hello from the user');
    assert.equal((await backend.received).toString(), 'hello from the user');
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'hello from the backend');
    assert.equal(pair.client.remoteSettings.initialWindowSize, DEFAULT_TUNNEL_LIMITS.streamWindow);
    assert.equal(pair.client.remoteSettings.maxConcurrentStreams, DEFAULT_TUNNEL_LIMITS.maxStreams);
    // The connection window was opened to 64 MiB (less the few bytes of this test's data in flight).
    assert.ok((pair.server.state.localWindowSize ?? 0) > DEFAULT_TUNNEL_LIMITS.sessionWindow - 1024);
    assert.ok((pair.client.state.localWindowSize ?? 0) > DEFAULT_TUNNEL_LIMITS.sessionWindow - 1024);
  });

  void test('bulk data both ways at once on one stream does not deadlock the tunnel (Node stops reading while its own write is pending)', async (t) => {
    const size = 48 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 7);
    const pump = (stream: Duplex): void => {
      let left = size;
      const go = (): void => {
        while (left > 0) {
          left -= chunk.length;
          if (!stream.write(chunk)) {
            stream.once('drain', go);
            return;
          }
        }
        stream.end();
      };
      go();
    };
    const count = (stream: Duplex): Promise<number> =>
      new Promise((resolve) => {
        let n = 0;
        stream.on('data', (c: Buffer) => {
          n += c.length;
        });
        stream.once('end', () => resolve(n));
      });
    let serverReceived: Promise<number> = Promise.resolve(0);
    const pair = await tunnelPair({
      // Long keepalive: the deadlock must show as a stall, not be hidden by a reconnect.
      session: { keepaliveTimeoutMs: 60_000 },
      onStream: (s) =>
        s.on('stream', (stream) => {
          stream.respond({ ':status': 200 });
          serverReceived = count(stream);
          pump(stream);
        }),
    });
    t.after(() => pair.close());
    const stream = await openStream(pair.client);
    const clientReceived = count(stream);
    pump(stream);
    assert.equal(await clientReceived, size);
    assert.equal(await serverReceived, size);
  });

  void test('10,000 aborted streams (RST_STREAM CANCEL) on one tunnel leave it working', async (t) => {
    const pair = await tunnelPair({ onStream: answerEveryStream });
    t.after(() => pair.close());
    let goaway = false;
    pair.client.once('goaway', () => {
      goaway = true;
    });
    const started = performance.now();
    const batch = 200;
    for (let i = 0; i < 10_000; i += batch) {
      await Promise.all(
        Array.from({ length: batch }, async () => {
          const stream = await openStream(pair.client);
          const closed = new Promise((r) => stream.once('close', r));
          stream.close(h2.NGHTTP2_CANCEL);
          await closed;
        }),
      );
    }
    t.diagnostic(`10,000 open+abort cycles in ${Math.round(performance.now() - started)} ms`);
    assert.equal(goaway, false);
    assert.equal(pair.client.destroyed, false);
    const stream = await openStream(pair.client);
    stream.close(h2.NGHTTP2_CANCEL);
  });

  void test('10,000 idle streams fit on one tunnel (memory per stream reported)', async (t) => {
    const pair = await tunnelPair({ onStream: answerEveryStream });
    t.after(() => pair.close());
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const before = process.memoryUsage();
    const streams: Array<ReturnType<ClientHttp2Session['request']>> = [];
    for (let i = 0; i < 10_000; i += 500) {
      streams.push(...(await Promise.all(Array.from({ length: 500 }, () => openStream(pair.client)))));
    }
    gc?.();
    const afterOpen = process.memoryUsage();
    const perStream = (afterOpen.rss - before.rss) / streams.length;
    const heapPerStream = (afterOpen.heapUsed - before.heapUsed) / streams.length;
    t.diagnostic(`10,000 idle streams, both tunnel ends in this process: ${(perStream / 1024).toFixed(1)} KiB RSS and ${(heapPerStream / 1024).toFixed(1)} KiB JS heap per stream${gc === undefined ? ' (run with --expose-gc for steadier numbers)' : ''}`);
    assert.equal(pair.client.state.nextStreamID, 2 * 10_000 + 1);
    assert.equal(streams.filter((s) => !s.closed).length, 10_000);
    await Promise.all(
      streams.map(
        (s) =>
          new Promise<void>((r) => {
            s.once('close', () => r());
            s.resume();
            s.end();
          }),
      ),
    );
  });

  void test('CN-06 a half-open tunnel (peer silent, no FIN) is declared dead by the PING keepalive on both ends; pending streams fail and sockets close', async (t) => {
    let relayHandle: Awaited<ReturnType<typeof startBlackholeRelay>> | undefined;
    const deaths: string[] = [];
    const pair = await tunnelPair({
      via: async (port) => {
        relayHandle = await startBlackholeRelay(port);
        return relayHandle.port;
      },
      session: { keepaliveIntervalMs: 100, keepaliveTimeoutMs: 400, onDead: (d) => deaths.push(d) },
      onStream: answerEveryStream,
    });
    t.after(async () => {
      await pair.close();
      await relayHandle?.close();
    });
    const stream = await openStream(pair.client);
    const streamClosed = new Promise<void>((r) => stream.once('close', () => r()));
    relayHandle?.blackhole();
    await streamClosed;
    await eventually(() => (pair.client.destroyed && pair.server.destroyed && pair.serverSocket.destroyed ? true : undefined), 5000, 'both ends destroyed');
    assert.equal(deaths.length, 2);
    assert.match(deaths[0] ?? '', /no PING answer/);
  });
});
