/**
 * A web console login for tests, through the real flow a browser takes (no script needed):
 * GET /console/login → /oidc/auth → the login page → its form (same-origin Origin) → /oidc/auth/:uid →
 * /console/callback (the server exchanges the code and sets the session cookie) → `next`. Then
 * GET /console/session for the CSRF token.
 *
 *     const login = await consoleLogin(publicUrl, caPem, 'alice', PASSWORD);
 *     await fetch(`${publicUrl}/api/v1/objects/role/x`, { method: 'PUT', headers: consoleHeaders(login, publicUrl), body });
 */
import assert from 'node:assert/strict';
import { CookieClient } from './cookie-client.ts';
import type { ClientResponse } from './cookie-client.ts';

export const CONSOLE_COOKIE = '__Host-causeway-console';

export interface ConsoleLogin {
  /** `__Host-causeway-console=<secret>`: a Cookie header value. */
  cookie: string;
  /** The session's CSRF token (send as X-CSRF-Token on writes). */
  csrfToken: string;
  /** What GET /console/session answered. */
  session: { user: { id: string; name: string; email: string | null; groups: string[] }; role: 'admin' | 'viewer' | null; kinds: string[] | null; csrfToken: string; expiresAt: string };
  /** The cookie-keeping client that logged in (its jar holds the cookie). */
  client: CookieClient;
  /** Every answer of the login's last redirect chain, for tests of the flow itself. */
  final: ClientResponse;
}

/** Logs `user` in to the console at `publicUrl`; fails the test when any step does. */
export async function consoleLogin(publicUrl: string, caPem: string, user: string, password: string, options: { next?: string; totp?: string } = {}): Promise<ConsoleLogin> {
  const client = new CookieClient({ caPems: [caPem] });
  const origin = new URL(publicUrl).origin;
  const page = await client.follow(`${origin}/console/login?next=${encodeURIComponent(options.next ?? '/')}`);
  assert.equal(page.status, 200, `the console login did not reach the login page: ${page.status} at ${page.url}: ${page.body.slice(0, 300)}`);
  const outsideLogin = (url: URL): boolean => url.origin !== origin || !(url.pathname.startsWith('/oidc/') || url.pathname.startsWith('/console/'));
  const final = await client.submitForm(page, { name: user, password, ...(options.totp === undefined ? {} : { totp: options.totp }) }, { headers: { origin }, stopAt: outsideLogin });
  const secret = client.cookiesFor(`${origin}/`)[CONSOLE_COOKIE];
  assert.ok(secret !== undefined && secret !== '', `no console session cookie after the login (HTTP ${final.status} at ${final.url}): ${final.body.slice(0, 300)}`);
  const cookie = `${CONSOLE_COOKIE}=${secret}`;
  const answer = await client.request(`${origin}/console/session`, { headers: { accept: 'application/json' } });
  assert.equal(answer.status, 200, `GET /console/session: ${answer.status} ${answer.body.slice(0, 300)}`);
  const session = JSON.parse(answer.body) as ConsoleLogin['session'];
  return { cookie, csrfToken: session.csrfToken, session, client, final };
}

/** The headers of a console write as the app sends it: cookie, same-origin Origin, CSRF token, JSON. */
export function consoleHeaders(login: Pick<ConsoleLogin, 'cookie' | 'csrfToken'>, publicUrl: string): Record<string, string> {
  return { cookie: login.cookie, origin: new URL(publicUrl).origin, 'x-csrf-token': login.csrfToken, 'content-type': 'application/json', accept: 'application/json' };
}
