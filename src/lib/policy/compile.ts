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
  /** `users.groups` and `users.emails` both empty: any user. */
  readonly anyUser: boolean;
  readonly groups: ReadonlySet<string>;
  readonly groupList: readonly string[];
  /** Lower-case. */
  readonly emails: ReadonlySet<string>;
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
  /** The minimum trust level: Low 1, Medium 2, High 3 (TRUST_RANK). */
  readonly minRank: number;
  readonly minLevel: 'Low' | 'Medium' | 'High';
  /** Milliseconds since the epoch; the rule holds for start ≤ now < end. Open ends are ±Infinity. */
  readonly start: number;
  readonly end: number;
}

export interface CompiledPolicy {
  readonly name: string;
  readonly rules: readonly CompiledRule[];
}

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

export function compilePolicies(input: CompilePoliciesInput): CompiledPolicies {
  const problems: PolicyProblem[] = [];

  const roles = new Map<string, CompiledRole>();
  for (const spec of input.roles) {
    const name = spec.metadata.name;
    if (roles.has(name)) {
      problems.push({ code: 'duplicate-name', path: `Role/${name}`, message: `Role "${name}" is defined more than once; the first definition applies` });
      continue;
    }
    roles.set(name, compileRole(spec));
  }

  const policies = new Map<string, CompiledPolicy>();
  for (const spec of input.policies) {
    const name = spec.metadata.name;
    if (policies.has(name)) {
      problems.push({ code: 'duplicate-name', path: `Policy/${name}`, message: `Policy "${name}" is defined more than once; the first definition applies` });
      continue;
    }
    policies.set(name, compilePolicy(spec, roles, problems));
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
    for (const group of role.groups) index(rolesByGroup, group, role);
    for (const email of role.emails) index(rolesByEmail, email, role);
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
  const groups = new Set(users.groups);
  const emails = new Set(users.emails.map((e) => e.toLowerCase()));
  let ownershipMask = 0;
  for (const o of devices.ownership) ownershipMask |= OWNERSHIP_BIT.get(o) ?? 0;
  let platformMask = 0;
  for (const p of devices.platforms) platformMask |= PLATFORM_BIT.get(p) ?? 0;
  return Object.freeze({
    name: spec.metadata.name,
    anyUser: groups.size === 0 && emails.size === 0,
    groups,
    groupList: Object.freeze([...groups]),
    emails,
    ownershipMask,
    platformMask,
    knownDeviceOnly: devices.knownDeviceOnly,
    mdmPresent: devices.mdmPresent,
    serialNumbers: devices.serialNumbers.length === 0 ? undefined : new Set(devices.serialNumbers.map(normalSerial)),
  });
}

function compilePolicy(spec: PolicySpec, roles: ReadonlyMap<string, CompiledRole>, problems: PolicyProblem[]): CompiledPolicy {
  const name = spec.metadata.name;
  const rules = spec.spec.access.map((rule, i): CompiledRule => {
    const resolved: CompiledRole[] = [];
    rule.roles.forEach((roleName, j) => {
      const role = roles.get(roleName);
      if (role === undefined) {
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
    return Object.freeze({ index: i, roles: Object.freeze(resolved), minRank: trustRank(rule.trustLevel) ?? Infinity, minLevel: rule.trustLevel, start, end });
  });
  return Object.freeze({ name, rules: Object.freeze(rules) });
}

/** Serial numbers compare case-insensitively and without surrounding blanks. */
export function normalSerial(serial: string): string {
  return serial.trim().toUpperCase();
}
