/**
 * HTTP/2 settings for the tunnel, shared by both ends (DESIGN.md §3 pitfalls).
 *
 * - Windows: Node's 64 KiB defaults cap one stream at a few Gbit/s on loopback and at about
 *   8 Mbit/s over a 40 ms round trip. 8 MiB per stream and 64 MiB per session restore it.
 *   Node consumes the session window as data arrives and a stream's window only as its reader
 *   reads, so a stalled reader holds at most one stream window in memory and never stalls the other
 *   streams on its tunnel (THREATS CN-05: zero windows and dribbled data).
 * - Streams: 10,000 idle streams per tunnel must fit, so both sides advertise 16,384 concurrent
 *   streams (and assume it for the peer until its SETTINGS arrive).
 * - Resets: nghttp2 answers more than 1,000 RST_STREAM frames (then 33/s) from a client with
 *   GOAWAY, dropping every stream on the tunnel. Users abort kubectl all the time, so the HTTP/2
 *   server (the connector) raises the limits; the stream cap still bounds concurrent work.
 * - Session memory: Node refuses new streams when a session's bookkeeping exceeds
 *   maxSessionMemory (10 MB by default, too little for 16,384 streams); sized from the stream cap.
 * - Frames: DATA frames up to 256 KiB (bench/tunnel-throughput.ts: 10–15 % less CPU per GiB on
 *   both ends than 64 KiB; 1 MiB measured no better and holds other streams back longer). Memory
 *   stays bounded by the windows, not by the frame size.
 */
import type { ClientSessionOptions, Http2Session, ServerSessionOptions, Settings } from 'node:http2';

export interface TunnelLimits {
  /** Concurrent streams per tunnel, both directions' settings. */
  maxStreams: number;
  /** Initial window of every stream, bytes. */
  streamWindow: number;
  /** Connection-level receive window, bytes. */
  sessionWindow: number;
  /** Largest DATA frame we accept, bytes (16 KiB – 16 MiB). */
  maxFrameSize: number;
  /** RST_STREAM frames a server tolerates in a burst, and per second after it. */
  resetBurst: number;
  resetRate: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_TUNNEL_LIMITS: Readonly<TunnelLimits> = {
  maxStreams: 16_384,
  streamWindow: 8 * MiB,
  sessionWindow: 64 * MiB,
  maxFrameSize: 256 * 1024,
  resetBurst: 32_768,
  resetRate: 8_192,
};

function settings(limits: TunnelLimits): Settings {
  return {
    enablePush: false,
    initialWindowSize: limits.streamWindow,
    maxConcurrentStreams: limits.maxStreams,
    maxFrameSize: limits.maxFrameSize,
    // Our own headers are a few hundred bytes; anything near this is abuse (HPACK bombs, AT-12).
    maxHeaderListSize: 16 * 1024,
    headerTableSize: 4096,
  };
}

function common(limits: TunnelLimits): ServerSessionOptions & ClientSessionOptions {
  return {
    settings: settings(limits),
    peerMaxConcurrentStreams: limits.maxStreams,
    // Megabytes. Measured bookkeeping is a few KiB per stream (see the idle-stream test); this leaves
    // room for 16,384 streams plus queued outbound data and stays a bound.
    maxSessionMemory: Math.max(64, Math.ceil((limits.maxStreams * 16 * 1024) / MiB) + 128),
    maxHeaderListPairs: 64,
    maxOutstandingPings: 10,
    maxSettings: 32,
  };
}

/** Options for the connector's end (the HTTP/2 server), for http2.performServerHandshake. */
export function tunnelServerSessionOptions(limits: TunnelLimits = DEFAULT_TUNNEL_LIMITS): ServerSessionOptions {
  return {
    ...common(limits),
    streamResetBurst: limits.resetBurst,
    streamResetRate: limits.resetRate,
    maxSessionInvalidFrames: 1000,
    maxSessionRejectedStreams: 100,
  };
}

/** Options for the access tier's end (the HTTP/2 client), for http2.connect with createConnection. */
export function tunnelClientSessionOptions(limits: TunnelLimits = DEFAULT_TUNNEL_LIMITS): ClientSessionOptions {
  return common(limits);
}

/**
 * Opens the connection-level receive window to limits.sessionWindow. There is no SETTINGS field for
 * it: the session sends a WINDOW_UPDATE. Safe to call before the session is connected.
 */
export function widenSessionWindow(session: Http2Session, limits: TunnelLimits = DEFAULT_TUNNEL_LIMITS): void {
  const apply = (): void => {
    if (!session.destroyed) session.setLocalWindowSize(limits.sessionWindow);
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}
