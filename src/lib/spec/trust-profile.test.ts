import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEVICE_OWNERSHIP, DEVICE_PLATFORMS, isSpecKind, parseSpecDocuments } from './index.ts';
import { FACTOR_TYPES, MAX_STALE_AFTER_MS, MIN_STALE_AFTER_MS, TRUST_PROFILE_OWNERSHIP, TRUST_PROFILE_PLATFORMS, staleAfterMs, trustProfileSpec } from './trust-profile.ts';

/** The problems of a spec body as `path: message` lines. */
function problems(spec: unknown): string[] {
  const result = trustProfileSpec.safeParse(spec);
  if (result.success) return [];
  return result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
}

const EXAMPLE = {
  appliesTo: { platforms: ['linux', 'macos', 'windows'] },
  staleAfter: '15m',
  factors: [
    { type: 'diskEncryption', effect: 'Medium' },
    { type: 'firewall', effect: 'Low' },
    { type: 'osVersion', minimum: { macos: '14.0', windows: '10.0.19045' }, effect: 'Low' },
    { type: 'fileExists', path: '/etc/corp/agent.conf', effect: 'AlwaysDeny' },
    { type: 'processRunning', name: 'falcon-sensor', effect: 'Low' },
    { type: 'mdmCompliant', effect: 'AlwaysDeny' },
  ],
};

void describe('TrustProfile spec', () => {
  void test('the example of DESIGN §4 is valid and gets its defaults', () => {
    const spec = trustProfileSpec.parse(EXAMPLE);
    assert.deepEqual(spec.appliesTo, { platforms: ['linux', 'macos', 'windows'], ownership: [], groups: [] });
    assert.equal(spec.staleAfter, '15m');
    assert.equal(spec.factors.length, 6);
  });

  void test('every factor type has a valid form', () => {
    const spec = trustProfileSpec.parse({
      factors: [
        { type: 'diskEncryption', effect: 'Medium' },
        { type: 'firewall', effect: 'Low' },
        { type: 'osVersion', minimum: { linux: { ubuntu: '22.04', debian: '12' }, ios: '17.4', android: '14' }, effect: 'Low' },
        { type: 'osUpdates', effect: 'Low' },
        { type: 'osUpdates', automatic: false, maxPending: 0, effect: 'Medium' },
        { type: 'screenLock', effect: 'Low' },
        { type: 'fileExists', path: 'C:\\ProgramData\\Corp\\agent.conf', effect: 'AlwaysDeny' },
        { type: 'processRunning', name: 'MsSense.exe', effect: 'Low' },
        { type: 'mdmPresent', effect: 'Medium' },
        { type: 'mdmCompliant', effect: 'AlwaysDeny' },
        { type: 'crowdstrikeScore', minimum: 70, effect: 'Medium' },
      ],
    });
    assert.deepEqual(new Set(spec.factors.map((f) => f.type)), new Set(FACTOR_TYPES));
    assert.deepEqual(spec.factors[3], { type: 'osUpdates', automatic: true, effect: 'Low' });
  });

  void test('an empty spec applies to every device, with no factors and a 15m stale threshold', () => {
    assert.deepEqual(trustProfileSpec.parse({}), { appliesTo: { platforms: [], ownership: [], groups: [] }, staleAfter: '15m', factors: [] });
  });

  void test('unknown fields are refused at every level, naming the field path', () => {
    const found = problems({ extra: 1, appliesTo: { os: ['linux'] }, factors: [{ type: 'firewall', effect: 'Low', strict: true }] });
    assert.equal(found.length, 3, found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('appliesTo:')));
    assert.ok(found.some((p) => p.startsWith('factors.0:')));
  });

  void test('an unknown factor type, a High or missing effect, and an unknown platform are each refused', () => {
    const found = problems({
      appliesTo: { platforms: ['beos'], ownership: ['borrowed'] },
      factors: [{ type: 'antivirus', effect: 'Low' }, { type: 'firewall', effect: 'High' }, { type: 'firewall' }],
    });
    assert.ok(found.some((p) => p.startsWith('appliesTo.platforms.0:')), found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('appliesTo.ownership.0:')), found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('factors.0.type:') && p.includes('diskEncryption')), found.join('\n'));
    assert.ok(found.some((p) => p === 'factors.1.effect: must be Low, Medium or AlwaysDeny (the level an unmet factor allows at most)'), found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('factors.2.effect:')), found.join('\n'));
  });

  void test('factor parameters are checked: versions, paths, process names, scores, update checks', () => {
    const found = problems({
      factors: [
        { type: 'osVersion', minimum: {}, effect: 'Low' },
        { type: 'osVersion', minimum: { macos: '14.x' }, effect: 'Low' },
        { type: 'osVersion', minimum: { linux: { Ubuntu: '22.04' } }, effect: 'Low' },
        { type: 'fileExists', path: 'etc/corp.conf', effect: 'Low' },
        { type: 'fileExists', path: '/etc/../shadow', effect: 'Low' },
        { type: 'processRunning', name: '/usr/bin/falcon', effect: 'Low' },
        { type: 'crowdstrikeScore', minimum: 101, effect: 'Low' },
        { type: 'crowdstrikeScore', minimum: 50.5, effect: 'Low' },
        { type: 'osUpdates', automatic: false, effect: 'Low' },
        { type: 'osUpdates', maxPending: -1, effect: 'Low' },
      ],
    });
    for (const index of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) {
      assert.ok(
        found.some((p) => p.startsWith(`factors.${index}`)),
        `factor ${index} has no problem:\n${found.join('\n')}`,
      );
    }
  });

  void test('staleAfter takes durations from 1m to 7d and refuses others', () => {
    for (const ok of ['1m', '15m', '1h', '1h30m', '2d', '7d', '90s']) assert.deepEqual(problems({ staleAfter: ok }), [], ok);
    for (const bad of ['', '0m', '59s', '8d', '169h', '15', 'm', '15 m', '1.5h', '-1h', 15]) {
      assert.equal(problems({ staleAfter: bad }).length, 1, String(bad));
    }
  });

  void test('staleAfterMs reads durations and their sums', () => {
    assert.equal(staleAfterMs('15m'), 900_000);
    assert.equal(staleAfterMs('1d2h3m4s'), ((26 * 60 + 3) * 60 + 4) * 1000);
    assert.equal(staleAfterMs('1m'), MIN_STALE_AFTER_MS);
    assert.equal(staleAfterMs('7d'), MAX_STALE_AFTER_MS);
    assert.equal(staleAfterMs(''), undefined);
    assert.equal(staleAfterMs('1w'), undefined);
  });

  void test('any accepted staleAfter is within the bounds', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), (text) => {
        if (problems({ staleAfter: text }).length > 0) return;
        const ms = staleAfterMs(text);
        assert.ok(ms !== undefined && ms >= MIN_STALE_AFTER_MS && ms <= MAX_STALE_AFTER_MS, text);
      }),
    );
  });

  void test('the platform and ownership lists are the ones Role uses', () => {
    assert.deepEqual([...TRUST_PROFILE_PLATFORMS], [...DEVICE_PLATFORMS]);
    assert.deepEqual([...TRUST_PROFILE_OWNERSHIP], [...DEVICE_OWNERSHIP]);
  });
});

void describe('TrustProfile documents', () => {
  void test('the DESIGN §4 document parses through the spec registry, and problems name the field path', () => {
    assert.ok(isSpecKind('TrustProfile'));
    const good = parseSpecDocuments(`apiVersion: causeway/v1
kind: TrustProfile
metadata: {name: laptops}
spec:
  appliesTo: {platforms: [linux, macos, windows]}   # also ownership, groups
  staleAfter: 15m
  factors:
    - {type: diskEncryption, effect: Medium}
    - {type: firewall, effect: Low}
    - {type: osVersion, minimum: {macos: "14.0", windows: "10.0.19045"}, effect: Low}
    - {type: fileExists, path: /etc/corp/agent.conf, effect: AlwaysDeny}
    - {type: processRunning, name: falcon-sensor, effect: Low}
    - {type: mdmCompliant, effect: AlwaysDeny}
`);
    assert.ok(good.ok, good.ok ? '' : JSON.stringify(good.problems));
    assert.equal(good.objects[0]?.kind, 'TrustProfile');
    const bad = parseSpecDocuments(`apiVersion: causeway/v1
kind: TrustProfile
metadata: {name: laptops}
spec:
  staleAfter: 30d
  factors:
    - {type: firewall, effect: High}
`);
    assert.ok(!bad.ok);
    assert.deepEqual(
      bad.problems.map((p) => p.path),
      ['spec.staleAfter', 'spec.factors[0].effect'],
    );
  });
});
