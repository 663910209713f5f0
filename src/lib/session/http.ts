/**
 * A `fetch` over node:https that trusts one CA (the control plane's, saved in the session) or, when
 * none is given, the system's roots. openid-client takes it as its customFetch; the token-endpoint
 * calls in this folder use it directly. It never follows redirects, caps the answer at 1 MiB and
 * gives up after a timeout. Plain http:// is refused: tokens only travel over TLS.
 */
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CausewayError, UserError, errorCode, errorMessage } from '../errors.ts';

export const MAX_ANSWER_BYTES = 1024 * 1024;
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface TrustingFetchOptions {
  /** PEM of the CA(s) to trust instead of the system roots. */
  caPem?: string;
  timeoutMs?: number;
  /** A TLS client certificate to present (the device certificate, for the token exchange). */
  clientCert?: ClientCertificate;
}

/** A client certificate and its private key (PEM). */
export interface ClientCertificate {
  certPem: string;
  keyPem: string;
}

export type FetchLike = (url: string | URL, init?: { method?: string; headers?: Record<string, string> | Headers; body?: unknown; signal?: AbortSignal | null; redirect?: string }) => Promise<Response>;

function headerRecord(headers: Record<string, string> | Headers | undefined): Record<string, string> {
  if (headers === undefined) return {};
  if (headers instanceof Headers) return Object.fromEntries(headers.entries());
  return { ...headers };
}

function bodyBytes(body: unknown): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body);
  if (body instanceof ArrayBuffer) return Buffer.from(new Uint8Array(body));
  throw new TypeError('trusting fetch: unsupported request body type');
}

export function createTrustingFetch(options: TrustingFetchOptions = {}): FetchLike {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return (input, init = {}) => {
    const url = new URL(input instanceof URL ? input.href : input);
    if (url.protocol !== 'https:') return Promise.reject(new UserError('INSECURE_URL', `refusing ${url.origin}: the control plane must be reached over https://`));
    const payload = bodyBytes(init.body);
    const headers = headerRecord(init.headers);
    if (payload !== undefined) headers['content-length'] = String(payload.length);
    return new Promise<Response>((resolve, reject) => {
      const req = httpsRequest(
        url,
        {
          method: init.method ?? 'GET',
          headers,
          agent: false,
          minVersion: 'TLSv1.2',
          timeout: timeoutMs,
          ...(init.signal === null || init.signal === undefined ? {} : { signal: init.signal }),
          ...(options.caPem === undefined ? {} : { ca: options.caPem }),
          ...(options.clientCert === undefined ? {} : { cert: options.clientCert.certPem, key: options.clientCert.keyPem }),
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_ANSWER_BYTES) {
              req.destroy(new CausewayError('ANSWER_TOO_LARGE', `${url.origin} sent more than ${MAX_ANSWER_BYTES} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('end', () => {
            const out = new Headers();
            for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
              try {
                out.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
              } catch {
                // a header a Headers object cannot hold is one nobody here reads
              }
            }
            const status = res.statusCode ?? 0;
            const body = status === 204 || status === 304 || (status >= 100 && status < 200) ? null : Buffer.concat(chunks);
            try {
              resolve(new Response(body, { status: status < 200 || status > 599 ? 502 : status, headers: out }));
            } catch (err) {
              reject(err instanceof Error ? err : new Error(String(err)));
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new CausewayError('TIMEOUT', `no answer from ${url.origin} within ${timeoutMs / 1000} s`, { retryable: true })));
      req.on('error', (err) => reject(connectionError(url.origin, err)));
      req.end(payload);
    });
  };
}

/** A failed connection as an error that says what to do (unreachable, untrusted certificate, not TLS). */
export function connectionError(where: string, err: unknown): Error {
  if (err instanceof CausewayError) return err;
  const code = errorCode(err) ?? '';
  if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'ETIMEDOUT'].includes(code)) {
    return new CausewayError('SERVER_UNREACHABLE', `cannot reach ${where} (${code}); check the URL and your network`, { cause: err, retryable: true });
  }
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|UNABLE_TO_GET_ISSUER/.test(code)) {
    return new UserError('SERVER_UNTRUSTED', `${where} presented a certificate this machine does not trust (${code}); pass --ca-file with the control plane's CA certificate (or set CAUSEWAY_CA_FILE)`, { cause: err });
  }
  if (code === 'EPROTO' || code.startsWith('ERR_SSL')) {
    return new UserError('SERVER_TLS', `TLS with ${where} failed (${code}); is it a Causeway control plane, and does the URL start with https://?`, { cause: err });
  }
  if (code === 'ABORT_ERR') return err instanceof Error ? err : new Error(String(err));
  return new CausewayError('REQUEST_FAILED', `the request to ${where} failed: ${errorMessage(err)}`, { cause: err, retryable: true });
}
