/**
 * The principal state a policy decision reads, and the decision it returns.
 *
 * Users and devices are live state owned by the control plane (the directory, the IdP, trust
 * scoring, bans); it streams what decisions need to every access tier inside the config snapshot.
 * These types are that contract. They arrive as JSON from another process, so the evaluator reads
 * every field defensively: a missing or malformed value never grants anything (DT-07).
 */
import type { DEVICE_OWNERSHIP, DEVICE_PLATFORMS } from '../spec/index.ts';

export type Ownership = (typeof DEVICE_OWNERSHIP)[number];
export type Platform = (typeof DEVICE_PLATFORMS)[number];

/** A device's live trust level; AlwaysDeny is a verdict of trust scoring, not a rung of the ladder. */
export type DeviceTrustLevel = 'High' | 'Medium' | 'Low' | 'AlwaysDeny';

export interface UserState {
  id: string;
  /** Compared case-insensitively with a role's `users.emails`. */
  email?: string;
  /** Compared exactly (case-sensitively) with a role's `users.groups`, as IdPs send them. */
  groups: string[];
  /** Anything but `false` counts as disabled. */
  disabled: boolean;
}

export interface DeviceState {
  id: string;
  ownership?: Ownership;
  platform?: Platform;
  /** Compared case-insensitively with a role's `devices.serialNumbers`. */
  serialNumber?: string;
  /** Registered with the control plane (what `knownDeviceOnly` asks for). Only `true` counts. */
  known: boolean;
  /** Enrolled in the org's device manager. Only `true` counts. */
  mdmPresent: boolean;
  /** Banned or revoked by an admin. Anything but `false` counts as banned. */
  banned: boolean;
  trustLevel: DeviceTrustLevel;
  /** The unmet factors behind the level, e.g. `firewall-off`; shown to people as `trust:<factor>` details. */
  trustReasons?: string[];
}

/** Where a decision finds the live state of the user and device a trust certificate names. */
export interface PrincipalDirectory {
  user(id: string): UserState | undefined;
  device(id: string): DeviceState | undefined;
}

export type PolicyMode = 'enforcing' | 'permissive' | 'none';

/**
 * The reason codes, stable (audit events, the user's 403 and dashboards key on them). A decision's
 * `reasons` start with codes; detail strings follow the code they explain and always contain a
 * colon (`needs:Medium`, `has:Low`, `trust:firewall-off`), so a code never does.
 */
export type PolicyReasonCode =
  /** The service (by name) is not in the compiled configuration. */
  | 'unknown-service'
  /** The service has no attached policy: nobody gets in. */
  | 'no-policy'
  /** The service names a policy that does not exist. */
  | 'unknown-policy'
  | 'unknown-user'
  | 'unknown-device'
  | 'user-disabled'
  /** The device is banned or revoked. */
  | 'device-revoked'
  | 'trust-always-deny'
  /** The device's trust level is missing or not one of High, Medium, Low, AlwaysDeny. */
  | 'trust-unknown'
  | 'no-matching-role'
  | 'trust-too-low'
  | 'outside-schedule'
  /** Allowed: a rule's role matched, the trust level sufficed and the schedule held. */
  | 'policy-allow';

export interface PolicyDecision {
  /** `would-deny`: the service's policy is permissive and would have denied; the caller allows and records it. */
  effect: 'allow' | 'deny' | 'would-deny';
  /** Codes first, each followed by its detail strings (see PolicyReasonCode). */
  reasons: string[];
  /** Allowed: the matching roles of the allowing rule. Denied by the policy: every role that matched in any rule. */
  matchedRoles: string[];
  /** The allowing rule's index in `spec.access` (allowed only). */
  rule?: number;
  /** The policy that decided, when one was reached. */
  policy?: string;
  /** The service's policy mode; `none` when the service has no policy or is unknown. */
  mode: PolicyMode;
}

/** Principal state as lists, the shape a config snapshot can carry it in (see directoryFromState). */
export interface PrincipalState {
  users: readonly UserState[];
  devices: readonly DeviceState[];
}
