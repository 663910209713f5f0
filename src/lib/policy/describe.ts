/**
 * A decision in one sentence for people: the console's "why was I denied", `causeway events`, logs.
 * Built only from the decision's codes and details, so it says nothing the audit record does not.
 */
import type { Decision } from './decider.ts';
import type { PolicyDecision } from './types.ts';

/** e.g. "denied: device trust Low, this service needs Medium (firewall off)". Never throws. */
export function describeDecision(decision: PolicyDecision | Decision): string {
  const effect = 'effect' in decision ? decision.effect : decision.allow ? (decision.wouldDeny === true ? 'would-deny' : 'allow') : 'deny';
  const groups = groupReasons(decision.reasons);
  // A PolicyDecision names its policy, rule and roles in fields; a Decision as details of `policy-allow`.
  const allowed = groups.find((g) => g.code === 'policy-allow');
  const policy = 'effect' in decision ? decision.policy : allowed?.details.get('policy')?.[0];

  if (effect === 'allow') {
    if (allowed !== undefined) {
      const rule = 'effect' in decision ? decision.rule : allowed.details.get('rule')?.[0];
      const roles = 'effect' in decision ? decision.matchedRoles : (allowed.details.get('role') ?? []);
      const where = rule === undefined ? '' : ` spec.access[${rule}]`;
      const by = roles.length === 0 ? '' : `, ${plural(roles.length, 'role')} ${roles.join(', ')}`;
      return `allowed by ${policy === undefined ? 'the policy' : `policy ${policy}`}${where}${by}`;
    }
    const why = groups.map((g) => phrase(g, policy)).join('; ');
    return why === '' ? 'allowed' : `allowed: ${why}`;
  }
  const why = groups.length === 0 ? 'no reason given' : groups.map((g) => phrase(g, policy)).join('; ');
  if (effect === 'would-deny') return `allowed in permissive mode, but ${policy === undefined ? 'the policy' : `policy ${policy}`} would deny: ${why}`;
  return `denied: ${why}`;
}

interface ReasonGroup {
  code: string;
  details: Map<string, string[]>;
}

/** Codes with the `kind:value` details that follow each. */
function groupReasons(reasons: readonly string[]): ReasonGroup[] {
  const groups: ReasonGroup[] = [];
  for (const reason of reasons) {
    const colon = reason.indexOf(':');
    if (colon < 0) {
      groups.push({ code: reason, details: new Map() });
      continue;
    }
    const current = groups.at(-1);
    if (current === undefined) continue;
    const kind = reason.slice(0, colon);
    const list = current.details.get(kind) ?? [];
    list.push(reason.slice(colon + 1));
    current.details.set(kind, list);
  }
  return groups;
}

function phrase(group: ReasonGroup, policy: string | undefined): string {
  const first = (kind: string): string | undefined => group.details.get(kind)?.[0];
  const factors = group.details.get('trust') ?? [];
  const because = factors.length === 0 ? '' : ` (${factors.map((f) => f.replaceAll('-', ' ')).join(', ')})`;
  switch (group.code) {
    case 'trust-too-low':
      return `device trust ${first('has') ?? 'unknown'}, this service needs ${first('needs') ?? 'more'}${because}`;
    case 'trust-always-deny':
      return `device trust is AlwaysDeny${because}`;
    case 'trust-unknown':
      return 'the device has no readable trust level';
    case 'outside-schedule':
      return `outside the schedule of ${policy === undefined ? 'the policy' : `policy ${policy}`}`;
    case 'no-matching-role':
      return `no role in ${policy === undefined ? 'the policy' : `policy ${policy}`} matches this user and device`;
    case 'unknown-service':
      return 'the service is not known';
    case 'no-policy':
      return 'the service has no policy attached';
    case 'unknown-policy':
      return `the service's policy ${policy ?? ''} does not exist`.replace('  ', ' ');
    case 'unknown-user':
      return 'the user is not known';
    case 'unknown-device':
      return 'the device is not known';
    case 'user-disabled':
      return 'the user is disabled';
    case 'device-revoked':
      return 'the device is banned or revoked';
    case 'cert-revoked':
      return 'the certificate is revoked';
    case 'cert-wrong-type':
      return 'the certificate is not a trust certificate for a user and device';
    case 'trust-cert-valid':
      return 'valid trust certificate';
    case 'decision-failed':
      return 'the policy decision failed';
    default:
      return group.code;
  }
}

function plural(n: number, word: string): string {
  return n === 1 ? word : `${word}s`;
}
