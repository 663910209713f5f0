import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeCrowdStrike } from './fake-crowdstrike.ts';
import type { FakeCrowdStrike } from './fake-crowdstrike.ts';

void describe('fake CrowdStrike Falcon (hosts and Zero Trust Assessment)', () => {
  let fake: FakeCrowdStrike;
  let auth = '';
  const get = async (path: string): Promise<{ status: number; headers: Headers; body: { resources: unknown[]; meta: { pagination?: { total: number } } } }> => {
    const res = await fetch(`${fake.url}${path}`, { headers: { authorization: auth } });
    return { status: res.status, headers: res.headers, body: (await res.json()) as never };
  };
  before(async () => {
    fake = await startFakeCrowdStrike();
    fake.addHost({ serialNumber: 'CS1', score: 90 });
    fake.addHost({ serialNumber: 'CS2', score: undefined });
    fake.addHost({ serialNumber: 'CS3' });
    const res = await fetch(`${fake.url}/oauth2/token`, { method: 'POST', body: new URLSearchParams({ client_id: fake.clientId, client_secret: fake.clientSecret }) });
    assert.equal(res.status, 201);
    auth = `Bearer ${((await res.json()) as { access_token: string }).access_token}`;
  });
  after(() => fake.close());

  void test('a wrong client secret gets 401, and so does an API call without a token', async () => {
    const res = await fetch(`${fake.url}/oauth2/token`, { method: 'POST', body: new URLSearchParams({ client_id: fake.clientId, client_secret: 'bad' }) });
    assert.equal(res.status, 401);
    assert.equal((await fetch(`${fake.url}/devices/queries/devices/v1`)).status, 401);
  });

  void test('the FQL serial filter finds one host; an escaped quote stays inside; other filters are 400', async () => {
    const one = await get(`/devices/queries/devices/v1?${new URLSearchParams({ filter: "serial_number:'CS1'" }).toString()}`);
    assert.equal(one.body.resources.length, 1);
    const injected = await get(`/devices/queries/devices/v1?${new URLSearchParams({ filter: "serial_number:'CS1\\',platform_name:\\'Mac'" }).toString()}`);
    assert.equal(injected.body.resources.length, 0);
    assert.equal((await get(`/devices/queries/devices/v1?${new URLSearchParams({ filter: "serial_number:'CS1',platform_name:'Mac'" }).toString()}`)).status, 400);
  });

  void test('offset paging reports the total; details and scores by ids; no assessment is left out', async () => {
    const page = await get('/devices/queries/devices/v1?limit=2&offset=2');
    assert.equal(page.body.meta.pagination?.total, 3);
    assert.equal(page.body.resources.length, 1);
    const all = (await get('/devices/queries/devices/v1')).body.resources as string[];
    const ids = all.map((id) => `ids=${id}`).join('&');
    assert.equal((await get(`/devices/entities/devices/v2?${ids}`)).body.resources.length, 3);
    assert.equal((await get(`/zero-trust-assessment/entities/assessments/v1?${ids}`)).body.resources.length, 2);
  });

  void test('429 with X-RateLimit-RetryAfter once, and a score change shows in the next read', async () => {
    fake.rateLimitOnce(2, Date.now());
    const limited = await get('/devices/queries/devices/v1');
    assert.equal(limited.status, 429);
    assert.match(limited.headers.get('x-ratelimit-retryafter') ?? '', /^\d+$/);
    fake.setScore('CS2', 35);
    const cs2 = [...fake.hosts.values()].find((h) => h.serialNumber === 'CS2')!;
    const zta = await get(`/zero-trust-assessment/entities/assessments/v1?ids=${cs2.deviceId}`);
    assert.deepEqual((zta.body.resources[0] as { assessment: { overall: number } }).assessment.overall, 35);
  });
});
