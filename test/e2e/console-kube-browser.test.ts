/**
 * Activity › Kubernetes in a real browser: the kube events of the kube proxy (issue 6) in the Command
 * Center (issue 8). Headless Chromium (test/kit/browser.ts) against the device system with its kube
 * proxy (test/kit/device-system.ts `kubeProxy`), serving the built console from dist/web
 * (`npm run build:web`, which `npm test` runs first):
 *
 *   kubectl (causeway kube-credential) ──> client proxy ══> access tier <══ connector ──> causeway kube-proxy ──> fake API
 *
 * alice runs a real `kubectl get pods` and `kubectl exec web-0 -- echo hi` (the pinned kubectl: this
 * test is about the console page, the kubectl matrix is test/e2e/kube-proxy.test.ts's); once their
 * kube events reached the control plane, ann (an AdminBinding admin) logs in through the console login
 * page, opens Kubernetes and sees the list request and the exec session with its command; the type
 * and verb filters narrow the list; markup in a command is shown as text (CP-05). The page is screenshotted
 * into test-results/screenshots/ before the markup exec, so the screenshot shows the plain run.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { KubeEvent } from '../../src/lib/audit/index.ts';
import { launchBrowser, withPage } from '../kit/browser.ts';
import type { TestBrowser } from '../kit/browser.ts';
import { PASSWORD, newHome, startDeviceSystem, until } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';
import { kubectlBinaries, repoRoot, runKubectl } from '../kit/kubectl.ts';

const SCREENSHOTS = join(repoRoot, 'test-results', 'screenshots');
const BUILT = join(repoRoot, 'dist', 'web', 'index.html');
/** Markup that runs script if it is ever parsed as HTML (no single quote, so the page shows it in one pair of quotes). */
const XSS = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script><b>bold</b>';

let system: DeviceSystem;
let browser: TestBrowser;
let origin: string;

async function api(method: string, path: string, body?: unknown): Promise<unknown> {
  const answer = await system.api(method, path, body);
  assert.ok(answer.status >= 200 && answer.status < 300, `${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

async function kubeEvents(query: Record<string, string> = {}): Promise<KubeEvent[]> {
  const body = await api('GET', `/api/v1/kube-events?${new URLSearchParams({ limit: '100', ...query }).toString()}`);
  return (body as { events: KubeEvent[] }).events;
}

async function waitForKubeEvent(query: Record<string, string>, match: (e: KubeEvent) => boolean, what: string): Promise<KubeEvent> {
  let found: KubeEvent | undefined;
  await until(async () => (found = (await kubeEvents(query)).find(match)) !== undefined, 30_000, what);
  return found as KubeEvent;
}

/** The ids of the rows the Kubernetes table shows, top to bottom. */
async function shownRows(page: Page): Promise<string[]> {
  return page.evaluate<string[]>(`[...document.querySelectorAll('table[aria-label="Kubernetes events"] tbody tr[data-row]')].map((r) => r.getAttribute('data-row'))`);
}

/**
 * Sets a filter field and applies it; waits until the table shows `kept` and no longer `dropped`, then checks that
 * every row shown is one the API lists for the same filter.
 */
async function applyFilter(page: Page, field: string, value: string, kept: string, dropped: string): Promise<void> {
  const input = page.locator(`form[aria-label="Filters"] [name="${field}"]`);
  if (field === 'type') await input.selectOption(value);
  else await input.fill(value);
  await page.getByRole('button', { name: 'Apply' }).click();
  let shown: string[] = [];
  await until(async () => (shown = await shownRows(page)).includes(kept) && !shown.includes(dropped), 30_000, `the table narrowed by ${field}=${value}`);
  const matching = new Set((await kubeEvents({ [field]: value })).map((e) => e.id));
  assert.deepEqual(shown.filter((id) => !matching.has(id)), [], `every row shown has ${field}=${value}`);
}

before(async () => {
  assert.ok(existsSync(BUILT), `the console is not built (${BUILT} is missing): run npm run build:web first (npm test does)`);
  await mkdir(SCREENSHOTS, { recursive: true });
  system = await startDeviceSystem({ kubeProxy: {} });
  origin = new URL(system.publicUrl).origin;
  await system.put('Policy', 'k8s', { access: [{ roles: ['eng'], trustLevel: 'Low' }] });
  await api('POST', '/api/v1/users', { name: 'ann', email: 'ann@example.com', groups: ['it'] });
  await api('PUT', '/api/v1/users/ann/password', { password: PASSWORD });
  await system.put('AdminBinding', 'console-admins', { role: 'admin', users: ['ann'] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await system?.close();
});

void test('Activity › Kubernetes lists alice\'s kubectl get pods and her exec session with its command; the filters narrow it', async () => {
  const [bin] = await kubectlBinaries();
  assert.ok(bin !== undefined, 'a kubectl binary is needed');
  const home = await newHome(system, 'alice');
  await system.login(home);
  const deviceId = await system.deviceId(home);
  const proxy = await system.proxyFor(home);
  const setup = system.kubectlSetup(proxy, `alice-${bin.version}`, home);
  const kubectl = (args: string[]) => runKubectl(bin.path, args, { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 60_000 });

  const pods = await kubectl(['get', 'pods']);
  assert.equal(pods.code, 0, pods.stderr);
  assert.match(pods.stdout, /^web-0\s/m);
  const exec = await kubectl(['exec', 'web-0', '--', 'echo', 'hi']);
  assert.equal(exec.code, 0, exec.stderr);
  assert.equal(exec.stdout, 'hi\n');

  const list = await waitForKubeEvent({ type: 'kube-request', device: deviceId }, (e) => e.verb === 'list' && e.resource === 'pods' && e.namespace === 'default' && e.code === 200, 'the get pods request at the control plane');
  const session = await waitForKubeEvent({ type: 'kube-session', device: deviceId }, (e) => e.command?.join(' ') === 'echo hi', 'the exec session at the control plane');
  assert.equal(session.subresource, 'exec');
  assert.equal(session.name, 'web-0');
  const context = await browser.newContext();
  await withPage(context, 'console kubernetes events', async (page) => {
    const refused: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) refused.push(message.text());
    });
    await page.setViewportSize({ width: 1440, height: 900 });
    // No session yet: the app sends ann to the login page, which brings her back to the Kubernetes page.
    await page.goto(`${origin}/kubernetes`);
    await page.waitForURL((url) => url.pathname.startsWith('/oidc/interaction/'), { timeout: 30_000 });
    await page.fill('#name', 'ann');
    await page.fill('#password', PASSWORD);
    await page.click('button.primary');
    await page.waitForURL((url) => url.origin === origin && url.pathname === '/kubernetes', { timeout: 30_000 });
    await page.locator('table[aria-label="Kubernetes events"]').waitFor();
    assert.equal(await page.locator('h1').innerText(), 'Kubernetes');
    assert.equal(await page.locator('.subnav-link.active').innerText(), 'Kubernetes', 'the page is in Activity, marked as current');
    assert.equal(await page.title(), 'Kubernetes · Causeway');

    // Every kube event, newest first, as the API lists them.
    const all = (await kubeEvents()).map((e) => e.id);
    const shown = await shownRows(page);
    assert.ok(shown.includes(list.id) && shown.includes(session.id), 'the list request and the exec session are shown');
    assert.deepEqual(shown.filter((id) => all.includes(id)), all.filter((id) => shown.includes(id)), 'newest first');
    const listRow = page.locator(`tr[data-row="${list.id}"]`);
    const listCells = (await listRow.locator('td').allInnerTexts()).map((c) => c.replace(/\s+/g, ' ').trim());
    assert.deepEqual([listCells[1], listCells[3], listCells[4], listCells[5], listCells[6]], ['allow', 'e2e', 'list', 'pods', 'default']);
    assert.match(listCells[2], /^alice@example\.com \S/, 'the user, then the device');
    assert.match(listCells[7], /200/);
    assert.match(listCells[8], /\d+(\.\d+)? (ms|s)/);
    assert.equal(listCells[9], '—', 'a request has no session');

    const sessionRow = page.locator(`tr[data-row="${session.id}"]`);
    assert.equal(await sessionRow.locator('code.kube-command').innerText(), 'echo hi', 'the command, as text');
    const sessionCells = (await sessionRow.locator('td').allInnerTexts()).map((c) => c.replace(/\s+/g, ' ').trim());
    assert.equal(sessionCells[4], 'create');
    assert.equal(sessionCells[5], 'pods/exec');
    assert.equal(sessionCells[6], 'default/web-0');
    assert.match(sessionCells[7], /101/);
    assert.match(sessionCells[9], new RegExp(`^echo hi ${session.transport ?? 'websocket'} `), 'command, transport, duration');
    await page.mouse.move(0, 0);
    await page.screenshot({ path: join(SCREENSHOTS, '17-kubernetes-audit.png'), fullPage: true });

    await applyFilter(page, 'type', 'kube-session', session.id, list.id);
    await page.getByRole('button', { name: 'Reset' }).click();
    await until(async () => (await shownRows(page)).includes(list.id), 30_000, 'Reset shows every event again');
    await applyFilter(page, 'verb', 'list', list.id, session.id);

    // CP-05: a command is the user's text; markup in it is shown as text and never runs.
    const dialogs: string[] = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    const markup = await kubectl(['exec', 'web-0', '--', 'echo', XSS]);
    assert.equal(markup.code, 0, markup.stderr);
    const marked = await waitForKubeEvent({ type: 'kube-session', device: deviceId }, (e) => e.command?.join(' ') === `echo ${XSS}`, 'the exec session with markup in its command');
    await page.goto(`${origin}/kubernetes`);
    await page.locator(`tr[data-row="${marked.id}"]`).waitFor();
    assert.equal(await page.locator(`tr[data-row="${marked.id}"] code.kube-command`).innerText(), `echo '${XSS}'`, 'the command, quoted, as text');
    assert.equal(await page.locator(`tr[data-row="${marked.id}"] img, tr[data-row="${marked.id}"] script, tr[data-row="${marked.id}"] b`).count(), 0, 'no element made from the command');
    assert.deepEqual(dialogs, [], 'a dialog opened: script from the command ran');
    assert.equal(await page.evaluate<unknown>('window.__xss'), undefined, 'a payload set window.__xss');
    assert.deepEqual(refused, [], 'the CSP refused something the page tried to load or run');
  });
});
