import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeIntune } from './fake-intune.ts';
import type { FakeIntune } from './fake-intune.ts';

async function token(fake: FakeIntune, secret = fake.clientSecret): Promise<Response> {
  return fetch(`${fake.url}/${fake.tenantId}/oauth2/v2.0/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: fake.clientId, client_secret: secret, scope: `${fake.url}/.default` }),
  });
}

async function bearer(fake: FakeIntune): Promise<string> {
  const body = (await (await token(fake)).json()) as { access_token: string };
  return `Bearer ${body.access_token}`;
}

void describe('fake Intune (Graph managedDevices)', () => {
  let fake: FakeIntune;
  before(async () => {
    fake = await startFakeIntune({ defaultPageSize: 2 });
    for (const serial of ['S1', 'S2', 'S3', 'S4', 'S5']) fake.addDevice({ serialNumber: serial });
  });
  after(() => fake.close());

  void test('a wrong client secret gets 401 invalid_client and no token', async () => {
    const res = await token(fake, 'wrong');
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  });

  void test('managedDevices without a valid bearer token is 401', async () => {
    const res = await fetch(`${fake.url}/v1.0/deviceManagement/managedDevices`, { headers: { authorization: 'Bearer forged' } });
    assert.equal(res.status, 401);
  });

  void test('a serial filter finds the device and a quoted serial is one literal, not more query', async () => {
    const auth = await bearer(fake);
    const get = async (filter: string): Promise<{ status: number; value?: Array<{ serialNumber: string }> }> => {
      const res = await fetch(`${fake.url}/v1.0/deviceManagement/managedDevices?${new URLSearchParams({ $filter: filter }).toString()}`, { headers: { authorization: auth } });
      return { status: res.status, ...((await res.json()) as { value?: Array<{ serialNumber: string }> }) };
    };
    assert.deepEqual((await get("serialNumber eq 's3'")).value?.map((d) => d.serialNumber), ['S3']);
    assert.deepEqual((await get("serialNumber eq 'S3'' or serialNumber ne '''")).value, []);
    assert.equal((await get("serialNumber eq 'S3' or serialNumber ne ''")).status, 400);
  });

  void test('pages follow @odata.nextLink to the end', async () => {
    const auth = await bearer(fake);
    const seen: string[] = [];
    let url: string | undefined = `${fake.url}/v1.0/deviceManagement/managedDevices?$select=serialNumber`;
    while (url !== undefined) {
      const body = (await (await fetch(url, { headers: { authorization: auth } })).json()) as { value: Array<{ serialNumber: string }>; '@odata.nextLink'?: string };
      seen.push(...body.value.map((d) => d.serialNumber));
      url = body['@odata.nextLink'];
    }
    assert.deepEqual(seen, ['S1', 'S2', 'S3', 'S4', 'S5']);
  });

  void test('429 with Retry-After is answered once, then the request works', async () => {
    const auth = await bearer(fake);
    fake.rateLimit.once(2);
    const first = await fetch(`${fake.url}/v1.0/deviceManagement/managedDevices`, { headers: { authorization: auth } });
    assert.equal(first.status, 429);
    assert.equal(first.headers.get('retry-after'), '2');
    const second = await fetch(`${fake.url}/v1.0/deviceManagement/managedDevices`, { headers: { authorization: auth } });
    assert.equal(second.status, 200);
  });

  void test('setCompliance flips what the next read returns', async () => {
    const auth = await bearer(fake);
    fake.setCompliance('S2', 'noncompliant');
    const res = await fetch(`${fake.url}/v1.0/deviceManagement/managedDevices?${new URLSearchParams({ $filter: "serialNumber eq 'S2'" }).toString()}`, { headers: { authorization: auth } });
    assert.equal(((await res.json()) as { value: Array<{ complianceState: string }> }).value[0].complianceState, 'noncompliant');
  });
});
