/**
 * The console's login, cookie and CSRF defences in a real headless Chromium (test/kit/browser.ts), for
 * what only a browser decides: that the app's own fetches carry the Origin the CSRF check wants (the
 * page's Referrer-Policy matters), that the session cookie is HttpOnly and SameSite=Strict as stored,
 * and that a page of another origin on the same site (where SameSite does not help: the cookie is
 * sent) cannot write with it, by form or by fetch (CP-06).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { launchBrowser, withPage } from '../../../test/kit/browser.ts';
import { makeServerCert, makeTestCa } from '../../../test/kit/certs.ts';
import { startConsoleHarness } from './console.testing.ts';

/** The fake app: reads the session, writes with and without the CSRF header, reports into the page. */
const APP_JS = `
const out = { cookieVisible: document.cookie.includes('causeway-console') };
const session = await fetch('/console/session');
out.session = session.status;
if (session.ok) {
  const s = await session.json();
  out.role = s.role;
  out.user = s.user.name;
  const doc = JSON.stringify({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'eng' }, spec: { users: { groups: ['from-the-app'] } } });
  const put = await fetch('/api/v1/objects/role/eng', { method: 'PUT', headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrfToken }, body: doc });
  out.put = put.status;
  const noToken = await fetch('/api/v1/objects/role/eng', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: doc });
  out.noToken = noToken.status;
}
document.body.dataset.result = JSON.stringify(out);
`;
const INDEX = '<!DOCTYPE html><html><head><title>Causeway</title><script type="module" src="/assets/app-test.js"></script></head><body></body></html>';

void test('CP-06 in Chromium: the app writes with its CSRF token, the cookie is HttpOnly and Strict, and a same-site page of another origin cannot write', async (t) => {
  const h = await startConsoleHarness(t, { files: { 'index.html': INDEX, 'assets/app-test.js': APP_JS } });
  const browser = await launchBrowser();
  t.after(() => browser.close());

  // Another origin on the same site (127.0.0.1, https, another port): SameSite=Strict still sends the cookie.
  const attackerCa = await makeTestCa({ commonName: 'attacker CA' });
  const attackerCert = await makeServerCert(attackerCa, { ipAddresses: ['127.0.0.1'] });
  const target = `${h.publicUrl}/api/v1/users`;
  const attacker = createServer({ cert: attackerCert.certPem, key: attackerCert.keyPem }, (req, res) => {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    if (req.url === '/form') {
      res.end(`<!DOCTYPE html><form id="f" method="post" action="${target}" enctype="text/plain"><input name='{"name":"mallory","groups":["x"],"pad":"' value='"}'></form><script>document.getElementById('f').submit()</script>`);
    } else {
      res.end(`<!DOCTYPE html><script>
        fetch(${JSON.stringify(target)}, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'content-type': 'text/plain' }, body: '{"name":"mallory2"}' })
          .then(() => { document.body.dataset.done = 'sent'; }, (e) => { document.body.dataset.done = 'failed ' + e; });
      </script>`);
    }
  });
  await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => attacker.close(() => resolve())));
  const attackerOrigin = `https://127.0.0.1:${(attacker.address() as AddressInfo).port}`;

  const context = await browser.newContext();
  await withPage(context, 'console-csrf', async (page) => {
    await page.goto(`${h.publicUrl}/console/login?next=/roles`);
    assert.match(page.url(), /\/oidc\/interaction\//);
    await page.fill('#name', 'alice');
    await page.fill('#password', 'alice-password');
    await Promise.all([page.waitForURL(`${h.publicUrl}/roles`), page.click('button.primary')]);
    await page.waitForSelector('body[data-result]', { state: 'attached' });
    const result = JSON.parse((await page.getAttribute('body', 'data-result')) ?? '{}') as Record<string, unknown>;
    assert.deepEqual(result, { cookieVisible: false, session: 200, role: 'admin', user: 'alice', put: 200, noToken: 403 });
    const stored = (await h.store.getObject('Role', 'eng'))?.spec as { users: { groups: string[] } };
    assert.deepEqual(stored.users.groups, ['from-the-app']);

    const cookie = (await context.cookies(h.publicUrl)).find((c) => c.name === '__Host-causeway-console');
    assert.ok(cookie !== undefined);
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.secure, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(cookie.path, '/');

    // The form post: the browser sends the cookie (same site) and the attacker's Origin; refused.
    const [formAnswer] = await Promise.all([page.waitForResponse((r) => r.url() === target), page.goto(`${attackerOrigin}/form`)]);
    assert.equal(formAnswer.status(), 403);
    assert.equal((await formAnswer.request().allHeaders()).cookie?.includes('__Host-causeway-console='), true, 'the cookie went along: SameSite did not stop this one');
    assert.match(await formAnswer.text(), /CSRF_REFUSED/);

    // A no-cors fetch with credentials: sent, refused, and the attacker cannot read the answer anyway.
    await page.goto(`${attackerOrigin}/fetch`);
    await page.waitForSelector('body[data-done]', { state: 'attached' });
  });
  assert.equal(await h.store.getUserByName('mallory'), undefined);
  assert.equal(await h.store.getUserByName('mallory2'), undefined);
  assert.equal((await h.store.queryAuditEvents({ action: 'create', kind: 'User', actor: 'user:alice' })).events.length, 0);
});
