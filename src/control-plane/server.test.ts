/**
 * The control plane's HTTP API, in memory (`inject`) over a real SQLite store, and over real sockets
 * for the listeners. Every response of the suite is kept and scanned at the end for secrets (CP-11),
 * and every log line for secrets and for being one JSON record (CP-09).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { FastifyPluginAsync } from 'fastify';
import type { LightMyRequestResponse } from 'fastify';
import { errorCode } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { CertificateAuthority, issueKeyAndCert } from '../lib/pki/index.ts';
import { FailureLimiter, sourceKey } from './auth.ts';
import { caPin } from './ca-store.ts';
import { createControlPlane, issueServingCertificate } from './server.ts';
import type { ControlPlane, ControlPlaneOptions, ControlPlanePluginOptions } from './server.ts';
import { openStore } from './store/index.ts';
import type { Store } from './store/index.ts';
import { createDeviceTrust } from './trust/index.ts';

// --- what the suite saw ---------------------------------------------------------------------------

interface Seen {
  what: string;
  body: string;
  /** The one response allowed to show this secret (the response that created it). */
  shows?: string;
}
const responses: Seen[] = [];
const logLines: string[] = [];
/** Every token secret the suite made or was given. */
const secrets = new Set<string>();

const capture = { write: (line: string) => void logLines.push(line) };
const logger = createLogger({ name: 'server-test', level: 'debug', destination: capture });

const ca = await CertificateAuthority.create({ commonName: 'server test CA' });
const foreignCa = await CertificateAuthority.create({ commonName: 'another CA' });

interface Harness {
  cp: ControlPlane;
  store: Store;
  admin: string;
  viewer: string;
  call(method: string, url: string, options?: { token?: string; body?: unknown; headers?: Record<string, string>; payload?: string | Buffer }): Promise<LightMyRequestResponse>;
}

async function harness(t: { after: (fn: () => Promise<void>) => void }, options: Partial<ControlPlaneOptions> = {}): Promise<Harness> {
  const store = options.store ?? (await openStore({ url: ':memory:' }));
  t.after(() => store.close());
  const cp = await createControlPlane({ store, ca, publicUrl: 'https://cp.example.com:8440', logger, authFailures: { burst: 10_000 }, ...options });
  t.after(() => cp.close());
  const admin = (await store.createApiToken({ name: 'admin', scope: 'admin' }, { actor: 'test' })).token;
  const viewer = (await store.createApiToken({ name: 'viewer', scope: 'viewer' }, { actor: 'test' })).token;
  secrets.add(admin);
  secrets.add(viewer);
  const call: Harness['call'] = async (method, url, o = {}) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    let payload: string | Buffer | undefined = o.payload;
    if (o.body !== undefined) {
      payload = JSON.stringify(o.body);
      headers['content-type'] ??= 'application/json';
    }
    const response = await cp.app.inject({ method: method as 'GET', url, headers, ...(payload === undefined ? {} : { payload }) });
    responses.push({ what: `${method} ${url} → ${response.statusCode}`, body: `${JSON.stringify(response.headers)}\n${response.body}` });
    return response;
  };
  return { cp, store, admin, viewer, call };
}

function json(response: LightMyRequestResponse): Record<string, unknown> {
  return response.json<Record<string, unknown>>();
}

function errorOf(response: LightMyRequestResponse): { code: string; message: string; details?: Record<string, unknown> } {
  return (json(response) as { error: { code: string; message: string; details?: Record<string, unknown> } }).error;
}

// --- specs ---------------------------------------------------------------------------------------

const CA_PEM_FOR_SPECS = ca.certPem;

function baseDocuments(): Array<Record<string, unknown>> {
  return [
    { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-1' }, spec: { cluster: 'global-edge', address: 'edge.example.com:8443' } },
    { apiVersion: 'causeway/v1', kind: 'Connector', metadata: { name: 'dc1' }, spec: { cluster: 'global-edge', allowedCidrs: ['10.0.0.0/8'], allowedDomains: ['.svc.cluster.local'] } },
    { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'engineers', description: 'Engineers' }, spec: { users: { groups: ['eng'] } } },
    { apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'k8s-prod' }, spec: { access: [{ roles: ['engineers'], trustLevel: 'Medium' }] } },
    {
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name: 'prod-k8s', description: 'Production cluster API' },
      spec: {
        type: 'kubernetes',
        cluster: 'global-edge',
        accessTier: 'edge-1',
        connector: 'dc1',
        domain: 'mykube.corp.example.com',
        port: 443,
        backend: { dnsOverride: 'kube-proxy.causeway.svc.cluster.local:8443' },
        kubernetes: { clusterName: 'prod', caPublicKey: CA_PEM_FOR_SPECS },
        policy: { name: 'k8s-prod', mode: 'enforcing' },
      },
    },
  ];
}

const BASE_YAML = `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: global-edge, address: "edge.example.com:8443"}
---
apiVersion: causeway/v1
kind: Role
metadata: {name: engineers}
spec:
  users: {groups: [eng]}
---
apiVersion: causeway/v1
kind: Policy
metadata: {name: k8s-prod}
spec:
  access:
    - roles: [engineers]
      trustLevel: Medium
`;

/** Everything the API can change, for "a read-back shows no change" (CP-01). */
async function stateOf(store: Store): Promise<string> {
  const { revision: _r, ...snapshot } = await store.snapshot();
  const tokens = (await store.listApiTokens()).map(({ lastUsedAt: _l, ...rest }) => rest);
  const joinTokens = await store.listJoinTokens();
  const audit = (await store.queryAuditEvents({ limit: 1000 })).events.length;
  const settings = await store.getSetting('ca');
  return JSON.stringify({ snapshot, tokens, joinTokens, audit, settings });
}

async function seed(h: Harness): Promise<{ deviceId: string; spareTokenId: string }> {
  const applied = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
  assert.equal(applied.statusCode, 200, applied.body);
  const alice = await h.store.createUser({ name: 'alice', email: 'alice@example.com', groups: ['eng'] }, { actor: 'test' });
  await h.store.createUser({ name: 'bob', groups: [] }, { actor: 'test' });
  const device = await h.store.registerDevice({ id: 'dev-1', userId: alice.id, platform: 'linux', hostname: 'alice-laptop' }, { actor: 'test' });
  const spare = await h.store.createApiToken({ name: 'spare', scope: 'viewer' }, { actor: 'test' });
  secrets.add(spare.token);
  // A live session for the disconnect route, as an access tier reports it (control-plane/live).
  await h.store.putPeerReport('access-tier', 'edge-1', { version: '0.1.0', startedAt: new Date().toISOString(), tunnels: [], sessions: [{ id: LIVE_SESSION_ID, user: alice.id, device: device.id, service: 'prod-k8s', since: new Date().toISOString(), source: '192.0.2.1:40000', target: 'k8s.example.com:443', via: 'direct', bytesUp: 1, bytesDown: 2 }] });
  return { deviceId: device.id, spareTokenId: spare.record.id };
}

// --- every route ---------------------------------------------------------------------------------

interface RouteCase {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** The route as Fastify knows it. */
  route: string;
  url: (ids: { deviceId: string; spareTokenId: string }) => string;
  /** session: a route for login sessions only (the user's devices): API tokens get 403 SESSION_REQUIRED. */
  access: 'public' | 'read' | 'write' | 'session';
  body?: unknown;
}

const policyDocument = { apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'k8s-prod' }, spec: { access: [{ roles: ['engineers'], trustLevel: 'High' }] } };

const LIVE_SESSION_ID = '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';

const ROUTES: RouteCase[] = [
  { method: 'GET', route: '/api/v1/objects', url: () => '/api/v1/objects?kind=services', access: 'read' },
  { method: 'GET', route: '/api/v1/objects/:kind/:name', url: () => '/api/v1/objects/policy/k8s-prod', access: 'read' },
  { method: 'PUT', route: '/api/v1/objects/:kind/:name', url: () => '/api/v1/objects/policy/k8s-prod', access: 'write', body: policyDocument },
  { method: 'POST', route: '/api/v1/apply', url: () => '/api/v1/apply', access: 'write', body: { documents: [{ ...policyDocument, metadata: { name: 'other' } }] } },
  { method: 'GET', route: '/api/v1/users', url: () => '/api/v1/users', access: 'read' },
  { method: 'GET', route: '/api/v1/users/:name', url: () => '/api/v1/users/alice', access: 'read' },
  { method: 'POST', route: '/api/v1/users', url: () => '/api/v1/users', access: 'write', body: { name: 'mallory', groups: ['admins'] } },
  { method: 'PATCH', route: '/api/v1/users/:name', url: () => '/api/v1/users/alice', access: 'write', body: { groups: ['eng', 'admins'] } },
  { method: 'GET', route: '/api/v1/devices', url: () => '/api/v1/devices?user=alice', access: 'read' },
  { method: 'GET', route: '/api/v1/devices/:id', url: (ids) => `/api/v1/devices/${ids.deviceId}`, access: 'read' },
  { method: 'POST', route: '/api/v1/devices/:id/ban', url: (ids) => `/api/v1/devices/${ids.deviceId}/ban`, access: 'write' },
  { method: 'POST', route: '/api/v1/devices/:id/unban', url: (ids) => `/api/v1/devices/${ids.deviceId}/unban`, access: 'write' },
  { method: 'GET', route: '/api/v1/tokens', url: () => '/api/v1/tokens', access: 'read' },
  { method: 'POST', route: '/api/v1/tokens', url: () => '/api/v1/tokens', access: 'write', body: { name: 'escalate', scope: 'admin' } },
  { method: 'DELETE', route: '/api/v1/tokens/:id', url: (ids) => `/api/v1/tokens/${ids.spareTokenId}`, access: 'write' },
  { method: 'GET', route: '/api/v1/join-tokens', url: () => '/api/v1/join-tokens', access: 'read' },
  { method: 'POST', route: '/api/v1/join-tokens', url: () => '/api/v1/join-tokens', access: 'write', body: { kind: 'connector', name: 'dc2' } },
  { method: 'GET', route: '/api/v1/events', url: () => '/api/v1/events?service=prod-k8s&limit=10', access: 'read' },
  { method: 'GET', route: '/api/v1/audit', url: () => '/api/v1/audit?kind=Policy', access: 'read' },
  { method: 'GET', route: '/api/v1/kube-events', url: () => '/api/v1/kube-events?type=kube-session&cluster=prod&limit=10', access: 'read' },
  { method: 'GET', route: '/api/v1/events/export', url: () => '/api/v1/events/export?service=prod-k8s&limit=10', access: 'read' },
  { method: 'GET', route: '/api/v1/audit/export', url: () => '/api/v1/audit/export?kind=Policy', access: 'read' },
  // A read with a body (the Role spec to match): viewers may, nothing is written.
  { method: 'POST', route: '/api/v1/roles/preview', url: () => '/api/v1/roles/preview', access: 'read', body: { spec: { users: { groups: ['eng'] } } } },
  { method: 'GET', route: '/api/v1/sessions', url: () => '/api/v1/sessions?service=prod-k8s', access: 'read' },
  { method: 'GET', route: '/api/v1/peers', url: () => '/api/v1/peers', access: 'read' },
  { method: 'POST', route: '/api/v1/sessions/:id/disconnect', url: () => `/api/v1/sessions/${LIVE_SESSION_ID}/disconnect`, access: 'write', body: {} },
  { method: 'GET', route: '/api/v1/whoami', url: () => '/api/v1/whoami', access: 'read' },
  { method: 'GET', route: '/api/v1/ca', url: () => '/api/v1/ca', access: 'public' },
  { method: 'GET', route: '/api/v1/openapi.json', url: () => '/api/v1/openapi.json', access: 'public' },
  { method: 'POST', route: '/api/v1/me/devices', url: () => '/api/v1/me/devices', access: 'session', body: { csrPem: 'x', platform: 'linux', osVersion: '24.04' } },
  { method: 'GET', route: '/api/v1/me/devices', url: () => '/api/v1/me/devices', access: 'session' },
  { method: 'GET', route: '/api/v1/me/devices/:id', url: (ids) => `/api/v1/me/devices/${ids.deviceId}`, access: 'session' },
  { method: 'POST', route: '/api/v1/me/devices/:id/posture/nonce', url: (ids) => `/api/v1/me/devices/${ids.deviceId}/posture/nonce`, access: 'session' },
  { method: 'POST', route: '/api/v1/me/devices/:id/posture', url: (ids) => `/api/v1/me/devices/${ids.deviceId}/posture`, access: 'session', body: { payload: '{}', signature: 'AA' } },
  { method: 'POST', route: '/api/v1/me/devices/:id/trust-cert', url: (ids) => `/api/v1/me/devices/${ids.deviceId}/trust-cert`, access: 'session', body: { csrPem: 'x' } },
  { method: 'GET', route: '/api/v1/me/services', url: (ids) => `/api/v1/me/services?device=${ids.deviceId}`, access: 'session' },
  { method: 'PUT', route: '/api/v1/devices/:id/trust-override', url: (ids) => `/api/v1/devices/${ids.deviceId}/trust-override`, access: 'write', body: { source: 'security-team', maxLevel: 'Low', reason: 'incident 4711' } },
  { method: 'DELETE', route: '/api/v1/devices/:id/trust-override/:source', url: (ids) => `/api/v1/devices/${ids.deviceId}/trust-override/security-team`, access: 'write' },
  { method: 'POST', route: '/api/v1/devices/:id/rescore', url: (ids) => `/api/v1/devices/${ids.deviceId}/rescore`, access: 'write' },
  { method: 'GET', route: '/api/v1/device-managers/status', url: () => '/api/v1/device-managers/status', access: 'read' },
  { method: 'POST', route: '/api/v1/device-managers/:name/test', url: () => '/api/v1/device-managers/mdm/test', access: 'write' },
  // Deletes last: they take away what the others use.
  { method: 'DELETE', route: '/api/v1/devices/:id', url: (ids) => `/api/v1/devices/${ids.deviceId}`, access: 'write' },
  { method: 'DELETE', route: '/api/v1/users/:name', url: () => '/api/v1/users/bob', access: 'write' },
  { method: 'DELETE', route: '/api/v1/objects/:kind/:name', url: () => '/api/v1/objects/service/prod-k8s', access: 'write' },
];

/** A store with device trust running on it (and one DeviceManager), for the routes that need trust (trust/routes.ts). */
async function withTrust(): Promise<Partial<ControlPlaneOptions>> {
  const store = await openStore({ url: ':memory:' });
  await store.putObject({ kind: 'DeviceManager', name: 'mdm', spec: { type: 'http', url: 'http://127.0.0.1:9/devices/{serial}', jsonPaths: { compliant: '$.compliant' } } }, { actor: 'test' });
  const trust = createDeviceTrust({ store, logger, resolveSecret: () => Promise.reject(new Error('no secrets in this test')) });
  return { store, trust };
}

void describe('every route', () => {
  void test('the table covers every route of the OpenAPI document, and the document is served', async (t) => {
    const h = await harness(t);
    const response = await h.call('GET', '/api/v1/openapi.json');
    assert.equal(response.statusCode, 200);
    const doc = json(response) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.match(doc.openapi, /^3\./);
    const documented = Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`));
    const tested = new Set(ROUTES.map((r) => `${r.method} ${r.route}`));
    for (const route of documented) assert.ok(tested.has(route), `${route} is documented but not in the test table`);
    assert.ok(documented.length >= ROUTES.length - 1, 'all but openapi.json itself are documented');
    const apply = doc.paths['/api/v1/apply'] as { post: { requestBody: { content: Record<string, unknown> } } };
    assert.ok('application/yaml' in apply.post.requestBody.content && 'application/json' in apply.post.requestBody.content);
  });

  void test('without a token every route but the public ones is 401 UNAUTHENTICATED, with WWW-Authenticate', async (t) => {
    const h = await harness(t);
    const ids = await seed(h);
    for (const route of ROUTES) {
      const response = await h.call(route.method, route.url(ids), route.body === undefined ? {} : { body: route.body });
      if (route.access === 'public') {
        assert.equal(response.statusCode, 200, `${route.method} ${route.route}`);
        continue;
      }
      assert.equal(response.statusCode, 401, `${route.method} ${route.route}`);
      assert.equal(errorOf(response).code, 'UNAUTHENTICATED');
      assert.equal(response.headers['www-authenticate'], 'Bearer');
    }
  });

  void test('a malformed, unknown, revoked or expired token is 401, the same answer for each', async (t) => {
    const h = await harness(t);
    const revoked = await h.store.createApiToken({ name: 'old', scope: 'admin' }, { actor: 'test' });
    await h.store.revokeApiToken(revoked.record.id, { actor: 'test' });
    const expired = await h.store.createApiToken({ name: 'expired', scope: 'admin', expiresAt: '2020-01-01T00:00:00Z' }, { actor: 'test' });
    secrets.add(revoked.token);
    secrets.add(expired.token);
    const unknown = `cwat_0123456789abcdef_${'A'.repeat(43)}`;
    const variants = [`Bearer ${revoked.token}`, `Bearer ${expired.token}`, `Bearer ${unknown}`, 'Bearer', `Basic ${Buffer.from('a:b').toString('base64')}`, `Bearer ${h.admin}x`, `Bearer ${'x'.repeat(5000)}`, `Token ${h.admin}`];
    const messages = new Set<string>();
    for (const authorization of variants) {
      const response = await h.call('GET', '/api/v1/whoami', { headers: { authorization } });
      assert.equal(response.statusCode, 401, authorization.slice(0, 40));
      messages.add(errorOf(response).message);
    }
    assert.equal(messages.size, 1);
    assert.equal((await h.call('GET', '/api/v1/whoami', { headers: { authorization: `bearer  ${h.admin}` } })).statusCode, 200, 'the scheme is case-insensitive');
  });

  void test('CP-01: a viewer calling every write route gets 403 FORBIDDEN, and a read-back shows no change', async (t) => {
    const h = await harness(t);
    const ids = await seed(h);
    const writes = ROUTES.filter((r) => r.access === 'write');
    assert.ok(writes.length >= 12);
    for (const route of writes) {
      const before = await stateOf(h.store);
      const response = await h.call(route.method, route.url(ids), { token: h.viewer, ...(route.body === undefined ? {} : { body: route.body }) });
      assert.equal(response.statusCode, 403, `${route.method} ${route.route}: ${response.body}`);
      assert.equal(errorOf(response).code, 'FORBIDDEN');
      assert.equal(await stateOf(h.store), before, `${route.method} ${route.route} changed something`);
    }
    // The write methods of the API are exactly these: nothing else answers a viewer's POST/PUT/PATCH/DELETE.
    const apply = await h.call('POST', '/api/v1/apply', { token: h.viewer, headers: { 'content-type': 'application/yaml' }, payload: BASE_YAML });
    assert.equal(apply.statusCode, 403);
  });

  void test('a viewer reads every read route', async (t) => {
    const h = await harness(t, await withTrust());
    const ids = await seed(h);
    for (const route of ROUTES.filter((r) => r.access === 'read')) {
      const response = await h.call(route.method, route.url(ids), { token: h.viewer, ...(route.body === undefined ? {} : { body: route.body }) });
      assert.equal(response.statusCode, 200, `${route.method} ${route.route}: ${response.body}`);
    }
  });

  void test('an admin succeeds on every route, in order', async (t) => {
    const h = await harness(t, await withTrust());
    const ids = await seed(h);
    for (const route of ROUTES) {
      const response = await h.call(route.method, route.url(ids), { token: h.admin, ...(route.body === undefined ? {} : { body: route.body }) });
      if (route.access === 'session') {
        // The user's own devices (api/me-devices.test.ts): an API token is nobody's session.
        assert.equal(response.statusCode, 403, `${route.method} ${route.route}`);
        assert.equal(errorOf(response).code, 'SESSION_REQUIRED');
        continue;
      }
      // The two create responses show their new secret, once; the scan at the end holds every other response to not showing it.
      const created = response.headers['content-type']?.startsWith('application/json') === true ? (json(response) as { token?: unknown }).token : undefined;
      if (typeof created === 'string') {
        secrets.add(created);
        responses[responses.length - 1].shows = created;
      }
      assert.ok(response.statusCode >= 200 && response.statusCode < 300, `${route.method} ${route.route}: ${response.statusCode} ${response.body}`);
    }
  });
});

// --- objects -------------------------------------------------------------------------------------

void describe('spec objects', () => {
  void test('apply creates, a second apply of the same documents is all unchanged, and get returns what was applied', async (t) => {
    const h = await harness(t);
    const first = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    assert.equal(first.statusCode, 200);
    assert.deepEqual((json(first).results as Array<{ result: string }>).map((r) => r.result), ['created', 'created', 'created', 'created', 'created']);
    const second = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    assert.deepEqual((json(second).results as Array<{ result: string; version: number }>).map((r) => [r.result, r.version]), Array(5).fill(['unchanged', 1]));
    const service = json(await h.call('GET', '/api/v1/objects/Service/prod-k8s', { token: h.viewer })) as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
    assert.equal(service.metadata.name, 'prod-k8s');
    assert.equal(service.metadata.description, 'Production cluster API');
    assert.equal(service.metadata.version, 1);
    assert.match(String(service.metadata.createdBy), /^token:[0-9a-f]{16}$/);
    assert.equal((service.spec.client as { listenPort: number }).listenPort, 8081, 'defaults are filled in');
    // What get returns applies again as unchanged (the server's metadata fields are accepted).
    const again = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: [service] } });
    assert.equal((json(again).results as Array<{ result: string }>)[0].result, 'unchanged');
    const list = json(await h.call('GET', '/api/v1/objects', { token: h.viewer })) as { items: Array<{ kind: string }> };
    assert.equal(list.items.length, 5);
    assert.equal((json(await h.call('GET', '/api/v1/objects?kind=roles', { token: h.viewer })) as { items: unknown[] }).items.length, 1);
    assert.equal((json(await h.call('GET', '/api/v1/objects?kind=policies', { token: h.viewer })) as { items: unknown[] }).items.length, 1);
  });

  void test('apply takes multi-document YAML as application/yaml', async (t) => {
    const h = await harness(t);
    const response = await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: BASE_YAML });
    assert.equal(response.statusCode, 200, response.body);
    assert.deepEqual((json(response).results as Array<{ kind: string; name: string; result: string }>).map((r) => `${r.kind}/${r.name} ${r.result}`), ['AccessTier/edge-1 created', 'Role/engineers created', 'Policy/k8s-prod created']);
    const syntax = await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: 'kind: [unclosed\n' });
    assert.equal(syntax.statusCode, 422);
    assert.match(JSON.stringify(errorOf(syntax).details), /line \d+, column \d+/);
  });

  void test('422 SPEC_INVALID lists every problem with its path, across documents and against the stored state, and writes nothing', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments().slice(0, 2) } });
    const before = await stateOf(h.store);
    const documents = [
      { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'ok-role' }, spec: { users: { groups: ['eng'] } } },
      { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'bad-role', colour: 'red' }, spec: { devices: { platforms: ['beos'] } } },
      {
        apiVersion: 'causeway/v1',
        kind: 'Service',
        metadata: { name: 'svc' },
        spec: { type: 'tcp', cluster: 'other-cluster', accessTier: 'edge-1', connector: 'missing', domain: 'db.example.com', port: 5432, backend: { target: 'db:5432' }, policy: { name: 'nope' } },
      },
      { apiVersion: 'causeway/v1', kind: 'Gadget', metadata: { name: 'g' }, spec: {} },
    ];
    const response = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents } });
    assert.equal(response.statusCode, 422, response.body);
    const error = errorOf(response);
    assert.equal(error.code, 'SPEC_INVALID');
    const problems = (error.details as { problems: Array<{ document?: number; path: string; message: string }> }).problems;
    const shown = problems.map((p) => `${p.document ?? '-'} ${p.path}`);
    for (const expected of ['2 metadata.colour', '2 spec.devices.platforms[0]', '3 spec.policy.name', '3 spec.accessTier', '3 spec.connector', '4 kind']) {
      assert.ok(shown.includes(expected), `missing ${expected} in ${JSON.stringify(shown)}`);
    }
    assert.match(problems.find((p) => p.path === 'spec.policy.name')?.message ?? '', /Policy "nope", which does not exist/);
    assert.match(problems.find((p) => p.path === 'spec.accessTier')?.message ?? '', /cluster "global-edge"/);
    assert.equal(await stateOf(h.store), before, 'nothing was written, not even the valid Role');
  });

  void test('a change that would break a stored object is refused with that object named', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    const moved = { ...baseDocuments()[0], spec: { cluster: 'elsewhere', address: 'edge.example.com:8443' } };
    const response = await h.call('PUT', '/api/v1/objects/accesstier/edge-1', { token: h.admin, body: moved });
    assert.equal(response.statusCode, 422, response.body);
    const problems = (errorOf(response).details as { problems: Array<{ kind?: string; name?: string; document?: number; message: string }> }).problems;
    assert.ok(problems.some((p) => p.kind === 'Service' && p.name === 'prod-k8s' && p.document === undefined && p.message.includes('stored object')));
  });

  void test('a duplicate domain and port on one access tier is refused (AT-05)', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    const service = baseDocuments()[4] as { metadata: { name: string } };
    const twin = { ...service, metadata: { name: 'twin' } };
    const response = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: [twin] } });
    assert.equal(response.statusCode, 422);
    const problem = (errorOf(response).details as { problems: Array<{ document?: number; path: string; message: string }> }).problems[0];
    assert.equal(problem.document, 1);
    assert.equal(problem.path, 'spec.domain');
    assert.match(problem.message, /already stored/);
  });

  void test('PUT creates (201) and changes (200); the path must match the document', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments().slice(2, 3) } });
    const created = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: policyDocument });
    assert.equal(created.statusCode, 201);
    assert.equal(created.headers['content-type'], 'application/json; charset=utf-8');
    const changed = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: { ...policyDocument, spec: { access: [] } } });
    assert.equal(changed.statusCode, 200);
    assert.equal((json(changed) as { result: string; object: { metadata: { version: number } } }).object.metadata.version, 2);
    const mismatch = await h.call('PUT', '/api/v1/objects/policy/other', { token: h.admin, body: policyDocument });
    assert.equal(mismatch.statusCode, 400);
    assert.equal(errorOf(mismatch).code, 'PATH_MISMATCH');
    const unknownKind = await h.call('GET', '/api/v1/objects/gadget/x', { token: h.admin });
    assert.equal(unknownKind.statusCode, 400);
    assert.equal(errorOf(unknownKind).code, 'UNKNOWN_KIND');
    const badName = await h.call('GET', '/api/v1/objects/policy/Not_A_Name', { token: h.admin });
    assert.equal(badName.statusCode, 400);
    assert.equal((await h.call('GET', '/api/v1/objects/policy/absent', { token: h.admin })).statusCode, 404);
  });

  void test('CP-14: two writes against one version: the second gets 409 VERSION_CONFLICT and nothing is lost', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments().slice(2, 4) } });
    const read = await h.call('GET', '/api/v1/objects/policy/k8s-prod', { token: h.admin });
    assert.equal(read.headers.etag, '"1"');
    const high = { ...policyDocument, spec: { access: [{ roles: ['engineers'], trustLevel: 'High' }] } };
    const low = { ...policyDocument, spec: { access: [{ roles: ['engineers'], trustLevel: 'Low' }] } };
    const first = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: high, headers: { 'if-match': '"1"' } });
    assert.equal(first.statusCode, 200);
    const second = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: low, headers: { 'if-match': '"1"' } });
    assert.equal(second.statusCode, 409);
    assert.equal(errorOf(second).code, 'VERSION_CONFLICT');
    // metadata.version carries the same precondition, in PUT and in apply.
    const stale = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: [{ ...low, metadata: { name: 'k8s-prod', version: 1 } }] } });
    assert.equal(stale.statusCode, 409);
    const stored = json(await h.call('GET', '/api/v1/objects/policy/k8s-prod', { token: h.admin })) as { spec: { access: Array<{ trustLevel: string }> }; metadata: { version: number } };
    assert.equal(stored.spec.access[0].trustLevel, 'High');
    assert.equal(stored.metadata.version, 2);
    // If-None-Match: * only creates.
    const exists = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: high, headers: { 'if-none-match': '*' } });
    assert.equal(exists.statusCode, 409);
    const badVersion = await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: { ...high, metadata: { name: 'k8s-prod', version: 'latest' } } });
    assert.equal(badVersion.statusCode, 422);
    assert.equal((await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: high, headers: { 'if-match': 'yesterday' } })).statusCode, 400);
    // A stale delete is refused too.
    const del = await h.call('DELETE', '/api/v1/objects/role/engineers', { token: h.admin, headers: { 'if-match': '7' } });
    assert.equal(del.statusCode, 409);
  });

  void test('deleting an object that others name is 409 OBJECT_IN_USE naming them; once unreferenced it goes', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    const inUse = await h.call('DELETE', '/api/v1/objects/policy/k8s-prod', { token: h.admin });
    assert.equal(inUse.statusCode, 409);
    const error = errorOf(inUse);
    assert.equal(error.code, 'OBJECT_IN_USE');
    assert.match(error.message, /Service prod-k8s/);
    assert.ok(await h.store.getObject('Policy', 'k8s-prod'));
    assert.equal((await h.call('DELETE', '/api/v1/objects/service/prod-k8s', { token: h.admin })).statusCode, 200);
    const deleted = await h.call('DELETE', '/api/v1/objects/policy/k8s-prod', { token: h.admin });
    assert.equal(deleted.statusCode, 200);
    assert.equal((json(deleted) as { deleted: { kind: string } }).deleted.kind, 'Policy');
    assert.equal((await h.call('DELETE', '/api/v1/objects/policy/k8s-prod', { token: h.admin })).statusCode, 404);
  });

  void test('admin changes are audit events with who, before and after', async (t) => {
    const h = await harness(t);
    await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments().slice(2, 4) } });
    await h.call('PUT', '/api/v1/objects/policy/k8s-prod', { token: h.admin, body: policyDocument });
    await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'carol', groups: ['eng'] } });
    await h.call('PATCH', '/api/v1/users/carol', { token: h.admin, body: { disabled: true } });
    const whoami = json(await h.call('GET', '/api/v1/whoami', { token: h.admin })) as { actor: string };
    const audit = json(await h.call('GET', '/api/v1/audit?kind=Policy&action=update', { token: h.viewer })) as { events: Array<{ actor: string; before: { spec: { access: Array<{ trustLevel: string }> } }; after: { spec: { access: Array<{ trustLevel: string }> } } }> };
    assert.equal(audit.events.length, 1);
    assert.equal(audit.events[0].actor, whoami.actor);
    assert.equal(audit.events[0].before.spec.access[0].trustLevel, 'Medium');
    assert.equal(audit.events[0].after.spec.access[0].trustLevel, 'High');
    const users = json(await h.call('GET', `/api/v1/audit?kind=User&actor=${encodeURIComponent(whoami.actor)}`, { token: h.viewer })) as { events: Array<{ action: string; before: { disabled: boolean } | null; after: { disabled: boolean } }> };
    assert.deepEqual(users.events.map((e) => [e.action, e.before?.disabled ?? null, e.after.disabled]), [['update', false, true], ['create', null, false]]);
    const paged = json(await h.call('GET', '/api/v1/audit?limit=1', { token: h.viewer })) as { events: unknown[]; next?: string };
    assert.equal(paged.events.length, 1);
    assert.ok(paged.next !== undefined);
    const next = json(await h.call('GET', `/api/v1/audit?limit=1&cursor=${paged.next}`, { token: h.viewer })) as { events: unknown[] };
    assert.notDeepEqual(next.events, paged.events);
    assert.equal((await h.call('GET', '/api/v1/audit?cursor=garbage', { token: h.viewer })).statusCode, 400);
    assert.equal((await h.call('GET', '/api/v1/audit?limit=ten', { token: h.viewer })).statusCode, 400);
  });
});

// --- users, devices, tokens, events ---------------------------------------------------------------

void describe('users, devices and tokens', () => {
  void test('users: create, read, disable, delete; names and fields are checked', async (t) => {
    const h = await harness(t);
    const created = await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'dave', email: 'dave@example.com', groups: ['eng', 'ops'] } });
    assert.equal(created.statusCode, 201);
    const dave = json(created);
    assert.equal(dave.disabled, false);
    assert.equal(dave.hasPassword, false);
    assert.equal((await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'dave' } })).statusCode, 409);
    assert.equal((await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'dave\r\nx' } })).statusCode, 400);
    assert.equal((await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'erin', password: 'hunter2' } })).statusCode, 400, 'unknown fields are refused, not dropped');
    assert.equal((await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'erin', email: 'not an email' } })).statusCode, 400);
    const disabled = await h.call('PATCH', '/api/v1/users/dave', { token: h.admin, body: { disabled: true }, headers: { 'if-match': '1' } });
    assert.equal(disabled.statusCode, 200);
    assert.equal(json(disabled).disabled, true);
    assert.equal((await h.call('PATCH', '/api/v1/users/dave', { token: h.admin, body: { disabled: false }, headers: { 'if-match': '1' } })).statusCode, 409);
    assert.equal((await h.call('PATCH', '/api/v1/users/nobody', { token: h.admin, body: { disabled: true } })).statusCode, 404);
    assert.equal((json(await h.call('GET', '/api/v1/users', { token: h.viewer })).items as unknown[]).length, 1);
    assert.equal((await h.call('DELETE', '/api/v1/users/dave', { token: h.admin })).statusCode, 200);
    assert.equal((await h.call('GET', '/api/v1/users/dave', { token: h.admin })).statusCode, 404);
  });

  void test('devices: list by user, ban, unban, unregister', async (t) => {
    const h = await harness(t);
    const ids = await seed(h);
    const list = json(await h.call('GET', '/api/v1/devices?user=alice', { token: h.viewer })) as { items: Array<{ id: string }> };
    assert.deepEqual(list.items.map((d) => d.id), [ids.deviceId]);
    assert.equal((json(await h.call('GET', '/api/v1/devices?user=bob', { token: h.viewer })) as { items: unknown[] }).items.length, 0);
    assert.equal((await h.call('GET', '/api/v1/devices?user=nobody', { token: h.viewer })).statusCode, 404);
    const banned = await h.call('POST', `/api/v1/devices/${ids.deviceId}/ban`, { token: h.admin });
    assert.equal(json(banned).banned, true);
    assert.equal(json(await h.call('POST', `/api/v1/devices/${ids.deviceId}/unban`, { token: h.admin })).banned, false);
    assert.equal((await h.call('POST', '/api/v1/devices/nope/ban', { token: h.admin })).statusCode, 404);
    assert.equal((await h.call('DELETE', `/api/v1/devices/${ids.deviceId}`, { token: h.admin })).statusCode, 200);
    assert.equal((await h.call('GET', `/api/v1/devices/${ids.deviceId}`, { token: h.admin })).statusCode, 404);
  });

  void test('API tokens: the secret once in the create response, never in lists; a revoked token stops working', async (t) => {
    const h = await harness(t);
    const created = await h.call('POST', '/api/v1/tokens', { token: h.admin, body: { name: 'ci', scope: 'viewer', ttl: '30d' } });
    assert.equal(created.statusCode, 201);
    const { token, record } = json(created) as { token: string; record: { id: string; scope: string; expiresAt: string } };
    responses[responses.length - 1].shows = token;
    secrets.add(token);
    assert.equal(record.scope, 'viewer');
    assert.ok(Date.parse(record.expiresAt) > Date.now() + 29 * 86_400_000);
    const whoami = json(await h.call('GET', '/api/v1/whoami', { token })) as { scope: string; name: string };
    assert.deepEqual([whoami.scope, whoami.name], ['viewer', 'ci']);
    const list = await h.call('GET', '/api/v1/tokens', { token: h.admin });
    assert.ok(!list.body.includes(token));
    assert.equal((json(list).items as unknown[]).length, 3);
    assert.equal((await h.call('DELETE', `/api/v1/tokens/${record.id}`, { token: h.admin })).statusCode, 200);
    assert.equal((await h.call('GET', '/api/v1/whoami', { token })).statusCode, 401);
    assert.equal((await h.call('POST', '/api/v1/tokens', { token: h.admin, body: { name: 'x', scope: 'root' } })).statusCode, 400);
    assert.equal((await h.call('DELETE', '/api/v1/tokens/0000000000000000', { token: h.admin })).statusCode, 404);
  });

  void test('join tokens: the response carries the exact command to run, with the CA pin (DT-06: single use, at most 24h)', async (t) => {
    const h = await harness(t);
    const created = await h.call('POST', '/api/v1/join-tokens', { token: h.admin, body: { kind: 'access-tier', name: 'edge-2', ttl: '15m' } });
    assert.equal(created.statusCode, 201);
    const body = json(created) as { token: string; command: string; caPin: string; expiresAt: string };
    responses[responses.length - 1].shows = body.token;
    secrets.add(body.token);
    assert.equal(body.caPin, caPin(ca.certPem));
    assert.match(body.caPin, /^sha256:[0-9a-f]{64}$/);
    assert.equal(body.command, `causeway access-tier --control-plane https://cp.example.com:8440 --join-token ${body.token} --ca-pin ${body.caPin}`);
    assert.ok(Date.parse(body.expiresAt) - Date.now() <= 15 * 60_000);
    const list = await h.call('GET', '/api/v1/join-tokens', { token: h.viewer });
    assert.ok(!list.body.includes(body.token));
    assert.equal((await h.call('POST', '/api/v1/join-tokens', { token: h.admin, body: { kind: 'access-tier', name: 'edge-2', ttl: '2d' } })).statusCode, 400);
    assert.equal((await h.call('POST', '/api/v1/join-tokens', { token: h.admin, body: { kind: 'device', name: 'x' } })).statusCode, 400);
    assert.equal((await h.call('POST', '/api/v1/join-tokens', { token: h.admin, body: { kind: 'connector', name: 'Bad Name' } })).statusCode, 400);
    await h.store.consumeJoinToken(body.token, 'access-tier');
    await assert.rejects(h.store.consumeJoinToken(body.token, 'access-tier'), (err: Error) => errorCode(err) === 'JOIN_TOKEN_INVALID');
  });

  void test('access events: filters, time bounds and pages', async (t) => {
    const h = await harness(t);
    const base = Date.parse('2026-03-01T12:00:00Z');
    const events = Array.from({ length: 5 }, (_, i) => ({
      id: `0190a000-0000-7000-8000-00000000000${i}`,
      time: new Date(base + i * 60_000).toISOString(),
      type: 'access' as const,
      decision: i === 2 ? ('deny' as const) : ('allow' as const),
      reasons: ['policy-allows'],
      accessTier: 'edge-1',
      service: i % 2 === 0 ? 'prod-k8s' : 'db',
      user: 'alice',
      source: '203.0.113.9:5555',
    }));
    await h.store.appendAccessEvents(events);
    const byService = json(await h.call('GET', '/api/v1/events?service=prod-k8s', { token: h.viewer })) as { events: Array<{ id: string }> };
    assert.equal(byService.events.length, 3);
    const denied = json(await h.call('GET', '/api/v1/events?decision=deny', { token: h.viewer })) as { events: Array<{ id: string }> };
    assert.deepEqual(denied.events.map((e) => e.id), [events[2].id]);
    const since = json(await h.call('GET', `/api/v1/events?since=${encodeURIComponent(events[3].time)}`, { token: h.viewer })) as { events: unknown[] };
    assert.equal(since.events.length, 2);
    const page = json(await h.call('GET', '/api/v1/events?user=alice&limit=2', { token: h.viewer })) as { events: Array<{ id: string }>; next: string };
    assert.deepEqual(page.events.map((e) => e.id), [events[4].id, events[3].id]);
    const rest = json(await h.call('GET', `/api/v1/events?user=alice&limit=10&cursor=${page.next}`, { token: h.viewer })) as { events: unknown[]; next?: string };
    assert.equal(rest.events.length, 3);
    assert.equal(rest.next, undefined);
    assert.equal((await h.call('GET', '/api/v1/events?decision=maybe', { token: h.viewer })).statusCode, 400);
    assert.equal((await h.call('GET', '/api/v1/events?since=yesterday', { token: h.viewer })).statusCode, 400);
    assert.equal((await h.call('GET', '/api/v1/events?colour=red', { token: h.viewer })).statusCode, 400);
  });

  void test('the CA is public, with its pin; whoami says who you are and nothing secret', async (t) => {
    const h = await harness(t);
    const response = json(await h.call('GET', '/api/v1/ca')) as { certPem: string; pin: string };
    assert.equal(response.certPem, ca.certPem);
    assert.equal(response.pin, caPin(ca.certPem));
    const whoami = json(await h.call('GET', '/api/v1/whoami', { token: h.admin }));
    assert.deepEqual(Object.keys(whoami).sort(), ['actor', 'bindings', 'device', 'id', 'kinds', 'method', 'name', 'scope', 'token', 'tokenExpiresAt', 'user']);
    assert.deepEqual({ method: whoami.method, scope: whoami.scope, kinds: whoami.kinds, user: whoami.user, token: whoami.token, device: whoami.device, tokenExpiresAt: whoami.tokenExpiresAt }, { method: 'api-token', scope: 'admin', kinds: null, user: null, token: { id: whoami.id, name: 'admin' }, device: null, tokenExpiresAt: null });
  });
});

// --- limits and hardening ------------------------------------------------------------------------

void describe('limits and hardening', () => {
  void test('CP-13: a 2 MiB body is 413 BODY_TOO_LARGE, as JSON and as YAML, and nothing is written', async (t) => {
    const h = await harness(t);
    const before = await stateOf(h.store);
    const big = JSON.stringify({ documents: [{ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'r', description: 'x'.repeat(2 * 1024 * 1024) }, spec: {} }] });
    const json413 = await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: big });
    assert.equal(json413.statusCode, 413);
    assert.equal(errorOf(json413).code, 'BODY_TOO_LARGE');
    const yaml413 = await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: `# ${'x'.repeat(2 * 1024 * 1024)}\n` });
    assert.equal(yaml413.statusCode, 413);
    const put413 = await h.call('PUT', '/api/v1/objects/role/r', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: big });
    assert.equal(put413.statusCode, 413);
    assert.equal(await stateOf(h.store), before);
  });

  void test('CP-13: deeply nested JSON and YAML are refused before parsing, never a 500', async (t) => {
    const h = await harness(t);
    const deepJson = `{"documents":[${'['.repeat(100_000)}${']'.repeat(100_000)}]}`;
    const response = await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: deepJson });
    assert.equal(response.statusCode, 413);
    assert.equal(errorOf(response).code, 'BODY_TOO_DEEP');
    const deepInString = `{"documents":[{"kind":"${'['.repeat(1000)}"}]}`;
    assert.equal((await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: deepInString })).statusCode, 422, 'brackets inside strings do not count');
    const deepFlow = `${'['.repeat(100_000)}${']'.repeat(100_000)}\n`;
    assert.equal((await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: deepFlow })).statusCode, 413);
    const deepBlock = `${'- '.repeat(200_000)}x\n`;
    const block = await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: deepBlock });
    assert.ok([413, 422].includes(block.statusCode), `${block.statusCode} ${block.body.slice(0, 200)}`);
    const aliases = `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n`;
    assert.equal((await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: aliases })).statusCode, 422, 'a billion-laughs document is a problem, not a hang');
  });

  void test('CP-06: text/plain and form bodies are 415, JSON with a prototype key is 400', async (t) => {
    const h = await harness(t);
    const plain = await h.call('POST', '/api/v1/users', { token: h.admin, headers: { 'content-type': 'text/plain' }, payload: '{"name":"mallory"}' });
    assert.equal(plain.statusCode, 415);
    assert.equal(errorOf(plain).code, 'UNSUPPORTED_MEDIA_TYPE');
    assert.equal((await h.call('POST', '/api/v1/users', { token: h.admin, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'name=mallory' })).statusCode, 415);
    assert.equal((await h.call('PUT', '/api/v1/objects/role/r', { token: h.admin, headers: { 'content-type': 'application/yaml' }, payload: 'kind: Role' })).statusCode, 415, 'YAML only where apply takes it');
    const proto = await h.call('POST', '/api/v1/users', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: '{"name":"m","__proto__":{"admin":true}}' });
    assert.equal(proto.statusCode, 400);
    const broken = await h.call('POST', '/api/v1/users', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: '{"name":' });
    assert.equal(broken.statusCode, 400);
    assert.equal(errorOf(broken).code, 'INVALID_JSON');
    assert.equal(await h.store.getUserByName('mallory'), undefined);
  });

  void test('CP-12: failed authentications are limited per source; the bucket refills over time', async (t) => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const clock = { now: () => now };
    const h = await harness(t, { authFailures: { burst: 3, refillPerSecond: 0.5 }, clock });
    for (let i = 0; i < 3; i++) assert.equal((await h.call('GET', '/api/v1/whoami', { headers: { authorization: 'Bearer nope' } })).statusCode, 401);
    const limited = await h.call('GET', '/api/v1/whoami', { token: h.admin });
    assert.equal(limited.statusCode, 429, 'even a good token waits: the source is guessing');
    assert.equal(errorOf(limited).code, 'RATE_LIMITED');
    assert.equal(limited.headers['retry-after'], '2');
    assert.equal((await h.call('GET', '/api/v1/ca')).statusCode, 200, 'public routes are not limited');
    now += 2_000;
    assert.equal((await h.call('GET', '/api/v1/whoami', { token: h.admin })).statusCode, 200);
    const other = await h.cp.app.inject({ method: 'GET', url: '/api/v1/whoami', headers: { authorization: `Bearer ${h.admin}` }, remoteAddress: '198.51.100.7' });
    assert.equal(other.statusCode, 200, 'another source is unaffected');
  });

  void test('the failure limiter forgets full buckets and bounds how many sources it tracks', () => {
    let now = 0;
    const limiter = new FailureLimiter({ burst: 2, refillPerSecond: 1, maxSources: 3, clock: { now: () => now } });
    limiter.fail('a');
    limiter.fail('a');
    assert.equal(limiter.retryAfter('a'), 1);
    now += 1000;
    assert.equal(limiter.retryAfter('a'), 0);
    for (const key of ['b', 'c', 'd', 'e']) {
      limiter.fail(key);
      limiter.fail(key);
    }
    assert.equal(limiter.retryAfter('b'), 0, 'the oldest source was forgotten');
    assert.equal(limiter.retryAfter('e'), 1);
  });

  void test('sources are IPv4 addresses, IPv4-mapped IPv6 as IPv4, and IPv6 by /64', () => {
    assert.equal(sourceKey('203.0.113.9'), '203.0.113.9');
    assert.equal(sourceKey('::ffff:203.0.113.9'), '203.0.113.9');
    assert.equal(sourceKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(sourceKey('2001:db8:1:2::9'), '2001:db8:1:2::/64');
    assert.equal(sourceKey('2001:0db8::1'), '2001:db8:0:0::/64');
    assert.equal(sourceKey(undefined), 'unknown');
  });

  void test('every response carries the security headers; errors carry no stack trace', async (t) => {
    const h = await harness(t);
    const samples = [
      await h.call('GET', '/api/v1/ca'),
      await h.call('GET', '/api/v1/whoami'),
      await h.call('GET', '/api/v1/nowhere', { token: h.admin }),
      await h.call('GET', '/nowhere'),
      await h.call('GET', '/healthz'),
      await h.call('POST', '/api/v1/apply', { token: h.admin, headers: { 'content-type': 'application/json' }, payload: '{' }),
    ];
    for (const response of samples) {
      assert.equal(response.headers['x-content-type-options'], 'nosniff');
      assert.equal(response.headers['cache-control'], 'no-store');
      assert.equal(response.headers['content-security-policy'], "default-src 'none'; frame-ancestors 'none'");
      assert.equal(response.headers['x-frame-options'], 'DENY');
      assert.doesNotMatch(response.body, /\bat .*\.(ts|js):\d+|node_modules|Error:/);
    }
    assert.equal(errorOf(samples[2]).code, 'NOT_FOUND');
  });

  void test('an unexpected failure is a 500 that names the request id and logs the detail', async (t) => {
    const h = await harness(t);
    const broken = new Proxy(h.store, {
      get(target, property) {
        if (property === 'listUsers') return () => Promise.reject(new Error('database on fire at /var/lib/secret/path'));
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const cp = await createControlPlane({ store: broken, ca, publicUrl: 'https://cp.example.com', logger });
    t.after(() => cp.close());
    const response = await cp.app.inject({ method: 'GET', url: '/api/v1/users', headers: { authorization: `Bearer ${h.admin}` } });
    assert.equal(response.statusCode, 500);
    const error = errorOf(response);
    assert.equal(error.code, 'INTERNAL');
    assert.doesNotMatch(response.body, /fire|secret/);
    const id = /request ([0-9a-f-]{36})/.exec(error.message)?.[1];
    assert.ok(id !== undefined);
    assert.ok(logLines.some((line) => line.includes(id) && line.includes('database on fire')));
  });

  void test('CP-09: CR/LF, ANSI escapes and quotes in a URL and user names give exactly one JSON log line each', async (t) => {
    const h = await harness(t);
    const start = logLines.length;
    await h.call('GET', '/api/v1/users/%0d%0aforged%22line%1b%5b31m', { token: h.admin });
    await h.call('POST', '/api/v1/users', { token: h.admin, body: { name: 'eve\n{"level":50}' } });
    const lines = logLines.slice(start).join('').split('\n').filter((l) => l !== '');
    assert.ok(lines.length >= 2);
    for (const line of lines) {
      const record = JSON.parse(line) as Record<string, unknown>;
      assert.equal(typeof record.msg, 'string');
    }
    assert.ok(lines.some((l) => l.includes('forged')));
  });
});

// --- listeners, plugins, health and metrics --------------------------------------------------------

interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  tlsVersion?: string;
}

function get(url: string, options: { ca?: string; cert?: string; key?: string; maxVersion?: 'TLSv1.2'; token?: string; servername?: string } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const headers = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
    const handle = (res: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const socket = res.socket as TLSSocket;
        const tlsVersion = typeof socket.getProtocol === 'function' ? (socket.getProtocol() ?? undefined) : undefined;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), ...(tlsVersion === undefined ? {} : { tlsVersion }) });
      });
    };
    const req = target.protocol === 'https:'
      ? httpsRequest(target, { headers, agent: false, ...(options.ca === undefined ? {} : { ca: options.ca }), ...(options.cert === undefined ? {} : { cert: options.cert, key: options.key }), ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }), ...(options.servername === undefined ? {} : { servername: options.servername }) }, handle)
      : httpRequest(target, { headers, agent: false }, handle);
    req.on('error', reject);
    req.end();
  });
}

void describe('listeners', () => {
  void test('HTTPS: TLS 1.3 only, the serving certificate checks out against the CA by name, and client certificates are optional', async (t) => {
    const h = await harness(t);
    const serving = await issueServingCertificate(ca, { publicUrl: 'https://cp.example.com:8440', listenHost: '127.0.0.1' });
    responses.push({ what: 'serving key', body: '', shows: serving.keyPem });
    const listener = await h.cp.listen({ host: '127.0.0.1', port: 0, tls: serving });
    t.after(() => listener.close());
    assert.match(listener.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ok = await get(`${listener.url}/api/v1/whoami`, { ca: ca.certPem, token: h.admin });
    assert.equal(ok.status, 200);
    assert.equal(ok.tlsVersion, 'TLSv1.3');
    assert.equal(ok.headers['strict-transport-security'], 'max-age=31536000');
    const byName = await get(`https://localhost:${listener.port}/healthz`, { ca: ca.certPem });
    assert.equal(byName.status, 200);
    await assert.rejects(get(`${listener.url}/healthz`, { ca: ca.certPem, maxVersion: 'TLSv1.2' }));
    await assert.rejects(get(`${listener.url}/healthz`, { ca: foreignCa.certPem }), 'a client trusting another CA refuses the server');
    // Serving certificates are swapped in place.
    const next = await issueServingCertificate(ca, { publicUrl: 'https://cp.example.com:8440', listenHost: '127.0.0.1', lifetimeMs: 3_600_000 });
    listener.setCertificate(next);
    const renewed = await get(`${listener.url}/healthz`, { ca: ca.certPem });
    assert.equal(renewed.status, 200);
  });

  void test('plugins get the dependencies and see the caller\'s certificate identity (type, CA, validity)', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    let seen: ControlPlanePluginOptions | undefined;
    const probe: FastifyPluginAsync<ControlPlanePluginOptions> = async (app, options) => {
      seen = options;
      app.get('/api/v1/test/peer', (request) => {
        const result = options.causeway.peerIdentity(request, ['connector']);
        return result.ok ? { ok: true, name: result.identity.name } : { ok: false, code: result.code };
      });
      await Promise.resolve();
    };
    const cp = await createControlPlane({ store, ca, publicUrl: 'https://127.0.0.1:8440', logger, plugins: [probe] });
    t.after(() => cp.close());
    assert.equal(seen?.causeway.store !== undefined && seen.causeway.ca, ca);
    assert.equal(cp.app.causeway.publicUrl, 'https://127.0.0.1:8440');
    const listener = await cp.listen({ host: '127.0.0.1', port: 0, tls: await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1:8440' }) });
    t.after(() => listener.close());
    const connector = await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } });
    const accessTier = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
    const foreign = await issueKeyAndCert(foreignCa, { type: 'connector', identity: { name: 'dc1' } });
    responses.push({ what: 'test keys', body: '', shows: connector.keyPem });
    const url = `${listener.url}/api/v1/test/peer`;
    assert.deepEqual(JSON.parse((await get(url, { ca: ca.certPem, cert: connector.certPem, key: connector.keyPem })).body), { ok: true, name: 'dc1' });
    assert.deepEqual(JSON.parse((await get(url, { ca: ca.certPem })).body), { ok: false, code: 'cert-missing' });
    assert.deepEqual(JSON.parse((await get(url, { ca: ca.certPem, cert: accessTier.certPem, key: accessTier.keyPem })).body), { ok: false, code: 'cert-wrong-type' });
    assert.deepEqual(JSON.parse((await get(url, { ca: ca.certPem, cert: foreign.certPem, key: foreign.keyPem })).body), { ok: false, code: 'cert-unknown-ca' });
    const plain = await cp.app.inject({ method: 'GET', url: '/api/v1/test/peer' });
    assert.deepEqual(plain.json(), { ok: false, code: 'cert-missing' });
    assert.equal(plain.headers['x-content-type-options'], 'nosniff', 'plugin routes get the security headers too');
  });

  void test('plain HTTP only when asked for in so many words', async (t) => {
    const h = await harness(t);
    await assert.rejects(h.cp.listen({ host: '127.0.0.1', port: 0 }), (err: Error) => errorCode(err) === 'LISTEN_OPTIONS');
    const listener = await h.cp.listen({ host: '127.0.0.1', port: 0, insecureHttp: true });
    t.after(() => listener.close());
    assert.equal((await get(`${listener.url}/api/v1/whoami`, { token: h.viewer })).status, 200);
    assert.ok(logLines.some((l) => l.includes('plain HTTP')));
  });

  void test('CP-10: /metrics is not on the public listener; the metrics listener has it and the health details', async (t) => {
    const h = await harness(t);
    await seed(h);
    assert.equal((await h.call('GET', '/metrics', { token: h.admin })).statusCode, 404);
    const ready = await h.call('GET', '/readyz');
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(json(ready), { status: 'ready' }, 'no details on the public listener');
    assert.deepEqual(json(await h.call('GET', '/healthz')), { status: 'ok' });
    const metrics = await h.cp.listenMetrics({ host: '127.0.0.1', port: 0 });
    t.after(() => metrics.close());
    const scraped = await get(`${metrics.url}/metrics`);
    assert.equal(scraped.status, 200);
    assert.match(scraped.body, /causeway_http_requests_total\{method="POST",route="\/api\/v1\/apply",status="200"\} 1/);
    assert.match(scraped.body, /causeway_objects\{kind="Service"\} 1/);
    assert.match(scraped.body, /causeway_config_revision \d+/);
    assert.match(scraped.body, /causeway_store_operation_duration_seconds_count\{operation="applyObjects",outcome="ok"\} 1/);
    assert.match(scraped.body, /causeway_connected_access_tiers 0/);
    h.cp.metrics.connectedAccessTiers.set(2);
    assert.match((await get(`${metrics.url}/metrics`)).body, /causeway_connected_access_tiers 2/);
    const detailed = JSON.parse((await get(`${metrics.url}/readyz`)).body) as { status: string; checks: Record<string, string> };
    assert.deepEqual(detailed, { status: 'ready', checks: { store: 'ok', ca: 'ok' } });
    assert.equal((await get(`${metrics.url}/api/v1/whoami`)).status, 404);
  });

  void test('readiness fails when the store does not answer', async (t) => {
    const store = await openStore({ url: ':memory:' });
    const cp = await createControlPlane({ store, ca, publicUrl: 'https://cp.example.com', logger });
    t.after(() => cp.close());
    await store.close();
    const ready = await cp.app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(ready.statusCode, 503);
    assert.deepEqual(ready.json(), { status: 'not-ready' });
  });

  void test('metrics can be served on the public listener when configured, to tokens only', async (t) => {
    const h = await harness(t, { metricsOnPublicListener: true });
    assert.equal((await h.call('GET', '/metrics')).statusCode, 401);
    const scraped = await h.call('GET', '/metrics', { token: h.viewer });
    assert.equal(scraped.statusCode, 200);
    assert.match(scraped.body, /causeway_http_requests_total/);
  });

  void test('close() ends open connections and is idempotent', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const cp = await createControlPlane({ store, ca, publicUrl: 'https://cp.example.com', logger });
    const listener = await cp.listen({ host: '127.0.0.1', port: 0, insecureHttp: true });
    assert.equal((await get(`${listener.url}/healthz`)).status, 200);
    await Promise.all([cp.close(), cp.close()]);
    await assert.rejects(get(`${listener.url}/healthz`));
    await assert.rejects(cp.listen({ host: '127.0.0.1', port: 0, insecureHttp: true }), (err: Error) => errorCode(err) === 'CLOSED');
  });
});

// --- PostgreSQL ----------------------------------------------------------------------------------

const postgresAdminUrl = process.env.CAUSEWAY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

void describe('on PostgreSQL', () => {
  void test('create a database, apply, get, delete, audit; then drop it', async (t) => {
    const pg = (await import('pg')).default;
    const name = `causeway_api_test_${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    const admin = new pg.Client({ connectionString: postgresAdminUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(postgresAdminUrl);
    url.pathname = `/${name}`;
    const store = await openStore({ url: url.toString() });
    // One cleanup, in order: the control plane (the harness closes it first), the store, the database.
    const opened: { h?: Harness } = {};
    t.after(async () => {
      await opened.h?.cp.close();
      await store.close();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    });
    const h = await harness({ after: () => undefined }, { store });
    opened.h = h;
    const applied = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    assert.equal(applied.statusCode, 200, applied.body);
    const again = await h.call('POST', '/api/v1/apply', { token: h.admin, body: { documents: baseDocuments() } });
    assert.ok((json(again).results as Array<{ result: string }>).every((r) => r.result === 'unchanged'));
    const service = json(await h.call('GET', '/api/v1/objects/service/prod-k8s', { token: h.viewer })) as { spec: { domain: string } };
    assert.equal(service.spec.domain, 'mykube.corp.example.com');
    assert.equal((await h.call('DELETE', '/api/v1/objects/policy/k8s-prod', { token: h.admin })).statusCode, 409);
    assert.equal((await h.call('DELETE', '/api/v1/objects/service/prod-k8s', { token: h.admin })).statusCode, 200);
    const audit = json(await h.call('GET', '/api/v1/audit?kind=Service', { token: h.viewer })) as { events: Array<{ action: string }> };
    assert.deepEqual(audit.events.map((e) => e.action), ['delete', 'create']);
  });
});

// --- CP-11 and CP-16 over everything above -------------------------------------------------------

void describe('secrets', () => {
  after(() => {
    // Keeps the capture from growing for anything registered later.
    logLines.length = 0;
  });

  void test('CP-11: no response of this suite shows a token secret (outside its one create response), a token hash or a private key', () => {
    assert.ok(responses.length > 200, `${responses.length} responses were seen`);
    const hashes = [...secrets].map((s) => createHash('sha256').update(s).digest('hex'));
    for (const seen of responses) {
      assert.doesNotMatch(seen.body, /PRIVATE KEY/, seen.what);
      for (const secret of secrets) {
        if (seen.shows === secret) continue;
        assert.ok(!seen.body.includes(secret), `${seen.what} shows a token secret`);
      }
      for (const hash of hashes) assert.ok(!seen.body.includes(hash), `${seen.what} shows a token hash`);
    }
  });

  void test('no log line of this suite holds a token secret, a token hash or a private key, and each is one JSON record', () => {
    assert.ok(logLines.length > 100);
    const hashes = [...secrets].map((s) => createHash('sha256').update(s).digest('hex'));
    for (const chunk of logLines) {
      for (const line of chunk.split('\n').filter((l) => l !== '')) {
        JSON.parse(line);
        assert.doesNotMatch(line, /PRIVATE KEY/);
        for (const secret of secrets) assert.ok(!line.includes(secret), `a log line holds a token secret: ${line.slice(0, 200)}`);
        for (const hash of hashes) assert.ok(!line.includes(hash), 'a log line holds a token hash');
      }
    }
  });
});
