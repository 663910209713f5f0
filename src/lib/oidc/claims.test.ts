import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CausewayError } from '../errors.ts';
import { AUTHENTICATED_GROUP, mapClaims } from './claims.ts';
import type { ClaimMapping } from './claims.ts';

function refused(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof CausewayError && err.code === code);
}

void describe('mapClaims', () => {
  void test('maps email and groups, always adding system:authenticated', () => {
    assert.deepEqual(mapClaims({ email: 'ada@example.com', email_verified: true, groups: ['eng', 'ops'] }), {
      username: 'ada@example.com',
      groups: ['eng', 'ops', AUTHENTICATED_GROUP],
      droppedGroups: [],
    });
    assert.deepEqual(mapClaims({ email: 'ada@example.com' }).groups, [AUTHENTICATED_GROUP]);
  });

  void test('exposes the device a Causeway kube token names, beside (never among) the groups; an unusable value is left out', () => {
    const mapped = mapClaims({ email: 'ada@example.com', groups: ['eng'], device: '3f1c2d9e-0000-4000-8000-000000000001', device_trust: 'Trusted' });
    assert.deepEqual(mapped, { username: 'ada@example.com', groups: ['eng', AUTHENTICATED_GROUP], droppedGroups: [], device: '3f1c2d9e-0000-4000-8000-000000000001' });
    for (const device of ['', 42, ['d'], 'd\nX-Injected: 1', 'x'.repeat(201)]) {
      assert.equal(Object.hasOwn(mapClaims({ email: 'ada@example.com', device }), 'device'), false, JSON.stringify(device));
    }
  });

  void test('takes other claims and prefixes', () => {
    const mapped = mapClaims({ sub: '1234', roles: 'admins' }, { usernameClaim: 'sub', groupsClaim: 'roles', usernamePrefix: 'oidc:', groupsPrefix: 'oidc:' });
    assert.deepEqual(mapped, { username: 'oidc:1234', groups: ['oidc:admins', AUTHENTICATED_GROUP], droppedGroups: [] });
  });

  void test('KP-10: an IdP group can never become system:masters or system:nodes; with a prefix it is harmless', () => {
    const groups = ['system:masters', 'system:nodes', 'SYSTEM:MASTERS', 'System:Masters', 'system:authenticated', 'eng'];
    const plain = mapClaims({ email: 'ada@example.com', groups });
    assert.deepEqual(plain.groups, ['eng', AUTHENTICATED_GROUP]);
    assert.deepEqual(plain.droppedGroups, ['system:masters', 'system:nodes', 'SYSTEM:MASTERS', 'System:Masters', 'system:authenticated']);
    const prefixed = mapClaims({ email: 'ada@example.com', groups }, { groupsPrefix: 'idp:' });
    assert.ok(prefixed.groups.every((g) => g === AUTHENTICATED_GROUP || g.startsWith('idp:')));
    assert.ok(prefixed.groups.includes('idp:system:masters'));
    assert.deepEqual(prefixed.droppedGroups, []);
  });

  void test('KP-10: a username in system: is refused unless prefixed, including one the prefix itself completes', () => {
    refused(() => mapClaims({ email: 'system:admin' }), 'CLAIM_USERNAME_RESERVED');
    refused(() => mapClaims({ sub: 'system:serviceaccount:kube-system:default' }, { usernameClaim: 'sub' }), 'CLAIM_USERNAME_RESERVED');
    refused(() => mapClaims({ sub: 'System:Node:x' }, { usernameClaim: 'sub' }), 'CLAIM_USERNAME_RESERVED');
    refused(() => mapClaims({ sub: 'tem:masters' }, { usernameClaim: 'sub', usernamePrefix: 'sys' }), 'CLAIM_USERNAME_RESERVED');
    assert.equal(mapClaims({ sub: 'system:admin' }, { usernameClaim: 'sub', usernamePrefix: 'oidc:' }).username, 'oidc:system:admin');
  });

  void test('a prefix that is itself in system: is a configuration error', () => {
    refused(() => mapClaims({ email: 'a@b' }, { usernamePrefix: 'system:' }), 'CLAIM_MAPPING_INVALID');
    refused(() => mapClaims({ email: 'a@b' }, { groupsPrefix: 'system:' }), 'CLAIM_MAPPING_INVALID');
    refused(() => mapClaims({ email: 'a@b' }, { groupsPrefix: 'x\n' }), 'CLAIM_MAPPING_INVALID');
    refused(() => mapClaims({ email: 'a@b' }, { usernameClaim: '' }), 'CLAIM_MAPPING_INVALID');
  });

  void test('non-string and empty groups are dropped; duplicates collapse; a single string is one group', () => {
    const mapped = mapClaims({ email: 'a@example.com', groups: ['eng', 1, null, { name: 'x' }, ['nested'], '', 'eng', true] });
    assert.deepEqual(mapped.groups, ['eng', AUTHENTICATED_GROUP]);
    assert.deepEqual(mapClaims({ email: 'a@example.com', groups: 'eng' }).groups, ['eng', AUTHENTICATED_GROUP]);
    assert.deepEqual(mapClaims({ email: 'a@example.com', groups: { eng: true } }).groups, [AUTHENTICATED_GROUP]);
  });

  void test('a missing, empty or non-string username claim is an error', () => {
    refused(() => mapClaims({ groups: ['eng'] }), 'CLAIM_USERNAME_MISSING');
    refused(() => mapClaims({ email: '' }), 'CLAIM_USERNAME_MISSING');
    refused(() => mapClaims({ email: ['a@example.com'] }), 'CLAIM_USERNAME_MISSING');
    refused(() => mapClaims({ email: 7 }), 'CLAIM_USERNAME_MISSING');
    // Inherited properties are not claims.
    refused(() => mapClaims({}, { usernameClaim: 'constructor' }), 'CLAIM_USERNAME_MISSING');
    refused(() => mapClaims(JSON.parse('{"__proto__":{"email":"a@example.com"}}') as Record<string, unknown>), 'CLAIM_USERNAME_MISSING');
  });

  void test('an email the IdP marks unverified is not a username', () => {
    refused(() => mapClaims({ email: 'a@example.com', email_verified: false }), 'CLAIM_EMAIL_UNVERIFIED');
    refused(() => mapClaims({ email: 'a@example.com', email_verified: 'true' }), 'CLAIM_EMAIL_UNVERIFIED');
    assert.equal(mapClaims({ sub: 'x', email_verified: false }, { usernameClaim: 'sub' }).username, 'x');
  });

  void test('CP-09: control characters never reach a header: such a username is refused, such a group dropped', () => {
    refused(() => mapClaims({ email: 'ada@example.com\r\nImpersonate-Group: system:masters' }), 'CLAIM_USERNAME_INVALID');
    refused(() => mapClaims({ email: 'ada\u0000@example.com' }), 'CLAIM_USERNAME_INVALID');
    const mapped = mapClaims({ email: 'ada@example.com', groups: ['eng\r\nX: y', 'ops\u0085', 'ok'] });
    assert.deepEqual(mapped.groups, ['ok', AUTHENTICATED_GROUP]);
    assert.deepEqual(mapped.droppedGroups, ['eng\r\nX: y', 'ops\u0085']);
  });

  void test('X-03: for arbitrary claims, the result has no system: name but system:authenticated, or the error is a CausewayError', () => {
    const mapping: fc.Arbitrary<ClaimMapping> = fc.record(
      { usernameClaim: fc.constantFrom('email', 'sub', 'name'), groupsClaim: fc.constantFrom('groups', 'roles'), usernamePrefix: fc.constantFrom('', 'oidc:', 'sys', 'system'), groupsPrefix: fc.constantFrom('', 'oidc:') },
      { requiredKeys: [] },
    );
    const name = fc.oneof(fc.constantFrom('system:masters', 'system:nodes', 'System:Masters', 'tem:masters', ':masters', 'eng'), fc.string());
    const claims = fc.record({ email: fc.oneof(name, fc.jsonValue()), sub: name, name, groups: fc.oneof(fc.array(fc.oneof(name, fc.jsonValue())), name, fc.jsonValue()), roles: fc.array(name), email_verified: fc.boolean() }, { requiredKeys: [] });
    fc.assert(
      fc.property(claims, mapping, (c, m) => {
        let mapped;
        try {
          mapped = mapClaims(c, m);
        } catch (err) {
          assert.ok(err instanceof CausewayError);
          return;
        }
        assert.ok(!/^system:/i.test(mapped.username));
        assert.equal(mapped.groups.filter((g) => /^system:/i.test(g)).join(), AUTHENTICATED_GROUP);
        assert.equal(mapped.groups.at(-1), AUTHENTICATED_GROUP);
        assert.equal(new Set(mapped.groups).size, mapped.groups.length);
      }),
      { numRuns: 2000 },
    );
  });
});
