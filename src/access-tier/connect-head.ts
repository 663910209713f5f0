/**
 * Reads the one HTTP/1.1 CONNECT head a CHAIN-mode client sends inside its TLS connection: bounded
 * in size (the parser answers 431 past its limit), bounded in time (slowloris, AT-11), and leaving
 * the socket paused with any bytes after the head handed back, so nothing the client pipelined is
 * lost or read before the decision.
 */
import type { Duplex } from 'node:stream';
import { parseConnectHead } from '../lib/net/connect-request.ts';
import type { HeadLimits } from '../lib/net/connect-request.ts';
import type { Target } from '../lib/net/target.ts';

export type HeadRead =
  | { kind: 'request'; target: Target; authority: string; headLength: number; rest: Buffer }
  | { kind: 'bad-request'; status: 400 | 405 | 431; code: string; message: string; authority?: string }
  | { kind: 'timeout' }
  | { kind: 'closed' };

export interface HeadReadOptions {
  timeoutMs: number;
  limits?: HeadLimits;
}

export function readConnectHead(socket: Duplex, options: HeadReadOptions): Promise<HeadRead> {
  return new Promise<HeadRead>((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (result: HeadRead): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onGone);
      socket.off('close', onGone);
      socket.pause();
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const parsed = parseConnectHead(buffered, options.limits);
      if (parsed.state === 'incomplete') return;
      if (parsed.state === 'error') {
        finish({ kind: 'bad-request', status: parsed.status, code: parsed.code, message: parsed.message });
        return;
      }
      finish({ kind: 'request', target: parsed.target, authority: parsed.authority, headLength: parsed.headLength, rest: buffered.subarray(parsed.headLength) });
    };
    const onGone = (): void => finish({ kind: 'closed' });
    const timer = setTimeout(() => finish({ kind: 'timeout' }), options.timeoutMs);
    socket.on('data', onData);
    socket.once('end', onGone);
    socket.once('close', onGone);
    if (socket.readableEnded || socket.destroyed) onGone();
  });
}
