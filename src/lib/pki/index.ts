/** The PKI: one CA per installation, typed certificates with URI SAN identities, and peer checks. */
export type { CertType, CertIdentity, PeerIdentity } from './types.ts';
export { CERT_TYPES, TYPE_MARKER_OID, DEFAULT_LIFETIME_MS, LIFETIME_RANGE_MS, BACKDATE_MS, DEFAULT_SKEW_MS, isCertType } from './types.ts';
export { CertificateAuthority, issueKeyAndCert } from './authority.ts';
export type { IssueRequest, IssuedCertificate, StoredCertificateAuthority } from './authority.ts';
export { generateKeyPair, createCsr } from './keys.ts';
export { checkPeerCertificate } from './check.ts';
export type { PeerCheck, PeerCheckCode, PeerCheckOptions } from './check.ts';
export { parseIdentityUris, isValidIdentityId, IDENTITY_ID_RE } from './identity.ts';
export { mtlsServerOptions, mtlsClientOptions } from './tls.ts';
export type { MtlsServerOptionsInput, MtlsClientOptionsInput } from './tls.ts';
