/**
 * Raw HTTP/2 frames for attack tests (THREATS AT-12, CN-05): never imported by product code.
 *
 * node:http2 refuses to send most of what an attacker sends (CONTINUATION floods, HPACK bombs, DATA
 * on streams that were never opened, PINGs without end), so these tests write frames by hand over a
 * TLS socket that negotiated the tunnel ALPN. Only what the tests need: frame encoding, a streaming
 * frame reader, and HPACK literals and indexed fields without Huffman coding (RFC 7541 §5, §6).
 */
import tls from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { mtlsClientOptions, mtlsServerOptions } from '../pki/index.ts';
import { TUNNEL_ALPN } from './protocol.ts';

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** A SETTINGS frame; pairs are [id, value]. */
export function settingsFrame(pairs: Array<[number, number]> = [], ack = false): Buffer {
  const payload = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, ack ? FLAG.ACK : 0, 0, payload);
}

export function pingFrame(n: number, ack = false): Buffer {
  const payload = Buffer.alloc(8);
  payload.writeUInt32BE(n >>> 0, 4);
  return frame(FRAME.PING, ack ? FLAG.ACK : 0, 0, payload);
}

export function rstFrame(streamId: number, code = 0x8 /* CANCEL */): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code, 0);
  return frame(FRAME.RST_STREAM, 0, streamId, payload);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(increment, 0);
  return frame(FRAME.WINDOW_UPDATE, 0, streamId, payload);
}

// HPACK (RFC 7541), no Huffman.

/** An integer with an N-bit prefix; `first` carries the pattern bits above the prefix. */
export function hpackInt(value: number, prefixBits: number, first: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

function hpackString(s: string | Buffer): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([hpackInt(bytes.length, 7, 0x00), bytes]);
}

/** Literal field without indexing, new name (§6.2.2). */
export function literal(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** Literal field with incremental indexing, new name (§6.2.1): enters the dynamic table. */
export function literalIndexed(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** Literal field without indexing whose name is static-table entry `index` (§6.2.2). */
export function literalStaticName(index: number, value: string): Buffer {
  return Buffer.concat([hpackInt(index, 4, 0x00), hpackString(value)]);
}

/** An indexed field (§6.1): static 1–61, dynamic from 62. */
export function indexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

/** A tunnel request header block: CONNECT to `authority` (static :authority is 1, :method is 2). */
export function connectBlock(authority: string): Buffer {
  return Buffer.concat([literalStaticName(2, 'CONNECT'), literalStaticName(1, authority)]);
}

/** `:status: 200` (static index 8). */
export const STATUS_200 = indexed(8);

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** Splits a byte stream into frames; skips the client preface when told to expect it. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);
  #preface: boolean;

  constructor(expectPreface = false) {
    this.#preface = expectPreface;
  }

  push(chunk: Buffer): Frame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    if (this.#preface) {
      if (this.#buf.length < PREFACE.length) return [];
      this.#buf = this.#buf.subarray(PREFACE.length);
      this.#preface = false;
    }
    const out: Frame[] = [];
    while (this.#buf.length >= 9) {
      const length = this.#buf.readUIntBE(0, 3);
      if (this.#buf.length < 9 + length) break;
      out.push({ type: this.#buf[3] ?? 0, flags: this.#buf[4] ?? 0, streamId: this.#buf.readUInt32BE(5) & 0x7fffffff, payload: this.#buf.subarray(9, 9 + length) });
      this.#buf = this.#buf.subarray(9 + length);
    }
    return out;
  }
}

/** The GOAWAY error code of a frame, or undefined. */
export function goawayCode(f: Frame): number | undefined {
  return f.type === FRAME.GOAWAY && f.payload.length >= 8 ? f.payload.readUInt32BE(4) : undefined;
}

export interface RawPeer {
  socket: tls.TLSSocket;
  /** Every frame received so far. */
  frames: Frame[];
  /** Resolves when the socket closes. */
  closed: Promise<void>;
  /** Called for each frame as it arrives. */
  onFrame(listener: (f: Frame) => void): void;
  /** The first GOAWAY received, if any. */
  goaway(): Frame | undefined;
  /** Bytes received from the other side. */
  bytesReceived(): number;
}

function wrap(socket: tls.TLSSocket, expectPreface: boolean, read: boolean): RawPeer {
  const frames: Frame[] = [];
  const listeners: Array<(f: Frame) => void> = [];
  const reader = new FrameReader(expectPreface);
  let received = 0;
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  if (read) {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      for (const f of reader.push(chunk)) {
        // Keep only control frames and headers: DATA payloads could be large.
        frames.push(f.type === FRAME.DATA ? { ...f, payload: Buffer.alloc(0) } : f);
        // Acknowledge like any peer would, so the victim's keepalive keeps the tunnel up.
        if (f.type === FRAME.PING && (f.flags & FLAG.ACK) === 0 && !socket.destroyed) socket.write(frame(FRAME.PING, FLAG.ACK, 0, f.payload));
        if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0 && !socket.destroyed) socket.write(settingsFrame([], true));
        for (const l of listeners) l(f);
      }
    });
  }
  return {
    socket,
    frames,
    closed,
    onFrame: (l) => listeners.push(l),
    goaway: () => frames.find((f) => f.type === FRAME.GOAWAY),
    bytesReceived: () => received,
  };
}

/**
 * A "connector" that speaks HTTP/2 by hand: dials the access tier with `cert` and the tunnel ALPN
 * and sends the server's SETTINGS. It reads (and records) what the access tier sends unless `read`
 * is false, which leaves the access tier's frames (PING and SETTINGS acknowledgements) unread.
 */
export function rawConnector(port: number, cert: { certPem: string; keyPem: string }, caPem: string, opts: { read?: boolean } = {}): Promise<RawPeer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ ...mtlsClientOptions({ caPem, certPem: cert.certPem, keyPem: cert.keyPem, expectServerType: 'access-tier' }), host: '127.0.0.1', port, ALPNProtocols: [TUNNEL_ALPN] });
    const peer = wrap(socket, true, opts.read ?? true);
    socket.once('secureConnect', () => {
      socket.write(settingsFrame([[0x3, 100]]));
      resolve(peer);
    });
    socket.once('error', reject);
  });
}

export interface RawAccessTier {
  port: number;
  /** Resolves with the next connector tunnel, the client preface and SETTINGS already sent. */
  next(): Promise<RawPeer>;
  close(): Promise<void>;
}

/**
 * An "access tier" that speaks HTTP/2 by hand: a TLS server with `cert` on 127.0.0.1 port 0 taking
 * connector tunnels; for each it writes the client preface and SETTINGS and hands the socket over.
 */
export async function rawAccessTier(cert: { certPem: string; keyPem: string }, caPem: string, opts: { read?: boolean } = {}): Promise<RawAccessTier> {
  const waiting: Array<(p: RawPeer) => void> = [];
  const ready: RawPeer[] = [];
  const sockets = new Set<Socket>();
  const server = tls.createServer({ ...mtlsServerOptions({ caPem, certPem: cert.certPem, keyPem: cert.keyPem }), ALPNProtocols: [TUNNEL_ALPN] }, (socket) => {
    const peer = wrap(socket, false, opts.read ?? true);
    socket.write(Buffer.concat([PREFACE, settingsFrame([[0x2, 0]])]));
    const w = waiting.shift();
    if (w !== undefined) w(peer);
    else ready.push(peer);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    next: () => {
      const p = ready.shift();
      return p !== undefined ? Promise.resolve(p) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Writes frames in batches, waiting for drain, never more than `max` frames; stops when the socket is gone or stays full for 2 s. */
export async function flood(socket: tls.TLSSocket, make: (i: number) => Buffer, max: number, batch = 500): Promise<number> {
  let sent = 0;
  while (sent < max && !socket.destroyed && socket.writable) {
    const n = Math.min(batch, max - sent);
    const chunk = Buffer.concat(Array.from({ length: n }, (_, k) => make(sent + k)));
    sent += n;
    if (!socket.write(chunk) && !(await drained(socket, 2000))) break;
  }
  return sent;
}

function drained(socket: tls.TLSSocket, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onClose = (): void => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('drain', onDrain);
    socket.once('close', onClose);
  });
}
