/**
 * The web console's session cookie and what it opens (issue 8; THREATS CP-06).
 *
 * After a console login (login.ts) the browser holds `__Host-causeway-console=<secret>` (Secure,
 * HttpOnly, SameSite=Strict, Path=/; `__Host-` means no Domain, so no sibling host can set or shadow
 * it). The store keeps only the secret's SHA-256 with the user, the absolute end (8 h) and the last use
 * (idle end 1 h). The cookie opens /api/v1 like a login session's access token: the same principal
 * (method `session`), the same AdminBinding scope, the user read on every request (a disabled or
 * deleted user is refused at once).
 *
 * CSRF: a cookie is sent by the browser on its own, so every request that is not GET or HEAD must also
 * show it was made by our own page:
 *   - `Origin` equal to the public URL's origin (a missing one is refused too: browsers send it on
 *     every cross-origin and every non-GET fetch, so only a forged or stripped request lacks it);
 *   - `X-CSRF-Token` equal to the session's CSRF token, an HMAC of the secret that /console/session
 *     hands to the page (another origin cannot read it, and a header cannot be set on a form post);
 *   - a body only as `Content-Type: application/json` (a form or a text/plain "JSON" body is what a
 *     cross-origin form can send without a preflight).
 * Any of these missing or wrong: 403 CSRF_REFUSED, before the body is read.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../api/errors.ts';
import { sessionPrincipal } from '../auth.ts';
import type { Authenticator, AuthOutcome, Principal } from '../auth.ts';
import type { Grant } from '../identity/admin-binding.ts';
import type { ConsoleSessionRecord, Store, UserRecord } from '../store/index.ts';

export const SESSION_COOKIE = '__Host-causeway-console';
export const LOGIN_COOKIE = '__Host-causeway-console-login';
/** The absolute lifetime of a console session. */
export const SESSION_TTL_MS = 8 * 3_600_000;
/** A session unused this long ends. */
export const SESSION_IDLE_MS = 3_600_000;
export const CSRF_HEADER = 'x-csrf-token';

const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);
const MAX_COOKIE_HEADER = 8192;

/** The value of one cookie in the request's Cookie header (the first, should the browser send several). */
export function cookieValue(request: Pick<FastifyRequest, 'headers'>, name: string): string | undefined {
  const header = request.headers.cookie;
  if (typeof header !== 'string' || header.length > MAX_COOKIE_HEADER) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** A Set-Cookie value with the attributes every console cookie has (CP-06). */
export function setCookie(name: string, value: string, options: { maxAgeSeconds: number; sameSite: 'Strict' | 'Lax' }): string {
  return `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=${options.sameSite}; Max-Age=${Math.max(0, Math.floor(options.maxAgeSeconds))}`;
}

export function clearCookie(name: string, sameSite: 'Strict' | 'Lax'): string {
  return setCookie(name, '', { maxAgeSeconds: 0, sameSite });
}

/** The CSRF token of a session: an HMAC of its secret, so the database holds neither. */
export function csrfTokenOf(secret: string): string {
  return createHmac('sha256', secret).update('causeway-console-csrf').digest('base64url');
}

function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Whether the request has a body (a length above zero, or a chunked one). */
function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  if (length !== undefined && length !== '0') return true;
  return request.headers['transfer-encoding'] !== undefined;
}

/**
 * Throws 403 CSRF_REFUSED unless a state-changing request comes from our own page (module comment).
 * GET and HEAD pass: they change nothing.
 */
export function checkCsrf(request: FastifyRequest, secret: string, origin: string): void {
  if (SAFE_METHODS.has(request.method)) return;
  const given = request.headers.origin;
  if (given === undefined) throw csrfRefused('the request has no Origin header');
  if (given !== origin) throw csrfRefused('the request comes from another origin');
  const token = request.headers[CSRF_HEADER];
  if (typeof token !== 'string' || !sameToken(token, csrfTokenOf(secret))) throw csrfRefused(`the ${CSRF_HEADER} header is missing or wrong`);
  if (hasBody(request)) {
    const type = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') throw csrfRefused('a body must be sent as application/json');
  }
}

function csrfRefused(why: string): ApiError {
  return new ApiError(403, 'CSRF_REFUSED', `refused as a possible cross-site request: ${why}. The console sends Origin, X-CSRF-Token (from GET /console/session) and JSON; scripts should use an API token instead of the console cookie`);
}

export interface ConsoleSessionDeps {
  store: Pick<Store, 'useConsoleSession' | 'getUser'>;
  /** The grant of a user now (the session authenticator's, which caches the AdminBindings). */
  grantOf: (user: { name: string; groups: readonly string[] }) => Promise<Grant>;
  /** The public URL's origin: the only Origin a write may come from. */
  origin: string;
  /** Default SESSION_IDLE_MS. */
  idleMs?: number;
}

export interface ConsoleCaller {
  secret: string;
  session: ConsoleSessionRecord;
  user: UserRecord;
  grant: Grant;
}

/** The console caller of a request: a live session of an enabled user; undefined otherwise. */
export async function consoleCaller(request: FastifyRequest, deps: ConsoleSessionDeps): Promise<ConsoleCaller | 'none' | 'invalid'> {
  const secret = cookieValue(request, SESSION_COOKIE);
  if (secret === undefined || secret === '') return 'none';
  const session = await deps.store.useConsoleSession(secret, { idleMs: deps.idleMs ?? SESSION_IDLE_MS });
  if (session === undefined) return 'invalid';
  const user = await deps.store.getUser(session.userId);
  if (user === undefined || user.disabled) return 'invalid';
  return { secret, session, user, grant: await deps.grantOf(user) };
}

export function principalOfCaller(caller: ConsoleCaller): Principal {
  return sessionPrincipal(caller.user, caller.grant, caller.session.expiresAt);
}

/**
 * For the /api/v1 auth hook, after the bearer authenticators: claims requests that carry the console
 * cookie and no Authorization header. An unknown, expired or idle session, or a disabled user, is
 * `invalid` (401); a live one that fails the CSRF checks is 403 CSRF_REFUSED.
 */
export function consoleAuthenticator(deps: ConsoleSessionDeps): Authenticator {
  return {
    async authenticate(request): Promise<AuthOutcome> {
      if (request.headers.authorization !== undefined) return { kind: 'none' };
      const caller = await consoleCaller(request, deps);
      if (caller === 'none') return { kind: 'none' };
      if (caller === 'invalid') return { kind: 'invalid' };
      checkCsrf(request, caller.secret, deps.origin);
      return { kind: 'ok', principal: principalOfCaller(caller) };
    },
  };
}
