/**
 * The one `fetch` over node:http(s) that Causeway uses wherever it must trust a particular CA (an
 * IdP's, a device manager's, the control plane's) instead of the system roots, without touching the
 * process's trust store or environment. It:
 *
 * - trusts `caPem` (one or more PEM certificates) instead of the system roots when given, TLS 1.2 at least;
 * - presents a client certificate (`cert` and `key`, PEM) when given;
 * - never follows a redirect: a 3xx is returned as it is, whatever `init.redirect` says;
 * - refuses plain http:// unless `allowHttp` (UserError INSECURE_URL), and every other scheme (TypeError);
 * - with `maxBodyBytes`, reads the whole answer before resolving and refuses a larger one
 *   (CausewayError ANSWER_TOO_LARGE, from the promise itself); without it the body is streamed and
 *   the caller caps what it reads;
 * - with `timeoutMs`, gives up when the connection is idle that long (CausewayError TIMEOUT, retryable);
 * - honours `init.signal`;
 * - with `keepAlive`, keeps connections open for reuse (at most 8 per origin) until `close()`;
 *   otherwise each request has its own connection and `close()` does nothing.
 *
 * Request bodies: string, URLSearchParams, Uint8Array (Buffer), ArrayBuffer. Headers: a record, a
 * Headers object or pairs. Answers are WHATWG Responses; 204, 205 and 304 have a null body, and a
 * final status fetch cannot represent (below 200, above 599) is an error. Connection errors are
 * Node's own (their `code` says what failed); callers turn them into errors that say what to do.
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';
import { CausewayError, UserError } from '../errors.ts';

export interface TrustingFetchOptions {
  /** PEM of the CA certificate(s) to trust instead of the system roots. */
  caPem?: string;
  /** A client certificate (PEM) to present; needs `key`. */
  cert?: string;
  /** The client certificate's private key (PEM); needs `cert`. */
  key?: string;
  /** Give up when the connection is idle this long; default: never. */
  timeoutMs?: number;
  /** Read the answer in full before resolving and refuse one larger than this; default: stream it. */
  maxBodyBytes?: number;
  /** Allow plain http:// (default: https:// only). */
  allowHttp?: boolean;
  /** Keep connections alive between requests, until `close()`. */
  keepAlive?: boolean;
}

/** What the fetch takes besides the URL: the part of RequestInit it understands. */
export interface TrustingFetchInit {
  method?: string;
  headers?: ConstructorParameters<typeof Headers>[0];
  /** string, URLSearchParams, Uint8Array or ArrayBuffer; anything else is a TypeError. */
  body?: unknown;
  signal?: AbortSignal | null;
  /** Ignored: redirects are never followed. */
  redirect?: string;
}

export type TrustingFetch = ((input: string | URL | Request, init?: TrustingFetchInit) => Promise<Response>) & {
  /** Closes kept-alive connections (keepAlive only; otherwise nothing to do). */
  close(): void;
};

const NULL_BODY_STATUSES = new Set([204, 205, 304]);
const KEEP_ALIVE_SOCKETS = 8;

function requestBody(body: unknown): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError('trusting fetch: the request body must be a string, URLSearchParams, Uint8Array or ArrayBuffer');
}

function responseHeaders(res: IncomingMessage): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    try {
      headers.append(res.rawHeaders[i] ?? '', res.rawHeaders[i + 1] ?? '');
    } catch {
      // A header a Headers object cannot hold is one nobody here reads.
    }
  }
  return headers;
}

export function createTrustingFetch(options: TrustingFetchOptions = {}): TrustingFetch {
  if ((options.cert === undefined) !== (options.key === undefined)) throw new TypeError('trusting fetch: a client certificate needs both cert and key');
  const keepAlive = options.keepAlive ?? false;
  const maxSockets = keepAlive ? KEEP_ALIVE_SOCKETS : Infinity;
  const tls = {
    minVersion: 'TLSv1.2' as const,
    ...(options.caPem === undefined ? {} : { ca: options.caPem }),
    ...(options.cert === undefined || options.key === undefined ? {} : { cert: options.cert, key: options.key }),
  };
  const httpsAgent = new HttpsAgent({ keepAlive, maxSockets, ...tls });
  const httpAgent = new HttpAgent({ keepAlive, maxSockets });
  const { timeoutMs, maxBodyBytes } = options;

  const fetchFn = (input: string | URL | Request, init: TrustingFetchInit = {}): Promise<Response> => {
    let url: URL;
    let payload: Buffer | undefined;
    const headers: OutgoingHttpHeaders = {};
    try {
      url = new URL(input instanceof Request ? input.url : input);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TypeError(`trusting fetch: unsupported protocol ${url.protocol}`);
      if (url.protocol === 'http:' && options.allowHttp !== true) throw new UserError('INSECURE_URL', `refusing ${url.origin}: it must be reached over https://`);
      payload = requestBody(init.body);
      new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined)).forEach((value, name) => {
        headers[name] = value;
      });
      if (payload !== undefined) headers['content-length'] = String(payload.length);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const method = init.method ?? (input instanceof Request ? input.method : 'GET');
    const signal = init.signal ?? (input instanceof Request ? input.signal : undefined);
    const target = url;

    return new Promise<Response>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        reject(err instanceof Error ? err : new Error(String(err)));
      };
      const succeed = (response: Response): void => {
        if (settled) return;
        settled = true;
        resolve(response);
      };

      const onResponse = (res: IncomingMessage): void => {
        const status = res.statusCode ?? 0;
        res.on('error', fail);
        if (status < 200 || status > 599) {
          fail(new Error(`unexpected HTTP status ${status}`));
          res.destroy();
          return;
        }
        const headersOut = responseHeaders(res);
        const respond = (body: ReadableStream<Uint8Array> | Buffer | null): void => {
          try {
            succeed(new Response(NULL_BODY_STATUSES.has(status) ? null : body, { status, headers: headersOut }));
          } catch (err) {
            fail(err);
          }
        };
        if (maxBodyBytes === undefined) {
          respond(NULL_BODY_STATUSES.has(status) ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>));
          if (NULL_BODY_STATUSES.has(status)) res.resume();
          return;
        }
        const tooLarge = (): CausewayError => new CausewayError('ANSWER_TOO_LARGE', `${target.origin} sent more than ${maxBodyBytes} bytes`);
        const announced = Number(res.headers['content-length']);
        if (Number.isFinite(announced) && announced > maxBodyBytes) {
          fail(tooLarge());
          req.destroy();
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBodyBytes) {
            fail(tooLarge());
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => respond(Buffer.concat(chunks)));
      };

      const common = { method, headers, ...(timeoutMs === undefined ? {} : { timeout: timeoutMs }), ...(signal === null || signal === undefined ? {} : { signal }) };
      const req = target.protocol === 'https:' ? httpsRequest(target, { ...common, agent: httpsAgent }, onResponse) : httpRequest(target, { ...common, agent: httpAgent }, onResponse);
      if (timeoutMs !== undefined) {
        req.on('timeout', () => {
          const err = new CausewayError('TIMEOUT', `no answer from ${target.origin} within ${timeoutMs / 1000} s`, { retryable: true });
          fail(err);
          req.destroy(err);
        });
      }
      req.on('error', fail);
      req.end(payload);
    });
  };

  return Object.assign(fetchFn, {
    close(): void {
      httpsAgent.destroy();
      httpAgent.destroy();
    },
  });
}
