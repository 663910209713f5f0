/**
 * The byte stream under a tunnel's HTTP/2 session: the TLS socket, behind a thin Duplex that accepts
 * the session's writes at once, up to a bound.
 *
 * Why: Node's HTTP/2 session stops reading its socket whenever one of its own writes is still in
 * flight (a guard against peers that flood it with frames needing answers). When both ends of a
 * tunnel send bulk data at the same time (an echo, `kubectl cp` both ways, a database replica), both
 * kernel send buffers fill, both writes stay in flight, both sessions stop reading, and neither
 * write can ever drain: the tunnel deadlocks, PINGs go unanswered, the keepalive kills it. (Measured:
 * a single stream writing 50 MB each way stalls after about 2 MB.)
 *
 * Both ends stopping is needed for the deadlock, so one end that keeps reading breaks it: the
 * connector's end (serveTunnel) runs on this transport, the access tier's on its socket directly.
 * Here a write counts as done once it is queued on the TLS socket, as long as no more than
 * `maxQueuedBytes` wait there; past that, the completion waits for the socket to drain, which puts
 * back Node's guard exactly when a peer stops reading. Every DATA frame we send is covered by the
 * peer's flow-control window (64 MiB per tunnel), so the default bound (window + 8 MiB for control
 * frames) is never reached by two well-behaved ends, and a peer that floods without reading costs
 * at most that much memory before the session stops reading it.
 *
 * Writes are bounded by count as well as by bytes (THREATS AT-12): each queued write costs a few
 * hundred bytes beyond its payload, and the answers a flooding peer makes us queue are tiny (a PING
 * acknowledgement is 17 bytes), so a million of them held about 400 MiB while staying far under the
 * byte bound. Well-behaved traffic queues a few thousand writes at most (the window in DATA frames).
 */
import { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';

export interface TunnelTransportOptions {
  maxQueuedBytes: number;
  /** Writes queued on the socket and not yet flushed (default MAX_QUEUED_WRITES). */
  maxQueuedWrites?: number;
}

export const MAX_QUEUED_WRITES = 65_536;

export class TunnelTransport extends Duplex {
  readonly socket: TLSSocket;
  readonly #maxQueued: number;
  readonly #maxWrites: number;
  #queuedWrites = 0;
  readonly #flushed = (): void => {
    this.#queuedWrites--;
    if (this.#pendingCallback !== undefined) this.#release();
  };
  #pendingCallback: ((err?: Error | null) => void) | undefined;

  constructor(socket: TLSSocket, options: TunnelTransportOptions) {
    super({ allowHalfOpen: false, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 });
    this.socket = socket;
    this.#maxQueued = options.maxQueuedBytes;
    this.#maxWrites = options.maxQueuedWrites ?? MAX_QUEUED_WRITES;
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.once('end', () => this.push(null));
    socket.on('drain', () => this.#release());
    socket.once('error', (err: Error) => this.destroy(err));
    socket.once('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  /** Bytes read from the peer, for the keepalive's "data is arriving" check. */
  get bytesRead(): number {
    return this.socket.bytesRead;
  }

  override _read(): void {
    if (this.socket.isPaused()) this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#queuedWrites++;
    this.socket.write(chunk, this.#flushed);
    this.#complete(callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    this.socket.cork();
    for (const { chunk } of chunks) {
      this.#queuedWrites++;
      this.socket.write(chunk, this.#flushed);
    }
    this.socket.uncork();
    this.#complete(callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.socket.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const pending = this.#pendingCallback;
    this.#pendingCallback = undefined;
    pending?.(err ?? new Error('the tunnel transport was destroyed'));
    if (!this.socket.destroyed) this.socket.destroy(err ?? undefined);
    callback(err);
  }

  #withinBounds(): boolean {
    return this.socket.writableLength <= this.#maxQueued && this.#queuedWrites <= this.#maxWrites;
  }

  #complete(callback: (err?: Error | null) => void): void {
    if (this.#withinBounds()) {
      callback();
      return;
    }
    // Past the bound: finish this write only when the socket drains (the peer is reading again).
    this.#pendingCallback = callback;
  }

  #release(): void {
    const pending = this.#pendingCallback;
    if (pending === undefined || !this.#withinBounds()) return;
    this.#pendingCallback = undefined;
    pending();
  }
}
