import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorCode } from '../../lib/errors.ts';
import { checkPasswordPolicy, dummyPasswordHash, hashPassword, isPasswordHash, verifyPassword } from './passwords.ts';

void test('a hashed password verifies, a wrong one does not, and the hash says how it was made', async () => {
  const hash = await hashPassword('correct horse battery staple');
  assert.match(hash, /^scrypt\$15\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
  assert.ok(isPasswordHash(hash));
  assert.equal(await verifyPassword('correct horse battery staple', hash), true);
  assert.equal(await verifyPassword('correct horse battery stapl', hash), false);
  assert.equal(await verifyPassword('', hash), false);
});

void test('two hashes of one password differ (random salt)', async () => {
  const [a, b] = await Promise.all([hashPassword('the same password'), hashPassword('the same password')]);
  assert.notEqual(a, b);
});

void test('passwords are compared after Unicode NFC normalisation', async () => {
  const composed = 'pässwörd-long-enough';
  const decomposed = composed.normalize('NFD');
  assert.notEqual(composed, decomposed);
  assert.equal(await verifyPassword(decomposed, await hashPassword(composed)), true);
});

void test('passwords shorter than 12 or longer than 1024 characters are refused with a message that says the limit', async () => {
  await assert.rejects(hashPassword('short'), (err: Error) => errorCode(err) === 'PASSWORD_TOO_SHORT' && /at least 12/.test(err.message));
  assert.throws(() => checkPasswordPolicy('x'.repeat(1025)), (err: Error) => errorCode(err) === 'PASSWORD_TOO_LONG' && /at most 1024/.test(err.message));
  assert.doesNotThrow(() => checkPasswordPolicy('x'.repeat(1024)));
  assert.doesNotThrow(() => checkPasswordPolicy('abcdefghijkl'));
  // 12 characters that are 24 UTF-16 units count as 12.
  assert.doesNotThrow(() => checkPasswordPolicy('😀'.repeat(12)));
  assert.throws(() => checkPasswordPolicy('😀'.repeat(11)), (err: Error) => errorCode(err) === 'PASSWORD_TOO_SHORT');
});

void test('a malformed, truncated or too costly stored hash never matches and does not throw', async () => {
  const good = await hashPassword('a long enough password');
  for (const bad of ['', 'plain', good.slice(0, -4), good.replace('scrypt$15', 'scrypt$30'), good.replace('scrypt$15', 'scrypt$5'), `${good}$x`, good.replace('$8$', '$0$')]) {
    assert.equal(await verifyPassword('a long enough password', bad), false, bad);
    assert.equal(isPasswordHash(bad), false);
  }
});

void test('the dummy hash is a real hash made once, and no password a user could type matches it', async () => {
  const first = await dummyPasswordHash();
  assert.equal(await dummyPasswordHash(), first);
  assert.ok(isPasswordHash(first));
  assert.equal(await verifyPassword('', first), false);
  assert.equal(await verifyPassword('password1234', first), false);
});

void test('an over-long password is refused at verification without an error', async () => {
  const hash = await hashPassword('a long enough password');
  assert.equal(await verifyPassword('a'.repeat(100_000), hash), false);
});
