import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { silentLogger } from '../../lib/log.ts';
import { openStore } from '../store/index.ts';
import { createAdapterFactory, isKubernetesAudience, startPruning, storageId } from './adapter.ts';
import { secretBoxFromKey } from './secret-box.ts';

void describe('the oidc-provider adapter over the store', () => {
  void it('stores a token record under the SHA-256 of its id, without the id, and gives it back with its jti', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const adapter = createAdapterFactory({ store, secretBox: secretBoxFromKey(randomBytes(32)) })('AccessToken');
    const id = 'the-opaque-access-token-value-0123456789ab';
    await adapter.upsert(id, { jti: id, kind: 'AccessToken', accountId: 'u1', grantId: 'g1', exp: Math.floor(Date.now() / 1000) + 60 }, 60);
    assert.equal(await store.oidcFind('AccessToken', id), undefined);
    const raw = await store.oidcFind('AccessToken', storageId(id));
    assert.ok(raw !== undefined);
    assert.ok(!JSON.stringify(raw).includes(id));
    assert.deepEqual(await adapter.find(id), { ...raw, jti: id });
    assert.equal(await adapter.find('another-value'), undefined);
    await adapter.consume(id);
    assert.equal(typeof (await adapter.find(id))?.consumed, 'number');
    await adapter.revokeByGrantId('g1');
    assert.equal(await adapter.find(id), undefined);
  });

  void it('keeps the jti of records found by user code or uid sealed, and restores it', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const factory = createAdapterFactory({ store, secretBox: secretBoxFromKey(randomBytes(32)) });
    const deviceCodes = factory('DeviceCode');
    const deviceCode = 'device-code-secret-value-0123456789abcdefgh';
    await deviceCodes.upsert(deviceCode, { jti: deviceCode, kind: 'DeviceCode', userCode: 'BCDFGHJK', grantId: 'g2' }, 600);
    const raw = await store.oidcFind('DeviceCode', storageId(deviceCode));
    assert.ok(raw !== undefined && !JSON.stringify(raw).includes(deviceCode) && typeof raw.sealedJti === 'string');
    const found = await deviceCodes.findByUserCode('BCDFGHJK');
    assert.equal(found?.jti, deviceCode);
    assert.equal((found as Record<string, unknown>).sealedJti, undefined);
    // A record sealed under another key (or tampered with) is not found rather than misread.
    const other = createAdapterFactory({ store, secretBox: secretBoxFromKey(randomBytes(32)) })('DeviceCode');
    assert.equal(await other.findByUserCode('BCDFGHJK'), undefined);

    const sessions = factory('Session');
    await sessions.upsert('session-cookie-value-0123456789abcdefghij', { jti: 'session-cookie-value-0123456789abcdefghij', kind: 'Session', uid: 'uid-1', accountId: 'u1' }, 600);
    assert.equal((await sessions.findByUid('uid-1'))?.jti, 'session-cookie-value-0123456789abcdefghij');
  });

  void it('resolves kubernetes:<clusterName> clients from the Kubernetes services in the store, and nothing else', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const clients = createAdapterFactory({ store, secretBox: secretBoxFromKey(randomBytes(32)) })('Client');
    assert.equal(await clients.find('kubernetes:prod'), undefined);
    await store.putObject({ kind: 'Service', name: 'prod-k8s', spec: { type: 'kubernetes', cluster: 'c', accessTier: '*', domain: 'k.example.com', port: 443, kubernetes: { clusterName: 'prod', caPublicKey: 'x' } } }, { actor: 'system' });
    await store.putObject({ kind: 'Service', name: 'db', spec: { type: 'tcp', cluster: 'c', accessTier: '*', domain: 'db.example.com', port: 5432 } }, { actor: 'system' });
    const client = await clients.find('kubernetes:prod');
    assert.equal(client?.client_id, 'kubernetes:prod');
    assert.equal(client?.token_endpoint_auth_method, 'none');
    assert.deepEqual(client?.grant_types, []);
    assert.deepEqual(client?.redirect_uris, []);
    assert.equal(await isKubernetesAudience(store, 'kubernetes:db'), false);
    assert.equal(await clients.find('prod'), undefined);
    await clients.upsert('kubernetes:evil', { client_id: 'kubernetes:evil' });
    assert.equal(await clients.find('kubernetes:evil'), undefined);
  });

  void it('prunes expired records on its timer', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    let now = Date.now();
    const adapter = createAdapterFactory({ store, secretBox: secretBoxFromKey(randomBytes(32)), clock: { now: () => now } })('AuthorizationCode');
    await adapter.upsert('code-1', { kind: 'AuthorizationCode' }, 1);
    now += 10_000;
    let pruned = 0;
    const pruning = { oidcPrune: async (at: string): Promise<number> => (pruned += await store.oidcPrune(at)) };
    const stop = startPruning({ store: pruning, clock: { now: () => now }, logger: silentLogger(), everyMs: 5 });
    t.after(stop);
    while (pruned === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(pruned, 1);
  });
});
