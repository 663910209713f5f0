/** Certificate types, their markers and their lifetimes (DESIGN.md §3). */

export type CertType = 'trust' | 'device' | 'access-tier' | 'connector' | 'kube-proxy' | 'control-plane';

export const CERT_TYPES: readonly CertType[] = ['trust', 'device', 'access-tier', 'connector', 'kube-proxy', 'control-plane'];

export function isCertType(value: unknown): value is CertType {
  return typeof value === 'string' && (CERT_TYPES as readonly string[]).includes(value);
}

/** Who a certificate names. trust: user + device; device: device; every other type: name. */
export interface CertIdentity {
  user?: string;
  device?: string;
  name?: string;
}

/** What a verified peer certificate says about its holder. */
export interface PeerIdentity extends CertIdentity {
  type: CertType;
  /** Upper-case hex, exactly as Node's X509Certificate.serialNumber prints it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  fingerprint256: string;
}

export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** Our private enterprise arc for type markers. */
export const TYPE_MARKER_ARC = '1.3.6.1.4.1.59541.1';

/**
 * The type marker: one extended key usage OID per type, carried beside the standard TLS usages.
 * Verification requires exactly one marker and it must be the expected type's (THREATS CA-03).
 *
 * | type          | marker OID                | standard EKUs          |
 * |---------------|---------------------------|------------------------|
 * | trust         | 1.3.6.1.4.1.59541.1.1     | clientAuth             |
 * | device        | 1.3.6.1.4.1.59541.1.2     | clientAuth             |
 * | access-tier   | 1.3.6.1.4.1.59541.1.3     | serverAuth, clientAuth |
 * | connector     | 1.3.6.1.4.1.59541.1.4     | clientAuth             |
 * | kube-proxy    | 1.3.6.1.4.1.59541.1.5     | serverAuth, clientAuth |
 * | control-plane | 1.3.6.1.4.1.59541.1.6     | serverAuth, clientAuth |
 *
 * Never renumber: issued certificates carry these forever.
 */
export const TYPE_MARKER_OID: Readonly<Record<CertType, string>> = {
  trust: `${TYPE_MARKER_ARC}.1`,
  device: `${TYPE_MARKER_ARC}.2`,
  'access-tier': `${TYPE_MARKER_ARC}.3`,
  connector: `${TYPE_MARKER_ARC}.4`,
  'kube-proxy': `${TYPE_MARKER_ARC}.5`,
  'control-plane': `${TYPE_MARKER_ARC}.6`,
};

export const TYPE_BY_MARKER_OID: ReadonlyMap<string, CertType> = new Map(CERT_TYPES.map((t) => [TYPE_MARKER_OID[t], t]));

export const STANDARD_EKUS: Readonly<Record<CertType, readonly string[]>> = {
  trust: [EKU_CLIENT_AUTH],
  device: [EKU_CLIENT_AUTH],
  'access-tier': [EKU_SERVER_AUTH, EKU_CLIENT_AUTH],
  connector: [EKU_CLIENT_AUTH],
  'kube-proxy': [EKU_SERVER_AUTH, EKU_CLIENT_AUTH],
  'control-plane': [EKU_SERVER_AUTH, EKU_CLIENT_AUTH],
};

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Issued certificates start this long before the issuer's "now", so verifiers a little behind accept them. */
export const BACKDATE_MS = 5 * MINUTE;

/** The clock skew checkPeerCertificate allows on notBefore by default. */
export const DEFAULT_SKEW_MS = 5 * MINUTE;

export const DEFAULT_LIFETIME_MS: Readonly<Record<CertType, number>> = {
  trust: 8 * HOUR,
  device: 365 * DAY,
  'access-tier': 24 * HOUR,
  connector: 24 * HOUR,
  'kube-proxy': 24 * HOUR,
  'control-plane': 365 * DAY,
};

/** Allowed lifetimes per type. Trust certs are short by design; the rest are capped by the CA's own notAfter. */
export const LIFETIME_RANGE_MS: Readonly<Record<CertType, { min: number; max: number }>> = {
  trust: { min: 5 * MINUTE, max: 24 * HOUR },
  device: { min: 5 * MINUTE, max: 2 * 365 * DAY },
  'access-tier': { min: 5 * MINUTE, max: 2 * 365 * DAY },
  connector: { min: 5 * MINUTE, max: 2 * 365 * DAY },
  'kube-proxy': { min: 5 * MINUTE, max: 2 * 365 * DAY },
  'control-plane': { min: 5 * MINUTE, max: 2 * 365 * DAY },
};

export const CA_DEFAULT_LIFETIME_DAYS = 3650;
