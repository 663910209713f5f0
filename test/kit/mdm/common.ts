/**
 * What the device-manager fakes share: a small node:http JSON server on port 0 that records every
 * request, an OAuth2 client-credentials token issuer that checks the client's id and secret, and a
 * switch that answers the next API request 429 with Retry-After (once).
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRequest {
  method: string;
  url: URL;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface FakeReply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface JsonServer {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  url: string;
  /** Every request so far (method, path with query, headers, body). */
  requests: FakeRequest[];
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;

/** `tls`: serve https with this certificate (its url is then https://127.0.0.1:PORT). */
export async function startJsonServer(handler: (req: FakeRequest) => FakeReply | Promise<FakeReply>, tls?: { certPem: string; keyPem: string }): Promise<JsonServer> {
  const requests: FakeRequest[] = [];
  let base = '';
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(chunk);
    });
    req.on('end', () => {
      const request: FakeRequest = { method: req.method ?? 'GET', url: new URL(req.url ?? '/', base), headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(request);
      Promise.resolve()
        .then(() => handler(request))
        .then(
          (reply) => {
            const text = reply.body === undefined ? '' : JSON.stringify(reply.body);
            res.writeHead(reply.status, { ...(text === '' ? {} : { 'content-type': 'application/json' }), ...reply.headers });
            res.end(text);
          },
          (err: unknown) => {
            res.writeHead(500, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ error: String(err) }));
          },
        );
    });
  };
  const server = tls === undefined ? createServer(listener) : createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Issues opaque bearer tokens for one client and checks them. */
export interface TokenIssuer {
  /** Answers a token request's form: 200 with a token, or the vendor's 400/401 answer. */
  issue(form: URLSearchParams): FakeReply;
  /** Whether an Authorization header carries a live token. */
  check(authorization: string | undefined): boolean;
  /** How many tokens were issued. */
  issued(): number;
  /** Every token issued so far stops working (as if they expired). */
  expireAll(): void;
}

export function tokenIssuer(options: {
  clientId: string;
  clientSecret: string;
  lifetimeSec?: number;
  /** Extra form fields that must be present with these values (Graph's scope). */
  require?: Record<string, string | RegExp>;
  /** Whether grant_type=client_credentials must be sent (CrowdStrike does not ask for it). Default true. */
  requireGrantType?: boolean;
  /** The status of a successful answer (CrowdStrike answers 201). */
  okStatus?: number;
  refuse: (reason: 'invalid_client' | 'invalid_request') => FakeReply;
}): TokenIssuer {
  const live = new Set<string>();
  let count = 0;
  return {
    issue(form: URLSearchParams): FakeReply {
      if (options.requireGrantType !== false && form.get('grant_type') !== 'client_credentials') return options.refuse('invalid_request');
      for (const [key, value] of Object.entries(options.require ?? {})) {
        const got = form.get(key);
        if (got === null || (typeof value === 'string' ? got !== value : !value.test(got))) return options.refuse('invalid_request');
      }
      if (form.get('client_id') !== options.clientId || form.get('client_secret') !== options.clientSecret) return options.refuse('invalid_client');
      const token = randomBytes(24).toString('base64url');
      live.add(token);
      count++;
      return { status: options.okStatus ?? 200, body: { access_token: token, token_type: 'Bearer', expires_in: options.lifetimeSec ?? 3599 } };
    },
    check(authorization: string | undefined): boolean {
      const m = /^Bearer (\S+)$/i.exec(authorization ?? '');
      return m !== null && live.has(m[1]);
    },
    issued: () => count,
    expireAll: () => live.clear(),
  };
}

/** Answers the next `times` API requests 429 with Retry-After (seconds). */
export interface RateLimiter {
  once(retryAfterSec: number, times?: number): void;
  /** A 429 reply when one is pending, else undefined. */
  take(): FakeReply | undefined;
}

export function rateLimiter(headerName = 'retry-after'): RateLimiter {
  let pending = 0;
  let after = 1;
  return {
    once(retryAfterSec: number, times = 1): void {
      pending = times;
      after = retryAfterSec;
    },
    take(): FakeReply | undefined {
      if (pending === 0) return undefined;
      pending--;
      return { status: 429, headers: { [headerName]: String(after) }, body: { error: 'too many requests' } };
    },
  };
}

export function form(body: string): URLSearchParams {
  return new URLSearchParams(body);
}
