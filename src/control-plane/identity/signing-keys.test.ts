import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { compactVerify, importJWK, SignJWT } from 'jose';
import { openStore } from '../store/index.ts';
import { secretBoxFromKey } from './secret-box.ts';
import { loadSigningKeys, SIGNING_KEYS_SETTING_KEY } from './signing-keys.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

class ManualClock {
  #now = Date.parse('2030-01-01T00:00:00Z');
  now(): number {
    return this.#now;
  }
  advance(ms: number): void {
    this.#now += ms;
  }
}

void describe('signing keys', () => {
  void it('start with one current RS256 and one current ES256 key, both published', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const keys = await loadSigningKeys({ store, secretBox: secretBoxFromKey(randomBytes(32)) });
    t.after(() => keys.close());
    assert.deepEqual(keys.list().map((k) => [k.alg, k.stage]).sort(), [['ES256', 'current'], ['RS256', 'current']]);
    assert.deepEqual(keys.publicJwks().keys.map((k) => k.kty).sort(), ['EC', 'RSA']);
    for (const alg of ['RS256', 'ES256'] as const) {
      const { kid, privateKey } = keys.current(alg);
      const jwt = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg, kid }).sign(privateKey);
      const jwk = keys.publicJwks().keys.find((k) => k.kid === kid);
      assert.ok(jwk !== undefined);
      await compactVerify(jwt, await importJWK(jwk, alg));
    }
  });

  void it('publish the next key ahead, switch to it, and drop the retired one after the overlap (OP-08 stages)', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const clock = new ManualClock();
    const options = { store, secretBox: secretBoxFromKey(randomBytes(32)), clock, publishAheadMs: HOUR, retireAfterMs: DAY, rotateEveryMs: 10 * DAY, checkEveryMs: 3_600_000 };
    const keys = await loadSigningKeys(options);
    t.after(() => keys.close());
    let changes = 0;
    keys.onChange(() => changes++);
    const first = keys.current('RS256').kid;

    clock.advance(9 * DAY);
    assert.equal(await keys.check(), false);
    clock.advance(DAY - HOUR);
    assert.equal(await keys.check(), true);
    const next = keys.list().find((k) => k.alg === 'RS256' && k.stage === 'next');
    assert.ok(next !== undefined);
    assert.equal(keys.current('RS256').kid, first, 'the next key is published but does not sign yet');
    assert.ok(keys.publicJwks().keys.some((k) => k.kid === next.kid));
    assert.deepEqual(keys.providerJwks().keys.find((k) => k.kid === next.kid)?.key_ops, ['verify']);

    clock.advance(HOUR);
    assert.equal(await keys.check(), true);
    assert.equal(keys.current('RS256').kid, next.kid);
    assert.equal(keys.list().find((k) => k.kid === first)?.stage, 'retired');
    assert.ok(keys.publicJwks().keys.some((k) => k.kid === first), 'the retired key stays published');

    clock.advance(DAY - 1);
    await keys.check();
    assert.ok(keys.publicJwks().keys.some((k) => k.kid === first));
    clock.advance(1);
    assert.equal(await keys.check(), true);
    assert.ok(!keys.publicJwks().keys.some((k) => k.kid === first), 'gone after the overlap');
    assert.equal(changes, 3);

    // A replica on the same database adopts what this one wrote.
    const replica = await loadSigningKeys(options);
    t.after(() => replica.close());
    assert.deepEqual(replica.list().map((k) => k.kid), keys.list().map((k) => k.kid));
    assert.equal(replica.current('ES256').kid, keys.current('ES256').kid);
  });

  void it('CP-16 after rotations the database holds no PRIVATE KEY and no private JWK member in the clear', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'causeway-signing-keys-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const store = await openStore({ url: `sqlite:${join(dir, 'db.sqlite')}` });
    const clock = new ManualClock();
    const keys = await loadSigningKeys({ store, secretBox: secretBoxFromKey(randomBytes(32)), clock, publishAheadMs: HOUR, retireAfterMs: DAY, rotateEveryMs: 2 * DAY, checkEveryMs: 3_600_000 });
    for (let i = 0; i < 8; i++) {
      clock.advance(DAY);
      await keys.check();
    }
    const setting = (await store.getSetting(SIGNING_KEYS_SETTING_KEY)) ?? '';
    keys.close();
    await store.close();
    assert.ok(setting.length > 0);
    assert.ok(!setting.includes('"d":'));
    let everything = '';
    for (const file of await readdir(dir)) everything += (await readFile(join(dir, file))).toString('latin1');
    assert.ok(everything.includes('"kid":'), 'the scan reads the stored keys');
    for (const marker of ['PRIVATE KEY', '"d":', '"p":', '"q":', '"dp":', '"dq":', '"qi":']) assert.ok(!everything.includes(marker), `no ${marker} in the database`);
  });
});
