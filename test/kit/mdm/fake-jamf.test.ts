import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeJamf } from './fake-jamf.ts';
import type { FakeJamf } from './fake-jamf.ts';

void describe('fake Jamf Pro (computers-inventory)', () => {
  let fake: FakeJamf;
  let auth = '';
  const inventory = async (query: string): Promise<{ status: number; body: { totalCount?: number; results?: Array<{ hardware: { serialNumber: string } | null; general: unknown }> } }> => {
    const res = await fetch(`${fake.url}/api/v1/computers-inventory?${query}`, { headers: { authorization: auth } });
    return { status: res.status, body: (await res.json()) as never };
  };
  before(async () => {
    fake = await startFakeJamf();
    for (const serial of ['J1', 'J2', 'J3', 'J4', 'J5']) fake.addComputer({ serialNumber: serial });
    const res = await fetch(`${fake.url}/api/oauth/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'client_credentials', client_id: fake.clientId, client_secret: fake.clientSecret }) });
    auth = `Bearer ${((await res.json()) as { access_token: string }).access_token}`;
  });
  after(() => fake.close());

  void test('a wrong client secret gets 401 and the inventory refuses a missing token', async () => {
    const res = await fetch(`${fake.url}/api/oauth/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'client_credentials', client_id: fake.clientId, client_secret: 'nope' }) });
    assert.equal(res.status, 401);
    assert.equal((await fetch(`${fake.url}/api/v1/computers-inventory`)).status, 401);
  });

  void test('the RSQL serial filter matches one computer; an escaped quote stays inside the literal; other filters are 400', async () => {
    const one = await inventory(new URLSearchParams({ section: 'HARDWARE', filter: 'hardware.serialNumber=="J3"' }).toString());
    assert.deepEqual(one.body.results?.map((c) => c.hardware?.serialNumber), ['J3']);
    const injected = await inventory(new URLSearchParams({ section: 'HARDWARE', filter: 'hardware.serialNumber=="J3\\",general.name==\\"x"' }).toString());
    assert.deepEqual(injected.body.results, []);
    assert.equal((await inventory(new URLSearchParams({ filter: 'hardware.serialNumber=="J3",general.name=="x"' }).toString())).status, 400);
  });

  void test('pages by page and page-size, with the total; unrequested sections are null', async () => {
    const p0 = await inventory('section=HARDWARE&page=0&page-size=2');
    const p2 = await inventory('section=HARDWARE&page=2&page-size=2');
    assert.equal(p0.body.totalCount, 5);
    assert.deepEqual(p0.body.results?.map((c) => c.hardware?.serialNumber), ['J1', 'J2']);
    assert.deepEqual(p2.body.results?.map((c) => c.hardware?.serialNumber), ['J5']);
    assert.equal(p0.body.results?.[0].general, null);
  });

  void test('429 with Retry-After once, and group and managed flips show in the next read', async () => {
    fake.rateLimit.once(1);
    assert.equal((await inventory('section=HARDWARE')).status, 429);
    fake.setManaged('J2', false);
    fake.setGroup('J2', 'Compliant', true);
    const res = await fetch(`${fake.url}/api/v1/computers-inventory?section=GENERAL&section=GROUP_MEMBERSHIPS&filter=${encodeURIComponent('hardware.serialNumber=="J2"')}`, { headers: { authorization: auth } });
    const body = (await res.json()) as { results: Array<{ general: { remoteManagement: { managed: boolean } }; groupMemberships: Array<{ groupName: string }> }> };
    assert.equal(body.results[0].general.remoteManagement.managed, false);
    assert.deepEqual(body.results[0].groupMemberships.map((g) => g.groupName), ['Compliant']);
  });
});
