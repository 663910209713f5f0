/**
 * Turns Role, Policy and Service documents into the structure the hot path reads: every name
 * resolved once, every role's requirements reduced to sets and bit masks, schedules parsed to
 * milliseconds. A decision then costs a few map lookups and a walk over one policy's rules, however
 * many roles and policies are loaded.
 *
 * Compiling never throws. What cannot be resolved fails closed and is listed in `problems` (the
 * spec layer's validateReferences normally refuses such documents before they get here): a rule's
 * unknown role matches nobody, a service naming an unknown policy denies everyone, an unparsable
 * schedule is never open, a duplicated name keeps its first document.
 *
 * Recompiling after a change: pass the previous result as `previous`. A role whose document is the
 * same object as last time is reused, and so is a policy whose document is the same object and
 * whose roles all resolve to the same compiled roles, so a config stream that shares unchanged
 * documents between snapshots pays only for what changed plus the name maps.
 */
import { DEVICE_OWNERSHIP, DEVICE_PLATFORMS } from '../spec/index.ts';
import type { PolicySpec, RoleSpec, ServiceSpec } from '../spec/index.ts';

export interface CompilePoliciesInput {
  roles: readonly RoleSpec[];
  policies: readonly PolicySpec[];
  services: readonly ServiceSpec[];
}

export interface PolicyProblem {
  code: 'unknown-role' | 'unknown-policy' | 'bad-schedule' | 'duplicate-name';
  /** `Kind/name` and the field, e.g. `Policy/k8s-prod spec.access[0].roles[1]`. */
  path: string;
  message: string;
}

/** A role with its requirements precompiled. */
export interface CompiledRole {
  readonly name: string;
  /** The document it was compiled from (its identity decides reuse). */
  readonly source: RoleSpec;
  /** `users.groups` and `users.emails` both empty: any user. */
  readonly anyUser: boolean;
  readonly groups: ReadonlySet<string>;
  /** Lower-case. */
  readonly emails: ReadonlySet<string>;
  /** The same as lists, for building indexes (arrays iterate faster than sets). */
  readonly groupList: readonly string[];
  readonly emailList: readonly string[];
  /** Bit per allowed ownership (OWNERSHIP_BIT); 0 places no requirement. */
  readonly ownershipMask: number;
  /** Bit per allowed platform (PLATFORM_BIT); 0 places no requirement. */
  readonly platformMask: number;
  readonly knownDeviceOnly: boolean;
  readonly mdmPresent: boolean;
  /** Upper-case; undefined places no requirement. */
  readonly serialNumbers: ReadonlySet<string> | undefined;
}

export interface CompiledRule {
  /** The rule's index in the policy's `spec.access`. */
  readonly index: number;
  /** The roles that exist, in the rule's order; unknown names are dropped (they match nobody). */
  readonly roles: readonly CompiledRole[];
  /** Each of `roles` as its index in the policy's `slots`. */
  readonly slots: readonly number[];
  /** Whether the rule has a schedule (one that does not parse never holds). */
  readonly scheduled: boolean;
  /** The minimum trust level: Low 1, Medium 2, High 3 (TRUST_RANK). */
  readonly minRank: number;
  readonly minLevel: 'Low' | 'Medium' | 'High';
  /** Milliseconds since the epoch; the rule holds for start ≤ now < end. Open ends are ±Infinity. */
  readonly start: number;
  readonly end: number;
}

/**
 * A policy with the user side of its roles indexed, so a decision reads each of the user's groups
 * once (one lookup in a map as small as the policy) instead of once per role: the distinct roles
 * the rules name are numbered (`slots`), and each group and email maps to the bit mask of the slots
 * that list it. Policies naming more than MAX_MASK_SLOTS roles have no masks and are evaluated role
 * by role.
 */
export interface CompiledPolicy {
  readonly name: string;
  /** The document it was compiled from (its identity decides reuse). */
  readonly source: PolicySpec;
  readonly rules: readonly CompiledRule[];
  readonly slots: readonly CompiledRole[];
  /** Group → mask of the slots that list it; undefined when there are more slots than MAX_MASK_SLOTS. */
  readonly slotsByGroup: ReadonlyMap<string, number> | undefined;
  /** Lower-case email → mask of the slots that list it. */
  readonly slotsByEmail: ReadonlyMap<string, number> | undefined;
  /** Mask of the slots whose role matches any user. */
  readonly anyUserSlots: number;
  /** Role names the rules give that did not exist when compiled. */
  readonly unknownRoles: readonly string[];
  /** This policy's own problems (unknown roles, bad schedules). */
  readonly problems: readonly PolicyProblem[];
}

/** Bit masks are 32-bit integers in JavaScript; bit 31 is the sign, so 31 slots. */
export const MAX_MASK_SLOTS = 31;

export interface CompiledService {
  readonly name: string;
  /** The attached policy's name and mode; undefined when the service has none. */
  readonly attachment: { readonly name: string; readonly mode: 'enforcing' | 'permissive' } | undefined;
  /** The attached policy; undefined when there is none or it does not exist. */
  readonly policy: CompiledPolicy | undefined;
}

/** Immutable: build a new one for each configuration and swap the reference. */
export interface CompiledPolicies {
  readonly roles: ReadonlyMap<string, CompiledRole>;
  readonly policies: ReadonlyMap<string, CompiledPolicy>;
  readonly services: ReadonlyMap<string, CompiledService>;
  /** For "which roles does this user have" without scanning every role. */
  readonly rolesByGroup: ReadonlyMap<string, readonly CompiledRole[]>;
  /** Keys are lower-case. */
  readonly rolesByEmail: ReadonlyMap<string, readonly CompiledRole[]>;
  readonly anyUserRoles: readonly CompiledRole[];
  readonly problems: readonly PolicyProblem[];
}

export const OWNERSHIP_BIT: ReadonlyMap<string, number> = new Map(DEVICE_OWNERSHIP.map((o, i) => [o, 1 << i]));
export const PLATFORM_BIT: ReadonlyMap<string, number> = new Map(DEVICE_PLATFORMS.map((p, i) => [p, 1 << i]));

/** Trust levels as ranks; anything else (AlwaysDeny, malformed) has no rank. */
export function trustRank(level: unknown): number | undefined {
  switch (level) {
    case 'Low':
      return 1;
    case 'Medium':
      return 2;
    case 'High':
      return 3;
    default:
      return undefined;
  }
}

/** Shared by the many roles and policies with nothing of a kind, rather than thousands of empty ones. */
const NO_SLOTS: ReadonlyMap<string, number> = new Map();
const NO_NAMES: ReadonlySet<string> = new Set();
const NO_LIST: readonly string[] = Object.freeze([]);

export function compilePolicies(input: CompilePoliciesInput, previous?: CompiledPolicies): CompiledPolicies {
  const problems: PolicyProblem[] = [];

  const roles = new Map<string, CompiledRole>();
  for (const spec of input.roles) {
    const name = spec.metadata.name;
    if (roles.has(name)) {
      problems.push({ code: 'duplicate-name', path: `Role/${name}`, message: `Role "${name}" is defined more than once; the first definition applies` });
      continue;
    }
    const before = previous?.roles.get(name);
    roles.set(name, before !== undefined && before.source === spec ? before : compileRole(spec));
  }

  const policies = new Map<string, CompiledPolicy>();
  for (const spec of input.policies) {
    const name = spec.metadata.name;
    if (policies.has(name)) {
      problems.push({ code: 'duplicate-name', path: `Policy/${name}`, message: `Policy "${name}" is defined more than once; the first definition applies` });
      continue;
    }
    const before = previous?.policies.get(name);
    const policy = before !== undefined && before.source === spec && resolvesAlike(before, roles) ? before : compilePolicy(spec, roles);
    policies.set(name, policy);
    problems.push(...policy.problems);
  }

  const services = new Map<string, CompiledService>();
  for (const spec of input.services) {
    const name = spec.metadata.name;
    if (services.has(name)) {
      problems.push({ code: 'duplicate-name', path: `Service/${name}`, message: `Service "${name}" is defined more than once; the first definition applies` });
      continue;
    }
    const attached = spec.spec.policy;
    const policy = attached === undefined ? undefined : policies.get(attached.name);
    if (attached !== undefined && policy === undefined) {
      problems.push({ code: 'unknown-policy', path: `Service/${name} spec.policy.name`, message: `names the Policy "${attached.name}", which does not exist; the service denies everyone` });
    }
    services.set(
      name,
      Object.freeze({ name, attachment: attached === undefined ? undefined : Object.freeze({ name: attached.name, mode: attached.mode }), policy }),
    );
  }

  const rolesByGroup = new Map<string, CompiledRole[]>();
  const rolesByEmail = new Map<string, CompiledRole[]>();
  const anyUserRoles: CompiledRole[] = [];
  const index = (map: Map<string, CompiledRole[]>, key: string, role: CompiledRole): void => {
    const list = map.get(key);
    if (list === undefined) map.set(key, [role]);
    else list.push(role);
  };
  for (const role of roles.values()) {
    if (role.anyUser) anyUserRoles.push(role);
    for (const group of role.groupList) index(rolesByGroup, group, role);
    for (const email of role.emailList) index(rolesByEmail, email, role);
  }
  for (const list of rolesByGroup.values()) Object.freeze(list);
  for (const list of rolesByEmail.values()) Object.freeze(list);

  return Object.freeze({
    roles,
    policies,
    services,
    rolesByGroup,
    rolesByEmail,
    anyUserRoles: Object.freeze(anyUserRoles),
    problems: Object.freeze(problems),
  });
}

function compileRole(spec: RoleSpec): CompiledRole {
  const { users, devices } = spec.spec;
  const groups = users.groups.length === 0 ? NO_NAMES : new Set(users.groups);
  const emails = users.emails.length === 0 ? NO_NAMES : new Set(users.emails.map((e) => e.toLowerCase()));
  const groupList = groups.size === 0 ? NO_LIST : Object.freeze([...groups]);
  const emailList = emails.size === 0 ? NO_LIST : Object.freeze([...emails]);
  let ownershipMask = 0;
  for (const o of devices.ownership) ownershipMask |= OWNERSHIP_BIT.get(o) ?? 0;
  let platformMask = 0;
  for (const p of devices.platforms) platformMask |= PLATFORM_BIT.get(p) ?? 0;
  return Object.freeze({
    name: spec.metadata.name,
    source: spec,
    anyUser: groups.size === 0 && emails.size === 0,
    groups,
    emails,
    groupList,
    emailList,
    ownershipMask,
    platformMask,
    knownDeviceOnly: devices.knownDeviceOnly,
    mdmPresent: devices.mdmPresent,
    serialNumbers: devices.serialNumbers.length === 0 ? undefined : new Set(devices.serialNumbers.map(normalSerial)),
  });
}

/** Would compiling the policy's document again resolve its role names to the same compiled roles? */
function resolvesAlike(policy: CompiledPolicy, roles: ReadonlyMap<string, CompiledRole>): boolean {
  for (const role of policy.slots) if (roles.get(role.name) !== role) return false;
  for (const name of policy.unknownRoles) if (roles.has(name)) return false;
  return true;
}

function compilePolicy(spec: PolicySpec, roles: ReadonlyMap<string, CompiledRole>): CompiledPolicy {
  const name = spec.metadata.name;
  const problems: PolicyProblem[] = [];
  const unknownRoles: string[] = [];
  const slots: CompiledRole[] = [];
  const slotOf = (role: CompiledRole): number => {
    const at = slots.indexOf(role);
    return at >= 0 ? at : slots.push(role) - 1;
  };
  const rules = spec.spec.access.map((rule, i): CompiledRule => {
    const resolved: CompiledRole[] = [];
    rule.roles.forEach((roleName, j) => {
      const role = roles.get(roleName);
      if (role === undefined) {
        if (!unknownRoles.includes(roleName)) unknownRoles.push(roleName);
        problems.push({ code: 'unknown-role', path: `Policy/${name} spec.access[${i}].roles[${j}]`, message: `names the Role "${roleName}", which does not exist; it matches nobody` });
      } else if (!resolved.includes(role)) {
        resolved.push(role);
      }
    });
    let start = -Infinity;
    let end = Infinity;
    if (rule.schedule !== undefined) {
      const s = rule.schedule.start === null ? -Infinity : Date.parse(rule.schedule.start);
      const e = rule.schedule.end === null ? Infinity : Date.parse(rule.schedule.end);
      if (Number.isNaN(s) || Number.isNaN(e)) {
        problems.push({ code: 'bad-schedule', path: `Policy/${name} spec.access[${i}].schedule`, message: 'has a time that does not parse; the rule never holds' });
        start = Infinity;
        end = -Infinity;
      } else {
        start = s;
        end = e;
      }
    }
    return Object.freeze({
      index: i,
      roles: Object.freeze(resolved),
      slots: Object.freeze(resolved.map(slotOf)),
      scheduled: rule.schedule !== undefined,
      minRank: trustRank(rule.trustLevel) ?? Infinity,
      minLevel: rule.trustLevel,
      start,
      end,
    });
  });

  let slotsByGroup: ReadonlyMap<string, number> | undefined;
  let slotsByEmail: ReadonlyMap<string, number> | undefined;
  let anyUserSlots = 0;
  if (slots.length <= MAX_MASK_SLOTS) {
    const byGroup = new Map<string, number>();
    const byEmail = new Map<string, number>();
    for (let slot = 0; slot < slots.length; slot++) {
      const role = slots[slot];
      const bit = 1 << slot;
      if (role.anyUser) anyUserSlots |= bit;
      const { groupList, emailList } = role;
      for (let i = 0; i < groupList.length; i++) {
        const group = groupList[i];
        byGroup.set(group, (byGroup.get(group) ?? 0) | bit);
      }
      for (let i = 0; i < emailList.length; i++) {
        const email = emailList[i];
        byEmail.set(email, (byEmail.get(email) ?? 0) | bit);
      }
    }
    slotsByGroup = byGroup.size === 0 ? NO_SLOTS : byGroup;
    slotsByEmail = byEmail.size === 0 ? NO_SLOTS : byEmail;
  }
  return Object.freeze({
    name,
    source: spec,
    rules: Object.freeze(rules),
    slots: Object.freeze(slots),
    slotsByGroup,
    slotsByEmail,
    anyUserSlots,
    unknownRoles: Object.freeze(unknownRoles),
    problems: Object.freeze(problems),
  });
}

/** Serial numbers compare case-insensitively and without surrounding blanks. */
export function normalSerial(serial: string): string {
  return serial.trim().toUpperCase();
}
