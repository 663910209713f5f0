/**
 * The Decider the access tier runs once the control plane streams principal state: roles, live
 * trust levels, schedules and permissive mode, through `evaluate`.
 *
 * Per connection, in order:
 * 1. The certificate must be a trust certificate naming a user and a device (`cert-wrong-type`).
 * 2. Its serial must not be revoked in the snapshot (`cert-revoked`). The access tier refuses those
 *    at the handshake already; checking again costs one set lookup and keeps this decider safe to use
 *    anywhere. Both deny in every mode.
 * 3. A snapshot that carries no principal state (the directory function returns undefined) is
 *    decided by the fallback, by default `certificateDecider`: the behaviour before the control
 *    plane existed, so file-configured access tiers keep working.
 * 4. Otherwise `evaluate` with the user and device the certificate names, looked up live.
 *
 * Compiling 10,000 roles and policies takes about 0.1 s, so it is done once per snapshot, never per
 * connection: cached by the snapshot object; reused whole for a new snapshot with the same
 * `version` or the same role, policy and service lists (a stream that changes only principal state
 * can keep them); otherwise recompiled from the previous compilation, which reuses every role and
 * policy whose document object did not change. `prepare(snapshot)` does it ahead of the first
 * connection; the access tier can call it when it swaps in a new snapshot.
 */
import type { ConfigSnapshot } from '../config/index.ts';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { compilePolicies } from './compile.ts';
import type { CompiledPolicies } from './compile.ts';
import { certificateDecider } from './decider.ts';
import type { Decider, Decision, DecisionInput } from './decider.ts';
import { evaluate } from './evaluate.ts';
import type { PolicyDecision, PrincipalDirectory } from './types.ts';

export interface PolicyDeciderOptions {
  /** The principal state a snapshot carries; undefined when it carries none (then `fallback` decides). Called once per snapshot. */
  directory: (snapshot: ConfigSnapshot) => PrincipalDirectory | undefined;
  /** Defaults to the system clock. */
  clock?: Clock;
  /** Decides for snapshots without principal state; defaults to certificateDecider. */
  fallback?: Decider;
  /** Told about an exception inside a decision (the connection is denied with `decision-failed`). */
  onError?: (err: unknown) => void;
}

export interface PolicyDecider extends Decider {
  /** Compiles (or returns the cached) policies of a snapshot, so the first connection does not pay for it. */
  prepare(snapshot: ConfigSnapshot): CompiledPolicies;
  /** The full policy decision behind `decide` (undefined when the certificate checks or the fallback decided). */
  evaluate(input: DecisionInput): PolicyDecision | undefined;
}

interface Prepared {
  compiled: CompiledPolicies;
  revoked: ReadonlySet<string>;
  directory: PrincipalDirectory | undefined;
}

export function createPolicyDecider(options: PolicyDeciderOptions): PolicyDecider {
  const clock = options.clock ?? systemClock;
  const fallback = options.fallback ?? certificateDecider;
  const bySnapshot = new WeakMap<ConfigSnapshot, Prepared>();
  let last: { snapshot: ConfigSnapshot; compiled: CompiledPolicies; revoked: ReadonlySet<string> } | undefined;

  const prepared = (snapshot: ConfigSnapshot): Prepared => {
    const cached = bySnapshot.get(snapshot);
    if (cached !== undefined) return cached;
    const before = last?.snapshot;
    const sameVersion = before !== undefined && before.version === snapshot.version;
    // A config stream that changes only principal state can keep these lists; then nothing recompiles.
    const samePolicies = sameVersion || (before !== undefined && before.roles === snapshot.roles && before.policies === snapshot.policies && before.services === snapshot.services);
    const sameRevoked = sameVersion || (before !== undefined && before.revokedSerials === snapshot.revokedSerials);
    const compiled = samePolicies && last !== undefined ? last.compiled : compilePolicies(snapshot, last?.compiled);
    const revoked = sameRevoked && last !== undefined ? last.revoked : new Set(snapshot.revokedSerials.map((s) => s.toLowerCase()));
    last = { snapshot, compiled, revoked };
    const entry: Prepared = { compiled, revoked, directory: options.directory(snapshot) };
    bySnapshot.set(snapshot, entry);
    return entry;
  };

  /** A Decision from the certificate checks, or the evaluation; `fallback` when the snapshot has no principal state. */
  const run = (input: DecisionInput): Decision | PolicyDecision | 'fallback' => {
    const { identity, snapshot } = input;
    if (identity.type !== 'trust' || identity.user === undefined || identity.device === undefined) {
      return { allow: false, reasons: ['cert-wrong-type'], mode: 'none' };
    }
    const p = prepared(snapshot);
    if (p.revoked.has(identity.serial.toLowerCase())) return { allow: false, reasons: ['cert-revoked'], mode: 'none' };
    if (p.directory === undefined) return 'fallback';
    return evaluate(p.compiled, {
      service: input.service,
      user: p.directory.user(identity.user),
      device: p.directory.device(identity.device),
      now: clock.now(),
    });
  };

  return {
    prepare: (snapshot) => prepared(snapshot).compiled,
    evaluate(input) {
      const result = run(input);
      return result !== 'fallback' && 'effect' in result ? result : undefined;
    },
    decide(input) {
      try {
        const result = run(input);
        if (result === 'fallback') return fallback.decide(input);
        return 'effect' in result ? toDecision(result) : result;
      } catch (err) {
        options.onError?.(err);
        return { allow: false, reasons: ['decision-failed'], mode: 'none' };
      }
    },
  };
}

/**
 * The access tier's view: would-deny becomes an allow flagged `wouldDeny` (the access event says
 * would-deny, with the reasons). An allow names its policy, rule and roles as details.
 */
export function toDecision(d: PolicyDecision): Decision {
  switch (d.effect) {
    case 'allow': {
      const reasons = [...d.reasons];
      if (d.policy !== undefined) reasons.push(`policy:${d.policy}`);
      if (d.rule !== undefined) reasons.push(`rule:${d.rule}`);
      for (const role of d.matchedRoles) reasons.push(`role:${role}`);
      return { allow: true, reasons, mode: d.mode };
    }
    case 'would-deny':
      return { allow: true, wouldDeny: true, reasons: d.reasons, mode: d.mode };
    case 'deny':
      return { allow: false, reasons: d.reasons, mode: d.mode };
  }
}
