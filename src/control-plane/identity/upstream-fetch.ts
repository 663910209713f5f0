/**
 * The `fetch` that openid-client uses to talk to an organisation's IdP (discovery, JWKS, token and
 * userinfo requests): node:http(s), one connection per request, and, when the IdentityProvider spec
 * gives `caPem`, trust in exactly those CA certificates instead of the system roots (nothing is added
 * to the process's trust store or environment). Redirects are returned, never followed; answers
 * larger than `maxBodyBytes` are refused.
 */
import { request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** What openid-client passes to a custom fetch (its CustomFetch type, restated so this file stands alone). */
export interface UpstreamFetchOptions {
  method: string;
  headers: Record<string, string>;
  body?: ArrayBuffer | null | ReadableStream | string | Uint8Array | undefined | URLSearchParams;
  redirect?: 'manual';
  signal?: AbortSignal;
}

export type UpstreamFetch = (url: string, options: UpstreamFetchOptions) => Promise<Response>;

/** Discovery documents, key sets and token answers are a few KiB. */
export const MAX_UPSTREAM_BODY_BYTES = 1024 * 1024;

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

function bodyBytes(body: UpstreamFetchOptions['body']): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError('a streamed request body is not supported');
}

export function createUpstreamFetch(options: { caPem?: string; maxBodyBytes?: number } = {}): UpstreamFetch {
  const maxBodyBytes = options.maxBodyBytes ?? MAX_UPSTREAM_BODY_BYTES;
  return (url, init) => {
    const target = new URL(url);
    const body = bodyBytes(init.body);
    const headers: OutgoingHttpHeaders = { ...init.headers };
    if (body !== undefined) headers['content-length'] = String(body.length);
    return new Promise<Response>((resolve, reject) => {
      const onResponse = (res: IncomingMessage): void => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBodyBytes) {
            res.destroy(new Error(`the IdP's answer is larger than ${maxBodyBytes} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          if (status < 200 || status > 599) {
            reject(new Error(`unexpected HTTP status ${status}`));
            return;
          }
          const responseHeaders = new Headers();
          for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
            try {
              responseHeaders.append(res.rawHeaders[i] ?? '', res.rawHeaders[i + 1] ?? '');
            } catch {
              // A header a Headers object cannot hold is one nobody reads.
            }
          }
          resolve(new Response(NULL_BODY_STATUSES.has(status) ? null : Buffer.concat(chunks), { status, headers: responseHeaders }));
        });
      };
      const common = { method: init.method, headers, agent: false as const, ...(init.signal === undefined ? {} : { signal: init.signal }) };
      const req =
        target.protocol === 'https:'
          ? httpsRequest(target, { ...common, minVersion: 'TLSv1.2', ...(options.caPem === undefined ? {} : { ca: options.caPem }) }, onResponse)
          : httpRequest(target, common, onResponse);
      req.on('error', reject);
      req.end(body);
    });
  };
}
