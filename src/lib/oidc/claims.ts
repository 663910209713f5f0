/**
 * From a verified token's claims to the Kubernetes identity the kube proxy impersonates.
 *
 * KP-10: nothing the IdP says can land in Kubernetes' reserved `system:` namespace. A username that
 * would (after the prefix) is refused; such a group is dropped (groups only ever grant in RBAC, so
 * dropping one cannot widen access) and reported in `droppedGroups` for the audit record. A prefix
 * (`oidc:`) keeps every name out of it. `system:authenticated` is always added, as the API server
 * does for every authenticated user. Names with control characters are refused too: they are going
 * into HTTP headers (Impersonate-User, Impersonate-Group).
 */
import { CausewayError, UserError } from '../errors.ts';

export interface ClaimMapping {
  /** The claim holding the username; default 'email'. */
  usernameClaim?: string;
  /** The claim holding the groups (a string or a list of strings); default 'groups'. */
  groupsClaim?: string;
  usernamePrefix?: string;
  groupsPrefix?: string;
}

export interface MappedIdentity {
  username: string;
  /** Prefixed and deduplicated, ending with `system:authenticated`. */
  groups: string[];
  /** Group names the IdP sent that were refused (reserved or with control characters), for the audit record. */
  droppedGroups: string[];
  /**
   * The device the token names (Causeway's kube ID tokens carry `device` when kube-credential ran on a
   * registered device), for the audit record and device checks; never a Kubernetes group or user.
   * Absent when the token names none (or an unusable value).
   */
  device?: string;
}

export const AUTHENTICATED_GROUP = 'system:authenticated';

const RESERVED_RE = /^system:/i;
// C0 and C1 controls and DEL: never valid in a header value, and a log-injection vector anyway.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

function mappingError(message: string): UserError {
  return new UserError('CLAIM_MAPPING_INVALID', `claim mapping: ${message}`);
}

function checkMapping(mapping: ClaimMapping): Required<Pick<ClaimMapping, 'usernameClaim' | 'groupsClaim'>> & { usernamePrefix: string; groupsPrefix: string } {
  const usernameClaim = mapping.usernameClaim ?? 'email';
  const groupsClaim = mapping.groupsClaim ?? 'groups';
  const usernamePrefix = mapping.usernamePrefix ?? '';
  const groupsPrefix = mapping.groupsPrefix ?? '';
  for (const [name, value] of [['usernameClaim', usernameClaim], ['groupsClaim', groupsClaim]] as const) {
    if (typeof value !== 'string' || value.length === 0) throw mappingError(`${name} must be a claim name`);
  }
  for (const [name, value] of [['usernamePrefix', usernamePrefix], ['groupsPrefix', groupsPrefix]] as const) {
    if (typeof value !== 'string' || CONTROL_RE.test(value)) throw mappingError(`${name} must be text without control characters`);
    if (RESERVED_RE.test(value)) throw mappingError(`${name} must not start with "system:", which Kubernetes reserves`);
  }
  return { usernameClaim, groupsClaim, usernamePrefix, groupsPrefix };
}

/** The username and groups for `claims` (a VerifiedToken's), or a CausewayError with a CLAIM_* code. */
export function mapClaims(claims: Record<string, unknown>, mapping: ClaimMapping = {}): MappedIdentity {
  const m = checkMapping(mapping);

  const raw = Object.hasOwn(claims, m.usernameClaim) ? claims[m.usernameClaim] : undefined;
  if (typeof raw !== 'string' || raw.length === 0) {
    throw new CausewayError('CLAIM_USERNAME_MISSING', `the token has no ${m.usernameClaim} claim to use as the username`);
  }
  // As the API server does: an email is a username only if the IdP has not said it is unverified.
  if (m.usernameClaim === 'email' && Object.hasOwn(claims, 'email_verified') && claims['email_verified'] !== true) {
    throw new CausewayError('CLAIM_EMAIL_UNVERIFIED', 'the token says its email is not verified');
  }
  const username = m.usernamePrefix + raw;
  if (CONTROL_RE.test(username)) throw new CausewayError('CLAIM_USERNAME_INVALID', `the ${m.usernameClaim} claim contains control characters`);
  if (RESERVED_RE.test(username)) {
    throw new CausewayError('CLAIM_USERNAME_RESERVED', `the ${m.usernameClaim} claim would make a "system:" username; configure a username prefix`);
  }

  const rawGroups = Object.hasOwn(claims, m.groupsClaim) ? claims[m.groupsClaim] : undefined;
  const names: unknown[] = typeof rawGroups === 'string' ? [rawGroups] : Array.isArray(rawGroups) ? rawGroups : [];
  const groups = new Set<string>();
  const droppedGroups: string[] = [];
  for (const name of names) {
    if (typeof name !== 'string' || name.length === 0) continue;
    const group = m.groupsPrefix + name;
    if (RESERVED_RE.test(group) || CONTROL_RE.test(group)) droppedGroups.push(name);
    else groups.add(group);
  }
  groups.add(AUTHENTICATED_GROUP);
  const device = Object.hasOwn(claims, 'device') ? claims['device'] : undefined;
  const usableDevice = typeof device === 'string' && device.length > 0 && device.length <= 200 && !CONTROL_RE.test(device);
  return { username, groups: [...groups], droppedGroups, ...(usableDevice ? { device } : {}) };
}
