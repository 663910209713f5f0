/**
 * Relays bytes both ways between two duplex streams (a user's TLS socket and a backend socket or a
 * tunnel stream), with backpressure and half-close: when one side ends its writing, the other side's
 * writing is ended too and the opposite direction keeps flowing. Each chunk is written as it comes
 * (see `forward`: like `pipe`, with a deeper buffer); nothing inspects or copies the bytes. When one
 * side fails or closes before both directions ended, the other side is aborted at once, so nothing
 * hangs.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export type RelayOutcome = 'done' | 'client-error' | 'upstream-error' | 'client-closed' | 'upstream-closed' | 'aborted';

export interface RelayResult {
  /** `done` when both directions ended cleanly; otherwise the first thing that went wrong. */
  outcome: RelayOutcome;
  /** The abort reason, or the error's code. */
  detail?: string;
  error?: Error;
}

export interface RelayOptions {
  /** How to abort the client side (default: abortDuplex). */
  abortClient?: (reason: string) => void;
  /** How to abort the upstream side (default: abortDuplex); a tunnel stream sends RST_STREAM(CANCEL). */
  abortUpstream?: (reason: string) => void;
}

/**
 * Aborts a stream so the peer can tell it from a clean end: a plain TCP socket is reset (RST), so a
 * backend never mistakes a cut-off request for a complete one; anything else (TLS) is destroyed.
 */
export function abortDuplex(stream: Duplex): void {
  // libuv refuses to reset a socket whose sending side was already shut down (EINVAL), and Node then
  // never closes the handle: a leaked descriptor. After our FIN a plain destroy is all there is.
  if (stream instanceof Socket && !('encrypted' in stream) && !stream.destroyed && !stream.writableEnded && !stream.connecting) {
    try {
      stream.resetAndDestroy();
      return;
    } catch {
      // not a TCP handle (a pipe, a wrapped stream): fall through
    }
  }
  stream.destroy();
}

export interface Relay {
  /** Settles once both sides are closed; never rejects. */
  readonly done: Promise<RelayResult>;
  /** Cuts both sides now (a revocation, a shutdown deadline). */
  abort(reason: string): void;
}

function endedCleanly(stream: Duplex): boolean {
  return stream.errored === null && stream.readableEnded && stream.writableFinished;
}

export function relay(client: Duplex, upstream: Duplex, options: RelayOptions = {}): Relay {
  const abortClient = options.abortClient ?? ((): void => abortDuplex(client));
  const abortUpstream = options.abortUpstream ?? ((): void => abortDuplex(upstream));
  let result: RelayResult | undefined;
  let closed = 0;
  let resolveDone: (r: RelayResult) => void = () => undefined;
  const done = new Promise<RelayResult>((resolve) => {
    resolveDone = resolve;
  });

  const fail = (r: RelayResult): void => {
    if (result !== undefined) return;
    result = r;
    const reason = r.detail ?? r.outcome;
    if (!client.destroyed) abortClient(reason);
    if (!upstream.destroyed) abortUpstream(reason);
  };

  const onError = (outcome: 'client-error' | 'upstream-error') => (err: Error): void => {
    fail({ outcome, detail: (err as NodeJS.ErrnoException).code ?? err.message, error: err });
  };
  const onClose = (side: 'client' | 'upstream', stream: Duplex) => (): void => {
    if (!endedCleanly(stream)) fail({ outcome: side === 'client' ? 'client-closed' : 'upstream-closed' });
    if (++closed === 2) resolveDone(result ?? { outcome: 'done' });
  };

  client.on('error', onError('client-error'));
  upstream.on('error', onError('upstream-error'));
  for (const [side, stream] of [['client', client], ['upstream', upstream]] as const) {
    // A side that closed before the relay started (a user who gave up while we dialled) never emits 'close' again.
    if (stream.closed) queueMicrotask(onClose(side, stream));
    else stream.once('close', onClose(side, stream));
  }
  forward(client, upstream);
  forward(upstream, client);

  return {
    done,
    abort: (reason: string): void => fail({ outcome: 'aborted', detail: reason }),
  };
}

/**
 * Bytes allowed to wait in a destination's write buffer before the source is paused. Node's default
 * (16 KiB, the size of one TLS record) makes `pipe` pause and resume the source after every single
 * chunk; a deeper buffer keeps the source flowing and costs at most this much memory per direction.
 */
export const RELAY_BUFFER_BYTES = 256 * 1024;

/**
 * What `src.pipe(dst)` does (write each chunk, pause on a full destination, resume on 'drain', end
 * on end), with the pause threshold at RELAY_BUFFER_BYTES instead of the destination's highWaterMark.
 */
function forward(src: Duplex, dst: Duplex): void {
  const onDrain = (): void => {
    src.resume();
  };
  src.on('data', (chunk: Buffer) => {
    dst.write(chunk);
    // A write that left this much queued returned false, so 'drain' will come once it empties.
    if (dst.writableLength >= RELAY_BUFFER_BYTES && !src.isPaused()) {
      src.pause();
      dst.once('drain', onDrain);
    }
  });
  src.once('end', () => {
    if (!dst.writableEnded) dst.end();
  });
  // A source paused on purpose (the access tier pauses a client while it reads the CONNECT head)
  // does not start flowing just because a 'data' listener was added.
  src.resume();
}
