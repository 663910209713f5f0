/**
 * The login page against a real oidc-provider (interactions.testing.ts) and the real directory over
 * an in-memory SQLite store.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FailureLimiter } from '../auth.ts';
import { openStore } from '../store/index.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { createDirectory, totpContext } from './directory.ts';
import type { Directory, LoginAttempt } from './directory.ts';
import { FORM_BODY_LIMIT } from './interactions.ts';
import { followToRedirectUri, postLogin, startInteractionServer, startLogin } from './interactions.testing.ts';
import type { InteractionServer } from './interactions.testing.ts';
import { PAGE_CSP, STYLESHEET_PATH } from './pages.ts';
import { hashPassword } from './passwords.ts';
import { loadOrCreateSecretBox } from './secret-box.ts';
import type { SecretBox } from './secret-box.ts';
import { newTotpSecret, totpCode } from './totp.ts';

const PASSWORD = 'correct horse battery staple';
const HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>';

let store: Store;
let box: SecretBox;
let server: InteractionServer;
let alice: UserRecord;
let limiter: FailureLimiter;
const attempts: LoginAttempt[] = [];

before(async () => {
  store = await openStore({ url: ':memory:' });
  box = await loadOrCreateSecretBox(store, { passphrase: 'test passphrase' });
  alice = await store.createUser({ name: 'alice', groups: ['eng'], passwordHash: await hashPassword(PASSWORD) }, { actor: 'test' });
  limiter = new FailureLimiter({ burst: 1000 });
  const real = createDirectory({ store, secretBox: box, limiter });
  const directory: Directory = {
    authenticate: (attempt) => {
      attempts.push(attempt);
      return real.authenticate(attempt);
    },
  };
  server = await startInteractionServer({
    store,
    directory,
    clientName: `Causeway CLI ${HOSTILE}`,
    upstreams: { list: () => Promise.resolve([{ name: 'corp', displayName: 'Corp SSO' }, { name: 'evil', displayName: HOSTILE }]) },
  });
});
after(async () => {
  await server.close();
  await store.close();
});

function assertEscaped(html: string): void {
  assert.ok(!html.includes('<script>alert'), 'raw script tag in the page');
  assert.ok(!html.includes('<img src=x'), 'raw img tag in the page');
  // No inline code: no script or style element, and no style or on* attribute (quoted values skipped).
  assert.doesNotMatch(html, /<script|<style|<[a-z]+(\s+[a-z-]+(="[^"]*")?)*\s+(style|on[a-z]+)=/i);
}

async function newLocalUser(name: string, extra: { totp?: boolean } = {}): Promise<{ user: UserRecord; secret?: string }> {
  const user = await store.createUser({ name, groups: ['eng'], passwordHash: await hashPassword(PASSWORD) }, { actor: 'test' });
  if (extra.totp !== true) return { user };
  const secret = newTotpSecret();
  const updated = await store.updateUser(user.id, { totpSecret: box.seal(secret, totpContext(user.id)) }, { actor: 'test', expectedVersion: user.version });
  return { user: updated, secret };
}

void describe('the login page', () => {
  void test('GET shows the login form with the page headers, the client name and one button per IdP', async () => {
    const login = await startLogin(server);
    const response = await login.browser.fetch(login.interactionUrl);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-security-policy'), PAGE_CSP);
    assert.equal(response.headers.get('x-frame-options'), 'DENY');
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
    const html = await response.text();
    assert.ok(html.includes(`action="/oidc/interaction/${login.uid}/login"`));
    assert.ok(html.includes('name="name"') && html.includes('name="password"') && html.includes('name="totp"'));
    assert.ok(html.includes(`href="/oidc/upstream/corp/start?uid=${login.uid}">Log in with Corp SSO</a>`));
    assert.ok(html.includes(`href="/oidc/upstream/evil/start?uid=${login.uid}"`));
    assert.ok(html.includes(`<link rel="stylesheet" href="${STYLESHEET_PATH}">`));
  });

  void test('CP-05 an IdP display name, a client name and a login hint containing HTML render as text', async () => {
    const login = await startLogin(server, { loginHint: `"><script>alert(2)</script>` });
    const html = await (await login.browser.fetch(login.interactionUrl)).text();
    assertEscaped(html);
    assert.ok(html.includes('Log in with &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;</a>'));
    assert.ok(html.includes('Causeway CLI &lt;script&gt;'));
    assert.ok(html.includes('value="&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"'));
  });

  void test('the stylesheet is served as CSS from our origin', async () => {
    const response = await fetch(`${server.origin}${STYLESHEET_PATH}`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/css/);
    assert.match(await response.text(), /\.card/);
  });

  void test('the right password finishes the login: the application gets a code at its loopback redirect URI and the code works', async () => {
    const login = await startLogin(server);
    const response = await postLogin(server, login, { name: 'alice', password: PASSWORD, totp: '' });
    assert.equal(response.status, 303);
    const callback = await followToRedirectUri(server, login, response);
    assert.equal(`${callback.origin}${callback.pathname}`, login.redirectUri);
    assert.equal(callback.searchParams.get('state'), login.state);
    const code = callback.searchParams.get('code');
    assert.ok(code !== null && code !== '');
    const token = await fetch(`${server.origin}/oidc/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: login.redirectUri, client_id: 'causeway-cli', code_verifier: login.verifier }).toString(),
    });
    assert.equal(token.status, 200);
    const body = (await token.json()) as { id_token: string };
    const claims = JSON.parse(Buffer.from(body.id_token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub: string };
    assert.equal(claims.sub, alice.id);
  });

  void test('CP-05 a wrong password re-renders the form with a terse message, the typed name escaped and no password', async () => {
    const login = await startLogin(server);
    const response = await postLogin(server, login, { name: `bob${HOSTILE}`, password: 'not the password at all' });
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('content-security-policy'), PAGE_CSP);
    const html = await response.text();
    assert.ok(html.includes('invalid user name or password'));
    assertEscaped(html);
    assert.ok(html.includes('value="bob&lt;script&gt;'));
    assert.ok(!html.includes('not the password at all'));
    // The same interaction can still be finished with the right password.
    const retry = await postLogin(server, login, { name: 'alice', password: PASSWORD });
    assert.equal(retry.status, 303);
  });

  void test('CP-06 a POST without Origin, with a foreign Origin or with Origin null is refused before any check', async () => {
    const login = await startLogin(server);
    const before = attempts.length;
    const variants: Array<Record<string, string>> = [{}, { origin: 'https://evil.example' }, { origin: 'null' }, { origin: `${server.origin}.evil.example` }, { origin: server.origin.replace('127.0.0.1', 'localhost') }];
    for (const headers of variants) {
      const response = await postLogin(server, login, { name: 'alice', password: PASSWORD }, headers);
      assert.equal(response.status, 403, JSON.stringify(headers));
      assert.match(await response.text(), /own login page/);
    }
    const abort = await login.browser.fetch(`${login.interactionUrl}/abort`, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
    assert.equal(abort.status, 403);
    assert.equal(attempts.length, before);
    // The interaction is untouched: the real page can still log in.
    assert.equal((await postLogin(server, login, { name: 'alice', password: PASSWORD })).status, 303);
  });

  void test('CP-06 a text/plain or JSON body is refused even from our origin', async () => {
    const login = await startLogin(server);
    const before = attempts.length;
    const plain = await login.browser.fetch(`${login.interactionUrl}/login`, { method: 'POST', headers: { origin: server.origin, 'content-type': 'text/plain' }, body: 'name=alice&password=x' });
    assert.equal(plain.status, 415);
    const json = await login.browser.fetch(`${login.interactionUrl}/login`, { method: 'POST', headers: { origin: server.origin, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: PASSWORD }) });
    assert.equal(json.status, 415);
    assert.equal(attempts.length, before);
  });

  void test('a form larger than 16 KiB is refused with 413 as a page', async () => {
    const login = await startLogin(server);
    const response = await postLogin(server, login, { name: 'alice', password: 'x'.repeat(FORM_BODY_LIMIT) });
    assert.equal(response.status, 413);
    assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(await response.text(), /too large/);
  });

  void test('a login with another uid than the browser\'s interaction cookie, or without the cookie, is refused as expired', async () => {
    const login = await startLogin(server);
    const other = await startLogin(server);
    const crossed = await login.browser.fetch(`${other.interactionUrl}/login`, { method: 'POST', headers: { origin: server.origin, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ name: 'alice', password: PASSWORD }).toString() });
    assert.equal(crossed.status, 400);
    const noCookie = await fetch(login.interactionUrl);
    assert.equal(noCookie.status, 400);
    assert.match(await noCookie.text(), /expired/);
  });

  void test('with TOTP: the page asks for the code after the right password, and the code finishes the login; TOTP replay is refused', async () => {
    const { secret } = await newLocalUser('tina', { totp: true });
    assert.ok(secret !== undefined);
    const login = await startLogin(server);
    const asked = await postLogin(server, login, { name: 'tina', password: PASSWORD });
    assert.equal(asked.status, 401);
    const html = await asked.text();
    assert.match(html, /TOTP code is required/);
    assert.match(html, /name="totp"[^>]* required autofocus/);
    const code = totpCode(secret, Date.now());
    const done = await postLogin(server, login, { name: 'tina', password: PASSWORD, totp: code });
    assert.equal(done.status, 303);
    const again = await startLogin(server);
    const replay = await postLogin(server, again, { name: 'tina', password: PASSWORD, totp: code });
    assert.equal(replay.status, 401);
    assert.match(await replay.text(), /TOTP code is not valid/);
  });

  void test('CP-12 a locked account answers 423 on the page, the right password included', async () => {
    await newLocalUser('lena');
    const login = await startLogin(server);
    for (let i = 0; i < 4; i++) assert.equal((await postLogin(server, login, { name: 'lena', password: `wrong password ${i}` })).status, 401);
    const locked = await postLogin(server, login, { name: 'lena', password: 'wrong password 5' });
    assert.equal(locked.status, 423);
    const right = await postLogin(server, login, { name: 'lena', password: PASSWORD });
    assert.equal(right.status, 423);
    assert.match(await right.text(), /account locked; try again in 15 minutes/);
  });

  void test('CP-12 a source that fails too often gets 429 with Retry-After on the page', async () => {
    const tight = new FailureLimiter({ burst: 2 });
    const local = await startInteractionServer({ store, directory: createDirectory({ store, secretBox: box, limiter: tight }) });
    try {
      const login = await startLogin(local);
      assert.equal((await postLogin(local, login, { name: 'nobody', password: 'wrong password here' })).status, 401);
      assert.equal((await postLogin(local, login, { name: 'nobody', password: 'wrong password here' })).status, 401);
      const limited = await postLogin(local, login, { name: 'alice', password: PASSWORD });
      assert.equal(limited.status, 429);
      assert.ok(Number(limited.headers.get('retry-after')) >= 1);
      assert.match(await limited.text(), /too many failed login attempts/);
    } finally {
      await local.close();
    }
  });

  void test('Cancel sends the application access_denied', async () => {
    const login = await startLogin(server);
    const response = await login.browser.fetch(`${login.interactionUrl}/abort`, { method: 'POST', headers: { origin: server.origin, 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
    assert.equal(response.status, 303);
    const callback = await followToRedirectUri(server, login, response);
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    assert.equal(callback.searchParams.get('state'), login.state);
  });

  void test('a consent prompt that reaches the page is granted for the first-party client, and the login completes', async () => {
    const local = await startInteractionServer({ store, directory: createDirectory({ store, secretBox: box, limiter }), autoConsent: false });
    try {
      const login = await startLogin(local);
      const posted = await postLogin(local, login, { name: 'alice', password: PASSWORD });
      assert.equal(posted.status, 303);
      // The provider now asks for consent: the browser comes back to the interaction page, which grants it.
      const callback = await followToRedirectUri(local, login, posted);
      assert.ok(callback.searchParams.get('code'));
    } finally {
      await local.close();
    }
  });
});
