import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair } from 'node:stream';
import type { Duplex } from 'node:stream';
import { constants, inflateSync } from 'node:zlib';
import fc from 'fast-check';
import { SPDY3_DICTIONARY } from './dictionary.ts';
import { decodeHeaderBlock, encodeFrame, encodeHeaderBlock, FrameParser, HeaderCompressor, HeaderDecompressor, RstStatus } from './frames.ts';
import type { SpdyFrame, SpdyHeaders } from './frames.ts';
import { DEFAULT_WINDOW, SpdySession } from './session.ts';
import type { SpdyStream } from './session.ts';

function adler32(data: Buffer): number {
  let a = 1;
  let b = 0;
  for (const byte of data) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

const block = Buffer.from([0x78, 0xbb, 1, 2, 3]);

const samples: SpdyFrame[] = [
  { type: 'DATA', streamId: 1, fin: false, data: Buffer.from('hello') },
  { type: 'DATA', streamId: 0x7fffffff, fin: true, data: Buffer.alloc(0) },
  { type: 'SYN_STREAM', streamId: 3, associatedStreamId: 1, priority: 7, slot: 0, fin: false, unidirectional: true, headerBlock: block },
  { type: 'SYN_REPLY', streamId: 3, fin: true, headerBlock: block },
  { type: 'HEADERS', streamId: 5, fin: false, headerBlock: block },
  { type: 'RST_STREAM', streamId: 5, status: RstStatus.Cancel },
  { type: 'SETTINGS', clearSettings: true, entries: [{ flags: 1, id: 7, value: 1 << 20 }, { flags: 0, id: 4, value: 100 }] },
  { type: 'SETTINGS', clearSettings: false, entries: [] },
  { type: 'PING', id: 0xfffffffe },
  { type: 'GOAWAY', lastGoodStreamId: 9, status: 2 },
  { type: 'WINDOW_UPDATE', streamId: 0, delta: 0x7fffffff },
  { type: 'UNKNOWN', frameType: 0x42, flags: 3, payload: Buffer.from('future') },
];

void describe('SPDY/3.1 frames', () => {
  void test('every frame type survives an encode and parse round trip, also fed one byte at a time', () => {
    const wire = Buffer.concat(samples.map((f) => encodeFrame(f)));
    const whole = new FrameParser().push(wire);
    assert.equal(whole.error, undefined);
    assert.deepEqual(whole.frames, samples);
    const parser = new FrameParser();
    const frames: SpdyFrame[] = [];
    for (const byte of wire) frames.push(...parser.push(Buffer.of(byte)).frames);
    assert.deepEqual(frames, samples);
  });

  void test('control frames carry version 3 and the wire layout of the spec', () => {
    const ping = encodeFrame({ type: 'PING', id: 1 });
    assert.deepEqual([...ping], [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]);
    const data = encodeFrame({ type: 'DATA', streamId: 2, fin: true, data: Buffer.from('x') });
    assert.deepEqual([...data], [0, 0, 0, 2, 0x01, 0, 0, 1, 0x78]);
  });

  void test('X-03 malformed frames are reported as errors, and the parser stays failed', () => {
    const cases: Array<[string, Buffer]> = [
      ['wrong version', Buffer.from([0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])],
      ['short PING', Buffer.from([0x80, 0x03, 0, 6, 0, 0, 0, 3, 0, 0, 1])],
      ['SETTINGS count mismatch', Buffer.from([0x80, 0x03, 0, 4, 0, 0, 0, 4, 0, 0, 0, 2])],
      ['short SYN_STREAM', Buffer.from([0x80, 0x03, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1])],
      ['RST_STREAM of 4 bytes', Buffer.from([0x80, 0x03, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1])],
    ];
    for (const [name, bytes] of cases) {
      const parser = new FrameParser();
      const result = parser.push(bytes);
      assert.ok(result.error !== undefined, name);
      assert.ok(parser.push(encodeFrame({ type: 'PING', id: 1 })).error !== undefined, `${name}: stays failed`);
    }
    assert.ok(new FrameParser({ maxFrame: 10 }).push(encodeFrame({ type: 'DATA', streamId: 1, fin: false, data: Buffer.alloc(11) })).error !== undefined);
  });

  void test('X-03 the frame parser never throws on arbitrary bytes in arbitrary chunks', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 16 }), (chunks) => {
        const parser = new FrameParser();
        for (const chunk of chunks) {
          const result = parser.push(Buffer.from(chunk));
          assert.ok(Array.isArray(result.frames));
        }
      }),
      { numRuns: 2000 },
    );
    // Valid frame prefixes followed by garbage, so deep paths are reached too.
    fc.assert(
      fc.property(fc.constantFrom(...samples), fc.uint8Array({ maxLength: 32 }), fc.nat(40), (frame, tail, cut) => {
        const wire = encodeFrame(frame);
        const mangled = Buffer.concat([wire.subarray(0, Math.min(cut, wire.length)), Buffer.from(tail)]);
        new FrameParser().push(mangled);
      }),
      { numRuns: 2000 },
    );
  });

  void test('X-03 the header block decoder never throws and rejects truncated or hostile blocks', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        const result = decodeHeaderBlock(Buffer.from(bytes));
        assert.ok(typeof result === 'string' || typeof result === 'object');
      }),
      { numRuns: 3000 },
    );
    const encoded = encodeHeaderBlock({ port: ['8080'], streamtype: ['data'] });
    for (let i = 0; i < encoded.length; i++) assert.equal(typeof decodeHeaderBlock(encoded.subarray(0, i)), 'string', `cut at ${i}`);
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    assert.match(decodeHeaderBlock(huge) as string, /claims/);
    assert.match(decodeHeaderBlock(encodeHeaderBlock({ A: ['1'] }).fill(0x41, 8, 9)) as string, /lower case/);
  });
});

void describe('SPDY/3 header compression', () => {
  void test('one compression context per direction carries several blocks, with the SPDY/3 dictionary', async () => {
    const compressor = new HeaderCompressor();
    const decompressor = new HeaderDecompressor();
    const blocks: SpdyHeaders[] = [
      { streamtype: ['error'], port: ['8080'], requestid: ['0'] },
      { streamtype: ['data'], port: ['8080'], requestid: ['0'] },
      { streamtype: ['data'], port: ['8080'], requestid: ['1'], 'x-multi': ['a', 'b'] },
      {},
    ];
    const compressed = await Promise.all(blocks.map((b) => compressor.compress(b)));
    // The first block opens a zlib stream that names the dictionary (FDICT) by its Adler-32.
    assert.equal(compressed[0][0] & 0x0f, 8, 'deflate');
    assert.equal(compressed[0][1] & 0x20, 0x20, 'FDICT set');
    assert.equal(compressed[0].readUInt32BE(2), adler32(SPDY3_DICTIONARY));
    assert.equal(SPDY3_DICTIONARY.length, 1423);
    // Later blocks continue the same stream (no new zlib header) and end on a sync flush marker.
    for (const c of compressed) assert.deepEqual([...c.subarray(-4)], [0, 0, 0xff, 0xff]);
    assert.ok(compressed[1].length < compressed[0].length, 'the second block reuses the first one\'s history');
    for (let i = 0; i < blocks.length; i++) assert.deepEqual({ ...(await decompressor.decompress(compressed[i])) as object }, blocks[i]);
    // An independent inflate of the whole direction yields the blocks back to back.
    const all = inflateSync(Buffer.concat(compressed), { dictionary: SPDY3_DICTIONARY, finishFlush: constants.Z_SYNC_FLUSH });
    assert.ok(all.equals(Buffer.concat(blocks.map(encodeHeaderBlock))));
    compressor.close();
    decompressor.close();
  });

  void test('X-03 decompressing garbage resolves to an error and never rejects or throws', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 4 }), async (chunks) => {
        const decompressor = new HeaderDecompressor();
        for (const chunk of chunks) {
          const result = await decompressor.decompress(Buffer.from(chunk));
          assert.ok(typeof result === 'string' || typeof result === 'object');
        }
        decompressor.close();
      }),
      { numRuns: 300 },
    );
    const d = new HeaderDecompressor();
    assert.equal(typeof (await d.decompress(Buffer.from('definitely not zlib'))), 'string');
    assert.equal(typeof (await d.decompress(await new HeaderCompressor().compress({ a: ['b'] }))), 'string', 'stays failed');
    d.close();
  });
});

/** Two sessions joined back to back; both are destroyed in t.after. */
function sessionPair(options: { serverWindowUpdates?: boolean } = {}): { client: SpdySession; server: SpdySession; serverWire: Duplex; clientWire: Duplex } {
  const [clientWire, serverWire] = duplexPair();
  const client = new SpdySession(clientWire, { isServer: false });
  const server = new SpdySession(serverWire, { isServer: true, sendWindowUpdates: options.serverWindowUpdates ?? true });
  return { client, server, clientWire, serverWire };
}

function nextStream(session: SpdySession): Promise<SpdyStream> {
  return new Promise((resolve) => session.once('stream', resolve));
}

function readAll(stream: SpdyStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

void describe('SPDY/3.1 session', () => {
  void test('opens a stream with headers, replies, and carries data both ways with half-close', async (t) => {
    const { client, server } = sessionPair();
    t.after(() => {
      client.destroy();
      server.destroy();
    });
    const incoming = nextStream(server);
    const stream = client.openStream({ streamtype: ['data'], port: ['80'] });
    const replied = new Promise((resolve) => stream.once('reply', resolve));
    const peer = await incoming;
    assert.equal(peer.id, 1);
    assert.equal(peer.header('port'), '80');
    peer.reply({ ok: ['yes'] });
    assert.deepEqual({ ...(await replied) as object }, { ok: ['yes'] });

    const fromClient = readAll(peer);
    stream.end('ping from client');
    assert.equal((await fromClient).toString(), 'ping from client');
    // The server can still write after the client half-closed.
    const fromServer = readAll(stream);
    peer.end('pong from server');
    assert.equal((await fromServer).toString(), 'pong from server');
    assert.equal(client.streams.size, 0, 'a stream closed both ways is forgotten');
  });

  void test('PING is answered by the peer and GOAWAY stops new streams', async (t) => {
    const { client, server } = sessionPair();
    t.after(() => {
      client.destroy();
      server.destroy();
    });
    await client.ping();
    await server.ping();
    const goaway = new Promise<number>((resolve) => client.once('goaway', (last) => resolve(last)));
    server.goAway();
    assert.equal(await goaway, 0);
    assert.throws(() => client.openStream({}), /closing/);
  });

  void test('RST_STREAM from the peer destroys the stream and reports the status', async (t) => {
    const { client, server } = sessionPair();
    t.after(() => {
      client.destroy();
      server.destroy();
    });
    const incoming = nextStream(server);
    const stream = client.openStream({ a: ['1'] });
    const peer = await incoming;
    const reset = new Promise<number>((resolve) => stream.once('reset', resolve));
    peer.reset(RstStatus.RefusedStream);
    assert.equal(await reset, RstStatus.RefusedStream);
    assert.ok(stream.destroyed);
  });

  void test('flow control: a sender stops at the 64 KiB window until WINDOW_UPDATE, then 1 MiB goes through intact', async (t) => {
    const stalled = sessionPair({ serverWindowUpdates: false });
    t.after(() => {
      stalled.client.destroy();
      stalled.server.destroy();
    });
    const incoming = nextStream(stalled.server);
    const stream = stalled.client.openStream({});
    const peer = await incoming;
    let received = 0;
    peer.on('data', (c: Buffer) => (received += c.length));
    stream.write(Buffer.alloc(100_000, 1));
    // Round trips on the same wire prove everything sendable has been sent and read.
    await stalled.client.ping();
    await stalled.server.ping();
    assert.equal(received, DEFAULT_WINDOW, 'exactly one window, then the sender waits');

    const flowing = sessionPair();
    t.after(() => {
      flowing.client.destroy();
      flowing.server.destroy();
    });
    const incoming2 = nextStream(flowing.server);
    const sender = flowing.client.openStream({});
    const receiver = await incoming2;
    const payload = Buffer.alloc(1 << 20);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    const got = readAll(receiver);
    sender.end(payload);
    assert.ok((await got).equals(payload));
  });

  void test('a protocol error from the peer makes the session send GOAWAY and close', async (t) => {
    const [wire, serverWire] = duplexPair();
    const server = new SpdySession(serverWire, { isServer: true });
    t.after(() => server.destroy());
    const frames: SpdyFrame[] = [];
    const parser = new FrameParser();
    wire.on('data', (c: Buffer) => frames.push(...parser.push(c).frames));
    const errored = new Promise((resolve) => server.once('protocolError', resolve));
    const ended = new Promise((resolve) => wire.once('end', resolve));
    wire.write(Buffer.from([0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]));
    await errored;
    await ended;
    assert.ok(frames.some((f) => f.type === 'GOAWAY' && f.status === 1));
  });
});
