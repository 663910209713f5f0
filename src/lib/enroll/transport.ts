/**
 * HTTPS from a peer (access tier, connector, kube proxy) to the control plane: JSON requests and
 * the long-lived config stream, with the peer's client certificate when it has one.
 *
 * The control plane is trusted when its certificate is a control-plane certificate from the
 * installation's CA (checked by type, like every other link, since peers often reach it by an
 * address its certificate does not name), or, for a control plane published with a certificate from
 * a public CA, when that certificate chains to the system's roots and names the host. Before
 * enrollment the CA is not known yet: only `GET /api/v1/ca` is fetched without verification, and
 * its answer is checked against the pin the join command carries (see enroll.ts).
 */
import { X509Certificate } from 'node:crypto';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { checkServerIdentity, rootCertificates } from 'node:tls';
import type { ConnectionOptions, PeerCertificate } from 'node:tls';
import { CausewayError, UserError, errorCode, errorMessage } from '../errors.ts';
import { checkPeerCertificate } from '../pki/index.ts';

export interface PeerTlsMaterial {
  /** The installation's CA certificate (PEM). */
  caPem: string;
  /** The peer's own certificate and key, when it has enrolled. */
  certPem?: string;
  keyPem?: string;
}

export interface ControlPlaneRequest {
  /** The control plane's base URL (https://host:port, optionally with a path prefix). */
  baseUrl: string;
  /** Path from the API root, e.g. `/api/v1/enroll`, with its query. */
  path: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** JSON-encoded when given. */
  body?: unknown;
  /** How to trust the control plane: the CA (and our client certificate), or `discovery` for the one unverified fetch of the CA. */
  tls: PeerTlsMaterial | 'discovery';
  /** Default 15 s for the whole exchange. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Extra request headers (an admin's Authorization, in tools and tests). */
  headers?: OutgoingHttpHeaders;
  /** A keep-alive agent made by keepAliveAgent for this same material; default: one connection per request. */
  agent?: HttpsAgent;
}

export interface ControlPlaneResponse {
  status: number;
  /** The parsed JSON body, or undefined when it was not JSON. */
  body: unknown;
}

/** How JSON requests are made; enroll and renewal take one (tests pass their own). */
export type ControlPlaneFetch = (request: ControlPlaneRequest) => Promise<ControlPlaneResponse>;

const MAX_JSON_BYTES = 1024 * 1024;

/** The URL of `path` under the control plane's base URL; a base that is not https is a UserError. */
export function controlPlaneUrl(baseUrl: string, path: string): URL {
  let base: URL;
  try {
    base = new URL(baseUrl);
  } catch (err) {
    throw new UserError('CONTROL_PLANE_URL_INVALID', `the control plane URL "${baseUrl.slice(0, 200)}" is not a URL; give it as https://host:port`, { cause: err });
  }
  if (base.protocol !== 'https:') throw new UserError('CONTROL_PLANE_URL_INVALID', `the control plane URL must start with https:// (got ${base.protocol})`);
  if (base.username !== '' || base.password !== '') throw new UserError('CONTROL_PLANE_URL_INVALID', 'the control plane URL must not carry a user name or password');
  const prefix = base.pathname.replace(/\/+$/, '');
  return new URL(`${base.origin}${prefix}${path}`);
}

/** TLS options for talking to the control plane with this material (see the file comment). */
export function controlPlaneTlsOptions(tls: PeerTlsMaterial | 'discovery'): ConnectionOptions {
  if (tls === 'discovery') {
    // Only for GET /api/v1/ca, whose answer is checked against the pin; nothing secret is sent.
    return { minVersion: 'TLSv1.2', rejectUnauthorized: false };
  }
  let ourCa: X509Certificate;
  try {
    ourCa = new X509Certificate(tls.caPem);
  } catch (err) {
    throw new UserError('CA_CERT_INVALID', 'the stored CA certificate cannot be read; enroll again to fetch it', { cause: err });
  }
  const options: ConnectionOptions = {
    minVersion: 'TLSv1.3',
    ca: [tls.caPem, ...rootCertificates],
    rejectUnauthorized: true,
    checkServerIdentity: (host: string, peer: PeerCertificate): Error | undefined => {
      if (peer?.raw !== undefined) {
        try {
          const cert = new X509Certificate(peer.raw);
          if (checkPeerCertificate(cert, 'control-plane', { trustedCas: [ourCa] }).ok) return undefined;
          if (cert.checkIssued(ourCa)) {
            const err = new Error('the control plane presented a certificate from this installation\'s CA that is not a control-plane certificate') as Error & { code: string };
            err.code = 'ERR_TLS_CERT_ALTNAME_INVALID';
            return err;
          }
        } catch {
          // Fall through to the hostname check, which refuses what it cannot read.
        }
      }
      return checkServerIdentity(host, peer);
    },
  };
  if (tls.certPem !== undefined) options.cert = tls.certPem;
  if (tls.keyPem !== undefined) options.key = tls.keyPem;
  return options;
}

function unreachable(url: URL, err: unknown): CausewayError {
  const code = errorCode(err);
  const tlsProblem = code !== undefined && (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || code === 'SELF_SIGNED_CERT_IN_CHAIN');
  return new CausewayError(
    tlsProblem ? 'CONTROL_PLANE_TLS' : 'CONTROL_PLANE_UNREACHABLE',
    tlsProblem
      ? `the control plane at ${url.origin} did not present a certificate this peer trusts (${code}: ${errorMessage(err)}); check --control-plane and the CA`
      : `the control plane at ${url.origin} is unreachable (${code ?? errorMessage(err)})`,
    { cause: err, retryable: true },
  );
}

/**
 * A keep-alive agent for frequent requests with one peer's material (the event shipper): one
 * TLS connection reused across batches instead of a handshake per batch. Make a new one when the
 * material changes (renewal) and destroy the old one.
 */
export function keepAliveAgent(tls: PeerTlsMaterial): HttpsAgent {
  return new HttpsAgent({ keepAlive: true, maxSockets: 2, keepAliveMsecs: 10_000, ...controlPlaneTlsOptions(tls) });
}

/**
 * One keepAliveAgent per certificate, for a sender whose material can be renewed: `agentFor` returns the agent
 * of the material it is given, making a new one (and destroying the old) when the material changed.
 */
export function agentPerCertificate(): { agentFor: (material: PeerTlsMaterial) => HttpsAgent; destroy: () => void } {
  let current: { material: PeerTlsMaterial; agent: HttpsAgent } | undefined;
  return {
    agentFor: (material) => {
      if (current?.material !== material) {
        current?.agent.destroy();
        current = { material, agent: keepAliveAgent(material) };
      }
      return current.agent;
    },
    destroy: () => {
      current?.agent.destroy();
      current = undefined;
    },
  };
}

/** Opens a request; resolves with the response head, the body still to be read. */
export function openControlPlaneRequest(req: ControlPlaneRequest): Promise<{ response: IncomingMessage; abort: () => void }> {
  const url = controlPlaneUrl(req.baseUrl, req.path);
  const tls = controlPlaneTlsOptions(req.tls);
  const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body), 'utf8');
  return new Promise((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { accept: 'application/json', ...req.headers };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = body.length;
    }
    const r = httpsRequest(url, { method: req.method, headers, ...tls, agent: req.agent ?? false, signal: req.signal });
    const timeoutMs = req.timeoutMs ?? 15_000;
    const timer = setTimeout(() => r.destroy(new CausewayError('CONTROL_PLANE_TIMEOUT', `the control plane at ${url.origin} did not answer within ${timeoutMs} ms`, { retryable: true })), timeoutMs);
    timer.unref();
    r.once('socket', (socket) => socket.setNoDelay(true));
    r.once('error', (err) => {
      clearTimeout(timer);
      reject(err instanceof CausewayError ? err : unreachable(url, err));
    });
    r.once('response', (response) => {
      clearTimeout(timer);
      resolve({ response, abort: () => r.destroy() });
    });
    r.end(body);
  });
}

/** A JSON request: the status and parsed body; network and TLS failures are retryable CausewayErrors. */
export const requestControlPlane: ControlPlaneFetch = async (req) => {
  const url = controlPlaneUrl(req.baseUrl, req.path);
  const timeoutMs = req.timeoutMs ?? 15_000;
  const { response, abort } = await openControlPlaneRequest({ ...req, timeoutMs });
  const timer = setTimeout(abort, timeoutMs);
  timer.unref();
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response) {
      const buffer = chunk as Buffer;
      size += buffer.length;
      if (size > MAX_JSON_BYTES) {
        abort();
        throw new CausewayError('CONTROL_PLANE_RESPONSE_TOO_LARGE', `the control plane at ${url.origin} sent more than ${MAX_JSON_BYTES} bytes`, { retryable: true });
      }
      chunks.push(buffer);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: response.statusCode ?? 0, body };
  } catch (err) {
    throw err instanceof CausewayError ? err : unreachable(url, err);
  } finally {
    clearTimeout(timer);
  }
};

/** The code and message of an API error answer (`{ error: { code, message } }`), for messages; one line. */
export function errorCodeOf(body: unknown): string | undefined {
  const inner = body !== null && typeof body === 'object' && 'error' in body ? body.error : body;
  if (inner === null || typeof inner !== 'object' || !('code' in inner)) return undefined;
  return typeof inner.code === 'string' ? inner.code : undefined;
}

/** A one-line description of an API error answer, for messages. */
export function describeErrorBody(body: unknown): string {
  const inner = body !== null && typeof body === 'object' && 'error' in body ? body.error : body;
  if (inner !== null && typeof inner === 'object') {
    const record = inner as Record<string, unknown>;
    const code = typeof record.code === 'string' ? record.code : undefined;
    const message = typeof record.message === 'string' ? record.message : undefined;
    if (code !== undefined || message !== undefined) return `${code ?? 'error'}: ${(message ?? '').slice(0, 300).replace(/[\r\n]+/g, ' ')}`;
  }
  return 'no details';
}
