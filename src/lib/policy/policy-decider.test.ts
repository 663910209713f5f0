import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { snapshotFromObjects } from '../config/index.ts';
import type { ConfigSnapshot } from '../config/index.ts';
import type { PeerIdentity } from '../pki/index.ts';
import type { ServiceSpec } from '../spec/index.ts';
import { certificateDecider, eventDecision } from './decider.ts';
import type { Decider, DecisionInput } from './decider.ts';
import { directoryFromState } from './directory.ts';
import { device, policy, role, service, user } from './fixtures.testing.ts';
import { createPolicyDecider, toDecision } from './policy-decider.ts';
import type { DeviceState, PrincipalDirectory, UserState } from './types.ts';

const NOW = Date.parse('2026-01-15T00:00:00Z');

function snapshot(mode: 'enforcing' | 'permissive', extra: { revokedSerials?: string[]; version?: string } = {}): ConfigSnapshot {
  return snapshotFromObjects(
    [
      role('engineers', { users: { groups: ['eng'] }, devices: { ownership: ['corporate-dedicated'] } }),
      policy('p', [
        { roles: ['engineers'], trustLevel: 'High', schedule: { start: null, end: '2026-01-15T00:00:00Z' } },
        { roles: ['engineers'], trustLevel: 'Medium' },
      ]),
      service('svc', { name: 'p', mode }),
      service('open'),
    ],
    extra,
  );
}

function identity(overrides: Partial<PeerIdentity> = {}): PeerIdentity {
  return { type: 'trust', user: 'u-alice', device: 'd-laptop', serial: '0A1B2C', notBefore: new Date(0), notAfter: new Date(NOW + 3_600_000), fingerprint256: 'AA:BB', ...overrides };
}

/** A live directory the test edits between connections, as the control plane's stream would. */
function liveDirectory(u: UserState = user(), d: DeviceState = device({ trustLevel: 'Medium' })) {
  const users = new Map([[u.id, u]]);
  const devices = new Map([[d.id, d]]);
  const directory: PrincipalDirectory = { user: (id) => users.get(id), device: (id) => devices.get(id) };
  return { directory, users, devices };
}

function input(snap: ConfigSnapshot, overrides: Partial<DecisionInput> = {}): DecisionInput {
  const svc = snap.services.find((s) => s.metadata.name === 'svc') as ServiceSpec;
  return { service: svc, identity: identity(), target: { host: 'svc.corp.example.com', port: 443, kind: 'dns' }, snapshot: snap, ...overrides };
}

const clock = { now: () => NOW };

void describe('createPolicyDecider', () => {
  void test('allows a trusted engineer and names the policy, rule and role in the reasons', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory().directory, clock });
    const decision = decider.decide(input(snapshot('enforcing')));
    assert.deepEqual(decision, { allow: true, reasons: ['policy-allow', 'policy:p', 'rule:1', 'role:engineers'], mode: 'enforcing' });
    assert.equal(eventDecision(decision), 'allow');
  });

  void test('AT-08 denies a valid certificate whose device is revoked when the policy is enforcing', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory(user(), device({ banned: true })).directory, clock });
    const decision = decider.decide(input(snapshot('enforcing')));
    assert.deepEqual(decision, { allow: false, reasons: ['device-revoked'], mode: 'enforcing' });
    assert.equal(eventDecision(decision), 'deny');
  });

  void test('AT-08 denies a valid certificate whose device is revoked when the policy is permissive too: permissive never relaxes a revocation', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory(user(), device({ banned: true })).directory, clock });
    const decision = decider.decide(input(snapshot('permissive')));
    assert.deepEqual(decision, { allow: false, reasons: ['device-revoked'], mode: 'permissive' });
  });

  void test('CP-18 enforcing denies a user whom no role matches', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory(user({ groups: ['sales'] })).directory, clock });
    assert.deepEqual(decider.decide(input(snapshot('enforcing'))), { allow: false, reasons: ['no-matching-role'], mode: 'enforcing' });
  });

  void test('CP-18 permissive allows a user whom no role matches and flags the decision would-deny', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory(user({ groups: ['sales'] })).directory, clock });
    const decision = decider.decide(input(snapshot('permissive')));
    assert.deepEqual(decision, { allow: true, wouldDeny: true, reasons: ['no-matching-role'], mode: 'permissive' });
    assert.equal(eventDecision(decision), 'would-deny');
  });

  void test('CP-18 a switch from permissive to enforcing applies to the next decision', () => {
    const { directory } = liveDirectory(user(), device({ trustLevel: 'Low', trustReasons: ['firewall-off'] }));
    const decider = createPolicyDecider({ directory: () => directory, clock });
    assert.deepEqual(decider.decide(input(snapshot('permissive'))), { allow: true, wouldDeny: true, reasons: ['trust-too-low', 'needs:Medium', 'has:Low', 'trust:firewall-off'], mode: 'permissive' });
    assert.equal(decider.decide(input(snapshot('enforcing'))).allow, false);
  });

  void test('reads the live state: a trust drop or a disabled user denies the next decision on the same snapshot', () => {
    const live = liveDirectory();
    const decider = createPolicyDecider({ directory: () => live.directory, clock });
    const snap = snapshot('enforcing');
    assert.equal(decider.decide(input(snap)).allow, true);
    live.devices.set('d-laptop', device({ trustLevel: 'Low' }));
    assert.deepEqual(decider.decide(input(snap)).reasons.slice(0, 3), ['trust-too-low', 'needs:Medium', 'has:Low']);
    live.devices.set('d-laptop', device());
    live.users.set('u-alice', user({ disabled: true }));
    assert.deepEqual(decider.decide(input(snap)).reasons, ['user-disabled']);
  });

  void test('reads the clock on every decision: a schedule that closes between two connections no longer allows', () => {
    let now = NOW - 1;
    const decider = createPolicyDecider({ directory: () => liveDirectory(user(), device({ trustLevel: 'High' })).directory, clock: { now: () => now } });
    const snap = snapshot('enforcing');
    assert.deepEqual(decider.decide(input(snap)).reasons, ['policy-allow', 'policy:p', 'rule:0', 'role:engineers']);
    now = NOW;
    assert.deepEqual(decider.decide(input(snap)).reasons, ['policy-allow', 'policy:p', 'rule:1', 'role:engineers']);
  });

  void test('CA-06 denies a certificate whose serial the snapshot revokes, in either mode and whatever its case', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory().directory, clock });
    for (const mode of ['enforcing', 'permissive'] as const) {
      assert.deepEqual(decider.decide(input(snapshot(mode, { revokedSerials: ['0a1b2c'] }))), { allow: false, reasons: ['cert-revoked'], mode: 'none' });
    }
  });

  const wrongCertificates: Array<[string, Partial<PeerIdentity>]> = [
    ['CA-03 denies a device certificate', { type: 'device', user: undefined }],
    ['CA-03 denies a connector certificate', { type: 'connector', user: undefined, device: undefined, name: 'dc1' }],
    ['denies a trust certificate that names no device', { device: undefined }],
    ['denies a trust certificate that names no user', { user: undefined }],
  ];
  for (const [name, overrides] of wrongCertificates) {
    void test(name, () => {
      const decider = createPolicyDecider({ directory: () => liveDirectory().directory, clock });
      assert.deepEqual(decider.decide(input(snapshot('permissive'), { identity: identity(overrides) })), { allow: false, reasons: ['cert-wrong-type'], mode: 'none' });
    });
  }

  void test('denies a certificate whose user or device the directory does not know', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory().directory, clock });
    assert.deepEqual(decider.decide(input(snapshot('permissive'), { identity: identity({ user: 'u-mallory', device: 'd-other' }) })).reasons, ['unknown-user', 'unknown-device']);
  });

  void test('denies a service without a policy', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory().directory, clock });
    const snap = snapshot('enforcing');
    const open = snap.services.find((s) => s.metadata.name === 'open') as ServiceSpec;
    assert.deepEqual(decider.decide(input(snap, { service: open })), { allow: false, reasons: ['no-policy'], mode: 'none' });
  });

  void test('falls back to the certificate decider for a snapshot that carries no principal state', () => {
    const decider = createPolicyDecider({ directory: () => undefined, clock });
    const snap = snapshot('enforcing');
    assert.deepEqual(decider.decide(input(snap)), certificateDecider.decide(input(snap)));
    assert.equal(decider.evaluate(input(snap)), undefined);
  });

  void test('uses the fallback it is given', () => {
    const fallback: Decider = { decide: () => ({ allow: false, reasons: ['no-principal-state'], mode: 'none' }) };
    const decider = createPolicyDecider({ directory: () => undefined, clock, fallback });
    assert.deepEqual(decider.decide(input(snapshot('enforcing'))).reasons, ['no-principal-state']);
  });

  void test('still refuses a revoked serial before falling back', () => {
    const decider = createPolicyDecider({ directory: () => undefined, clock });
    assert.deepEqual(decider.decide(input(snapshot('enforcing', { revokedSerials: ['0A1B2C'] }))).reasons, ['cert-revoked']);
  });

  void test('compiles once per snapshot, and reuses the compilation for another snapshot object of the same version', () => {
    let directoryCalls = 0;
    const decider = createPolicyDecider({ directory: () => (directoryCalls++, liveDirectory().directory), clock });
    const first = snapshot('enforcing');
    const compiled = decider.prepare(first);
    decider.decide(input(first));
    decider.decide(input(first));
    assert.equal(directoryCalls, 1);
    const sameVersion = snapshot('enforcing');
    assert.equal(sameVersion.version, first.version);
    assert.equal(decider.prepare(sameVersion), compiled);
    const changed = snapshot('permissive');
    assert.notEqual(decider.prepare(changed), compiled);
    assert.equal(decider.decide(input(changed)).mode, 'permissive');
  });

  void test('reuses the compilation for a snapshot whose role, policy and service lists are the same objects', () => {
    const decider = createPolicyDecider({ directory: () => liveDirectory().directory, clock });
    const first = snapshot('enforcing');
    const principalsChanged: ConfigSnapshot = { ...first, version: 'other' };
    assert.equal(decider.prepare(principalsChanged), decider.prepare(first));
  });

  void test('answers decision-failed instead of throwing when the directory throws, and reports the error', () => {
    const errors: unknown[] = [];
    const decider = createPolicyDecider({
      directory: () => {
        throw new Error('directory down');
      },
      clock,
      onError: (err) => errors.push(err),
    });
    assert.deepEqual(decider.decide(input(snapshot('enforcing'))), { allow: false, reasons: ['decision-failed'], mode: 'none' });
    assert.equal((errors[0] as Error).message, 'directory down');
  });

  void test('evaluate gives the full policy decision behind decide', () => {
    const decider = createPolicyDecider({ directory: () => directoryFromState({ users: [user()], devices: [device()] }), clock });
    assert.deepEqual(decider.evaluate(input(snapshot('enforcing'))), { effect: 'allow', reasons: ['policy-allow'], matchedRoles: ['engineers'], rule: 1, policy: 'p', mode: 'enforcing' });
  });
});

void describe('directoryFromState', () => {
  void test('finds users and devices by exact id and keeps the first of a repeated id', () => {
    const directory = directoryFromState({ users: [user({ id: 'u1', email: 'first@example.com' }), user({ id: 'u1', email: 'second@example.com' })], devices: [device({ id: 'd1' })] });
    assert.equal(directory.user('u1')?.email, 'first@example.com');
    assert.equal(directory.user('U1'), undefined);
    assert.equal(directory.device('d1')?.id, 'd1');
    assert.equal(directory.device('constructor'), undefined);
  });
});

void describe('toDecision', () => {
  void test('turns would-deny into an allow flagged wouldDeny, keeping the reasons', () => {
    assert.deepEqual(toDecision({ effect: 'would-deny', reasons: ['outside-schedule'], matchedRoles: ['r'], policy: 'p', mode: 'permissive' }), {
      allow: true,
      wouldDeny: true,
      reasons: ['outside-schedule'],
      mode: 'permissive',
    });
  });
  void test('keeps a deny a deny', () => {
    assert.deepEqual(toDecision({ effect: 'deny', reasons: ['no-policy'], matchedRoles: [], mode: 'none' }), { allow: false, reasons: ['no-policy'], mode: 'none' });
  });
});
