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
 * Compiling 10,000 roles and policies takes milliseconds, so it is done once per snapshot (cached
 * by the snapshot object, and reused for a new snapshot object with the same `version`), never per
 * connection. `prepare(snapshot)` does it ahead of the first connection; the access tier can call it
 * when it swaps in a new snapshot.
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
  let last: { version: string; compiled: CompiledPolicies; revoked: ReadonlySet<string> } | undefined;

  const prepared = (snapshot: ConfigSnapshot): Prepared => {
    const cached = bySnapshot.get(snapshot);
    if (cached !== undefined) return cached;
    let compiled: CompiledPolicies;
    let revoked: ReadonlySet<string>;
    if (last !== undefined && last.version === snapshot.version) {
      ({ compiled, revoked } = last);
    } else {
      compiled = compilePolicies({ roles: snapshot.roles, policies: snapshot.policies, services: snapshot.services });
      revoked = new Set(snapshot.revokedSerials.map((s) => s.toLowerCase()));
      last = { version: snapshot.version, compiled, revoked };
    }
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
