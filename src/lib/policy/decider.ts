/**
 * The seam between the data path and policy. The access tier asks a Decider about every connection
 * (and again about every live connection when the configuration changes); the decider answers with
 * reasons, never a bare boolean, so the same codes drive the user's message and the audit event.
 *
 * This default allows a valid, unrevoked trust certificate (the access tier has already
 * checked chain, validity, type and revocation before asking). The control-plane issue swaps in a
 * decider with roles, trust levels, schedules and permissive mode behind the same interface.
 */
import type { ConfigSnapshot } from '../config/index.ts';
import type { Target } from '../net/target.ts';
import type { PeerIdentity } from '../pki/index.ts';
import type { ServiceSpec } from '../spec/index.ts';

export interface DecisionInput {
  service: ServiceSpec;
  identity: PeerIdentity;
  /** The checked target (CHAIN mode) or the fixed backend (TCP mode). */
  target: Target;
  snapshot: ConfigSnapshot;
}

export interface Decision {
  /** The verdict the access tier enforces (permissive mode already applied). */
  allow: boolean;
  /** Stable codes, e.g. `trust-cert-valid`, `device-untrusted`, `no-matching-role`. */
  reasons: string[];
  /** The service's policy mode; `none` when no policy applies. */
  mode: 'enforcing' | 'permissive' | 'none';
  /** Permissive mode only: the policy would have denied; the access event says `would-deny`. */
  wouldDeny?: boolean;
}

export interface Decider {
  /** Must be fast (it runs on every new connection) and must not throw; a throw denies that connection. */
  decide(input: DecisionInput): Decision;
}

/** Allows any trust certificate the access tier accepted; anything else is denied. */
export const certificateDecider: Decider = {
  decide: ({ identity }) =>
    identity.type === 'trust' && identity.user !== undefined && identity.device !== undefined
      ? { allow: true, reasons: ['trust-cert-valid'], mode: 'none' }
      : { allow: false, reasons: ['cert-wrong-type'], mode: 'none' },
};

/** The access event decision for a verdict. */
export function eventDecision(decision: Decision): 'allow' | 'deny' | 'would-deny' {
  if (!decision.allow) return 'deny';
  return decision.wouldDeny === true ? 'would-deny' : 'allow';
}
