/**
 * Verifies a peer certificate on the hot path: the access tier calls this on every new connection.
 * Everything comes from Node's native X509Certificate getters (parsed by OpenSSL); no ASN.1 in JS.
 */
import type { X509Certificate } from 'node:crypto';
import { identityProblem, parseIdentitySans } from './identity.ts';
import { DEFAULT_SKEW_MS, TYPE_BY_MARKER_OID } from './types.ts';
import type { CertType, PeerIdentity } from './types.ts';

export type PeerCheckCode = 'cert-wrong-type' | 'cert-expired' | 'cert-not-yet-valid' | 'cert-unknown-ca' | 'cert-revoked' | 'cert-malformed' | 'cert-missing';

export type PeerCheck = { ok: true; identity: PeerIdentity } | { ok: false; code: PeerCheckCode; message: string };

export interface PeerCheckOptions {
  /** Verification time in ms since the epoch; defaults to Date.now(). */
  now?: number;
  /** How far in the future notBefore may be (default 5 minutes). Expiry gets no grace. */
  skewMs?: number;
  /**
   * When given, the certificate must be issued and signed by one of these CAs, and that CA must be
   * within its own validity. Leave it out when a TLS handshake with our CA pinned already checked this.
   */
  trustedCas?: X509Certificate[];
  /** Returns a reason when the certificate (or its user or device) is revoked. */
  isRevoked?: (serial: string, id: PeerIdentity) => string | undefined;
}

function fail(code: PeerCheckCode, message: string): PeerCheck {
  return { ok: false, code, message };
}

/**
 * The only signature algorithms we accept, even from a trusted issuer (THREATS CA-07): ECDSA and
 * RSA PKCS#1 v1.5 with SHA-256/384/512. SHA-1, MD5 and anything else is refused.
 */
const ACCEPTED_SIGNATURE_OIDS: ReadonlySet<string> = new Set([
  '1.2.840.10045.4.3.2', // ecdsa-with-SHA256
  '1.2.840.10045.4.3.3', // ecdsa-with-SHA384
  '1.2.840.10045.4.3.4', // ecdsa-with-SHA512
  '1.2.840.113549.1.1.11', // sha256WithRSAEncryption
  '1.2.840.113549.1.1.12', // sha384WithRSAEncryption
  '1.2.840.113549.1.1.13', // sha512WithRSAEncryption
]);

/**
 * Checks a peer certificate: present, issued by a trusted CA (when trustedCas is given), within its
 * validity (notBefore may be up to skewMs ahead; expiry is strict), of one of the expected types
 * (exactly one type marker), carrying a well-formed identity for that type, and not revoked.
 * Never throws: a hostile certificate is a failure result.
 */
export function checkPeerCertificate(cert: X509Certificate | undefined, expected: CertType | readonly CertType[], opts: PeerCheckOptions = {}): PeerCheck {
  if (cert === undefined || cert === null) return fail('cert-missing', 'no client certificate was presented');
  try {
    return check(cert, expected, opts);
  } catch (err) {
    return fail('cert-malformed', `the certificate could not be read: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function check(cert: X509Certificate, expected: CertType | readonly CertType[], opts: PeerCheckOptions): PeerCheck {
  const now = opts.now ?? Date.now();
  const skewMs = opts.skewMs ?? DEFAULT_SKEW_MS;

  if (opts.trustedCas !== undefined) {
    const issuer = opts.trustedCas.find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
    if (issuer === undefined) return fail('cert-unknown-ca', 'the certificate was not issued by a trusted CA');
    if (issuer.validToDate.getTime() < now || issuer.validFromDate.getTime() - skewMs > now) {
      return fail('cert-unknown-ca', 'the issuing CA is outside its validity period');
    }
  }
  if (cert.ca) return fail('cert-malformed', 'a CA certificate cannot be used as a peer certificate');
  if (!ACCEPTED_SIGNATURE_OIDS.has(cert.signatureAlgorithmOid)) {
    return fail('cert-malformed', `the certificate is signed with a weak or unsupported algorithm (${cert.signatureAlgorithm ?? cert.signatureAlgorithmOid})`);
  }

  const notBefore = cert.validFromDate;
  const notAfter = cert.validToDate;
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) return fail('cert-malformed', 'the certificate validity cannot be read');
  if (notAfter.getTime() < now) return fail('cert-expired', `the certificate expired at ${notAfter.toISOString()}`);
  if (notBefore.getTime() - skewMs > now) return fail('cert-not-yet-valid', `the certificate is not valid before ${notBefore.toISOString()}`);

  let type: CertType | undefined;
  for (const usage of cert.keyUsage ?? []) {
    const marked = TYPE_BY_MARKER_OID.get(usage);
    if (marked === undefined) continue;
    if (type !== undefined) return fail('cert-malformed', 'the certificate carries more than one type marker');
    type = marked;
  }
  const expectedTypes: readonly CertType[] = typeof expected === 'string' ? [expected] : expected;
  if (type === undefined) return fail('cert-wrong-type', `the certificate is not a causeway certificate; expected ${expectedTypes.join(' or ')}`);
  if (!expectedTypes.includes(type)) return fail('cert-wrong-type', `a ${type} certificate was presented where ${expectedTypes.join(' or ')} is required`);

  const parsed = parseIdentitySans(cert.subjectAltName);
  if ('error' in parsed) return fail('cert-malformed', parsed.error);
  const problem = identityProblem(type, parsed.identity, parsed.nameKind);
  if (problem !== undefined) return fail('cert-malformed', problem);

  const identity: PeerIdentity = { ...parsed.identity, type, serial: cert.serialNumber, notBefore, notAfter, fingerprint256: cert.fingerprint256 };
  if (opts.isRevoked !== undefined) {
    let reason: string | undefined;
    try {
      reason = opts.isRevoked(identity.serial, identity);
    } catch {
      // Fail closed: unknown revocation state is treated as revoked.
      return fail('cert-revoked', 'the revocation state could not be checked');
    }
    if (reason !== undefined) return fail('cert-revoked', `the certificate is revoked: ${reason}`);
  }
  return { ok: true, identity };
}
