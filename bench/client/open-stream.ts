/**
 * The client side of every measurement: open a TCP connection to a target's endpoint and, for a
 * proxy endpoint, do the CONNECT exchange the way kubectl does (send CONNECT, wait for 200, then
 * speak the inner protocol). Every socket gets TCP_NODELAY.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { Endpoint } from '../targets/target.ts';

export interface OpenStream {
  socket: Socket;
  /** Bytes that arrived after the CONNECT response head, before the caller attached a reader. */
  leftover: Buffer;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);

export class StreamError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StreamError';
    this.code = code;
  }
}

export async function openStream(endpoint: Endpoint, timeoutMs = 15_000): Promise<OpenStream> {
  const socket = connect({ host: endpoint.host, port: endpoint.port, noDelay: true });
  const authority = endpoint.connectAuthority;
  if (authority === undefined) {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new StreamError('BENCH_CONNECT_TIMEOUT', `connecting to ${endpoint.host}:${endpoint.port} took over ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', fail);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', fail);
        resolve();
      });
    });
    return { socket, leftover: EMPTY };
  }

  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  return new Promise<OpenStream>((resolve, reject) => {
    let buffered: Buffer = EMPTY;
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const fail = (err: Error): void => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onError = (err: Error): void => fail(new StreamError('BENCH_PROXY_ERROR', `CONNECT ${authority} via ${endpoint.host}:${endpoint.port}: ${err.message}`, { cause: err }));
    const onClose = (): void => fail(new StreamError('BENCH_PROXY_CLOSED', `CONNECT ${authority} via ${endpoint.host}:${endpoint.port}: closed before a response`));
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf(HEAD_END);
      if (end < 0) {
        if (buffered.length > 16_384) fail(new StreamError('BENCH_PROXY_BAD_RESPONSE', 'CONNECT response head over 16 KiB'));
        return;
      }
      const head = buffered.subarray(0, end).toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (status?.[1] !== '200') {
        fail(new StreamError('BENCH_PROXY_REFUSED', `CONNECT ${authority} via ${endpoint.host}:${endpoint.port} answered: ${head.split('\r\n')[0] ?? '(nothing)'}`));
        return;
      }
      socket.pause(); // stay paused until the caller attaches its own reader
      cleanup();
      resolve({ socket, leftover: buffered.subarray(end + HEAD_END.length) });
    };
    const timer = setTimeout(() => fail(new StreamError('BENCH_CONNECT_TIMEOUT', `CONNECT ${authority} via ${endpoint.host}:${endpoint.port}: no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}
