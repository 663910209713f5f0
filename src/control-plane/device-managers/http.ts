/**
 * The HTTP plumbing every adapter shares: bounded JSON requests with a timeout, no redirects (a
 * bearer token never follows a Location to another host), Retry-After honoured on 429 and 503, an
 * OAuth2 client-credentials token cached until shortly before it expires, and the escaping of serial
 * numbers into each vendor's query language.
 *
 * Errors never carry a response body or a secret: only the vendor, the step and the HTTP status.
 */
import { setTimeout as sleepFor } from 'node:timers/promises';
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { CausewayError, UserError } from '../../lib/errors.ts';
import type { SecretRef } from '../../lib/spec/device-manager.ts';
import type { AdapterDeps } from './types.ts';

export const DEFAULT_TIMEOUT_MS = 15_000;
export const DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MAX_RETRY_AFTER_MS = 60_000;
/** Token endpoints answer a few hundred bytes. */
const MAX_TOKEN_BYTES = 64 * 1024;
/** Attempts per request when the vendor says "slow down". */
const MAX_ATTEMPTS = 4;

// ---------------------------------------------------------------------------------------------
// Serial numbers and query escaping

/** Letters, digits, space and . _ - / : ; 1 to 128 characters, starting with a letter or digit. */
export const SERIAL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9 ._/:-]{0,127}$/;

/** Refuses anything that is not plainly a serial number, before any request is made. */
export function checkSerial(serial: string): string {
  if (typeof serial !== 'string' || !SERIAL_PATTERN.test(serial) || serial.endsWith(' ')) {
    throw new UserError('MDM_INVALID_SERIAL', 'a serial number must be 1 to 128 letters, digits, spaces or . _ - / : starting with a letter or digit');
  }
  return serial;
}

/** An OData string literal (Microsoft Graph `$filter`): single quotes doubled. */
export function odataString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** A CrowdStrike FQL string literal: backslash and single quote escaped with a backslash. */
export function fqlString(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** A Jamf Pro RSQL string literal: double-quoted, backslash and double quote escaped with a backslash. */
export function rsqlString(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

// ---------------------------------------------------------------------------------------------
// Requests

export interface HttpContext {
  vendor: string;
  fetch: typeof fetch;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  timeoutMs: number;
  maxResponseBytes: number;
  maxRetryAfterMs: number;
}

export function httpContext(vendor: string, deps: AdapterDeps): HttpContext {
  return {
    vendor,
    fetch: deps.fetch ?? globalThis.fetch,
    clock: deps.clock ?? systemClock,
    sleep: deps.sleep ?? ((ms: number) => sleepFor(ms).then(() => undefined)),
    timeoutMs: deps.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    maxResponseBytes: deps.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
    maxRetryAfterMs: deps.maxRetryAfterMs ?? DEFAULT_MAX_RETRY_AFTER_MS,
  };
}

export interface JsonRequest {
  method?: 'GET' | 'POST';
  url: string;
  headers?: Record<string, string>;
  /** A form body (application/x-www-form-urlencoded). */
  form?: Record<string, string>;
  /** What this request is for, in error messages ("the token request", "the device query"). */
  what: string;
  maxBytes?: number;
}

export interface JsonResponse {
  status: number;
  /** The parsed JSON body; undefined when the body was empty. */
  body: unknown;
}

/** A device manager failed; `retryable` says whether trying later can help. */
export class MdmError extends CausewayError {
  /** For MDM_RATE_LIMITED: how long the vendor asked us to wait. */
  readonly retryAfterMs: number | undefined;

  constructor(code: string, message: string, options: { retryable?: boolean; cause?: unknown; retryAfterMs?: number } = {}) {
    super(code, message, options);
    this.name = 'MdmError';
    this.retryAfterMs = options.retryAfterMs;
  }
}

/**
 * One JSON request. 429 and 503 are retried after the vendor's Retry-After (or CrowdStrike's
 * X-RateLimit-RetryAfter), at most MAX_ATTEMPTS times and never for longer than maxRetryAfterMs per
 * wait; every other status is returned to the caller, which decides what it means.
 */
export async function requestJson(ctx: HttpContext, req: JsonRequest): Promise<JsonResponse> {
  for (let attempt = 1; ; attempt++) {
    const res = await send(ctx, req);
    if (res.status === 429 || res.status === 503) {
      await res.body?.cancel().catch(() => undefined);
      const waitMs = retryAfterMs(res.headers, ctx.clock.now());
      const limited = res.status === 429 ? 'rate-limited the request' : 'is unavailable';
      if (attempt >= MAX_ATTEMPTS || waitMs > ctx.maxRetryAfterMs) {
        throw new MdmError('MDM_RATE_LIMITED', `${ctx.vendor} ${limited} (${req.what}); try again later`, { retryable: true, retryAfterMs: waitMs });
      }
      await ctx.sleep(waitMs);
      continue;
    }
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel().catch(() => undefined);
      throw new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor} answered ${req.what} with a redirect (HTTP ${res.status}); check the configured URL`);
    }
    const bytes = await readCapped(ctx, res, req.maxBytes ?? ctx.maxResponseBytes, req.what);
    if (bytes.length === 0) return { status: res.status, body: undefined };
    let body: unknown;
    try {
      body = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      // A non-JSON error page is still an answer with a status; a non-JSON success is not.
      if (res.status >= 400) return { status: res.status, body: undefined };
      throw new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor} answered ${req.what} with something that is not JSON`, { cause: err });
    }
    return { status: res.status, body };
  }
}

async function send(ctx: HttpContext, req: JsonRequest): Promise<Response> {
  const headers: Record<string, string> = { accept: 'application/json', ...req.headers };
  let body: string | undefined;
  if (req.form !== undefined) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(req.form).toString();
  }
  try {
    return await ctx.fetch(req.url, { method: req.method ?? 'GET', headers, body, redirect: 'manual', signal: AbortSignal.timeout(ctx.timeoutMs) });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
    throw new MdmError('MDM_UNREACHABLE', `${ctx.vendor} could not be reached for ${req.what}${timedOut ? ` within ${ctx.timeoutMs} ms` : ''}`, { retryable: true, cause: err });
  }
}

async function readCapped(ctx: HttpContext, res: Response, maxBytes: number, what: string): Promise<Buffer> {
  if (res.body === null) return Buffer.alloc(0);
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body.cancel().catch(() => undefined);
    throw new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor}'s answer to ${what} is larger than ${maxBytes} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      total += chunk.byteLength;
      if (total > maxBytes) throw new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor}'s answer to ${what} is larger than ${maxBytes} bytes`);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof MdmError) throw err;
    throw new MdmError('MDM_UNREACHABLE', `${ctx.vendor}'s answer to ${what} could not be read`, { retryable: true, cause: err });
  }
  return Buffer.concat(chunks);
}

/** Retry-After in seconds or as an HTTP date, or X-RateLimit-RetryAfter in epoch seconds; 1 s when absent or unreadable. */
export function retryAfterMs(headers: Headers, nowMs: number): number {
  const value = headers.get('retry-after');
  if (value !== null) {
    if (/^\d{1,9}$/.test(value.trim())) return Number(value.trim()) * 1000;
    const date = Date.parse(value);
    if (Number.isFinite(date)) return Math.max(0, date - nowMs);
  }
  const epoch = headers.get('x-ratelimit-retryafter');
  if (epoch !== null && /^\d{1,12}$/.test(epoch.trim())) return Math.max(0, Number(epoch.trim()) * 1000 - nowMs);
  return 1000;
}

/** An answer that is not 2xx, as an error: 401/403 mean the credentials, 5xx an outage, anything else a bad request. */
export function statusError(ctx: HttpContext, what: string, status: number): MdmError {
  if (status === 401 || status === 403) {
    return new MdmError('MDM_AUTH_FAILED', `${ctx.vendor} refused ${what} (HTTP ${status}); check the client's credentials and its API permissions`);
  }
  if (status >= 500) return new MdmError('MDM_UNREACHABLE', `${ctx.vendor} failed ${what} (HTTP ${status})`, { retryable: true });
  return new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor} answered ${what} with HTTP ${status}`);
}

// ---------------------------------------------------------------------------------------------
// OAuth2 client credentials

export interface ClientCredentials {
  tokenUrl: string;
  clientId: string;
  clientSecret: SecretRef;
  /** CrowdStrike's token endpoint takes only client_id and client_secret. */
  omitGrantType?: boolean;
  /** Extra form fields (Graph's `scope`). */
  extra?: Record<string, string>;
}

export interface TokenSource {
  /** A valid access token, fetched when none is cached or the cached one is about to expire. */
  get(): Promise<string>;
  /** Forget the cached token (after the API said 401). */
  invalidate(): void;
}

/** Tokens are renewed this long before they expire. */
const TOKEN_MARGIN_MS = 60_000;

export function clientCredentialsToken(ctx: HttpContext, creds: ClientCredentials, resolveSecret: (ref: SecretRef) => Promise<string>): TokenSource {
  let cached: { token: string; expiresAt: number } | undefined;
  let inflight: Promise<string> | undefined;

  const fetchToken = async (): Promise<string> => {
    let secret: string;
    try {
      secret = await resolveSecret(creds.clientSecret);
    } catch (err) {
      const where = 'env' in creds.clientSecret ? `environment variable ${creds.clientSecret.env}` : `file ${creds.clientSecret.file}`;
      throw new MdmError('MDM_SECRET_UNAVAILABLE', `the ${ctx.vendor} client secret could not be read from ${where}`, { cause: err });
    }
    const res = await requestJson(ctx, {
      method: 'POST',
      url: creds.tokenUrl,
      form: { ...(creds.omitGrantType === true ? {} : { grant_type: 'client_credentials' }), client_id: creds.clientId, client_secret: secret, ...creds.extra },
      what: 'the token request',
      maxBytes: MAX_TOKEN_BYTES,
    });
    if (res.status === 400 || res.status === 401 || res.status === 403) {
      throw new MdmError('MDM_AUTH_FAILED', `${ctx.vendor} refused the client credentials (HTTP ${res.status}); check clientId and the client secret`);
    }
    if (res.status < 200 || res.status > 299) throw statusError(ctx, 'the token request', res.status);
    const body = res.body;
    if (!isRecord(body) || typeof body.access_token !== 'string' || body.access_token === '') {
      throw new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor}'s token answer has no access_token`);
    }
    const expiresIn = typeof body.expires_in === 'number' ? body.expires_in : typeof body.expires_in === 'string' ? Number(body.expires_in) : NaN;
    // Without a usable lifetime the token is used for this call only.
    const lifetimeMs = Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn * 1000 : 0;
    cached = { token: body.access_token, expiresAt: ctx.clock.now() + lifetimeMs - Math.min(TOKEN_MARGIN_MS, lifetimeMs / 2) };
    return body.access_token;
  };

  return {
    get(): Promise<string> {
      if (cached !== undefined && ctx.clock.now() < cached.expiresAt) return Promise.resolve(cached.token);
      inflight ??= fetchToken().finally(() => {
        inflight = undefined;
      });
      return inflight;
    },
    invalidate(): void {
      cached = undefined;
    },
  };
}

/** A GET with the bearer token; a 401 drops the cached token and tries once more with a new one. */
export async function authorizedGet(ctx: HttpContext, tokens: TokenSource, url: string, what: string): Promise<JsonResponse> {
  for (let attempt = 1; ; attempt++) {
    const token = await tokens.get();
    const res = await requestJson(ctx, { url, headers: { authorization: `Bearer ${token}` }, what });
    if (res.status === 401 && attempt === 1) {
      tokens.invalidate();
      continue;
    }
    return res;
  }
}

// ---------------------------------------------------------------------------------------------
// Small readers for vendor JSON

export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function stringField(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** An ISO time, or undefined for anything Date cannot read. */
export function timeField(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

/** Same origin as the configured base: where a next-page link may point (a vendor's link never sends our token elsewhere). */
export function sameOrigin(link: string, base: string): boolean {
  try {
    return new URL(link).origin === new URL(base).origin;
  } catch {
    return false;
  }
}

/** A fixed string for a test() failure: the error's message (which never holds a secret) or a generic one. */
export function failureMessage(err: unknown): string {
  return err instanceof CausewayError ? err.message : 'the device manager could not be reached';
}
