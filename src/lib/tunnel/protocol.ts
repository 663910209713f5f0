/**
 * The tunnel wire protocol between an access tier and a connector (DESIGN.md §3).
 *
 * The connector dials the access tier over TLS 1.3 with its connector certificate, offering ALPN
 * `causeway-tunnel/1`, and then serves HTTP/2 on that connection; the access tier is the HTTP/2
 * client. One stream per user connection:
 *
 *   HEADERS  :method CONNECT, :authority host:port (the address to dial, already checked and
 *            overridden by the access tier), causeway-session, causeway-service, causeway-user,
 *            causeway-device (percent-encoded, informational: the connector logs them)
 *   response :status 200 once the connector's backend TCP connection is up; then DATA both ways,
 *            END_STREAM in either direction is a TCP half-close (socket.end()).
 *            :status 403 + causeway-reason: target-not-allowed when the connector's own allow-list
 *            refuses the target (defence in depth against a compromised access tier);
 *            :status 502 + causeway-reason: backend-unreachable | backend-timeout when dialling fails;
 *            :status 400 + causeway-reason: bad-request for a malformed request;
 *            :status 503 + causeway-reason: draining when the connector is shutting down.
 *   RST_STREAM only on errors (a reset backend, an aborted user connection).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { parseAuthority } from '../net/target.ts';
import type { Target } from '../net/target.ts';

export const TUNNEL_ALPN = 'causeway-tunnel/1';

/** The authority http2.connect is given; the socket is supplied, so it is never resolved. */
export const TUNNEL_PSEUDO_URL = 'https://connector.invalid';

export const TUNNEL_HEADER = {
  session: 'causeway-session',
  service: 'causeway-service',
  user: 'causeway-user',
  device: 'causeway-device',
  reason: 'causeway-reason',
} as const;

/** Why a connector refused a stream; carried in `causeway-reason`. */
export type ConnectorRefusal = 'target-not-allowed' | 'backend-unreachable' | 'backend-timeout' | 'bad-request' | 'draining';

const REFUSALS: ReadonlySet<string> = new Set<ConnectorRefusal>(['target-not-allowed', 'backend-unreachable', 'backend-timeout', 'bad-request', 'draining']);

export const REFUSAL_STATUS: Readonly<Record<ConnectorRefusal, number>> = {
  'target-not-allowed': 403,
  'backend-unreachable': 502,
  'backend-timeout': 502,
  'bad-request': 400,
  draining: 503,
};

/** Who a stream is for; everything but the session id is informational on the connector side. */
export interface StreamMeta {
  session: string;
  service: string;
  user?: string;
  device?: string;
}

/** The request headers for one tunnel stream. Identity values are percent-encoded so no byte can break a header. */
export function tunnelRequestHeaders(authority: string, meta: StreamMeta): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {
    ':method': 'CONNECT',
    ':authority': authority,
    [TUNNEL_HEADER.session]: encodeURIComponent(meta.session),
    [TUNNEL_HEADER.service]: encodeURIComponent(meta.service),
  };
  if (meta.user !== undefined) headers[TUNNEL_HEADER.user] = encodeURIComponent(meta.user);
  if (meta.device !== undefined) headers[TUNNEL_HEADER.device] = encodeURIComponent(meta.device);
  return headers;
}

export type TunnelRequest =
  | { ok: true; target: Target; meta: StreamMeta }
  | { ok: false; refusal: 'bad-request'; message: string };

/** Reads a stream's request headers on the connector side. Never throws. */
export function readTunnelRequest(headers: IncomingHttpHeaders): TunnelRequest {
  if (headers[':method'] !== 'CONNECT') return { ok: false, refusal: 'bad-request', message: 'only CONNECT streams are served' };
  const authority = headers[':authority'];
  if (typeof authority !== 'string') return { ok: false, refusal: 'bad-request', message: 'the stream has no :authority' };
  const parsed = parseAuthority(authority);
  if (!parsed.ok) return { ok: false, refusal: 'bad-request', message: `bad :authority: ${parsed.message}` };
  const meta: StreamMeta = { session: decodeHeader(headers[TUNNEL_HEADER.session]) ?? '', service: decodeHeader(headers[TUNNEL_HEADER.service]) ?? '' };
  const user = decodeHeader(headers[TUNNEL_HEADER.user]);
  const device = decodeHeader(headers[TUNNEL_HEADER.device]);
  if (user !== undefined) meta.user = user;
  if (device !== undefined) meta.device = device;
  return { ok: true, target: parsed.target, meta };
}

/** The refusal a connector sent, or undefined when the response is not one we know. */
export function readRefusal(headers: IncomingHttpHeaders): ConnectorRefusal | undefined {
  const reason = headers[TUNNEL_HEADER.reason];
  return typeof reason === 'string' && REFUSALS.has(reason) ? (reason as ConnectorRefusal) : undefined;
}

function decodeHeader(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    return decodeURIComponent(value);
  } catch {
    return undefined;
  }
}
