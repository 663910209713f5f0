/**
 * A built-in user logs in through Causeway's own login form in a real headless Chromium, against the
 * real control plane (createControlPlane with the identity module over HTTPS, its response hooks and
 * the provider's own cookies): password, then the TOTP code the page asks for, then the browser lands
 * on the CLI's loopback redirect URI with a code that openid-client redeems. This is what the CSP's
 * form-action and the same-origin Origin check (CP-06) must both let through (pages.ts); a lockout
 * then shows on the page as 423.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as client from 'openid-client';
import { silentLogger } from '../../src/lib/log.ts';
import { CertificateAuthority } from '../../src/lib/pki/index.ts';
import { freePort } from '../../src/lib/tunnel/harness.testing.ts';
import { apiTokenAuthenticator } from '../../src/control-plane/auth.ts';
import { createDirectory, totpContext } from '../../src/control-plane/identity/directory.ts';
import { createIdentity } from '../../src/control-plane/identity/index.ts';
import type { Identity } from '../../src/control-plane/identity/index.ts';
import { interactionRoutes } from '../../src/control-plane/identity/interactions.ts';
import { hashPassword } from '../../src/control-plane/identity/passwords.ts';
import { secretBoxFromKey } from '../../src/control-plane/identity/secret-box.ts';
import { newTotpSecret, totpCode } from '../../src/control-plane/identity/totp.ts';
import { createUpstreamFetch } from '../../src/control-plane/identity/upstream-fetch.ts';
import { createControlPlane, issueServingCertificate } from '../../src/control-plane/server.ts';
import type { ControlPlane } from '../../src/control-plane/server.ts';
import { openStore } from '../../src/control-plane/store/index.ts';
import type { Store } from '../../src/control-plane/store/index.ts';
import { launchBrowser, withPage } from '../kit/browser.ts';
import type { TestBrowser } from '../kit/browser.ts';

const PASSWORD = 'correct horse battery staple';

void describe('the built-in login form in a real browser', () => {
  let store: Store;
  let identity: Identity;
  let controlPlane: ControlPlane;
  let publicUrl: string;
  let browser: TestBrowser;
  let loopbackServer: Server;
  let redirectUri: string;
  let waiter: ((url: URL) => void) | undefined;
  let causeway: client.Configuration;
  let totpSecret: string;

  before(async () => {
    store = await openStore({ url: ':memory:' });
    const ca = await CertificateAuthority.create();
    const port = await freePort();
    publicUrl = `https://127.0.0.1:${port}`;
    const logger = silentLogger();
    const secretBox = secretBoxFromKey(randomBytes(32));
    const directory = createDirectory({ store, secretBox, logger, maxFailures: 3 });
    identity = await createIdentity({
      store,
      secretBox,
      publicUrl,
      directory,
      logger,
      resolveSecret: () => Promise.reject(new Error('no secrets in this test')),
      routes: [async (app, deps) => interactionRoutes(app, { provider: deps.provider, directory, upstreams: { list: () => Promise.resolve([]) }, logger: deps.logger })],
    });
    controlPlane = await createControlPlane({ store, ca, publicUrl, logger, identity, authenticators: [apiTokenAuthenticator(store)] });
    await controlPlane.listen({ host: '127.0.0.1', port, tls: await issueServingCertificate(ca, { publicUrl }) });

    const hash = await hashPassword(PASSWORD);
    const tina = await store.createUser({ name: 'tina', groups: ['eng'], passwordHash: hash }, { actor: 'test' });
    totpSecret = newTotpSecret();
    await store.updateUser(tina.id, { totpSecret: secretBox.seal(totpSecret, totpContext(tina.id)) }, { actor: 'test' });
    await store.createUser({ name: 'lena', groups: ['eng'], passwordHash: hash }, { actor: 'test' });

    loopbackServer = createServer((req, res) => {
      const url = new URL(req.url ?? '/', redirectUri);
      res.writeHead(200, { 'content-type': 'text/plain' }).end('Logged in; you can close this page.');
      if (url.pathname === '/callback') waiter?.(url);
    });
    await new Promise<void>((resolve) => loopbackServer.listen(0, '127.0.0.1', () => resolve()));
    redirectUri = `http://127.0.0.1:${(loopbackServer.address() as AddressInfo).port}/callback`;
    browser = await launchBrowser();
    causeway = await client.discovery(new URL(publicUrl), 'causeway-cli', undefined, client.None(), { [client.customFetch]: createUpstreamFetch({ caPem: ca.certPem }) });
  });

  after(async () => {
    await browser?.close();
    await new Promise<void>((resolve) => {
      loopbackServer?.close(() => resolve());
      loopbackServer?.closeAllConnections();
    });
    await controlPlane?.close();
    await identity?.close();
    await store?.close();
  });

  async function authorizationUrl(): Promise<{ url: URL; verifier: string; state: string }> {
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(causeway, { redirect_uri: redirectUri, scope: 'openid email profile groups', code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state });
    return { url, verifier, state };
  }

  void test('password, then the TOTP code the page asks for, and the CLI\'s loopback listener gets a code that redeems for tina\'s ID token', async () => {
    const started = await authorizationUrl();
    const context = await browser.newContext();
    const tokens = await withPage(context, 'built-in login tina', async (page) => {
      await page.goto(started.url.href);
      assert.match(new URL(page.url()).pathname, /^\/oidc\/interaction\/[A-Za-z0-9_-]+$/);
      await page.fill('#name', 'tina');
      await page.fill('#password', PASSWORD);
      const asked = page.waitForResponse((r) => r.url().endsWith('/login') && r.request().method() === 'POST');
      await page.click('button.primary');
      assert.equal((await asked).status(), 401);
      assert.match(await page.locator('p.error').innerText(), /TOTP code is required/);
      await page.fill('#password', PASSWORD);
      await page.fill('#totp', totpCode(totpSecret, Date.now()));
      const arrived = new Promise<URL>((resolve) => (waiter = resolve));
      await page.click('button.primary');
      const url = await arrived;
      return client.authorizationCodeGrant(causeway, url, { pkceCodeVerifier: started.verifier, expectedState: started.state });
    });
    const claims = tokens.claims();
    assert.equal(claims?.preferred_username, 'tina');
    assert.deepEqual(claims?.groups, ['eng']);
  });

  void test('CP-12 three wrong passwords lock the account; the page then answers 423 even for the right one', async () => {
    const started = await authorizationUrl();
    const context = await browser.newContext();
    await withPage(context, 'built-in login lockout', async (page) => {
      await page.goto(started.url.href);
      const statuses: number[] = [];
      for (const password of ['wrong password 1', 'wrong password 2', 'wrong password 3', PASSWORD]) {
        await page.fill('#name', 'lena');
        await page.fill('#password', password);
        const answered = page.waitForResponse((r) => r.url().endsWith('/login') && r.request().method() === 'POST');
        await page.click('button.primary');
        statuses.push((await answered).status());
      }
      assert.deepEqual(statuses, [401, 401, 423, 423]);
      assert.match(await page.locator('p.error').innerText(), /account locked; try again in 15 minutes/);
    });
  });
});
