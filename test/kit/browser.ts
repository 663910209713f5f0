/**
 * A real headless Chromium for tests: Debian's `chromium` (installed by .ci/run when missing)
 * driven by playwright-core, which brings no browser of its own.
 *
 * Trust: the servers under test use throwaway CAs made by the tests (the control plane's own CA, the
 * test IdP's CA). Chromium reads trust from the system's NSS store, which a test must not change, so
 * test contexts set `ignoreHTTPSErrors: true`. That is acceptable only here, in tests, where every
 * server is one the test started on 127.0.0.1; certificate checking itself is tested elsewhere
 * (src/lib/pki, the access tier's handshake tests).
 *
 * `withPage` opens a page, runs the test's steps, and on failure saves a screenshot and the page's
 * HTML into `test-artifacts/` (gitignored) before rethrowing, so a CI failure can be looked at.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const ARTIFACTS_DIR = join(import.meta.dirname, '..', '..', 'test-artifacts');

export interface TestBrowser {
  browser: Browser;
  /** A fresh context (its own cookies), trusting the tests' CAs (see above). */
  newContext(): Promise<BrowserContext>;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-background-networking'],
  });
  const contexts: BrowserContext[] = [];
  return {
    browser,
    async newContext() {
      // Only in tests: the servers are ours, on loopback, with CAs the test made (see the file comment).
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      contexts.push(context);
      return context;
    },
    async close() {
      for (const context of contexts) await context.close().catch(() => undefined);
      await browser.close();
    },
  };
}

function fileName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 120);
}

/** Runs `steps` with a new page; on failure writes `<name>.png` and `<name>.html` into test-artifacts/. */
export async function withPage<T>(context: BrowserContext, name: string, steps: (page: Page) => Promise<T>): Promise<T> {
  const page = await context.newPage();
  try {
    return await steps(page);
  } catch (err) {
    try {
      await mkdir(ARTIFACTS_DIR, { recursive: true });
      const base = join(ARTIFACTS_DIR, `${fileName(name)}-${Date.now()}`);
      await page.screenshot({ path: `${base}.png`, fullPage: true });
      await writeFile(`${base}.html`, `<!-- ${page.url()} -->\n${await page.content()}`);
    } catch {
      // The failure itself is what matters; a missing screenshot must not hide it.
    }
    throw err;
  } finally {
    await page.close().catch(() => undefined);
  }
}
