import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeHttpMdm } from '../../../test/kit/mdm/fake-http.ts';
import type { FakeHttpMdm } from '../../../test/kit/mdm/fake-http.ts';
import { deviceManagerSpec } from '../../lib/spec/device-manager.ts';
import type { HttpManagerSpec } from '../../lib/spec/device-manager.ts';
import { createHttpAdapter, parseJsonPath, readJsonPath } from './generic-http.ts';
import { leakSurface, testDeps } from './deps.testing.ts';
import type { DeviceManagerAdapter } from './types.ts';

void describe('generic HTTP adapter against a fake JSON lookup', () => {
  let fake: FakeHttpMdm;
  const t = testDeps();
  function adapter(options: { secret?: string; url?: string } = {}): DeviceManagerAdapter {
    const spec = deviceManagerSpec.parse({
      type: 'http',
      url: options.url ?? `${fake.url}/api/devices/{serial}`,
      headers: { 'X-Api-Key': { env: 'MDM_KEY' }, Accept: { value: 'application/json' } },
      jsonPaths: { compliant: '$.device.compliance', mdmPresent: '$.device.enrolled', score: '$.device.riskScore', os: 'device.os', lastSeen: 'device.lastCheckIn' },
    }) as HttpManagerSpec;
    return createHttpAdapter(spec, t.deps('custom', options.secret ?? fake.apiKey));
  }
  before(async () => {
    fake = await startFakeHttpMdm();
    fake.addDevice({ serial: 'LNX-001' });
    fake.addDevice({ serial: 'LNX-002', enrolled: false, compliance: 'noncompliant', riskScore: 'high' });
    fake.addDevice({ serial: 'LNX 3/4', riskScore: 250 });
  });
  after(() => fake.close());

  void test('a lookup reads every configured path', async () => {
    assert.deepEqual(await adapter().lookup('LNX-001'), { serial: 'LNX-001', managed: true, compliant: true, score: 10, os: 'Ubuntu 24.04', lastSeen: '2026-11-27T11:00:00.000Z', source: 'http:custom' });
  });

  void test('DT-07 malformed values count against the device: not enrolled, other compliance text, a non-numeric or out-of-range score', async () => {
    const two = await adapter().lookup('LNX-002');
    assert.equal(two?.managed, false);
    assert.equal(two?.compliant, false);
    assert.equal(two?.score, undefined);
    assert.equal((await adapter().lookup('LNX 3/4'))?.score, undefined);
  });

  void test('the serial is URL-encoded into the template; an unknown serial is undefined', async () => {
    assert.equal((await adapter().lookup('LNX 3/4'))?.serial, 'LNX 3/4');
    assert.equal(fake.requests.at(-1)?.url.pathname, '/api/devices/LNX%203%2F4');
    assert.equal(await adapter().lookup('NOPE'), undefined);
  });

  void test('DT-04 a compliance flip is visible in the next lookup', async () => {
    const a = adapter();
    fake.setCompliance('LNX-001', 'noncompliant');
    assert.equal((await a.lookup('LNX-001'))?.compliant, false);
    fake.setCompliance('LNX-001', 'compliant');
    assert.equal((await a.lookup('LNX-001'))?.compliant, true);
  });

  void test('429 with Retry-After is honoured', async () => {
    t.sleeps.length = 0;
    fake.rateLimit.once(2);
    assert.equal((await adapter().lookup('LNX-001'))?.managed, true);
    assert.deepEqual(t.sleeps, [2000]);
  });

  void test('CP-11 a wrong key fails as auth failed; the header secret is resolved by reference and never leaks', async () => {
    t.resolved.length = 0;
    const err = await adapter({ secret: 'Wr0ng-Api-Key' }).lookup('LNX-001').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((err as { code?: string }).code, 'MDM_AUTH_FAILED');
    assert.deepEqual(t.resolved, [{ env: 'MDM_KEY' }]);
    assert.doesNotMatch(leakSurface(err, t.logLines), /Wr0ng-Api-Key|http-mdm-api-key/);
    assert.equal((await adapter({ secret: 'Wr0ng-Api-Key' }).test()).ok, false);
  });

  void test('test() accepts a 404 for the test serial', async () => {
    assert.equal((await adapter().test()).ok, true);
  });

  void test('a quote in a serial is refused; list() yields nothing (no batch listing)', async () => {
    await assert.rejects(adapter().lookup("a'b"), { code: 'MDM_INVALID_SERIAL' });
    const listed: unknown[] = [];
    for await (const s of adapter().list()) listed.push(s);
    assert.deepEqual(listed, []);
    assert.equal(adapter().canList, false);
  });

  void test('JSON paths read names and indexes, and nothing inherited', () => {
    assert.deepEqual(parseJsonPath('$.a.b[2].c'), ['a', 'b', 2, 'c']);
    assert.deepEqual(parseJsonPath('a'), ['a']);
    assert.equal(readJsonPath({ a: { b: [0, 1, { c: 'x' }] } }, parseJsonPath('$.a.b[2].c')), 'x');
    assert.equal(readJsonPath({ a: [] }, parseJsonPath('a[0]')), undefined);
    assert.equal(readJsonPath({}, parseJsonPath('constructor')), undefined);
    assert.equal(readJsonPath({ a: 'str' }, parseJsonPath('a.length')), undefined);
  });
});
