/**
 * The console's API additions on a real control plane (in-memory SQLite, API tokens, app.inject):
 * the role preview, the events `reason` filter and JSON-lines exports, and users' `lastSeen`.
 */
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { newEventId } from '../../lib/audit/index.ts';
import type { AccessEvent } from '../../lib/audit/index.ts';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { EXPORT_MAX } from '../api/events.ts';
import { createControlPlane } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { PREVIEW_CAP } from './preview.ts';

const ca = await CertificateAuthority.create({ commonName: 'preview test CA' });

interface Harness {
  store: Store;
  admin: string;
  viewer: string;
  call(method: string, url: string, options?: { token?: string; body?: unknown }): Promise<LightMyRequestResponse>;
}

async function start(t: TestContext): Promise<Harness> {
  const store = await openStore({ url: ':memory:' });
  t.after(() => store.close());
  const cp = await createControlPlane({ store, ca, publicUrl: 'https://cp.example.com:8440', authFailures: { burst: 10_000 } });
  t.after(() => cp.close());
  const admin = (await store.createApiToken({ name: 'admin', scope: 'admin' }, { actor: 'test' })).token;
  const viewer = (await store.createApiToken({ name: 'viewer', scope: 'viewer' }, { actor: 'test' })).token;
  return {
    store,
    admin,
    viewer,
    call: (method, url, o = {}) => cp.app.inject({
      method: method as 'GET',
      url,
      headers: { authorization: `Bearer ${o.token ?? admin}`, ...(o.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(o.body === undefined ? {} : { payload: JSON.stringify(o.body) }),
    }),
  };
}

async function seedDirectory(store: Store): Promise<Record<string, string>> {
  const ids: Record<string, string> = {};
  const user = async (name: string, groups: string[], email: string | null, disabled = false): Promise<string> => {
    ids[name] = (await store.createUser({ name, groups, email, disabled }, { actor: 'test' })).id;
    return ids[name];
  };
  await user('alice', ['eng'], 'alice@example.com');
  await user('bob', ['eng', 'ops'], null);
  await user('carol', ['sales'], 'Carol@Example.com');
  await user('dan', ['eng'], null, true);
  const device = async (key: string, userId: string, platform: string, ownership: string, serial: string | null, level: string, banned = false): Promise<void> => {
    const d = await store.registerDevice({ userId, platform, ownership, serial, hostname: key }, { actor: 'test' });
    await store.updateDevice(d.id, { trust: { level, reasons: [] } }, { actor: 'test' });
    if (banned) await store.banDevice(d.id, { actor: 'test' });
    ids[key] = d.id;
  };
  await device('alice-mac', ids.alice ?? '', 'macos', 'corporate-dedicated', 'C02ABC', 'High');
  await device('alice-phone', ids.alice ?? '', 'ios', 'employee-owned', null, 'Low');
  await device('bob-linux', ids.bob ?? '', 'linux', 'corporate-dedicated', 'SN-BOB', 'Medium', true);
  await device('carol-win', ids.carol ?? '', 'windows', 'corporate-shared', 'SN-CAROL', 'High');
  return ids;
}

interface Preview {
  users: Array<{ name: string; disabled: boolean }>;
  devices: Array<{ id: string; user: string | null; hostname: string | null; platform: string; trustLevel: string | null; banned: boolean }>;
  total: { users: number; devices: number };
}

void describe('POST /api/v1/roles/preview', () => {
  void test('lists the users and devices a role spec matches now, with matchRole semantics', async (t) => {
    const h = await start(t);
    await seedDirectory(h.store);
    const preview = async (spec: unknown, token?: string): Promise<Preview> => {
      const response = await h.call('POST', '/api/v1/roles/preview', { body: { spec }, ...(token === undefined ? {} : { token }) });
      assert.equal(response.statusCode, 200, response.body);
      return response.json<Preview>();
    };
    const eng = await preview({ users: { groups: ['eng'] } });
    assert.deepEqual(eng.users.map((u) => [u.name, u.disabled]), [['alice', false], ['bob', false], ['dan', true]]);
    assert.deepEqual(eng.devices.map((d) => d.hostname), ['alice-mac', 'alice-phone', 'bob-linux']);
    assert.deepEqual(eng.total, { users: 3, devices: 3 });
    assert.equal(eng.devices.find((d) => d.hostname === 'bob-linux')?.banned, true);
    assert.equal(eng.devices.find((d) => d.hostname === 'alice-mac')?.trustLevel, 'High');
    assert.equal(eng.devices.find((d) => d.hostname === 'alice-mac')?.user, 'alice');

    const corporateEng = await preview({ users: { groups: ['eng'] }, devices: { ownership: ['corporate-dedicated'], platforms: ['macos', 'linux'] } });
    assert.deepEqual(corporateEng.users.map((u) => u.name), ['alice', 'bob', 'dan'], 'users are matched on their requirements alone');
    assert.deepEqual(corporateEng.devices.map((d) => d.hostname), ['alice-mac', 'bob-linux']);

    const byEmail = await preview({ users: { emails: ['carol@example.com'] } });
    assert.deepEqual(byEmail.users.map((u) => u.name), ['carol'], 'emails compare case-insensitively');
    const bySerial = await preview({ users: { groups: ['eng'] }, devices: { serialNumbers: ['c02abc'] } });
    assert.deepEqual(bySerial.devices.map((d) => d.hostname), ['alice-mac']);
    const groupsExact = await preview({ users: { groups: ['Eng'] } });
    assert.deepEqual(groupsExact.total, { users: 0, devices: 0 }, 'groups compare exactly');
    const anyone = await preview({}, h.viewer);
    assert.deepEqual(anyone.total, { users: 4, devices: 4 }, 'an empty role matches everyone; a viewer may preview');
    const mdm = await preview({ devices: { mdmPresent: true } });
    assert.deepEqual(mdm.devices, [], 'no device reports an MDM here');
  });

  void test('an invalid spec is 422 SPEC_INVALID naming the fields; nothing is stored', async (t) => {
    const h = await start(t);
    const response = await h.call('POST', '/api/v1/roles/preview', { body: { spec: { users: { groups: 'eng', emails: ['not-an-email'] }, devices: { platforms: ['beos'] }, extra: 1 } } });
    assert.equal(response.statusCode, 422, response.body);
    const error = response.json<{ error: { code: string; details: { problems: Array<{ path: string; message: string }> } } }>().error;
    assert.equal(error.code, 'SPEC_INVALID');
    const paths = error.details.problems.map((p) => p.path).sort();
    assert.deepEqual(paths, ['spec.devices.platforms[0]', 'spec.extra', 'spec.users.emails[0]', 'spec.users.groups']);
    assert.equal((await h.store.listObjects('Role')).length, 0);
    assert.equal((await h.call('POST', '/api/v1/roles/preview', { body: {} })).statusCode, 400);
    assert.equal((await h.call('POST', '/api/v1/roles/preview', { body: { spec: {}, name: 'x' } })).statusCode, 400);
  });

  void test('each list is capped at 200 with the full count in total; without a credential 401', async (t) => {
    const h = await start(t);
    for (let i = 0; i < PREVIEW_CAP + 5; i++) await h.store.createUser({ name: `u${String(i).padStart(3, '0')}`, groups: ['many'], email: null }, { actor: 'test' });
    const response = await h.call('POST', '/api/v1/roles/preview', { body: { spec: { users: { groups: ['many'] } } } });
    const preview = response.json<Preview>();
    assert.equal(preview.users.length, PREVIEW_CAP);
    assert.equal(preview.total.users, PREVIEW_CAP + 5);
    assert.equal(preview.users[0]?.name, 'u000');
    const anonymous = await h.call('POST', '/api/v1/roles/preview', { token: 'cwat_0000000000000000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', body: { spec: {} } });
    assert.equal(anonymous.statusCode, 401);
  });
});

function event(i: number, extra: Partial<AccessEvent>): AccessEvent {
  return { id: newEventId(), time: new Date(1_900_000_000_000 + i * 1000).toISOString(), type: 'access', decision: 'allow', reasons: ['policy-allow'], accessTier: 'edge-1', source: `192.0.2.1:${40000 + i}`, ...extra };
}

void describe('events: reason filter and JSON-lines export', () => {
  void test('GET /events?reason= keeps the events whose reasons include that code', async (t) => {
    const h = await start(t);
    await h.store.appendAccessEvents([
      event(1, { decision: 'deny', reasons: ['no-matching-role'], service: 'k8s' }),
      event(2, { decision: 'deny', reasons: ['trust-too-low', 'needs:High', 'has:Low', 'trust:firewall-off'], service: 'k8s' }),
      event(3, { service: 'db' }),
    ]);
    const ask = async (query: string): Promise<string[][]> => (await h.call('GET', `/api/v1/events?${query}`)).json<{ events: AccessEvent[] }>().events.map((e) => e.reasons);
    assert.deepEqual(await ask('reason=no-matching-role'), [['no-matching-role']]);
    assert.deepEqual(await ask('reason=trust%3Afirewall-off&service=k8s&decision=deny'), [['trust-too-low', 'needs:High', 'has:Low', 'trust:firewall-off']]);
    assert.deepEqual(await ask('reason=trust'), []);
    assert.equal((await h.call('GET', `/api/v1/events?reason=${'x'.repeat(300)}`)).statusCode, 400);
  });

  void test('GET /events/export streams every page as JSON lines for download, newest first, with the same filters and a limit', async (t) => {
    const h = await start(t);
    const events = Array.from({ length: 2500 }, (_, i) => event(i, { decision: i % 5 === 0 ? 'deny' : 'allow', reasons: i % 5 === 0 ? ['no-matching-role'] : ['policy-allow'], user: `user-${i % 3}` }));
    for (let i = 0; i < events.length; i += 500) await h.store.appendAccessEvents(events.slice(i, i + 500));
    const all = await h.call('GET', '/api/v1/events/export', { token: h.viewer });
    assert.equal(all.statusCode, 200, all.body);
    assert.match(all.headers['content-type'] ?? '', /^application\/x-ndjson/);
    assert.equal(all.headers['content-disposition'], 'attachment; filename="causeway-events.jsonl"');
    assert.equal(all.headers['cache-control'], 'no-store');
    const lines = all.body.trimEnd().split('\n');
    assert.equal(lines.length, 2500);
    assert.ok(all.body.endsWith('\n'));
    const ids = lines.map((l) => (JSON.parse(l) as AccessEvent).id);
    assert.deepEqual(ids, events.map((e) => e.id).reverse(), 'every event once, newest first');

    const denied = await h.call('GET', '/api/v1/events/export?reason=no-matching-role&user=user-0');
    const deniedEvents = denied.body.trimEnd().split('\n').map((l) => JSON.parse(l) as AccessEvent);
    assert.deepEqual(deniedEvents.map((e) => e.id), events.filter((e) => e.reasons[0] === 'no-matching-role' && e.user === 'user-0').map((e) => e.id).reverse());
    const limited = await h.call('GET', '/api/v1/events/export?limit=1001');
    assert.equal(limited.body.trimEnd().split('\n').length, 1001);
    const none = await h.call('GET', '/api/v1/events/export?service=nothing');
    assert.equal(none.statusCode, 200);
    assert.equal(none.body, '');
    for (const bad of [`limit=${EXPORT_MAX + 1}`, 'limit=0', 'cursor=abc', 'since=yesterday', 'decision=maybe']) {
      const response = await h.call('GET', `/api/v1/events/export?${bad}`);
      assert.equal(response.statusCode, 400, `${bad}: ${response.body}`);
    }
  });

  void test('GET /audit/export streams audit events as JSON lines with /audit filters', async (t) => {
    const h = await start(t);
    for (let i = 0; i < 30; i++) await h.store.putObject({ kind: 'Role', name: `r${i}`, spec: { users: { groups: ['eng'] } } }, { actor: i % 2 === 0 ? 'user:alice' : 'user:bob' });
    const response = await h.call('GET', '/api/v1/audit/export?actor=user%3Aalice&kind=Role', { token: h.viewer });
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers['content-disposition'], 'attachment; filename="causeway-audit.jsonl"');
    const rows = response.body.trimEnd().split('\n').map((l) => JSON.parse(l) as { actor: string; kind: string; name: string });
    assert.equal(rows.length, 15);
    assert.ok(rows.every((r) => r.actor === 'user:alice' && r.kind === 'Role'));
    assert.equal(rows[0]?.name, 'r28');
    const noToken = await h.call('GET', '/api/v1/audit/export', { token: 'cwat_0000000000000000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' });
    assert.equal(noToken.statusCode, 401);
  });
});

void describe('users: lastSeen', () => {
  void test('lastSeen is the latest of the last login and the devices\' last contact; null when never seen', async (t) => {
    const h = await start(t);
    const ids = await seedDirectory(h.store);
    await h.store.touchDevice(ids['alice-phone'] ?? '', '2030-05-01T10:00:00.000Z');
    await h.store.touchDevice(ids['alice-mac'] ?? '', '2030-05-02T10:00:00.000Z');
    await h.store.recordLoginSuccess(ids.alice ?? '', '2030-05-01T12:00:00.000Z');
    await h.store.recordLoginSuccess(ids.bob ?? '', '2030-06-01T00:00:00.000Z');
    await h.store.touchDevice(ids['bob-linux'] ?? '', '2030-05-01T00:00:00.000Z');
    const list = (await h.call('GET', '/api/v1/users')).json<{ items: Array<{ name: string; lastSeen: string | null }> }>().items;
    assert.deepEqual(Object.fromEntries(list.map((u) => [u.name, u.lastSeen])), { alice: '2030-05-02T10:00:00.000Z', bob: '2030-06-01T00:00:00.000Z', carol: null, dan: null });
    const alice = (await h.call('GET', '/api/v1/users/alice', { token: h.viewer })).json<{ lastSeen: string | null }>();
    assert.equal(alice.lastSeen, '2030-05-02T10:00:00.000Z');
  });
});
