/**
 * A deliberately small HTTP/1.1 client over a raw socket: one request at a time, responses with
 * Content-Length. It keeps the client's own cost per request tiny and identical for every target,
 * so the latency differences come from what sits between client and backend.
 */
import type { Socket } from 'node:net';

const HEAD_END = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);

export const KEEP_ALIVE_REQUEST = Buffer.from('GET / HTTP/1.1\r\nHost: backend.bench.test\r\n\r\n');
export const CLOSING_REQUEST = Buffer.from('GET / HTTP/1.1\r\nHost: backend.bench.test\r\nConnection: close\r\n\r\n');

export class HttpExchange {
  private buffered: Buffer;
  private waiter: { resolve: (status: number) => void; reject: (err: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly socket: Socket;

  constructor(socket: Socket, leftover: Buffer = EMPTY) {
    this.socket = socket;
    this.buffered = leftover;
    socket.on('data', (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      this.parse();
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed before the response was complete')));
    socket.resume();
  }

  /** Sends one request and resolves with the status once the whole response has arrived. */
  async send(request: Buffer): Promise<number> {
    if (this.failure !== undefined) throw this.failure;
    const response = new Promise<number>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
    this.socket.write(request);
    return response;
  }

  private parse(): void {
    if (this.waiter === undefined) return;
    const end = this.buffered.indexOf(HEAD_END);
    if (end < 0) return;
    const head = this.buffered.subarray(0, end).toString('latin1');
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (length === null) {
      this.fail(new Error(`response without Content-Length: ${head.split('\r\n')[0] ?? ''}`));
      return;
    }
    const total = end + HEAD_END.length + Number(length[1]);
    if (this.buffered.length < total) return;
    const status = Number(head.slice(9, 12));
    this.buffered = this.buffered.length === total ? EMPTY : this.buffered.subarray(total);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter.resolve(status);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(err);
  }
}
