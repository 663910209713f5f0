/**
 * A person logs in through the organisation's IdP in a real headless Chromium: Causeway's login page
 * → the IdP's button → the IdP's own form → back through Causeway → the loopback redirect of
 * `causeway-cli` (an authorization code + PKCE flow run by openid-client here, with a listener on
 * 127.0.0.1:0). The control plane is the real one (createControlPlane with the identity module, the
 * built-in login page, the upstream login and session authentication), in this process; the IdP is a
 * second, independent oidc-provider on its own CA (test/kit/idp.ts).
 *
 * Then: the user exists with source idp:corp and the IdP's groups; our ID token carries them; a Role
 * on `users.groups: [eng]` matches in a policy decision computed from the control plane's snapshot;
 * an AdminBinding by group gives the session its scope at /api/v1/whoami; a group changed at the IdP
 * shows at the next login; a local user of the same name is not taken over; CP-05 and CP-07.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as client from 'openid-client';
import type { BrowserContext, Page } from 'playwright-core';
import { silentLogger } from '../../src/lib/log.ts';
import { CertificateAuthority } from '../../src/lib/pki/index.ts';
import { compilePolicies, matchingRoles } from '../../src/lib/policy/index.ts';
import type { DeviceState, UserState } from '../../src/lib/policy/types.ts';
import { specSchemas } from '../../src/lib/spec/index.ts';
import { freePort } from '../../src/lib/tunnel/harness.testing.ts';
import { apiTokenAuthenticator } from '../../src/control-plane/auth.ts';
import { createDirectory } from '../../src/control-plane/identity/directory.ts';
import { createIdentity } from '../../src/control-plane/identity/index.ts';
import type { Identity } from '../../src/control-plane/identity/index.ts';
import { interactionRoutes } from '../../src/control-plane/identity/interactions.ts';
import { secretBoxFromKey } from '../../src/control-plane/identity/secret-box.ts';
import { sessionAuthenticator } from '../../src/control-plane/identity/session-auth.ts';
import type { SessionAuthenticator } from '../../src/control-plane/identity/session-auth.ts';
import { createUpstreams } from '../../src/control-plane/identity/upstream.ts';
import { createUpstreamFetch } from '../../src/control-plane/identity/upstream-fetch.ts';
import { createControlPlane, issueServingCertificate } from '../../src/control-plane/server.ts';
import type { ControlPlane } from '../../src/control-plane/server.ts';
import { openStore } from '../../src/control-plane/store/index.ts';
import type { Store } from '../../src/control-plane/store/index.ts';
import { launchBrowser, withPage } from '../kit/browser.ts';
import type { TestBrowser } from '../kit/browser.ts';
import { startTestIdp } from '../kit/idp.ts';
import type { TestIdp } from '../kit/idp.ts';

const IDP_SECRET = randomBytes(24).toString('base64url');
const XSS_NAME = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>Evil SSO';

interface Loopback {
  port: number;
  redirectUri: string;
  /** Resolves with the next callback URL the browser brings. */
  next(): Promise<URL>;
  close(): Promise<void>;
}

/** What `causeway login` listens on: 127.0.0.1, any port, path /callback (RFC 8252 §7.3). */
async function startLoopback(): Promise<Loopback> {
  let waiter: ((url: URL) => void) | undefined;
  const server: Server = createServer((req, res) => {
    // The URL the browser was sent to (openid-client takes redirect_uri from it).
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    res.writeHead(200, { 'content-type': 'text/plain' }).end('Logged in; you can close this page.');
    if (url.pathname === '/callback') waiter?.(url);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    redirectUri: `http://127.0.0.1:${port}/callback`,
    next: () => new Promise<URL>((resolve) => (waiter = resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

void describe('login through the org IdP in a real browser', () => {
  let store: Store;
  let idp: TestIdp;
  let identity: Identity;
  let sessions: SessionAuthenticator;
  let controlPlane: ControlPlane;
  let publicUrl: string;
  let caPem: string;
  let browser: TestBrowser;
  let loopback: Loopback;
  let causeway: client.Configuration;

  before(async () => {
    store = await openStore({ url: ':memory:' });
    const ca = await CertificateAuthority.create();
    caPem = ca.certPem;
    const port = await freePort();
    publicUrl = `https://127.0.0.1:${port}`;
    idp = await startTestIdp({
      users: [{ name: 'alice', password: 'alice-at-idp', email: 'alice@corp.example', groups: ['eng', 'ops'] }],
      clients: [{ clientId: 'causeway', clientSecret: IDP_SECRET, redirectUris: [`${publicUrl}/oidc/upstream/callback`] }],
    });
    const logger = silentLogger();
    const secretBox = secretBoxFromKey(randomBytes(32));
    const directory = createDirectory({ store, secretBox, logger });
    identity = await createIdentity({
      store,
      secretBox,
      publicUrl,
      directory,
      logger,
      resolveSecret: (ref) => (ref.env === 'CORP_IDP_SECRET' ? Promise.resolve(IDP_SECRET) : Promise.reject(new Error('unknown secret reference'))),
      routes: [
        async (app, deps) => {
          const upstreams = createUpstreams(deps);
          await upstreams.routes(app);
          await interactionRoutes(app, { provider: deps.provider, directory, upstreams, logger: deps.logger });
        },
      ],
    });
    sessions = sessionAuthenticator({ store, findAccessToken: (token) => identity.findAccessToken(token) });
    controlPlane = await createControlPlane({ store, ca, publicUrl, logger, identity, authenticators: [apiTokenAuthenticator(store), sessions] });
    await controlPlane.listen({ host: '127.0.0.1', port, tls: await issueServingCertificate(ca, { publicUrl }) });

    await store.putObject(
      { kind: 'IdentityProvider', name: 'corp', spec: { displayName: 'Corp SSO', issuer: idp.issuer, clientId: 'causeway', clientSecret: { env: 'CORP_IDP_SECRET' }, caPem: idp.caPem } },
      { actor: 'test' },
    );
    await store.putObject({ kind: 'Role', name: 'engineers', spec: { users: { groups: ['eng'] } } }, { actor: 'test' });
    await store.putObject({ kind: 'AdminBinding', name: 'eng-viewers', spec: { role: 'viewer', groups: ['eng'] } }, { actor: 'test' });

    browser = await launchBrowser();
    loopback = await startLoopback();
    causeway = await client.discovery(new URL(publicUrl), 'causeway-cli', undefined, client.None(), { [client.customFetch]: createUpstreamFetch({ caPem }) });
  });

  after(async () => {
    await browser?.close();
    await loopback?.close();
    sessions?.close();
    await controlPlane?.close();
    await idp?.close();
    await store?.close();
  });

  interface Started {
    url: URL;
    verifier: string;
    state: string;
  }

  async function authorizationRequest(): Promise<Started> {
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(causeway, {
      redirect_uri: loopback.redirectUri,
      scope: 'openid email profile groups offline_access',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
    });
    return { url, verifier, state };
  }

  /** Our login page → the IdP's button → the IdP's form; returns the page on the IdP's form. */
  async function toIdpForm(page: Page, started: Started): Promise<void> {
    await page.goto(started.url.href);
    assert.match(new URL(page.url()).pathname, /^\/oidc\/interaction\/[A-Za-z0-9_-]+$/, `our login page, not ${page.url()}`);
    await page.getByRole('link', { name: 'Log in with Corp SSO' }).click();
    await page.waitForURL((u) => u.origin === idp.issuer);
  }

  async function loginAtIdp(context: BrowserContext, name: string, password: string): Promise<client.TokenEndpointResponse & client.TokenEndpointResponseHelpers> {
    const started = await authorizationRequest();
    return withPage(context, `idp login ${name}`, async (page) => {
      await toIdpForm(page, started);
      const callback = loopback.next();
      await page.fill('input[name=login]', name);
      await page.fill('input[name=password]', password);
      await page.click('button[type=submit]');
      const url = await callback;
      await page.waitForURL((u) => u.href.startsWith(loopback.redirectUri));
      return client.authorizationCodeGrant(causeway, url, { pkceCodeVerifier: started.verifier, expectedState: started.state });
    });
  }

  async function whoami(accessToken: string): Promise<Record<string, unknown>> {
    const response = await createUpstreamFetch({ caPem })(`${publicUrl}/api/v1/whoami`, { method: 'GET', headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' } });
    assert.equal(response.status, 200, await response.clone().text());
    return (await response.json()) as Record<string, unknown>;
  }

  async function rolesOf(userName: string): Promise<string[]> {
    const snapshot = await store.snapshot();
    const roles = snapshot.objects.filter((o) => o.kind === 'Role').map((o) => specSchemas.Role.parse({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: o.name }, spec: o.spec }));
    const compiled = compilePolicies({ roles, policies: [], services: [] });
    const user = snapshot.users.find((u) => u.name === userName);
    assert.ok(user !== undefined, `${userName} in the snapshot`);
    const state: UserState = { id: user.id, groups: user.groups, disabled: user.disabled, ...(user.email === null ? {} : { email: user.email }) };
    const device: DeviceState = { id: 'laptop-1', known: true, mdmPresent: false, banned: false, trustLevel: 'High' };
    return matchingRoles(compiled, state, device);
  }

  void test('a user logs in with the IdP through Causeway\'s login page; groups flow into the ID token, roles and the admin scope', async () => {
    const context = await browser.newContext();
    const tokens = await loginAtIdp(context, 'alice', 'alice-at-idp');
    const user = await store.getUserByName('alice');
    assert.ok(user !== undefined);
    assert.equal(user.source, 'idp:corp');
    assert.equal(user.email, 'alice@corp.example');
    assert.deepEqual(user.groups, ['eng', 'ops']);

    const claims = tokens.claims();
    assert.ok(claims !== undefined);
    assert.equal(claims.iss, publicUrl);
    assert.equal(claims.sub, user.id);
    assert.deepEqual(claims.groups, ['eng', 'ops']);

    assert.deepEqual(await rolesOf('alice'), ['engineers']);

    const me = await whoami(tokens.access_token);
    assert.equal(me.scope, 'viewer');
    assert.equal((me.user as { name?: string } | null)?.name, 'alice');
    assert.deepEqual((me.user as { groups?: string[] } | null)?.groups, ['eng', 'ops']);
  });

  void test('a group changed at the IdP is reflected at the next login: the role and the admin scope go with it', async () => {
    idp.setUser({ name: 'bob', password: 'bob-at-idp', email: 'bob@corp.example', groups: ['eng'] });
    const first = await loginAtIdp(await browser.newContext(), 'bob', 'bob-at-idp');
    assert.deepEqual(first.claims()?.groups, ['eng']);
    assert.deepEqual(await rolesOf('bob'), ['engineers']);
    assert.equal((await whoami(first.access_token)).scope, 'viewer');

    idp.setUser({ name: 'bob', password: 'bob-at-idp', email: 'bob@corp.example', groups: ['sales'] });
    const second = await loginAtIdp(await browser.newContext(), 'bob', 'bob-at-idp');
    assert.deepEqual(second.claims()?.groups, ['sales']);
    assert.deepEqual((await store.getUserByName('bob'))?.groups, ['sales']);
    assert.deepEqual(await rolesOf('bob'), []);
    assert.equal((await whoami(second.access_token)).scope, 'none');
  });

  void test('a local user with the same name is not taken over: the browser shows why and no code reaches the CLI', async () => {
    const local = await store.createUser({ name: 'mallory', email: 'mallory@local', groups: ['local'] }, { actor: 'test' });
    idp.setUser({ name: 'mallory', password: 'mallory-at-idp', groups: ['eng', 'admins'] });
    const started = await authorizationRequest();
    await withPage(await browser.newContext(), 'local user not taken over', async (page) => {
      await toIdpForm(page, started);
      await page.fill('input[name=login]', 'mallory');
      await page.fill('input[name=password]', 'mallory-at-idp');
      await page.click('button[type=submit]');
      await page.waitForURL((u) => u.pathname === '/oidc/upstream/callback');
      assert.match((await page.textContent('body')) ?? '', /already exists in Causeway's built-in directory/);
    });
    assert.deepEqual(await store.getUserByName('mallory'), local);
  });

  void test('CP-05 an IdP display name with HTML and script renders as text on the login page, and no script runs', async () => {
    await store.putObject({ kind: 'IdentityProvider', name: 'evil', spec: { displayName: XSS_NAME, issuer: idp.issuer, clientId: 'causeway', caPem: idp.caPem } }, { actor: 'test' });
    try {
      const started = await authorizationRequest();
      await withPage(await browser.newContext(), 'CP-05 display name', async (page) => {
        await page.goto(started.url.href);
        const link = page.getByRole('link', { name: `Log in with ${XSS_NAME}` });
        assert.equal(await link.count(), 1);
        assert.equal(await link.textContent(), `Log in with ${XSS_NAME}`);
        assert.equal(await page.locator('main img, main script').count(), 0);
        assert.equal(await page.evaluate('typeof window.__xss'), 'undefined');
      });
    } finally {
      await store.deleteObject('IdentityProvider', 'evil', { actor: 'test' });
    }
  });

  void test('CP-07 nothing on the login path follows an absolute or //evil redirect parameter', async () => {
    const started = await authorizationRequest();
    await withPage(await browser.newContext(), 'CP-07 redirects', async (page) => {
      await page.goto(started.url.href);
      const loginPage = new URL(page.url());
      const uid = loginPage.pathname.split('/').pop() ?? '';
      for (const evil of ['//evil.example/x', 'https://evil.example/x', '/\\evil.example', 'https://127.0.0.1@evil.example/']) {
        const q = encodeURIComponent(evil);
        await page.goto(`${loginPage.href}?next=${q}&redirect=${q}&returnTo=${q}`);
        assert.equal(new URL(page.url()).origin, publicUrl, `the login page stays: ${evil}`);
        await page.goto(`${publicUrl}/oidc/upstream/corp/start?uid=${uid}&next=${q}&redirect=${q}&redirect_uri=${q}`);
        assert.equal(new URL(page.url()).origin, idp.issuer, `start goes to the IdP only: ${evil}`);
        assert.equal(new URL(page.url()).searchParams.get('redirect_uri'), null, 'the IdP form page');
        await page.goto(`${publicUrl}/oidc/upstream/callback?state=x&code=y&next=${q}&redirect=${q}`);
        assert.equal(new URL(page.url()).origin, publicUrl, `the callback stays: ${evil}`);
        await page.goto(`${publicUrl}/oidc/interaction/${uid}/upstream?done=${'a'.repeat(43)}&next=${q}`);
        assert.equal(new URL(page.url()).origin, publicUrl, `the finish step stays: ${evil}`);
      }
    });
  });
});
