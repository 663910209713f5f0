import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEVICE_OWNERSHIP, DEVICE_PLATFORMS } from '../spec/index.ts';
import { compilePolicies } from './compile.ts';
import { evaluate, matchRole, matchingRoles } from './evaluate.ts';
import { policy, role, service } from './fixtures.testing.ts';
import type { RuleInput } from './fixtures.testing.ts';
import type { DeviceState, UserState } from './types.ts';

const GROUPS = ['eng', 'ops', 'sales', 'Eng', 'lab'];
const EMAILS = ['alice@example.com', 'Bob@Example.com', 'carol@example.org'];
const SERIALS = ['C02XK1ABCD', 'fvfz1234', 'X1'];
const ROLE_NAMES = ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'];
const LEVELS = ['Low', 'Medium', 'High'] as const;
const T0 = Date.parse('2026-01-01T00:00:00Z');
const HOUR = 3_600_000;

/** Mostly no requirement, so that allows are common enough to test monotonicity on. */
const sparse = <T>(arb: fc.Arbitrary<T[]>): fc.Arbitrary<T[]> => fc.oneof({ arbitrary: fc.constant<T[]>([]), weight: 3 }, { arbitrary: arb, weight: 1 });
const rarely = fc.oneof({ arbitrary: fc.constant(false), weight: 3 }, { arbitrary: fc.constant(true), weight: 1 });

const roleSpec = fc.record({
  users: fc.record({ groups: sparse(fc.subarray(GROUPS)), emails: sparse(fc.subarray(EMAILS)) }),
  devices: fc.record({
    ownership: sparse(fc.subarray([...DEVICE_OWNERSHIP])),
    platforms: sparse(fc.subarray([...DEVICE_PLATFORMS])),
    knownDeviceOnly: rarely,
    mdmPresent: rarely,
    serialNumbers: sparse(fc.subarray(SERIALS)),
  }),
});

const iso = (hours: number): string => new Date(T0 + hours * HOUR).toISOString();
const schedule = fc.option(
  fc.tuple(fc.option(fc.integer({ min: -5, max: 5 })), fc.option(fc.integer({ min: 6, max: 12 }))).map(([s, e]) => ({ start: s === null ? null : iso(s), end: e === null ? null : iso(e) })),
  { nil: undefined },
);

/** Rules may name roles that do not exist (`ghost`). */
const rule: fc.Arbitrary<RuleInput> = fc
  .record({ roles: fc.uniqueArray(fc.constantFrom(...ROLE_NAMES, 'ghost'), { minLength: 1, maxLength: 3 }), trustLevel: fc.constantFrom(...LEVELS), schedule })
  .map((r) => (r.schedule === undefined ? { roles: r.roles, trustLevel: r.trustLevel } : (r as RuleInput)));

const config = fc.record({
  roles: fc.tuple(...ROLE_NAMES.map(() => roleSpec)),
  rules: fc.array(rule, { maxLength: 4 }),
  mode: fc.constantFrom('enforcing' as const, 'permissive' as const),
});

type Config = { roles: Array<Parameters<typeof role>[1]>; rules: RuleInput[]; mode: 'enforcing' | 'permissive' };

function compile(c: Config) {
  return compilePolicies({
    roles: c.roles.map((spec, i) => role(ROLE_NAMES[i], spec)),
    policies: [policy('p', c.rules)],
    services: [service('svc', { name: 'p', mode: c.mode })],
  });
}

const wellFormedUser: fc.Arbitrary<UserState> = fc.record(
  { id: fc.constant('u'), email: fc.constantFrom(...EMAILS, 'ALICE@EXAMPLE.COM', 'nobody@example.net'), groups: fc.subarray(GROUPS), disabled: rarely },
  { requiredKeys: ['id', 'groups', 'disabled'] },
);

const wellFormedDevice: fc.Arbitrary<DeviceState> = fc.record(
  {
    id: fc.constant('d'),
    ownership: fc.constantFrom(...DEVICE_OWNERSHIP),
    platform: fc.constantFrom(...DEVICE_PLATFORMS),
    serialNumber: fc.constantFrom(...SERIALS, 'c02xk1abcd', 'other'),
    known: fc.boolean(),
    mdmPresent: fc.boolean(),
    banned: rarely,
    trustLevel: fc.constantFrom('High', 'High', 'Medium', 'Low', 'AlwaysDeny'),
    trustReasons: fc.array(fc.constantFrom('firewall-off', 'disk-unencrypted')),
  },
  { requiredKeys: ['id', 'known', 'mdmPresent', 'banned', 'trustLevel'] },
);

/** Well-formed state, state with fields of any type, and values that are not state at all. */
const anyUser = fc.oneof(wellFormedUser, fc.dictionary(fc.constantFrom('id', 'email', 'groups', 'disabled', '__proto__', 'constructor'), fc.anything()), fc.anything()) as fc.Arbitrary<UserState | undefined>;
const anyDevice = fc.oneof(
  wellFormedDevice,
  fc.dictionary(fc.constantFrom('ownership', 'platform', 'serialNumber', 'known', 'mdmPresent', 'banned', 'trustLevel', 'trustReasons', 'toString'), fc.anything()),
  fc.anything(),
) as fc.Arbitrary<DeviceState | undefined>;
const now = fc.oneof(fc.integer({ min: -20, max: 20 }).map((h) => T0 + h * HOUR), fc.constantFrom(Number.NaN, Infinity, -Infinity));

void test('evaluate never throws, and always answers with a known effect and a leading reason code', () => {
  fc.assert(
    fc.property(config, anyUser, anyDevice, now, fc.constantFrom('svc', 'nope'), (c, u, d, t, svc) => {
      const decision = evaluate(compile(c), { service: svc, user: u, device: d, now: t });
      assert.ok(['allow', 'deny', 'would-deny'].includes(decision.effect));
      assert.ok(decision.reasons.length > 0);
      assert.ok(!(decision.reasons[0]).includes(':'), 'the first reason is a code, not a detail');
    }),
    { numRuns: 500 },
  );
});

void test('evaluate never lets a disabled user, a banned device or an AlwaysDeny device through, in either mode', () => {
  fc.assert(
    fc.property(config, wellFormedUser, wellFormedDevice, now, (c, u, d, t) => {
      fc.pre(u.disabled || d.banned || d.trustLevel === 'AlwaysDeny');
      const decision = evaluate(compile(c), { service: 'svc', user: u, device: d, now: t });
      assert.equal(decision.effect, 'deny');
    }),
    { numRuns: 500 },
  );
});

void test('evaluate never lets anything through for state that is not well formed unless it reads as enabled, unbanned and ranked', () => {
  fc.assert(
    fc.property(config, anyUser, anyDevice, now, (c, u, d, t) => {
      const decision = evaluate(compile(c), { service: 'svc', user: u, device: d, now: t });
      if (decision.effect === 'deny') return;
      const user = u as unknown as Record<string, unknown>;
      const device = d as unknown as Record<string, unknown>;
      assert.equal(user.disabled, false);
      assert.equal(device.banned, false);
      assert.ok(['Low', 'Medium', 'High'].includes(device.trustLevel as string));
    }),
    { numRuns: 500 },
  );
});

void test('permissive and enforcing differ only in turning a policy denial into would-deny', () => {
  fc.assert(
    fc.property(config, wellFormedUser, wellFormedDevice, now, (c, u, d, t) => {
      const enforcing = evaluate(compile({ ...c, mode: 'enforcing' }), { service: 'svc', user: u, device: d, now: t });
      const permissive = evaluate(compile({ ...c, mode: 'permissive' }), { service: 'svc', user: u, device: d, now: t });
      assert.deepEqual(permissive.reasons, enforcing.reasons);
      const policyVerdict = ['no-matching-role', 'trust-too-low', 'outside-schedule'].includes(enforcing.reasons[0]);
      assert.equal(permissive.effect, enforcing.effect === 'deny' && policyVerdict ? 'would-deny' : enforcing.effect);
    }),
    { numRuns: 500 },
  );
});

const RANK = { deny: 0, 'would-deny': 1, allow: 2 } as const;

void test('adding a role to a rule, or a rule to the policy, never turns an allow into a deny (monotonicity)', () => {
  let allowsSeen = 0;
  fc.assert(
    fc.property(config, wellFormedUser, wellFormedDevice, now, fc.nat(), fc.constantFrom(...ROLE_NAMES), rule, (c, u, d, t, which, extraRole, extraRule) => {
      const before = evaluate(compile(c), { service: 'svc', user: u, device: d, now: t });
      if (before.effect === 'allow') allowsSeen++;
      const grown = c.rules.map((r, i) => (i === which % Math.max(c.rules.length, 1) && !r.roles.includes(extraRole) ? { ...r, roles: [...r.roles, extraRole] } : r));
      for (const rules of [grown, [...c.rules, extraRule], [extraRule, ...c.rules]]) {
        const after = evaluate(compile({ ...c, rules }), { service: 'svc', user: u, device: d, now: t });
        assert.ok(RANK[after.effect] >= RANK[before.effect], `${before.effect} became ${after.effect}`);
      }
    }),
    { numRuns: 1000 },
  );
  assert.ok(allowsSeen >= 50, `only ${allowsSeen} of 1000 runs started from an allow; the generators need more allows`);
});

void test('a policy too large for bit masks decides exactly as the same policy evaluated with them', () => {
  // 32 roles nobody matches, in one more rule, push the policy past MAX_MASK_SLOTS without changing any decision.
  const padding = Array.from({ length: 32 }, (_, i) => role(`pad-${i}`, { users: { groups: ['nobody-is-in-this-group'] } }));
  fc.assert(
    fc.property(config, wellFormedUser, wellFormedDevice, now, (c, u, d, t) => {
      const small = compile(c);
      const large = compilePolicies({
        roles: [...c.roles.map((spec, i) => role(ROLE_NAMES[i], spec)), ...padding],
        policies: [policy('p', [...c.rules, { roles: padding.map((r) => r.metadata.name), trustLevel: 'Low' }])],
        services: [service('svc', { name: 'p', mode: c.mode })],
      });
      assert.notEqual(small.policies.get('p')?.slotsByGroup, undefined);
      assert.equal(large.policies.get('p')?.slotsByGroup, undefined);
      const input = { service: 'svc', user: u, device: d, now: t };
      assert.deepEqual(evaluate(large, input), evaluate(small, input));
    }),
    { numRuns: 300 },
  );
});

void test('matchingRoles agrees with matchRole for every role', () => {
  fc.assert(
    fc.property(config, wellFormedUser, wellFormedDevice, (c, u, d) => {
      const compiled = compile(c);
      const expected = ROLE_NAMES.filter((name) => matchRole(compiled, name, u, d));
      assert.deepEqual(matchingRoles(compiled, u, d), expected);
    }),
    { numRuns: 300 },
  );
});
