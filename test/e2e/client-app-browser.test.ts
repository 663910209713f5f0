/**
 * The local app page in real headless Chromium (issue 7, THREATS LP-01/LP-02), against the whole system
 * of test/kit/device-system.ts:
 *
 * - `causeway app --no-browser` (the real CLI) starts the agent and prints the page's URL with its secret
 *   in the fragment; Chromium opens it, the secret leaves the address bar, the page shows the user, the
 *   device's trust level and the catalog; a click on Connect makes plain `kubectl --context e2e` work
 *   (every kubectl of the kit, with only PATH, HOME and KUBECONFIG), Disconnect stops it. The service has
 *   authentication 'oidc' (the default): its fake API trusts only Causeway's ID tokens for kubernetes:e2e,
 *   which kubectl gets from the exec plugin Connect wrote into the kubeconfig (the client's home is the
 *   default ~/.config/causeway, found through HOME).
 * - LP-02: a page of another origin (a second local server) cannot drive it: its fetch with the header
 *   is blocked by the browser (no CORS preflight is granted), its simple no-cors POST is refused by the
 *   Origin check; DNS rebinding (a name that resolves to 127.0.0.1, by Chromium's host resolver rules) gets
 *   421 for the page and the API; the page without the secret (a fresh context) shows how to open it and
 *   its API calls get 401. After all of them, nothing got connected.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { delimiter, dirname, join } from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext } from 'playwright-core';
import { agentRequest, agentStatus } from '../../src/client/agent-client.ts';
import { CHROMIUM_PATH, withPage } from '../kit/browser.ts';
import { makeServerCert, makeTestCa } from '../kit/certs.ts';
import { DOMAIN, SERVICE, startDeviceSystem, until } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';
import { startFakeKube } from '../kit/fake-kube/index.ts';
import type { FakeKube } from '../kit/fake-kube/index.ts';
import { kubectlBinaries, runKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary, KubectlResult } from '../kit/kubectl.ts';
import { freePort } from '../kit/ports.ts';
import { makeUserHome } from '../kit/user-home.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();
const REBIND = 'rebind.causeway.test';
const PODS = '/api/v1/namespaces/default/pods';
/** The user's PATH (CLI, agent, kubectl and its exec plugin): the running Node's directory first, see client-agent.test.ts. */
const USER_PATH = [dirname(process.execPath), process.env.PATH ?? '/usr/bin:/bin'].join(delimiter);

let system: DeviceSystem;
/** The cluster's API: only Causeway's ID tokens for kubernetes:e2e get in. */
let kube: FakeKube;
let userHome: string;
/** The client's home: the default, ~/.config/causeway. */
let home: string;
let kubeconfig: string;
let listenPort: number;
let appUrl: string;
let appPort: number;
let secret: string;
let browser: Browser;
let evil: http.Server;
let evilOrigin: string;
const contexts: BrowserContext[] = [];
let agentPid: number | undefined;

function kubectl(bin: KubectlBinary): Promise<KubectlResult> {
  // Only PATH, HOME and KUBECONFIG: no proxy or Causeway environment; the kubeconfig has the proxy-url and the exec plugin.
  return runKubectl(bin.path, ['--context', 'e2e', 'get', 'pods', '-o', 'name', '--request-timeout=15s'], { kubeconfig, env: { PATH: USER_PATH, HOME: userHome }, timeoutMs: 60_000 });
}

async function newContext(): Promise<BrowserContext> {
  const context = await browser.newContext();
  contexts.push(context);
  return context;
}

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  system = await startDeviceSystem();
  listenPort = await freePort();
  // The cluster's API trusts Causeway as its OIDC issuer (audience kubernetes:e2e); the service reaches it and
  // leaves authentication at its default, 'oidc'.
  const ca = await makeTestCa({ commonName: 'e2e app page cluster CA' });
  const cert = await makeServerCert(ca, { dnsNames: [DOMAIN], ipAddresses: ['127.0.0.1'] });
  kube = await startFakeKube({ host: '127.0.0.1', port: 0, certPem: cert.certPem, keyPem: cert.keyPem, caPem: cert.caPem, oidc: { issuer: system.publicUrl, audience: 'kubernetes:e2e', caPem: system.caPem } });
  await system.put('Service', SERVICE, {
    ...system.service.spec,
    showInCatalog: true,
    client: { listenPort, allowUserOverride: false },
    backend: { ...system.service.spec.backend, dnsOverride: `127.0.0.1:${kube.port}` },
    kubernetes: { clusterName: 'e2e', caPublicKey: ca.certPem },
  });
  // Laptops the user owns are trusted without conditions here: the agent reports this machine's real posture
  // in the background, which must not decide these tests (device trust has its own e2e).
  await system.put('TrustProfile', 'laptops', { appliesTo: { ownership: ['other'] }, staleAfter: '15m', factors: [] });
  ({ userHome, home, kubeconfig } = await makeUserHome(join(system.dir, 'user-home-app')));
  // The user's kubeconfig has something of their own already.
  await writeFile(kubeconfig, 'apiVersion: v1\nkind: Config\nusers:\n- name: someone\n  user:\n    token: not-for-this-cluster\n', { mode: 0o600 });
  await system.login(home);
  const good = await system.report(home, { firewall: true });
  assert.equal(good.status, 200, JSON.stringify(good.body));

  // No CAUSEWAY_HOME: the CLI and the agent it starts find the client's home under HOME, as the exec plugin will.
  const app = await system.cli(['app', '--no-browser'], { env: { PATH: USER_PATH, KUBECONFIG: kubeconfig, HOME: userHome }, timeoutMs: 120_000 });
  assert.equal(app.code, 0, `${app.stdout}\n${app.stderr}`);
  appUrl = app.stdout.trim();
  const match = /^http:\/\/127\.0\.0\.1:(\d+)\/#([A-Za-z0-9_-]{43})$/.exec(appUrl);
  assert.ok(match !== null, appUrl);
  appPort = Number(match[1]);
  secret = match[2] ?? '';
  agentPid = (await agentStatus(home))?.pid;

  // Another local web server: the page a user might have open in another tab.
  evil = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>another site</title><p>nothing to see</p>');
  });
  await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
  evilOrigin = `http://127.0.0.1:${(evil.address() as AddressInfo).port}`;

  browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    // DNS rebinding, reproducibly: this name resolves to 127.0.0.1 inside Chromium.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-background-networking', `--host-resolver-rules=MAP ${REBIND} 127.0.0.1`],
  });
});

after(async () => {
  for (const context of contexts) await context.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await new Promise<void>((r) => (evil === undefined ? r() : evil.close(() => r())));
  if (home !== undefined) {
    await agentRequest(home, 'POST', '/v1/shutdown').catch(() => undefined);
    await until(async () => (await agentStatus(home).catch(() => null)) === null, 30_000, 'the agent stopping').catch(() => undefined);
  }
  if (agentPid !== undefined) {
    try {
      process.kill(agentPid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await kube?.close();
  await system?.close();
});

void describe('the local app page in Chromium', () => {
  void test('LP-02 another origin, a rebinding Host, or no secret cannot drive the page', async () => {
    const context = await newContext();
    // Another origin's script: with the secret it cannot even send (CORS preflight refused), without it a
    // simple POST reaches the server and is refused by the Origin check.
    const attempts = await withPage(context, 'app-other-origin', async (page) => {
      await page.goto(`${evilOrigin}/`);
      return page.evaluate(
        async ({ target, secret: s }) => {
          const out: string[] = [];
          try {
            const r = await fetch(`${target}/api/connect`, { method: 'POST', headers: { 'X-Causeway-App': s, 'Content-Type': 'application/json' }, body: JSON.stringify({ service: 'e2e-k8s' }) });
            out.push(`with header: ${r.status}`);
          } catch {
            out.push('with header: blocked');
          }
          try {
            const simple = await fetch(`${target}/api/connect`, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ service: 'e2e-k8s' }) });
            out.push(`no-cors: ${simple.type}`);
          } catch {
            // Chromium may also refuse to send it (private network access rules); either way it does nothing.
            out.push('no-cors: blocked');
          }
          return out;
        },
        { target: `http://127.0.0.1:${appPort}`, secret },
      );
    });
    assert.equal(attempts[0], 'with header: blocked');
    assert.ok(attempts[1] === 'no-cors: opaque' || attempts[1] === 'no-cors: blocked', attempts[1]);
    if (attempts[1] === 'no-cors: opaque') {
      // It reached the page's server, which refused it for its Origin (and logged that).
      await until(async () => (await readFile(join(home, 'agent.log'), 'utf8')).includes('refused a request from another origin'), 10_000, 'the refusal in agent.log');
    }

    // DNS rebinding: the name resolves to 127.0.0.1, but the Host is not ours.
    await withPage(context, 'app-rebinding', async (page) => {
      const response = await page.goto(`http://${REBIND}:${appPort}/#${secret}`);
      assert.equal(response?.status(), 421);
      const api = await page.evaluate(async (s) => (await fetch('/api/state', { headers: { 'X-Causeway-App': s } })).status, secret);
      assert.equal(api, 421);
    });

    // Without the secret: the page says how to open it, and its API answers 401.
    const fresh = await newContext();
    await withPage(fresh, 'app-no-secret', async (page) => {
      await page.goto(`http://127.0.0.1:${appPort}/`);
      await page.waitForSelector('#message:not([hidden])');
      assert.match((await page.textContent('#message')) ?? '', /causeway app/);
      const status = await page.evaluate(async () => (await fetch('/api/state', { method: 'GET', headers: { 'X-Causeway-App': 'guess' } })).status);
      assert.equal(status, 401);
      assert.equal(await page.locator('#catalog tbody tr').count(), 0);
    });

    const agent = await agentStatus(home);
    assert.deepEqual(agent?.connections, [], 'none of them connected anything');
  });

  void test('with its secret the page shows the user, the trust level and the catalog; Connect makes kubectl work, Disconnect stops it', async () => {
    const context = await newContext();
    await withPage(context, 'app-connect', async (page) => {
      await page.goto(appUrl);
      await page.waitForSelector(`#catalog tbody tr[data-service="${SERVICE}"]`);
      assert.equal(new URL(page.url()).hash, '', 'the secret left the address bar');
      assert.match((await page.textContent('#who')) ?? '', /^alice <alice@example\.com> at https:\/\/localhost:\d+$/);
      assert.equal(await page.textContent('#trust-level'), 'High');
      assert.match((await page.textContent('#trust-cert')) ?? '', /valid until \d{4}-/);
      const row = page.locator(`#catalog tbody tr[data-service="${SERVICE}"]`);
      assert.match((await row.textContent()) ?? '', /allowed/);
      await row.locator('button[data-action="connect"]').click();
      await page.waitForSelector('#message.ok');
      assert.match((await page.textContent('#message')) ?? '', new RegExp(`Connected ${SERVICE} on 127\\.0\\.0\\.1:${listenPort} — kubectl --context e2e`));
      for (const bin of binaries) {
        kube.clearRequests();
        const r = await kubectl(bin);
        assert.equal(r.code, 0, `${bin.version}: ${r.stderr}`);
        assert.match(r.stdout, /^pod\/web-1$/m);
        // The API verified the ID token the exec plugin got: alice's email is who asked.
        assert.deepEqual(kube.requests.find((q) => q.path === PODS)?.user, { user: 'alice@example.com', groups: ['eng', 'system:authenticated'] }, bin.version);
      }
      await row.locator('button[data-action="disconnect"]').click();
      await page.locator('#message', { hasText: /^Disconnected/ }).waitFor();
      const refused = await kubectl(binaries[0]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /connection refused/i);
    });
  });
});
