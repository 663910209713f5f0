/**
 * A SPDY/3.1 session over any byte stream (a TLS socket after `Upgrade: SPDY/3.1`, or a WebSocket
 * tunnel): streams as Node Duplexes with half-close, PING, GOAWAY, RST_STREAM and SPDY/3.1 flow
 * control (stream and session windows, WINDOW_UPDATE).
 *
 * Kubernetes' SPDY peers (moby/spdystream, in kubectl and the kubelet) implement no flow control:
 * they never send WINDOW_UPDATE and ignore ours. Against them, turn `enforceSendWindow` off, or
 * anything over 64 KiB stalls; keep it on between two sessions of this implementation.
 */
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import { encodeFrame, FrameParser, GoAwayStatus, HeaderCompressor, HeaderDecompressor, RstStatus, Setting } from './frames.ts';
import type { SpdyError, SpdyFrame, SpdyHeaders } from './frames.ts';

type WithHeaders<F> = F extends { headerBlock: Buffer } ? Omit<F, 'headerBlock'> & { headers: SpdyHeaders } : F;
/** A frame as the session sees it: header blocks decompressed into headers. */
export type SpdyMessage = WithHeaders<SpdyFrame>;

function hasHeaders(m: SpdyMessage): m is Extract<SpdyMessage, { headers: SpdyHeaders }> {
  return m.type === 'SYN_STREAM' || m.type === 'SYN_REPLY' || m.type === 'HEADERS';
}

function hasHeaderBlock(f: SpdyFrame): f is Extract<SpdyFrame, { headerBlock: Buffer }> {
  return f.type === 'SYN_STREAM' || f.type === 'SYN_REPLY' || f.type === 'HEADERS';
}

const END = Symbol('transport ended');

export const DEFAULT_WINDOW = 64 * 1024;
const MAX_DATA_CHUNK = 32 * 1024;

export interface SpdySessionOptions {
  /** The server opens even stream ids and answers odd PING ids; the client the reverse. */
  isServer: boolean;
  /** Wait for the peer's window before sending DATA; default true (see the module comment). */
  enforceSendWindow?: boolean;
  /** Send WINDOW_UPDATE as received data is consumed; default true. */
  sendWindowUpdates?: boolean;
}

export interface SpdySessionEvents {
  /** A stream the peer opened (SYN_STREAM); reply() to accept it or reset() to refuse. */
  stream: [stream: SpdyStream];
  goaway: [lastGoodStreamId: number, status: number];
  /** A protocol error in what the peer sent; the session sends GOAWAY and closes. */
  protocolError: [error: SpdyError];
  close: [];
}

export class SpdySession extends EventEmitter<SpdySessionEvents> {
  readonly transport: Duplex;
  readonly isServer: boolean;
  readonly enforceSendWindow: boolean;
  readonly sendWindowUpdates: boolean;
  /** Open streams by id. */
  readonly streams = new Map<number, SpdyStream>();
  /** The peer's SETTINGS_INITIAL_WINDOW_SIZE: what each new stream may send before WINDOW_UPDATE. */
  peerInitialWindow = DEFAULT_WINDOW;
  /** The SPDY/3.1 session-level send window. */
  sendWindow = DEFAULT_WINDOW;
  closed = false;
  goneAway = false;

  private readonly parser = new FrameParser();
  private readonly compressor = new HeaderCompressor();
  private readonly decompressor = new HeaderDecompressor();
  /** Frames wait here while an earlier one's header block is being (de)compressed, to keep order. */
  private readonly inQueue: Array<SpdyFrame | typeof END> = [];
  private inBusy = false;
  private parseError: SpdyError | undefined;
  private readonly outQueue: SpdyMessage[] = [];
  private outBusy = false;
  private endWhenFlushed = false;
  private closeAfterPump = false;
  private nextStreamId: number;
  private lastPeerStreamId = 0;
  private nextPingId: number;
  private readonly pings = new Map<number, () => void>();
  private unackedSession = 0;

  constructor(transport: Duplex, options: SpdySessionOptions) {
    super();
    this.transport = transport;
    this.isServer = options.isServer;
    this.enforceSendWindow = options.enforceSendWindow ?? true;
    this.sendWindowUpdates = options.sendWindowUpdates ?? true;
    this.nextStreamId = options.isServer ? 2 : 1;
    this.nextPingId = options.isServer ? 2 : 1;
    transport.setMaxListeners(0);
    transport.on('data', (chunk: Buffer) => this.onData(chunk));
    transport.on('end', () => {
      this.inQueue.push(END);
      void this.pumpIn();
    });
    transport.on('error', () => transport.destroy());
    // Frames still waiting for header decompression are handled before the session closes.
    transport.on('close', () => {
      if (this.inBusy || this.inQueue.length > 0) this.closeAfterPump = true;
      else this.onClose();
    });
  }

  /** Opens a stream (SYN_STREAM). */
  openStream(headers: SpdyHeaders, options: { fin?: boolean; priority?: number } = {}): SpdyStream {
    if (this.closed || this.goneAway) throw new Error('SPDY session is closing');
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new SpdyStream(this, id, headers, true);
    this.streams.set(id, stream);
    this.writeFrame({ type: 'SYN_STREAM', streamId: id, associatedStreamId: 0, priority: options.priority ?? 0, slot: 0, fin: options.fin ?? false, unidirectional: false, headers });
    if (options.fin === true) stream.markLocalClosed();
    return stream;
  }

  /** Sends a PING; resolves when the peer echoes it. */
  ping(): Promise<void> {
    const id = this.nextPingId;
    this.nextPingId += 2;
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new Error('SPDY session closed'));
        return;
      }
      this.pings.set(id, resolve);
      this.writeFrame({ type: 'PING', id });
    });
  }

  settings(entries: Array<{ id: number; value: number }>): void {
    this.writeFrame({ type: 'SETTINGS', clearSettings: false, entries: entries.map((e) => ({ flags: 0, ...e })) });
  }

  /** Says no new streams will be accepted (GOAWAY). */
  goAway(status: number = GoAwayStatus.Ok): void {
    if (this.goneAway || this.closed) return;
    this.goneAway = true;
    this.writeFrame({ type: 'GOAWAY', lastGoodStreamId: this.lastPeerStreamId, status });
  }

  /** GOAWAY, then ends the transport once every frame queued before it has been written. */
  close(): void {
    this.goAway();
    if (this.outBusy) this.endWhenFlushed = true;
    else this.transport.end();
  }

  destroy(): void {
    this.transport.destroy();
  }

  /**
   * @internal Sends one frame, after any still waiting for header compression; returns false when
   * the transport asks to wait for 'drain'.
   */
  writeFrame(message: SpdyMessage): boolean {
    if (this.closed || this.transport.destroyed || this.transport.writableEnded) return false;
    if (!this.outBusy && !hasHeaders(message)) return this.transport.write(encodeFrame(message));
    this.outQueue.push(message);
    void this.pumpOut();
    return true;
  }

  private async pumpOut(): Promise<void> {
    if (this.outBusy) return;
    this.outBusy = true;
    while (this.outQueue.length > 0) {
      const message = this.outQueue.shift()!;
      let frame: SpdyFrame;
      if (hasHeaders(message)) {
        const { headers, ...rest } = message;
        let headerBlock: Buffer;
        try {
          headerBlock = await this.compressor.compress(headers);
        } catch {
          this.transport.destroy();
          break;
        }
        frame = { ...rest, headerBlock };
      } else {
        frame = message;
      }
      if (this.closed || this.transport.destroyed || this.transport.writableEnded) break;
      this.transport.write(encodeFrame(frame));
    }
    this.outQueue.length = 0;
    this.outBusy = false;
    if (this.endWhenFlushed) this.transport.end();
  }

  /** @internal Credits consumed bytes to the session window. */
  creditSession(n: number): void {
    if (!this.sendWindowUpdates) return;
    this.unackedSession += n;
    if (this.unackedSession >= DEFAULT_WINDOW / 2) {
      this.writeFrame({ type: 'WINDOW_UPDATE', streamId: 0, delta: this.unackedSession });
      this.unackedSession = 0;
    }
  }

  /** @internal */
  forget(stream: SpdyStream): void {
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
  }

  private isPeerId(id: number): boolean {
    return this.isServer ? id % 2 === 1 : id % 2 === 0;
  }

  private onData(chunk: Buffer): void {
    const { frames, error } = this.parser.push(chunk);
    this.inQueue.push(...frames);
    if (error !== undefined) this.parseError ??= error;
    void this.pumpIn();
  }

  /** Handles queued frames in order; only header blocks make it wait. */
  private async pumpIn(): Promise<void> {
    if (this.inBusy) return;
    this.inBusy = true;
    while (this.inQueue.length > 0 && !this.closed) {
      const frame = this.inQueue.shift()!;
      if (frame === END) {
        // The peer will send nothing more: every stream's remote side is done.
        for (const stream of [...this.streams.values()]) stream.onRemoteEnd();
        continue;
      }
      if (!hasHeaderBlock(frame)) {
        this.onFrame(frame);
        continue;
      }
      const { headerBlock, ...rest } = frame;
      const headers = await this.decompressor.decompress(headerBlock);
      if (typeof headers === 'string') {
        this.parseError ??= { message: headers, status: GoAwayStatus.ProtocolError };
        this.inQueue.length = 0;
        break;
      }
      if (!this.closed) this.onFrame({ ...rest, headers });
    }
    this.inBusy = false;
    if (this.closeAfterPump) {
      this.onClose();
      return;
    }
    if (this.parseError !== undefined && this.inQueue.length === 0 && !this.closed) {
      const error = this.parseError;
      this.parseError = undefined;
      this.emit('protocolError', error);
      this.goAway(GoAwayStatus.ProtocolError);
      this.transport.end();
      setTimeout(() => this.transport.destroy(), 1000).unref();
    }
  }

  private rst(streamId: number, status: number): void {
    this.writeFrame({ type: 'RST_STREAM', streamId, status });
  }

  private onFrame(frame: SpdyMessage): void {
    switch (frame.type) {
      case 'DATA': {
        const stream = this.streams.get(frame.streamId);
        if (stream === undefined) {
          // Data for a stream that is gone still used session window.
          this.creditSession(frame.data.length);
          if (frame.streamId !== 0 && frame.streamId > Math.max(this.lastPeerStreamId, this.nextStreamId - 2)) this.rst(frame.streamId, RstStatus.InvalidStream);
          return;
        }
        stream.onData(frame.data, frame.fin);
        return;
      }
      case 'SYN_STREAM': {
        const id = frame.streamId;
        if (id === 0 || !this.isPeerId(id) || id <= this.lastPeerStreamId) {
          this.rst(id, RstStatus.ProtocolError);
          return;
        }
        this.lastPeerStreamId = id;
        if (this.goneAway) {
          this.rst(id, RstStatus.RefusedStream);
          return;
        }
        const stream = new SpdyStream(this, id, frame.headers, false);
        this.streams.set(id, stream);
        if (frame.fin) stream.onData(Buffer.alloc(0), true);
        if (frame.unidirectional) stream.markLocalClosed();
        this.emit('stream', stream);
        return;
      }
      case 'SYN_REPLY':
      case 'HEADERS': {
        const stream = this.streams.get(frame.streamId);
        if (stream === undefined) {
          this.rst(frame.streamId, RstStatus.InvalidStream);
          return;
        }
        if (frame.type === 'SYN_REPLY') stream.onReply(frame.headers);
        else stream.emit('headers', frame.headers);
        if (frame.fin) stream.onData(Buffer.alloc(0), true);
        return;
      }
      case 'RST_STREAM':
        this.streams.get(frame.streamId)?.onReset(frame.status);
        return;
      case 'SETTINGS':
        for (const entry of frame.entries) {
          if (entry.id !== Setting.InitialWindowSize) continue;
          const delta = entry.value - this.peerInitialWindow;
          this.peerInitialWindow = entry.value;
          for (const stream of this.streams.values()) stream.addSendWindow(delta);
        }
        return;
      case 'PING': {
        if (this.isPeerId(frame.id) || frame.id === 0) {
          this.writeFrame({ type: 'PING', id: frame.id });
          return;
        }
        const done = this.pings.get(frame.id);
        this.pings.delete(frame.id);
        done?.();
        return;
      }
      case 'GOAWAY':
        this.goneAway = true;
        this.emit('goaway', frame.lastGoodStreamId, frame.status);
        // Streams we opened after the peer's last good one will never be processed.
        for (const stream of [...this.streams.values()]) {
          if (!this.isPeerId(stream.id) && stream.id > frame.lastGoodStreamId) stream.onReset(RstStatus.RefusedStream);
        }
        return;
      case 'WINDOW_UPDATE':
        if (frame.delta === 0) {
          if (frame.streamId !== 0) this.rst(frame.streamId, RstStatus.FlowControlError);
          return;
        }
        if (frame.streamId === 0) {
          this.sendWindow += frame.delta;
          for (const stream of this.streams.values()) stream.flushPending();
        } else {
          this.streams.get(frame.streamId)?.addSendWindow(frame.delta);
        }
        return;
      case 'UNKNOWN':
        return;
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of [...this.streams.values()]) stream.destroy();
    this.streams.clear();
    this.pings.clear();
    this.inQueue.length = 0;
    this.outQueue.length = 0;
    this.compressor.close();
    this.decompressor.close();
    this.emit('close');
  }
}

interface PendingWrite {
  data: Buffer;
  callback: (err?: Error | null) => void;
}

export interface SpdyStreamEvents {
  reply: [headers: SpdyHeaders];
  headers: [headers: SpdyHeaders];
  reset: [status: number];
}

/**
 * One SPDY stream as a Duplex: write() sends DATA, end() sends FIN (half-close), the readable side
 * ends at the peer's FIN. destroy() before both sides are closed sends RST_STREAM CANCEL.
 */
export class SpdyStream extends Duplex {
  readonly id: number;
  readonly session: SpdySession;
  /** The headers of the SYN_STREAM that opened the stream. */
  readonly headers: SpdyHeaders;
  readonly locallyInitiated: boolean;
  replyHeaders: SpdyHeaders | undefined;
  /** The RST_STREAM status, when the stream was reset by either side. */
  resetStatus: number | undefined;
  sendWindow: number;
  private localClosed = false;
  private remoteClosed = false;
  private replied = false;
  private unacked = 0;
  private uncreditedStream = 0;
  private pending: PendingWrite | undefined;

  constructor(session: SpdySession, id: number, headers: SpdyHeaders, locallyInitiated: boolean) {
    super({ allowHalfOpen: true });
    this.session = session;
    this.id = id;
    this.headers = headers;
    this.locallyInitiated = locallyInitiated;
    this.sendWindow = session.peerInitialWindow;
    this.replied = locallyInitiated;
  }

  /** The first value of a SYN_STREAM header, if any. */
  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()]?.[0];
  }

  /** Accepts a stream the peer opened (SYN_REPLY). */
  reply(headers: SpdyHeaders = {}, fin = false): void {
    if (this.replied || this.destroyed) return;
    this.replied = true;
    this.session.writeFrame({ type: 'SYN_REPLY', streamId: this.id, fin, headers });
    if (fin) this.markLocalClosed();
  }

  /** Aborts the stream (RST_STREAM). */
  reset(status: number = RstStatus.Cancel): void {
    if (this.resetStatus !== undefined || this.destroyed) return;
    this.resetStatus = status;
    this.session.writeFrame({ type: 'RST_STREAM', streamId: this.id, status });
    this.destroy();
  }

  /** @internal */
  markLocalClosed(): void {
    this.localClosed = true;
    this.maybeForget();
  }

  /** @internal */
  onReply(headers: SpdyHeaders): void {
    this.replyHeaders = headers;
    this.emit('reply', headers);
  }

  /** @internal */
  onData(data: Buffer, fin: boolean): void {
    if (this.remoteClosed) {
      if (data.length > 0 || !fin) this.session.writeFrame({ type: 'RST_STREAM', streamId: this.id, status: RstStatus.StreamAlreadyClosed });
      return;
    }
    if (data.length > 0) {
      this.unacked += data.length;
      if (this.push(data)) this.credit();
    }
    if (fin) this.onRemoteEnd();
  }

  /** @internal The peer's side is finished (FIN, or the transport ended). */
  onRemoteEnd(): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    this.push(null);
    this.maybeForget();
  }

  /** @internal */
  onReset(status: number): void {
    if (this.resetStatus !== undefined) return;
    this.resetStatus = status;
    this.localClosed = true;
    this.remoteClosed = true;
    this.emit('reset', status);
    this.destroy();
  }

  /** @internal */
  addSendWindow(delta: number): void {
    this.sendWindow += delta;
    this.flushPending();
  }

  /** @internal Sends what was waiting for window. */
  flushPending(): void {
    const pending = this.pending;
    if (pending === undefined) return;
    this.pending = undefined;
    this.sendData(pending.data, pending.callback);
  }

  override _read(): void {
    this.credit();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.sendData(chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.localClosed && this.resetStatus === undefined) {
      this.session.writeFrame({ type: 'DATA', streamId: this.id, fin: true, data: Buffer.alloc(0) });
      this.markLocalClosed();
    }
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (this.resetStatus === undefined && !(this.localClosed && this.remoteClosed)) {
      this.resetStatus = RstStatus.Cancel;
      this.session.writeFrame({ type: 'RST_STREAM', streamId: this.id, status: RstStatus.Cancel });
    }
    this.pending = undefined;
    this.session.forget(this);
    callback(err);
  }

  private sendData(data: Buffer, callback: (err?: Error | null) => void): void {
    let offset = 0;
    let drained = true;
    while (offset < data.length) {
      if (this.destroyed || this.resetStatus !== undefined) {
        callback(new Error(`SPDY stream ${this.id} was reset`));
        return;
      }
      let size = Math.min(MAX_DATA_CHUNK, data.length - offset);
      if (this.session.enforceSendWindow) size = Math.min(size, this.sendWindow, this.session.sendWindow);
      if (size <= 0) {
        this.pending = { data: data.subarray(offset), callback };
        return;
      }
      drained = this.session.writeFrame({ type: 'DATA', streamId: this.id, fin: false, data: data.subarray(offset, offset + size) }) && drained;
      this.sendWindow -= size;
      this.session.sendWindow -= size;
      offset += size;
    }
    if (drained || this.session.transport.destroyed) callback();
    else this.session.transport.once('drain', () => callback());
  }

  /** Consumed bytes go back to the peer as window: the session's at once, the stream's in batches. */
  private credit(): void {
    if (this.unacked === 0) return;
    const n = this.unacked;
    this.unacked = 0;
    this.session.creditSession(n);
    if (!this.session.sendWindowUpdates || this.remoteClosed) return;
    this.uncreditedStream += n;
    if (this.uncreditedStream >= DEFAULT_WINDOW / 4) {
      this.session.writeFrame({ type: 'WINDOW_UPDATE', streamId: this.id, delta: this.uncreditedStream });
      this.uncreditedStream = 0;
    }
  }

  private maybeForget(): void {
    if (this.localClosed && this.remoteClosed) this.session.forget(this);
  }
}
