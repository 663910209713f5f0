/**
 * The admin API with login sessions: a real control plane over a real SQLite store, with a fake
 * provider (`findAccessToken` over a map) in front of the session authenticator. Every response is
 * kept and scanned at the end for token values (CP-11).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { apiTokenAuthenticator } from '../auth.ts';
import { createControlPlane } from '../server.ts';
import type { ControlPlane, ControlPlaneOptions } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { sessionAuthenticator } from './session-auth.ts';
import type { AccessTokenInfo } from './session-auth.ts';

const ca = await CertificateAuthority.create({ commonName: 'session test CA' });

const seen: Array<{ what: string; body: string }> = [];
const secrets = new Set<string>();

interface Harness {
  cp: ControlPlane;
  store: Store;
  /** An unrestricted admin API token, for seeding and for changing things behind a session's back. */
  admin: string;
  tokens: Map<string, AccessTokenInfo>;
  /** A new access token of the fake provider for this user (by name). */
  login(name: string, options?: { clientId?: string; expiresInSeconds?: number }): Promise<string>;
  call(method: string, url: string, options?: { token?: string; body?: unknown; headers?: Record<string, string>; remoteAddress?: string }): Promise<LightMyRequestResponse>;
}

async function harness(t: { after: (fn: () => Promise<void> | void) => void }, options: Partial<ControlPlaneOptions> = {}): Promise<Harness> {
  const store = await openStore({ url: ':memory:' });
  t.after(() => store.close());
  const tokens = new Map<string, AccessTokenInfo>();
  const sessions = sessionAuthenticator({ store, findAccessToken: (token) => Promise.resolve(tokens.get(token)) });
  t.after(() => sessions.close());
  const cp = await createControlPlane({
    store,
    ca,
    publicUrl: 'https://cp.example.com:8440',
    authFailures: { burst: 10_000 },
    authenticators: [apiTokenAuthenticator(store), sessions],
    ...options,
  });
  t.after(() => cp.close());
  const admin = (await store.createApiToken({ name: 'seed', scope: 'admin' }, { actor: 'test' })).token;
  secrets.add(admin);
  const login: Harness['login'] = async (name, o = {}) => {
    const user = await store.getUserByName(name);
    assert.ok(user !== undefined, name);
    const token = randomBytes(32).toString('base64url');
    tokens.set(token, { accountId: user.id, clientId: o.clientId ?? 'causeway-cli', expiresAt: Math.floor(Date.now() / 1000) + (o.expiresInSeconds ?? 3600), scope: 'openid email profile groups offline_access' });
    secrets.add(token);
    return token;
  };
  const call: Harness['call'] = async (method, url, o = {}) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    if (o.body !== undefined) headers['content-type'] ??= 'application/json';
    const response = await cp.app.inject({
      method: method as 'GET',
      url,
      headers,
      ...(o.body === undefined ? {} : { payload: JSON.stringify(o.body) }),
      ...(o.remoteAddress === undefined ? {} : { remoteAddress: o.remoteAddress }),
    });
    seen.push({ what: `${method} ${url} → ${response.statusCode}`, body: `${JSON.stringify(response.headers)}\n${response.body}` });
    return response;
  };
  return { cp, store, admin, tokens, login, call };
}

function json(response: LightMyRequestResponse): Record<string, unknown> {
  return response.json<Record<string, unknown>>();
}

function errorOf(response: LightMyRequestResponse): { code: string; message: string; details?: Record<string, unknown> } {
  return (json(response) as { error: { code: string; message: string; details?: Record<string, unknown> } }).error;
}

function bindingDoc(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'causeway/v1', kind: 'AdminBinding', metadata: { name }, spec };
}

const roleDoc = (name: string, group = 'eng') => ({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name }, spec: { users: { groups: [group] } } });
const policyDoc = (name: string, role = 'engineers') => ({ apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name }, spec: { access: [{ roles: [role], trustLevel: 'Medium' }] } });
const tierDoc = { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-1' }, spec: { cluster: 'global-edge', address: 'edge.example.com:8443' } };
const serviceDoc = (name: string, domain: string) => ({
  apiVersion: 'causeway/v1',
  kind: 'Service',
  metadata: { name },
  spec: { type: 'tcp', cluster: 'global-edge', accessTier: 'edge-1', domain, backend: { target: 'db.internal:5432' }, policy: { name: 'k8s-prod' } },
});

/**
 * Users: alice (group platform: unrestricted admin), rita (restricted admin for Role and Policy, by
 * name), vera (group audit: viewer), nora (no binding), bob (spare).
 */
async function seed(h: Harness): Promise<{ deviceId: string; spareTokenId: string }> {
  const applied = await h.call('POST', '/api/v1/apply', {
    token: h.admin,
    body: {
      documents: [
        tierDoc,
        roleDoc('engineers'),
        policyDoc('k8s-prod'),
        serviceDoc('db', 'db.example.com'),
        bindingDoc('platform-admins', { role: 'admin', groups: ['platform'] }),
        bindingDoc('policy-admins', { role: 'admin', users: ['rita'], kinds: ['Role', 'Policy'] }),
        bindingDoc('auditors', { role: 'viewer', groups: ['audit'] }),
      ],
    },
  });
  assert.equal(applied.statusCode, 200, applied.body);
  const alice = await h.store.createUser({ name: 'alice', email: 'alice@example.com', groups: ['platform', 'eng'] }, { actor: 'test' });
  await h.store.createUser({ name: 'rita', groups: ['eng'] }, { actor: 'test' });
  await h.store.createUser({ name: 'vera', groups: ['audit'] }, { actor: 'test' });
  await h.store.createUser({ name: 'nora', groups: ['eng'] }, { actor: 'test' });
  await h.store.createUser({ name: 'bob', groups: [] }, { actor: 'test' });
  const device = await h.store.registerDevice({ id: 'dev-1', userId: alice.id, platform: 'linux', hostname: 'alice-laptop' }, { actor: 'test' });
  const spare = await h.store.createApiToken({ name: 'spare', scope: 'viewer' }, { actor: 'test' });
  secrets.add(spare.token);
  return { deviceId: device.id, spareTokenId: spare.record.id };
}

/** Everything the API can change (CP-01 read-back). */
async function stateOf(store: Store): Promise<string> {
  const { revision: _r, ...snapshot } = await store.snapshot();
  const tokens = (await store.listApiTokens()).map(({ lastUsedAt: _l, ...rest }) => rest);
  const joinTokens = await store.listJoinTokens();
  const audit = (await store.queryAuditEvents({ limit: 1000 })).events.length;
  return JSON.stringify({ snapshot, tokens, joinTokens, audit });
}

/** Every write route of the API as the OpenAPI document lists it, with placeholder parameters. */
async function writeRoutes(h: Harness, ids: { deviceId: string; spareTokenId: string }): Promise<Array<{ method: string; url: string }>> {
  const doc = json(await h.call('GET', '/api/v1/openapi.json')) as { paths: Record<string, Record<string, unknown>> };
  const routes: Array<{ method: string; url: string }> = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const method of Object.keys(methods).map((m) => m.toUpperCase())) {
      if (!['POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) continue;
      // The user's own devices are for every session by design (api/me-devices.test.ts covers them).
      if (path.startsWith('/api/v1/me/')) continue;
      // A read with a body (which users and devices a Role spec matches): viewers may.
      if (path === '/api/v1/roles/preview') continue;
      const url = path
        .replace('{kind}', 'policy')
        .replace('{name}', path.startsWith('/api/v1/users') ? 'bob' : 'k8s-prod')
        .replace('{id}', path.includes('tokens') ? ids.spareTokenId : ids.deviceId)
        .replace(/\{\w+\}/g, 'x1');
      routes.push({ method, url });
    }
  }
  return routes;
}

const WRITE_BODIES: Record<string, unknown> = {
  'PUT /api/v1/objects/policy/k8s-prod': policyDoc('k8s-prod'),
  'POST /api/v1/apply': { documents: [policyDoc('other')] },
  'POST /api/v1/users': { name: 'mallory', groups: ['platform'] },
  'PATCH /api/v1/users/bob': { groups: ['platform'] },
  'POST /api/v1/tokens': { name: 'escalate', scope: 'admin' },
  'POST /api/v1/join-tokens': { kind: 'connector', name: 'dc2' },
};

void describe('session authentication', () => {
  void test('a session reads whoami: the user with email, groups and source, scope, kinds, no token value (CP-11)', async (t) => {
    const h = await harness(t);
    await seed(h);
    const rita = await h.login('rita');
    const response = await h.call('GET', '/api/v1/whoami', { token: rita });
    assert.equal(response.statusCode, 200, response.body);
    const whoami = json(response);
    const user = await h.store.getUserByName('rita');
    assert.deepEqual(whoami.user, { id: user?.id, name: 'rita', email: null, groups: ['eng'], source: 'local' });
    assert.equal(whoami.method, 'session');
    assert.equal(whoami.scope, 'admin');
    assert.deepEqual(whoami.kinds, ['Policy', 'Role']);
    assert.deepEqual(whoami.bindings, ['policy-admins']);
    assert.equal(whoami.actor, 'user:rita');
    assert.equal(whoami.token, null);
    assert.equal(whoami.device, null);
    assert.equal(typeof whoami.tokenExpiresAt, 'string');
    assert.ok(Math.abs(Date.parse(whoami.tokenExpiresAt as string) - (h.tokens.get(rita)?.expiresAt ?? 0) * 1000) < 1000);
    assert.ok(!response.body.includes(rita));
  });

  void test('a user without a binding authenticates (scope none): whoami works, every read route is 403', async (t) => {
    const h = await harness(t);
    await seed(h);
    const nora = await h.login('nora');
    const whoami = await h.call('GET', '/api/v1/whoami', { token: nora });
    assert.equal(whoami.statusCode, 200);
    assert.equal(json(whoami).scope, 'none');
    assert.equal(json(whoami).kinds, null);
    for (const url of ['/api/v1/objects', '/api/v1/objects/policy/k8s-prod', '/api/v1/users', '/api/v1/tokens', '/api/v1/devices', '/api/v1/join-tokens', '/api/v1/audit']) {
      const response = await h.call('GET', url, { token: nora });
      assert.equal(response.statusCode, 403, url);
      assert.equal(errorOf(response).code, 'FORBIDDEN');
    }
  });

  void test('API tokens keep working unchanged beside sessions: admin writes, viewer reads', async (t) => {
    const h = await harness(t);
    await seed(h);
    const viewer = (await h.store.createApiToken({ name: 'v', scope: 'viewer' }, { actor: 'test' })).token;
    secrets.add(viewer);
    assert.equal((await h.call('GET', '/api/v1/users', { token: viewer })).statusCode, 200);
    assert.equal((await h.call('POST', '/api/v1/users', { token: viewer, body: { name: 'x' } })).statusCode, 403);
    assert.equal((await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'x' } })).statusCode, 201);
    const whoami = json(await h.call('GET', '/api/v1/whoami', { token: viewer }));
    assert.equal(whoami.user, null);
    assert.deepEqual(whoami.token, { id: whoami.id, name: 'v' });
  });

  void test('an unknown, expired, foreign-client or malformed session token is 401 with the same answer as a bad API token', async (t) => {
    const h = await harness(t);
    await seed(h);
    const expired = await h.login('alice', { expiresInSeconds: -1 });
    const foreign = await h.login('alice', { clientId: 'kubernetes:prod' });
    const variants = [
      `Bearer ${expired}`,
      `Bearer ${foreign}`,
      `Bearer ${randomBytes(32).toString('base64url')}`,
      'Bearer short',
      `Bearer ${'a'.repeat(300)}`,
      'Bearer a.b.c',
      `Bearer cwat_0123456789abcdef_${'A'.repeat(43)}`,
      'Bearer',
      'Basic YTpi',
    ];
    const messages = new Set<string>();
    for (const authorization of variants) {
      const response = await h.call('GET', '/api/v1/whoami', { headers: { authorization } });
      assert.equal(response.statusCode, 401, authorization.slice(0, 40));
      assert.equal(errorOf(response).code, 'UNAUTHENTICATED');
      messages.add(errorOf(response).message);
    }
    assert.equal(messages.size, 1);
  });

  void test('without a credential every non-public route is 401 with WWW-Authenticate, as before', async (t) => {
    const h = await harness(t);
    for (const url of ['/api/v1/whoami', '/api/v1/users', '/api/v1/objects']) {
      const response = await h.call('GET', url);
      assert.equal(response.statusCode, 401, url);
      assert.equal(response.headers['www-authenticate'], 'Bearer');
    }
    assert.equal((await h.call('GET', '/api/v1/ca')).statusCode, 200);
  });

  void test('CP-12: wrong session tokens count toward the per-source failure limit; another source is unaffected', async (t) => {
    let now = Date.now();
    const h = await harness(t, { authFailures: { burst: 3, refillPerSecond: 0.5 }, clock: { now: () => now } });
    await seed(h);
    const alice = await h.login('alice');
    for (let i = 0; i < 3; i++) assert.equal((await h.call('GET', '/api/v1/whoami', { token: randomBytes(32).toString('base64url') })).statusCode, 401);
    const limited = await h.call('GET', '/api/v1/whoami', { token: alice });
    assert.equal(limited.statusCode, 429, 'even a good session waits: the source is guessing');
    assert.equal(errorOf(limited).code, 'RATE_LIMITED');
    assert.equal((await h.call('GET', '/api/v1/whoami', { token: alice, remoteAddress: '198.51.100.7' })).statusCode, 200);
    now += 2_000;
    assert.equal((await h.call('GET', '/api/v1/whoami', { token: alice })).statusCode, 200);
  });
});

void describe('CP-01 with sessions', () => {
  void test('a viewer session and a session without a binding get 403 on every write route, and a read-back shows no change', async (t) => {
    const h = await harness(t);
    const ids = await seed(h);
    const routes = await writeRoutes(h, ids);
    assert.ok(routes.length >= 12, `${routes.length} write routes`);
    for (const name of ['vera', 'nora']) {
      const token = await h.login(name);
      for (const route of routes) {
        const before = await stateOf(h.store);
        const body = WRITE_BODIES[`${route.method} ${route.url}`];
        const response = await h.call(route.method, route.url, { token, ...(body === undefined ? {} : { body }) });
        assert.equal(response.statusCode, 403, `${name}: ${route.method} ${route.url}: ${response.body}`);
        assert.equal(errorOf(response).code, 'FORBIDDEN');
        assert.equal(await stateOf(h.store), before, `${name}: ${route.method} ${route.url} changed something`);
      }
    }
  });

  void test('a viewer session reads every read route', async (t) => {
    const h = await harness(t);
    await seed(h);
    const vera = await h.login('vera');
    for (const url of ['/api/v1/objects', '/api/v1/objects/adminbinding/auditors', '/api/v1/users', '/api/v1/users/alice', '/api/v1/devices', '/api/v1/tokens', '/api/v1/join-tokens', '/api/v1/audit', '/api/v1/whoami']) {
      const response = await h.call('GET', url, { token: vera });
      assert.equal(response.statusCode, 200, `${url}: ${response.body}`);
    }
  });
});

void describe('CP-17: an admin with limited rights cannot grant anyone more than they hold', () => {
  void test('a kinds-restricted admin writes objects of its kinds and nothing else', async (t) => {
    const h = await harness(t);
    const ids = await seed(h);
    const rita = await h.login('rita');
    const put = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: rita, body: { ...policyDoc('k8s-prod'), spec: { access: [{ roles: ['engineers'], trustLevel: 'High' }] } } });
    assert.equal(put.statusCode, 200, put.body);
    assert.equal((json(put).object as { metadata: { updatedBy: string } }).metadata.updatedBy, 'user:rita');
    assert.equal((await h.call('POST', '/api/v1/apply', { token: rita, body: { documents: [roleDoc('ops', 'ops'), policyDoc('ops-policy', 'ops')] } })).statusCode, 200);

    const before = await stateOf(h.store);
    const refusals = [
      await h.call('PUT', '/api/v1/objects/service/db', { token: rita, body: serviceDoc('db', 'db2.example.com') }),
      await h.call('DELETE', '/api/v1/objects/service/db', { token: rita }),
      await h.call('DELETE', '/api/v1/objects/accesstier/nothing-here', { token: rita }),
      await h.call('POST', '/api/v1/users', { token: rita, body: { name: 'mallory', groups: ['platform'] } }),
      await h.call('PATCH', '/api/v1/users/rita', { token: rita, body: { groups: ['eng', 'platform'] } }),
      await h.call('DELETE', '/api/v1/users/bob', { token: rita }),
      await h.call('POST', '/api/v1/tokens', { token: rita, body: { name: 'escalate', scope: 'admin' } }),
      await h.call('DELETE', `/api/v1/tokens/${ids.spareTokenId}`, { token: rita }),
      await h.call('POST', '/api/v1/join-tokens', { token: rita, body: { kind: 'connector', name: 'dc2' } }),
      await h.call('POST', `/api/v1/devices/${ids.deviceId}/ban`, { token: rita }),
      await h.call('DELETE', `/api/v1/devices/${ids.deviceId}`, { token: rita }),
    ];
    for (const response of refusals) {
      assert.equal(response.statusCode, 403, response.body);
      assert.equal(errorOf(response).code, 'FORBIDDEN');
    }
    assert.match(errorOf(refusals[0]).message, /Service db: .*may not write Service objects/);
    assert.match(errorOf(refusals[3]).message, /unrestricted admin/);
    assert.equal(await stateOf(h.store), before);
    // Reads are not restricted.
    assert.equal((await h.call('GET', '/api/v1/users', { token: rita })).statusCode, 200);
  });

  void test('a batch with one refused document is refused whole, and the error names each refused document', async (t) => {
    const h = await harness(t);
    await seed(h);
    const rita = await h.login('rita');
    const before = await stateOf(h.store);
    const response = await h.call('POST', '/api/v1/apply', {
      token: rita,
      body: { documents: [policyDoc('fine'), serviceDoc('web', 'web.example.com'), roleDoc('also-fine'), tierDoc] },
    });
    assert.equal(response.statusCode, 403, response.body);
    const error = errorOf(response);
    assert.deepEqual((error.details?.refused as Array<{ document: number; kind: string; name: string }>).map((r) => [r.document, r.kind, r.name]), [[2, 'Service', 'web'], [4, 'AccessTier', 'edge-1']]);
    assert.match(error.message, /document 2: Service web/);
    assert.match(error.message, /document 4: AccessTier edge-1/);
    assert.equal(await stateOf(h.store), before);
  });

  void test('a restricted admin cannot create a binding with more kinds or an unrestricted one, nor widen its own', async (t) => {
    const h = await harness(t);
    await seed(h);
    const rita = await h.login('rita');
    const before = await stateOf(h.store);
    const attempts = [
      await h.call('PUT', '/api/v1/objects/adminbinding/more', { token: rita, body: bindingDoc('more', { role: 'admin', users: ['bob'], kinds: ['Policy', 'Service'] }) }),
      await h.call('PUT', '/api/v1/objects/adminbinding/everything', { token: rita, body: bindingDoc('everything', { role: 'admin', users: ['bob'] }) }),
      await h.call('PUT', '/api/v1/objects/adminbinding/policy-admins', { token: rita, body: bindingDoc('policy-admins', { role: 'admin', users: ['rita'], kinds: ['Role', 'Policy', 'Service'] }) }),
      await h.call('PUT', '/api/v1/objects/adminbinding/policy-admins', { token: rita, body: bindingDoc('policy-admins', { role: 'admin', users: ['rita'] }) }),
      await h.call('POST', '/api/v1/apply', { token: rita, body: { documents: [bindingDoc('me-too', { role: 'admin', users: ['rita'], kinds: ['AdminBinding', 'Service'] })] } }),
      // Bindings it does not cover are not its to change or remove, even to narrow them.
      await h.call('PUT', '/api/v1/objects/adminbinding/platform-admins', { token: rita, body: bindingDoc('platform-admins', { role: 'admin', groups: ['platform'], kinds: ['Policy'] }) }),
      await h.call('DELETE', '/api/v1/objects/adminbinding/platform-admins', { token: rita }),
    ];
    for (const response of attempts) {
      assert.equal(response.statusCode, 403, response.body);
      assert.equal(errorOf(response).code, 'FORBIDDEN');
    }
    assert.match(errorOf(attempts[0]).message, /grants admin for Policy, Service, more than user "rita" \(admin for Policy, Role\)/);
    assert.equal(await stateOf(h.store), before);
    const whoami = json(await h.call('GET', '/api/v1/whoami', { token: rita }));
    assert.deepEqual(whoami.kinds, ['Policy', 'Role'], 'its own grant is unchanged');
  });

  void test('a restricted admin may grant what it holds (a subset of its kinds, or viewer) and remove such a grant', async (t) => {
    const h = await harness(t);
    await seed(h);
    const rita = await h.login('rita');
    const bob = await h.login('bob');
    const created = await h.call('POST', '/api/v1/apply', {
      token: rita,
      body: { documents: [bindingDoc('bob-policies', { role: 'admin', users: ['bob'], kinds: ['Policy'] }), bindingDoc('bob-viewer', { role: 'viewer', users: ['bob'] })] },
    });
    assert.equal(created.statusCode, 200, created.body);
    assert.deepEqual(json(await h.call('GET', '/api/v1/whoami', { token: bob })).kinds, ['Policy']);
    assert.equal((await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: bob, body: policyDoc('k8s-prod') })).statusCode, 200);
    assert.equal((await h.call('PUT', '/api/v1/objects/role/engineers', { token: bob, body: roleDoc('engineers') })).statusCode, 403);
    assert.equal((await h.call('DELETE', '/api/v1/objects/adminbinding/bob-policies', { token: rita })).statusCode, 200);
    assert.equal(json(await h.call('GET', '/api/v1/whoami', { token: bob })).scope, 'viewer');
  });

  void test('an unrestricted admin session may write anything: users, tokens, any binding, any kind', async (t) => {
    const h = await harness(t);
    const ids = await seed(h);
    const alice = await h.login('alice');
    const writes = [
      await h.call('POST', '/api/v1/users', { token: alice, body: { name: 'carol', groups: ['svc'] } }),
      await h.call('POST', '/api/v1/apply', { token: alice, body: { documents: [bindingDoc('svc-admins', { role: 'admin', groups: ['svc'], kinds: ['Service'] }), bindingDoc('more-platform', { role: 'admin', users: ['bob'] })] } }),
      await h.call('PUT', '/api/v1/objects/service/db', { token: alice, body: serviceDoc('db', 'db2.example.com') }),
      await h.call('PUT', '/api/v1/objects/adminbinding/policy-admins', { token: alice, body: bindingDoc('policy-admins', { role: 'admin', users: ['rita'], kinds: ['Role'] }) }),
      await h.call('POST', '/api/v1/join-tokens', { token: alice, body: { kind: 'connector', name: 'dc2' } }),
      await h.call('POST', `/api/v1/devices/${ids.deviceId}/ban`, { token: alice }),
    ];
    for (const response of writes) assert.ok(response.statusCode === 200 || response.statusCode === 201, response.body);
    const token = await h.call('POST', '/api/v1/tokens', { token: alice, body: { name: 'script', scope: 'admin' } });
    assert.equal(token.statusCode, 201);
    secrets.add((json(token) as { token: string }).token);
    seen.pop(); // the one response allowed to show that secret
    const audit = json(await h.call('GET', '/api/v1/audit?kind=Service', { token: alice })) as { events: Array<{ actor: string }> };
    assert.ok(audit.events.some((e) => e.actor === 'user:alice'), JSON.stringify(audit));
  });
});

void describe('changes apply to the very next request', () => {
  void test('a binding removed: the next request loses the scope; added back: the next request has it', async (t) => {
    const h = await harness(t);
    await seed(h);
    const alice = await h.login('alice');
    assert.equal((await h.call('GET', '/api/v1/users', { token: alice })).statusCode, 200);
    assert.equal((await h.call('DELETE', '/api/v1/objects/adminbinding/platform-admins', { token: h.admin })).statusCode, 200);
    assert.equal((await h.call('GET', '/api/v1/users', { token: alice })).statusCode, 403);
    assert.equal(json(await h.call('GET', '/api/v1/whoami', { token: alice })).scope, 'none');
    assert.equal((await h.call('PUT', '/api/v1/objects/adminbinding/platform-admins', { token: h.admin, body: bindingDoc('platform-admins', { role: 'viewer', users: ['alice'] }) })).statusCode, 201);
    assert.equal(json(await h.call('GET', '/api/v1/whoami', { token: alice })).scope, 'viewer');
    assert.equal((await h.call('POST', '/api/v1/users', { token: alice, body: { name: 'x' } })).statusCode, 403);
  });

  void test('a binding written directly in the store (another replica) is seen once the store announces it', async (t) => {
    const h = await harness(t);
    await seed(h);
    const nora = await h.login('nora');
    assert.equal(json(await h.call('GET', '/api/v1/whoami', { token: nora })).scope, 'none');
    await h.store.putObject({ kind: 'AdminBinding', name: 'nora', spec: { role: 'admin', users: ['nora'], kinds: ['Role'] } }, { actor: 'test' });
    assert.deepEqual(json(await h.call('GET', '/api/v1/whoami', { token: nora })).kinds, ['Role']);
  });

  void test('group changes count at once: a user taken out of the admin group loses the scope', async (t) => {
    const h = await harness(t);
    await seed(h);
    const alice = await h.login('alice');
    assert.equal((await h.call('PATCH', '/api/v1/users/alice', { token: h.admin, body: { groups: ['eng'] } })).statusCode, 200);
    assert.equal(json(await h.call('GET', '/api/v1/whoami', { token: alice })).scope, 'none');
  });

  void test('a disabled user\'s session is 401 at once, and so is a deleted user\'s', async (t) => {
    const h = await harness(t);
    await seed(h);
    const alice = await h.login('alice');
    const vera = await h.login('vera');
    assert.equal((await h.call('GET', '/api/v1/whoami', { token: alice })).statusCode, 200);
    assert.equal((await h.call('PATCH', '/api/v1/users/alice', { token: h.admin, body: { disabled: true } })).statusCode, 200);
    const refused = await h.call('GET', '/api/v1/whoami', { token: alice });
    assert.equal(refused.statusCode, 401);
    assert.equal(errorOf(refused).code, 'UNAUTHENTICATED');
    assert.equal((await h.call('DELETE', '/api/v1/users/vera', { token: h.admin })).statusCode, 200);
    assert.equal((await h.call('GET', '/api/v1/whoami', { token: vera })).statusCode, 401);
  });
});

void describe('secrets', () => {
  after(() => {
    seen.length = 0;
  });

  void test('CP-11: no response of this suite (whoami, errors, lists) shows a session token or an API token', () => {
    assert.ok(seen.length > 100, `${seen.length} responses`);
    for (const response of seen) {
      for (const secret of secrets) assert.ok(!response.body.includes(secret), `${response.what} shows a token`);
    }
  });
});
