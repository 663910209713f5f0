/**
 * The Command Center in a real browser (issue 8): headless Chromium (test/kit/browser.ts) against the
 * real `causeway server` of the device system (test/kit/device-system.ts: control plane, access tier,
 * connector, fake Kubernetes API), serving the built console from dist/web (`npm run build:web`,
 * which `npm test` runs first).
 *
 * As a new admin would: ann (an AdminBinding admin, a built-in user) logs in through the console login
 * page, creates a Role, a Policy and a Kubernetes Service through the forms (seeing the server's
 * problems next to the fields on the way), and then real kubectl (every version kit/kubectl.ts finds)
 * through the chain is allowed for alice (group eng, matching the role) and denied for bob
 * (`no-matching-role`). alice's `kubectl get pods -w` shows in Live sessions and Disconnect cuts it.
 * vic (a viewer) sees every page but no write button, and a write he forces through the API is 403.
 * CP-05: a Service description, a Role description and an IdP display name holding HTML and script
 * are shown as text and nothing runs (no dialog, no global flag).
 *
 * Every main page is screenshotted into test-results/screenshots/ (a CI artifact; the reviewed set is
 * committed under docs/screenshots/).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { launchBrowser, withPage } from '../kit/browser.ts';
import type { TestBrowser } from '../kit/browser.ts';
import { DOMAIN, PASSWORD, SERVICE, newHome, startDeviceSystem, until } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';
import { kubectlBinaries, repoRoot, runKubectl, spawnKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary } from '../kit/kubectl.ts';
import type { ClientProxy } from '../../src/client/proxy.ts';
import { makeServerCert, makeTestCa } from '../kit/certs.ts';
import { startFakeIntune } from '../kit/mdm/fake-intune.ts';
import type { FakeIntune } from '../kit/mdm/fake-intune.ts';

const binaries = await kubectlBinaries();
const SCREENSHOTS = join(repoRoot, 'test-results', 'screenshots');
const BUILT = join(repoRoot, 'dist', 'web', 'index.html');

/** Markup that runs script if it is ever parsed as HTML: each payload sets a global flag or opens a dialog. */
const XSS = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script><b>bold</b>';

const GOOD = { firewall: true, diskEncryption: true };

let system: DeviceSystem;
let intune: FakeIntune;
let browser: TestBrowser;
let origin: string;
let kubeCaPem: string;

async function api(method: string, path: string, body?: unknown): Promise<unknown> {
  const answer = await system.api(method, path, body);
  assert.ok(answer.status >= 200 && answer.status < 300, `${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

async function addUser(name: string, groups: string[]): Promise<void> {
  await api('POST', '/api/v1/users', { name, email: `${name}@example.com`, groups });
  await api('PUT', `/api/v1/users/${name}/password`, { password: PASSWORD });
}

async function shot(page: Page, name: string): Promise<void> {
  await page.mouse.move(0, 0);
  // The top bar is sticky: a full-page capture of a scrolled page would draw it mid-page.
  await page.evaluate('window.scrollTo(0, 0)');
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Opens `path` with no session: the app sends the browser to the login page, which comes back to `path`. */
async function logInThroughConsole(page: Page, user: string, path: string): Promise<void> {
  await page.goto(`${origin}${path}`);
  await page.waitForURL((url) => url.pathname.startsWith('/oidc/interaction/'), { timeout: 30_000 });
  await page.fill('#name', user);
  await page.fill('#password', PASSWORD);
  await page.click('button.primary');
  await page.waitForURL((url) => url.origin === origin && url.pathname === path, { timeout: 30_000 });
  await page.locator('.topbar').waitFor();
}

/** Fails the test when a page opens a dialog or a payload's script ran. */
function watchForScript(page: Page): { dialogs: string[]; check: () => Promise<void> } {
  const dialogs: string[] = [];
  const refused: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  // The app must live within the console's CSP (no inline script or style): a refusal shows here.
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) refused.push(message.text());
  });
  return {
    dialogs,
    async check() {
      assert.deepEqual(dialogs, [], 'a dialog opened: script from the data ran');
      assert.deepEqual(refused, [], 'the CSP refused something the console tried to load or run');
      assert.equal(await page.evaluate<unknown>('window.__xss'), undefined, 'a payload set window.__xss');
    },
  };
}

async function kubectlThrough(bin: KubectlBinary, setup: { kubeconfig: string; env: Record<string, string> }, args: string[]) {
  return runKubectl(bin.path, [...args, '--request-timeout=10s'], { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 30_000 });
}

before(async () => {
  assert.ok(existsSync(BUILT), `the console is not built (${BUILT} is missing): run npm run build:web first (npm test does)`);
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  await mkdir(SCREENSHOTS, { recursive: true });
  // A device manager for the Trust pages and their Test button: the fake Intune on its own CA.
  const mdmCa = await makeTestCa({ commonName: 'fake Intune CA' });
  const mdmCert = await makeServerCert(mdmCa, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  intune = await startFakeIntune({ tls: { certPem: mdmCert.certPem, keyPem: mdmCert.keyPem } });
  system = await startDeviceSystem({ env: { INTUNE_SECRET: intune.clientSecret } });
  await system.put('DeviceManager', 'intune', { type: 'intune', tenantId: intune.tenantId, clientId: intune.clientId, clientSecret: { env: 'INTUNE_SECRET' }, graphUrl: intune.url, loginUrl: intune.url, caPem: mdmCa.certPem });
  origin = new URL(system.publicUrl).origin;
  kubeCaPem = system.service.spec.kubernetes?.caPublicKey ?? '';
  assert.match(kubeCaPem, /BEGIN CERTIFICATE/);

  // The device system comes with the demo's Service, Policy and Role: the admin makes their own here.
  await api('DELETE', `/api/v1/objects/service/${SERVICE}`);
  await api('DELETE', '/api/v1/objects/policy/k8s');
  await api('DELETE', '/api/v1/objects/role/eng');
  // Laptops are High with their firewall on (Low with it off); the admin's policy asks for Medium.
  await system.put('TrustProfile', 'laptops', { appliesTo: { platforms: ['linux', 'macos', 'windows'] }, staleAfter: '15m', factors: [{ type: 'firewall', effect: 'Low' }, { type: 'diskEncryption', effect: 'Medium' }] });

  // ann administers, vic views, bob is a user outside the role (alice, group eng, comes with the system).
  await addUser('ann', ['it']);
  await addUser('vic', ['audit']);
  await addUser('bob', ['sales']);
  await system.put('AdminBinding', 'console-admins', { role: 'admin', users: ['ann'] });
  await system.put('AdminBinding', 'console-viewers', { role: 'viewer', users: ['vic'] });
  // CP-05: an identity provider whose display name is markup (the login page lists it).
  await system.put('IdentityProvider', 'evil', { displayName: XSS, issuer: 'https://idp.example.com', clientId: 'causeway', clientSecret: { env: 'NO_SUCH_SECRET' } });

  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await system?.close();
  await intune?.close();
});

async function newPageContext(): Promise<BrowserContext> {
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  return context;
}

void describe('the Command Center: an admin sets up access through the forms', () => {
  let admin: BrowserContext;
  let aliceHome: string;
  let bobHome: string;
  let aliceProxy: ClientProxy;
  let bobProxy: ClientProxy;

  before(async () => {
    admin = await newPageContext();
  });

  void test('alice and bob log in with the CLI and report a healthy laptop', async () => {
    aliceHome = await newHome(system, 'alice');
    await system.login(aliceHome);
    assert.equal((await system.report(aliceHome, GOOD)).status, 200);
    aliceProxy = await system.proxyFor(aliceHome);
    bobHome = await newHome(system, 'bob');
    const bob = await system.cli(['login', system.publicUrl, '--ca-file', system.caFile, '--user', 'bob', '--password-stdin'], { env: { CAUSEWAY_HOME: bobHome }, stdin: `${PASSWORD}\n` });
    assert.equal(bob.code, 0, `causeway login as bob:\n${bob.stdout}\n${bob.stderr}`);
    assert.equal((await system.report(bobHome, GOOD)).status, 200);
    bobProxy = await system.proxyFor(bobHome);
  });

  void test('ann logs in through the console login page and comes back to the page she asked for', async () => {
    await withPage(admin, 'console admin login', async (page) => {
      const script = watchForScript(page);
      await page.setViewportSize({ width: 1440, height: 900 });
      await logInThroughConsole(page, 'ann', '/roles');
      assert.equal(await page.locator('h1').innerText(), 'Roles');
      assert.match(await page.locator('.user-button').innerText(), /ann\s*admin/);
      // The session cookie is HttpOnly, Secure, SameSite=Strict and host-only.
      const cookie = (await admin.cookies(origin)).find((c) => c.name === '__Host-causeway-console');
      assert.ok(cookie !== undefined, 'the console session cookie');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.secure, true);
      assert.equal(cookie.sameSite, 'Strict');
      assert.equal(await page.evaluate<string>('document.cookie').then((c) => c.includes('causeway-console')), false, 'script cannot read the session cookie');
      await script.check();
    });
  });

  void test('ann creates the role eng through the form: the server\'s problem shows next to the field, and the preview shows alice', async () => {
    await withPage(admin, 'console create role', async (page) => {
      const script = watchForScript(page);
      await page.setViewportSize({ width: 1440, height: 900 });
      await page.goto(`${origin}/roles`);
      await page.getByRole('link', { name: 'Create role' }).click();
      await page.waitForURL(`${origin}/roles/new`);
      await page.fill('#role-name', 'eng');
      await page.fill('#role-description', 'Engineers on registered laptops');
      await page.fill('#role-groups', 'eng');
      await page.getByLabel('Known (registered) device only').check();
      // The live preview asks the server who matches now: alice (group eng) and her device.
      await page.locator('[data-testid="preview-users"]', { hasText: 'alice' }).waitFor({ timeout: 15_000 });
      assert.doesNotMatch(await page.locator('[data-testid="preview-users"]').innerText(), /bob|ann|vic/);
      await page.locator('[data-testid="preview-devices"]', { hasText: 'alice' }).waitFor({ timeout: 15_000 });
      await shot(page, '03-role-form');
      await page.fill('#role-emails', 'not an email');
      await page.getByRole('button', { name: 'Create role' }).click();
      const problem = page.locator('[data-path="spec.users.emails"] .field-error');
      await problem.waitFor();
      assert.match(await problem.innerText(), /email/);
      // The preview says why it cannot answer while the role is invalid.
      assert.match(await page.locator('.preview-card .notice-warning').innerText({ timeout: 15_000 }), /emails.*email address/);
      await shot(page, '03-role-form-problem');
      await page.fill('#role-emails', '');
      await page.getByRole('button', { name: 'Create role' }).click();
      await page.waitForURL(`${origin}/roles`);
      await page.locator('tr[data-row="eng"]').waitFor();
      await script.check();
    });
    const stored = (await api('GET', '/api/v1/objects/role/eng')) as { metadata: { description: string }; spec: { users: { groups: string[] }; devices: { knownDeviceOnly: boolean } } };
    assert.deepEqual(stored.spec.users.groups, ['eng']);
    assert.equal(stored.spec.devices.knownDeviceOnly, true);
    assert.equal(stored.metadata.description, 'Engineers on registered laptops');
  });

  void test('ann creates the policy k8s: role eng, at least Medium', async () => {
    await withPage(admin, 'console create policy', async (page) => {
      await page.setViewportSize({ width: 1440, height: 900 });
      await page.goto(`${origin}/policies/new`);
      await page.fill('#policy-name', 'k8s');
      await page.fill('#policy-description', 'Kubernetes for engineers on healthy laptops');
      await page.getByRole('checkbox', { name: 'eng' }).check();
      await page.selectOption('#rule-0-trust', 'Medium');
      await shot(page, '05-policy-form');
      await page.getByRole('button', { name: 'Create policy' }).click();
      await page.waitForURL(`${origin}/policies`);
      await page.locator('tr[data-row="k8s"]').waitFor();
    });
    const stored = (await api('GET', '/api/v1/objects/policy/k8s')) as { spec: { access: Array<{ roles: string[]; trustLevel: string }> } };
    assert.deepEqual(stored.spec.access, [{ roles: ['eng'], trustLevel: 'Medium' }]);
  });

  void test('ann registers the Kubernetes service through the form; a bad CA PEM is refused next to its field first', async () => {
    await withPage(admin, 'console register service', async (page) => {
      const script = watchForScript(page);
      await page.setViewportSize({ width: 1440, height: 900 });
      await page.goto(`${origin}/services`);
      await page.getByRole('link', { name: 'Register service' }).first().click();
      await page.waitForURL(`${origin}/services/new`);
      await page.fill('#service-name', SERVICE);
      await page.fill('#service-description', 'Production cluster API');
      await page.fill('#service-link', 'https://wiki.example.com/prod');
      await page.fill('#service-cluster', 'e2e');
      await page.selectOption('#service-access-tier', 'edge-1');
      await page.selectOption('#service-connector', 'dc1');
      await page.fill('#service-domain', DOMAIN);
      await page.fill('#service-port', '443');
      await page.fill('#service-dns-override', `127.0.0.1:${system.kube.port}`);
      await page.fill('#service-listen-port', '8081');
      await page.fill('#service-cluster-name', 'e2e');
      await page.fill('#service-ca', '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----');
      await page.selectOption('#service-policy', 'k8s');
      await page.getByRole('radio', { name: 'Enforcing' }).check();
      await page.getByRole('button', { name: 'Register service' }).click();
      const problem = page.locator('[data-path="spec.kubernetes.caPublicKey"] .field-error');
      await problem.waitFor();
      assert.match(await problem.innerText(), /not a valid X\.509 certificate/);
      await shot(page, '07-service-form-problem');
      // Upload the PEM file, as an admin with the CA on disk would.
      await page.getByLabel('Upload CA PEM file').setInputFiles({ name: 'kube-ca.pem', mimeType: 'application/x-pem-file', buffer: Buffer.from(kubeCaPem) });
      await until(async () => (await page.inputValue('#service-ca')).includes('BEGIN CERTIFICATE') && !(await page.inputValue('#service-ca')).includes('not a certificate'), 5_000, 'the uploaded PEM in the form');
      await page.getByRole('button', { name: 'Register service' }).click();
      await page.waitForURL(`${origin}/services`);
      await page.locator(`tr[data-row="${SERVICE}"]`).waitFor();
      await shot(page, '06-services');
      // View YAML shows the spec causeway apply takes, and Copy puts it on the clipboard.
      await page.getByRole('button', { name: `View Service ${SERVICE} as YAML` }).click();
      const dialog = page.getByRole('dialog');
      await dialog.waitFor();
      const yamlText = await dialog.locator('pre').innerText();
      assert.match(yamlText, /kind: Service/);
      assert.match(yamlText, /mode: enforcing/);
      assert.doesNotMatch(yamlText, /version:|createdAt:/);
      await dialog.getByRole('button', { name: 'Copy' }).click();
      await until(async () => (await page.evaluate<string>('navigator.clipboard.readText()')).includes(`name: ${SERVICE}`), 5_000, 'the YAML on the clipboard');
      await shot(page, '08-service-yaml');
      await page.keyboard.press('Escape');
      await script.check();
    });
    const stored = (await api('GET', `/api/v1/objects/service/${SERVICE}`)) as { spec: Record<string, unknown> };
    assert.equal(stored.spec.type, 'kubernetes');
    assert.equal(stored.spec.connector, 'dc1');
    assert.deepEqual(stored.spec.policy, { name: 'k8s', mode: 'enforcing' });
    assert.deepEqual(stored.spec.backend, { dnsOverride: `127.0.0.1:${system.kube.port}` });
  });

  for (const bin of binaries) {
    void test(`kubectl ${bin.version} through the chain: alice (role eng) is allowed, bob is denied with no-matching-role`, async () => {
      const alice = system.kubectlSetup(aliceProxy, `alice-${bin.version}`);
      let last = '';
      await until(async () => {
        const r = await kubectlThrough(bin, alice, ['get', 'pods', '-o', 'name']);
        last = r.stderr.trim();
        return r.code === 0 && r.stdout.includes('pod/web-1');
      }, 30_000, `kubectl ${bin.version} allowed for alice (last: ${last})`);
      const bob = await kubectlThrough(bin, system.kubectlSetup(bobProxy, `bob-${bin.version}`), ['get', 'pods', '-o', 'name']);
      assert.notEqual(bob.code, 0, bob.stdout);
      assert.match(bob.stderr, /Forbidden: no-matching-role/);
    });
  }

  void test('alice\'s kubectl get pods -w shows in Live sessions, and Disconnect cuts it at once', async (t) => {
    const bin = binaries[0];
    const setup = system.kubectlSetup(aliceProxy, 'alice-watch');
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/, { timeoutMs: 30_000 });
    const since = new Date(Date.now() - 1000).toISOString();
    await withPage(admin, 'console live sessions', async (page) => {
      await page.setViewportSize({ width: 1440, height: 900 });
      await page.goto(`${origin}/sessions`);
      const row = page.locator('tr', { hasText: 'alice' }).filter({ hasText: SERVICE });
      await row.first().waitFor({ timeout: 30_000 });
      await shot(page, '13-live-sessions');
      await row.first().getByRole('button', { name: 'Disconnect' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Disconnect' }).click();
      await page.locator('.notice-success', { hasText: 'Disconnected' }).waitFor();
      const ended = await Promise.race([watch.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 15_000))]);
      assert.ok(ended, 'kubectl get pods -w ended after Disconnect');
    });
    const alice = (await api('GET', '/api/v1/users/alice')) as { id: string };
    const event = await system.waitForEvent({ user: alice.id, since }, (e) => e.closeReason === 'disconnected-by-admin', 'the access event of the disconnected session');
    assert.equal(event.service, SERVICE);
  });

  void test('every main page renders for the admin (screenshots)', async () => {
    await withPage(admin, 'console admin pages', async (page) => {
      const script = watchForScript(page);
      await page.setViewportSize({ width: 1440, height: 900 });
      const pages: Array<[string, string, string]> = [
        ['/users', 'Users', '01-users'],
        ['/devices', 'Devices', '02-devices'],
        ['/roles', 'Roles', '04-roles'],
        ['/policies', 'Policies', '05-policies'],
        ['/services', 'Services', '06-services'],
        ['/network', 'Access tiers & connectors', '09-access-tiers-connectors'],
        ['/trust-profiles', 'Trust profiles', '11-trust-profiles'],
        ['/device-managers', 'Device managers', '12-device-managers'],
        ['/events', 'Events', '14-events'],
        ['/audit', 'Audit log', '15-audit-log'],
      ];
      for (const [path, title, name] of pages) {
        await page.goto(`${origin}${path}`);
        await page.locator('h1', { hasText: title }).waitFor();
        await page.locator('.loading').waitFor({ state: 'detached' });
        await shot(page, name);
      }
      // Disable and enable a user from the Users page (asked first, in the page).
      await page.goto(`${origin}/users`);
      const bobRow = page.locator('tr', { hasText: 'bob@example.com' });
      await bobRow.getByRole('button', { name: 'Disable' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Disable' }).click();
      await bobRow.locator('.badge', { hasText: 'Disabled' }).waitFor();
      assert.equal(((await api('GET', '/api/v1/users/bob')) as { disabled: boolean }).disabled, true);
      await bobRow.getByRole('button', { name: 'Enable' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Enable' }).click();
      await bobRow.locator('.badge', { hasText: 'Active' }).waitFor();
      assert.equal(((await api('GET', '/api/v1/users/bob')) as { disabled: boolean }).disabled, false);
      // Ban and unban bob's device from the Devices page.
      await page.goto(`${origin}/devices`);
      const bobDevice = page.locator('tbody tr').filter({ has: page.locator('td', { hasText: /^bob$/ }) });
      await bobDevice.getByRole('button', { name: 'Ban' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Ban' }).click();
      await bobDevice.locator('.badge', { hasText: 'Banned' }).waitFor();
      const bobId = ((await api('GET', '/api/v1/users/bob')) as { id: string }).id;
      const banned = ((await api('GET', '/api/v1/devices?user=bob')) as { items: Array<{ userId: string; banned: boolean }> }).items;
      assert.ok(banned.length > 0 && banned.every((d) => d.userId === bobId && d.banned), JSON.stringify(banned));
      await bobDevice.getByRole('button', { name: 'Unban' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Unban' }).click();
      await bobDevice.getByRole('button', { name: 'Ban' }).waitFor();
      // Edit a role: the form starts from the stored object and saves at its version.
      await page.goto(`${origin}/roles/eng`);
      assert.equal(await page.inputValue('#role-groups'), 'eng');
      assert.equal(await page.locator('#role-name').getAttribute('readonly'), '');
      await page.fill('#role-description', 'Engineers on registered laptops (reviewed)');
      await page.getByRole('button', { name: 'Save role' }).click();
      await page.waitForURL(`${origin}/roles`);
      await page.locator('tr[data-row="eng"]', { hasText: '(reviewed)' }).waitFor();
      // Test runs one lookup against the device manager.
      await page.goto(`${origin}/device-managers`);
      await page.locator('tr[data-row="intune"]').getByRole('button', { name: 'Test' }).click();
      await page.locator('tr[data-row="intune"] .text-green').waitFor({ timeout: 20_000 });
      await shot(page, '12-device-managers');
      // A device's trust, factor by factor.
      await page.goto(`${origin}/devices`);
      await page.getByRole('button', { name: 'Details' }).first().click();
      await page.getByRole('dialog').locator('table[aria-label="Trust factors"]').waitFor();
      await shot(page, '02-device-trust');
      await page.keyboard.press('Escape');
      // The access events of this run: allowed, denied and the disconnected session.
      await page.goto(`${origin}/events`);
      await page.locator('td', { hasText: 'no-matching-role' }).first().waitFor();
      await page.selectOption('select[name="decision"]', 'deny');
      await page.fill('input[name="reason"]', 'no-matching-role');
      await page.fill('input[name="user"]', 'bob');
      await page.getByRole('button', { name: 'Apply' }).click();
      await until(async () => (await page.locator('tbody tr').allInnerTexts()).every((row) => /deny/.test(row) && /bob/.test(row) && /no-matching-role/.test(row)), 10_000, "only bob's no-matching-role denials listed");
      // Export: the same filters, as JSON lines.
      const downloading = page.waitForEvent('download');
      await page.getByRole('link', { name: 'Export JSON lines' }).click();
      const download = await downloading;
      const exported = (await readFile(await download.path(), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { decision: string; reasons: string[]; user?: string });
      const bob = (await api('GET', '/api/v1/users/bob')) as { id: string };
      assert.ok(exported.length >= binaries.length, `${exported.length} exported events`);
      assert.ok(exported.every((e) => e.decision === 'deny' && e.reasons.includes('no-matching-role') && e.user === bob.id), JSON.stringify(exported.slice(0, 3)));
      // A new connector, written as YAML in the page: the server's problem is listed with its path first.
      await page.goto(`${origin}/network`);
      await page.getByRole('link', { name: 'Add connector' }).click();
      await page.waitForURL(`${origin}/network/connector/new`);
      const yamlOf = (cidr: string) => `apiVersion: causeway/v1\nkind: Connector\nmetadata: {name: dc2}\nspec:\n  cluster: e2e\n  allowedCidrs: [${cidr}]\n`;
      await page.getByRole('textbox', { name: 'YAML', exact: true }).fill(yamlOf('not-a-cidr'));
      await page.getByRole('button', { name: 'Create Connector' }).click();
      const listed = page.locator('.problem-list li', { hasText: 'spec.allowedCidrs[0]' });
      await listed.waitFor();
      await page.getByRole('textbox', { name: 'YAML', exact: true }).fill(yamlOf('10.20.0.0/16'));
      await page.getByRole('button', { name: 'Create Connector' }).click();
      await page.waitForURL(`${origin}/network`);
      await page.locator('tr[data-row="connector/dc2"]', { hasText: 'Never reported' }).waitFor();
      // A join token with the exact command to run.
      await page.getByRole('button', { name: 'Create join token' }).click();
      await page.selectOption('#join-kind', 'connector');
      await page.fill('#join-name', 'dc2');
      await page.getByRole('button', { name: 'Create token' }).click();
      const command = await page.getByRole('dialog').locator('pre').innerText();
      assert.match(command, /causeway connector .*--join-token/s);
      await shot(page, '10-join-token');
      await script.check();
    });
  });
});

void describe('a viewer sees everything and changes nothing', () => {
  void test('CP-01 vic sees every page without a write button, and a write he forces through the API is 403', async () => {
    const context = await newPageContext();
    await withPage(context, 'console viewer', async (page) => {
      await page.setViewportSize({ width: 1440, height: 900 });
      await logInThroughConsole(page, 'vic', '/services');
      assert.match(await page.locator('.user-button').innerText(), /vic\s*viewer/);
      for (const path of ['/users', '/devices', '/roles', '/policies', '/services', '/network', '/trust-profiles', '/device-managers', '/sessions', '/events', '/audit']) {
        await page.goto(`${origin}${path}`);
        await page.locator('.loading').waitFor({ state: 'detached' });
        await page.locator('.page-header h1').waitFor();
        for (const name of ['Create role', 'Create policy', 'Register service', 'Create join token', 'Create trust profile', 'Add device manager']) {
          assert.equal(await page.getByRole('link', { name }).or(page.getByRole('button', { name })).count(), 0, `${path}: "${name}" shown to a viewer`);
        }
        for (const name of ['Edit', 'Delete', 'Disable', 'Ban', 'Unregister', 'Disconnect', 'Test']) {
          assert.equal(await page.getByRole('button', { name, exact: true }).or(page.getByRole('link', { name, exact: true })).count(), 0, `${path}: "${name}" shown to a viewer`);
        }
        // Reading still works: the objects are listed.
        if (path === '/services') {
          await page.locator(`tr[data-row="${SERVICE}"]`).waitFor();
          await shot(page, '16-viewer-services');
        }
      }
      // The API refuses the viewer's write even when it carries the session's CSRF token.
      const answer = await page.evaluate(async () => {
        const session = (await (await fetch('/console/session')).json()) as { csrfToken: string };
        const response = await fetch('/api/v1/objects/role/eng', {
          method: 'DELETE',
          headers: { 'x-csrf-token': session.csrfToken },
        });
        return { status: response.status, body: await response.text() };
      });
      assert.equal(answer.status, 403, answer.body);
      // Log out: the session ends and the browser is back at the login page.
      await page.locator('.user-button').click();
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.waitForURL((url) => url.pathname.startsWith('/oidc/interaction/'), { timeout: 30_000 });
      assert.equal((await context.cookies(origin)).some((c) => c.name === '__Host-causeway-console'), false, 'the session cookie is cleared');
      assert.equal((await context.request.get(`${origin}/console/session`)).status(), 401);
    });
    await api('GET', '/api/v1/objects/role/eng');
  });
});

void describe('CP-05 data is shown as text', () => {
  void test('CP-05 a Service description, a Role description and an IdP display name holding HTML and script are shown as text and run nothing', async () => {
    await api('PUT', '/api/v1/objects/role/xss-probe', { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'xss-probe', description: XSS }, spec: { users: { groups: ['nobody'] } } });
    await api('PUT', '/api/v1/objects/service/xss-probe', {
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name: 'xss-probe', description: XSS },
      spec: { type: 'tcp', cluster: 'e2e', accessTier: '*', domain: 'probe.causeway.test', backend: { target: '127.0.0.1:9' }, policy: { name: 'k8s', mode: 'permissive' } },
    });
    const context = await newPageContext();
    await withPage(context, 'console xss', async (page) => {
      const script = watchForScript(page);
      await page.setViewportSize({ width: 1440, height: 900 });
      // The login page lists the IdP by its display name: as text.
      await page.goto(`${origin}/services`);
      await page.waitForURL((url) => url.pathname.startsWith('/oidc/interaction/'));
      assert.ok((await page.locator('body').innerText()).includes('<script>window.__xss=2'), 'the IdP display name is shown as text');
      assert.equal(await page.locator('img[src="x"]').count(), 0);
      await page.fill('#name', 'ann');
      await page.fill('#password', PASSWORD);
      await page.click('button.primary');
      await page.waitForURL(`${origin}/services`);
      await page.locator('tr[data-row="xss-probe"]').waitFor();
      assert.ok((await page.locator('tr[data-row="xss-probe"]').innerText()).includes(XSS), 'the service description is shown as the text it is');
      await page.getByRole('button', { name: 'View Service xss-probe as YAML' }).click();
      assert.ok((await page.getByRole('dialog').locator('pre').innerText()).includes('<script>window.__xss=2'), 'the YAML view shows the text');
      await page.keyboard.press('Escape');
      await page.goto(`${origin}/roles`);
      await page.locator('tr[data-row="xss-probe"]').waitFor();
      assert.ok((await page.locator('tr[data-row="xss-probe"]').innerText()).includes(XSS), 'the role description is shown as the text it is');
      await page.goto(`${origin}/roles/xss-probe`);
      assert.equal(await page.inputValue('#role-description'), XSS);
      await page.goto(`${origin}/policies`);
      await page.locator('tr[data-row="k8s"]', { hasText: 'xss-probe' }).waitFor();
      await page.goto(`${origin}/audit`);
      await page.locator('tbody tr').first().waitFor();
      assert.equal(await page.locator('img[src="x"]').count(), 0, 'no payload became an element');
      assert.equal(await page.locator('b', { hasText: 'bold' }).count(), 0, 'no payload became an element');
      await script.check();
    });
  });
});
