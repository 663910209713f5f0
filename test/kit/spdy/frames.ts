/**
 * SPDY/3.1 framing (the wire Kubernetes uses for exec, attach and port-forward): frame encoding,
 * an incremental parser that returns errors instead of throwing, and header blocks compressed
 * with zlib and the SPDY/3 dictionary, one compression context per direction for the whole
 * session, each block ended with Z_SYNC_FLUSH.
 */
import { constants, createDeflate, createInflate } from 'node:zlib';
import type { Deflate, Inflate } from 'node:zlib';
import { SPDY3_DICTIONARY } from './dictionary.ts';

export const SPDY_VERSION = 3;

export const FrameType = {
  SynStream: 1,
  SynReply: 2,
  RstStream: 3,
  Settings: 4,
  Ping: 6,
  GoAway: 7,
  Headers: 8,
  WindowUpdate: 9,
} as const;

export const Flag = { Fin: 0x01, Unidirectional: 0x02, ClearSettings: 0x01 } as const;

export const RstStatus = {
  ProtocolError: 1,
  InvalidStream: 2,
  RefusedStream: 3,
  UnsupportedVersion: 4,
  Cancel: 5,
  InternalError: 6,
  FlowControlError: 7,
  StreamInUse: 8,
  StreamAlreadyClosed: 9,
  FrameTooLarge: 11,
} as const;

export const GoAwayStatus = { Ok: 0, ProtocolError: 1, InternalError: 2 } as const;

export const Setting = { UploadBandwidth: 1, DownloadBandwidth: 2, RoundTripTime: 3, MaxConcurrentStreams: 4, CurrentCwnd: 5, DownloadRetransRate: 6, InitialWindowSize: 7, ClientCertificateVectorSize: 8 } as const;

/** Header names (lower case) to their values; a name repeated on the wire is one entry with several values. */
export type SpdyHeaders = Record<string, string[]>;

/**
 * A frame as it is on the wire. SYN_STREAM, SYN_REPLY and HEADERS carry their name/value block
 * still compressed (`headerBlock`): decompression depends on every block before it in the same
 * direction, so it belongs to the session (HeaderDecompressor), not to the framing.
 */
export type SpdyFrame =
  | { type: 'DATA'; streamId: number; fin: boolean; data: Buffer }
  | { type: 'SYN_STREAM'; streamId: number; associatedStreamId: number; priority: number; slot: number; fin: boolean; unidirectional: boolean; headerBlock: Buffer }
  | { type: 'SYN_REPLY'; streamId: number; fin: boolean; headerBlock: Buffer }
  | { type: 'RST_STREAM'; streamId: number; status: number }
  | { type: 'SETTINGS'; clearSettings: boolean; entries: Array<{ flags: number; id: number; value: number }> }
  | { type: 'PING'; id: number }
  | { type: 'GOAWAY'; lastGoodStreamId: number; status: number }
  | { type: 'HEADERS'; streamId: number; fin: boolean; headerBlock: Buffer }
  | { type: 'WINDOW_UPDATE'; streamId: number; delta: number }
  /** A control frame type this implementation does not know; SPDY says to ignore it. */
  | { type: 'UNKNOWN'; frameType: number; flags: number; payload: Buffer };

/** A protocol error: the session should send GOAWAY (or RST_STREAM when streamId is set) and stop. */
export interface SpdyError {
  message: string;
  /** Set when only one stream is at fault. */
  streamId?: number;
  status: number;
}

const MAX_LENGTH = 0xffffff;
const MAX_HEADER_BLOCK = 1024 * 1024;

/** Serialises headers into an uncompressed SPDY/3 name/value block. */
export function encodeHeaderBlock(headers: SpdyHeaders): Buffer {
  const entries = Object.entries(headers);
  const parts: Buffer[] = [u32(entries.length)];
  for (const [name, values] of entries) {
    const n = Buffer.from(name.toLowerCase(), 'utf8');
    const v = Buffer.from(values.join('\0'), 'utf8');
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

/** Parses an uncompressed name/value block; returns an error message when malformed. */
export function decodeHeaderBlock(block: Buffer): SpdyHeaders | string {
  if (block.length < 4) return 'header block shorter than its count';
  const count = block.readUInt32BE(0);
  // Every pair takes at least 8 bytes of lengths, which bounds a hostile count.
  if (count > (block.length - 4) / 8) return `header block claims ${count} pairs in ${block.length} bytes`;
  const headers: SpdyHeaders = Object.create(null) as SpdyHeaders;
  let p = 4;
  for (let i = 0; i < count; i++) {
    if (p + 4 > block.length) return 'header name length past the end of the block';
    const nameLen = block.readUInt32BE(p);
    p += 4;
    if (nameLen === 0) return 'empty header name';
    if (p + nameLen > block.length) return 'header name past the end of the block';
    const name = block.toString('utf8', p, p + nameLen);
    p += nameLen;
    if (p + 4 > block.length) return 'header value length past the end of the block';
    const valueLen = block.readUInt32BE(p);
    p += 4;
    if (p + valueLen > block.length) return 'header value past the end of the block';
    const value = block.toString('utf8', p, p + valueLen);
    p += valueLen;
    if (name !== name.toLowerCase()) return `header name ${JSON.stringify(name)} is not lower case`;
    if (Object.hasOwn(headers, name)) return `duplicate header ${JSON.stringify(name)}`;
    headers[name] = value.split('\0');
  }
  if (p !== block.length) return 'trailing bytes after the header block';
  return headers;
}

/**
 * Runs one header block through a long-lived zlib stream and collects what it produced up to a
 * Z_SYNC_FLUSH. Node's zlib has no synchronous API for a stream that outlives one call, so this is
 * asynchronous; calls are chained so blocks stay in order on the shared context.
 */
class ZlibContext {
  private readonly stream: Deflate | Inflate;
  private chain: Promise<unknown> = Promise.resolve();
  private failed: Error | undefined;

  constructor(stream: Deflate | Inflate) {
    this.stream = stream;
    stream.on('error', (err: Error) => {
      this.failed ??= err;
    });
  }

  run(input: Buffer): Promise<Buffer> {
    const next = this.chain.then(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          if (this.failed !== undefined) {
            reject(this.failed);
            return;
          }
          const out: Buffer[] = [];
          const onData = (chunk: Buffer): void => {
            out.push(chunk);
          };
          const onError = (err: Error): void => {
            this.stream.off('data', onData);
            reject(err);
          };
          this.stream.on('data', onData);
          this.stream.once('error', onError);
          this.stream.write(input);
          this.stream.flush(constants.Z_SYNC_FLUSH, () => {
            this.stream.off('data', onData);
            this.stream.off('error', onError);
            if (this.failed !== undefined) reject(this.failed);
            else resolve(Buffer.concat(out));
          });
        }),
    );
    this.chain = next.catch(() => {});
    return next;
  }

  close(): void {
    this.stream.close();
  }
}

/** The sending side's zlib context: one per session, shared by every header block it sends. */
export class HeaderCompressor {
  private readonly context = new ZlibContext(createDeflate({ dictionary: SPDY3_DICTIONARY }));

  /** Resolves with the compressed block; blocks come out in call order. */
  compress(headers: SpdyHeaders): Promise<Buffer> {
    return this.context.run(encodeHeaderBlock(headers));
  }

  close(): void {
    this.context.close();
  }
}

/** The receiving side's zlib context: one per session. After an error it stays failed. */
export class HeaderDecompressor {
  private readonly context = new ZlibContext(createInflate({ dictionary: SPDY3_DICTIONARY, maxOutputLength: MAX_HEADER_BLOCK }));
  private failed: string | undefined;

  /** Resolves with the headers, or a message saying why the block is bad; never rejects. */
  async decompress(compressed: Buffer): Promise<SpdyHeaders | string> {
    if (this.failed !== undefined) return this.failed;
    let block: Buffer;
    try {
      block = await this.context.run(compressed);
    } catch (err) {
      this.failed = `header block does not decompress: ${(err as Error).message}`;
      return this.failed;
    }
    if (block.length > MAX_HEADER_BLOCK) return `header block over ${MAX_HEADER_BLOCK} bytes`;
    return decodeHeaderBlock(block);
  }

  close(): void {
    this.context.close();
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function controlFrame(type: number, flags: number, payload: Buffer): Buffer {
  if (payload.length > MAX_LENGTH) throw new RangeError(`SPDY frame payload of ${payload.length} bytes is over 2^24-1`);
  const h = Buffer.alloc(8);
  h.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  h.writeUInt16BE(type, 2);
  h.writeUInt32BE(((flags & 0xff) << 24) | payload.length, 4);
  return Buffer.concat([h, payload]);
}

/** Encodes a frame (header blocks already compressed by the session's HeaderCompressor). */
export function encodeFrame(frame: SpdyFrame): Buffer {
  switch (frame.type) {
    case 'DATA': {
      if (frame.data.length > MAX_LENGTH) throw new RangeError('SPDY DATA frame over 2^24-1 bytes');
      const h = Buffer.alloc(8);
      h.writeUInt32BE(frame.streamId & 0x7fffffff, 0);
      h.writeUInt32BE(((frame.fin ? Flag.Fin : 0) << 24) | frame.data.length, 4);
      return Buffer.concat([h, frame.data]);
    }
    case 'SYN_STREAM': {
      const fixed = Buffer.alloc(10);
      fixed.writeUInt32BE(frame.streamId & 0x7fffffff, 0);
      fixed.writeUInt32BE(frame.associatedStreamId & 0x7fffffff, 4);
      fixed[8] = (frame.priority & 0x07) << 5;
      fixed[9] = frame.slot & 0xff;
      return controlFrame(FrameType.SynStream, (frame.fin ? Flag.Fin : 0) | (frame.unidirectional ? Flag.Unidirectional : 0), Buffer.concat([fixed, frame.headerBlock]));
    }
    case 'SYN_REPLY':
      return controlFrame(FrameType.SynReply, frame.fin ? Flag.Fin : 0, Buffer.concat([u32(frame.streamId & 0x7fffffff), frame.headerBlock]));
    case 'HEADERS':
      return controlFrame(FrameType.Headers, frame.fin ? Flag.Fin : 0, Buffer.concat([u32(frame.streamId & 0x7fffffff), frame.headerBlock]));
    case 'RST_STREAM':
      return controlFrame(FrameType.RstStream, 0, Buffer.concat([u32(frame.streamId & 0x7fffffff), u32(frame.status)]));
    case 'SETTINGS': {
      const parts = [u32(frame.entries.length)];
      for (const e of frame.entries) parts.push(u32(((e.flags & 0xff) << 24) | (e.id & 0xffffff)), u32(e.value));
      return controlFrame(FrameType.Settings, frame.clearSettings ? Flag.ClearSettings : 0, Buffer.concat(parts));
    }
    case 'PING':
      return controlFrame(FrameType.Ping, 0, u32(frame.id));
    case 'GOAWAY':
      return controlFrame(FrameType.GoAway, 0, Buffer.concat([u32(frame.lastGoodStreamId & 0x7fffffff), u32(frame.status)]));
    case 'WINDOW_UPDATE':
      return controlFrame(FrameType.WindowUpdate, 0, Buffer.concat([u32(frame.streamId & 0x7fffffff), u32(frame.delta & 0x7fffffff)]));
    case 'UNKNOWN':
      return controlFrame(frame.frameType, frame.flags, frame.payload);
  }
}

/**
 * An incremental frame parser for one direction of a session. push() never throws: it returns
 * the complete frames so far and, on a protocol error, the error (the parser then stays failed).
 */
export class FrameParser {
  private buffer: Buffer = Buffer.alloc(0);
  private failed: SpdyError | undefined;
  private readonly maxFrame: number;

  constructor(options: { maxFrame?: number } = {}) {
    this.maxFrame = options.maxFrame ?? MAX_LENGTH;
  }

  push(chunk: Buffer): { frames: SpdyFrame[]; error?: SpdyError } {
    const frames: SpdyFrame[] = [];
    if (this.failed !== undefined) return { frames, error: this.failed };
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 8) {
      const length = this.buffer.readUInt32BE(4) & 0xffffff;
      if (length > this.maxFrame) return this.fail(frames, { message: `frame of ${length} bytes is over the limit of ${this.maxFrame}`, status: GoAwayStatus.ProtocolError });
      if (this.buffer.length < 8 + length) break;
      const header = this.buffer.subarray(0, 8);
      const payload = Buffer.from(this.buffer.subarray(8, 8 + length));
      this.buffer = this.buffer.subarray(8 + length);
      const result = this.decode(header, payload);
      if ('message' in result) return this.fail(frames, result);
      frames.push(result);
    }
    return { frames };
  }

  private fail(frames: SpdyFrame[], error: SpdyError): { frames: SpdyFrame[]; error: SpdyError } {
    this.failed = error;
    this.buffer = Buffer.alloc(0);
    return { frames, error };
  }

  private decode(header: Buffer, payload: Buffer): SpdyFrame | SpdyError {
    const flags = header[4];
    const protocolError = (message: string): SpdyError => ({ message, status: GoAwayStatus.ProtocolError });
    if ((header[0] & 0x80) === 0) {
      return { type: 'DATA', streamId: header.readUInt32BE(0) & 0x7fffffff, fin: (flags & Flag.Fin) !== 0, data: payload };
    }
    const version = header.readUInt16BE(0) & 0x7fff;
    const type = header.readUInt16BE(2);
    if (version !== SPDY_VERSION) return protocolError(`unsupported SPDY version ${version}`);
    const streamId = (): number => payload.readUInt32BE(0) & 0x7fffffff;
    switch (type) {
      case FrameType.SynStream: {
        if (payload.length < 10) return protocolError('SYN_STREAM shorter than 10 bytes');
        return {
          type: 'SYN_STREAM',
          streamId: streamId(),
          associatedStreamId: payload.readUInt32BE(4) & 0x7fffffff,
          priority: payload[8] >> 5,
          slot: payload[9],
          fin: (flags & Flag.Fin) !== 0,
          unidirectional: (flags & Flag.Unidirectional) !== 0,
          headerBlock: payload.subarray(10),
        };
      }
      case FrameType.SynReply:
      case FrameType.Headers: {
        if (payload.length < 4) return protocolError(`${type === FrameType.SynReply ? 'SYN_REPLY' : 'HEADERS'} shorter than 4 bytes`);
        return { type: type === FrameType.SynReply ? 'SYN_REPLY' : 'HEADERS', streamId: streamId(), fin: (flags & Flag.Fin) !== 0, headerBlock: payload.subarray(4) };
      }
      case FrameType.RstStream:
        if (payload.length !== 8) return protocolError('RST_STREAM must be 8 bytes');
        return { type: 'RST_STREAM', streamId: streamId(), status: payload.readUInt32BE(4) };
      case FrameType.Settings: {
        if (payload.length < 4) return protocolError('SETTINGS shorter than 4 bytes');
        const count = payload.readUInt32BE(0);
        if (payload.length !== 4 + count * 8) return protocolError(`SETTINGS with ${count} entries must be ${4 + count * 8} bytes`);
        const entries = [];
        for (let i = 0; i < count; i++) {
          const idFlags = payload.readUInt32BE(4 + i * 8);
          entries.push({ flags: idFlags >>> 24, id: idFlags & 0xffffff, value: payload.readUInt32BE(8 + i * 8) });
        }
        return { type: 'SETTINGS', clearSettings: (flags & Flag.ClearSettings) !== 0, entries };
      }
      case FrameType.Ping:
        if (payload.length !== 4) return protocolError('PING must be 4 bytes');
        return { type: 'PING', id: payload.readUInt32BE(0) };
      case FrameType.GoAway:
        if (payload.length !== 8) return protocolError('GOAWAY must be 8 bytes');
        return { type: 'GOAWAY', lastGoodStreamId: streamId(), status: payload.readUInt32BE(4) };
      case FrameType.WindowUpdate:
        // A zero delta is a stream error, for the session to answer; the framing is fine.
        if (payload.length !== 8) return protocolError('WINDOW_UPDATE must be 8 bytes');
        return { type: 'WINDOW_UPDATE', streamId: streamId(), delta: payload.readUInt32BE(4) & 0x7fffffff };
      default:
        return { type: 'UNKNOWN', frameType: type, flags, payload };
    }
  }
}
