import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePolicies } from './compile.ts';
import { evaluate } from './evaluate.ts';
import { device, policy, role, service, user } from './fixtures.testing.ts';

void describe('compilePolicies', () => {
  void test('resolves each service’s attached policy once', () => {
    const compiled = compilePolicies({ roles: [role('everyone')], policies: [policy('p', [{ roles: ['everyone'], trustLevel: 'Low' }])], services: [service('svc', { name: 'p', mode: 'permissive' })] });
    const svc = compiled.services.get('svc');
    assert.equal(svc?.policy, compiled.policies.get('p'));
    assert.deepEqual(svc?.attachment, { name: 'p', mode: 'permissive' });
    assert.deepEqual(compiled.problems, []);
  });

  void test('indexes roles by group, by lower-case email and as any-user roles', () => {
    const compiled = compilePolicies({
      roles: [role('a', { users: { groups: ['eng', 'ops'] } }), role('b', { users: { groups: ['eng'], emails: ['Bob@Example.com'] } }), role('c')],
      policies: [],
      services: [],
    });
    assert.deepEqual(compiled.rolesByGroup.get('eng')?.map((r) => r.name), ['a', 'b']);
    assert.deepEqual(compiled.rolesByGroup.get('ops')?.map((r) => r.name), ['a']);
    assert.deepEqual(compiled.rolesByEmail.get('bob@example.com')?.map((r) => r.name), ['b']);
    assert.deepEqual(compiled.anyUserRoles.map((r) => r.name), ['c']);
  });

  void test('lists a rule’s unknown role as a problem, and the role matches nobody', () => {
    const compiled = compilePolicies({ roles: [], policies: [policy('p', [{ roles: ['ghost'], trustLevel: 'Low' }])], services: [service('svc', { name: 'p' })] });
    assert.deepEqual(compiled.problems.map((p) => [p.code, p.path]), [['unknown-role', 'Policy/p spec.access[0].roles[0]']]);
    assert.deepEqual(evaluate(compiled, { service: 'svc', user: user(), device: device(), now: 0 }).reasons, ['no-matching-role']);
  });

  void test('lists a service naming a policy that does not exist, and the service denies', () => {
    const compiled = compilePolicies({ roles: [], policies: [], services: [service('svc', { name: 'gone' })] });
    assert.deepEqual(compiled.problems.map((p) => [p.code, p.path]), [['unknown-policy', 'Service/svc spec.policy.name']]);
    assert.deepEqual(evaluate(compiled, { service: 'svc', user: user(), device: device(), now: 0 }).reasons, ['unknown-policy']);
  });

  void test('keeps the first of two documents with the same name and says so', () => {
    const compiled = compilePolicies({
      roles: [role('r', { users: { groups: ['first'] } }), role('r', { users: { groups: ['second'] } })],
      policies: [policy('p', []), policy('p', [{ roles: ['r'], trustLevel: 'Low' }])],
      services: [service('svc', { name: 'p' }), service('svc')],
    });
    assert.deepEqual([...(compiled.roles.get('r')?.groups ?? [])], ['first']);
    assert.equal(compiled.policies.get('p')?.rules.length, 0);
    assert.equal(compiled.services.get('svc')?.attachment?.name, 'p');
    assert.deepEqual(compiled.problems.map((p) => [p.code, p.path]), [['duplicate-name', 'Role/r'], ['duplicate-name', 'Policy/p'], ['duplicate-name', 'Service/svc']]);
  });

  void test('a schedule whose times do not parse never holds', () => {
    const p = structuredClone(policy('p', [{ roles: ['everyone'], trustLevel: 'Low', schedule: { start: '2026-01-01T00:00:00Z' } }]));
    const rule = p.spec.access[0];
    assert.ok(rule?.schedule !== undefined);
    rule.schedule.start = 'next tuesday';
    const compiled = compilePolicies({ roles: [role('everyone')], policies: [p], services: [service('svc', { name: 'p' })] });
    assert.deepEqual(compiled.problems.map((x) => x.code), ['bad-schedule']);
    for (const now of [0, Date.parse('2026-06-01T00:00:00Z'), Date.parse('2100-01-01T00:00:00Z')]) {
      assert.deepEqual(evaluate(compiled, { service: 'svc', user: user(), device: device(), now }).reasons, ['outside-schedule']);
    }
  });

  void test('freezes what it returns', () => {
    const compiled = compilePolicies({ roles: [role('r', { users: { groups: ['eng'] } })], policies: [policy('p', [{ roles: ['r'], trustLevel: 'Low' }])], services: [] });
    assert.ok(Object.isFrozen(compiled));
    assert.ok(Object.isFrozen(compiled.roles.get('r')));
    assert.ok(Object.isFrozen(compiled.policies.get('p')?.rules));
    assert.ok(Object.isFrozen(compiled.rolesByGroup.get('eng')));
  });

  void test('does not keep references into the documents’ lists, so editing a document later changes nothing', () => {
    const r = role('r', { users: { groups: ['eng'] } });
    const compiled = compilePolicies({ roles: [r], policies: [], services: [] });
    r.spec.users.groups.push('sales');
    assert.deepEqual([...(compiled.roles.get('r')?.groups ?? [])], ['eng']);
  });

  void describe('with the previous compilation', () => {
    const eng = role('eng', { users: { groups: ['eng'] } });
    const ops = role('ops', { users: { groups: ['ops'] } });
    const p = policy('p', [{ roles: ['eng', 'later'], trustLevel: 'Low' }]);
    const q = policy('q', [{ roles: ['ops'], trustLevel: 'Low' }]);
    const svc = service('svc', { name: 'p' });
    const first = compilePolicies({ roles: [eng, ops], policies: [p, q], services: [svc] });

    void test('reuses every role and policy whose document is the same object', () => {
      const second = compilePolicies({ roles: [eng, ops], policies: [p, q], services: [svc] }, first);
      assert.equal(second.roles.get('eng'), first.roles.get('eng'));
      assert.equal(second.policies.get('p'), first.policies.get('p'));
      assert.equal(second.services.get('svc')?.policy, first.policies.get('p'));
    });

    void test('still reports the problems of a reused policy', () => {
      const second = compilePolicies({ roles: [eng, ops], policies: [p, q], services: [svc] }, first);
      assert.deepEqual(second.problems, first.problems);
      assert.deepEqual(second.problems.map((x) => x.code), ['unknown-role']);
    });

    void test('recompiles a role whose document changed, and the policies that name it', () => {
      const eng2 = role('eng', { users: { groups: ['engineering'] } });
      const second = compilePolicies({ roles: [eng2, ops], policies: [p, q], services: [svc] }, first);
      assert.notEqual(second.roles.get('eng'), first.roles.get('eng'));
      assert.notEqual(second.policies.get('p'), first.policies.get('p'));
      assert.equal(second.policies.get('q'), first.policies.get('q'));
      assert.equal(evaluate(second, { service: 'svc', user: user({ groups: ['engineering'] }), device: device(), now: 0 }).effect, 'allow');
      assert.equal(evaluate(second, { service: 'svc', user: user({ groups: ['eng'] }), device: device(), now: 0 }).effect, 'deny');
    });

    void test('recompiles a policy when a role it named but that did not exist appears', () => {
      const second = compilePolicies({ roles: [eng, ops, role('later', { users: { groups: ['late'] } })], policies: [p, q], services: [svc] }, first);
      assert.notEqual(second.policies.get('p'), first.policies.get('p'));
      assert.deepEqual(second.problems, []);
      assert.equal(evaluate(second, { service: 'svc', user: user({ groups: ['late'] }), device: device(), now: 0 }).effect, 'allow');
    });

    void test('recompiles a policy when a role it named disappears', () => {
      const second = compilePolicies({ roles: [ops], policies: [p, q], services: [svc] }, first);
      assert.notEqual(second.policies.get('p'), first.policies.get('p'));
      assert.equal(evaluate(second, { service: 'svc', user: user({ groups: ['eng'] }), device: device(), now: 0 }).reasons[0], 'no-matching-role');
    });

    void test('recompiles a policy whose document changed', () => {
      const p2 = policy('p', [{ roles: ['eng'], trustLevel: 'High' }]);
      const second = compilePolicies({ roles: [eng, ops], policies: [p2, q], services: [svc] }, first);
      assert.deepEqual(evaluate(second, { service: 'svc', user: user(), device: device({ trustLevel: 'Medium' }), now: 0 }).reasons.slice(0, 2), ['trust-too-low', 'needs:High']);
    });
  });
});
