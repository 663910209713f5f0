import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import type { FakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import { fakeTimers } from '../device-managers/fake-timers.testing.ts';
import type { FakeTimers } from '../device-managers/fake-timers.testing.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { createDeviceTrust } from './index.ts';
import type { DeviceTrustService } from './index.ts';

const MIN = 60_000;
const actor = 'user:admin';

interface Setup {
  ft: FakeTimers;
  store: Store;
  intune: FakeIntune;
  trust: DeviceTrustService;
  secret: { value: string };
}

async function setup(t: TestContext): Promise<Setup> {
  const ft = fakeTimers();
  const store = await openStore({ url: ':memory:', clock: ft.clock });
  t.after(() => store.close());
  const intune = await startFakeIntune();
  t.after(() => intune.close());
  const secret = { value: intune.clientSecret };
  const trust = createDeviceTrust({
    store,
    clock: ft.clock,
    timers: ft.timers,
    resolveSecret: (ref) => ('env' in ref && ref.env === 'INTUNE_SECRET' ? Promise.resolve(secret.value) : Promise.reject(new Error('unknown secret'))),
    adapterDeps: { timeoutMs: 10_000 },
  });
  t.after(() => trust.close());
  return { ft, store, intune, trust, secret };
}

function intuneSpec(intune: FakeIntune): Record<string, unknown> {
  return { type: 'intune', syncInterval: '20m', tenantId: intune.tenantId, clientId: intune.clientId, clientSecret: { env: 'INTUNE_SECRET' }, graphUrl: intune.url, loginUrl: intune.url };
}

async function settle(s: Setup): Promise<void> {
  await s.ft.advance(0);
  await s.trust.idle();
}

void describe('device managers feeding trust', () => {
  void test('DT-04 Intune says non-compliant: the level drops to AlwaysDeny at the next sync; compliant again: restored at the next lookup', async (t) => {
    const s = await setup(t);
    s.intune.addDevice({ serialNumber: 'SN-DT04', complianceState: 'compliant' });
    await s.store.putObject({ kind: 'DeviceManager', name: 'intune', spec: intuneSpec(s.intune) }, { actor });
    await s.store.putObject({ kind: 'TrustProfile', name: 'managed', spec: { appliesTo: { platforms: [], ownership: [], groups: [] }, staleAfter: '1d', factors: [{ type: 'mdmCompliant', effect: 'AlwaysDeny' }, { type: 'mdmPresent', effect: 'Medium' }] } }, { actor });
    const user = await s.store.createUser({ name: 'alice' }, { actor });
    const device = await s.store.registerDevice({ userId: user.id, platform: 'windows', serial: 'sn-dt04' }, { actor });
    const other = await s.store.registerDevice({ userId: user.id, platform: 'windows', serial: 'SN-UNKNOWN' }, { actor });
    for (const d of [device, other]) await s.store.recordPosture(d.id, { factors: {}, at: new Date(s.ft.clock.now()).toISOString() });

    await s.trust.start();
    await settle(s);
    const compliant = await s.store.getDevice(device.id);
    assert.equal(compliant?.trust?.level, 'High');
    assert.equal(compliant?.trust?.mdmPresent, true);
    assert.equal(compliant?.trust?.mdmCompliant, true);
    assert.deepEqual(Object.keys(compliant?.mdm ?? {}), ['intune']);
    assert.equal(compliant?.mdm.intune?.source, 'intune:intune');
    const unmanaged = await s.store.getDevice(other.id);
    assert.equal(unmanaged?.mdm.intune?.managed, false, 'a full listing without the serial: not managed by it');
    assert.equal(unmanaged?.trust?.level, 'AlwaysDeny');
    assert.ok(Array.isArray(unmanaged?.trust?.reasons) && unmanaged.trust.reasons.includes('mdm-absent'));

    s.intune.setCompliance('SN-DT04', 'noncompliant');
    await s.ft.advance(20 * MIN);
    await s.trust.idle();
    const dropped = await s.store.getDevice(device.id);
    assert.equal(dropped?.trust?.level, 'AlwaysDeny');
    assert.deepEqual(dropped?.trust?.reasons, ['mdm-noncompliant']);
    assert.equal(dropped?.trust?.mdmCompliant, false);

    s.intune.setCompliance('SN-DT04', 'compliant');
    const results = await s.trust.lookupNow('sn-dt04', { fresh: true });
    assert.deepEqual(results.map((r) => [r.manager, r.state?.compliant]), [['intune', true]]);
    await s.trust.idle();
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'High');

    const status = await s.trust.managers.status();
    assert.equal(status.length, 1);
    assert.equal(status[0]?.manager, 'intune');
    assert.equal(status[0]?.valid, true);
    assert.equal(status[0]?.failures, 0);
    assert.equal(typeof status[0]?.lastSuccessAt, 'string');
  });

  void test('deleting the DeviceManager stops its sync and its states stop counting', async (t) => {
    const s = await setup(t);
    s.intune.addDevice({ serialNumber: 'SN-GONE', complianceState: 'noncompliant' });
    await s.store.putObject({ kind: 'DeviceManager', name: 'intune', spec: intuneSpec(s.intune) }, { actor });
    await s.store.putObject({ kind: 'TrustProfile', name: 'managed', spec: { appliesTo: { platforms: [], ownership: [], groups: [] }, staleAfter: '1d', factors: [{ type: 'mdmCompliant', effect: 'Low' }] } }, { actor });
    const user = await s.store.createUser({ name: 'alice' }, { actor });
    const device = await s.store.registerDevice({ userId: user.id, platform: 'windows', serial: 'SN-GONE' }, { actor });
    await s.store.recordPosture(device.id, { factors: {}, at: new Date(s.ft.clock.now()).toISOString() });
    await s.trust.start();
    await settle(s);
    assert.deepEqual((await s.store.getDevice(device.id))?.trust?.reasons, ['mdm-noncompliant']);

    await s.store.deleteObject('DeviceManager', 'intune', { actor });
    await settle(s);
    assert.deepEqual((await s.store.getDevice(device.id))?.trust?.reasons, ['mdm-compliance-unknown'], 'a removed manager no longer vouches either way');
    assert.deepEqual(await s.trust.managers.status(), []);
    assert.equal(s.ft.pending(), 1, 'only the engine\'s stale deadline is scheduled, no sync');
  });

  void test('CP-11 the test button reports success or failure without ever repeating the secret', async (t) => {
    const s = await setup(t);
    await s.store.putObject({ kind: 'DeviceManager', name: 'intune', spec: intuneSpec(s.intune) }, { actor });
    await s.trust.start();
    await settle(s);
    const ok = await s.trust.managers.test('intune');
    assert.equal(ok.ok, true, ok.message);
    assert.ok(!ok.message.includes(s.secret.value));

    s.secret.value = 'wrong-secret-value-0123456789';
    const refused = await s.trust.managers.test('intune');
    assert.equal(refused.ok, false);
    assert.ok(refused.message.length > 0);
    assert.ok(!refused.message.includes(s.secret.value), refused.message);

    await s.store.putObject({ kind: 'DeviceManager', name: 'broken', spec: { type: 'intune', tenantId: 'x', clientId: 'y', clientSecret: 'literal-secret-in-spec' } }, { actor });
    const invalid = await s.trust.managers.test('broken');
    assert.equal(invalid.ok, false);
    assert.match(invalid.message, /spec\.clientSecret/);
    assert.ok(!invalid.message.includes('literal-secret-in-spec'));
    await settle(s);
    const status = await s.trust.managers.status();
    const broken = status.find((m) => m.manager === 'broken');
    assert.equal(broken?.valid, false);
    assert.ok(!JSON.stringify(status).includes('literal-secret-in-spec'));
    await assert.rejects(s.trust.managers.test('missing'), (err: Error & { code?: string }) => err.code === 'NOT_FOUND');
  });
});
