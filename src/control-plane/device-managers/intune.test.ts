import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../lib/log.ts';
import { startFakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import type { FakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import { createIntuneAdapter } from './intune.ts';
import type { SecretRef } from '../../lib/spec/device-manager.ts';

void describe('Intune adapter against the fake Graph', () => {
  let fake: FakeIntune;
  const sleeps: number[] = [];
  const resolved: SecretRef[] = [];
  let now = Date.parse('2026-11-27T12:00:00Z');
  const logLines: string[] = [];

  function adapter(overrides: { secret?: string; graphUrl?: string } = {}) {
    const logger = createLogger({
      name: 'mdm-test',
      level: 'trace',
      destination: new Writable({
        write(chunk: Buffer, _enc, cb) {
          logLines.push(chunk.toString());
          cb();
        },
      }),
    });
    return createIntuneAdapter(
      {
        type: 'intune',
        syncInterval: '20m',
        tenantId: fake.tenantId,
        clientId: fake.clientId,
        clientSecret: { env: 'INTUNE_SECRET' },
        graphUrl: overrides.graphUrl ?? fake.url,
        loginUrl: fake.url,
      },
      {
        name: 'corp',
        pageSize: 4,
        clock: { now: () => now },
        logger,
        sleep: (ms) => {
          sleeps.push(ms);
          return Promise.resolve();
        },
        resolveSecret: (ref) => {
          resolved.push(ref);
          return Promise.resolve(overrides.secret ?? fake.clientSecret);
        },
      },
    );
  }

  before(async () => {
    fake = await startFakeIntune({ defaultPageSize: 3 });
    fake.addDevice({ serialNumber: 'C02XK1', complianceState: 'compliant', operatingSystem: 'macOS', osVersion: '15.1', lastSyncDateTime: '2026-11-27T11:00:00Z' });
    fake.addDevice({ serialNumber: 'PF3ABC', complianceState: 'noncompliant' });
    fake.addDevice({ serialNumber: 'UNKNOWN1', complianceState: 'unknown' });
    fake.addDevice({ serialNumber: 'GRACE1', complianceState: 'inGracePeriod' });
    fake.addDevice({ serialNumber: 'RETIRED1', managementState: 'retirePending' });
    for (let i = 0; i < 6; i++) fake.addDevice({ serialNumber: `BULK${i}` });
  });
  after(() => fake.close());
  beforeEach(() => {
    sleeps.length = 0;
  });

  void test('a lookup by serial returns the managed device and its compliance', async () => {
    const state = await adapter().lookup('C02XK1');
    assert.deepEqual(state, { serial: 'C02XK1', managed: true, compliant: true, os: 'macOS 15.1', lastSeen: '2026-11-27T11:00:00.000Z', source: 'intune:corp' });
  });

  void test('complianceState maps to compliant, not compliant, or unknown; retiring devices are unmanaged', async () => {
    const a = adapter();
    assert.equal((await a.lookup('PF3ABC'))?.compliant, false);
    assert.equal((await a.lookup('UNKNOWN1'))?.compliant, undefined);
    assert.equal((await a.lookup('GRACE1'))?.compliant, true);
    assert.equal((await a.lookup('RETIRED1'))?.managed, false);
  });

  void test('an unknown serial is undefined', async () => {
    assert.equal(await adapter().lookup('NOPE123'), undefined);
  });

  void test('DT-04 a non-compliant to compliant flip is visible in the next lookup', async () => {
    const a = adapter();
    fake.addDevice({ serialNumber: 'FLIP01', complianceState: 'noncompliant' });
    assert.equal((await a.lookup('FLIP01'))?.compliant, false);
    fake.setCompliance('FLIP01', 'compliant');
    assert.equal((await a.lookup('FLIP01'))?.compliant, true);
    fake.setCompliance('FLIP01', 'noncompliant');
    assert.equal((await a.lookup('FLIP01'))?.compliant, false);
  });

  void test('a serial with a quote cannot change the OData query: it is refused before any request', async () => {
    const before = fake.requests.length;
    await assert.rejects(adapter().lookup("C02XK1' or serialNumber ne '"), { code: 'MDM_INVALID_SERIAL' });
    await assert.rejects(adapter().lookup(''), { code: 'MDM_INVALID_SERIAL' });
    await assert.rejects(adapter().lookup('x'.repeat(200)), { code: 'MDM_INVALID_SERIAL' });
    assert.equal(fake.requests.length, before);
  });

  void test('the serial goes into $filter as an OData string literal', async () => {
    await adapter().lookup('C02XK1');
    const last = fake.requests.at(-1)!;
    assert.equal(last.url.searchParams.get('$filter'), "serialNumber eq 'C02XK1'");
    assert.match(last.url.searchParams.get('$select') ?? '', /complianceState/);
  });

  void test('a sync lists every device over several pages', async () => {
    const serials: string[] = [];
    for await (const state of adapter().list()) serials.push(state.serial);
    assert.equal(serials.length, fake.devices.size);
    assert.ok(serials.includes('BULK5') && serials.includes('C02XK1'));
    const pages = fake.requests.filter((r) => r.url.pathname.endsWith('/managedDevices') && !r.url.searchParams.has('$filter'));
    assert.ok(pages.length >= 3);
  });

  void test('the token is fetched once and reused until it nears expiry', async () => {
    const a = adapter();
    const before = fake.tokens.issued();
    await a.lookup('C02XK1');
    await a.lookup('PF3ABC');
    assert.equal(fake.tokens.issued(), before + 1);
    now += 3600_000;
    await a.lookup('C02XK1');
    assert.equal(fake.tokens.issued(), before + 2);
  });

  void test('a token the API no longer accepts is replaced once', async () => {
    const a = adapter();
    await a.lookup('C02XK1');
    fake.tokens.expireAll();
    assert.equal((await a.lookup('C02XK1'))?.compliant, true);
  });

  void test('429 with Retry-After is waited out and the lookup succeeds', async () => {
    fake.rateLimit.once(7);
    assert.equal((await adapter().lookup('C02XK1'))?.compliant, true);
    assert.deepEqual(sleeps, [7000]);
  });

  void test('a Retry-After beyond the limit fails as rate-limited (retryable) without waiting', async () => {
    fake.rateLimit.once(3600);
    await assert.rejects(adapter().lookup('C02XK1'), { code: 'MDM_RATE_LIMITED', retryable: true });
    assert.deepEqual(sleeps, []);
  });

  void test('CP-11 a wrong secret fails as auth failed; the secret is resolved by reference and appears in no error or log', async () => {
    resolved.length = 0;
    const wrong = 'Wr0ng-s3cret-value';
    const err = await adapter({ secret: wrong }).lookup('C02XK1').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((err as { code?: string }).code, 'MDM_AUTH_FAILED');
    assert.deepEqual(resolved, [{ env: 'INTUNE_SECRET' }]);
    const text = `${String(err)} ${JSON.stringify(err)} ${logLines.join('')}`;
    assert.doesNotMatch(text, /Wr0ng-s3cret-value|intune-secret-value/);
    const result = await adapter({ secret: wrong }).test();
    assert.equal(result.ok, false);
    assert.doesNotMatch(result.message, /Wr0ng/);
  });

  void test('test() signs in and reads one device', async () => {
    const result = await adapter().test();
    assert.equal(result.ok, true, result.message);
  });

  void test('a next-page link to another origin is refused (the token never goes elsewhere)', async () => {
    // The fake builds nextLinks from its own address; asking through "localhost" makes them foreign.
    const a = adapter({ graphUrl: fake.url.replace('127.0.0.1', 'localhost') });
    await assert.rejects(
      (async () => {
        for await (const _ of a.list()) void _;
      })(),
      { code: 'MDM_BAD_RESPONSE' },
    );
  });
});
