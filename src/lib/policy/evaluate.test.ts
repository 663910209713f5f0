import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePolicies } from './compile.ts';
import type { CompiledPolicies } from './compile.ts';
import { evaluate, matchRole, matchingRoles } from './evaluate.ts';
import { device, malformed, policy, role, service, user } from './fixtures.testing.ts';
import type { RuleInput } from './fixtures.testing.ts';
import type { DeviceState, PolicyDecision, UserState } from './types.ts';

const JAN_1 = Date.parse('2026-01-01T00:00:00Z');
const FEB_1 = Date.parse('2026-02-01T00:00:00Z');
const MID_JAN = Date.parse('2026-01-15T12:00:00Z');

/** The roles every case sees. */
const ROLES = [
  role('engineers', {
    users: { groups: ['eng'] },
    devices: { ownership: ['corporate-dedicated', 'corporate-shared'], platforms: ['macos', 'linux'], knownDeviceOnly: true, mdmPresent: true },
  }),
  role('oncall', { users: { emails: ['Oncall@Example.com'] } }),
  role('everyone'),
  role('contractors', { users: { groups: ['contractors'] }, devices: { ownership: ['employee-owned'] } }),
  role('lab', { users: { groups: ['lab'] }, devices: { serialNumbers: ['c02xk1abcd'] } }),
];

const JANUARY = { start: '2026-01-01T00:00:00Z', end: '2026-02-01T00:00:00Z' };

/** Policy `p` with `rules`, attached to service `svc` in `mode`; `no-policy` is a service without one. */
function world(rules: RuleInput[], mode: 'enforcing' | 'permissive' = 'enforcing'): CompiledPolicies {
  return compilePolicies({
    roles: ROLES,
    policies: [policy('p', rules)],
    services: [service('svc', { name: 'p', mode }), service('no-policy'), service('dangling', { name: 'gone', mode: 'permissive' })],
  });
}

const MISSING = Symbol('missing');

interface Case {
  name: string;
  rules?: RuleInput[];
  mode?: 'enforcing' | 'permissive';
  service?: string;
  user?: UserState | typeof MISSING;
  device?: DeviceState | typeof MISSING;
  now?: number;
  expect: Partial<PolicyDecision>;
}

const ENGINEERS_MEDIUM: RuleInput[] = [{ roles: ['engineers'], trustLevel: 'Medium' }];

function run(c: Case): PolicyDecision {
  const compiled = world(c.rules ?? ENGINEERS_MEDIUM, c.mode);
  return evaluate(compiled, {
    service: c.service ?? 'svc',
    user: c.user === MISSING ? undefined : (c.user ?? user()),
    device: c.device === MISSING ? undefined : (c.device ?? device()),
    now: c.now ?? MID_JAN,
  });
}

function table(title: string, cases: Case[]): void {
  void describe(title, () => {
    for (const c of cases) {
      void test(c.name, () => {
        const got = run(c);
        const picked = Object.fromEntries(Object.keys(c.expect).map((k) => [k, got[k as keyof PolicyDecision]]));
        assert.deepEqual(picked, c.expect);
      });
    }
  });
}

table('evaluate fails closed', [
  { name: 'denies an unknown service', service: 'nope', expect: { effect: 'deny', reasons: ['unknown-service'], mode: 'none', policy: undefined } },
  { name: 'denies a service with no policy attached', service: 'no-policy', expect: { effect: 'deny', reasons: ['no-policy'], mode: 'none' } },
  { name: 'denies a service whose policy does not exist, even in permissive mode', service: 'dangling', expect: { effect: 'deny', reasons: ['unknown-policy'], mode: 'permissive', policy: 'gone' } },
  { name: 'denies when the user is not in the directory', user: MISSING, expect: { effect: 'deny', reasons: ['unknown-user'], mode: 'enforcing', policy: 'p' } },
  { name: 'denies when the device is not in the directory', device: MISSING, expect: { effect: 'deny', reasons: ['unknown-device'] } },
  { name: 'denies a disabled user', user: user({ disabled: true }), expect: { effect: 'deny', reasons: ['user-disabled'], matchedRoles: [] } },
  { name: 'AT-08 denies a banned or revoked device', device: device({ banned: true }), expect: { effect: 'deny', reasons: ['device-revoked'] } },
  {
    name: 'denies a device whose trust is AlwaysDeny and names the unmet factors',
    device: device({ trustLevel: 'AlwaysDeny', trustReasons: ['disk-unencrypted', 'stale'] }),
    expect: { effect: 'deny', reasons: ['trust-always-deny', 'trust:disk-unencrypted', 'trust:stale'] },
  },
  { name: 'reports every identity problem at once', user: user({ disabled: true }), device: device({ banned: true, trustLevel: 'AlwaysDeny' }), expect: { reasons: ['user-disabled', 'device-revoked', 'trust-always-deny'] } },
  { name: 'reports a missing user and a missing device together', user: MISSING, device: MISSING, expect: { reasons: ['unknown-user', 'unknown-device'] } },
  { name: 'DT-07 denies a device whose trust level is not a known level', device: malformed(device(), { trustLevel: 'high' }), expect: { effect: 'deny', reasons: ['trust-unknown'] } },
  { name: 'DT-07 denies a device with no trust level at all', device: malformed(device(), { trustLevel: undefined }), expect: { effect: 'deny', reasons: ['trust-unknown'] } },
  { name: 'DT-07 denies a device whose trust level is an inherited property name', device: malformed(device(), { trustLevel: 'constructor' }), expect: { reasons: ['trust-unknown'] } },
  { name: 'DT-07 counts a disabled flag that is not exactly false as disabled', user: malformed(user(), { disabled: 'no' }), expect: { reasons: ['user-disabled'] } },
  { name: 'DT-07 counts a missing disabled flag as disabled', user: malformed(user(), { disabled: undefined }), expect: { reasons: ['user-disabled'] } },
  { name: 'DT-07 counts a missing banned flag as banned', device: malformed(device(), { banned: undefined }), expect: { reasons: ['device-revoked'] } },
  { name: 'DT-07 treats a user that is not an object as unknown', user: 'u-alice' as unknown as UserState, expect: { reasons: ['unknown-user'] } },
  { name: 'keeps at most sixteen trust factors, each cut to 64 characters', device: device({ trustLevel: 'AlwaysDeny', trustReasons: Array.from({ length: 20 }, () => 'x'.repeat(100)) }), expect: { reasons: ['trust-always-deny', ...Array.from({ length: 16 }, () => `trust:${'x'.repeat(64)}`)] } },
  { name: 'DT-07 ignores trust factors that are not strings', device: malformed(device({ trustLevel: 'AlwaysDeny' }), { trustReasons: [7, null, 'firewall-off', ''] }), expect: { reasons: ['trust-always-deny', 'trust:firewall-off'] } },
]);

table('evaluate applies access rules', [
  { name: 'allows a user whose group matches a role at the rule’s minimum trust level', device: device({ trustLevel: 'Medium' }), expect: { effect: 'allow', reasons: ['policy-allow'], matchedRoles: ['engineers'], rule: 0, policy: 'p', mode: 'enforcing' } },
  { name: 'allows a device whose trust level is above the rule’s minimum', device: device({ trustLevel: 'High' }), expect: { effect: 'allow' } },
  { name: 'allows any device level at a Low minimum', rules: [{ roles: ['engineers'], trustLevel: 'Low' }], device: device({ trustLevel: 'Low' }), expect: { effect: 'allow' } },
  { name: 'denies a user whose only matching role needs a corporate device', device: device({ ownership: 'employee-owned' }), expect: { effect: 'deny', reasons: ['no-matching-role'], matchedRoles: [] } },
  { name: 'denies a user in none of the rule’s roles', user: user({ groups: ['sales'], email: 'bob@example.com' }), expect: { effect: 'deny', reasons: ['no-matching-role'] } },
  {
    name: 'denies a Low device where the rule needs Medium, saying what it needs, what it has and why',
    device: device({ trustLevel: 'Low', trustReasons: ['firewall-off'] }),
    expect: { effect: 'deny', reasons: ['trust-too-low', 'needs:Medium', 'has:Low', 'trust:firewall-off'], matchedRoles: ['engineers'], policy: 'p' },
  },
  { name: 'denies a Medium device where the rule needs High', rules: [{ roles: ['engineers'], trustLevel: 'High' }], device: device({ trustLevel: 'Medium' }), expect: { reasons: ['trust-too-low', 'needs:High', 'has:Medium'] } },
  {
    name: 'allows through a later rule when an earlier one needs more trust',
    rules: [{ roles: ['engineers'], trustLevel: 'High' }, { roles: ['oncall', 'engineers'], trustLevel: 'Low' }],
    device: device({ trustLevel: 'Low' }),
    expect: { effect: 'allow', rule: 1, matchedRoles: ['engineers'] },
  },
  { name: 'lists every matching role of the allowing rule', rules: [{ roles: ['everyone', 'engineers', 'oncall'], trustLevel: 'Low' }], expect: { effect: 'allow', matchedRoles: ['everyone', 'engineers'] } },
  {
    name: 'asks for the lowest level that would do among rules failing only on trust',
    rules: [{ roles: ['engineers'], trustLevel: 'High' }, { roles: ['everyone'], trustLevel: 'Medium' }],
    device: device({ trustLevel: 'Low' }),
    expect: { reasons: ['trust-too-low', 'needs:Medium', 'has:Low'], matchedRoles: ['engineers', 'everyone'] },
  },
  {
    name: 'ignores the trust of rules whose roles do not match',
    rules: [{ roles: ['contractors'], trustLevel: 'Low' }, { roles: ['engineers'], trustLevel: 'High' }],
    device: device({ trustLevel: 'Medium' }),
    expect: { reasons: ['trust-too-low', 'needs:High', 'has:Medium'], matchedRoles: ['engineers'] },
  },
  { name: 'denies when the only matching rule’s schedule is closed', rules: [{ roles: ['engineers'], trustLevel: 'Low', schedule: JANUARY }], now: FEB_1 + 1000, expect: { effect: 'deny', reasons: ['outside-schedule'], matchedRoles: ['engineers'] } },
  {
    name: 'prefers trust-too-low over outside-schedule when different rules fail on each',
    rules: [{ roles: ['engineers'], trustLevel: 'Low', schedule: JANUARY }, { roles: ['engineers'], trustLevel: 'High' }],
    device: device({ trustLevel: 'Medium' }),
    now: FEB_1,
    expect: { reasons: ['trust-too-low', 'needs:High', 'has:Medium'] },
  },
  {
    name: 'prefers a rule failing only its schedule over one failing both',
    rules: [{ roles: ['engineers'], trustLevel: 'High', schedule: JANUARY }, { roles: ['engineers'], trustLevel: 'Low', schedule: JANUARY }],
    device: device({ trustLevel: 'Medium' }),
    now: FEB_1,
    expect: { reasons: ['outside-schedule'] },
  },
  {
    name: 'reports both trust-too-low and outside-schedule when every matching rule fails both',
    rules: [{ roles: ['engineers'], trustLevel: 'High', schedule: JANUARY }],
    device: device({ trustLevel: 'Low', trustReasons: ['firewall-off'] }),
    now: FEB_1,
    expect: { reasons: ['trust-too-low', 'needs:High', 'has:Low', 'trust:firewall-off', 'outside-schedule'] },
  },
  { name: 'denies everyone when the policy has no access rules', rules: [], expect: { effect: 'deny', reasons: ['no-matching-role'] } },
  { name: 'a rule naming an unknown role matches nobody', rules: [{ roles: ['ghosts'], trustLevel: 'Low' }], expect: { effect: 'deny', reasons: ['no-matching-role'] } },
  { name: 'a known role beside an unknown one still matches', rules: [{ roles: ['ghosts', 'engineers'], trustLevel: 'Low' }], expect: { effect: 'allow', matchedRoles: ['engineers'] } },
  { name: 'allows a user by email whatever its case', rules: [{ roles: ['oncall'], trustLevel: 'Low' }], user: user({ email: 'ONCALL@example.COM', groups: [] }), expect: { effect: 'allow', matchedRoles: ['oncall'] } },
  { name: 'allows a lab user on the listed serial number whatever its case', rules: [{ roles: ['lab'], trustLevel: 'Low' }], user: user({ groups: ['lab'] }), device: device({ serialNumber: ' c02Xk1abCD ' }), expect: { effect: 'allow' } },
]);

table('evaluate honours schedules: start inclusive, end exclusive', [
  ...(
    [
      ['allows at exactly the start', JAN_1, 'allow'],
      ['denies one millisecond before the start', JAN_1 - 1, 'deny'],
      ['allows one millisecond before the end', FEB_1 - 1, 'allow'],
      ['denies at exactly the end', FEB_1, 'deny'],
      ['denies one millisecond after the end', FEB_1 + 1, 'deny'],
    ] as const
  ).map(([name, now, effect]): Case => ({ name, rules: [{ roles: ['everyone'], trustLevel: 'Low', schedule: JANUARY }], now, expect: { effect } })),
  { name: 'an open start allows any time before the end', rules: [{ roles: ['everyone'], trustLevel: 'Low', schedule: { start: null, end: JANUARY.end } }], now: 0, expect: { effect: 'allow' } },
  { name: 'an open end allows any time after the start', rules: [{ roles: ['everyone'], trustLevel: 'Low', schedule: { start: JANUARY.start, end: null } }], now: Date.parse('2099-01-01T00:00:00Z'), expect: { effect: 'allow' } },
  { name: 'a schedule with both ends open always holds', rules: [{ roles: ['everyone'], trustLevel: 'Low', schedule: {} }], now: 0, expect: { effect: 'allow' } },
  { name: 'reads a start written with an offset as the same instant', rules: [{ roles: ['everyone'], trustLevel: 'Low', schedule: { start: '2026-01-01T01:00:00+01:00', end: null } }], now: JAN_1, expect: { effect: 'allow' } },
  { name: 'a clock reading NaN is outside every schedule', rules: [{ roles: ['everyone'], trustLevel: 'Low', schedule: JANUARY }], now: Number.NaN, expect: { effect: 'deny', reasons: ['outside-schedule'] } },
  { name: 'a clock reading NaN does not affect rules without a schedule', rules: [{ roles: ['everyone'], trustLevel: 'Low' }], now: Number.NaN, expect: { effect: 'allow' } },
]);

table('CP-18 enforcing denies; permissive allows and records would-deny', [
  { name: 'CP-18 enforcing denies a user with no matching role', mode: 'enforcing', user: user({ groups: ['sales'] }), expect: { effect: 'deny', reasons: ['no-matching-role'], mode: 'enforcing' } },
  { name: 'CP-18 permissive lets a user with no matching role through as would-deny', mode: 'permissive', user: user({ groups: ['sales'] }), expect: { effect: 'would-deny', reasons: ['no-matching-role'], mode: 'permissive', policy: 'p' } },
  {
    name: 'CP-18 permissive lets a device with too little trust through as would-deny, with the reasons',
    mode: 'permissive',
    device: device({ trustLevel: 'Low', trustReasons: ['firewall-off'] }),
    expect: { effect: 'would-deny', reasons: ['trust-too-low', 'needs:Medium', 'has:Low', 'trust:firewall-off'], matchedRoles: ['engineers'] },
  },
  { name: 'CP-18 permissive lets a closed schedule through as would-deny', mode: 'permissive', rules: [{ roles: ['engineers'], trustLevel: 'Low', schedule: JANUARY }], now: FEB_1, expect: { effect: 'would-deny', reasons: ['outside-schedule'] } },
  { name: 'CP-18 permissive allows what the policy allows as a plain allow', mode: 'permissive', expect: { effect: 'allow', reasons: ['policy-allow'], mode: 'permissive' } },
  { name: 'CP-18 permissive still denies a disabled user', mode: 'permissive', user: user({ disabled: true }), expect: { effect: 'deny', reasons: ['user-disabled'], mode: 'permissive' } },
  { name: 'AT-08 permissive still denies a valid user on a revoked device', mode: 'permissive', device: device({ banned: true }), expect: { effect: 'deny', reasons: ['device-revoked'], mode: 'permissive' } },
  { name: 'CP-18 permissive still denies a device whose trust is AlwaysDeny', mode: 'permissive', device: device({ trustLevel: 'AlwaysDeny' }), expect: { effect: 'deny', reasons: ['trust-always-deny'] } },
  { name: 'CP-18 permissive still denies a user missing from the directory', mode: 'permissive', user: MISSING, expect: { effect: 'deny', reasons: ['unknown-user'] } },
  { name: 'CP-18 permissive still denies a device with an unreadable trust level', mode: 'permissive', device: malformed(device(), { trustLevel: 7 }), expect: { effect: 'deny', reasons: ['trust-unknown'] } },
]);

void describe('evaluate with a service document', () => {
  const compiled = world(ENGINEERS_MEDIUM);
  void test('decides by the document’s own attached policy and mode', () => {
    const d = evaluate(compiled, { service: service('other', { name: 'p', mode: 'permissive' }), user: user({ groups: [] }), device: device(), now: 0 });
    assert.deepEqual([d.effect, d.reasons, d.mode, d.policy], ['would-deny', ['no-matching-role'], 'permissive', 'p']);
  });
  void test('denies a document without a policy', () => {
    assert.deepEqual(evaluate(compiled, { service: service('svc'), user: user(), device: device(), now: 0 }).reasons, ['no-policy']);
  });
  void test('denies a document naming a policy that does not exist', () => {
    const d = evaluate(compiled, { service: service('svc', { name: 'gone' }), user: user(), device: device(), now: 0 });
    assert.deepEqual([d.effect, d.reasons, d.mode], ['deny', ['unknown-policy'], 'enforcing']);
  });
  void test('enforces when the document’s mode is neither enforcing nor permissive', () => {
    const odd = structuredClone(service('svc', { name: 'p' }));
    (odd.spec.policy as { mode: string }).mode = 'PERMISSIVE';
    const d = evaluate(compiled, { service: odd, user: user({ groups: [] }), device: device(), now: 0 });
    assert.deepEqual([d.effect, d.mode], ['deny', 'enforcing']);
  });
  void test('denies a document that is not a service at all', () => {
    assert.deepEqual(evaluate(compiled, { service: {} as never, user: user(), device: device(), now: 0 }).reasons, ['no-policy']);
  });
});

// ---------------------------------------------------------------------------------------------
// Role matching (matchRole), the console's live preview and the heart of every rule.

const MATCHING = compilePolicies({
  roles: [
    ...ROLES,
    role('eng-or-bob', { users: { groups: ['eng', 'platform'], emails: ['bob@example.com'] } }),
    role('macos-only', { devices: { platforms: ['macos'] } }),
    role('known-only', { devices: { knownDeviceOnly: true } }),
    role('mdm-only', { devices: { mdmPresent: true } }),
    role('corp-shared', { devices: { ownership: ['corporate-shared'] } }),
    role('serial', { devices: { serialNumbers: ['C02XK1ABCD', 'FVFZ1234'] } }),
    role('all-of-it', { devices: { ownership: ['corporate-dedicated'], platforms: ['macos'], knownDeviceOnly: true, mdmPresent: true, serialNumbers: ['C02XK1ABCD'] } }),
  ],
  policies: [],
  services: [],
});

const manyGroups = (extra: string[]): string[] => [...Array.from({ length: 30 }, (_, i) => `g${i}`), ...extra];

const roleCases: Array<[string, string, UserState | undefined, DeviceState | undefined, boolean]> = [
  ['any user matches a role with no groups and no emails', 'everyone', user({ groups: [], email: undefined }), device(), true],
  ['a user in one of the role’s groups matches', 'eng-or-bob', user({ groups: ['sales', 'platform'] }), device(), true],
  ['a user in none of the role’s groups and not listed by email does not match', 'eng-or-bob', user({ groups: ['sales'] }), device(), false],
  ['groups compare case-sensitively: Eng is not eng', 'eng-or-bob', user({ groups: ['Eng'] }), device(), false],
  ['a group with surrounding blanks is not the group', 'eng-or-bob', user({ groups: [' eng'] }), device(), false],
  ['a listed email matches a user with none of the groups', 'eng-or-bob', user({ groups: [], email: 'bob@example.com' }), device(), true],
  ['emails compare case-insensitively on both sides', 'oncall', user({ groups: [], email: 'oNcAlL@eXaMpLe.CoM' }), device(), true],
  ['a user without an email still matches by group', 'eng-or-bob', user({ email: undefined, groups: ['eng'] }), device(), true],
  ['a user without an email does not match an email-only role', 'oncall', user({ email: undefined }), device(), false],
  ['an empty email does not match anything', 'oncall', user({ email: '' }), device(), false],
  ['a user with many groups matches through the set path', 'eng-or-bob', user({ groups: manyGroups(['platform']) }), device(), true],
  ['a user with many groups, none listed, does not match', 'eng-or-bob', user({ groups: manyGroups([]) }), device(), false],
  ['DT-07 groups that are not a list count as no groups', 'eng-or-bob', malformed(user(), { groups: 'eng' }), device(), false],
  ['DT-07 group entries that are not strings are ignored', 'eng-or-bob', malformed(user(), { groups: [1, null, { eng: true }] }), device(), false],
  ['DT-07 an email that is not a string counts as none', 'oncall', malformed(user(), { email: ['oncall@example.com'] }), device(), false],
  ['a role with no device requirements matches a device with no attributes', 'everyone', user(), malformed(device(), { ownership: undefined, platform: undefined, serialNumber: undefined, known: false, mdmPresent: false }), true],
  ['a device whose ownership is listed matches', 'corp-shared', user(), device({ ownership: 'corporate-shared' }), true],
  ['a device whose ownership is not listed does not match', 'corp-shared', user(), device({ ownership: 'corporate-dedicated' }), false],
  ['DT-07 a device with unknown ownership does not match an ownership requirement', 'corp-shared', user(), malformed(device(), { ownership: undefined }), false],
  ['DT-07 a malformed ownership does not match', 'corp-shared', user(), malformed(device(), { ownership: 'Corporate-Shared' }), false],
  ['a device on a listed platform matches', 'macos-only', user(), device({ platform: 'macos' }), true],
  ['a device on another platform does not match', 'macos-only', user(), device({ platform: 'windows' }), false],
  ['DT-07 a device with unknown platform does not match a platform requirement', 'macos-only', user(), malformed(device(), { platform: undefined }), false],
  ['DT-07 a platform that is not a string does not match', 'macos-only', user(), malformed(device(), { platform: 1 }), false],
  ['a registered device matches knownDeviceOnly', 'known-only', user(), device({ known: true }), true],
  ['an unregistered device does not match knownDeviceOnly', 'known-only', user(), device({ known: false }), false],
  ['DT-07 known given as the string "true" does not count', 'known-only', user(), malformed(device(), { known: 'true' }), false],
  ['DT-07 known missing does not count', 'known-only', user(), malformed(device(), { known: undefined }), false],
  ['a device in MDM matches mdmPresent', 'mdm-only', user(), device({ mdmPresent: true }), true],
  ['a device outside MDM does not match mdmPresent', 'mdm-only', user(), device({ mdmPresent: false }), false],
  ['DT-07 mdmPresent given as 1 does not count', 'mdm-only', user(), malformed(device(), { mdmPresent: 1 }), false],
  ['a listed serial number matches', 'serial', user(), device({ serialNumber: 'FVFZ1234' }), true],
  ['serial numbers compare case-insensitively and without surrounding blanks', 'serial', user(), device({ serialNumber: '  fvfz1234\t' }), true],
  ['an unlisted serial number does not match', 'serial', user(), device({ serialNumber: 'FVFZ12345' }), false],
  ['DT-07 a device without a serial number does not match a serial requirement', 'serial', user(), malformed(device(), { serialNumber: undefined }), false],
  ['DT-07 a blank serial number does not match', 'serial', user(), device({ serialNumber: '   ' }), false],
  ['DT-07 a serial number that is not a string does not match', 'serial', user(), malformed(device(), { serialNumber: 0x1234 }), false],
  ['a device meeting every listed attribute matches', 'all-of-it', user(), device(), true],
  ['every listed attribute must hold: a corporate macOS laptop outside MDM does not match', 'all-of-it', user(), device({ mdmPresent: false }), false],
  ['every listed attribute must hold: the right laptop on another serial does not match', 'all-of-it', user(), device({ serialNumber: 'OTHER' }), false],
  ['a user matching by group must also meet the device requirements', 'engineers', user(), device({ platform: 'windows' }), false],
  ['a disabled user can still match a role (evaluate denies them first)', 'engineers', user({ disabled: true }), device(), true],
  ['an unknown role matches nobody', 'ghosts', user(), device(), false],
  ['a missing device matches no role, not even one without device requirements', 'everyone', user(), undefined, false],
  ['a missing user matches no role, not even the any-user role', 'everyone', undefined, device(), false],
];

void describe('matchRole', () => {
  for (const [name, roleName, u, d, expected] of roleCases) {
    void test(name, () => {
      assert.equal(matchRole(MATCHING, roleName, u, d), expected);
    });
  }
});

void describe('matchingRoles', () => {
  void test('lists the any-user roles and those matched by group or email, sorted, after device checks', () => {
    const roles = matchingRoles(MATCHING, user({ groups: ['eng'], email: 'Oncall@example.com' }), device({ ownership: 'corporate-dedicated', platform: 'linux' }));
    assert.deepEqual(roles, ['eng-or-bob', 'engineers', 'everyone', 'known-only', 'mdm-only', 'oncall', 'serial']);
  });
  void test('agrees with matchRole for every role', () => {
    const u = user({ groups: ['contractors', 'lab'] });
    const d = device({ ownership: 'employee-owned', platform: 'windows', mdmPresent: false });
    const expected = [...MATCHING.roles.keys()].filter((name) => matchRole(MATCHING, name, u, d)).sort();
    assert.deepEqual(matchingRoles(MATCHING, u, d), expected);
  });
  void test('lists nothing for a missing user or device', () => {
    assert.deepEqual(matchingRoles(MATCHING, undefined, device()), []);
    assert.deepEqual(matchingRoles(MATCHING, user(), undefined), []);
  });
});

void describe('evaluate on a policy naming more roles than a bit mask holds', () => {
  // 40 roles, one group each; only role-37 (group g37, corporate devices only) and role-38 (any user, macOS) can match.
  const many = Array.from({ length: 40 }, (_, i) =>
    i === 38 ? role(`role-${i}`, { devices: { platforms: ['macos'] } }) : role(`role-${i}`, { users: { groups: [`g${i}`] }, devices: i === 37 ? { ownership: ['corporate-dedicated'] } : {} }),
  );
  const names = many.map((r) => r.metadata.name);
  const compiled = compilePolicies({
    roles: many,
    policies: [policy('big', [{ roles: names.slice(0, 30), trustLevel: 'Low' }, { roles: names.slice(30), trustLevel: 'Medium' }])],
    services: [service('svc', { name: 'big' })],
  });
  const decide = (u: UserState, d: DeviceState): PolicyDecision => evaluate(compiled, { service: 'svc', user: u, device: d, now: 0 });

  void test('compiles without masks and still finds a role past the 31st', () => {
    assert.equal(compiled.policies.get('big')?.slotsByGroup, undefined);
    assert.deepEqual(decide(user({ groups: ['g37'] }), device({ platform: 'linux' })), { effect: 'allow', reasons: ['policy-allow'], matchedRoles: ['role-37'], rule: 1, policy: 'big', mode: 'enforcing' });
  });
  void test('applies the device requirements of a role past the 31st', () => {
    assert.deepEqual(decide(user({ groups: ['g37'] }), device({ platform: 'linux', ownership: 'employee-owned' })).reasons, ['no-matching-role']);
  });
  void test('lists every matching role and reports trust as for a small policy', () => {
    const d = decide(user({ groups: ['g3', 'g37'] }), device({ trustLevel: 'Low' }));
    assert.deepEqual([d.effect, d.matchedRoles, d.rule], ['allow', ['role-3'], 0]);
    const low = decide(user({ groups: ['g37'] }), device({ trustLevel: 'Low' }));
    assert.deepEqual([low.effect, low.reasons, low.matchedRoles], ['deny', ['trust-too-low', 'needs:Medium', 'has:Low'], ['role-37', 'role-38']]);
  });
});

void describe('evaluate on a policy at the bit mask’s limit', () => {
  // 31 roles: slot 30 is the highest bit a mask uses.
  const many = Array.from({ length: 31 }, (_, i) => role(`role-${i}`, { users: { groups: [`g${i}`] } }));
  const compiled = compilePolicies({ roles: many, policies: [policy('edge', [{ roles: many.map((r) => r.metadata.name), trustLevel: 'Low' }])], services: [service('svc', { name: 'edge' })] });
  void test('uses masks and matches the role in the last slot', () => {
    assert.notEqual(compiled.policies.get('edge')?.slotsByGroup, undefined);
    assert.deepEqual(evaluate(compiled, { service: 'svc', user: user({ groups: ['g30'] }), device: device(), now: 0 }).matchedRoles, ['role-30']);
    assert.deepEqual(evaluate(compiled, { service: 'svc', user: user({ groups: ['g0', 'g30'] }), device: device(), now: 0 }).matchedRoles, ['role-0', 'role-30']);
  });
});
