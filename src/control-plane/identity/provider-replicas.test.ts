/**
 * Two control planes (replicas) on one PostgreSQL database: a login on one is refreshed and exchanged on
 * the other, a reused refresh token is caught across them, and a key rotation by one is adopted by the
 * other at its next check.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import pg from 'pg';
import { secretBoxFromKey } from './secret-box.ts';
import { startIdentityHarness } from './identity.testing.ts';
import type { IdentityHarness } from './identity.testing.ts';

const adminUrl = process.env.CAUSEWAY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const SCOPE = 'openid email profile groups offline_access';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function token(h: IdentityHarness, form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await h.fetch(`${h.publicUrl}/oidc/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: new URLSearchParams({ client_id: 'causeway-cli', ...form }).toString() });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

void describe('the OIDC provider on two replicas sharing PostgreSQL', () => {
  const name = `causeway_identity_${randomBytes(4).toString('hex')}`;
  const url = adminUrl.replace(/\/[^/]*$/, `/${name}`);
  let now = Date.now();
  const clock = { now: () => now };
  const DAY = 86_400_000;
  const secretBox = secretBoxFromKey(randomBytes(32));
  const keys = { publishAheadMs: 3_600_000, retireAfterMs: DAY, rotateEveryMs: 10 * DAY, checkEveryMs: 3_600_000 };
  let a: IdentityHarness;
  let b: IdentityHarness;
  before(async () => {
    await admin(`CREATE DATABASE ${name}`);
    a = await startIdentityHarness({ storeUrl: url, secretBox, clock, signingKeys: keys });
    b = await startIdentityHarness({ storeUrl: url, secretBox, clock, signingKeys: keys, seed: false });
  });
  after(async () => {
    await b.close();
    await a.close();
    await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });

  void it('a login on one replica refreshes and exchanges on the other, and reuse of a spent refresh token is caught across them', async () => {
    const login = await token(a, { grant_type: 'password', username: 'alice', password: 'alice-password', scope: SCOPE });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const refreshed = await token(b, { grant_type: 'refresh_token', refresh_token: String(login.body.refresh_token) });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    const kube = await token(b, { grant_type: TOKEN_EXCHANGE, subject_token: String(refreshed.body.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod' });
    assert.equal(kube.status, 200, JSON.stringify(kube.body));
    assert.equal((await token(a, { grant_type: 'refresh_token', refresh_token: String(login.body.refresh_token) })).body.error, 'invalid_grant');
    assert.equal((await token(b, { grant_type: 'refresh_token', refresh_token: String(refreshed.body.refresh_token) })).body.error, 'invalid_grant');
  });

  void it('both replicas publish the same keys, and a rotation by one is adopted by the other', async () => {
    const jwks = async (h: IdentityHarness): Promise<string[]> => ((await (await h.fetch(`${h.publicUrl}/oidc/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid).sort();
    assert.deepEqual(await jwks(a), await jwks(b));
    now += 10 * DAY;
    assert.equal(await a.identity.signingKeys.check(), true);
    assert.equal((await jwks(a)).length, 4);
    assert.equal(await b.identity.signingKeys.check(), true);
    assert.deepEqual(await jwks(b), await jwks(a));
    now += 3_600_000;
    await a.identity.signingKeys.check();
    await b.identity.signingKeys.check();
    const fromA = await token(a, { grant_type: 'password', username: 'bob', password: 'bob-password', scope: 'openid' });
    const fromB = await token(b, { grant_type: 'password', username: 'bob', password: 'bob-password', scope: 'openid' });
    assert.equal(decodeProtectedHeader(String(fromA.body.id_token)).kid, decodeProtectedHeader(String(fromB.body.id_token)).kid);
  });
});
