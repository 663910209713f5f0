/**
 * Port-forward the way kubectl 1.30+ does it: SPDY/3.1 tunnelled inside a WebSocket (subprotocol
 * `SPDY/3.1+portforward.k8s.io`), or, as the fallback, a POST with `Upgrade: SPDY/3.1` and raw
 * SPDY on the socket. Each forwarded connection is a pair of streams (`streamtype: error` and
 * `streamtype: data`, matched by `requestid`); the data stream goes to 127.0.0.1:localPort when a
 * target is set for the pod's port, else to a built-in echo.
 */
import { connect } from 'node:net';
import { Duplex } from 'node:stream';
import { RstStatus } from '../spdy/frames.ts';
import { SpdySession } from '../spdy/session.ts';
import type { SpdyStream } from '../spdy/session.ts';
import type { UpgradeTarget } from './exec-transport.ts';
import { refuseUpgrade } from './server.ts';
import type { UpgradeContext } from './server.ts';
import { failure } from './status.ts';
import { acceptWebSocket, checkHandshake, CloseCode, isWebSocketUpgrade, parseSubprotocols } from './websocket.ts';
import type { WebSocketConnection } from './websocket.ts';

export const PORT_FORWARD_PROTOCOL = 'portforward.k8s.io';
export const SPDY_TUNNEL_PREFIX = 'SPDY/3.1+';
/** How long the first stream of a pair waits for its partner, as the kubelet does. */
const PAIR_TIMEOUT_MS = 30_000;

export class PortForwardTargets {
  private readonly targets = new Map<string, number>();

  set(namespace: string, pod: string, podPort: number, localPort: number): void {
    this.targets.set(`${namespace}/${pod}/${podPort}`, localPort);
  }

  get(namespace: string, pod: string, podPort: number): number | undefined {
    return this.targets.get(`${namespace}/${pod}/${podPort}`);
  }
}

export function handlePortForwardUpgrade(ctx: UpgradeContext, target: UpgradeTarget): void {
  const { req, socket, head } = target;
  if (isWebSocketUpgrade(req)) {
    const problem = checkHandshake(req);
    if (problem !== undefined) {
      refuseUpgrade(socket, failure(400, 'BadRequest', problem));
      return;
    }
    const wanted = `${SPDY_TUNNEL_PREFIX}${PORT_FORWARD_PROTOCOL}`;
    const offered = parseSubprotocols(req.headers['sec-websocket-protocol']);
    if (!offered.includes(wanted)) {
      refuseUpgrade(socket, failure(400, 'BadRequest', `port-forward over WebSocket needs the subprotocol ${wanted}; offered: [${offered.join(', ')}]`));
      return;
    }
    const ws = acceptWebSocket(req, socket, head, wanted);
    serveSpdyPortForward(ctx, target, webSocketDuplex(ws), 'websocket');
    return;
  }
  if ((req.headers.upgrade ?? '').toLowerCase() === 'spdy/3.1') {
    const versions = (req.headers['x-stream-protocol-version'] ?? '')
      .toString()
      .split(',')
      .map((v) => v.trim());
    if (!versions.includes(PORT_FORWARD_PROTOCOL)) {
      refuseUpgrade(socket, failure(403, 'Forbidden', `unable to upgrade: unable to negotiate protocol: client supports [${versions.join(' ')}], server accepts [${PORT_FORWARD_PROTOCOL}]`));
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: ${PORT_FORWARD_PROTOCOL}\r\n\r\n`);
    (socket as Duplex & { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    if (head.length > 0) socket.unshift(head);
    serveSpdyPortForward(ctx, target, socket, 'spdy');
    return;
  }
  refuseUpgrade(socket, failure(400, 'BadRequest', `port-forward needs Upgrade: websocket (with ${SPDY_TUNNEL_PREFIX}${PORT_FORWARD_PROTOCOL}) or Upgrade: SPDY/3.1`));
}

/** The byte stream carried in a WebSocket's binary messages, as a Duplex. */
export function webSocketDuplex(ws: WebSocketConnection): Duplex {
  const duplex = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      if (!ws.isOpen || ws.send(chunk)) callback();
      else ws.socket.once('drain', () => callback());
    },
    final(callback) {
      ws.close(CloseCode.Normal);
      callback();
    },
    destroy(err, callback) {
      ws.destroy();
      callback(err);
    },
  });
  ws.on('message', (data, binary) => {
    if (binary) duplex.push(data);
    else ws.close(CloseCode.Unsupported, 'the SPDY tunnel carries binary messages only');
  });
  ws.on('close', () => {
    duplex.push(null);
    duplex.destroy();
  });
  return duplex;
}

interface StreamPair {
  data?: SpdyStream;
  error?: SpdyStream;
  port: number;
  timer: NodeJS.Timeout;
}

function serveSpdyPortForward(ctx: UpgradeContext, target: UpgradeTarget, transport: Duplex, kind: 'websocket' | 'spdy'): void {
  // moby/spdystream (kubectl) never sends WINDOW_UPDATE, so a send window would stall at 64 KiB.
  const session = new SpdySession(transport, { isServer: true, enforceSendWindow: false, sendWindowUpdates: false });
  const pairs = new Map<string, StreamPair>();
  const onServerClose = (): void => session.destroy();
  ctx.signal.addEventListener('abort', onServerClose);
  session.on('close', () => {
    ctx.signal.removeEventListener('abort', onServerClose);
    for (const pair of pairs.values()) clearTimeout(pair.timer);
  });
  session.on('protocolError', (err) => ctx.logger.debug({ err }, 'fake-kube: SPDY protocol error from client'));

  session.on('stream', (stream) => {
    stream.on('error', () => {});
    const type = stream.header('streamtype');
    const port = Number(stream.header('port'));
    const requestId = stream.header('requestid') ?? '';
    if ((type !== 'data' && type !== 'error') || !Number.isInteger(port) || port < 1 || port > 65535) {
      stream.reset(RstStatus.ProtocolError);
      return;
    }
    stream.reply();
    let pair = pairs.get(requestId);
    if (pair === undefined) {
      pair = {
        port,
        timer: setTimeout(() => {
          pairs.delete(requestId);
          pair?.data?.reset();
          pair?.error?.reset();
        }, PAIR_TIMEOUT_MS),
      };
      pair.timer.unref();
      pairs.set(requestId, pair);
    }
    pair[type] = stream;
    if (pair.data !== undefined && pair.error !== undefined) {
      clearTimeout(pair.timer);
      pairs.delete(requestId);
      forward(ctx, target, kind, pair.port, pair.data, pair.error);
    }
  });
}

function forward(ctx: UpgradeContext, target: UpgradeTarget, kind: 'websocket' | 'spdy', port: number, data: SpdyStream, error: SpdyStream): void {
  ctx.portForwards.push({ namespace: target.namespace, pod: target.pod, port, transport: kind, user: target.user, time: Date.now() });
  // The client writes nothing on the error stream; drain it so its FIN is seen.
  error.resume();
  const finish = (message?: string): void => {
    if (error.destroyed || error.writableEnded) return;
    if (message !== undefined) error.write(message);
    error.end();
  };

  const localPort = ctx.targets.get(target.namespace, target.pod, port);
  if (localPort === undefined) {
    // The built-in echo: what comes in goes back out; the client's FIN ends our side too.
    data.on('data', (chunk: Buffer) => {
      if (!data.write(chunk)) {
        data.pause();
        data.once('drain', () => data.resume());
      }
    });
    data.on('end', () => {
      data.end();
      finish();
    });
    data.on('close', () => finish());
    return;
  }

  const socket = connect({ host: '127.0.0.1', port: localPort, allowHalfOpen: true });
  ctx.track(socket);
  socket.setNoDelay(true);
  let connected = false;
  socket.on('connect', () => {
    connected = true;
    data.pipe(socket);
    socket.pipe(data);
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (!connected) {
      const pod = ctx.store.get(target.namespace, target.pod);
      finish(`error forwarding port ${port} to pod ${target.pod}, uid ${pod?.metadata.uid ?? ''}: dial tcp4 127.0.0.1:${port}: connect: ${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message}`);
      data.end();
      return;
    }
    data.destroy();
  });
  socket.on('close', () => {
    if (!data.writableEnded) data.end();
    finish();
  });
  data.on('close', () => {
    // Reset by the client (or the session went away): drop the connection to the target.
    if (data.resetStatus !== undefined) socket.destroy();
  });
}
