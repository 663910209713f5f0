/**
 * A small RFC 6455 implementation: the server side of the opening handshake done by hand on the
 * raw socket (the `ws` package refuses subprotocols such as `SPDY/3.1+portforward.k8s.io` because
 * `/` is not a token character, and kubectl 1.30+ sends exactly that), a frame codec whose parser
 * returns errors instead of throwing, and a connection that reassembles fragments, answers pings
 * and runs the closing handshake. No extensions (no permessage-deflate).
 */
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Unsupported: 1003,
  NoStatus: 1005,
  Abnormal: 1006,
  InvalidPayload: 1007,
  TooBig: 1009,
  InternalError: 1011,
} as const;

export interface WsFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
  /** Whether the frame arrived masked. */
  masked: boolean;
}

export interface WsProtocolError {
  code: number;
  message: string;
}

export interface EncodeOptions {
  fin?: boolean;
  /** Mask with this key (clients must mask); true picks a random key. */
  mask?: Buffer | boolean;
  /** Reserved bits, only for tests that need a malformed frame. */
  rsv?: number;
}

export function encodeFrame(opcode: number, payload: Buffer, options: EncodeOptions = {}): Buffer {
  const fin = options.fin ?? true;
  const key = options.mask === true ? randomBytes(4) : options.mask === false || options.mask === undefined ? undefined : options.mask;
  const len = payload.length;
  const lenBytes = len < 126 ? 0 : len < 0x10000 ? 2 : 8;
  const header = Buffer.alloc(2 + lenBytes + (key === undefined ? 0 : 4));
  header[0] = (fin ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | (opcode & 0x0f);
  header[1] = (key === undefined ? 0 : 0x80) | (lenBytes === 0 ? len : lenBytes === 2 ? 126 : 127);
  if (lenBytes === 2) header.writeUInt16BE(len, 2);
  else if (lenBytes === 8) header.writeBigUInt64BE(BigInt(len), 2);
  if (key === undefined) return Buffer.concat([header, payload]);
  key.copy(header, 2 + lenBytes);
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([header, masked]);
}

export function closePayload(code: number, reason = ''): Buffer {
  const r = Buffer.from(reason);
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

export interface FrameParserOptions {
  /** Server side: every client frame must be masked (RFC 6455 §5.1). */
  requireMask?: boolean;
  /** Largest frame payload accepted; default 64 MiB. */
  maxPayload?: number;
}

/**
 * An incremental frame parser. push() never throws: it returns the complete frames so far, or an
 * error (after which the parser stays failed and the connection must be closed).
 */
export class FrameParser {
  private buffer: Buffer = Buffer.alloc(0);
  private failed: WsProtocolError | undefined;
  private readonly requireMask: boolean;
  private readonly maxPayload: number;

  constructor(options: FrameParserOptions = {}) {
    this.requireMask = options.requireMask ?? false;
    this.maxPayload = options.maxPayload ?? 64 * 1024 * 1024;
  }

  push(chunk: Buffer): { frames: WsFrame[]; error?: WsProtocolError } {
    const frames: WsFrame[] = [];
    if (this.failed !== undefined) return { frames, error: this.failed };
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const result = this.next();
      if (result === undefined) break;
      if ('code' in result) {
        this.failed = result;
        this.buffer = Buffer.alloc(0);
        return { frames, error: result };
      }
      frames.push(result);
    }
    return { frames };
  }

  private next(): WsFrame | WsProtocolError | undefined {
    const b = this.buffer;
    if (b.length < 2) return undefined;
    const fin = (b[0] & 0x80) !== 0;
    const rsv = (b[0] >> 4) & 0x07;
    const opcode = b[0] & 0x0f;
    const masked = (b[1] & 0x80) !== 0;
    let len = b[1] & 0x7f;
    let offset = 2;
    if (rsv !== 0) return { code: CloseCode.ProtocolError, message: 'reserved bits set without a negotiated extension' };
    if (![0x0, 0x1, 0x2, 0x8, 0x9, 0xa].includes(opcode)) return { code: CloseCode.ProtocolError, message: `unknown opcode ${opcode}` };
    const control = opcode >= 0x8;
    if (control && !fin) return { code: CloseCode.ProtocolError, message: 'fragmented control frame' };
    if (control && len > 125) return { code: CloseCode.ProtocolError, message: 'control frame payload over 125 bytes' };
    if (this.requireMask && !masked) return { code: CloseCode.ProtocolError, message: 'unmasked client frame' };
    if (len === 126) {
      if (b.length < 4) return undefined;
      len = b.readUInt16BE(2);
      offset = 4;
    } else if (len === 127) {
      if (b.length < 10) return undefined;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) return { code: CloseCode.TooBig, message: 'frame length over 2^53' };
      len = Number(big);
      offset = 10;
    }
    if (len > this.maxPayload) return { code: CloseCode.TooBig, message: `frame payload of ${len} bytes is over the limit of ${this.maxPayload}` };
    const keyOffset = offset;
    if (masked) offset += 4;
    if (b.length < offset + len) return undefined;
    let payload = b.subarray(offset, offset + len);
    if (masked) {
      const key = b.subarray(keyOffset, keyOffset + 4);
      const out = Buffer.allocUnsafe(len);
      for (let i = 0; i < len; i++) out[i] = payload[i] ^ key[i & 3];
      payload = out;
    } else {
      payload = Buffer.from(payload);
    }
    this.buffer = b.subarray(offset + len);
    return { fin, opcode, payload, masked };
  }
}

/** Splits a Sec-WebSocket-Protocol header into its offers, without rejecting non-token characters. */
export function parseSubprotocols(header: string | string[] | undefined): string[] {
  const values = Array.isArray(header) ? header : header === undefined ? [] : [header];
  return values.flatMap((v) => v.split(',')).map((s) => s.trim()).filter((s) => s !== '');
}

/** Whether a request is a WebSocket opening handshake (GET, Upgrade: websocket). */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.method === 'GET' && (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
}

export function acceptKey(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64');
}

/** Checks the client's handshake; returns a reason when it is not a valid version-13 opening. */
export function checkHandshake(req: IncomingMessage): string | undefined {
  if (!isWebSocketUpgrade(req)) return 'not a WebSocket upgrade';
  if (!(req.headers.connection ?? '').toLowerCase().split(',').some((t) => t.trim() === 'upgrade')) return 'Connection header lacks upgrade';
  if (req.headers['sec-websocket-version'] !== '13') return 'Sec-WebSocket-Version must be 13';
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || Buffer.from(key, 'base64').length !== 16) return 'Sec-WebSocket-Key must be 16 bytes in base64';
  return undefined;
}

export interface WebSocketEvents {
  message: [data: Buffer, binary: boolean];
  close: [code: number, reason: string];
  /** The peer broke the protocol; the connection is being closed with error.code. */
  protocolError: [err: WsProtocolError];
}

/**
 * One WebSocket connection over an already-upgraded socket. Emits 'message' for each complete
 * (reassembled) data message and 'close' once, when the socket is gone.
 */
export class WebSocketConnection extends EventEmitter<WebSocketEvents> {
  readonly socket: Duplex;
  readonly protocol: string;
  private readonly parser: FrameParser;
  private readonly isServer: boolean;
  private fragments: Buffer[] = [];
  private fragmentOpcode = 0;
  private fragmentBytes = 0;
  private readonly maxMessage: number;
  private closeSent = false;
  private closed = false;
  private closeCode: number = CloseCode.Abnormal;
  private closeReason = '';

  constructor(socket: Duplex, options: { protocol: string; isServer: boolean; head?: Buffer; maxMessage?: number }) {
    super();
    this.socket = socket;
    this.protocol = options.protocol;
    this.isServer = options.isServer;
    this.maxMessage = options.maxMessage ?? 64 * 1024 * 1024;
    this.parser = new FrameParser({ requireMask: options.isServer, maxPayload: this.maxMessage });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => this.onSocketClose());
    socket.on('error', () => socket.destroy());
    socket.on('end', () => {
      // The peer closed its side (after the closing handshake, or abruptly): close ours too.
      if (!socket.writableEnded) socket.end();
    });
    if (options.head !== undefined && options.head.length > 0) this.onData(options.head);
  }

  get isOpen(): boolean {
    return !this.closeSent && !this.closed;
  }

  /** Sends one message; returns the socket's write() result (false: wait for 'drain'). */
  send(data: Buffer | string, binary = true): boolean {
    if (!this.isOpen) return false;
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    return this.socket.write(encodeFrame(binary ? Opcode.Binary : Opcode.Text, payload, { mask: !this.isServer }));
  }

  ping(data: Buffer = Buffer.alloc(0)): void {
    if (this.isOpen) this.socket.write(encodeFrame(Opcode.Ping, data, { mask: !this.isServer }));
  }

  /** Starts the closing handshake; the socket ends when the peer answers (or after 2 s). */
  close(code: number = CloseCode.Normal, reason = ''): void {
    if (this.closeSent || this.closed) return;
    this.closeSent = true;
    this.socket.write(encodeFrame(Opcode.Close, code === CloseCode.NoStatus ? Buffer.alloc(0) : closePayload(code, reason), { mask: !this.isServer }));
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private fail(error: WsProtocolError): void {
    this.emit('protocolError', error);
    this.close(error.code, error.message);
    this.socket.end();
  }

  private onData(chunk: Buffer): void {
    const { frames, error } = this.parser.push(chunk);
    for (const frame of frames) {
      if (this.closed) return;
      this.onFrame(frame);
    }
    if (error !== undefined) this.fail(error);
  }

  private onFrame(frame: WsFrame): void {
    switch (frame.opcode) {
      case Opcode.Ping:
        if (!this.closeSent) this.socket.write(encodeFrame(Opcode.Pong, frame.payload, { mask: !this.isServer }));
        return;
      case Opcode.Pong:
        return;
      case Opcode.Close: {
        if (frame.payload.length === 1) {
          this.fail({ code: CloseCode.ProtocolError, message: 'close frame with a 1-byte payload' });
          return;
        }
        this.closeCode = frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : CloseCode.NoStatus;
        this.closeReason = frame.payload.subarray(2).toString('utf8');
        if (!this.closeSent) {
          this.closeSent = true;
          this.socket.write(encodeFrame(Opcode.Close, frame.payload.subarray(0, 2), { mask: !this.isServer }));
        }
        // The server closes the TCP connection first (RFC 6455 §7.1.1).
        if (this.isServer) this.socket.end();
        return;
      }
      case Opcode.Continuation:
        if (this.fragmentOpcode === 0) {
          this.fail({ code: CloseCode.ProtocolError, message: 'continuation frame without a message to continue' });
          return;
        }
        this.addFragment(frame);
        return;
      default:
        if (this.fragmentOpcode !== 0) {
          this.fail({ code: CloseCode.ProtocolError, message: 'new data frame inside a fragmented message' });
          return;
        }
        this.fragmentOpcode = frame.opcode;
        this.addFragment(frame);
    }
  }

  private addFragment(frame: WsFrame): void {
    this.fragmentBytes += frame.payload.length;
    if (this.fragmentBytes > this.maxMessage) {
      this.fail({ code: CloseCode.TooBig, message: 'message over the size limit' });
      return;
    }
    this.fragments.push(frame.payload);
    if (!frame.fin) return;
    const data = this.fragments.length === 1 ? this.fragments[0] : Buffer.concat(this.fragments);
    const binary = this.fragmentOpcode === Opcode.Binary;
    this.fragments = [];
    this.fragmentOpcode = 0;
    this.fragmentBytes = 0;
    if (!binary && !isUtf8(data)) {
      this.fail({ code: CloseCode.InvalidPayload, message: 'text message is not UTF-8' });
      return;
    }
    if (!this.closeSent) this.emit('message', data, binary);
  }

  private onSocketClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', this.closeCode, this.closeReason);
  }
}

function isUtf8(data: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(data);
    return true;
  } catch {
    return false;
  }
}

/**
 * Completes the server side of the opening handshake with the chosen subprotocol and returns the
 * connection. Call checkHandshake() first.
 */
export function acceptWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, protocol: string): WebSocketConnection {
  const lines = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Accept: ${acceptKey(req.headers['sec-websocket-key']!)}`];
  if (protocol !== '') lines.push(`Sec-WebSocket-Protocol: ${protocol}`);
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  const s = socket as Duplex & { setNoDelay?: (on: boolean) => void };
  s.setNoDelay?.(true);
  return new WebSocketConnection(socket, { protocol, isServer: true, head });
}
