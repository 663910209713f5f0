/**
 * Both ends of a tunnel on an established TLS socket: the access tier runs the HTTP/2 client over
 * the socket it accepted, the connector runs the HTTP/2 server over the socket it dialled. Both get
 * the tuned settings, the wide session window and a PING keepalive that destroys a dead tunnel.
 */
import { connect, performServerHandshake } from 'node:http2';
import type { ClientHttp2Session, Http2Session, ServerHttp2Session } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { CausewayError } from '../errors.ts';
import { startKeepalive } from './keepalive.ts';
import type { Keepalive } from './keepalive.ts';
import { TUNNEL_PSEUDO_URL } from './protocol.ts';
import { DEFAULT_TUNNEL_LIMITS, tunnelClientSessionOptions, tunnelServerSessionOptions, widenSessionWindow } from './settings.ts';
import type { TunnelLimits } from './settings.ts';
import { TunnelTransport } from './transport.ts';

export interface TunnelSessionOptions {
  limits?: TunnelLimits;
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
  /** Told when the keepalive gave up on the peer; the session and socket are destroyed right after. */
  onDead?: (detail: string) => void;
}

export interface TunnelSession<S extends Http2Session> {
  session: S;
  keepalive: Keepalive;
}

function guard<S extends Http2Session>(session: S, socket: TLSSocket, options: TunnelSessionOptions): TunnelSession<S> {
  const limits = options.limits ?? DEFAULT_TUNNEL_LIMITS;
  widenSessionWindow(session, limits);
  const opts: Parameters<typeof startKeepalive>[1] = {
    bytesRead: () => socket.bytesRead,
    onDead: (detail) => {
      options.onDead?.(detail);
      session.destroy(new CausewayError('tunnel-dead', `tunnel peer stopped answering: ${detail}`, { retryable: true }));
      socket.destroy();
    },
  };
  if (options.keepaliveIntervalMs !== undefined) opts.intervalMs = options.keepaliveIntervalMs;
  if (options.keepaliveTimeoutMs !== undefined) opts.timeoutMs = options.keepaliveTimeoutMs;
  const keepalive = startKeepalive(session, opts);
  // The socket and the session live and die together; no descriptor outlives its session (CN-06).
  // A FIN from the peer ends the tunnel too: a half-open socket (allowHalfOpen servers) would
  // otherwise keep a dead tunnel in the pool until the keepalive noticed.
  session.once('close', () => {
    if (!socket.destroyed) socket.destroy();
  });
  socket.once('end', () => {
    if (!session.destroyed) session.destroy();
    socket.destroy();
  });
  return { session, keepalive };
}

/**
 * See transport.ts. One end keeping its reads going is enough to break the deadlock, so only the
 * connector's end pays for the JS transport; the access tier's session runs on the TLS socket
 * directly (native reads and writes) and keeps Node's own guard against a flooding peer.
 */
function transportFor(socket: TLSSocket, limits: TunnelLimits): TunnelTransport {
  return new TunnelTransport(socket, { maxQueuedBytes: limits.sessionWindow + 8 * 1024 * 1024 });
}

/** The access tier's end: an HTTP/2 client over the connector's accepted TLS socket. */
export function openTunnelClient(socket: TLSSocket, options: TunnelSessionOptions = {}): TunnelSession<ClientHttp2Session> {
  const session = connect(TUNNEL_PSEUDO_URL, { ...tunnelClientSessionOptions(options.limits), createConnection: () => socket });
  return guard(session, socket, options);
}

/** The connector's end: an HTTP/2 server over the TLS socket it dialled to the access tier. */
export function serveTunnel(socket: TLSSocket, options: TunnelSessionOptions = {}): TunnelSession<ServerHttp2Session> {
  const transport = transportFor(socket, options.limits ?? DEFAULT_TUNNEL_LIMITS);
  const session = performServerHandshake(transport, tunnelServerSessionOptions(options.limits));
  return guard(session, socket, options);
}
