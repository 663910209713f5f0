/**
 * The fixed vocabularies behind metric labels. A label value that reaches Prometheus is one of these
 * or `other`, whatever a peer sent or a future code path records: label cardinality stays bounded
 * even when a value is attacker-influenced (an SNI, a CONNECT head, a connector's header).
 *
 * The typed codes (policy, certificate check, connector refusal, CONNECT target parsing) are listed
 * as exhaustive records, so adding a code to one of those unions fails the type check until it is
 * named here too. The access tier's own codes are plain strings in its sources; reasons.test.ts
 * scans those sources for reason literals and fails on one missing here.
 */
import type { PeerCheckCode } from '../pki/check.ts';
import type { AuthorityErrorCode } from '../net/target.ts';
import type { PolicyReasonCode } from '../policy/types.ts';
import type { ConnectorRefusal } from '../tunnel/protocol.ts';

/** The label value for anything outside a vocabulary. */
export const OTHER = 'other';
/** The label value when there is nothing to name (no reason given, no service identified). */
export const NONE = 'none';

const POLICY_CODES: Record<PolicyReasonCode, true> = {
  'unknown-service': true,
  'no-policy': true,
  'unknown-policy': true,
  'unknown-user': true,
  'unknown-device': true,
  'user-disabled': true,
  'device-revoked': true,
  'trust-always-deny': true,
  'trust-unknown': true,
  'no-matching-role': true,
  'trust-too-low': true,
  'outside-schedule': true,
  'policy-allow': true,
};

const PEER_CODES: Record<PeerCheckCode, true> = {
  'cert-wrong-type': true,
  'cert-expired': true,
  'cert-not-yet-valid': true,
  'cert-unknown-ca': true,
  'cert-revoked': true,
  'cert-malformed': true,
  'cert-missing': true,
};

const CONNECTOR_REFUSALS: Record<ConnectorRefusal, true> = {
  'target-not-allowed': true,
  'backend-unreachable': true,
  'backend-timeout': true,
  'bad-request': true,
  draining: true,
};

const AUTHORITY_CODES: Record<AuthorityErrorCode, true> = {
  'bad-authority': true,
  'ambiguous-ip': true,
  'bad-port': true,
};

/** Codes the access tier and connector record that no typed union carries. */
const PART_CODES = [
  // deciders
  'trust-cert-valid',
  'cert-wrong-name',
  'decision-failed',
  'policy-denied',
  // the access tier's client connections
  'bad-sni',
  'service-misconfigured',
  'service-removed',
  'target-not-in-service',
  'denied',
  'header-timeout',
  'no-request',
  'source-connection-limit',
  // TLS handshakes that failed
  'tls-handshake-timeout',
  'tls-alpn-mismatch',
  'tls-handshake-aborted',
  'tls-handshake-failed',
  // connector tunnels registering with the access tier
  'connector-tunnel',
  'tunnel-refused',
  'access-tier-unconfigured',
  'unknown-connector',
  // a stream the connector accepted (metrics only: the connector records no access events)
  'target-allowed',
  // CONNECT heads (src/lib/net/connect-request.ts)
  'bad-request-line',
  'not-connect',
  'bad-version',
  'content-length',
  'transfer-encoding',
  'duplicate-host',
  'host-mismatch',
  'bare-cr',
  'bare-lf',
  'too-many-headers',
  'head-too-large',
  'obs-fold',
  'bad-header-name',
  'bad-header-value',
] as const;

/** Every reason code a decision metric may carry, besides `other` and `none`. */
export const REASON_CODES: ReadonlySet<string> = new Set<string>([
  ...Object.keys(POLICY_CODES),
  ...Object.keys(PEER_CODES),
  ...Object.keys(CONNECTOR_REFUSALS),
  ...Object.keys(AUTHORITY_CODES),
  ...PART_CODES,
]);

/**
 * The reason label of a decision: its first code (reasons start with codes; details such as
 * `needs:Medium` contain a colon and are skipped), `none` when it has none, `other` when the code is
 * not in the vocabulary.
 */
export function reasonLabel(reasons: readonly unknown[] | undefined): string {
  if (!Array.isArray(reasons)) return NONE;
  for (const reason of reasons) {
    if (typeof reason !== 'string' || reason.includes(':')) continue;
    return REASON_CODES.has(reason) ? reason : OTHER;
  }
  return NONE;
}

const RESULTS: ReadonlySet<string> = new Set(['allow', 'deny', 'would-deny']);

/** allow, deny or would-deny; anything else `other`. */
export function resultLabel(decision: unknown): string {
  return typeof decision === 'string' && RESULTS.has(decision) ? decision : OTHER;
}

/** What a spec's metadata.name may be (src/lib/spec/schemas.ts). */
const OBJECT_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Service label values: a spec object name, at most `max` distinct ones for the life of the
 * metrics (later ones become `other`); `none` when no service was identified. Service names come
 * from configuration on the access tier, but the connector learns them from a request header.
 */
export class ServiceLabels {
  readonly #seen = new Set<string>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  label(service: unknown): string {
    if (service === undefined || service === null || service === '') return NONE;
    if (typeof service !== 'string' || !OBJECT_NAME.test(service)) return OTHER;
    if (this.#seen.has(service)) return service;
    if (this.#seen.size >= this.#max) return OTHER;
    this.#seen.add(service);
    return service;
  }
}

/** A label value taken from a fixed list, else `other`. */
export function oneOf(value: unknown, allowed: ReadonlySet<string>): string {
  return typeof value === 'string' && allowed.has(value) ? value : OTHER;
}

/** A printable, short rendering of a config version for an info label; `other` for anything odd. */
export function versionLabel(version: string): string {
  return /^[\x21-\x7e]{1,64}$/.test(version) ? version : OTHER;
}
