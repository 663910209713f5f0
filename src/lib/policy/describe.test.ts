import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { certificateDecider } from './decider.ts';
import type { Decision } from './decider.ts';
import { describeDecision } from './describe.ts';
import type { PolicyDecision } from './types.ts';

const denied = (reasons: string[], extra: Partial<PolicyDecision> = {}): PolicyDecision => ({ effect: 'deny', reasons, matchedRoles: [], mode: 'enforcing', policy: 'k8s-prod', ...extra });

const cases: Array<[string, PolicyDecision | Decision, string]> = [
  ['says which policy, rule and role allowed', { effect: 'allow', reasons: ['policy-allow'], matchedRoles: ['engineers'], rule: 0, policy: 'k8s-prod', mode: 'enforcing' }, 'allowed by policy k8s-prod spec.access[0], role engineers'],
  ['reads the same from the access tier’s Decision', { allow: true, reasons: ['policy-allow', 'policy:k8s-prod', 'rule:1', 'role:a', 'role:b'], mode: 'enforcing' }, 'allowed by policy k8s-prod spec.access[1], roles a, b'],
  ['explains a trust level that is too low, with the factors behind it', denied(['trust-too-low', 'needs:Medium', 'has:Low', 'trust:firewall-off']), 'denied: device trust Low, this service needs Medium (firewall off)'],
  ['lists several factors', denied(['trust-too-low', 'needs:High', 'has:Low', 'trust:firewall-off', 'trust:disk-unencrypted']), 'denied: device trust Low, this service needs High (firewall off, disk unencrypted)'],
  ['explains a closed schedule', denied(['outside-schedule']), 'denied: outside the schedule of policy k8s-prod'],
  ['explains both when both must change', denied(['trust-too-low', 'needs:High', 'has:Medium', 'outside-schedule']), 'denied: device trust Medium, this service needs High; outside the schedule of policy k8s-prod'],
  ['explains a user no role matches', denied(['no-matching-role']), 'denied: no role in policy k8s-prod matches this user and device'],
  ['explains permissive mode', denied(['no-matching-role'], { effect: 'would-deny', mode: 'permissive' }), 'allowed in permissive mode, but policy k8s-prod would deny: no role in policy k8s-prod matches this user and device'],
  ['explains permissive mode from the access tier’s Decision', { allow: true, wouldDeny: true, reasons: ['outside-schedule'], mode: 'permissive' }, 'allowed in permissive mode, but the policy would deny: outside the schedule of the policy'],
  ['lists every identity problem', denied(['user-disabled', 'device-revoked']), 'denied: the user is disabled; the device is banned or revoked'],
  ['explains AlwaysDeny with its factors', denied(['trust-always-deny', 'trust:stale']), 'denied: device trust is AlwaysDeny (stale)'],
  ['explains an unknown service', denied(['unknown-service'], { policy: undefined, mode: 'none' }), 'denied: the service is not known'],
  ['explains a service without a policy', denied(['no-policy'], { policy: undefined, mode: 'none' }), 'denied: the service has no policy attached'],
  ['explains a missing policy', denied(['unknown-policy'], { policy: 'gone' }), "denied: the service's policy gone does not exist"],
  ['explains missing principals', denied(['unknown-user', 'unknown-device']), 'denied: the user is not known; the device is not known'],
  ['explains an unreadable trust level', denied(['trust-unknown']), 'denied: the device has no readable trust level'],
  ['explains a revoked certificate', { allow: false, reasons: ['cert-revoked'], mode: 'none' }, 'denied: the certificate is revoked'],
  ['explains the wrong kind of certificate', { allow: false, reasons: ['cert-wrong-type'], mode: 'none' }, 'denied: the certificate is not a trust certificate for a user and device'],
  ['explains a failed decision', { allow: false, reasons: ['decision-failed'], mode: 'none' }, 'denied: the policy decision failed'],
  ['describes the certificate decider’s allow', certificateDecider.decide({ identity: { type: 'trust', user: 'u', device: 'd' } } as never), 'allowed: valid trust certificate'],
  ['shows a code it does not know as it is', { allow: false, reasons: ['quota-exceeded'], mode: 'none' }, 'denied: quota-exceeded'],
  ['says so when there is no reason', { allow: false, reasons: [], mode: 'none' }, 'denied: no reason given'],
  ['ignores a detail that comes before any code', { allow: false, reasons: ['has:Low', 'outside-schedule'], mode: 'none' }, 'denied: outside the schedule of the policy'],
];

void describe('describeDecision', () => {
  for (const [name, decision, expected] of cases) {
    void test(name, () => {
      assert.equal(describeDecision(decision), expected);
    });
  }
});
