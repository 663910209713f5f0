import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeServerCert, makeTestCa } from '../../../test/kit/certs.ts';
import { startJsonServer } from '../../../test/kit/mdm/common.ts';
import type { JsonServer } from '../../../test/kit/mdm/common.ts';
import { startFakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import type { FakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import { deviceManagerSpec } from '../../lib/spec/device-manager.ts';
import { createDeviceManagerAdapter, createMdmFetch, managedAdapter } from './index.ts';
import { testDeps } from './deps.testing.ts';

void describe('device-manager adapters from specs, over TLS with a private CA', () => {
  let fake: FakeIntune;
  let caPem = '';
  let otherCaPem = '';
  const t = testDeps();
  before(async () => {
    const ca = await makeTestCa({ commonName: 'MDM Test CA' });
    const other = await makeTestCa({ commonName: 'Unrelated CA' });
    caPem = ca.certPem;
    otherCaPem = other.certPem;
    const cert = await makeServerCert(ca, { ipAddresses: ['127.0.0.1'] });
    fake = await startFakeIntune({ tls: { certPem: cert.certPem, keyPem: cert.keyPem } });
    fake.addDevice({ serialNumber: 'TLS001', complianceState: 'compliant' });
  });
  after(() => fake.close());

  function spec(ca: string) {
    return deviceManagerSpec.parse({ type: 'intune', tenantId: fake.tenantId, clientId: fake.clientId, clientSecret: { env: 'INTUNE' }, graphUrl: fake.url, loginUrl: fake.url, caPem: ca, syncInterval: '45m' });
  }

  void test('a spec with caPem reaches a device manager on that private CA', async () => {
    const adapter = createDeviceManagerAdapter('corp', spec(caPem), t.deps('ignored', fake.clientSecret));
    try {
      assert.equal((await adapter.lookup('TLS001'))?.compliant, true);
      assert.equal(adapter.source, 'intune:corp');
    } finally {
      adapter.close();
    }
  });

  void test('a device manager whose certificate another CA signed is unreachable, and test() says so', async () => {
    const adapter = createDeviceManagerAdapter('corp', spec(otherCaPem), t.deps('ignored', fake.clientSecret));
    try {
      await assert.rejects(adapter.lookup('TLS001'), { code: 'MDM_UNREACHABLE' });
      const result = await adapter.test();
      assert.equal(result.ok, false);
      assert.match(result.message, /could not be reached/);
    } finally {
      adapter.close();
    }
  });

  void test('managedAdapter carries the spec syncInterval in milliseconds', () => {
    const entry = managedAdapter('corp', spec(caPem), t.deps('ignored', fake.clientSecret));
    entry.adapter.close();
    assert.equal(entry.intervalMs, 45 * 60_000);
    assert.equal(entry.name, 'corp');
  });
});

void describe('createMdmFetch', () => {
  let server: JsonServer;
  before(async () => {
    server = await startJsonServer((req) => {
      if (req.url.pathname === '/redirect') return { status: 302, headers: { location: 'http://example.com/' } };
      return { status: 200, body: { method: req.method, body: req.body, type: req.headers['content-type'] ?? null } };
    });
  });
  after(() => server.close());

  void test('sends the method, headers and string body, and never follows a redirect', async () => {
    const { fetch: f, close } = createMdmFetch();
    try {
      const res = await f(`${server.url}/echo`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' });
      assert.deepEqual(await res.json(), { method: 'POST', body: 'a=1', type: 'application/x-www-form-urlencoded' });
      const redirect = await f(`${server.url}/redirect`);
      assert.equal(redirect.status, 302);
      await redirect.body?.cancel();
    } finally {
      close();
    }
  });

  void test('refuses other protocols', async () => {
    const { fetch: f, close } = createMdmFetch();
    try {
      await assert.rejects(f('file:///etc/passwd'), TypeError);
    } finally {
      close();
    }
  });
});
