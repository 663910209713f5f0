/**
 * The user's service catalog on a real control plane: HTTPS on port 0, a real SQLite store, login
 * sessions through the session authenticator (`findAccessToken` over a map). Devices and their trust
 * are written straight into the store, as the trust engine would.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { apiTokenAuthenticator } from '../auth.ts';
import { sessionAuthenticator } from '../identity/session-auth.ts';
import type { AccessTokenInfo } from '../identity/session-auth.ts';
import { createControlPlane, issueServingCertificate } from '../server.ts';
import type { ControlPlane, Listener } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

interface Entry {
  name: string;
  type: string;
  domain: string;
  port: number;
  autorun: boolean;
  description?: string;
  client: { listenPort: number; allowUserOverride: boolean };
  accessTiers: Array<{ name: string; address: string }>;
  kubernetes: { clusterName: string; caPublicKey: string; authentication: string } | null;
  proxy: { mode: string; allowPatterns?: unknown[] };
  access: { allowed: boolean; mode: string; reasons: string[]; explanation: string; hints: string[] };
}

let ca: CertificateAuthority;
let store: Store;
let cp: ControlPlane;
let listener: Listener;
let adminToken: string;
const tokens = new Map<string, AccessTokenInfo>();
const sessions: Record<string, string> = {};
const users: Record<string, string> = {};
let closeAuthenticator = (): void => undefined;

async function call(path: string, token: string): Promise<Answer> {
  const response = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: listener.port, path, method: 'GET', headers: { authorization: `Bearer ${token}` }, ca: ca.certPem, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(response.text) as Record<string, unknown>;
  } catch {
    // not JSON
  }
  return { ...response, json };
}

async function catalog(user: string, device: string): Promise<Entry[]> {
  const answer = await call(`/api/v1/me/services?device=${device}`, sessions[user] ?? '');
  assert.equal(answer.status, 200, answer.text);
  return answer.json.services as Entry[];
}

function byName(entries: Entry[], name: string): Entry {
  const entry = entries.find((e) => e.name === name);
  assert.ok(entry !== undefined, `${name} in ${entries.map((e) => e.name).join(', ')}`);
  return entry;
}

async function device(user: string, trust: { level: string; reasons: string[] } | null, extra: { ownership?: string } = {}): Promise<string> {
  const record = await store.registerDevice({ userId: users[user] ?? '', platform: 'linux', osVersion: '24.04', ownership: extra.ownership ?? 'corporate-dedicated', trust: trust === null ? null : { ...trust, explanation: `${trust.level}` } }, { actor: 'test' });
  return record.id;
}

async function put(kind: string, name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}): Promise<void> {
  await store.putObject({ kind, name, spec, metadata }, { actor: 'test' });
}

before(async () => {
  ca = await CertificateAuthority.create({ commonName: 'me-services test CA' });
  store = await openStore({ url: ':memory:' });
  const authenticator = sessionAuthenticator({ store, findAccessToken: (token) => Promise.resolve(tokens.get(token)) });
  cp = await createControlPlane({ store, ca, publicUrl: 'https://127.0.0.1:8440', authFailures: { burst: 10_000 }, authenticators: [apiTokenAuthenticator(store), authenticator] });
  const serving = await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1:8440' });
  listener = await cp.listen({ host: '127.0.0.1', port: 0, tls: serving });
  adminToken = (await store.createApiToken({ name: 'seed', scope: 'admin' }, { actor: 'test' })).token;
  for (const [name, groups] of [['alice', ['eng']], ['bob', ['eng']], ['mallory', ['sales']], ['dora', ['eng']]] as const) {
    const user = await store.createUser({ name, groups: [...groups] }, { actor: 'test' });
    users[name] = user.id;
    const token = randomBytes(32).toString('base64url');
    tokens.set(token, { accountId: user.id, clientId: 'causeway-cli', expiresAt: Math.floor(Date.now() / 1000) + 3600, scope: 'openid offline_access' });
    sessions[name] = token;
  }
  closeAuthenticator = () => authenticator.close();

  await put('Role', 'engineers', { users: { groups: ['eng'] } });
  await put('Role', 'corp-engineers', { users: { groups: ['eng'] }, devices: { ownership: ['corporate-dedicated'] } });
  await put('Policy', 'k8s-prod', { access: [{ roles: ['corp-engineers'], trustLevel: 'Medium' }] });
  await put('Policy', 'lenient', { access: [{ roles: ['engineers'], trustLevel: 'High' }] });
  await put('AccessTier', 'edge-1', { cluster: 'global-edge', address: 'edge-1.example.com:8443' });
  await put('AccessTier', 'edge-2', { cluster: 'global-edge', address: 'edge-2.example.com:8443' });
  await put('AccessTier', 'other-edge', { cluster: 'elsewhere', address: 'other.example.com:8443' });
  const kube = { type: 'kubernetes', cluster: 'global-edge', accessTier: '*', domain: 'mykube.corp.example.com', backend: { dnsOverride: 'kube-proxy.internal.svc:8443' }, client: { listenPort: 8081, allowUserOverride: true }, kubernetes: { clusterName: 'prod', caPublicKey: ca.certPem }, policy: { name: 'k8s-prod', mode: 'enforcing' } };
  await put('Service', 'prod-k8s', kube, { description: 'Production cluster API', link: 'https://wiki.example.com/prod' });
  await put('Service', 'staging-k8s', { ...kube, accessTier: 'edge-2', domain: 'staging.corp.example.com', port: 6443, client: { listenPort: 8082 }, kubernetes: { clusterName: 'staging', caPublicKey: ca.certPem, authentication: 'cluster' }, policy: { name: 'lenient', mode: 'permissive' } });
  await put('Service', 'db', { type: 'tcp', cluster: 'global-edge', accessTier: 'edge-1', domain: 'db.corp.example.com', port: 5432, backend: { target: '10.1.2.3:5432' }, client: { listenPort: 15432 }, autorun: true, policy: { name: 'k8s-prod' } });
  await put('Service', 'web-proxy', { type: 'tcp', cluster: 'global-edge', accessTier: 'edge-1', domain: 'proxy.corp.example.com', port: 3128, backend: { httpConnect: true, allowPatterns: [{ hostnames: ['*.internal'], ports: [443] }] }, client: { listenPort: 3128 }, policy: { name: 'k8s-prod' } });
  await put('Service', 'hidden', { ...kube, domain: 'hidden.corp.example.com', showInCatalog: false, kubernetes: { clusterName: 'hidden', caPublicKey: ca.certPem } });
  await put('Service', 'orphan', { ...kube, domain: 'orphan.corp.example.com', kubernetes: { clusterName: 'orphan', caPublicKey: ca.certPem }, policy: undefined });
});

after(async () => {
  closeAuthenticator();
  await cp.close();
  await store.close();
});

void describe('GET /api/v1/me/services', () => {
  void test('lists every showInCatalog service, sorted, with what the client needs and never the backend', async () => {
    const id = await device('alice', { level: 'High', reasons: [] });
    const entries = await catalog('alice', id);
    assert.deepEqual(entries.map((e) => e.name), ['db', 'orphan', 'prod-k8s', 'staging-k8s', 'web-proxy']);
    const prod = byName(entries, 'prod-k8s');
    assert.equal(prod.type, 'kubernetes');
    assert.equal(prod.domain, 'mykube.corp.example.com');
    assert.equal(prod.port, 443);
    assert.equal(prod.description, 'Production cluster API');
    assert.deepEqual(prod.client, { listenPort: 8081, allowUserOverride: true });
    assert.deepEqual(prod.accessTiers, [{ name: 'edge-1', address: 'edge-1.example.com:8443' }, { name: 'edge-2', address: 'edge-2.example.com:8443' }], '"*" is every tier of the cluster');
    assert.deepEqual(prod.kubernetes, { clusterName: 'prod', caPublicKey: ca.certPem, authentication: 'oidc' });
    assert.deepEqual(prod.proxy, { mode: 'chain' });
    assert.deepEqual(prod.access, { allowed: true, mode: 'enforcing', reasons: [], explanation: prod.access.explanation, hints: [] });
    assert.match(prod.access.explanation, /^allowed/);
    const staging = byName(entries, 'staging-k8s');
    assert.deepEqual(staging.accessTiers, [{ name: 'edge-2', address: 'edge-2.example.com:8443' }]);
    assert.equal(staging.kubernetes?.authentication, 'cluster');
    assert.equal(staging.port, 6443);
    const db = byName(entries, 'db');
    assert.deepEqual(db.proxy, { mode: 'tcp' });
    assert.equal(db.autorun, true);
    assert.equal(db.kubernetes, null);
    assert.deepEqual(byName(entries, 'web-proxy').proxy, { mode: 'chain', allowPatterns: [{ hostnames: ['*.internal'], ports: [443] }] });
    const answer = await call(`/api/v1/me/services?device=${id}`, sessions.alice ?? '');
    assert.doesNotMatch(answer.text, /10\.1\.2\.3|kube-proxy\.internal/, 'backend addresses stay private');
  });

  void test('a denial says why, with the hints the access tier would give: trust too low', async () => {
    const id = await device('bob', { level: 'Low', reasons: ['firewall-off'] });
    const prod = byName(await catalog('bob', id), 'prod-k8s');
    assert.equal(prod.access.allowed, false);
    assert.equal(prod.access.mode, 'enforcing');
    assert.deepEqual(prod.access.reasons, ['trust-too-low']);
    assert.deepEqual(prod.access.hints, ['needs:Medium', 'has:Low', 'trust:firewall-off']);
    assert.equal(prod.access.explanation, 'denied: device trust Low, this service needs Medium (firewall off)');
  });

  void test('a permissive policy allows what it would deny, and says so', async () => {
    const id = await device('bob', { level: 'Medium', reasons: ['disk-encryption-off'] });
    const staging = byName(await catalog('bob', id), 'staging-k8s');
    assert.equal(staging.access.allowed, true);
    assert.equal(staging.access.mode, 'permissive');
    assert.deepEqual(staging.access.reasons, ['trust-too-low']);
    assert.match(staging.access.explanation, /permissive mode, but policy lenient would deny/);
  });

  void test('a user no role can match still sees the service, denied as no-matching-role; a service without a policy is denied as no-policy', async () => {
    const id = await device('mallory', { level: 'High', reasons: [] });
    const entries = await catalog('mallory', id);
    const prod = byName(entries, 'prod-k8s');
    assert.equal(prod.access.allowed, false);
    assert.deepEqual(prod.access.reasons, ['no-matching-role']);
    const orphan = byName(entries, 'orphan');
    assert.equal(orphan.access.allowed, false);
    assert.deepEqual(orphan.access.reasons, ['no-policy']);
  });

  void test('the device counts: an employee-owned laptop misses the corporate role; a banned device and AlwaysDeny deny everything', async () => {
    const own = await device('alice', { level: 'High', reasons: [] }, { ownership: 'employee-owned' });
    assert.deepEqual(byName(await catalog('alice', own), 'prod-k8s').access.reasons, ['no-matching-role']);
    const never = await device('alice', { level: 'AlwaysDeny', reasons: ['edr-missing'] });
    const entries = await catalog('alice', never);
    assert.ok(entries.every((e) => !e.access.allowed), 'AlwaysDeny denies even permissive services');
    assert.deepEqual(byName(entries, 'prod-k8s').access.reasons, ['trust-always-deny']);
    const banned = await device('alice', { level: 'High', reasons: [] });
    await store.banDevice(banned, { actor: 'test' });
    assert.deepEqual(byName(await catalog('alice', banned), 'prod-k8s').access.reasons, ['device-revoked']);
    const unscored = await device('alice', null);
    assert.deepEqual(byName(await catalog('alice', unscored), 'prod-k8s').access.reasons, ['trust-unknown']);
  });

  void test('the answer follows live state: a trust drop shows at the next request', async () => {
    const id = await device('alice', { level: 'High', reasons: [] });
    assert.equal(byName(await catalog('alice', id), 'prod-k8s').access.allowed, true);
    await store.updateDevice(id, { trust: { level: 'Low', reasons: ['firewall-off'] } }, { actor: 'test' });
    assert.equal(byName(await catalog('alice', id), 'prod-k8s').access.allowed, false);
  });

  void test('CP-03 user A asking with user B\'s device gets 404, exactly like a device that does not exist', async () => {
    const bobs = await device('bob', { level: 'High', reasons: [] });
    const foreign = await call(`/api/v1/me/services?device=${bobs}`, sessions.alice ?? '');
    const missing = await call('/api/v1/me/services?device=no-such-device', sessions.alice ?? '');
    assert.equal(foreign.status, 404);
    assert.equal(missing.status, 404);
    assert.equal((foreign.json.error as { code: string }).code, (missing.json.error as { code: string }).code);
    assert.doesNotMatch(foreign.text, /prod-k8s/);
  });

  void test('an API token gets 403 SESSION_REQUIRED; no credential 401; no device 400', async () => {
    const id = await device('alice', { level: 'High', reasons: [] });
    const byToken = await call(`/api/v1/me/services?device=${id}`, adminToken);
    assert.equal(byToken.status, 403);
    assert.equal((byToken.json.error as { code: string }).code, 'SESSION_REQUIRED');
    assert.equal((await call(`/api/v1/me/services?device=${id}`, 'not-a-token')).status, 401);
    assert.equal((await call('/api/v1/me/services', sessions.alice ?? '')).status, 400);
    assert.equal((await call('/api/v1/me/services?device=../../x', sessions.alice ?? '')).status, 400);
  });

  void test('a disabled user sees nothing (the session is refused before the route, which would answer an empty list)', async () => {
    const id = await device('dora', { level: 'High', reasons: [] });
    assert.ok((await catalog('dora', id)).length > 0);
    await store.updateUser(users.dora ?? '', { disabled: true }, { actor: 'test' });
    const answer = await call(`/api/v1/me/services?device=${id}`, sessions.dora ?? '');
    assert.equal(answer.status, 401);
    assert.doesNotMatch(answer.text, /prod-k8s/);
  });

  void test('the route is in the OpenAPI document', async () => {
    const answer = await call('/api/v1/openapi.json', adminToken);
    assert.equal(answer.status, 200);
    const paths = answer.json.paths as Record<string, Record<string, unknown>>;
    assert.ok(paths['/api/v1/me/services']?.get !== undefined, Object.keys(paths).join(', '));
  });
});
