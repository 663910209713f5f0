/**
 * What the kube proxy decides before Kubernetes RBAC, from the config stream's snapshot:
 *
 * 1. the person: the token's `sub` is a Causeway user id; an unknown user is 401, a disabled one 403;
 * 2. the device the token names (if any): unknown, banned/revoked or AlwaysDeny is 403;
 * 3. the `kubernetes.deny` rules of the policies attached to the Kubernetes Services whose
 *    `kubernetes.clusterName` is this proxy's cluster: the first rule that matches denies (403).
 *
 * A rule's roles are matched with the policy engine's matchRole against the live user and device.
 * A token without a device is matched on the user side of each role only (its groups and emails),
 * so leaving the device out can never dodge a deny rule. Without principal state in the snapshot
 * (a source that carries none), steps 1 and 2 are skipped and role-scoped deny rules apply to
 * everyone: fail closed.
 *
 * The same function decides new requests and re-decides live ones after every snapshot (live.ts).
 */
import { compilePolicies, matchRole } from '../lib/policy/index.ts';
import type { CompiledPolicies, CompiledRole, DeviceState, PrincipalDirectory, UserState } from '../lib/policy/index.ts';
import { principalDirectory } from '../lib/config/index.ts';
import type { ConfigSnapshot } from '../lib/config/index.ts';
import type { KubeRequestInfo } from './request-info.ts';

export interface KubeDenyRule {
  /** `<policy>/deny[<i>]`, shown to the user and in the audit event. */
  id: string;
  roles: readonly string[];
  verbs: readonly string[];
  resources: readonly string[];
  namespaces: readonly string[] | undefined;
  message: string | undefined;
}

/** One snapshot, compiled for the kube proxy's decisions; build once per snapshot. */
export interface KubeDecisionContext {
  readonly version: string;
  readonly rules: readonly KubeDenyRule[];
  readonly compiled: CompiledPolicies;
  /** Undefined when the snapshot carries no principal state. */
  readonly principals: PrincipalDirectory | undefined;
}

export interface KubeCaller {
  /** The Causeway user id (the token's `sub`). */
  userId: string;
  /** The device id the token names. */
  device?: string;
}

export type KubeVerdict =
  | { allow: true }
  | { allow: false; code: 401 | 403; reason: KubeDenyReason; message: string; rule?: string };

export type KubeDenyReason = 'unknown-user' | 'user-disabled' | 'unknown-device' | 'device-revoked' | 'trust-always-deny' | 'rule-deny';

export function kubeDecisionContext(snapshot: ConfigSnapshot, clusterName: string, previous?: KubeDecisionContext): KubeDecisionContext {
  const compiled = compilePolicies({ roles: snapshot.roles, policies: snapshot.policies, services: snapshot.services }, previous?.compiled);
  const policyNames = new Set<string>();
  for (const service of snapshot.services) {
    if (service.spec.type === 'kubernetes' && service.spec.kubernetes?.clusterName === clusterName && service.spec.policy !== undefined) policyNames.add(service.spec.policy.name);
  }
  const rules: KubeDenyRule[] = [];
  for (const policy of snapshot.policies) {
    if (!policyNames.has(policy.metadata.name)) continue;
    (policy.spec.kubernetes?.deny ?? []).forEach((rule, i) => {
      rules.push({
        id: `${policy.metadata.name}/deny[${i}]`,
        roles: rule.roles ?? [],
        verbs: rule.verbs,
        resources: rule.resources,
        namespaces: rule.namespaces,
        message: rule.message,
      });
    });
  }
  return { version: snapshot.version, rules, compiled, principals: principalDirectory(snapshot) };
}

function userSideMatches(role: CompiledRole | undefined, user: UserState): boolean {
  if (role === undefined) return false;
  if (role.anyUser) return true;
  const email = typeof user.email === 'string' ? user.email.toLowerCase() : undefined;
  if (email !== undefined && role.emails.has(email)) return true;
  return Array.isArray(user.groups) && user.groups.some((g) => typeof g === 'string' && role.groups.has(g));
}

function resourceMatches(pattern: string, info: KubeRequestInfo): boolean {
  if (pattern === '*') return true;
  const slash = pattern.indexOf('/');
  const res = slash === -1 ? pattern : pattern.slice(0, slash);
  const sub = slash === -1 ? undefined : pattern.slice(slash + 1);
  if (res !== '*' && res !== info.resource) return false;
  if (sub === undefined) return info.subresource === undefined;
  return sub === '*' ? info.subresource !== undefined : sub === info.subresource;
}

/** Whether `rule` applies to this request, leaving roles aside. */
export function ruleMatchesRequest(rule: KubeDenyRule, info: KubeRequestInfo): boolean {
  if (!info.isResourceRequest) return false;
  if (!rule.verbs.includes('*') && !rule.verbs.includes(info.verb)) return false;
  if (!rule.resources.some((r) => resourceMatches(r, info))) return false;
  if (rule.namespaces !== undefined && (info.namespace === undefined || !rule.namespaces.includes(info.namespace))) return false;
  return true;
}

function describeRequest(info: KubeRequestInfo): string {
  const what = `${info.verb} ${info.resource ?? info.path}${info.subresource !== undefined ? `/${info.subresource}` : ''}`;
  return info.namespace !== undefined ? `${what} in namespace ${info.namespace}` : what;
}

/** The person and device checks alone (no request), for live re-decisions of streams too. */
export function decideCaller(ctx: KubeDecisionContext, caller: KubeCaller): KubeVerdict & { user?: UserState; deviceState?: DeviceState } {
  if (ctx.principals === undefined) return { allow: true };
  const user = ctx.principals.user(caller.userId);
  if (user === undefined) return { allow: false, code: 401, reason: 'unknown-user', message: 'your Causeway account is not known (deleted?); run `causeway login` again or ask an admin' };
  if (user.disabled !== false) return { allow: false, code: 403, reason: 'user-disabled', message: 'your Causeway account is disabled; ask an admin to enable it' };
  if (caller.device === undefined) return { allow: true, user };
  const device = ctx.principals.device(caller.device);
  if (device === undefined || device.known !== true) return { allow: false, code: 403, reason: 'unknown-device', message: 'this device is not registered with Causeway; run `causeway device register`, then `causeway login` again' };
  if (device.banned !== false) return { allow: false, code: 403, reason: 'device-revoked', message: 'this device has been banned or revoked; ask an admin' };
  if (device.trustLevel === 'AlwaysDeny') return { allow: false, code: 403, reason: 'trust-always-deny', message: 'this device is trusted for nothing (AlwaysDeny); see `causeway device status` for what to fix' };
  return { allow: true, user, deviceState: device };
}

/** The full decision for one request (or a live stream's request, re-decided on a new snapshot). */
export function decide(ctx: KubeDecisionContext, caller: KubeCaller, info: KubeRequestInfo): KubeVerdict {
  const callerVerdict = decideCaller(ctx, caller);
  if (!callerVerdict.allow) return { allow: false, code: callerVerdict.code, reason: callerVerdict.reason, message: callerVerdict.message };
  for (const rule of ctx.rules) {
    if (!ruleMatchesRequest(rule, info)) continue;
    let applies: boolean;
    if (rule.roles.length === 0) applies = true;
    else if (callerVerdict.user === undefined) applies = true; // no principal state: fail closed
    else if (callerVerdict.deviceState !== undefined) applies = rule.roles.some((r) => matchRole(ctx.compiled, r, callerVerdict.user, callerVerdict.deviceState));
    else applies = rule.roles.some((r) => userSideMatches(ctx.compiled.roles.get(r), callerVerdict.user as UserState));
    if (applies) {
      const message = rule.message ?? `${describeRequest(info)} is not allowed`;
      return { allow: false, code: 403, reason: 'rule-deny', message: `causeway: ${message} (rule ${rule.id})`, rule: rule.id };
    }
  }
  return { allow: true };
}
