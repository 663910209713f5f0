import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, withPage } from './browser.ts';
import type { TestBrowser } from './browser.ts';
import { startTestIdp } from './idp.ts';
import type { TestIdp } from './idp.ts';

let browser: TestBrowser;
let idp: TestIdp;
before(async () => {
  browser = await launchBrowser();
  idp = await startTestIdp();
});
after(async () => {
  await browser.close();
  await idp.close();
});

void test('headless Chromium opens a page of a test server on its own CA and reads it', async () => {
  const context = await browser.newContext();
  await withPage(context, 'browser kit', async (page) => {
    const response = await page.goto(`${idp.issuer}/.well-known/openid-configuration`);
    assert.equal(response?.status(), 200);
    const issuer = (JSON.parse((await page.textContent('body')) ?? '{}') as { issuer?: string }).issuer;
    assert.equal(issuer, idp.issuer);
  });
});
