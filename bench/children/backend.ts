/**
 * The backend every target leads to, in its own process:
 * - sink: counts what it receives; when the client half-closes, answers the count as 8 bytes
 *   (big-endian) and closes. Used for upload throughput and for idle streams.
 * - source: sends as fast as the connection takes until the client goes away (download throughput).
 * - http: an HTTP/1.1 server answering every request with a 3-byte body, keep-alive allowed
 *   (kept-alive request latency, new-connection time).
 */
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { serveParent } from './parent-channel.ts';

const CHUNK = Buffer.alloc(128 * 1024, 0x5a);
const BODY = Buffer.from('ok\n');

const sockets = new Set<Socket>();
function track(socket: Socket): void {
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
  socket.on('error', () => {}); // clients abort on purpose (download ends by closing)
  socket.setNoDelay(true);
}

const sink = createServer((socket) => {
  track(socket);
  let received = 0;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  socket.on('end', () => {
    const count = Buffer.alloc(8);
    count.writeBigUInt64BE(BigInt(received));
    socket.end(count);
  });
});

const source = createServer((socket) => {
  track(socket);
  const pump = (): void => {
    while (!socket.destroyed && socket.writable && socket.write(CHUNK)) {
      // keep writing until the socket buffers are full; 'drain' resumes
    }
  };
  socket.on('drain', pump);
  socket.on('end', () => socket.destroy());
  pump();
});

const http = createHttpServer({ keepAliveTimeout: 120_000, requestTimeout: 0, headersTimeout: 120_000 }, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
    res.end(BODY);
  });
});
http.on('connection', track);

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve);
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

const ports = { sink: await listen(sink), source: await listen(source), http: await listen(http) };

serveParent({ ports }, async () => {
  for (const s of sockets) s.destroy();
  await Promise.all([sink, source, http].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
}, {
  connections: () => Promise.resolve({ open: sockets.size }),
});
