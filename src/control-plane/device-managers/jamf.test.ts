import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeJamf } from '../../../test/kit/mdm/fake-jamf.ts';
import type { FakeJamf } from '../../../test/kit/mdm/fake-jamf.ts';
import { createJamfAdapter } from './jamf.ts';
import { leakSurface, testDeps } from './deps.testing.ts';
import type { DeviceManagerAdapter } from './types.ts';

void describe('Jamf Pro adapter against the fake Jamf Pro API', () => {
  let fake: FakeJamf;
  const t = testDeps();
  function adapter(options: { secret?: string; compliantGroup?: string } = {}): DeviceManagerAdapter {
    return createJamfAdapter(
      { type: 'jamf', syncInterval: '20m', url: fake.url, clientId: fake.clientId, clientSecret: { file: '/etc/causeway/jamf-secret' }, ...(options.compliantGroup === undefined ? {} : { compliantGroup: options.compliantGroup }) },
      t.deps('macs', options.secret ?? fake.clientSecret, { pageSize: 3 }),
    );
  }
  before(async () => {
    fake = await startFakeJamf();
    fake.addComputer({ serialNumber: 'C02JAMF1', groups: ['Compliant Macs'], osVersion: '15.1', lastContactTime: '2026-11-27T08:00:00Z' });
    fake.addComputer({ serialNumber: 'C02JAMF2', managed: false });
    for (let i = 0; i < 7; i++) fake.addComputer({ serialNumber: `FLEET${i}` });
  });
  after(() => fake.close());

  void test('a lookup returns managed from remoteManagement and compliance from the compliant group', async () => {
    assert.deepEqual(await adapter({ compliantGroup: 'Compliant Macs' }).lookup('C02JAMF1'), {
      serial: 'C02JAMF1',
      managed: true,
      compliant: true,
      os: 'macOS 15.1',
      lastSeen: '2026-11-27T08:00:00.000Z',
      source: 'jamf:macs',
    });
    const unmanaged = await adapter({ compliantGroup: 'Compliant Macs' }).lookup('C02JAMF2');
    assert.equal(unmanaged?.managed, false);
    assert.equal(unmanaged?.compliant, false);
  });

  void test('without a compliant group compliance is unknown, and the group section is not asked for', async () => {
    assert.equal((await adapter().lookup('C02JAMF1'))?.compliant, undefined);
    assert.deepEqual(fake.requests.at(-1)?.url.searchParams.getAll('section'), ['GENERAL', 'HARDWARE', 'OPERATING_SYSTEM']);
  });

  void test('an unknown serial is undefined, and the serial travels as an RSQL string', async () => {
    assert.equal(await adapter().lookup('NOSUCH1'), undefined);
    assert.equal(fake.requests.at(-1)?.url.searchParams.get('filter'), 'hardware.serialNumber=="NOSUCH1"');
  });

  void test('DT-04 leaving and rejoining the compliant group is visible in the next lookup', async () => {
    const a = adapter({ compliantGroup: 'Compliant Macs' });
    fake.addComputer({ serialNumber: 'FLIPJ1', groups: [] });
    assert.equal((await a.lookup('FLIPJ1'))?.compliant, false);
    fake.setGroup('FLIPJ1', 'Compliant Macs', true);
    assert.equal((await a.lookup('FLIPJ1'))?.compliant, true);
  });

  void test('a serial with a quote or backslash is refused before any request', async () => {
    const before = fake.requests.length;
    for (const bad of ['J1"', 'J1\\', 'J1",general.name=="x']) await assert.rejects(adapter().lookup(bad), { code: 'MDM_INVALID_SERIAL' });
    assert.equal(fake.requests.length, before);
  });

  void test('a sync walks every page, sorted by id', async () => {
    const serials: string[] = [];
    for await (const state of adapter().list()) serials.push(state.serial);
    assert.equal(serials.length, fake.computers.size);
    const pages = fake.requests.filter((r) => r.url.searchParams.get('sort') === 'id:asc');
    assert.ok(pages.length >= 3);
  });

  void test('429 with Retry-After is honoured', async () => {
    t.sleeps.length = 0;
    fake.rateLimit.once(3);
    assert.equal((await adapter().lookup('C02JAMF1'))?.managed, true);
    assert.deepEqual(t.sleeps, [3000]);
  });

  void test('CP-11 a wrong secret fails as auth failed; resolved by reference, never in the error or logs', async () => {
    t.resolved.length = 0;
    const err = await adapter({ secret: 'Jamf-Wr0ng-Secret' }).lookup('C02JAMF1').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((err as { code?: string }).code, 'MDM_AUTH_FAILED');
    assert.deepEqual(t.resolved, [{ file: '/etc/causeway/jamf-secret' }]);
    assert.doesNotMatch(leakSurface(err, t.logLines), /Jamf-Wr0ng-Secret|jamf-secret-value/);
    const result = await adapter({ secret: 'Jamf-Wr0ng-Secret' }).test();
    assert.equal(result.ok, false);
  });

  void test('test() signs in and counts the inventory', async () => {
    const result = await adapter().test();
    assert.equal(result.ok, true);
    assert.match(result.message, /computers/);
  });
});
