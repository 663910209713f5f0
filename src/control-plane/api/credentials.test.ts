/**
 * The credential routes mounted under /api/v1 behind the real auth hook (API tokens), as server.ts
 * mounts API routes, over an in-memory SQLite store.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { apiTokenAuthenticator, authHook, FailureLimiter } from '../auth.ts';
import { createDirectory, totpContext } from '../identity/directory.ts';
import { verifyPassword } from '../identity/passwords.ts';
import { loadOrCreateSecretBox } from '../identity/secret-box.ts';
import type { SecretBox } from '../identity/secret-box.ts';
import { totpCode } from '../identity/totp.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { credentialRoutes } from './credentials.ts';
import { installErrorHandling } from './errors.ts';
import { errorSchema } from './schemas.ts';

const PASSWORD = 'a perfectly long password';

let store: Store;
let box: SecretBox;
let app: FastifyInstance;
let admin: string;
let viewer: string;

before(async () => {
  store = await openStore({ url: ':memory:' });
  box = await loadOrCreateSecretBox(store, { passphrase: 'test passphrase' });
  admin = (await store.createApiToken({ name: 'admin', scope: 'admin' }, { actor: 'test' })).token;
  viewer = (await store.createApiToken({ name: 'viewer', scope: 'viewer' }, { actor: 'test' })).token;
  app = Fastify({ logger: false, ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: true } } });
  installErrorHandling(app);
  app.addSchema(errorSchema);
  const hook = authHook({ authenticators: [apiTokenAuthenticator(store)], limiter: new FailureLimiter() });
  await app.register((api, _options, registered) => {
    api.addHook('onRequest', hook);
    credentialRoutes(api, { store, secretBox: box, totpIssuer: 'Causeway test' });
    registered();
  }, { prefix: '/api/v1' });
  await app.ready();
});
after(async () => {
  await app.close();
  await store.close();
});

async function call(method: 'PUT' | 'POST' | 'DELETE', url: string, body?: unknown, token: string = admin): Promise<{ status: number; body: string; json: () => unknown }> {
  const response = await app.inject({ method, url, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: response.statusCode, body: response.body, json: () => JSON.parse(response.body) as unknown };
}

async function credentials(name: string): Promise<{ passwordHash: string | null; totpSecret: string | null }> {
  const found = await store.getUserCredentials(name);
  assert.ok(found !== undefined);
  return found;
}

void describe('credential routes', () => {
  void test('PUT password stores a scrypt hash that verifies and answers 204 without a body', async () => {
    const user = await store.createUser({ name: 'pat' }, { actor: 'test' });
    const response = await call('PUT', '/api/v1/users/pat/password', { password: PASSWORD });
    assert.equal(response.status, 204);
    assert.equal(response.body, '');
    const { passwordHash } = await credentials('pat');
    assert.ok(passwordHash !== null && passwordHash.startsWith('scrypt$15$8$1$'));
    assert.equal(await verifyPassword(PASSWORD, passwordHash), true);
    assert.equal((await store.getUser(user.id))?.hasPassword, true);
    const audit = await store.queryAuditEvents({ kind: 'User', action: 'update' });
    assert.ok(audit.events.some((e) => e.actor.startsWith('token:')));
    assert.ok(!JSON.stringify(audit).includes(passwordHash), 'CP-11 the audit log holds no hash');
    assert.ok(!JSON.stringify(audit).includes(PASSWORD));
  });

  void test('a too short or too long password is refused with 400 and a message that says the limit', async () => {
    await store.createUser({ name: 'sam' }, { actor: 'test' });
    const short = await call('PUT', '/api/v1/users/sam/password', { password: 'short' });
    assert.equal(short.status, 400);
    assert.deepEqual((short.json() as { error: { code: string } }).error.code, 'PASSWORD_TOO_SHORT');
    assert.match(short.body, /at least 12/);
    const long = await call('PUT', '/api/v1/users/sam/password', { password: 'x'.repeat(1025) });
    assert.equal(long.status, 400);
    assert.match(long.body, /PASSWORD_TOO_LONG/);
    const extra = await call('PUT', '/api/v1/users/sam/password', { password: PASSWORD, hash: 'x' });
    assert.equal(extra.status, 400);
    assert.equal((await credentials('sam')).passwordHash, null);
  });

  void test('DELETE password removes it; an unknown user is 404', async () => {
    await store.createUser({ name: 'dee' }, { actor: 'test' });
    assert.equal((await call('PUT', '/api/v1/users/dee/password', { password: PASSWORD })).status, 204);
    assert.equal((await call('DELETE', '/api/v1/users/dee/password')).status, 204);
    assert.equal((await credentials('dee')).passwordHash, null);
    assert.equal((await call('DELETE', '/api/v1/users/dee/password')).status, 204);
    assert.equal((await call('PUT', '/api/v1/users/nobody/password', { password: PASSWORD })).status, 404);
  });

  void test('POST totp returns the secret and otpauth URI once, stores it sealed, and the directory accepts its codes', async () => {
    const user = await store.createUser({ name: 'tom' }, { actor: 'test' });
    await call('PUT', '/api/v1/users/tom/password', { password: PASSWORD });
    const response = await call('POST', '/api/v1/users/tom/totp');
    assert.equal(response.status, 200);
    const { secret, uri } = response.json() as { secret: string; uri: string };
    assert.match(secret, /^[A-Z2-7]{32}$/);
    assert.ok(uri.startsWith('otpauth://totp/Causeway%20test:tom?'));
    assert.equal(new URL(uri).searchParams.get('secret'), secret);
    const { totpSecret } = await credentials('tom');
    assert.ok(totpSecret !== null && !totpSecret.includes(secret), 'stored sealed, not in the clear');
    assert.equal(box.open(totpSecret, totpContext(user.id)), secret);
    assert.equal((await store.getUser(user.id))?.hasTotp, true);
    const directory = createDirectory({ store, secretBox: box });
    assert.equal((await directory.authenticate({ name: 'tom', password: PASSWORD, totp: totpCode(secret, Date.now()), source: '10.0.0.1' })).ok, true);
    const audit = JSON.stringify(await store.queryAuditEvents({ kind: 'User' }));
    assert.ok(!audit.includes(secret) && !audit.includes(totpSecret), 'CP-11 the audit log holds neither the secret nor its sealed form');

    // A second POST replaces it; DELETE removes it.
    const again = (await call('POST', '/api/v1/users/tom/totp')).json() as { secret: string };
    assert.notEqual(again.secret, secret);
    assert.equal((await call('DELETE', '/api/v1/users/tom/totp')).status, 204);
    assert.equal((await credentials('tom')).totpSecret, null);
  });

  void test('users of an org IdP get neither a password nor TOTP here (409)', async () => {
    await store.createUser({ name: 'ivy', source: 'idp:corp' }, { actor: 'test' });
    const password = await call('PUT', '/api/v1/users/ivy/password', { password: PASSWORD });
    assert.equal(password.status, 409);
    assert.match(password.body, /USER_NOT_LOCAL/);
    assert.match(password.body, /idp:corp/);
    assert.equal((await call('POST', '/api/v1/users/ivy/totp')).status, 409);
    const { passwordHash, totpSecret } = await credentials('ivy');
    assert.equal(passwordHash, null);
    assert.equal(totpSecret, null);
  });

  void test('POST unlock lifts a lock and answers the user without secrets', async () => {
    const user = await store.createUser({ name: 'lou' }, { actor: 'test' });
    await store.recordLoginFailure(user.id, { at: new Date().toISOString(), maxFailures: 1, lockMs: 3_600_000 });
    assert.ok((await store.getUser(user.id))?.lockedUntil !== null);
    const response = await call('POST', '/api/v1/users/lou/unlock');
    assert.equal(response.status, 200);
    const body = response.json() as { name: string; lockedUntil: string | null };
    assert.equal(body.name, 'lou');
    assert.equal(body.lockedUntil, null);
    assert.doesNotMatch(response.body, /passwordHash|totpSecret|scrypt\$/);
    const audit = await store.queryAuditEvents({ kind: 'User', action: 'unlock' });
    assert.equal(audit.events.length, 1);
  });

  void test('CP-01 a viewer token is refused on every credential route and nothing changes', async () => {
    await store.createUser({ name: 'vic' }, { actor: 'test' });
    for (const [method, url, body] of [['PUT', '/api/v1/users/vic/password', { password: PASSWORD }], ['DELETE', '/api/v1/users/vic/password'], ['POST', '/api/v1/users/vic/totp'], ['DELETE', '/api/v1/users/vic/totp'], ['POST', '/api/v1/users/vic/unlock']] as const) {
      assert.equal((await call(method, url, body, viewer)).status, 403, `${method} ${url}`);
      assert.equal((await call(method, url, body, 'cwat_nonsense')).status, 401, `${method} ${url}`);
    }
    const { passwordHash, totpSecret } = await credentials('vic');
    assert.equal(passwordHash, null);
    assert.equal(totpSecret, null);
  });

  void test('If-Match with another version is a conflict and writes nothing', async () => {
    const user = await store.createUser({ name: 'ike' }, { actor: 'test' });
    const response = await app.inject({ method: 'PUT', url: '/api/v1/users/ike/password', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', 'if-match': String(user.version + 5) }, payload: JSON.stringify({ password: PASSWORD }) });
    assert.equal(response.statusCode, 409);
    assert.equal((await credentials('ike')).passwordHash, null);
  });
});
