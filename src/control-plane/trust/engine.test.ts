import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fakeTimers } from '../device-managers/fake-timers.testing.ts';
import type { FakeTimers } from '../device-managers/fake-timers.testing.ts';
import { openStore } from '../store/index.ts';
import type { DeviceRecord, Store, UserRecord } from '../store/index.ts';
import { wireChange, wireDevice } from '../stream/translate.ts';
import { createTrustEngine, managedFactors, TRUST_ACTOR } from './engine.ts';
import type { TrustEngine } from './engine.ts';

const MIN = 60_000;
const actor = 'user:admin';

interface Setup {
  ft: FakeTimers;
  store: Store;
  engine: TrustEngine;
  user: UserRecord;
  iso(offsetMs?: number): string;
  profile(name: string, spec: Record<string, unknown>): Promise<void>;
  device(extra?: Partial<Parameters<Store['registerDevice']>[0]>): Promise<DeviceRecord>;
  report(id: string, factors: Record<string, unknown>): Promise<void>;
}

async function setup(t: TestContext, options: { wrap?: (store: Store) => Store } = {}): Promise<Setup> {
  const ft = fakeTimers();
  const raw = await openStore({ url: ':memory:', clock: ft.clock });
  t.after(() => raw.close());
  const store = options.wrap === undefined ? raw : options.wrap(raw);
  const engine = createTrustEngine({ store, clock: ft.clock, timers: ft.timers });
  t.after(() => engine.close());
  const user = await store.createUser({ name: 'alice', groups: ['eng'] }, { actor });
  const iso = (offsetMs = 0): string => new Date(ft.clock.now() + offsetMs).toISOString();
  return {
    ft,
    store,
    engine,
    user,
    iso,
    async profile(name, spec) {
      await store.putObject({ kind: 'TrustProfile', name, spec: { appliesTo: { platforms: [], ownership: [], groups: [] }, staleAfter: '15m', factors: [], ...spec } }, { actor });
    },
    device: (extra = {}) => store.registerDevice({ userId: user.id, platform: 'linux', ownership: 'corporate-dedicated', ...extra }, { actor }),
    report: (id, factors) => store.recordPosture(id, { factors, at: iso() }),
  };
}

/** Lets the engine's store watch and timers run, then waits for its work. */
async function settle(s: Setup): Promise<void> {
  await s.ft.advance(0);
  await s.engine.idle();
}

void describe('trust engine', () => {
  void test('a report that turns the firewall off drops the level to Low, and the stream snapshot and changes show it', async (t) => {
    const s = await setup(t);
    await s.profile('laptops', { factors: [{ type: 'firewall', effect: 'Low' }, { type: 'diskEncryption', effect: 'Medium' }] });
    const device = await s.device();
    s.engine.start();
    await settle(s);
    const unreported = await s.store.getDevice(device.id);
    assert.equal(unreported?.trust?.level, 'AlwaysDeny', 'a device that never reported is stale');
    assert.deepEqual(unreported?.trust?.reasons, ['stale', 'firewall-unknown', 'disk-encryption-unknown']);

    await s.report(device.id, { firewall: true, diskEncryption: true });
    const high = await s.engine.rescore(device.id);
    assert.equal(high.level, 'High');
    assert.deepEqual(high.reasons, []);
    assert.equal(high.staleAt, s.iso(15 * MIN + 1));
    const snapshot = await s.store.snapshot();
    const wired = wireDevice(snapshot.devices.find((d) => d.id === device.id) as DeviceRecord);
    assert.equal(wired.trustLevel, 'High');
    assert.deepEqual(wired.trustReasons, []);

    const revision = await s.store.currentRevision();
    await s.ft.advance(MIN);
    await s.report(device.id, { firewall: false, diskEncryption: true });
    const low = await s.engine.rescore(device.id);
    assert.equal(low.level, 'Low');
    assert.deepEqual(low.reasons, ['firewall-off']);
    assert.match(low.explanation, /firewall is off/);
    assert.ok(low.factors.some((f) => f.type === 'firewall' && !f.met && typeof f.remedy === 'string' && f.remedy !== ''));
    const changes = await s.store.changesSince(revision);
    assert.equal(changes.length, 1, 'one change: the new verdict');
    assert.equal(changes[0]?.actor, TRUST_ACTOR);
    const change = changes[0] === undefined ? undefined : wireChange(changes[0]);
    assert.equal(change?.op, 'put');
    assert.deepEqual(change?.op === 'put' ? [(change.object as { trustLevel: unknown }).trustLevel, (change.object as { trustReasons: unknown }).trustReasons] : [], ['Low', ['firewall-off']]);

    // The same verdict again writes nothing: the stream moves only on real changes.
    await s.ft.advance(MIN);
    await s.report(device.id, { firewall: false, diskEncryption: true });
    await s.engine.rescore(device.id);
    await settle(s);
    assert.equal((await s.store.changesSince(revision)).length, 1);
  });

  void test('DT-05 a device that stops reporting becomes AlwaysDeny at its staleAt, with no event but time', async (t) => {
    const s = await setup(t);
    await s.profile('laptops', { staleAfter: '15m', factors: [{ type: 'firewall', effect: 'Low' }] });
    const device = await s.device();
    await s.report(device.id, { firewall: true });
    s.engine.start();
    await settle(s);
    const fresh = await s.store.getDevice(device.id);
    assert.equal(fresh?.trust?.level, 'High');
    const staleAt = Date.parse(String(fresh?.trust?.staleAt));
    assert.equal(staleAt, Date.parse(String(fresh?.postureAt)) + 15 * MIN + 1);

    await s.ft.advance(staleAt - s.ft.clock.now() - 1);
    await s.engine.idle();
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'High', 'not stale a millisecond early');
    await s.ft.advance(1);
    await s.engine.idle();
    const stale = await s.store.getDevice(device.id);
    assert.equal(stale?.trust?.level, 'AlwaysDeny');
    assert.equal(stale?.trust?.stale, true);
    assert.deepEqual(stale?.trust?.reasons, ['stale']);
    assert.equal(stale?.updatedBy, TRUST_ACTOR);
    assert.equal(wireDevice(stale).trustLevel, 'AlwaysDeny');

    // Reporting again restores it, and a new deadline is set.
    await s.report(device.id, { firewall: true });
    assert.equal((await s.engine.rescore(device.id)).level, 'High');
    await s.ft.advance(15 * MIN + 1);
    await s.engine.idle();
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'AlwaysDeny');
  });

  void test('overrides cap the level, the strictest wins, an expired one is lifted on time, and a cleared one is lifted by the change', async (t) => {
    const s = await setup(t);
    await s.profile('laptops', { staleAfter: '1d', factors: [{ type: 'firewall', effect: 'Low' }] });
    const device = await s.device();
    await s.report(device.id, { firewall: true });
    s.engine.start();
    await settle(s);
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'High');

    await s.store.setTrustOverride(device.id, { source: 'security-team', maxLevel: 'Medium', reason: 'incident 4711' }, { actor });
    await s.store.setTrustOverride(device.id, { source: 'siem', maxLevel: 'Low', reason: 'odd logins', expiresAt: s.iso(10 * MIN) }, { actor: 'token:siem' });
    const capped = await s.engine.rescore(device.id);
    assert.equal(capped.level, 'Low');
    assert.deepEqual(capped.reasons, ['override-security-team', 'override-siem']);
    assert.match(capped.explanation, /incident 4711/);
    assert.match(capped.explanation, /odd logins/);

    await s.ft.advance(10 * MIN - 1);
    await s.engine.idle();
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'Low');
    await s.ft.advance(1);
    await s.engine.idle();
    const lifted = await s.store.getDevice(device.id);
    assert.equal(lifted?.trust?.level, 'Medium', 'the expired override no longer caps');
    assert.deepEqual(lifted?.trust?.reasons, ['override-security-team']);

    // Clearing goes through the store: the engine sees the change and rescores by itself.
    await s.store.clearTrustOverride(device.id, 'security-team', { actor });
    await settle(s);
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'High');
  });

  void test('a TrustProfile edit rescores every device, and a user\'s group change rescores that user\'s devices', async (t) => {
    const s = await setup(t);
    await s.profile('laptops', { staleAfter: '1d' });
    const bob = await s.store.createUser({ name: 'bob', groups: [] }, { actor });
    const a = await s.device();
    const b = await s.store.registerDevice({ userId: bob.id, platform: 'macos' }, { actor });
    await s.report(a.id, { firewall: false });
    await s.report(b.id, { firewall: false });
    s.engine.start();
    await settle(s);
    assert.deepEqual([(await s.store.getDevice(a.id))?.trust?.level, (await s.store.getDevice(b.id))?.trust?.level], ['High', 'High']);

    await s.profile('laptops', { staleAfter: '1d', factors: [{ type: 'firewall', effect: 'Medium' }] });
    await settle(s);
    assert.deepEqual([(await s.store.getDevice(a.id))?.trust?.level, (await s.store.getDevice(b.id))?.trust?.level], ['Medium', 'Medium']);

    await s.store.putObject({ kind: 'TrustProfile', name: 'contractors', spec: { appliesTo: { platforms: [], ownership: [], groups: ['contractors'] }, staleAfter: '1d', factors: [{ type: 'fileExists', path: '/etc/corp/agent.conf', effect: 'AlwaysDeny' }] } }, { actor });
    await settle(s);
    assert.equal((await s.store.getDevice(b.id))?.trust?.level, 'Medium', 'bob is no contractor yet');
    await s.store.updateUser(bob.id, { groups: ['contractors'] }, { actor });
    await settle(s);
    const bobs = await s.store.getDevice(b.id);
    assert.equal(bobs?.trust?.level, 'AlwaysDeny');
    assert.deepEqual(bobs?.trust?.profiles, ['contractors', 'laptops']);
    assert.equal((await s.store.getDevice(a.id))?.trust?.level, 'Medium');
  });

  void test('DT-07 malformed stored values are unmet: factor values, report time, overrides and device-manager states', async (t) => {
    const malformed = new Map<string, Partial<DeviceRecord>>();
    const patch = (d: DeviceRecord | undefined): DeviceRecord | undefined => (d === undefined ? d : { ...d, ...malformed.get(d.id) });
    const s = await setup(t, {
      wrap: (store) =>
        new Proxy(store, {
          get(target, prop) {
            if (prop === 'getDevice') return async (id: string) => patch(await target.getDevice(id));
            if (prop === 'listDevices') return async (filter?: { userId?: string }) => (await target.listDevices(filter)).map((d) => patch(d) as DeviceRecord);
            const value: unknown = Reflect.get(target, prop, target);
            return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
          },
        }),
    });
    await s.store.putObject({ kind: 'DeviceManager', name: 'intune', spec: { type: 'intune' } }, { actor });
    await s.profile('laptops', { staleAfter: '1d', factors: [{ type: 'firewall', effect: 'Low' }, { type: 'diskEncryption', effect: 'Medium' }, { type: 'osVersion', minimum: { linux: '22.04' }, effect: 'Low' }] });
    const device = await s.device();
    await s.report(device.id, { firewall: true, diskEncryption: true, osVersion: '24.04' });
    assert.equal((await s.engine.rescore(device.id)).level, 'High');

    malformed.set(device.id, { posture: { firewall: 'off', diskEncryption: 1, osVersion: 24.04 } });
    const values = await s.engine.rescore(device.id);
    assert.equal(values.level, 'Low');
    assert.deepEqual(values.reasons, ['firewall-unknown', 'os-version-unknown', 'disk-encryption-unknown'], 'most restrictive first');

    malformed.set(device.id, { posture: ['firewall'] as unknown as Record<string, unknown> });
    assert.equal((await s.engine.rescore(device.id)).level, 'Low', 'a posture that is not an object is unknown throughout');

    malformed.set(device.id, { postureAt: 'yesterday' });
    const when = await s.engine.rescore(device.id);
    assert.equal(when.level, 'AlwaysDeny');
    assert.equal(when.stale, true);

    malformed.set(device.id, { trustOverrides: [{ source: 'siem', maxLevel: 'Highest', reason: 'x' }] as never });
    const cap = await s.engine.rescore(device.id);
    assert.equal(cap.level, 'AlwaysDeny');
    assert.deepEqual(cap.reasons, ['override-siem']);
    malformed.set(device.id, { trustOverrides: { maxLevel: 'High' } as never });
    assert.equal((await s.engine.rescore(device.id)).level, 'High', 'a lone override object is read as one override');
    malformed.set(device.id, { trustOverrides: 'cap' as never });
    assert.equal((await s.engine.rescore(device.id)).level, 'AlwaysDeny', 'an unreadable override caps at AlwaysDeny');

    await s.profile('mdm', { staleAfter: '1d', factors: [{ type: 'mdmCompliant', effect: 'AlwaysDeny' }, { type: 'mdmPresent', effect: 'Medium' }] });
    malformed.set(device.id, { mdm: { intune: { managed: 'yes', compliant: 'true', at: 'now', source: 'intune:intune' } } as never });
    const mdm = await s.engine.rescore(device.id);
    assert.equal(mdm.level, 'AlwaysDeny');
    assert.deepEqual(mdm.reasons, ['mdm-compliance-unknown', 'mdm-unknown']);
    assert.equal(mdm.mdmPresent, null);
  });

  void test('device-manager states: any non-compliant manager wins, removed managers are ignored, the lowest CrowdStrike score counts', () => {
    const at = '2026-11-27T12:00:00Z';
    const managers = new Set(['intune', 'jamf', 'falcon']);
    assert.deepEqual(managedFactors({}, managers), {});
    assert.deepEqual(managedFactors({ intune: { managed: true, compliant: true, at, source: 'intune:intune' } }, managers), { mdmPresent: true, mdmCompliant: true });
    assert.deepEqual(
      managedFactors({ intune: { managed: true, compliant: true, at, source: 'intune:intune' }, jamf: { managed: true, compliant: false, at, source: 'jamf:jamf' } }, managers),
      { mdmPresent: true, mdmCompliant: false },
    );
    assert.deepEqual(managedFactors({ old: { managed: true, compliant: true, at, source: 'intune:old' } }, managers), {}, 'a manager no longer configured says nothing');
    assert.deepEqual(managedFactors({ intune: { managed: false, compliant: null, at, source: 'intune:intune' } }, managers), { mdmPresent: false });
    assert.deepEqual(
      managedFactors({ falcon: { managed: true, compliant: null, score: 64, at, source: 'crowdstrike:falcon' }, jamf: { managed: true, compliant: null, score: 10, at, source: 'http:jamf' } }, managers),
      { mdmPresent: true, crowdstrikeScore: 64 },
    );
  });

  void test('rescore of an unknown device is NOT_FOUND, and a closed engine neither schedules nor follows changes', async (t) => {
    const s = await setup(t);
    await assert.rejects(s.engine.rescore('no-such-device'), (err: Error & { code?: string }) => err.code === 'NOT_FOUND');
    await s.profile('laptops', { staleAfter: '15m' });
    const device = await s.device();
    await s.report(device.id, { firewall: true });
    s.engine.start();
    await settle(s);
    assert.equal(s.ft.pending(), 1, 'one timer: the stale deadline');
    await s.engine.close();
    assert.equal(s.ft.pending(), 0);
    await s.profile('laptops', { staleAfter: '15m', factors: [{ type: 'firewall', effect: 'Low' }] });
    await s.report(device.id, { firewall: false });
    await s.ft.advance(MIN);
    assert.equal((await s.store.getDevice(device.id))?.trust?.level, 'High');
  });
});
