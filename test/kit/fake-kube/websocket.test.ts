import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair } from 'node:stream';
import fc from 'fast-check';
import { acceptKey, closePayload, CloseCode, encodeFrame, FrameParser, Opcode, parseSubprotocols, WebSocketConnection } from './websocket.ts';
import type { WsFrame } from './websocket.ts';

const key = Buffer.from([1, 2, 3, 4]);

void describe('WebSocket frame codec', () => {
  void test('round-trips masked and unmasked frames at every length encoding boundary', () => {
    for (const len of [0, 1, 125, 126, 127, 65535, 65536, 200_000]) {
      const payload = Buffer.alloc(len);
      for (let i = 0; i < len; i++) payload[i] = i & 0xff;
      for (const mask of [undefined, key]) {
        const wire = encodeFrame(Opcode.Binary, payload, { mask });
        const { frames, error } = new FrameParser().push(wire);
        assert.equal(error, undefined);
        assert.equal(frames.length, 1);
        assert.ok(frames[0].payload.equals(payload), `length ${len}`);
        assert.equal(frames[0].masked, mask !== undefined);
      }
    }
  });

  void test('masks with the given key exactly as RFC 6455 §5.3 says', () => {
    const wire = encodeFrame(Opcode.Text, Buffer.from('Hello'), { mask: Buffer.from([0x37, 0xfa, 0x21, 0x3d]) });
    // The RFC's own example: a masked "Hello".
    assert.deepEqual([...wire], [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    assert.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  });

  void test('parses frames split across chunks at every byte', () => {
    const wire = Buffer.concat([encodeFrame(Opcode.Binary, Buffer.from('first'), { mask: key }), encodeFrame(Opcode.Ping, Buffer.from('p'), { mask: key }), encodeFrame(Opcode.Binary, Buffer.alloc(300, 9), { mask: key })]);
    const parser = new FrameParser({ requireMask: true });
    const frames: WsFrame[] = [];
    for (const byte of wire) frames.push(...parser.push(Buffer.of(byte)).frames);
    assert.deepEqual(frames.map((f) => [f.opcode, f.payload.length]), [[Opcode.Binary, 5], [Opcode.Ping, 1], [Opcode.Binary, 300]]);
  });

  void test('X-03 refuses protocol violations with a close code instead of throwing', () => {
    const cases: Array<[string, Buffer, FrameParser, number]> = [
      ['an unmasked client frame', encodeFrame(Opcode.Binary, Buffer.from('x')), new FrameParser({ requireMask: true }), CloseCode.ProtocolError],
      ['reserved bits', encodeFrame(Opcode.Binary, Buffer.from('x'), { rsv: 4 }), new FrameParser(), CloseCode.ProtocolError],
      ['an unknown opcode', encodeFrame(0x3, Buffer.from('x')), new FrameParser(), CloseCode.ProtocolError],
      ['a fragmented control frame', encodeFrame(Opcode.Ping, Buffer.from('x'), { fin: false }), new FrameParser(), CloseCode.ProtocolError],
      ['a control frame over 125 bytes', encodeFrame(Opcode.Ping, Buffer.alloc(126)), new FrameParser(), CloseCode.ProtocolError],
      ['a frame over the size limit', encodeFrame(Opcode.Binary, Buffer.alloc(2000)), new FrameParser({ maxPayload: 1000 }), CloseCode.TooBig],
      ['a 64-bit length over 2^53', Buffer.from([0x82, 0x7f, 0xff, 0, 0, 0, 0, 0, 0, 0]), new FrameParser(), CloseCode.TooBig],
    ];
    for (const [name, wire, parser, code] of cases) {
      const { error } = parser.push(wire);
      assert.equal(error?.code, code, name);
    }
  });

  void test('X-03 the frame parser never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), fc.boolean(), (chunks, requireMask) => {
        const parser = new FrameParser({ requireMask, maxPayload: 4096 });
        for (const chunk of chunks) {
          const result = parser.push(Buffer.from(chunk));
          assert.ok(Array.isArray(result.frames));
        }
      }),
      { numRuns: 3000 },
    );
  });

  void test('splits Sec-WebSocket-Protocol offers without rejecting the SPDY tunnelling token', () => {
    assert.deepEqual(parseSubprotocols('SPDY/3.1+portforward.k8s.io'), ['SPDY/3.1+portforward.k8s.io']);
    assert.deepEqual(parseSubprotocols(['v5.channel.k8s.io, v4.channel.k8s.io', 'channel.k8s.io']), ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'channel.k8s.io']);
    assert.deepEqual(parseSubprotocols(undefined), []);
  });
});

/** A server and a client connection joined back to back. */
function connectionPair(): { server: WebSocketConnection; client: WebSocketConnection } {
  const [a, b] = duplexPair();
  return { server: new WebSocketConnection(a, { protocol: 'p', isServer: true }), client: new WebSocketConnection(b, { protocol: 'p', isServer: false }) };
}

void describe('WebSocket connection', () => {
  void test('reassembles a fragmented message with a ping in the middle, and answers the ping with a pong', async (t) => {
    const [raw, serverSide] = duplexPair();
    const server = new WebSocketConnection(serverSide, { protocol: 'p', isServer: true });
    t.after(() => {
      server.destroy();
      raw.destroy();
    });
    const replies: WsFrame[] = [];
    const parser = new FrameParser();
    raw.on('data', (c: Buffer) => replies.push(...parser.push(c).frames));
    const message = new Promise<[Buffer, boolean]>((resolve) => server.once('message', (data, binary) => resolve([data, binary])));
    raw.write(encodeFrame(Opcode.Binary, Buffer.from('frag-1 '), { fin: false, mask: true }));
    raw.write(encodeFrame(Opcode.Ping, Buffer.from('are you there'), { mask: true }));
    raw.write(encodeFrame(Opcode.Continuation, Buffer.from('frag-2 '), { fin: false, mask: true }));
    raw.write(encodeFrame(Opcode.Continuation, Buffer.from('frag-3'), { fin: true, mask: true }));
    const [data, binary] = await message;
    assert.equal(data.toString(), 'frag-1 frag-2 frag-3');
    assert.equal(binary, true);
    assert.deepEqual(replies.map((f) => [f.opcode, f.payload.toString(), f.masked]), [[Opcode.Pong, 'are you there', false]]);
  });

  void test('a continuation without a message, or a new message inside a fragmented one, closes with 1002', async (t) => {
    for (const frames of [[encodeFrame(Opcode.Continuation, Buffer.from('x'), { mask: true })], [encodeFrame(Opcode.Text, Buffer.from('a'), { fin: false, mask: true }), encodeFrame(Opcode.Binary, Buffer.from('b'), { mask: true })]]) {
      const [raw, serverSide] = duplexPair();
      const server = new WebSocketConnection(serverSide, { protocol: 'p', isServer: true });
      t.after(() => raw.destroy());
      const closeFrame = new Promise<WsFrame>((resolve) => {
        const parser = new FrameParser();
        raw.on('data', (c: Buffer) => {
          const f = parser.push(c).frames.find((x) => x.opcode === Opcode.Close);
          if (f !== undefined) resolve(f);
        });
      });
      const failed = new Promise((resolve) => server.once('protocolError', resolve));
      for (const f of frames) raw.write(f);
      await failed;
      assert.equal((await closeFrame).payload.readUInt16BE(0), CloseCode.ProtocolError);
    }
  });

  void test('text messages must be UTF-8 (1007)', async (t) => {
    const { server, client } = connectionPair();
    t.after(() => {
      server.destroy();
      client.destroy();
    });
    const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)));
    client.socket.write(encodeFrame(Opcode.Text, Buffer.from([0xff, 0xfe]), { mask: true }));
    assert.equal(await closed, CloseCode.InvalidPayload);
  });

  void test('messages flow both ways and the closing handshake ends both sides with the code', async () => {
    const { server, client } = connectionPair();
    const atServer = new Promise<string>((resolve) => server.once('message', (d) => resolve(d.toString())));
    const atClient = new Promise<string>((resolve) => client.once('message', (d) => resolve(d.toString())));
    client.send('from client', false);
    server.send(Buffer.from('from server'));
    assert.equal(await atServer, 'from client');
    assert.equal(await atClient, 'from server');
    const serverClosed = new Promise<[number, string]>((resolve) => server.once('close', (code, reason) => resolve([code, reason])));
    const clientClosed = new Promise<[number, string]>((resolve) => client.once('close', (code, reason) => resolve([code, reason])));
    client.close(CloseCode.GoingAway, 'bye');
    assert.deepEqual(await serverClosed, [CloseCode.GoingAway, 'bye']);
    assert.deepEqual(await clientClosed, [CloseCode.GoingAway, '']);
    assert.equal(server.isOpen, false);
    assert.equal(client.send('late'), false);
  });

  void test('closePayload encodes the code big-endian followed by the reason', () => {
    assert.deepEqual([...closePayload(1000, 'ok')], [0x03, 0xe8, 0x6f, 0x6b]);
  });
});
