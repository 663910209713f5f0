/**
 * PING keepalive for a tunnel (THREATS CN-06). A peer that vanished without a FIN (power loss, a
 * dropped NAT mapping, a blackholed route) leaves a TCP connection that looks open forever; we send
 * an HTTP/2 PING every `intervalMs` and declare the tunnel dead when one has gone unanswered for
 * `timeoutMs` while nothing at all arrived from the peer. Bytes arriving count as life, so a tunnel
 * whose PING ack is queued behind a burst of data is not killed for it.
 *
 * Worst case from the peer's death to the verdict: about intervalMs + timeoutMs plus two check
 * ticks of a quarter of the shorter one (2 s + 5 s + 1 s by default, under the 10 s budget).
 */
import type { Http2Session } from 'node:http2';

export interface KeepaliveOptions {
  intervalMs?: number;
  timeoutMs?: number;
  /** Total bytes received on the connection so far (e.g. the TLS socket's bytesRead). */
  bytesRead?: () => number;
  /** Called once, when the tunnel is judged dead. The caller destroys the session. */
  onDead: (detail: string) => void;
}

export interface Keepalive {
  stop(): void;
  /** The round trip of the last answered PING, in ms. */
  lastRttMs(): number | undefined;
}

export const DEFAULT_KEEPALIVE_INTERVAL_MS = 2000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 5000;

export function startKeepalive(session: Http2Session, options: KeepaliveOptions): Keepalive {
  const intervalMs = options.intervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS;
  const timeoutMs = options.timeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS;
  const bytesRead = options.bytesRead ?? ((): number => 0);
  const tickMs = Math.max(5, Math.min(intervalMs, timeoutMs) / 4);
  let outstandingSince: number | undefined;
  let lastSent = -Infinity;
  let bytesAtPing = 0;
  let rtt: number | undefined;
  let stopped = false;

  const tick = (): void => {
    if (stopped || session.destroyed || session.closed) return;
    const now = performance.now();
    if (outstandingSince !== undefined) {
      const read = bytesRead();
      if (read !== bytesAtPing) {
        // Alive: data is flowing and the ack is queued behind it. Measure again from here.
        outstandingSince = now;
        bytesAtPing = read;
      } else if (now - outstandingSince >= timeoutMs) {
        stop();
        options.onDead(`no PING answer and no data for ${Math.round(now - outstandingSince)} ms`);
      }
      return;
    }
    if (now - lastSent < intervalMs - tickMs / 2) return;
    lastSent = now;
    outstandingSince = now;
    bytesAtPing = bytesRead();
    let sent: boolean;
    try {
      sent = session.ping((err, duration) => {
        if (err !== null) return; // the session is closing; its own close handling applies
        rtt = duration;
        outstandingSince = undefined;
      });
    } catch {
      // ERR_HTTP2_INVALID_SESSION and the like: the session is going away anyway.
      sent = false;
    }
    if (!sent) outstandingSince = undefined;
  };

  const timer = setInterval(tick, tickMs);
  timer.unref();

  function stop(): void {
    stopped = true;
    clearInterval(timer);
  }
  session.once('close', stop);

  return { stop, lastRttMs: () => rtt };
}
