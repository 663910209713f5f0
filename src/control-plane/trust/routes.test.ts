/**
 * The trust admin routes through the real control plane (inject), with device trust running on fake
 * timers and a fake Intune for the device-manager routes.
 */
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { startFakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import { fakeTimers } from '../device-managers/fake-timers.testing.ts';
import { createControlPlane } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { DeviceRecord, Store } from '../store/index.ts';
import { createDeviceTrust } from './index.ts';
import type { DeviceTrustService } from './index.ts';

const ca = await CertificateAuthority.create({ commonName: 'trust routes test CA' });
const actor = 'user:test';
const MIN = 60_000;

interface Harness {
  store: Store;
  admin: string;
  viewer: string;
  device: DeviceRecord;
  call(method: string, url: string, token: string | undefined, body?: unknown): Promise<LightMyRequestResponse>;
  advance(ms: number): Promise<void>;
  secret: string;
  bodies: string[];
}

async function harness(t: TestContext, options: { trust?: boolean } = {}): Promise<Harness> {
  const ft = fakeTimers(Date.now());
  const store = await openStore({ url: ':memory:', clock: ft.clock });
  t.after(() => store.close());
  const intune = await startFakeIntune();
  t.after(() => intune.close());
  let trust: DeviceTrustService | undefined;
  if (options.trust !== false) {
    trust = createDeviceTrust({ store, clock: ft.clock, timers: ft.timers, resolveSecret: () => Promise.resolve(intune.clientSecret) });
  }
  const cp = await createControlPlane({ store, ca, publicUrl: 'https://cp.example.com:8440', clock: ft.clock, ...(trust === undefined ? {} : { trust }) });
  t.after(() => cp.close());
  const admin = (await store.createApiToken({ name: 'admin', scope: 'admin' }, { actor })).token;
  const viewer = (await store.createApiToken({ name: 'viewer', scope: 'viewer' }, { actor })).token;
  await store.putObject({ kind: 'TrustProfile', name: 'all', spec: { appliesTo: { platforms: [], ownership: [], groups: [] }, staleAfter: '1d', factors: [{ type: 'firewall', effect: 'Low' }] } }, { actor });
  await store.putObject({ kind: 'DeviceManager', name: 'intune', spec: { type: 'intune', tenantId: intune.tenantId, clientId: intune.clientId, clientSecret: { env: 'INTUNE_SECRET' }, graphUrl: intune.url, loginUrl: intune.url } }, { actor });
  const user = await store.createUser({ name: 'alice' }, { actor });
  const device = await store.registerDevice({ userId: user.id, platform: 'linux' }, { actor });
  await store.recordPosture(device.id, { factors: { firewall: true }, at: new Date(ft.clock.now()).toISOString() });
  const bodies: string[] = [];
  const settle = async (): Promise<void> => {
    await ft.advance(0);
    await trust?.idle();
  };
  await settle();
  return {
    store,
    admin,
    viewer,
    device,
    secret: intune.clientSecret,
    bodies,
    async call(method, url, token, body) {
      const headers: Record<string, string> = {};
      if (token !== undefined) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const response = await cp.app.inject({ method: method as 'GET', url, headers, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
      bodies.push(response.body);
      await settle();
      return response;
    },
    async advance(ms) {
      await ft.advance(ms);
      await trust?.idle();
    },
  };
}

void describe('trust admin routes', () => {
  void test('an admin caps a device with an override and lifts it; the answer shows the new verdict; viewers may not; bad input is 400', async (t) => {
    const h = await harness(t);
    const id = h.device.id;
    const rescored = await h.call('POST', `/api/v1/devices/${id}/rescore`, h.admin);
    assert.equal(rescored.statusCode, 200, rescored.body);
    assert.equal(rescored.json<{ trust: { level: string } }>().trust.level, 'High');

    const capped = await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.admin, { source: 'security-team', maxLevel: 'Low', reason: 'incident 4711' });
    assert.equal(capped.statusCode, 200, capped.body);
    const body = capped.json<{ trust: { level: string; reasons: string[]; explanation: string }; trustOverrides: Array<{ source: string; setBy: string }> }>();
    assert.equal(body.trust.level, 'Low');
    assert.deepEqual(body.trust.reasons, ['override-security-team']);
    assert.match(body.trust.explanation, /incident 4711/);
    assert.deepEqual(body.trustOverrides.map((o) => o.source), ['security-team']);
    assert.match(String(body.trustOverrides[0]?.setBy), /^token:/, 'the override names the admin who set it');

    const expiring = await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.admin, { source: 'siem', maxLevel: 'AlwaysDeny', reason: 'beaconing', expiresAt: new Date(Date.now() + 30 * MIN).toISOString() });
    assert.equal(expiring.json<{ trust: { level: string } }>().trust.level, 'AlwaysDeny');
    await h.advance(31 * MIN);
    assert.equal((await h.store.getDevice(id))?.trust?.level, 'Low', 'the expired override is lifted on time');

    assert.equal((await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.viewer, { source: 'x', maxLevel: 'Low', reason: 'r' })).statusCode, 403);
    assert.equal((await h.call('PUT', `/api/v1/devices/${id}/trust-override`, undefined, { source: 'x', maxLevel: 'Low', reason: 'r' })).statusCode, 401);
    assert.equal((await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.admin, { source: 'x', maxLevel: 'Lowest', reason: 'r' })).statusCode, 400);
    assert.equal((await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.admin, { source: 'two words', maxLevel: 'Low', reason: 'r' })).statusCode, 400);
    assert.equal((await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.admin, { source: 'x', maxLevel: 'Low', reason: 'r', expiresAt: '2001-01-01T00:00:00Z' })).statusCode, 400);
    assert.equal((await h.call('PUT', `/api/v1/devices/${id}/trust-override`, h.admin, { source: 'x', maxLevel: 'Low', reason: 'r', extra: 1 })).statusCode, 400);
    assert.equal((await h.call('PUT', '/api/v1/devices/no-such-device/trust-override', h.admin, { source: 'x', maxLevel: 'Low', reason: 'r' })).statusCode, 404);

    assert.equal((await h.call('DELETE', `/api/v1/devices/${id}/trust-override/security-team`, h.viewer)).statusCode, 403);
    const lifted = await h.call('DELETE', `/api/v1/devices/${id}/trust-override/security-team`, h.admin);
    assert.equal(lifted.statusCode, 200, lifted.body);
    assert.equal(lifted.json<{ trust: { level: string } }>().trust.level, 'High');
    assert.equal((await h.call('DELETE', `/api/v1/devices/${id}/trust-override/security-team`, h.admin)).statusCode, 404);
    assert.equal((await h.call('POST', `/api/v1/devices/${id}/rescore`, h.viewer)).statusCode, 403);
    assert.equal((await h.call('POST', '/api/v1/devices/no-such-device/rescore', h.admin)).statusCode, 404);

    const audit = (await h.store.queryAuditEvents({ kind: 'Device', name: id })).events.map((e) => e.action);
    assert.ok(audit.includes('trust-override') && audit.includes('trust-override-clear'));
  });

  void test('CP-11 device-manager status (read) and test (write) answer without a secret', async (t) => {
    const h = await harness(t);
    const status = await h.call('GET', '/api/v1/device-managers/status', h.viewer);
    assert.equal(status.statusCode, 200, status.body);
    const items = status.json<{ items: Array<{ manager: string; valid: boolean; failures: number; lastSuccessAt?: string }> }>().items;
    assert.deepEqual(items.map((i) => [i.manager, i.valid, i.failures]), [['intune', true, 0]]);
    assert.equal(typeof items[0]?.lastSuccessAt, 'string');

    assert.equal((await h.call('POST', '/api/v1/device-managers/intune/test', h.viewer)).statusCode, 403);
    const tested = await h.call('POST', '/api/v1/device-managers/intune/test', h.admin);
    assert.equal(tested.statusCode, 200, tested.body);
    assert.equal(tested.json<{ ok: boolean }>().ok, true);
    assert.equal((await h.call('POST', '/api/v1/device-managers/nope/test', h.admin)).statusCode, 404);
    for (const body of h.bodies) assert.ok(!body.includes(h.secret), 'no response carries the device manager\'s secret');
  });

  void test('without device trust running, overrides are still stored, and rescoring and device managers answer 503', async (t) => {
    const h = await harness(t, { trust: false });
    const capped = await h.call('PUT', `/api/v1/devices/${h.device.id}/trust-override`, h.admin, { source: 'security-team', maxLevel: 'Low', reason: 'incident' });
    assert.equal(capped.statusCode, 200, capped.body);
    assert.equal(capped.json<{ trustOverrides: unknown[] }>().trustOverrides.length, 1);
    const rescore = await h.call('POST', `/api/v1/devices/${h.device.id}/rescore`, h.admin);
    assert.equal(rescore.statusCode, 503);
    assert.equal(rescore.json<{ error: { code: string } }>().error.code, 'TRUST_UNAVAILABLE');
    assert.equal((await h.call('GET', '/api/v1/device-managers/status', h.admin)).statusCode, 503);
  });
});
