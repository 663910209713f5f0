/**
 * Opening a backend TCP connection, shared by the access tier (direct services) and the connector:
 * TCP_NODELAY (a relay without it adds about 40 ms per new connection), half-open allowed (so a
 * backend's FIN does not end the other direction), a connect timeout, and a way to give up when the
 * user went away while we dialled.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { Target } from '../net/target.ts';

/** Starts a TCP connection to a checked target; the socket is still connecting when returned. */
export type BackendDialer = (target: Target) => Socket;

export const dialTcp: BackendDialer = (target) => connect({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true });

export type DialFailure = 'backend-unreachable' | 'backend-timeout';

export type DialResult = { ok: true; socket: Socket } | { ok: false; reason: DialFailure; detail: string };

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface DialOptions {
  dialer?: BackendDialer;
  timeoutMs?: number;
  /** Aborting gives up the dial; the result is then `backend-unreachable` with detail `aborted`. */
  signal?: AbortSignal;
}

/** Dials and waits for the connection. Never rejects; a failed dial leaves no socket behind. */
export function dialBackend(target: Target, options: DialOptions = {}): Promise<DialResult> {
  const dialer = options.dialer ?? dialTcp;
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  return new Promise<DialResult>((resolve) => {
    let socket: Socket;
    try {
      socket = dialer(target);
    } catch (err) {
      resolve({ ok: false, reason: 'backend-unreachable', detail: err instanceof Error ? err.message : String(err) });
      return;
    }
    let settled = false;
    const finish = (result: DialResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      options.signal?.removeEventListener('abort', onAbort);
      if (!result.ok) {
        socket.on('error', () => undefined); // a late error from a socket we gave up on is not news
        socket.destroy();
      }
      resolve(result);
    };
    const onConnect = (): void => {
      socket.setNoDelay(true);
      finish({ ok: true, socket });
    };
    const onError = (err: NodeJS.ErrnoException): void => finish({ ok: false, reason: 'backend-unreachable', detail: err.code ?? err.message });
    const onAbort = (): void => finish({ ok: false, reason: 'backend-unreachable', detail: 'aborted' });
    const timer = setTimeout(() => finish({ ok: false, reason: 'backend-timeout', detail: `no connection within ${timeoutMs} ms` }), timeoutMs);
    socket.once('connect', onConnect);
    socket.once('error', onError);
    if (options.signal?.aborted === true) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
