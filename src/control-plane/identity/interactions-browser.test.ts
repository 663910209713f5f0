/**
 * The login page in a real headless Chromium, for what only a browser decides: whether the CSP's
 * `form-action` lets the login form's redirect chain reach the CLI's loopback redirect URI
 * (pages.ts explains the choice). Chromium applies `form-action` to every redirect after a form
 * POST, so the control test shows that `form-action 'self'` alone would block the login.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { ConsoleMessage } from 'playwright-core';
import { launchBrowser, withPage } from '../../../test/kit/browser.ts';
import type { TestBrowser } from '../../../test/kit/browser.ts';
import { FailureLimiter } from '../auth.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { createDirectory } from './directory.ts';
import { startInteractionServer, TEST_CLIENT_ID } from './interactions.testing.ts';
import type { InteractionServer } from './interactions.testing.ts';
import { escapeHtml, PAGE_CSP } from './pages.ts';
import { hashPassword } from './passwords.ts';
import { loadOrCreateSecretBox } from './secret-box.ts';

const PASSWORD = 'correct horse battery staple';

/** A loopback listener like the CLI's: resolves each request it gets, answers a small page. */
interface Callback {
  port: number;
  next(): Promise<URL>;
  close(): Promise<void>;
}

async function startCallback(): Promise<Callback> {
  const waiting: Array<(url: URL) => void> = [];
  const received: URL[] = [];
  const server: Server = createServer((request: IncomingMessage, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    // Chromium also asks this origin for /favicon.ico after showing the callback page; only /callback counts.
    if (url.pathname !== '/callback') {
      response.writeHead(404).end();
      return;
    }
    const resolve = waiting.shift();
    if (resolve === undefined) received.push(url);
    else resolve(url);
    response.writeHead(200, { 'content-type': 'text/plain' }).end('done');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    next: () => {
      const ready = received.shift();
      return ready !== undefined ? Promise.resolve(ready) : new Promise<URL>((resolve) => waiting.push(resolve));
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

let store: Store;
let server: InteractionServer;
let browser: TestBrowser;
let callback: Callback;
let hits = 0;
/** A page with a form POSTing to /submit, which redirects (303) to the loopback callback; the CSP comes from the query. */
let formServer: Server;
let formOrigin: string;

before(async () => {
  store = await openStore({ url: ':memory:' });
  const box = await loadOrCreateSecretBox(store, { passphrase: 'test passphrase' });
  await store.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD) }, { actor: 'test' });
  server = await startInteractionServer({ store, directory: createDirectory({ store, secretBox: box, limiter: new FailureLimiter({ burst: 1000 }) }) });
  callback = await startCallback();
  formServer = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    if (request.method === 'POST' && url.pathname === '/submit') {
      hits += 1;
      response.writeHead(303, { location: `http://127.0.0.1:${callback.port}/callback?from=form` }).end();
      return;
    }
    const csp = url.searchParams.get('csp') ?? PAGE_CSP;
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': csp });
    response.end(`<!DOCTYPE html><html><head><title>form</title></head><body><form method="post" action="/submit"><input name="x" value="${escapeHtml('1')}"><button id="go" type="submit">go</button></form></body></html>`);
  });
  await new Promise<void>((resolve) => formServer.listen(0, '127.0.0.1', resolve));
  formOrigin = `http://127.0.0.1:${(formServer.address() as AddressInfo).port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser.close();
  await new Promise<void>((resolve) => {
    formServer.closeAllConnections();
    formServer.close(() => resolve());
  });
  await callback.close();
  await server.close();
  await store.close();
});

void describe('the login page in Chromium', () => {
  void test('a built-in user logs in through the form and the browser reaches the CLI\'s loopback redirect URI with the code', async () => {
    const context = await browser.newContext();
    await withPage(context, 'login-form-loopback', async (page) => {
      const violations: string[] = [];
      page.on('console', (message: ConsoleMessage) => {
        if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
      });
      const stylesheet = page.waitForResponse((response) => response.url().endsWith('/oidc/assets/causeway.css'));
      const verifier = randomBytes(32).toString('base64url');
      const state = randomBytes(8).toString('hex');
      const query = new URLSearchParams({
        client_id: TEST_CLIENT_ID,
        redirect_uri: `http://127.0.0.1:${callback.port}/callback`,
        response_type: 'code',
        scope: 'openid',
        code_challenge: createHash('sha256').update(verifier).digest('base64url'),
        code_challenge_method: 'S256',
        state,
      });
      await page.goto(`${server.origin}/oidc/auth?${query.toString()}`);
      assert.match(page.url(), /\/oidc\/interaction\//);
      assert.equal((await stylesheet).status(), 200);
      await page.fill('#name', 'alice');
      await page.fill('#password', PASSWORD);
      const arrived = callback.next();
      await page.click('button[type=submit].primary');
      const url = await arrived;
      assert.equal(url.pathname, '/callback');
      assert.equal(url.searchParams.get('state'), state);
      assert.ok((url.searchParams.get('code') ?? '') !== '');
      assert.deepEqual(violations, []);
    });
  });

  void test('control: with form-action \'self\' alone, Chromium blocks the same redirect chain at the loopback hop; with PAGE_CSP it goes through', async () => {
    const context = await browser.newContext();
    await withPage(context, 'form-action-self-blocks', async (page) => {
      const refused = new Promise<string>((resolve) => {
        page.on('console', (message: ConsoleMessage) => {
          if (/form-action/.test(message.text())) resolve(message.text());
        });
      });
      const strict = PAGE_CSP.replace("form-action 'self' http://127.0.0.1:*", "form-action 'self'");
      assert.notEqual(strict, PAGE_CSP);
      await page.goto(`${formOrigin}/?csp=${encodeURIComponent(strict)}`);
      const before = hits;
      await page.click('#go');
      assert.match(await refused, /form-action/);
      // The form's own POST (same origin) went out; only the hop to the loopback URI was refused.
      assert.ok(hits > before, `hits ${hits}, before ${before}`);
    });
    await withPage(context, 'form-action-page-csp-passes', async (page) => {
      await page.goto(`${formOrigin}/`);
      const arrived = callback.next();
      await page.click('#go');
      assert.equal((await arrived).searchParams.get('from'), 'form');
      // Let the callback page finish loading before the page is closed: closing it mid-navigation can
      // leave page.close() waiting until the test times out.
      await page.waitForURL((url) => url.pathname === '/callback', { waitUntil: 'load' });
    });
  });
});
