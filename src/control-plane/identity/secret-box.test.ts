import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { openStore } from '../store/index.ts';
import { loadOrCreateSecretBox, SECRET_BOX_SETTING_KEY, secretBoxFromKey } from './secret-box.ts';

void describe('SecretBox', () => {
  void it('opens what it sealed, in the same context', () => {
    const box = secretBoxFromKey(randomBytes(32));
    const sealed = box.seal('the secret value ✓', 'totp:user-1');
    assert.equal(box.open(sealed, 'totp:user-1'), 'the secret value ✓');
    assert.ok(!sealed.includes('secret value'));
    assert.notEqual(box.seal('the secret value ✓', 'totp:user-1'), sealed, 'every seal has a fresh IV');
  });

  void it('refuses to open a value sealed for another context', () => {
    const box = secretBoxFromKey(randomBytes(32));
    const sealed = box.seal('x', 'totp:user-1');
    assert.throws(() => box.open(sealed, 'totp:user-2'), { code: 'SECRET_BOX_OPEN_FAILED' });
  });

  void it('refuses a tampered, truncated or foreign value', () => {
    const box = secretBoxFromKey(randomBytes(32));
    const sealed = box.seal('hello world', 'ctx');
    const [prefix, iv, body] = sealed.split('.');
    const bytes = Buffer.from(body, 'base64url');
    bytes[0] ^= 1;
    assert.throws(() => box.open(`${prefix}.${iv}.${bytes.toString('base64url')}`, 'ctx'), { code: 'SECRET_BOX_OPEN_FAILED' });
    assert.throws(() => box.open(`${prefix}.${iv}.${body.slice(0, 8)}`, 'ctx'), { code: 'SECRET_BOX_OPEN_FAILED' });
    assert.throws(() => box.open('not sealed', 'ctx'), { code: 'SECRET_BOX_OPEN_FAILED' });
    assert.throws(() => secretBoxFromKey(randomBytes(32)).open(sealed, 'ctx'), { code: 'SECRET_BOX_OPEN_FAILED' });
  });

  void it('derives the same key on every replica of one database, and refuses another passphrase', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const first = await loadOrCreateSecretBox(store, { passphrase: 'correct horse' });
    const second = await loadOrCreateSecretBox(store, { passphrase: 'correct horse' });
    assert.equal(second.open(first.seal('shared', 'c'), 'c'), 'shared');
    await assert.rejects(loadOrCreateSecretBox(store, { passphrase: 'wrong horse' }), { code: 'SECRET_BOX_PASSPHRASE_WRONG' });
  });

  void it('CP-16 keeps no key material in the settings in the clear: only a salt and a sealed check value', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    await loadOrCreateSecretBox(store, { passphrase: 'correct horse' });
    const setting = JSON.parse((await store.getSetting(SECRET_BOX_SETTING_KEY)) ?? '{}') as Record<string, unknown>;
    assert.deepEqual(Object.keys(setting).sort(), ['check', 'format', 'salt']);
    assert.match(String(setting.check), /^sb1\./);
    assert.ok(!JSON.stringify(setting).includes('correct horse'));
  });
});
