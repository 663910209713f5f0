/**
 * Device-trust attacks against the whole system (issue 5): the real control plane (`causeway
 * server`), an access tier and a connector enrolled by their commands, the fake Kubernetes API and
 * kubectl. Devices are logged in with the client commands in this process, so that each test
 * chooses what the machine reports. Every refusal must leave an access event naming its reason,
 * read back through the control plane's events API (GET /api/v1/events):
 *
 * - DT-01 a captured posture report sent again; a report signed with another device's key;
 * - CA-03 a device certificate presented to the access tier as a trust certificate;
 * - CA-06 the trust certificate of a banned device: the live watch is cut, new connections refused,
 *   and the device can neither report nor get a new trust certificate;
 * - CA-01 an expired trust certificate (issued by the installation's own CA, with a clock in the past);
 * - DT-05 a device that stops reporting: AlwaysDeny once its profile's staleAfter (1 minute, the
 *   shortest allowed) has passed, its watch cut, kubectl denied, and no trust certificate issued.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultDeviceIo, deviceContext } from '../../src/client/device-command.ts';
import { fetchTrustCert } from '../../src/client/device.ts';
import { loadOrCreateCa } from '../../src/control-plane/ca-store.ts';
import type { AccessEvent } from '../../src/lib/audit/index.ts';
import { issueKeyAndCert } from '../../src/lib/pki/index.ts';
import { signPostureReport } from '../../src/lib/posture/index.ts';
import type { FactorValues } from '../../src/lib/trust/index.ts';
import { chainConnect } from '../../src/lib/tunnel/harness.testing.ts';
import type { ChainResult } from '../../src/lib/tunnel/harness.testing.ts';
import { kubectlBinaries, runKubectl, spawnKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary, KubectlResult } from '../kit/kubectl.ts';
import { DOMAIN, PASSWORD, SERVICE, newHome, startDeviceSystem, until, within } from '../kit/device-system.ts';
import type { DeviceSystem, MachineFacts } from '../kit/device-system.ts';

const [bin]: KubectlBinary[] = await kubectlBinaries();
const GOOD: FactorValues = { firewall: true };

let system: DeviceSystem;
let aliceId: string;

before(async () => {
  assert.ok(bin !== undefined, 'a kubectl binary is needed');
  system = await startDeviceSystem();
  await system.put('TrustProfile', 'laptops', { appliesTo: { ownership: ['other'] }, staleAfter: '15m', factors: [{ type: 'firewall', effect: 'Low' }] });
  // Shared machines must report every minute (the shortest staleAfter there is).
  await system.put('TrustProfile', 'shared', { appliesTo: { ownership: ['corporate-shared'] }, staleAfter: '1m', factors: [] });
  const user = await system.server.store.getUserByName('alice');
  assert.ok(user !== undefined);
  aliceId = user.id;
});

after(async () => {
  await system?.close();
});

const machine = (hostname: string): MachineFacts => ({ factors: () => GOOD, hostname });

/** Logs a new machine in with the client commands in this process; answers its home and device id. */
async function loggedInDevice(name: string, ownership = 'other'): Promise<{ home: string; id: string }> {
  const home = await newHome(system, name);
  const r = await system.run(home, ['login', system.publicUrl, '--ca-file', system.caFile, '--user', 'alice', '--password-stdin', '--ownership', ownership], machine(name), `${PASSWORD}\n`);
  assert.equal(r.error, undefined, `${r.error?.message}\n${r.err.join('\n')}`);
  assert.match(r.err.join('\n'), /Trust level: High/, r.err.join('\n'));
  assert.match(r.err.join('\n'), /Trust certificate valid until/, r.err.join('\n'));
  return { home, id: await system.deviceId(home) };
}

async function kubectl(setup: { kubeconfig: string; env: Record<string, string> }, args: string[]): Promise<KubectlResult> {
  return runKubectl(bin.path, [...args, '--request-timeout=10s'], { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 30_000 });
}

function errorOf(body: unknown): { code?: string; details?: { reason?: string } } {
  return ((body as { error?: unknown } | undefined)?.error ?? {});
}

function done(r: ChainResult): void {
  if (r.kind !== 'failed') r.socket.destroy();
}

void describe('posture reports that must not count', () => {
  let laptop: { home: string; id: string };
  let other: { home: string; id: string };

  before(async () => {
    laptop = await loggedInDevice('dt01-laptop');
    other = await loggedInDevice('dt01-other');
  });

  void test('DT-01 a captured posture report sent again is refused (409 posture-replayed) and recorded as a denial at the control plane', async () => {
    const since = new Date().toISOString();
    const nonce = await system.nonce(laptop.home);
    const key = await readFile(join(laptop.home, 'device.key'), 'utf8');
    const captured = signPostureReport({ deviceId: laptop.id, nonce, timestamp: Date.now(), factors: GOOD }, key);
    const first = await system.sendReport(laptop.home, captured);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const again = await system.sendReport(laptop.home, captured);
    assert.equal(again.status, 409, JSON.stringify(again.body));
    assert.equal(errorOf(again.body).code, 'posture-replayed');
    const event = await system.waitForEvent({ device: laptop.id, decision: 'deny', since }, (e) => e.reasons.includes('posture-replayed'), 'the replay recorded');
    assert.equal(event.accessTier, 'control-plane');
    assert.equal(event.user, aliceId);
  });

  void test('DT-01 a report for this device signed with another device\'s key (same user, a valid nonce) is refused as posture-bad-signature and recorded', async () => {
    const since = new Date().toISOString();
    const nonce = await system.nonce(laptop.home);
    const otherKey = await readFile(join(other.home, 'device.key'), 'utf8');
    const forged = signPostureReport({ deviceId: laptop.id, nonce, timestamp: Date.now(), factors: GOOD }, otherKey);
    const r = await system.sendReport(laptop.home, forged);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(errorOf(r.body).code, 'posture-bad-signature');
    const event = await system.waitForEvent({ device: laptop.id, decision: 'deny', since }, (e) => e.reasons.includes('posture-bad-signature'), 'the forged report recorded');
    assert.equal(event.accessTier, 'control-plane');
    // The nonce was not used up by the forgery: the device's own report with it still counts.
    const own = signPostureReport({ deviceId: laptop.id, nonce, timestamp: Date.now(), factors: GOOD }, await readFile(join(laptop.home, 'device.key'), 'utf8'));
    assert.equal((await system.sendReport(laptop.home, own)).status, 200);
  });
});

void describe('certificates the access tier must refuse', () => {
  let laptop: { home: string; id: string };

  before(async () => {
    laptop = await loggedInDevice('ca-laptop');
  });

  void test('CA-03 the device certificate presented to the access tier as a trust certificate is refused (cert-wrong-type), through kubectl and directly', async () => {
    const since = new Date().toISOString();
    const deviceCert = { certPem: await readFile(join(laptop.home, 'device.crt'), 'utf8'), keyPem: await readFile(join(laptop.home, 'device.key'), 'utf8') };

    const direct = await chainConnect({ port: system.accessTier.port(), caPem: system.caPem, servername: DOMAIN, cert: deviceCert, connect: `${DOMAIN}:443` });
    done(direct);
    assert.equal(direct.kind === 'refused' ? `${direct.status} ${String(direct.reason)}` : direct.kind, '403 cert-wrong-type');
    const refusal = (e: AccessEvent): boolean => e.reasons[0] === 'cert-wrong-type' && e.accessTier === 'edge-1' && /device certificate/.test(e.closeReason ?? '');
    await system.waitForEvent({ decision: 'deny', since }, refusal, 'the direct refusal recorded at the control plane');

    // The same through the client proxy, as a user who copied device.crt over trust.crt would.
    const throughProxy = new Date().toISOString();
    const swapped = await mkdtemp(join(system.dir, 'swapped-'));
    await chmod(swapped, 0o700);
    await writeFile(join(swapped, 'trust.crt'), deviceCert.certPem, { mode: 0o600 });
    await writeFile(join(swapped, 'trust.key'), deviceCert.keyPem, { mode: 0o600 });
    await writeFile(join(swapped, 'ca.crt'), system.caPem, { mode: 0o600 });
    const proxy = await system.proxyFor(swapped);
    const denied = await kubectl(system.kubectlSetup(proxy, 'swapped'), ['get', 'pods']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden: cert-wrong-type/);
    await system.waitForEvent({ decision: 'deny', since: throughProxy }, refusal, `kubectl's refusal recorded at the control plane: ${JSON.stringify(await system.events({ since }))}`);
  });

  void test('CA-01 an expired trust certificate from the installation\'s own CA is refused at the access tier (cert-expired) and recorded', async () => {
    const since = new Date().toISOString();
    const passphrase = (await readFile(join(system.server.dataDir, 'ca-passphrase'), 'utf8')).trim();
    const twoHoursAgo = Date.now() - 2 * 3600_000;
    const { ca } = await loadOrCreateCa(system.server.store, { passphrase, clock: { now: () => twoHoursAgo } });
    const expired = await issueKeyAndCert(ca, { type: 'trust', identity: { user: aliceId, device: laptop.id }, lifetimeMs: 3600_000 });
    assert.ok(expired.notAfter.getTime() < Date.now(), 'the certificate expired an hour ago');

    const r = await chainConnect({ port: system.accessTier.port(), caPem: system.caPem, servername: DOMAIN, cert: { certPem: expired.certPem, keyPem: expired.keyPem }, connect: `${DOMAIN}:443` });
    done(r);
    assert.notEqual(r.kind, 'established');
    const event = await system.waitForEvent({ decision: 'deny', since }, (e) => e.reasons[0] === 'cert-expired', 'the expired certificate recorded at the control plane');
    assert.equal(event.accessTier, 'edge-1');
    assert.match(event.closeReason ?? '', /expire/);
  });

  void test('CA-06 banning the device cuts its live kubectl watch, refuses new connections (device-revoked), and refuses its reports and trust certificate requests', async (t) => {
    const banned = await loggedInDevice('ca06-laptop');
    const since = new Date().toISOString();
    const proxy = await system.proxyFor(banned.home);
    const setup = system.kubectlSetup(proxy, 'banned');
    await until(async () => (await kubectl(setup, ['get', 'pods', '-o', 'name'])).code === 0, 20_000, 'kubectl allowed before the ban');
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/);
    await until(() => system.accessTier.liveConnections().some((c) => c.identity.device === banned.id), 5_000, 'the watch connection being live');

    const ban = await system.api('POST', `/api/v1/devices/${banned.id}/ban`);
    assert.equal(ban.status, 200, JSON.stringify(ban.body));
    await within(10_000, 'kubectl get -w ending after the ban', watch.exited);
    assert.ok(!system.accessTier.liveConnections().some((c) => c.identity.device === banned.id), 'no live connection of the device is left');
    const denied = await kubectl(setup, ['get', 'pods']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden: device-revoked/);
    await system.waitForEvent({ device: banned.id, decision: 'deny', service: SERVICE, since }, (e) => e.reasons[0] === 'device-revoked' && e.accessTier === 'edge-1', 'the access tier\'s denial recorded');

    const report = await system.run(banned.home, ['device', 'report'], machine('ca06-laptop'));
    assert.equal(report.error?.code, 'DEVICE_BANNED', report.error?.message);
    const ctx = deviceContext({ ...defaultDeviceIo, env: { CAUSEWAY_HOME: banned.home } });
    const renewal = await fetchTrustCert(ctx, { id: banned.id, server: system.publicUrl });
    assert.equal(renewal.ok, false);
    if (!renewal.ok) assert.equal(renewal.code, 'DEVICE_BANNED');
    await system.waitForEvent({ device: banned.id, decision: 'deny', since }, (e) => e.accessTier === 'control-plane' && e.reasons.includes('device-banned'), 'the control plane\'s refusals recorded');
    assert.equal((await system.events({ device: banned.id, decision: 'allow', since })).filter((e) => e.reasons.includes('trust-cert-issued')).length, 0, 'no trust certificate issued after the ban');
  });
});

void describe('DT-05 a device that stops reporting', () => {
  void test('becomes AlwaysDeny (stale) once its profile\'s staleAfter passes: its watch is cut, kubectl is denied, and no trust certificate is issued', { timeout: 240_000 }, async (t) => {
    const shared = await loggedInDevice('dt05-shared', 'corporate-shared');
    const since = new Date().toISOString();
    const proxy = await system.proxyFor(shared.home);
    const setup = system.kubectlSetup(proxy, 'stale');
    await until(async () => (await kubectl(setup, ['get', 'pods', '-o', 'name'])).code === 0, 20_000, 'kubectl allowed while the device is fresh');
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/);
    const trustBefore = await readFile(join(shared.home, 'trust.crt'), 'utf8');

    // No report for a minute: the engine's stale timer, not a request, must lower the level.
    await within(150_000, 'the watch being cut when the device went stale', watch.exited);
    const device = await system.server.store.getDevice(shared.id);
    assert.equal(device?.trust?.level, 'AlwaysDeny');
    assert.ok((device?.trust?.reasons as string[] | undefined)?.includes('stale'), JSON.stringify(device?.trust));

    const denied = await kubectl(setup, ['get', 'pods']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden: trust-always-deny/);
    await system.waitForEvent({ device: shared.id, decision: 'deny', service: SERVICE, since }, (e) => e.reasons[0] === 'trust-always-deny' && e.reasons.includes('trust:stale'), 'the stale denial recorded');

    const ctx = deviceContext({ ...defaultDeviceIo, env: { CAUSEWAY_HOME: shared.home } });
    const renewal = await fetchTrustCert(ctx, { id: shared.id, server: system.publicUrl });
    assert.equal(renewal.ok, false, JSON.stringify(renewal));
    if (!renewal.ok) assert.deepEqual([renewal.code, renewal.reason], ['TRUST_TOO_LOW', 'stale']);
    await system.waitForEvent({ device: shared.id, decision: 'deny', since }, (e) => e.accessTier === 'control-plane' && e.reasons[0] === 'trust-cert-refused' && e.reasons.includes('stale'), 'the refused trust certificate recorded');
    assert.equal(await readFile(join(shared.home, 'trust.crt'), 'utf8'), trustBefore, 'the old trust certificate is still the only one');
    assert.equal((await system.events({ device: shared.id, decision: 'allow', since })).filter((e) => e.reasons.includes('trust-cert-issued')).length, 0, 'no trust certificate issued to the stale device');
  });
});
