import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeCrowdStrike } from '../../../test/kit/mdm/fake-crowdstrike.ts';
import type { FakeCrowdStrike } from '../../../test/kit/mdm/fake-crowdstrike.ts';
import { createCrowdStrikeAdapter } from './crowdstrike.ts';
import { leakSurface, testDeps } from './deps.testing.ts';
import type { DeviceManagerAdapter } from './types.ts';

void describe('CrowdStrike adapter against the fake Falcon API', () => {
  let fake: FakeCrowdStrike;
  const t = testDeps();
  function adapter(options: { secret?: string; minimumScore?: number } = {}): DeviceManagerAdapter {
    return createCrowdStrikeAdapter(
      { type: 'crowdstrike', syncInterval: '20m', url: fake.url, clientId: fake.clientId, clientSecret: { env: 'FALCON_SECRET' }, ...(options.minimumScore === undefined ? {} : { minimumScore: options.minimumScore }) },
      t.deps('falcon', options.secret ?? fake.clientSecret, { pageSize: 4 }),
    );
  }
  before(async () => {
    fake = await startFakeCrowdStrike();
    fake.addHost({ serialNumber: 'FALCON1', score: 82, platformName: 'Windows', osVersion: 'Windows 11', lastSeen: '2026-11-27T11:45:00Z' });
    fake.addHost({ serialNumber: 'FALCON2', score: 40 });
    fake.addHost({ serialNumber: 'NOZTA1', score: undefined });
    for (let i = 0; i < 9; i++) fake.addHost({ serialNumber: `HOST${i}` });
  });
  after(() => fake.close());

  void test('a lookup finds the sensor, its details and its ZTA score', async () => {
    assert.deepEqual(await adapter({ minimumScore: 70 }).lookup('FALCON1'), {
      serial: 'FALCON1',
      managed: true,
      compliant: true,
      score: 82,
      os: 'Windows Windows 11',
      lastSeen: '2026-11-27T11:45:00.000Z',
      source: 'crowdstrike:falcon',
    });
    assert.equal((await adapter({ minimumScore: 70 }).lookup('FALCON2'))?.compliant, false);
  });

  void test('without a minimum score, or without an assessment, compliance is unknown', async () => {
    assert.equal((await adapter().lookup('FALCON1'))?.compliant, undefined);
    const noZta = await adapter({ minimumScore: 50 }).lookup('NOZTA1');
    assert.equal(noZta?.managed, true);
    assert.equal(noZta?.compliant, undefined);
    assert.equal(noZta?.score, undefined);
  });

  void test('a serial without a sensor is undefined, and the serial travels as an FQL string', async () => {
    assert.equal(await adapter().lookup('NOSENSOR'), undefined);
    assert.equal(fake.requests.at(-1)?.url.searchParams.get('filter'), "serial_number:'NOSENSOR'");
  });

  void test('DT-04 a score that drops below the minimum and recovers is visible in the next lookup', async () => {
    const a = adapter({ minimumScore: 60 });
    fake.addHost({ serialNumber: 'FLIPCS', score: 30 });
    assert.equal((await a.lookup('FLIPCS'))?.compliant, false);
    fake.setScore('FLIPCS', 75);
    const after = await a.lookup('FLIPCS');
    assert.equal(after?.compliant, true);
    assert.equal(after?.score, 75);
  });

  void test('a serial with a quote is refused before any request', async () => {
    const before = fake.requests.length;
    await assert.rejects(adapter().lookup("FALCON1',platform_name:'Mac"), { code: 'MDM_INVALID_SERIAL' });
    assert.equal(fake.requests.length, before);
  });

  void test('a sync walks every page of hosts', async () => {
    const serials: string[] = [];
    for await (const state of adapter().list()) serials.push(state.serial);
    assert.equal(serials.length, fake.hosts.size);
    assert.equal(new Set(serials).size, serials.length);
    assert.ok(fake.requests.filter((r) => r.url.pathname === '/devices/queries/devices/v1' && r.url.searchParams.has('offset')).length >= 3);
  });

  void test('429 with X-RateLimit-RetryAfter is waited out', async () => {
    t.sleeps.length = 0;
    fake.rateLimitOnce(4, t.now());
    assert.equal((await adapter().lookup('FALCON1'))?.managed, true);
    assert.equal(t.sleeps.length, 1);
    assert.ok(t.sleeps[0] > 3000 && t.sleeps[0] <= 4000);
  });

  void test('CP-11 a wrong secret fails as auth failed; resolved by reference, never in the error or logs', async () => {
    t.resolved.length = 0;
    const err = await adapter({ secret: 'Falc0n-Wr0ng' }).lookup('FALCON1').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((err as { code?: string }).code, 'MDM_AUTH_FAILED');
    assert.deepEqual(t.resolved, [{ env: 'FALCON_SECRET' }]);
    assert.doesNotMatch(leakSurface(err, t.logLines), /Falc0n-Wr0ng|falcon-secret-value/);
    assert.equal((await adapter({ secret: 'Falc0n-Wr0ng' }).test()).ok, false);
  });

  void test('test() signs in and counts hosts', async () => {
    const result = await adapter().test();
    assert.equal(result.ok, true);
    assert.match(result.message, /hosts/);
  });
});
