import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { userSchema } from './schemas.ts';

void test('a user response carries the public identity fields and never a password hash or TOTP secret, even when the record holds one (CP-11)', async (t) => {
  const app = Fastify();
  t.after(() => app.close());
  const record = {
    id: 'u1',
    name: 'alice',
    email: null,
    groups: ['eng'],
    disabled: false,
    hasPassword: true,
    source: 'idp:corp',
    hasTotp: true,
    lockedUntil: '2026-05-01T12:15:00.000Z',
    lastLoginAt: null,
    version: 3,
    createdAt: '2026-05-01T12:00:00.000Z',
    createdBy: 'system',
    updatedAt: '2026-05-01T12:00:00.000Z',
    updatedBy: 'system',
    // What must never be sent, should a handler ever return a row or credentials by mistake.
    passwordHash: 'scrypt$secret-hash',
    password_hash: 'scrypt$secret-hash',
    totpSecret: 'sealed.totp-secret',
    totp_secret: 'sealed.totp-secret',
    failedLogins: 4,
  };
  app.get('/user', { schema: { response: { 200: userSchema } } }, () => record);
  const response = await app.inject({ method: 'GET', url: '/user' });
  assert.equal(response.statusCode, 200);
  const body = response.json<Record<string, unknown>>();
  assert.equal(body.source, 'idp:corp');
  assert.equal(body.hasTotp, true);
  assert.equal(body.lockedUntil, '2026-05-01T12:15:00.000Z');
  assert.equal(body.lastLoginAt, null);
  for (const field of ['passwordHash', 'password_hash', 'totpSecret', 'totp_secret', 'failedLogins']) assert.equal(field in body, false, field);
  assert.ok(!response.body.includes('secret-hash'));
  assert.ok(!response.body.includes('totp-secret'));
});
