/**
 * Device trust end to end (issue 5), with the real control plane (`causeway server`), an access tier
 * and a connector enrolled by their commands, a client proxy using the trust certificate the CLI
 * fetched, the fake Kubernetes API, and every kubectl the kit has:
 *
 * - A user logs in with the real CLI (password; CAUSEWAY_HOME in a temp dir): the device is
 *   registered, reports its posture and gets a trust certificate. The TrustProfile gives an unmet
 *   firewall the effect Low; the policy needs Medium. The test then reports chosen factors, signed
 *   with the device key the CLI made (src/lib/posture signPostureReport, after a nonce), as
 *   `causeway device report` does: firewall on → High, `kubectl get pods -w` runs; firewall off →
 *   the watch is cut, the next kubectl is refused naming the factor
 *   (`Forbidden: trust-too-low (needs:Medium has:Low trust:firewall-off)`) and the access event
 *   names the factor (`trust:firewall-off`); firewall on again → access returns, no new login.
 * - MDM: a DeviceManager of type intune points at the fake Intune (https, its CA as caPem); a
 *   TrustProfile makes an unmet mdmCompliant AlwaysDeny. The device (logged in by the same commands
 *   in this process, so that it has a serial number) is denied while Intune says non-compliant and
 *   allowed again once compliant; the change reaches the control plane with the device's next report
 *   (a fresh lookup by serial), and cuts a live watch.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClientProxy } from '../../src/client/proxy.ts';
import type { FactorValues } from '../../src/lib/trust/index.ts';
import { kubectlBinaries, runKubectl, spawnKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary, KubectlResult } from '../kit/kubectl.ts';
import { makeServerCert, makeTestCa } from '../kit/certs.ts';
import { startFakeIntune } from '../kit/mdm/fake-intune.ts';
import type { FakeIntune } from '../kit/mdm/fake-intune.ts';
import { SERVICE, newHome, startDeviceSystem, until, within } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();
const MDM_SERIAL = 'SN-E2E-MDM-0001';

interface TrustAnswer {
  trust: { level: string; reasons: string[]; explanation: string; factors: Array<{ type: string; met: boolean; reason?: string; remedy?: string }> };
}

let system: DeviceSystem;
let intune: FakeIntune;

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  // The fake Intune on https with a CA of its own, which the DeviceManager spec carries as caPem.
  const mdmCa = await makeTestCa({ commonName: 'fake Intune CA' });
  const mdmCert = await makeServerCert(mdmCa, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  intune = await startFakeIntune({ tls: { certPem: mdmCert.certPem, keyPem: mdmCert.keyPem } });
  intune.addDevice({ serialNumber: MDM_SERIAL, complianceState: 'compliant', operatingSystem: 'Linux', osVersion: '24.04' });
  system = await startDeviceSystem({ env: { INTUNE_SECRET: intune.clientSecret } });

  // Laptops the user owns (ownership `other`, the default): an unmet firewall allows at most Low.
  await system.put('TrustProfile', 'laptops', { appliesTo: { ownership: ['other'] }, staleAfter: '15m', factors: [{ type: 'firewall', effect: 'Low' }] });
  // Corporate machines: Intune must call them compliant.
  await system.put('TrustProfile', 'managed', { appliesTo: { ownership: ['corporate-dedicated'] }, staleAfter: '15m', factors: [{ type: 'mdmCompliant', effect: 'AlwaysDeny' }] });
  await system.put('DeviceManager', 'intune', {
    type: 'intune',
    tenantId: intune.tenantId,
    clientId: intune.clientId,
    clientSecret: { env: 'INTUNE_SECRET' },
    graphUrl: intune.url,
    loginUrl: intune.url,
    caPem: mdmCa.certPem,
  });
});

after(async () => {
  await system?.close();
  await intune?.close();
});

async function kubectlThrough(bin: KubectlBinary, setup: { kubeconfig: string; env: Record<string, string> }, args: string[]): Promise<KubectlResult> {
  return runKubectl(bin.path, [...args, '--request-timeout=10s'], { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 30_000 });
}

async function untilAllowed(bin: KubectlBinary, setup: { kubeconfig: string; env: Record<string, string> }, what: string): Promise<void> {
  let last: KubectlResult | undefined;
  await until(async () => (last = await kubectlThrough(bin, setup, ['get', 'pods', '-o', 'name'])).code === 0, 20_000, `${what} (last: ${last?.stderr.trim() ?? ''})`);
}

void describe('a compliant device keeps access; a failing posture report cuts it and the next one restores it', () => {
  let home: string;
  let deviceId: string;
  let proxy: ClientProxy;
  const GOOD: FactorValues = { firewall: true };
  const FIREWALL_OFF: FactorValues = { firewall: false };

  before(async () => {
    home = await newHome(system, 'laptop');
  });

  void test('causeway login (the real CLI, password) registers this machine, reports its posture and gets a trust certificate naming the user and the device', async () => {
    const login = await system.login(home);
    assert.match(login.stderr, /Logged in to https:\/\/localhost:\d+ as alice/);
    assert.match(login.stderr, /Registered this device as \S+/);
    assert.match(login.stderr, /Trust certificate valid until \d{4}-/, login.stderr);
    deviceId = await system.deviceId(home);
    for (const file of ['device.key', 'device.crt', 'trust.key', 'trust.crt', 'ca.crt']) assert.ok(existsSync(join(home, file)), file);
    const device = await system.server.store.getDevice(deviceId);
    assert.ok(device !== undefined);
    assert.equal(device.ownership, 'other');
    assert.notEqual(device.postureAt, null, 'the login sent a posture report');
    proxy = await system.proxyFor(home);
  });

  for (const bin of binaries) {
    void test(`kubectl ${bin.version}: get pods -w is cut when the device reports its firewall off, new commands are denied naming the factor, and the next good report brings access back without a login`, async (t) => {
      const setup = system.kubectlSetup(proxy, `laptop-${bin.version}`);
      const sessionBefore = await readFile(join(home, 'session.json'), 'utf8');
      // Events of this round only (the previous kubectl's round used the same device).
      const since = new Date().toISOString();

      const good = await system.report(home, GOOD);
      assert.equal(good.status, 200, JSON.stringify(good.body));
      assert.equal((good.body as TrustAnswer).trust.level, 'High');
      await untilAllowed(bin, setup, 'kubectl allowed on the compliant device');

      const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
      t.after(() => watch.close());
      await watch.waitForLine(/^web-2\s/);
      await until(() => system.accessTier.liveConnections().some((c) => c.identity.device === deviceId), 5_000, 'the watch connection being live');

      const bad = await system.report(home, FIREWALL_OFF);
      assert.equal(bad.status, 200, JSON.stringify(bad.body));
      const verdict = (bad.body as TrustAnswer).trust;
      assert.equal(verdict.level, 'Low');
      assert.ok(verdict.reasons.includes('firewall-off'), verdict.reasons.join(' '));
      assert.match(verdict.explanation, /firewall/i);
      // kubectl may end a watch whose stream closes with 0 or not; what matters is that the access tier cut it.
      await within(10_000, 'kubectl get -w ending after the firewall-off report', watch.exited);
      assert.ok(!system.accessTier.liveConnections().some((c) => c.identity.device === deviceId), 'no live connection of the device is left');

      const denied = await kubectlThrough(bin, setup, ['get', 'pods']);
      assert.notEqual(denied.code, 0);
      // kubectl shows the failing factor and what is needed, not only the code.
      assert.match(denied.stderr, /Forbidden: trust-too-low \(needs:Medium has:Low trust:firewall-off\)/);
      const event = await system.waitForEvent(
        { device: deviceId, decision: 'deny', service: SERVICE, since },
        (e) => e.reasons[0] === 'trust-too-low' && e.reasons.includes('trust:firewall-off'),
        'the denial naming the firewall at the control plane',
      );
      assert.ok(event.reasons.includes('needs:Medium') && event.reasons.includes('has:Low'), event.reasons.join(' '));
      assert.equal(event.accessTier, 'edge-1');
      await system.waitForEvent({ device: deviceId, decision: 'allow', service: SERVICE, since }, (e) => e.closeReason === 'trust-too-low' || (e.closeReason ?? '').includes('trust'), 'the cut watch recorded with its reason');

      const restored = await system.report(home, GOOD);
      assert.equal(restored.status, 200, JSON.stringify(restored.body));
      assert.equal((restored.body as TrustAnswer).trust.level, 'High');
      await untilAllowed(bin, setup, 'kubectl allowed again after the good report');
      assert.equal(await readFile(join(home, 'session.json'), 'utf8'), sessionBefore, 'no new login: the session file is the same');
    });
  }

  void test('causeway whoami (the real CLI) shows the Low level and what to fix while the firewall is off', async () => {
    const bad = await system.report(home, FIREWALL_OFF);
    assert.equal(bad.status, 200, JSON.stringify(bad.body));
    try {
      const r = await system.cli(['whoami'], { env: { CAUSEWAY_HOME: home } });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^device: +${deviceId}`, 'm'));
      assert.match(r.stdout, /^trust: +Low/m);
      assert.match(r.stdout, /firewall/i);
    } finally {
      const good = await system.report(home, GOOD);
      assert.equal(good.status, 200, JSON.stringify(good.body));
    }
  });
});

void describe('MDM: the fake Intune decides a corporate device\'s access', () => {
  let home: string;
  let deviceId: string;
  let proxy: ClientProxy;
  const machine = { factors: (): FactorValues => ({ firewall: true }), serial: MDM_SERIAL, hostname: 'corp-e2e' };

  before(async () => {
    home = await newHome(system, 'corporate');
  });

  void test('causeway login on a corporate machine with a serial number looks it up in Intune: compliant → High and a trust certificate', async () => {
    intune.setCompliance(MDM_SERIAL, 'compliant');
    const r = await system.run(home, ['login', system.publicUrl, '--ca-file', system.caFile, '--user', 'alice', '--password-stdin', '--ownership', 'corporate-dedicated'], machine, 'correct horse battery staple\n');
    assert.equal(r.error, undefined, `${r.error?.message}\n${r.err.join('\n')}`);
    const said = r.err.join('\n');
    assert.match(said, /Trust level: High/, said);
    assert.match(said, /Trust certificate valid until/, said);
    deviceId = await system.deviceId(home);
    const device = await system.server.store.getDevice(deviceId);
    assert.equal(device?.serial, MDM_SERIAL);
    assert.equal(device?.mdm?.intune?.compliant, true, JSON.stringify(device?.mdm));
    proxy = await system.proxyFor(home);
  });

  void test('Intune marks the device non-compliant: its next report cuts the live watch and kubectl is denied; compliant again: allowed', async (t) => {
    const [bin] = binaries;
    const setup = system.kubectlSetup(proxy, 'corporate');
    await untilAllowed(bin, setup, 'kubectl allowed on the compliant corporate device');
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/);
    await until(() => system.accessTier.liveConnections().some((c) => c.identity.device === deviceId), 5_000, 'the watch connection being live');

    intune.setCompliance(MDM_SERIAL, 'noncompliant');
    const report = await system.run(home, ['device', 'report'], machine);
    assert.equal(report.error, undefined, report.error?.message);
    assert.match(report.out.join('\n'), /Trust level: AlwaysDeny/);
    assert.match(report.out.join('\n'), /non-compliant|noncompliant/i);
    await within(10_000, 'kubectl get -w ending after Intune said non-compliant', watch.exited);
    assert.ok(!system.accessTier.liveConnections().some((c) => c.identity.device === deviceId), 'no live connection of the device is left');
    const denied = await kubectlThrough(bin, setup, ['get', 'pods']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden: trust-always-deny/);
    await system.waitForEvent(
      { device: deviceId, decision: 'deny', service: SERVICE },
      (e) => e.reasons[0] === 'trust-always-deny' && e.reasons.includes('trust:mdm-noncompliant'),
      'the denial naming the MDM compliance at the control plane',
    );

    intune.setCompliance(MDM_SERIAL, 'compliant');
    const again = await system.run(home, ['device', 'report'], machine);
    assert.equal(again.error, undefined, again.error?.message);
    assert.match(again.out.join('\n'), /Trust level: High/);
    await untilAllowed(bin, setup, 'kubectl allowed again once Intune says compliant');
  });
});
