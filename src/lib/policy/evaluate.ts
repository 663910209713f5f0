/**
 * One policy decision: may this user, on this device, reach this service now?
 *
 * Top to bottom:
 * 1. The service and its attached policy. An unknown service, a service without a policy and a
 *    policy that does not exist all deny (fail closed, DESIGN §8), whatever the mode.
 * 2. The principals. A missing user or device, a disabled user, a banned or revoked device, a
 *    device whose trust is AlwaysDeny or unreadable: denied, in permissive mode too. Every such
 *    problem is reported, not only the first.
 * 3. The policy. A rule allows when one of its roles matches (user AND device requirements), the
 *    device's trust level is at least the rule's minimum (Low < Medium < High) and its schedule holds
 *    (start ≤ now < end). The policy allows when any rule does. Otherwise the reasons say why:
 *    `no-matching-role` when no rule's roles match, else the most useful of `trust-too-low` and
 *    `outside-schedule` among the rules whose roles matched (see `denyReasons`).
 * 4. The mode. Enforcing denies; permissive turns step 3's denial into `would-deny`, which callers
 *    let through and record.
 *
 * Why permissive stops at step 3: permissive mode exists to roll out or tighten a policy and see
 * whom it would lock out before it does. It relaxes the policy's verdict (roles, trust level,
 * schedule), never a decision someone made about an identity. An admin who disables a user or bans
 * a device, or a trust profile whose unmet factor says AlwaysDeny, means "nowhere, now", and a
 * switch meant for rollouts must not undo an incident response; a missing piece of state is
 * unknown, not permitted. So those deny even when the service's policy is permissive. This is
 * stricter than THREATS AT-08 as written ("allowed with would-deny when permissive") on purpose;
 * the tests pin it. Revoked certificates never get this far: the access tier refuses them, and the
 * policy decider checks the serial again.
 *
 * Missing or malformed attributes never satisfy a requirement (THREATS DT-07): a role asking for
 * corporate ownership does not match a device whose ownership is unknown, `known` and `mdmPresent`
 * count only when exactly `true`, and `disabled` / `banned` count as set unless exactly `false`.
 *
 * Matching: groups compare exactly (IdPs send them case-sensitively, and `Eng` ≠ `eng` is how
 * Pomerium and Teleport read them too); emails and device serial numbers compare case-insensitively.
 */
import { OWNERSHIP_BIT, PLATFORM_BIT, normalSerial, trustRank } from './compile.ts';
import type { CompiledPolicies, CompiledPolicy, CompiledRole } from './compile.ts';
import type { DeviceState, PolicyDecision, PolicyMode, UserState } from './types.ts';
import type { ServiceSpec } from '../spec/index.ts';

export interface EvaluateInput {
  /** The service document, or its name to look up in the compiled configuration. */
  service: ServiceSpec | string;
  /** Undefined when the directory does not know the user: denied (`unknown-user`). */
  user?: UserState | undefined;
  /** Undefined when the directory does not know the device: denied (`unknown-device`). */
  device?: DeviceState | undefined;
  /** Milliseconds since the epoch (Clock.now()). */
  now: number;
}

/** At most this many `trust:<factor>` details, each at most MAX_DETAIL characters: reasons end up in logs. */
const MAX_TRUST_DETAILS = 16;
const MAX_DETAIL = 64;
const LEVEL_BY_RANK = ['', 'Low', 'Medium', 'High'] as const;

/** Never throws, whatever the shape of the user and device state. */
export function evaluate(compiled: CompiledPolicies, input: EvaluateInput): PolicyDecision {
  // 1. The service and its policy.
  let attachment: { name: string; mode: string } | undefined;
  let policy: CompiledPolicy | undefined;
  const service: unknown = input.service;
  if (typeof service === 'string') {
    const entry = compiled.services.get(service);
    if (entry === undefined) return decision('deny', ['unknown-service'], 'none');
    attachment = entry.attachment;
    policy = entry.policy;
  } else {
    attachment = attachmentOf(service);
    if (attachment !== undefined) policy = compiled.policies.get(attachment.name);
  }
  if (attachment === undefined) return decision('deny', ['no-policy'], 'none');
  // Anything but an explicit `permissive` enforces.
  const mode: 'enforcing' | 'permissive' = attachment.mode === 'permissive' ? 'permissive' : 'enforcing';
  if (policy === undefined) return decision('deny', ['unknown-policy'], mode, attachment.name);

  // 2. The principals.
  const { user, device } = input;
  const problems = principalProblems(user, device);
  if (problems !== undefined) return decision('deny', problems, mode, policy.name);
  // principalProblems returned undefined, so both are objects and the trust level has a rank.
  const u = userView(user as UserState);
  const d = deviceView(device as DeviceState);

  // 3. The policy's rules. Which of its roles match, once: a bit mask over its slots, or (for a
  // policy naming more roles than a mask holds) one flag per slot.
  const now = input.now;
  let mask = 0;
  let flags: boolean[] | undefined;
  if (policy.slotsByGroup !== undefined) mask = matchingSlots(policy, u, d);
  else flags = policy.slots.map((role) => roleMatches(role, u, d));
  let matchedAnywhere: string[] | undefined;
  let trustOnlyNeed = Infinity;
  let bothNeed = Infinity;
  let scheduleOnly = false;
  for (const rule of policy.rules) {
    let matched: string[] | undefined;
    const slots = rule.slots;
    for (let j = 0; j < slots.length; j++) {
      const slot = slots[j];
      if (flags === undefined ? ((mask >>> slot) & 1) === 1 : flags[slot] === true) (matched ??= []).push(rule.roles[j].name);
    }
    if (matched === undefined) continue;
    const trustOk = d.rank >= rule.minRank;
    // start ≤ now < end; a NaN `now` is outside every schedule, but unscheduled rules never look at it.
    const inSchedule = !rule.scheduled || (rule.start <= now && now < rule.end);
    if (trustOk && inSchedule) {
      return { effect: 'allow', reasons: ['policy-allow'], matchedRoles: matched, rule: rule.index, policy: policy.name, mode };
    }
    matchedAnywhere = matchedAnywhere === undefined ? matched : union(matchedAnywhere, matched);
    if (!trustOk && !inSchedule) bothNeed = Math.min(bothNeed, rule.minRank);
    else if (!trustOk) trustOnlyNeed = Math.min(trustOnlyNeed, rule.minRank);
    else scheduleOnly = true;
  }

  // 4. The mode.
  const reasons = matchedAnywhere === undefined ? ['no-matching-role'] : denyReasons(d, trustOnlyNeed, scheduleOnly, bothNeed);
  return { ...decision(mode === 'permissive' ? 'would-deny' : 'deny', reasons, mode, policy.name), matchedRoles: matchedAnywhere ?? [] };
}

/**
 * The reasons among rules whose roles matched. One condition short beats two: a rule that fails
 * only on trust gives `trust-too-low` with the lowest level that would do (`needs:`), the device's
 * level (`has:`) and the factors behind it (`trust:`), since raising trust is what the user can do
 * now; else a rule that fails only on its schedule gives `outside-schedule`; else (every such rule
 * fails both) both codes, since both must change.
 */
function denyReasons(d: DeviceView, trustOnlyNeed: number, scheduleOnly: boolean, bothNeed: number): string[] {
  if (trustOnlyNeed !== Infinity) return trustTooLow(d, trustOnlyNeed);
  if (scheduleOnly) return ['outside-schedule'];
  return [...trustTooLow(d, bothNeed), 'outside-schedule'];
}

function trustTooLow(d: DeviceView, needRank: number): string[] {
  return ['trust-too-low', `needs:${LEVEL_BY_RANK[needRank] ?? 'High'}`, `has:${LEVEL_BY_RANK[d.rank] ?? 'unknown'}`, ...trustDetails(d.trustReasons)];
}

/**
 * Does the role match this user on this device? Only the role's own requirements: a disabled user
 * or banned device can still match a role (evaluate denies them before roles are looked at). An
 * unknown role, or missing user or device, never matches.
 */
export function matchRole(compiled: CompiledPolicies, roleName: string, user: UserState | undefined, device: DeviceState | undefined): boolean {
  const role = compiled.roles.get(roleName);
  if (role === undefined || !isObject(user) || !isObject(device)) return false;
  return roleMatches(role, userView(user), deviceView(device));
}

/** Every role this user on this device matches, sorted by name (the console's "roles of a device"). */
export function matchingRoles(compiled: CompiledPolicies, user: UserState | undefined, device: DeviceState | undefined): string[] {
  if (!isObject(user) || !isObject(device)) return [];
  const u = userView(user);
  const d = deviceView(device);
  const candidates = new Set<CompiledRole>(compiled.anyUserRoles);
  if (u.email !== undefined) for (const role of compiled.rolesByEmail.get(u.email) ?? []) candidates.add(role);
  for (const group of u.groups) {
    if (typeof group !== 'string') continue;
    for (const role of compiled.rolesByGroup.get(group) ?? []) candidates.add(role);
  }
  const names: string[] = [];
  for (const role of candidates) if (deviceMatches(role, d)) names.push(role.name);
  return names.sort();
}

// ---------------------------------------------------------------------------------------------

interface UserView {
  /** Lower-case. */
  email: string | undefined;
  groups: readonly unknown[];
}

interface DeviceView {
  ownershipBit: number;
  platformBit: number;
  known: boolean;
  mdm: boolean;
  /** Normalised (normalSerial); undefined when missing or blank. */
  serial: string | undefined;
  /** 1–3 for Low–High; 0 when the level has no rank (never reached in evaluate's rule loop). */
  rank: number;
  trustReasons: unknown;
}

function userView(user: UserState): UserView {
  return {
    email: typeof user.email === 'string' && user.email !== '' ? user.email.toLowerCase() : undefined,
    groups: Array.isArray(user.groups) ? user.groups : [],
  };
}

function deviceView(device: DeviceState): DeviceView {
  const serial = typeof device.serialNumber === 'string' ? normalSerial(device.serialNumber) : '';
  return {
    ownershipBit: typeof device.ownership === 'string' ? (OWNERSHIP_BIT.get(device.ownership) ?? 0) : 0,
    platformBit: typeof device.platform === 'string' ? (PLATFORM_BIT.get(device.platform) ?? 0) : 0,
    known: device.known === true,
    mdm: device.mdmPresent === true,
    serial: serial === '' ? undefined : serial,
    rank: trustRank(device.trustLevel) ?? 0,
    trustReasons: device.trustReasons,
  };
}

function roleMatches(role: CompiledRole, u: UserView, d: DeviceView): boolean {
  return userMatches(role, u) && deviceMatches(role, d);
}

function userMatches(role: CompiledRole, u: UserView): boolean {
  if (role.anyUser) return true;
  if (u.email !== undefined && role.emails.has(u.email)) return true;
  if (role.groups.size === 0) return false;
  const groups = u.groups;
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i];
    if (typeof group === 'string' && role.groups.has(group)) return true;
  }
  return false;
}

function deviceMatches(role: CompiledRole, d: DeviceView): boolean {
  return (
    (role.ownershipMask === 0 || (role.ownershipMask & d.ownershipBit) !== 0) &&
    (role.platformMask === 0 || (role.platformMask & d.platformBit) !== 0) &&
    (!role.knownDeviceOnly || d.known) &&
    (!role.mdmPresent || d.mdm) &&
    (role.serialNumbers === undefined || (d.serial !== undefined && role.serialNumbers.has(d.serial)))
  );
}

/**
 * The policy's slots whose role matches: the user side from the policy's group and email masks
 * (each of the user's groups looked up once), then the device side for those slots only.
 */
function matchingSlots(policy: CompiledPolicy, u: UserView, d: DeviceView): number {
  let users = policy.anyUserSlots;
  const byEmail = policy.slotsByEmail;
  if (u.email !== undefined && byEmail !== undefined && byEmail.size > 0) users |= byEmail.get(u.email) ?? 0;
  const byGroup = policy.slotsByGroup;
  if (byGroup !== undefined && byGroup.size > 0) {
    const groups = u.groups;
    for (let i = 0; i < groups.length; i++) {
      const group = groups[i];
      if (typeof group === 'string') users |= byGroup.get(group) ?? 0;
    }
  }
  let ok = 0;
  for (let slot = 0; users !== 0; slot++, users >>>= 1) {
    if ((users & 1) !== 0 && deviceMatches(policy.slots[slot], d)) ok |= 1 << slot;
  }
  return ok;
}

/** Identity-level denials, all of them; undefined when there are none. */
function principalProblems(user: unknown, device: unknown): string[] | undefined {
  const reasons: string[] = [];
  if (!isObject(user)) reasons.push('unknown-user');
  else if (user.disabled !== false) reasons.push('user-disabled');
  if (!isObject(device)) {
    reasons.push('unknown-device');
  } else {
    if (device.banned !== false) reasons.push('device-revoked');
    if (device.trustLevel === 'AlwaysDeny') reasons.push('trust-always-deny', ...trustDetails(device.trustReasons));
    else if (trustRank(device.trustLevel) === undefined) reasons.push('trust-unknown');
  }
  return reasons.length === 0 ? undefined : reasons;
}

/** `trust:<factor>` for each readable factor, bounded in number and length. */
function trustDetails(factors: unknown): string[] {
  if (!Array.isArray(factors)) return [];
  const details: string[] = [];
  for (const factor of factors) {
    if (details.length === MAX_TRUST_DETAILS) break;
    if (typeof factor === 'string' && factor !== '') details.push(`trust:${factor.slice(0, MAX_DETAIL)}`);
  }
  return details;
}

function attachmentOf(service: unknown): { name: string; mode: string } | undefined {
  if (!isObject(service) || !isObject(service.spec)) return undefined;
  const policy = service.spec.policy;
  if (!isObject(policy) || typeof policy.name !== 'string') return undefined;
  return { name: policy.name, mode: typeof policy.mode === 'string' ? policy.mode : 'enforcing' };
}

function union(a: string[], b: string[]): string[] {
  const out = a.slice();
  for (const name of b) if (!out.includes(name)) out.push(name);
  return out;
}

function decision(effect: PolicyDecision['effect'], reasons: string[], mode: PolicyMode, policy?: string): PolicyDecision {
  const d: PolicyDecision = { effect, reasons, matchedRoles: [], mode };
  if (policy !== undefined) d.policy = policy;
  return d;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
