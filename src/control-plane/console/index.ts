/**
 * The Command Center web console, server side (issue 8): login and the session cookie (login.ts,
 * session.ts), and the single-page app's files (static.ts). The app itself lives in web/ and talks
 * only to /api/v1 and /console/session.
 *
 * createConsole gives the cookie authenticator (for the /api/v1 auth hook, after the bearer ones) and
 * `register`, which mounts the routes at the root of the control plane's app. It needs Causeway's
 * own OIDC provider (identity/): the console logs in through it.
 */
import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import type { Authenticator, FailureLimiterOptions } from '../auth.ts';
import type { Identity } from '../identity/index.ts';
import type { Store } from '../store/index.ts';
import { consoleLoginRoutes } from './login.ts';
import { consoleAuthenticator, SESSION_IDLE_MS, SESSION_TTL_MS } from './session.ts';
import { consoleStaticRoutes } from './static.ts';

export { CONSOLE_CSP, CONSOLE_HEADERS } from './static.ts';
export { CSRF_HEADER, SESSION_COOKIE, LOGIN_COOKIE, SESSION_IDLE_MS, SESSION_TTL_MS, csrfTokenOf } from './session.ts';
export { safeNext } from './next.ts';

export interface ConsoleOptions {
  /** The built app (index.html, assets/); when missing, `/` says how to build it. */
  dir: string;
  /** Per-source limit on login starts (CP-12). */
  loginRateLimit?: FailureLimiterOptions;
}

export interface ConsoleDeps {
  store: Store;
  identity: Identity;
  /** The public URL (an origin). */
  publicUrl: string;
  clock: Clock;
  logger: Logger;
}

export interface WebConsole {
  readonly authenticator: Authenticator;
  register(app: FastifyInstance): Promise<void>;
}

export function createConsole(options: ConsoleOptions, deps: ConsoleDeps): WebConsole {
  const { store, identity, publicUrl, clock, logger } = deps;
  const origin = new URL(publicUrl).origin;
  const grantOf = (user: { name: string; groups: readonly string[] }): ReturnType<Identity['authenticator']['grantOf']> => identity.authenticator.grantOf(user);
  const sessionDeps = { store, grantOf, origin, idleMs: SESSION_IDLE_MS };
  const url = new URL(origin);
  if (url.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) {
    logger.warn({ publicUrl: origin }, 'the web console\'s cookies are Secure (__Host-): browsers keep them only over HTTPS or on localhost, so console logins will not stick on this plain-HTTP URL');
  }
  return {
    authenticator: consoleAuthenticator(sessionDeps),
    async register(app) {
      consoleLoginRoutes(app, {
        ...sessionDeps,
        provider: identity.provider,
        publicUrl: origin,
        findAccessToken: (token) => identity.findAccessToken(token),
        clock,
        logger: logger.child({ component: 'console' }),
        ...(options.loginRateLimit === undefined ? {} : { loginRateLimit: options.loginRateLimit }),
      });
      await consoleStaticRoutes(app, { dir: options.dir });
    },
  };
}

/** Sessions last at most this long in all, and end after this long unused. */
export const SESSION_LIMITS = { ttlMs: SESSION_TTL_MS, idleMs: SESSION_IDLE_MS };
