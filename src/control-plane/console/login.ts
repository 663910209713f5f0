/**
 * Console login, backend-for-frontend style: the browser never holds a token, only a session cookie
 * (session.ts). The login itself is Causeway's own OIDC flow with the `causeway-console` client, so
 * the login page (built-in users, org IdPs) is the one the CLI uses:
 *
 *   GET  /console/login?next=/path  a login record (state, PKCE verifier, nonce, next; 10 min, in the
 *                                   store) named by a random id in `__Host-causeway-console-login`
 *                                   (SameSite=Lax: it must come back on the redirect from an org IdP);
 *                                   302 to /oidc/auth with prompt=login (always the login page: a
 *                                   console login never rides on an earlier provider session)
 *   GET  /console/callback          the record must exist, be unused and match `state`; the code is
 *                                   exchanged at our own token endpoint (in process, with the verifier),
 *                                   the ID token's nonce checked, the access token destroyed at once;
 *                                   a console session is created and its cookie set; 303 to `next`
 *                                   (CP-07: next.ts). After an org IdP the redirect chain is cross-site,
 *                                   where a SameSite=Strict cookie would not be sent on the redirect, so
 *                                   then the page moves on by itself (meta refresh, no script)
 *   POST /console/logout            CSRF-checked (session.ts); deletes the session, clears the cookie
 *   GET  /console/session           who is logged in, their role and the CSRF token; 401 without one
 *
 * Login starts are limited per source address (each stores a record), like the org IdP starts (CP-12).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type Provider from 'oidc-provider';
import type { Clock } from '../../lib/clock.ts';
import { errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { sendError } from '../api/errors.ts';
import { FailureLimiter, sourceKey } from '../auth.ts';
import type { FailureLimiterOptions } from '../auth.ts';
import { escapeHtml, PAGE_HEADERS, renderPage } from '../identity/pages.ts';
import { CONSOLE_CALLBACK_PATH, CONSOLE_CLIENT_ID, ROUTES } from '../identity/provider.ts';
import type { Store } from '../store/index.ts';
import { safeNext } from './next.ts';
import { checkCsrf, clearCookie, consoleCaller, csrfTokenOf, LOGIN_COOKIE, SESSION_COOKIE, SESSION_IDLE_MS, SESSION_TTL_MS, setCookie, cookieValue } from './session.ts';
import type { ConsoleCaller, ConsoleSessionDeps } from './session.ts';

export const LOGIN_MODEL = 'ConsoleLogin';
const LOGIN_TTL_MS = 10 * 60_000;
const SCOPE = 'openid email profile groups';

export interface ConsoleLoginDeps extends ConsoleSessionDeps {
  store: Store;
  /** The provider (for destroying the access token the exchange made). */
  provider: Provider;
  /** The public URL (an origin). */
  publicUrl: string;
  /** The user id the access token was issued to, for tokens of the console client only. */
  findAccessToken: (token: string) => Promise<{ accountId: string; clientId: string } | undefined>;
  clock: Clock;
  logger: Logger;
  /** Per-source limit on login starts. Default: a burst of 60, one more every 2 s. */
  loginRateLimit?: FailureLimiterOptions;
}

interface LoginRecord {
  state: string;
  verifier: string;
  nonce: string;
  next: string;
  consumed?: unknown;
}

function hashId(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

function random(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function sendPage(reply: FastifyReply, status: number, title: string, body: string): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(renderPage({ title, body }));
}

function loginFailed(reply: FastifyReply, status: number, message: string): FastifyReply {
  return sendPage(reply, status, 'Login failed', `<p class="error" role="alert">${escapeHtml(message)}</p>
<p><a class="button" href="/console/login">Log in again</a></p>`);
}

/** The payload of a JWT we were just handed by our own token endpoint (no signature check needed: it did not cross a network). */
function jwtPayload(token: unknown): Record<string, unknown> | undefined {
  if (typeof token !== 'string') return undefined;
  const part = token.split('.')[1];
  if (part === undefined) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
    return payload !== null && typeof payload === 'object' ? (payload as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function consoleLoginRoutes(app: FastifyInstance, deps: ConsoleLoginDeps): void {
  const { store, provider, clock, logger } = deps;
  const redirectUri = `${deps.publicUrl}${CONSOLE_CALLBACK_PATH}`;
  const limiter = new FailureLimiter({ burst: 60, refillPerSecond: 0.5, clock, ...deps.loginRateLimit });

  app.get<{ Querystring: { next?: string } }>('/console/login', { config: { access: 'public' }, schema: { hide: true } }, async (request, reply) => {
    const source = sourceKey(request.ip);
    const wait = limiter.retryAfter(source);
    if (wait > 0) {
      void reply.header('retry-after', String(wait));
      return sendPage(reply, 429, 'Too many logins', `<p class="error" role="alert">Too many logins were started from this address. Try again in ${escapeHtml(wait)} seconds.</p>`);
    }
    limiter.fail(source);
    const next = safeNext(typeof request.query.next === 'string' ? request.query.next : undefined);
    const loginId = random(32);
    const record: LoginRecord = { state: random(32), verifier: random(32), nonce: random(16), next };
    await store.oidcUpsert(LOGIN_MODEL, hashId(loginId), { ...record }, new Date(clock.now() + LOGIN_TTL_MS).toISOString());
    const query = new URLSearchParams({
      client_id: CONSOLE_CLIENT_ID,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: SCOPE,
      state: record.state,
      nonce: record.nonce,
      code_challenge: createHash('sha256').update(record.verifier).digest('base64url'),
      code_challenge_method: 'S256',
      prompt: 'login',
    });
    return reply
      .code(302)
      .header('set-cookie', setCookie(LOGIN_COOKIE, loginId, { maxAgeSeconds: LOGIN_TTL_MS / 1000, sameSite: 'Lax' }))
      .header('location', `${ROUTES.authorization}?${query.toString()}`)
      .send();
  });

  app.get<{ Querystring: Record<string, string | undefined> }>(CONSOLE_CALLBACK_PATH, { config: { access: 'public' }, schema: { hide: true } }, async (request, reply) => {
    void reply.header('set-cookie', clearCookie(LOGIN_COOKIE, 'Lax'));
    const loginId = cookieValue(request, LOGIN_COOKIE);
    const expired = 'This login has expired or was started in another browser or tab.';
    if (loginId === undefined || !/^[A-Za-z0-9_-]{43}$/.test(loginId)) return loginFailed(reply, 400, expired);
    const key = hashId(loginId);
    const found = (await store.oidcFind(LOGIN_MODEL, key)) as Partial<LoginRecord> | undefined;
    if (found === undefined || found.consumed !== undefined || !(await store.oidcConsumeOnce(LOGIN_MODEL, key))) return loginFailed(reply, 400, expired);
    await store.oidcDestroy(LOGIN_MODEL, key);
    const { state, verifier, nonce, next } = found;
    if (typeof state !== 'string' || typeof verifier !== 'string' || typeof nonce !== 'string' || typeof next !== 'string') return loginFailed(reply, 400, expired);
    const query = request.query;
    if (typeof query.state !== 'string' || !sameText(query.state, state)) return loginFailed(reply, 400, expired);
    if (typeof query.error === 'string') {
      const why = query.error === 'access_denied' ? 'The login was cancelled.' : `The login did not succeed (${query.error.slice(0, 64)}${typeof query.error_description === 'string' ? `: ${query.error_description.slice(0, 200)}` : ''}).`;
      return loginFailed(reply, 400, why);
    }
    if (typeof query.code !== 'string' || query.code === '' || query.code.length > 512) return loginFailed(reply, 400, 'The login answer carries no code.');

    // The code exchange, in process, at our own token endpoint: the code is bound to our client,
    // redirect URI and PKCE verifier, and single use.
    const exchanged = await app.inject({
      method: 'POST',
      url: ROUTES.token,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ grant_type: 'authorization_code', code: query.code, redirect_uri: redirectUri, client_id: CONSOLE_CLIENT_ID, code_verifier: verifier }).toString(),
    });
    let tokens: Record<string, unknown>;
    try {
      tokens = JSON.parse(exchanged.body) as Record<string, unknown>;
    } catch {
      tokens = {};
    }
    if (exchanged.statusCode !== 200 || typeof tokens.access_token !== 'string') {
      logger.warn({ status: exchanged.statusCode, error: tokens.error }, 'the console login code exchange failed');
      return loginFailed(reply, 400, 'The login could not be completed. Start it again.');
    }
    const accessToken = tokens.access_token;
    const info = await deps.findAccessToken(accessToken);
    // The console never uses the access token itself: it is gone before the browser hears back.
    try {
      const at = await provider.AccessToken.find(accessToken);
      await at?.destroy();
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, 'destroying the console login access token failed; it expires on its own within the hour');
    }
    const claims = jwtPayload(tokens.id_token);
    if (info === undefined || info.clientId !== CONSOLE_CLIENT_ID || claims === undefined || claims.nonce !== nonce || claims.sub !== info.accountId) {
      return loginFailed(reply, 400, 'The login could not be completed. Start it again.');
    }
    const user = await store.getUser(info.accountId);
    if (user === undefined || user.disabled) return loginFailed(reply, 403, 'This account is disabled.');
    const { token, record } = await store.createConsoleSession({ userId: user.id, ttlMs: SESSION_TTL_MS });
    await store.pruneConsoleSessions(new Date(clock.now()).toISOString(), deps.idleMs ?? SESSION_IDLE_MS).catch((err: unknown) => {
      logger.warn({ err: errorMessage(err) }, 'pruning ended console sessions failed');
    });
    await store.appendAuditEvent({ actor: `user:${user.name}`, action: 'console-login', kind: 'User', name: user.name, after: { session: record.id, expiresAt: record.expiresAt } }).catch((err: unknown) => {
      logger.warn({ err: errorMessage(err) }, 'recording the console login in the audit log failed');
    });
    void reply.header('set-cookie', [clearCookie(LOGIN_COOKIE, 'Lax'), setCookie(SESSION_COOKIE, token, { maxAgeSeconds: SESSION_TTL_MS / 1000, sameSite: 'Strict' })]);
    if (request.headers['sec-fetch-site'] === 'cross-site') {
      // A SameSite=Strict cookie is not sent on a redirect in a chain that began on another site.
      return sendPage(reply.header('refresh', `0; url=${next}`), 200, 'Logged in', `<p>You are logged in.</p>
<p><a class="button" href="${escapeHtml(next)}">Continue to the Command Center</a></p>`);
    }
    return reply.code(303).header('location', next).send();
  });

  const callers = new WeakMap<FastifyRequest, ConsoleCaller>();
  app.post('/console/logout', {
    config: { access: 'public' },
    schema: { hide: true },
    // Before the body is read, as for the API (session.ts).
    onRequest: async (request) => {
      const caller = await consoleCaller(request, deps);
      if (caller === 'none' || caller === 'invalid') return;
      checkCsrf(request, caller.secret, deps.origin);
      callers.set(request, caller);
    },
  }, async (request, reply) => {
    const caller = callers.get(request);
    void reply.header('set-cookie', clearCookie(SESSION_COOKIE, 'Strict'));
    if (caller === undefined) return reply.code(204).send();
    await store.deleteConsoleSession(caller.secret);
    await store.appendAuditEvent({ actor: `user:${caller.user.name}`, action: 'console-logout', kind: 'User', name: caller.user.name, after: { session: caller.session.id } }).catch((err: unknown) => {
      logger.warn({ err: errorMessage(err) }, 'recording the console logout in the audit log failed');
    });
    return reply.code(204).send();
  });

  app.get('/console/session', { config: { access: 'public' }, schema: { hide: true } }, async (request: FastifyRequest, reply) => {
    const caller = await consoleCaller(request, deps);
    if (caller === 'none' || caller === 'invalid') return sendError(reply, 401, 'UNAUTHENTICATED', 'not logged in to the console: start at /console/login');
    const { user, grant, session } = caller;
    return {
      user: { id: user.id, name: user.name, email: user.email, groups: user.groups },
      role: grant.scope === 'none' ? null : grant.scope,
      kinds: grant.kinds ?? null,
      csrfToken: csrfTokenOf(caller.secret),
      expiresAt: session.expiresAt,
    };
  });
}
