import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeHttpMdm } from './fake-http.ts';
import type { FakeHttpMdm } from './fake-http.ts';

void describe('fake JSON device-lookup API', () => {
  let fake: FakeHttpMdm;
  before(async () => {
    fake = await startFakeHttpMdm();
    fake.addDevice({ serial: 'H 1/2' });
  });
  after(() => fake.close());

  void test('a wrong or missing key is 401; an unknown serial is 404; a known one (URL-encoded) is 200', async () => {
    assert.equal((await fetch(`${fake.url}/api/devices/x`, { headers: { 'x-api-key': 'nope' } })).status, 401);
    assert.equal((await fetch(`${fake.url}/api/devices/x`)).status, 401);
    assert.equal((await fetch(`${fake.url}/api/devices/x`, { headers: { 'x-api-key': fake.apiKey } })).status, 404);
    const res = await fetch(`${fake.url}/api/devices/${encodeURIComponent('H 1/2')}`, { headers: { 'x-api-key': fake.apiKey } });
    assert.equal(((await res.json()) as { device: { serial: string } }).device.serial, 'H 1/2');
  });

  void test('429 once, then compliance flips show', async () => {
    fake.rateLimit.once(1);
    assert.equal((await fetch(`${fake.url}/api/devices/x`, { headers: { 'x-api-key': fake.apiKey } })).status, 429);
    fake.setCompliance('H 1/2', 'noncompliant');
    const res = await fetch(`${fake.url}/api/devices/${encodeURIComponent('H 1/2')}`, { headers: { 'x-api-key': fake.apiKey } });
    assert.equal(((await res.json()) as { device: { compliance: string } }).device.compliance, 'noncompliant');
  });
});
