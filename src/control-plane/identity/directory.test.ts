/**
 * The built-in directory's login check against the real SQLite store (in memory) and a real
 * SecretBox, with a clock the tests move.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Clock } from '../../lib/clock.ts';
import { FailureLimiter } from '../auth.ts';
import { openStore } from '../store/index.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { createDirectory, totpContext } from './directory.ts';
import type { DirectoryOptions, LoginResult } from './directory.ts';
import { hashPassword } from './passwords.ts';
import { loadOrCreateSecretBox } from './secret-box.ts';
import type { SecretBox } from './secret-box.ts';
import { newTotpSecret, totpCode } from './totp.ts';

const PASSWORD = 'correct horse battery staple';
const ADMIN = { actor: 'test' };

class TestClock implements Clock {
  ms = Date.parse('2026-03-01T10:00:00.000Z');
  now(): number {
    return this.ms;
  }
}

let store: Store;
let box: SecretBox;
let passwordHash: string;
const clock = new TestClock();
let counter = 0;

before(async () => {
  store = await openStore({ url: ':memory:', clock });
  box = await loadOrCreateSecretBox(store, { passphrase: 'test passphrase' });
  passwordHash = await hashPassword(PASSWORD);
});
after(async () => {
  await store.close();
});

async function newUser(extra: { disabled?: boolean; source?: string; password?: boolean; totp?: boolean } = {}): Promise<{ user: UserRecord; totpSecret?: string }> {
  counter += 1;
  const user = await store.createUser({ name: `user-${counter}`, groups: ['eng'], disabled: extra.disabled ?? false, source: extra.source ?? 'local', passwordHash: extra.password === false ? null : passwordHash }, ADMIN);
  if (extra.totp !== true) return { user };
  const totpSecret = newTotpSecret();
  const updated = await store.updateUser(user.id, { totpSecret: box.seal(totpSecret, totpContext(user.id)) }, { ...ADMIN, expectedVersion: user.version });
  return { user: updated, totpSecret };
}

function directory(options: Partial<DirectoryOptions> = {}): ReturnType<typeof createDirectory> {
  return createDirectory({ store, secretBox: box, clock, limiter: new FailureLimiter({ clock, burst: 1000 }), ...options });
}

function assertFailure(result: LoginResult, code: string): asserts result is Extract<LoginResult, { ok: false }> {
  assert.equal(result.ok, false, JSON.stringify(result));
  if (!result.ok) assert.equal(result.code, code, result.message);
}

async function auditActions(name: string): Promise<string[]> {
  const page = await store.queryAuditEvents({ kind: 'User', name, limit: 100 });
  return page.events.map((e) => e.action).reverse();
}

void describe('the built-in directory', () => {
  void test('the right user name and password log in, record the login time and audit it', async () => {
    const { user } = await newUser();
    const result = await directory().authenticate({ name: user.name, password: PASSWORD, source: '10.1.0.1' });
    assert.equal(result.ok, true);
    if (result.ok) {
      assert.equal(result.user.id, user.id);
      assert.ok(!('passwordHash' in result.user));
    }
    const stored = await store.getUser(user.id);
    assert.equal(stored?.lastLoginAt, new Date(clock.ms).toISOString());
    assert.deepEqual((await auditActions(user.name)).filter((a) => a === 'login'), ['login']);
    const events = await store.queryAuditEvents({ action: 'login', name: user.name });
    assert.equal(events.events[0]?.actor, `user:${user.name}`);
    assert.ok(!JSON.stringify(events).includes(PASSWORD));
  });

  void test('an unknown user, a disabled user, an IdP user, a user without a password and a wrong password all answer invalid-credentials alike', async () => {
    const d = directory();
    const disabled = (await newUser({ disabled: true })).user;
    const idp = (await newUser({ source: 'idp:corp' })).user;
    const noPassword = (await newUser({ password: false })).user;
    const { user } = await newUser();
    const results = [
      await d.authenticate({ name: 'nobody-here', password: PASSWORD, source: '10.1.0.2' }),
      await d.authenticate({ name: disabled.name, password: PASSWORD, source: '10.1.0.2' }),
      await d.authenticate({ name: idp.name, password: PASSWORD, source: '10.1.0.2' }),
      await d.authenticate({ name: noPassword.name, password: PASSWORD, source: '10.1.0.2' }),
      await d.authenticate({ name: user.name, password: 'wrong password here', source: '10.1.0.2' }),
      await d.authenticate({ name: '', password: '', source: '10.1.0.2' }),
      await d.authenticate({ name: 'x'.repeat(10_000), password: 'y'.repeat(100_000), source: '10.1.0.2' }),
    ];
    for (const result of results) {
      assertFailure(result, 'invalid-credentials');
      assert.equal(result.message, 'invalid user name or password');
    }
    assert.deepEqual(await auditActions(disabled.name), ['login-failed']);
    const failed = await store.queryAuditEvents({ action: 'login-failed', name: idp.name });
    assert.equal(failed.events[0]?.actor, 'login:10.1.0.2');
    assert.deepEqual(failed.events[0]?.after, { source: '10.1.0.2', reason: 'user logs in through idp:corp' });
  });

  void test('CP-12 after five wrong passwords the account is locked, and even the right password answers locked until the lock runs out', async () => {
    const { user } = await newUser();
    const d = directory();
    for (let i = 1; i <= 4; i++) assertFailure(await d.authenticate({ name: user.name, password: `wrong password ${i}`, source: `10.2.0.${i}` }), 'invalid-credentials');
    const fifth = await d.authenticate({ name: user.name, password: 'wrong password 5', source: '10.2.0.5' });
    assertFailure(fifth, 'locked');
    assert.equal(fifth.message, 'account locked; try again in 15 minutes');
    const right = await d.authenticate({ name: user.name, password: PASSWORD, source: '10.2.0.6' });
    assertFailure(right, 'locked');
    assert.ok((await store.getUser(user.id))?.lockedUntil !== null);
    assert.deepEqual((await auditActions(user.name)).filter((a) => a === 'locked'), ['locked']);

    clock.ms += 14 * 60_000;
    assertFailure(await d.authenticate({ name: user.name, password: PASSWORD, source: '10.2.0.7' }), 'locked');
    clock.ms += 60_000 + 1;
    const later = await d.authenticate({ name: user.name, password: PASSWORD, source: '10.2.0.8' });
    assert.equal(later.ok, true);
    const after = await store.getUserCredentials(user.name);
    assert.equal(after?.failedLogins, 0);
    assert.equal(after?.user.lockedUntil, null);
  });

  void test('CP-12 an administrator unlock lets the right password in at once', async () => {
    const { user } = await newUser();
    const d = directory({ maxFailures: 2 });
    await d.authenticate({ name: user.name, password: 'wrong password 1', source: '10.3.0.1' });
    assertFailure(await d.authenticate({ name: user.name, password: 'wrong password 2', source: '10.3.0.1' }), 'locked');
    await store.unlockUser(user.id, { ...ADMIN, expectedVersion: (await store.getUser(user.id))?.version });
    assert.equal((await d.authenticate({ name: user.name, password: PASSWORD, source: '10.3.0.1' })).ok, true);
  });

  void test('a success resets the failure count, so failures must come in a row to lock', async () => {
    const { user } = await newUser();
    const d = directory({ maxFailures: 3 });
    for (let round = 0; round < 3; round++) {
      assertFailure(await d.authenticate({ name: user.name, password: 'wrong password x', source: '10.4.0.1' }), 'invalid-credentials');
      assertFailure(await d.authenticate({ name: user.name, password: 'wrong password y', source: '10.4.0.1' }), 'invalid-credentials');
      assert.equal((await d.authenticate({ name: user.name, password: PASSWORD, source: '10.4.0.1' })).ok, true);
    }
  });

  void test('CP-12 a source address that fails too often is rate-limited before any check, the right password included; other addresses are not', async () => {
    const { user } = await newUser();
    const d = directory({ limiter: new FailureLimiter({ clock, burst: 3, refillPerSecond: 0.2 }), maxFailures: 100 });
    for (let i = 0; i < 3; i++) assertFailure(await d.authenticate({ name: `nobody-${i}`, password: 'whatever it is', source: '2001:db8:1:2::1' }), 'invalid-credentials');
    const limited = await d.authenticate({ name: user.name, password: PASSWORD, source: '2001:db8:1:2::99' });
    assertFailure(limited, 'rate-limited');
    assert.equal(limited.retryAfterSeconds, 5);
    assert.match(limited.message, /try again in 5 s/);
    assert.equal((await d.authenticate({ name: user.name, password: PASSWORD, source: '2001:db8:1:3::1' })).ok, true);
    clock.ms += 5_000;
    assert.equal((await d.authenticate({ name: user.name, password: PASSWORD, source: '2001:db8:1:2::1' })).ok, true);
  });

  void test('with TOTP: no code after the right password asks for one without counting a failure; a wrong password never reveals that TOTP is on', async () => {
    const { user } = await newUser({ totp: true });
    const d = directory({ maxFailures: 3 });
    for (let i = 0; i < 5; i++) {
      const result = await d.authenticate({ name: user.name, password: PASSWORD, source: '10.5.0.1' });
      assertFailure(result, 'totp-required');
      assert.match(result.message, /TOTP code is required/);
    }
    assert.equal((await store.getUserCredentials(user.name))?.failedLogins, 0);
    assertFailure(await d.authenticate({ name: user.name, password: 'wrong password', source: '10.5.0.1' }), 'invalid-credentials');
    assertFailure(await d.authenticate({ name: user.name, password: 'wrong password', totp: '123456', source: '10.5.0.1' }), 'invalid-credentials');
  });

  void test('with TOTP: the current code logs in, a wrong code counts as a failure and locks like a wrong password', async () => {
    const { user, totpSecret } = await newUser({ totp: true });
    assert.ok(totpSecret !== undefined);
    const d = directory({ maxFailures: 3 });
    assert.equal((await d.authenticate({ name: user.name, password: PASSWORD, totp: totpCode(totpSecret, clock.ms), source: '10.6.0.1' })).ok, true);
    const wrong = String((Number(totpCode(totpSecret, clock.ms + 120_000)) + 1) % 1_000_000).padStart(6, '0');
    assertFailure(await d.authenticate({ name: user.name, password: PASSWORD, totp: wrong, source: '10.6.0.1' }), 'totp-invalid');
    assertFailure(await d.authenticate({ name: user.name, password: PASSWORD, totp: 'abcdef', source: '10.6.0.1' }), 'totp-invalid');
    assertFailure(await d.authenticate({ name: user.name, password: PASSWORD, totp: wrong, source: '10.6.0.1' }), 'locked');
  });

  void test('TOTP replay: a code once accepted is refused for the rest of its window, on this replica and on another sharing the store', async () => {
    const { user, totpSecret } = await newUser({ totp: true });
    assert.ok(totpSecret !== undefined);
    const first = directory();
    const second = directory();
    clock.ms = Math.floor(clock.ms / 30_000) * 30_000 + 1_000;
    const code = totpCode(totpSecret, clock.ms);
    assert.equal((await first.authenticate({ name: user.name, password: PASSWORD, totp: code, source: '10.7.0.1' })).ok, true);
    assertFailure(await first.authenticate({ name: user.name, password: PASSWORD, totp: code, source: '10.7.0.1' }), 'totp-invalid');
    assertFailure(await second.authenticate({ name: user.name, password: PASSWORD, totp: code, source: '10.7.0.2' }), 'totp-invalid');
    // 30 s later the same code is still inside the ±1 window, and still refused.
    clock.ms += 30_000;
    assertFailure(await first.authenticate({ name: user.name, password: PASSWORD, totp: code, source: '10.7.0.1' }), 'totp-invalid');
    // An older code (the step before the accepted one) is refused too; the new current code works.
    assertFailure(await second.authenticate({ name: user.name, password: PASSWORD, totp: totpCode(totpSecret, clock.ms - 60_000), source: '10.7.0.2' }), 'totp-invalid');
    assert.equal((await second.authenticate({ name: user.name, password: PASSWORD, totp: totpCode(totpSecret, clock.ms), source: '10.7.0.2' })).ok, true);
    const failed = await store.queryAuditEvents({ action: 'login-failed', name: user.name });
    assert.ok(failed.events.some((e) => (e.after as { reason?: string }).reason === 'TOTP code already used'));
  });

  void test('a TOTP secret sealed for another user does not open, and the login is refused', async () => {
    const { user } = await newUser();
    const other = await newUser();
    const secret = newTotpSecret();
    const updated = await store.updateUser(user.id, { totpSecret: box.seal(secret, totpContext(other.user.id)) }, { ...ADMIN, expectedVersion: user.version });
    assert.equal(updated.hasTotp, true);
    assertFailure(await directory().authenticate({ name: user.name, password: PASSWORD, totp: totpCode(secret, clock.ms), source: '10.8.0.1' }), 'totp-invalid');
  });

  void test('CP-09 a user name with control characters is audited escaped, on one line', async () => {
    await directory().authenticate({ name: 'evil\r\nuser\u001b[31m', password: 'whatever it is', source: '10.9.0.1' });
    const failed = await store.queryAuditEvents({ action: 'login-failed', name: 'evil\\u000d\\u000auser\\u001b[31m' });
    assert.equal(failed.events.length, 1);
  });
});
