/**
 * The web console's server side against a real control plane (console.testing.ts): HTTPS listener,
 * Causeway's own OIDC provider and login page, a SQLite store on a fake clock (session expiry), logins
 * driven through the real flow (test/kit/console.ts), and a small fake build of the app.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CookieClient } from '../../../test/kit/cookie-client.ts';
import type { Store } from '../store/index.ts';
import { startConsoleHarness as start, INDEX_HTML } from './console.testing.ts';
import { CONSOLE_CSP, SESSION_IDLE_MS, SESSION_TTL_MS } from './index.ts';
import { safeNext } from './next.ts';

function errorCode(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

const roleDoc = (name: string, group: string): object => ({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name }, spec: { users: { groups: [group] } } });
const groupsOf = async (store: Store, name: string): Promise<unknown> => ((await store.getObject('Role', name))?.spec as { users?: { groups?: unknown } } | undefined)?.users?.groups;

void describe('console login', () => {
  void test('a login through the login page gives a session: /console/session names the user, the role and a CSRF token', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice', '/services?tab=k8s#top');
    assert.equal(alice.final.status, 303);
    assert.equal(alice.final.headers.location, '/services?tab=k8s#top');
    assert.deepEqual({ ...alice.session, csrfToken: undefined, expiresAt: undefined }, {
      user: { id: (await h.store.getUserByName('alice'))?.id, name: 'alice', email: 'alice@example.com', groups: ['eng'] },
      role: 'admin',
      kinds: null,
      csrfToken: undefined,
      expiresAt: undefined,
    });
    assert.match(alice.csrfToken, /^[A-Za-z0-9_-]{43}$/);
    const vera = await h.login('vera');
    assert.equal(vera.session.role, 'viewer');
    const nora = await h.login('nora');
    assert.equal(nora.session.role, null);
    // The cookie works on the API as the user.
    const whoami = await h.call(alice, 'GET', '/api/v1/whoami');
    assert.equal(whoami.status, 200, whoami.body);
    assert.equal(whoami.json().actor, 'user:alice');
    assert.equal(whoami.json().scope, 'admin');
    // Neither the access token of the exchange nor the cookie's secret is in any answer.
    assert.ok(!whoami.body.includes(alice.cookie.split('=')[1] ?? 'x'));
    const audit = await h.store.queryAuditEvents({ action: 'console-login' });
    assert.deepEqual(audit.events.map((e) => e.actor).sort(), ['user:alice', 'user:nora', 'user:vera']);
  });

  void test('without a session: /console/session and the API answer 401', async (t) => {
    const h = await start(t);
    const none = await h.call(undefined, 'GET', '/console/session');
    assert.equal(none.status, 401);
    assert.equal(errorCode(none.body), 'UNAUTHENTICATED');
    const forged = await h.call(undefined, 'GET', '/console/session', { headers: { cookie: `__Host-causeway-console=cwcs_${randomBytes(32).toString('base64url')}` } });
    assert.equal(forged.status, 401);
    const api = await h.call(undefined, 'GET', '/api/v1/objects', { headers: { cookie: '__Host-causeway-console=nonsense' } });
    assert.equal(api.status, 401);
  });

  void test('a callback without the login cookie, with another state, or replayed is refused', async (t) => {
    const h = await start(t);
    // Walk the flow by hand and keep the callback URL.
    const browser = new CookieClient({ caPems: [h.caPem] });
    const page = await browser.follow(`${h.publicUrl}/console/login`);
    const callback = await browser.submitForm(page, { name: 'alice', password: 'alice-password' }, { headers: { origin: h.publicUrl }, stopAt: (url) => url.pathname === '/console/callback' });
    assert.ok(callback.location?.includes('/console/callback?'), callback.location);
    const callbackUrl = callback.location ?? '';
    // Another browser (no login cookie) cannot use the code: a login CSRF would need it.
    const other = new CookieClient({ caPems: [h.caPem] });
    const stolen = await other.request(callbackUrl);
    assert.equal(stolen.status, 400);
    assert.equal(other.cookiesFor(`${h.publicUrl}/`)['__Host-causeway-console'], undefined);
    // The right browser with a changed state is refused, and the record is then spent.
    const tampered = new URL(callbackUrl);
    tampered.searchParams.set('state', 'x'.repeat(43));
    const wrongState = await browser.request(tampered.href);
    assert.equal(wrongState.status, 400);
    const replay = await browser.request(callbackUrl);
    assert.equal(replay.status, 400);
    assert.equal(browser.cookiesFor(`${h.publicUrl}/`)['__Host-causeway-console'], undefined);
  });

  void test('after a cross-site login chain (an org IdP) the callback moves on by a page, since a Strict cookie is not sent on that redirect', async (t) => {
    const h = await start(t);
    const browser = new CookieClient({ caPems: [h.caPem] });
    const page = await browser.follow(`${h.publicUrl}/console/login?next=/devices`);
    const callback = await browser.submitForm(page, { name: 'alice', password: 'alice-password' }, { headers: { origin: h.publicUrl }, stopAt: (url) => url.pathname === '/console/callback' });
    const answer = await browser.request(callback.location ?? '', { headers: { 'sec-fetch-site': 'cross-site', accept: 'text/html' } });
    assert.equal(answer.status, 200, answer.body);
    assert.equal(answer.headers.refresh, '0; url=/devices');
    assert.match(answer.body, /<a class="button" href="\/devices">Continue to the Command Center<\/a>/);
    assert.match(String(answer.headers['set-cookie']), /__Host-causeway-console=cwcs_/);
    assert.match(String(answer.headers['content-security-policy']), /frame-ancestors 'none'/);
    const secret = browser.cookiesFor(`${h.publicUrl}/`)['__Host-causeway-console'];
    assert.ok(secret !== undefined);
    assert.equal((await h.call(undefined, 'GET', '/console/session', { headers: { cookie: `__Host-causeway-console=${secret}` } })).status, 200);
  });

  void test('CP-12 login starts are limited per source: past the burst, 429 with Retry-After and no record stored', async (t) => {
    const h = await start(t, { loginBurst: 3 });
    const browser = new CookieClient({ caPems: [h.caPem] });
    for (let i = 0; i < 3; i++) assert.equal((await browser.request(`${h.publicUrl}/console/login`)).status, 302);
    const limited = await browser.request(`${h.publicUrl}/console/login`);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    assert.equal(limited.headers['set-cookie'], undefined);
  });

  void test('the login page shows the console by name and always asks for the password (prompt=login)', async (t) => {
    const h = await start(t);
    const browser = new CookieClient({ caPems: [h.caPem] });
    const first = await browser.follow(`${h.publicUrl}/console/login`);
    assert.match(first.body, /Causeway Command Center/);
    await browser.submitForm(first, { name: 'alice', password: 'alice-password' }, { headers: { origin: h.publicUrl }, stopAt: (url) => !url.pathname.startsWith('/oidc/') && !url.pathname.startsWith('/console/') });
    // The provider now has a session for this browser, yet the next console login shows the page again.
    const second = await browser.follow(`${h.publicUrl}/console/login`);
    assert.equal(second.status, 200);
    assert.match(second.url, /\/oidc\/interaction\//);
  });

  void test('CP-05 an IdP display name with HTML and script is shown as text on the console login page', async (t) => {
    const h = await start(t);
    const hostile = '<img src=x onerror=alert(1)><script>alert(2)</script>"\'';
    await h.store.putObject({ kind: 'IdentityProvider', name: 'corp', spec: { displayName: hostile, issuer: 'https://idp.example.com', clientId: 'causeway', clientSecret: { env: 'CORP_SECRET' } } }, { actor: 'test' });
    const page = await new CookieClient({ caPems: [h.caPem] }).follow(`${h.publicUrl}/console/login`);
    assert.equal(page.status, 200);
    assert.ok(page.body.includes('Log in with &lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;&quot;&#39;'), page.body);
    assert.ok(!page.body.includes('<script>alert'));
    assert.ok(!page.body.includes('<img src=x'));
    assert.ok(!/script-src[^;]*unsafe-inline/.test(String(page.headers['content-security-policy'] ?? '')));
  });
});

void describe('CP-06 console cookies and CSRF', () => {
  void test('CP-06 the session cookie is __Host-, Secure, HttpOnly, SameSite=Strict, Path=/; the login cookie is Lax, short and cleared', async (t) => {
    const h = await start(t);
    const start1 = await new CookieClient({ caPems: [h.caPem] }).request(`${h.publicUrl}/console/login`);
    assert.equal(start1.status, 302);
    const loginCookie = String(start1.headers['set-cookie']);
    assert.match(loginCookie, /^__Host-causeway-console-login=[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$/);
    const location = new URL(start1.location ?? '');
    assert.equal(location.pathname, '/oidc/auth');
    assert.equal(location.searchParams.get('client_id'), 'causeway-console');
    assert.equal(location.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(location.searchParams.get('redirect_uri'), `${h.publicUrl}/console/callback`);
    assert.equal(location.searchParams.get('prompt'), 'login');
    assert.ok((location.searchParams.get('state') ?? '').length >= 43);
    assert.ok((location.searchParams.get('nonce') ?? '').length >= 22);

    const alice = await h.login('alice');
    const cookies = alice.final.headers['set-cookie'] ?? [];
    const session = cookies.find((c) => c.startsWith('__Host-causeway-console='));
    assert.ok(session !== undefined, String(cookies));
    assert.match(session, /^__Host-causeway-console=cwcs_[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Strict; Max-Age=28800$/);
    assert.ok(!/domain=/i.test(session));
    assert.ok(cookies.some((c) => /^__Host-causeway-console-login=; .*Max-Age=0/.test(c)), 'the login cookie is cleared');
  });

  void test('CP-06 a cross-origin form post with the console cookie is refused with CSRF_REFUSED and changes nothing', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    const before = JSON.stringify(await h.store.getObject('Role', 'eng'));
    // What a form on another site sends: the cookie (were it not Strict), its Origin, a form body, no header of ours.
    const form = await h.call(alice, 'PUT', '/api/v1/objects/role/eng', { headers: { origin: 'https://evil.example', 'x-csrf-token': undefined, 'content-type': 'application/x-www-form-urlencoded' }, body: 'apiVersion=causeway%2Fv1' });
    assert.equal(form.status, 403, form.body);
    assert.equal(errorCode(form.body), 'CSRF_REFUSED');
    const formPost = await h.call(alice, 'POST', '/api/v1/users', { headers: { origin: 'https://evil.example', 'x-csrf-token': undefined, 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=mallory' });
    assert.equal(formPost.status, 403);
    assert.equal(errorCode(formPost.body), 'CSRF_REFUSED');
    // Even with our Origin (a same-site page) a form cannot add the CSRF header.
    const sameOriginForm = await h.call(alice, 'POST', '/api/v1/users', { headers: { 'x-csrf-token': undefined, 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=mallory' });
    assert.equal(sameOriginForm.status, 403);
    assert.equal(errorCode(sameOriginForm.body), 'CSRF_REFUSED');
    assert.equal(JSON.stringify(await h.store.getObject('Role', 'eng')), before);
    assert.equal(await h.store.getUserByName('mallory'), undefined);
  });

  void test('CP-06 a text/plain JSON body is refused even with the right Origin and CSRF token', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded']) {
      const response = await h.call(alice, 'PUT', '/api/v1/objects/role/eng', { headers: { 'content-type': type }, body: JSON.stringify(roleDoc('eng', 'changed')) });
      assert.equal(response.status, 403, `${type}: ${response.body}`);
      assert.equal(errorCode(response.body), 'CSRF_REFUSED');
    }
    const noType = await h.call(alice, 'POST', '/api/v1/users', { headers: { 'content-type': undefined }, body: JSON.stringify({ name: 'mallory' }) });
    assert.equal(noType.status, 403);
    assert.deepEqual(await groupsOf(h.store, 'eng'), ['eng']);
    assert.equal(await h.store.getUserByName('mallory'), undefined);
  });

  void test('CP-06 a missing, null or foreign Origin, and a missing or wrong CSRF token, are refused; the right ones pass', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    const vera = await h.login('vera');
    const port = new URL(h.publicUrl).port;
    const refused: Array<Record<string, string | undefined>> = [
      { origin: undefined },
      { origin: 'null' },
      { origin: 'https://evil.example' },
      { origin: `http://127.0.0.1:${port}` },
      { origin: `https://127.0.0.1:${Number(port) + 1}` },
      { origin: `https://localhost:${port}` },
      { origin: `${h.publicUrl}.evil.example` },
      { 'x-csrf-token': undefined },
      { 'x-csrf-token': '' },
      { 'x-csrf-token': `${alice.csrfToken}x` },
      { 'x-csrf-token': vera.csrfToken },
    ];
    for (const headers of refused) {
      const response = await h.call(alice, 'PUT', '/api/v1/objects/role/eng', { headers, body: roleDoc('eng', 'changed') });
      assert.equal(response.status, 403, `${JSON.stringify(headers)}: ${response.body}`);
      assert.equal(errorCode(response.body), 'CSRF_REFUSED');
      // A body-less write is checked alike.
      const del = await h.call(alice, 'DELETE', '/api/v1/objects/role/eng', { headers });
      assert.equal(del.status, 403, `DELETE ${JSON.stringify(headers)}`);
    }
    assert.deepEqual(await groupsOf(h.store, 'eng'), ['eng']);
    const ok = await h.call(alice, 'PUT', '/api/v1/objects/role/eng', { headers: { 'content-type': 'application/json; charset=utf-8' }, body: roleDoc('eng', 'changed') });
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(await groupsOf(h.store, 'eng'), ['changed']);
    assert.equal((await h.store.getObject('Role', 'eng'))?.updatedBy, 'user:alice');
    const del = await h.call(alice, 'DELETE', '/api/v1/objects/role/eng');
    assert.equal(del.status, 200, del.body);
    // Reads need no CSRF token (they change nothing), but still the cookie.
    const read = await h.call(alice, 'GET', '/api/v1/objects', { headers: { origin: undefined, 'x-csrf-token': undefined } });
    assert.equal(read.status, 200);
  });

  void test('an Authorization header is left to the bearer authenticators: the cookie does not rescue a bad token', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    const response = await h.call(alice, 'GET', '/api/v1/objects', { headers: { authorization: 'Bearer cwat_0000000000000000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' } });
    assert.equal(response.status, 401);
  });
});

void describe('CP-07 where a login returns to', () => {
  void test('CP-07 next= of another site or a look-alike path is not followed: the login returns to /', async (t) => {
    const h = await start(t);
    for (const next of ['//evil.example/x', '/\\evil.example', 'https://trusted@evil.example', 'https://evil.example/', '/%5Cevil.example', '/\t/evil.example']) {
      const login = await h.login('alice', next);
      assert.equal(login.final.status, 303);
      assert.equal(login.final.headers.location, '/', next);
    }
    const good = await h.login('alice', '/events?decision=deny');
    assert.equal(good.final.headers.location, '/events?decision=deny');
  });

  void test('CP-07 safeNext keeps same-origin paths only', () => {
    const refused = [
      '//evil', '/\\evil', '\\\\evil', 'https://trusted@evil', 'http://evil', 'https:evil', 'javascript:alert(1)', 'data:text/html,x', 'evil.example',
      '/\t/evil', '/\n/evil', '/\r\n/evil', '/%09/evil', '/%0d%0aSet-Cookie:x', '/%5c%5cevil', '/\u0000', '///evil', '', ' /x', '/console/login', '/console/callback?code=x', '/console',
      `/${'a'.repeat(3000)}`, 42, undefined, null,
    ];
    for (const value of refused) assert.equal(safeNext(value), '/', JSON.stringify(value));
    assert.equal(safeNext('/'), '/');
    assert.equal(safeNext('/services'), '/services');
    assert.equal(safeNext('/users/alice?tab=devices#d1'), '/users/alice?tab=devices#d1');
    assert.equal(safeNext('/a/../b'), '/b');
    assert.equal(safeNext('/consoles'), '/consoles');
    assert.equal(safeNext('/x y"<>'), '/x%20y%22%3C%3E');
  });
});

void describe('serving the app', () => {
  void test('CP-08 /, /services and /index.html carry the console CSP, frame-ancestors none and X-Frame-Options DENY', async (t) => {
    const h = await start(t);
    for (const path of ['/', '/services', '/users/alice', '/index.html']) {
      const response = await h.call(undefined, 'GET', path, { headers: { accept: 'text/html,application/xhtml+xml' } });
      assert.equal(response.status, 200, path);
      assert.equal(response.body, INDEX_HTML);
      assert.equal(response.headers.get('content-security-policy'), CONSOLE_CSP, path);
      assert.match(response.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
      assert.doesNotMatch(response.headers.get('content-security-policy') ?? '', /unsafe-inline|unsafe-eval/);
      assert.equal(response.headers.get('x-frame-options'), 'DENY');
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(response.headers.get('referrer-policy'), 'same-origin');
      assert.equal(response.headers.get('cache-control'), 'no-store');
      assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
    }
    assert.equal(CONSOLE_CSP, "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
  });

  void test('assets are immutable, other files cached briefly; nothing outside the build, and API paths stay API', async (t) => {
    const h = await start(t);
    const asset = await h.call(undefined, 'GET', '/assets/app-1a2b3c.js', { headers: { accept: '*/*' } });
    assert.equal(asset.status, 200);
    assert.equal(asset.body, 'console.log("app");\n');
    assert.equal(asset.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.match(asset.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.equal(asset.headers.get('x-frame-options'), 'DENY');
    const icon = await h.call(undefined, 'GET', '/favicon.svg', { headers: { accept: '*/*' } });
    assert.equal(icon.status, 200);
    assert.equal(icon.headers.get('content-type'), 'image/svg+xml');
    assert.equal(icon.headers.get('cache-control'), 'public, max-age=3600');
    for (const path of ['/assets/missing.js', '/assets/%2e%2e/%2e%2e/secret.txt', '/%2e%2e/secret.txt', '/assets/..%2f..%2fsecret.txt', '/assets/%2e%2e%2f%2e%2e%2fsecret.txt', '/assets/%5c..%5csecret.txt', '/..%5csecret.txt', '/assets/%00']) {
      const response = await h.call(undefined, 'GET', path, { headers: { accept: 'text/html' } });
      // Refused, or (where the client's URL parser resolved the dots itself) the app's page.
      assert.ok(response.status === 404 || response.status === 400 || (response.status === 200 && response.body === INDEX_HTML), `${path}: ${response.status}`);
      assert.ok(!response.body.includes('outside the build'), path);
    }
    // API, login and well-known paths never become the app, whatever the Accept header.
    for (const path of ['/api/v1/nothing', '/oidc/nothing', '/.well-known/nothing', '/console/nothing']) {
      const response = await h.call(undefined, 'GET', path, { headers: { accept: 'text/html' } });
      assert.equal(response.status, 404, path);
      assert.equal(errorCode(response.body), 'NOT_FOUND', path);
    }
    // A fetch (not a page load) of an unknown path is a 404, not the app.
    const fetched = await h.call(undefined, 'GET', '/nothing.json', { headers: { accept: 'application/json' } });
    assert.equal(fetched.status, 404);
  });

  void test('without a build, / says how to build the console and the API still works', async (t) => {
    const h = await start(t, { built: false });
    const response = await h.call(undefined, 'GET', '/', { headers: { accept: 'text/html' } });
    assert.equal(response.status, 503);
    assert.match(response.body, /npm run build:web/);
    assert.equal(response.headers.get('x-frame-options'), 'DENY');
    assert.match(response.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    const alice = await h.login('alice');
    assert.equal((await h.call(alice, 'GET', '/api/v1/objects')).status, 200);
  });
});

/** Everything the API can change, for "a read-back shows no change" (CP-01). */
async function stateOf(store: Store): Promise<string> {
  const { revision: _r, ...snapshot } = await store.snapshot();
  const tokens = (await store.listApiTokens()).map(({ lastUsedAt: _l, ...rest }) => rest);
  const joinTokens = await store.listJoinTokens();
  return JSON.stringify({ snapshot, tokens, joinTokens });
}

void describe('CP-01 with the console cookie', () => {
  void test('CP-01 a viewer cookie on every write route is 403 FORBIDDEN and a read-back shows no change', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    const device = await h.store.registerDevice({ userId: (await h.store.getUserByName('alice'))?.id ?? '', platform: 'linux', ownership: 'corporate' }, { actor: 'test' });
    const spare = await h.store.createApiToken({ name: 'spare', scope: 'viewer' }, { actor: 'test' });
    const doc = (await h.call(alice, 'GET', '/api/v1/openapi.json')).json() as { paths: Record<string, Record<string, { 'x-access'?: string }>> };
    const routes: Array<{ method: string; url: string }> = [];
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const method of Object.keys(methods).map((m) => m.toUpperCase())) {
        if (!['POST', 'PUT', 'PATCH', 'DELETE'].includes(method) || !path.startsWith('/api/v1/')) continue;
        // The user's own devices are for every session by design; previews only read.
        // Peers report with their certificates (no cookie or token opens that route).
        if (path.startsWith('/api/v1/me/') || path === '/api/v1/roles/preview' || path === '/api/v1/peers/report') continue;
        const url = path
          .replace('{kind}', 'role')
          .replace('{name}', path.startsWith('/api/v1/users') ? 'nora' : 'eng')
          .replace('{id}', path.includes('tokens') ? spare.record.id : device.id)
          .replace(/\{\w+\}/g, 'x1');
        routes.push({ method, url });
      }
    }
    assert.ok(routes.length >= 12, `${routes.length} write routes`);
    const bodies: Record<string, unknown> = {
      'PUT /api/v1/objects/role/eng': roleDoc('eng', 'changed'),
      'POST /api/v1/apply': { documents: [roleDoc('other', 'x')] },
      'POST /api/v1/users': { name: 'mallory', groups: ['eng'] },
      'PATCH /api/v1/users/nora': { groups: ['eng'] },
      'POST /api/v1/tokens': { name: 'escalate', scope: 'admin' },
      'POST /api/v1/join-tokens': { kind: 'connector', name: 'dc2' },
    };
    for (const name of ['vera', 'nora']) {
      const login = await h.login(name);
      for (const route of routes) {
        const before = await stateOf(h.store);
        const body = bodies[`${route.method} ${route.url}`];
        const response = await h.call(login, route.method, route.url, body === undefined ? {} : { body: body as object });
        assert.equal(response.status, 403, `${name}: ${route.method} ${route.url}: ${response.body}`);
        assert.equal(errorCode(response.body), 'FORBIDDEN', `${name}: ${route.method} ${route.url}`);
        assert.equal(await stateOf(h.store), before, `${name}: ${route.method} ${route.url} changed something`);
      }
    }
    // The viewer reads.
    const vera = await h.login('vera');
    assert.equal((await h.call(vera, 'GET', '/api/v1/objects/role/eng')).status, 200);
  });
});

void describe('console session lifetime', () => {
  void test('a session ends after 1 h unused; each use moves that end', async (t) => {
    const h = await start(t);
    // Both log in now (the login records live in the same store, on the same fake clock).
    const idle = await h.login('alice');
    const other = await h.login('alice');
    h.clock.advance(SESSION_IDLE_MS - 60_000);
    assert.equal((await h.call(idle, 'GET', '/console/session')).status, 200);
    h.clock.advance(SESSION_IDLE_MS - 60_000);
    assert.equal((await h.call(idle, 'GET', '/console/session')).status, 200, 'each use moves the idle end');
    h.clock.advance(SESSION_IDLE_MS + 1);
    assert.equal((await h.call(idle, 'GET', '/console/session')).status, 401);
    assert.equal((await h.call(idle, 'GET', '/api/v1/objects')).status, 401);
    assert.equal((await h.call(other, 'GET', '/api/v1/objects')).status, 401, 'the other session was never used');
  });

  void test('a session used every half hour still ends 8 h after the login', async (t) => {
    const h = await start(t);
    const busy = await h.login('alice');
    const started = h.clock.now();
    while (h.clock.now() - started < SESSION_TTL_MS - 30 * 60_000) {
      h.clock.advance(30 * 60_000);
      assert.equal((await h.call(busy, 'GET', '/api/v1/objects')).status, 200, `${(h.clock.now() - started) / 60_000} min after the login`);
    }
    h.clock.advance(30 * 60_000);
    assert.equal((await h.call(busy, 'GET', '/api/v1/objects')).status, 401);
    assert.equal((await h.call(busy, 'GET', '/console/session')).status, 401);
  });

  void test('logout ends the session (CSRF-checked) and clears the cookie; the old cookie is refused after', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    const forged = await h.call(alice, 'POST', '/console/logout', { headers: { origin: 'https://evil.example', 'x-csrf-token': undefined } });
    assert.equal(forged.status, 403);
    assert.equal(errorCode(forged.body), 'CSRF_REFUSED');
    assert.equal((await h.call(alice, 'GET', '/console/session')).status, 200, 'a refused logout leaves the session');
    // As the app sends it: JSON `{}` with the CSRF token.
    const out = await h.call(alice, 'POST', '/console/logout', { body: {} });
    assert.equal(out.status, 204, out.body);
    assert.match(out.headers.get('set-cookie') ?? '', /^__Host-causeway-console=; Path=\/; Secure; HttpOnly; SameSite=Strict; Max-Age=0$/);
    assert.equal((await h.call(alice, 'GET', '/console/session')).status, 401);
    assert.equal((await h.call(alice, 'GET', '/api/v1/objects')).status, 401);
    assert.equal((await h.call(alice, 'PUT', '/api/v1/objects/role/eng', { body: roleDoc('eng', 'after-logout') })).status, 401);
    assert.equal((await h.store.queryAuditEvents({ action: 'console-logout' })).events[0]?.actor, 'user:alice');
  });

  void test('a disabled user is refused at once, on the API and /console/session', async (t) => {
    const h = await start(t);
    const alice = await h.login('alice');
    assert.equal((await h.call(alice, 'GET', '/api/v1/objects')).status, 200);
    const user = await h.store.getUserByName('alice');
    await h.store.updateUser(user?.id ?? '', { disabled: true }, { actor: 'test' });
    assert.equal((await h.call(alice, 'GET', '/api/v1/objects')).status, 401);
    assert.equal((await h.call(alice, 'GET', '/console/session')).status, 401);
    assert.equal((await h.call(alice, 'PUT', '/api/v1/objects/role/eng', { body: roleDoc('eng', 'disabled') })).status, 401);
    assert.deepEqual(await groupsOf(h.store, 'eng'), ['eng']);
  });

  void test('a changed AdminBinding applies to the next request of a live session', async (t) => {
    const h = await start(t);
    const vera = await h.login('vera');
    assert.equal((await h.call(vera, 'PUT', '/api/v1/objects/role/eng', { body: roleDoc('eng', 'by-vera') })).status, 403);
    await h.store.putObject({ kind: 'AdminBinding', name: 'auditors', spec: { role: 'admin', groups: ['auditors'] } }, { actor: 'test' });
    assert.equal((await h.call(vera, 'GET', '/console/session')).json().role, 'admin');
    const put = await h.call(vera, 'PUT', '/api/v1/objects/role/eng', { body: roleDoc('eng', 'by-vera') });
    assert.equal(put.status, 200, put.body);
  });
});
