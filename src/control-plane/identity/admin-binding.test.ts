import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { covers, mayWriteKind, parseStoredBinding, resolveGrant } from './admin-binding.ts';
import type { NamedBinding } from './admin-binding.ts';

function binding(name: string, role: 'admin' | 'viewer', who: { users?: string[]; groups?: string[] }, kinds: string[] = []): NamedBinding {
  return { name, spec: { role, users: who.users ?? [], groups: who.groups ?? [], kinds } };
}

const BINDINGS = [
  binding('platform', 'admin', { groups: ['platform'] }),
  binding('services', 'admin', { groups: ['svc'] }, ['Service']),
  binding('policies', 'admin', { users: ['rita'] }, ['Policy', 'Role']),
  binding('auditors', 'viewer', { groups: ['audit'] }),
];

void describe('resolveGrant', () => {
  void test('a user no binding names has scope none', () => {
    assert.deepEqual(resolveGrant(BINDINGS, { name: 'nobody', groups: ['eng'] }), { scope: 'none', bindings: [] });
  });

  void test('a binding matches by user name or by group', () => {
    assert.equal(resolveGrant(BINDINGS, { name: 'vera', groups: ['audit'] }).scope, 'viewer');
    assert.deepEqual(resolveGrant(BINDINGS, { name: 'rita', groups: [] }), { scope: 'admin', kinds: ['Policy', 'Role'], bindings: ['policies'] });
  });

  void test('admin beats viewer, unrestricted beats restricted, and restricted admin kinds add up', () => {
    assert.deepEqual(resolveGrant(BINDINGS, { name: 'rita', groups: ['svc', 'audit'] }), { scope: 'admin', kinds: ['Policy', 'Role', 'Service'], bindings: ['policies', 'services'] });
    assert.deepEqual(resolveGrant(BINDINGS, { name: 'rita', groups: ['svc', 'platform'] }), { scope: 'admin', bindings: ['platform'] });
  });

  void test('group names match exactly (no case folding, no prefixes)', () => {
    assert.equal(resolveGrant(BINDINGS, { name: 'x', groups: ['Platform', 'platform-admins', 'platfor'] }).scope, 'none');
  });
});

void describe('CP-17: covers and mayWriteKind', () => {
  const unrestricted = { scope: 'admin' };
  const restricted = { scope: 'admin', kinds: ['Policy', 'Role'] };
  const viewer = { scope: 'viewer' };

  void test('an unrestricted admin covers every binding', () => {
    assert.ok(covers(unrestricted, { role: 'admin', kinds: [] }));
    assert.ok(covers(unrestricted, { role: 'admin', kinds: ['Service'] }));
    assert.ok(covers(unrestricted, { role: 'viewer', kinds: [] }));
  });

  void test('a restricted admin covers viewer bindings and admin bindings for a subset of its kinds only', () => {
    assert.ok(covers(restricted, { role: 'viewer', kinds: [] }));
    assert.ok(covers(restricted, { role: 'admin', kinds: ['Policy'] }));
    assert.ok(covers(restricted, { role: 'admin', kinds: ['Role', 'Policy'] }));
    assert.ok(!covers(restricted, { role: 'admin', kinds: ['Policy', 'Service'] }), 'more kinds');
    assert.ok(!covers(restricted, { role: 'admin', kinds: [] }), 'unrestricted');
  });

  void test('a viewer and a user without a binding cover nothing', () => {
    for (const holder of [viewer, { scope: 'none' }]) {
      assert.ok(!covers(holder, { role: 'viewer', kinds: [] }));
      assert.ok(!covers(holder, { role: 'admin', kinds: ['Policy'] }));
    }
  });

  void test('a restricted admin writes only its kinds, and never IdentityProviders (they decide who is in which group)', () => {
    assert.ok(mayWriteKind(restricted, 'Policy'));
    assert.ok(!mayWriteKind(restricted, 'Service'));
    assert.ok(!mayWriteKind({ scope: 'admin', kinds: ['IdentityProvider'] }, 'IdentityProvider'));
    assert.ok(mayWriteKind(unrestricted, 'IdentityProvider'));
    assert.ok(!mayWriteKind(viewer, 'Policy'));
  });
});

void describe('parseStoredBinding', () => {
  const stored = { kind: 'AdminBinding', name: 'ops', metadata: {}, version: 1, createdAt: '', createdBy: '', updatedAt: '', updatedBy: '' };

  void test('a stored binding is read with its defaults', () => {
    assert.deepEqual(parseStoredBinding({ ...stored, spec: { role: 'viewer', groups: ['ops'] } }), { name: 'ops', spec: { role: 'viewer', users: [], groups: ['ops'], kinds: [] } });
  });

  void test('a stored binding that no longer passes its schema grants nothing', () => {
    assert.equal(parseStoredBinding({ ...stored, spec: { role: 'root', groups: ['ops'] } }), undefined);
    assert.equal(parseStoredBinding({ ...stored, kind: 'Role', spec: {} }), undefined);
  });
});
