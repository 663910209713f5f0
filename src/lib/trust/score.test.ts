import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { trustProfileSpec } from '../spec/trust-profile.ts';
import { levelRank, scoreDevice } from './index.ts';
import type { DeviceFacts, FactorValues, ScoreInput, TrustLevel, TrustProfileInput } from './index.ts';

const NOW = Date.parse('2026-06-01T12:00:00Z');

function profile(name: string, spec: unknown): TrustProfileInput {
  return { metadata: { name }, spec: trustProfileSpec.parse(spec) };
}

const LAPTOPS = profile('laptops', {
  appliesTo: { platforms: ['linux', 'macos', 'windows'] },
  staleAfter: '15m',
  factors: [
    { type: 'diskEncryption', effect: 'Medium' },
    { type: 'firewall', effect: 'Low' },
    { type: 'osVersion', minimum: { macos: '14.0', windows: '10.0.19045', linux: { ubuntu: '22.04', debian: '12' } }, effect: 'Low' },
    { type: 'osUpdates', automatic: true, maxPending: 20, effect: 'Low' },
    { type: 'screenLock', effect: 'Medium' },
    { type: 'fileExists', path: '/etc/corp/agent.conf', effect: 'AlwaysDeny' },
    { type: 'processRunning', name: 'falcon-sensor', effect: 'Low' },
    { type: 'mdmCompliant', effect: 'AlwaysDeny' },
    { type: 'crowdstrikeScore', minimum: 70, effect: 'Medium' },
  ],
});

const GOOD: FactorValues = {
  osVersion: '24.04',
  osDistribution: 'ubuntu',
  diskEncryption: true,
  firewall: true,
  updatesPending: 3,
  updatesAutomatic: true,
  screenLock: true,
  files: { '/etc/corp/agent.conf': true },
  processes: { 'falcon-sensor': true },
  mdmPresent: true,
  mdmCompliant: true,
  crowdstrikeScore: 85,
};

const LINUX: DeviceFacts = { platform: 'linux', ownership: 'corporate-dedicated', groups: ['eng'], lastReportAt: NOW - 60_000 };

function score(overrides: Partial<ScoreInput> = {}) {
  return scoreDevice({ profiles: [LAPTOPS], device: LINUX, factors: GOOD, now: NOW, ...overrides });
}

void describe('scoreDevice', () => {
  void test('a compliant device is High, with every factor met and nothing to do', () => {
    const result = score();
    assert.equal(result.level, 'High');
    assert.deepEqual(result.reasons, []);
    assert.equal(result.profile, 'laptops');
    assert.deepEqual(result.profiles, ['laptops']);
    assert.equal(result.factors.length, 9);
    assert.ok(result.factors.every((f) => f.met && f.reason === undefined && f.remedy === undefined));
    assert.equal(result.explanation, 'Trust High (profile laptops): every factor is met.');
  });

  void test('a firewall that is off gives Low, reason firewall-off and the command to turn it on', () => {
    const result = score({ factors: { ...GOOD, firewall: false } });
    assert.equal(result.level, 'Low');
    assert.deepEqual(result.reasons, ['firewall-off']);
    const firewall = result.factors.find((f) => f.type === 'firewall');
    assert.deepEqual({ met: firewall?.met, observed: firewall?.observed, effect: firewall?.effect, reason: firewall?.reason }, { met: false, observed: false, effect: 'Low', reason: 'firewall-off' });
    assert.match(firewall?.remedy ?? '', /sudo ufw enable/);
    assert.match(result.explanation, /^Trust Low \(profile laptops\): the firewall is off \[Low\]: turn the firewall on/);
  });

  void test('the level is the most restrictive effect among the unmet factors, and reasons list it first', () => {
    const result = score({ factors: { ...GOOD, firewall: false, diskEncryption: false } });
    assert.equal(result.level, 'Low');
    assert.deepEqual(result.reasons, ['firewall-off', 'disk-not-encrypted']);
    const medium = score({ factors: { ...GOOD, diskEncryption: false, screenLock: false } });
    assert.equal(medium.level, 'Medium');
    const deny = score({ factors: { ...GOOD, firewall: false, files: { '/etc/corp/agent.conf': false } } });
    assert.equal(deny.level, 'AlwaysDeny');
    assert.deepEqual(deny.reasons, ['file-missing', 'firewall-off']);
    assert.match(deny.explanation, /a required file is missing \(\/etc\/corp\/agent\.conf present\) \[AlwaysDeny\]: restore \/etc\/corp\/agent\.conf/);
  });

  void test('remedies are worded for the platform', () => {
    const mac = score({ device: { ...LINUX, platform: 'macos' }, factors: { ...GOOD, osVersion: '14.4.1', diskEncryption: false } });
    assert.match(mac.factors.find((f) => f.type === 'diskEncryption')?.remedy ?? '', /FileVault/);
    const windows = score({ device: { ...LINUX, platform: 'windows' }, factors: { ...GOOD, osVersion: '10.0.22631', diskEncryption: false } });
    assert.match(windows.factors.find((f) => f.type === 'diskEncryption')?.remedy ?? '', /BitLocker/);
  });

  void test('osVersion compares dotted numbers per platform and per Linux distribution', () => {
    const level = (platform: string, factors: FactorValues): TrustLevel => score({ device: { ...LINUX, platform }, factors: { ...GOOD, ...factors } }).level;
    assert.equal(level('macos', { osVersion: '14.0' }), 'High');
    assert.equal(level('macos', { osVersion: '14' }), 'High');
    assert.equal(level('macos', { osVersion: '13.6.7' }), 'Low');
    assert.equal(level('macos', { osVersion: '15.0.1' }), 'High');
    assert.equal(level('windows', { osVersion: '10.0.19044' }), 'Low');
    assert.equal(level('windows', { osVersion: '10.0.22631' }), 'High');
    assert.equal(level('linux', { osDistribution: 'ubuntu', osVersion: '20.04' }), 'Low');
    assert.equal(level('linux', { osDistribution: 'debian', osVersion: '12' }), 'High');
    // No minimum for this distribution: the factor does not apply.
    assert.equal(level('linux', { osDistribution: 'fedora', osVersion: '40' }), 'High');
    const outdated = score({ device: { ...LINUX, platform: 'macos' }, factors: { ...GOOD, osVersion: '13.6.7' } });
    assert.deepEqual(outdated.reasons, ['os-outdated']);
    assert.match(outdated.factors.find((f) => f.type === 'osVersion')?.remedy ?? '', /14\.0 or later/);
  });

  void test('osUpdates checks automatic updates and the pending count', () => {
    assert.deepEqual(score({ factors: { ...GOOD, updatesAutomatic: false } }).reasons, ['updates-not-automatic']);
    assert.deepEqual(score({ factors: { ...GOOD, updatesPending: 21 } }).reasons, ['updates-pending']);
    assert.equal(score({ factors: { ...GOOD, updatesPending: 20 } }).level, 'High');
    assert.match(score({ factors: { ...GOOD, updatesPending: 21 } }).factors.find((f) => f.type === 'osUpdates')?.remedy ?? '', /apt upgrade/);
  });

  void test('a screen lock that does not apply (no desktop session) is met', () => {
    assert.equal(score({ factors: { ...GOOD, screenLock: 'not-applicable' } }).level, 'High');
    assert.deepEqual(score({ factors: { ...GOOD, screenLock: false } }).reasons, ['screen-lock-off']);
  });

  void test('the CrowdStrike score must reach the minimum', () => {
    assert.equal(score({ factors: { ...GOOD, crowdstrikeScore: 70 } }).level, 'High');
    assert.deepEqual(score({ factors: { ...GOOD, crowdstrikeScore: 69 } }).reasons, ['crowdstrike-score-low']);
  });

  void test('DT-07 missing, negative, NaN, infinite or malformed factor values count as unmet', () => {
    const bad: Array<[Partial<Record<keyof FactorValues, unknown>>, string]> = [
      [{ firewall: undefined }, 'firewall-unknown'],
      [{ firewall: 'true' }, 'firewall-unknown'],
      [{ firewall: 1 }, 'firewall-unknown'],
      [{ diskEncryption: null }, 'disk-encryption-unknown'],
      [{ updatesPending: -1 }, 'updates-unknown'],
      [{ updatesPending: Number.NaN }, 'updates-unknown'],
      [{ updatesPending: Number.POSITIVE_INFINITY }, 'updates-unknown'],
      [{ updatesPending: 2.5 }, 'updates-unknown'],
      [{ updatesPending: '3' }, 'updates-unknown'],
      [{ crowdstrikeScore: Number.NaN }, 'crowdstrike-score-unknown'],
      [{ crowdstrikeScore: -5 }, 'crowdstrike-score-unknown'],
      [{ crowdstrikeScore: 101 }, 'crowdstrike-score-unknown'],
      [{ osVersion: '24.04-beta' }, 'os-version-unknown'],
      [{ osVersion: 24.04 }, 'os-version-unknown'],
      [{ osDistribution: undefined }, 'os-version-unknown'],
      [{ screenLock: 'yes' }, 'screen-lock-unknown'],
      [{ files: [] }, 'file-unknown'],
      [{ files: { '/etc/corp/agent.conf': 'yes' } }, 'file-unknown'],
      [{ processes: null }, 'process-unknown'],
      [{ mdmCompliant: 'compliant' }, 'mdm-compliance-unknown'],
    ];
    for (const [change, reason] of bad) {
      const result = scoreDevice({ profiles: [LAPTOPS], device: LINUX, factors: { ...GOOD, ...change } as FactorValues, now: NOW });
      assert.notEqual(result.level, 'High', JSON.stringify(change));
      assert.ok(result.reasons.includes(reason), `${JSON.stringify(change)}: ${result.reasons.join(',')}`);
      const unmet = result.factors.find((f) => f.reason === reason);
      assert.match(unmet?.remedy ?? '', /could not check|has not reported/);
    }
    for (const factors of [null, undefined, 'garbage', 42, [], { __proto__: { firewall: true } }]) {
      const result = scoreDevice({ profiles: [LAPTOPS], device: LINUX, factors: factors as unknown as FactorValues, now: NOW });
      assert.equal(result.level, 'AlwaysDeny', JSON.stringify(factors) ?? 'undefined');
      assert.equal(result.factors.filter((f) => f.met).length, 0, 'nothing is met without values');
    }
  });

  void test('DT-05 a device whose last report is older than staleAfter is AlwaysDeny with reason stale', () => {
    const fresh = score({ device: { ...LINUX, lastReportAt: NOW - 15 * 60_000 } });
    assert.equal(fresh.level, 'High');
    const stale = score({ device: { ...LINUX, lastReportAt: NOW - 15 * 60_000 - 1 } });
    assert.equal(stale.level, 'AlwaysDeny');
    assert.equal(stale.stale, true);
    assert.deepEqual(stale.reasons, ['stale']);
    assert.match(stale.explanation, /last posture report is 15m old \(the limit is 15m\); start the Causeway client or run causeway device report/);
  });

  void test('DT-05 a device that never reported, or whose report time is malformed, is stale', () => {
    for (const lastReportAt of [undefined, Number.NaN, Number.NEGATIVE_INFINITY, '2026-06-01T12:00:00Z' as unknown as number]) {
      const result = score({ device: { ...LINUX, lastReportAt } });
      assert.equal(result.level, 'AlwaysDeny', String(lastReportAt));
      assert.equal(result.reasons[0], 'stale');
    }
  });

  void test('with several profiles the shortest staleAfter applies', () => {
    const strict = profile('strict', { staleAfter: '5m' });
    const result = score({ profiles: [LAPTOPS, strict], device: { ...LINUX, lastReportAt: NOW - 6 * 60_000 } });
    assert.equal(result.staleAfterMs, 5 * 60_000);
    assert.equal(result.level, 'AlwaysDeny');
  });

  void test('every applying profile counts and the strictest result wins; profile names the deciding one', () => {
    const servers = profile('eng-firewall', { appliesTo: { groups: ['eng'] }, factors: [{ type: 'firewall', effect: 'AlwaysDeny' }] });
    const result = score({ profiles: [LAPTOPS, servers], factors: { ...GOOD, firewall: false } });
    assert.equal(result.level, 'AlwaysDeny');
    assert.equal(result.profile, 'eng-firewall');
    assert.deepEqual(result.profiles, ['laptops', 'eng-firewall']);
    assert.equal(result.factors.filter((f) => f.type === 'firewall').length, 2);
    assert.deepEqual(result.reasons, ['firewall-off']);
    assert.match(result.explanation, /^Trust AlwaysDeny \(profiles laptops, eng-firewall\)/);
  });

  void test('appliesTo filters by platform, ownership and the user’s groups', () => {
    const p = profile('byod', { appliesTo: { platforms: ['macos'], ownership: ['employee-owned'], groups: ['contractors'] }, factors: [{ type: 'firewall', effect: 'AlwaysDeny' }] });
    const device: DeviceFacts = { platform: 'macos', ownership: 'employee-owned', groups: ['contractors'], lastReportAt: NOW };
    const factors = { firewall: false };
    assert.deepEqual(scoreDevice({ profiles: [p], device, factors, now: NOW }).profiles, ['byod']);
    for (const other of [{ platform: 'linux' }, { ownership: 'corporate-dedicated' }, { groups: ['eng'] }, { groups: undefined }, { platform: undefined }]) {
      const result = scoreDevice({ profiles: [p], device: { ...device, ...other }, factors, now: NOW });
      assert.deepEqual(result.profiles, [], JSON.stringify(other));
    }
  });

  void test('a device no profile applies to is Low with reason no-trust-profile, unless configured otherwise', () => {
    const result = score({ device: { ...LINUX, platform: 'android' } });
    assert.equal(result.level, 'Low');
    assert.deepEqual(result.reasons, ['no-trust-profile']);
    assert.equal(result.profile, undefined);
    assert.equal(score({ profiles: [], unprofiledLevel: 'AlwaysDeny' }).level, 'AlwaysDeny');
    assert.equal(score({ profiles: [], unprofiledLevel: 'High' }).level, 'High');
  });

  void test('a catch-all profile without factors makes a reporting device High', () => {
    assert.equal(score({ profiles: [profile('everyone', {})] }).level, 'High');
  });

  void test('overrides cap the level, the strictest wins, and each capping one is named', () => {
    const result = score({
      overrides: [
        { maxLevel: 'Medium', reason: 'quarterly audit pending', source: 'admin alice' },
        { maxLevel: 'Low', reason: 'incident 4711', source: 'SIEM' },
        { maxLevel: 'High', reason: 'no limit', source: 'noop' },
      ],
    });
    assert.equal(result.level, 'Low');
    assert.deepEqual(result.reasons, ['override-admin-alice', 'override-siem']);
    assert.match(result.explanation, /SIEM limits this device to Low \(incident 4711\)/);
    assert.equal(score({ overrides: [{ maxLevel: 'High', reason: '', source: 'x' }], factors: { ...GOOD, firewall: false } }).level, 'Low');
  });

  void test('a malformed override caps at AlwaysDeny', () => {
    const result = score({ overrides: [{ maxLevel: 'Highest' as TrustLevel, reason: 'x', source: 'y' }] });
    assert.equal(result.level, 'AlwaysDeny');
  });

  void test('reasons fit the policy module’s trustReasons: lower case, hyphens, no colon, at most 64 characters', () => {
    const result = score({
      factors: { firewall: false, updatesAutomatic: false, screenLock: false },
      overrides: [{ maxLevel: 'Low', reason: 'r', source: `Weird:Source/${'x'.repeat(100)}` }],
      device: { ...LINUX, lastReportAt: undefined },
    });
    assert.ok(result.reasons.length > 5);
    for (const reason of result.reasons) assert.match(reason, /^[a-z0-9][a-z0-9-]{0,63}$/);
  });

  void test('never throws on malformed profiles or device facts', () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), fc.anything(), fc.anything(), (profiles, device, factors, overrides) => {
        const result = scoreDevice({ profiles, device, factors, overrides, now: NOW } as unknown as ScoreInput);
        assert.ok(['High', 'Medium', 'Low', 'AlwaysDeny'].includes(result.level));
      }),
    );
    const broken = { metadata: { name: 'broken' }, spec: { factors: [null, { type: 'firewall' }, { type: 'osVersion', effect: 'Low' }] } } as unknown as TrustProfileInput;
    assert.equal(scoreDevice({ profiles: [broken], device: LINUX, factors: GOOD, now: NOW }).level, 'AlwaysDeny');
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const arbLevel = fc.constantFrom<TrustLevel>('High', 'Medium', 'Low', 'AlwaysDeny');
const arbFactors: fc.Arbitrary<FactorValues> = fc.record(
  {
    osVersion: fc.constantFrom('20.04', '22.04', '24.04', 'x'),
    osDistribution: fc.constantFrom('ubuntu', 'debian', 'fedora'),
    diskEncryption: fc.boolean(),
    firewall: fc.boolean(),
    updatesPending: fc.oneof(fc.nat({ max: 40 }), fc.constant(-1)),
    updatesAutomatic: fc.boolean(),
    screenLock: fc.constantFrom<boolean | 'not-applicable'>(true, false, 'not-applicable'),
    files: fc.record({ '/etc/corp/agent.conf': fc.boolean() }),
    processes: fc.record({ 'falcon-sensor': fc.boolean() }),
    mdmPresent: fc.boolean(),
    mdmCompliant: fc.boolean(),
    crowdstrikeScore: fc.integer({ min: 0, max: 100 }),
  },
  { requiredKeys: [] },
);
const arbOverrides = fc.array(fc.record({ maxLevel: arbLevel, reason: fc.string(), source: fc.string() }), { maxLength: 3 });
const arbDevice: fc.Arbitrary<DeviceFacts> = fc.record({
  platform: fc.constantFrom('linux', 'macos', 'windows', 'android'),
  ownership: fc.constantFrom('corporate-dedicated', 'employee-owned'),
  groups: fc.subarray(['eng', 'ops']),
  lastReportAt: fc.integer({ min: NOW - 30 * 60_000, max: NOW }),
});

/** Each factor value replaced by one that fails it (or by nothing: unknown). */
const UNMET: Array<(f: FactorValues) => FactorValues> = [
  (f) => ({ ...f, firewall: false }),
  (f) => ({ ...f, diskEncryption: undefined }),
  (f) => ({ ...f, osVersion: '1.0' }),
  (f) => ({ ...f, updatesAutomatic: false }),
  (f) => ({ ...f, updatesPending: 1000 }),
  (f) => ({ ...f, screenLock: false }),
  (f) => ({ ...f, files: {} }),
  (f) => ({ ...f, processes: { 'falcon-sensor': false } }),
  (f) => ({ ...f, mdmCompliant: false }),
  (f) => ({ ...f, crowdstrikeScore: Number.NaN }),
];

const extra = profile('ops', { appliesTo: { groups: ['ops'] }, staleAfter: '10m', factors: [{ type: 'firewall', effect: 'Medium' }, { type: 'mdmPresent', effect: 'Low' }] });

void describe('scoreDevice properties', () => {
  void test('making a factor unmet never raises the level', () => {
    fc.assert(
      fc.property(arbDevice, arbFactors, arbOverrides, fc.nat({ max: UNMET.length - 1 }), (device, factors, overrides, which) => {
        const input = { profiles: [LAPTOPS, extra], device, overrides, now: NOW };
        const before = scoreDevice({ ...input, factors });
        const after = scoreDevice({ ...input, factors: UNMET[which](factors) });
        assert.ok(levelRank(after.level) <= levelRank(before.level), `${before.level} → ${after.level}`);
      }),
    );
  });

  void test('adding an override, or a profile to a device some profile applies to, never raises the level', () => {
    fc.assert(
      fc.property(arbDevice, arbFactors, arbOverrides, arbLevel, (device, factors, overrides, cap) => {
        const base = scoreDevice({ profiles: [LAPTOPS], device, factors, overrides, now: NOW });
        const capped = scoreDevice({ profiles: [LAPTOPS], device, factors, overrides: [...overrides, { maxLevel: cap, reason: 'r', source: 's' }], now: NOW });
        assert.ok(levelRank(capped.level) <= Math.min(levelRank(base.level), levelRank(cap)));
        // A device no profile applied to was at most Low (unprofiledLevel) and may rise once one applies.
        const more = scoreDevice({ profiles: [LAPTOPS, extra], device, factors, overrides, now: NOW });
        if (base.profiles.length > 0) assert.ok(levelRank(more.level) <= levelRank(base.level));
      }),
    );
  });

  void test('the level is High exactly when a profile applies, the device is fresh, every factor is met and no override caps', () => {
    fc.assert(
      fc.property(arbDevice, arbFactors, arbOverrides, (device, factors, overrides) => {
        const result = scoreDevice({ profiles: [LAPTOPS, extra], device, factors, overrides, now: NOW });
        const expectHigh = result.profiles.length > 0 && !result.stale && result.factors.every((f) => f.met) && overrides.every((o) => o.maxLevel === 'High');
        assert.equal(result.level === 'High', expectHigh);
        // Every unmet factor says why and what to do.
        for (const f of result.factors.filter((x) => !x.met)) assert.ok(f.reason !== undefined && f.remedy !== undefined && f.remedy.length > 10);
        assert.equal(result.reasons.length === 0, result.level === 'High');
      }),
    );
  });

  void test('order of profiles does not change the result', () => {
    fc.assert(
      fc.property(arbDevice, arbFactors, (device, factors) => {
        const a = scoreDevice({ profiles: [LAPTOPS, extra], device, factors, now: NOW });
        const b = scoreDevice({ profiles: [extra, LAPTOPS], device, factors, now: NOW });
        assert.equal(a.level, b.level);
        assert.deepEqual(new Set(a.reasons), new Set(b.reasons));
      }),
    );
  });
});
