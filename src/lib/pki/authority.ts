/**
 * The installation's certificate authority (ECDSA P-256). Its private key lives only in this object
 * and, at rest, only as encrypted PKCS#8. What a certificate says (type, identity, lifetime, names)
 * comes from the IssueRequest the issuer builds, never from the requester (THREATS CA-04).
 */
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPair as generateKeyPairCb, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { CausewayError, UserError } from '../errors.ts';
import { identityProblem, identityUrisFor } from './identity.ts';
import { assertStrongKey, generateKeyPair, publicKeyFromCsr, publicKeyFromPem } from './keys.ts';
import type { Signer, x509 } from './x509.ts';
import type * as X509Lib from './x509.ts';
import {
  BACKDATE_MS, CA_DEFAULT_LIFETIME_DAYS, DEFAULT_LIFETIME_MS, LIFETIME_RANGE_MS, STANDARD_EKUS, TYPE_MARKER_OID, isCertType,
} from './types.ts';
import type { CertIdentity, CertType } from './types.ts';

const generateKeyPairAsync = promisify(generateKeyPairCb);

type X509Module = typeof X509Lib;

/**
 * @peculiar/x509 (with the global Reflect polyfill it needs) is loaded on first use, not at import:
 * it costs about 60 ms at startup, and the parts that only verify peers (check.ts, tls.ts, through
 * this same index) never need it.
 */
const loadX509 = (): Promise<X509Module> => import('./x509.ts');

const usageExtensionsByType = new Map<CertType, readonly x509.Extension[]>();

/** basicConstraints, keyUsage and extendedKeyUsage of a leaf: the same bytes for every certificate of a type, so built once. */
function usageExtensions(lib: X509Module, type: CertType): readonly x509.Extension[] {
  let extensions = usageExtensionsByType.get(type);
  if (extensions === undefined) {
    const { x509: X } = lib;
    extensions = [
      new X.BasicConstraintsExtension(false, undefined, true),
      new X.KeyUsagesExtension(X.KeyUsageFlags.digitalSignature, true),
      new X.ExtendedKeyUsageExtension([...STANDARD_EKUS[type], TYPE_MARKER_OID[type]]),
    ];
    usageExtensionsByType.set(type, extensions);
  }
  return extensions;
}

export interface IssueRequest {
  type: CertType;
  identity: CertIdentity;
  /** The holder's public key as SPKI PEM; or give csrPem. */
  publicKeyPem?: string;
  /** A PKCS#10 request: only its key and self-signature are used. */
  csrPem?: string;
  /** Defaults per type (DESIGN.md §3); never beyond the CA's own notAfter. */
  lifetimeMs?: number;
  /** Extra DNS SANs for server certificates verified by hostname. */
  dnsNames?: string[];
  /** Extra IP SANs for server certificates verified by address. */
  ipAddresses?: string[];
}

export interface IssuedCertificate {
  certPem: string;
  /** Upper-case hex, as Node's X509Certificate.serialNumber prints it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export interface StoredCertificateAuthority {
  certPem: string;
  encryptedKeyPem: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;
const DNS_NAME_RE = /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/** 16 random bytes, positive, with a fixed high nibble so Node prints exactly 32 hex digits. */
function randomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0]) & 0x3f) | 0x40;
  return serial;
}

function assertPassphrase(passphrase: string): void {
  if (typeof passphrase !== 'string' || passphrase.length === 0) {
    throw new UserError('CA_PASSPHRASE_EMPTY', 'The CA key passphrase is empty: set a non-empty passphrase in the passphrase file or in CAUSEWAY_CA_PASSPHRASE.');
  }
}

export class CertificateAuthority {
  /** The CA certificate, PEM. Distribute it freely: it is what every part trusts. */
  readonly certPem: string;
  /** The CA certificate as Node parses it (for checkPeerCertificate's trustedCas). */
  readonly certificate: X509Certificate;
  readonly notAfter: Date;
  readonly #key: KeyObject;
  readonly #signer: Signer;
  /** The CA certificate's subject, as parsed from its DER: what it signs carries it as issuer. */
  readonly #subject: x509.Name;
  /** The same for every certificate this CA issues, so it is built once. */
  readonly #authorityKeyId: x509.AuthorityKeyIdentifierExtension;
  readonly #clock: Clock;

  private constructor(certificate: X509Certificate, key: KeyObject, signer: Signer, subject: x509.Name, authorityKeyId: x509.AuthorityKeyIdentifierExtension, clock: Clock) {
    this.certificate = certificate;
    this.certPem = certificate.toString();
    this.notAfter = certificate.validToDate;
    this.#key = key;
    this.#signer = signer;
    this.#subject = subject;
    this.#authorityKeyId = authorityKeyId;
    this.#clock = clock;
  }

  static async #from(lib: X509Module, certificate: X509Certificate, subject: x509.Name, key: KeyObject, clock: Clock): Promise<CertificateAuthority> {
    // RFC 5280 §4.2.1.2 method 1 (SHA-1 of the key bits), from the CA's key, as in its own subjectKeyIdentifier.
    const authorityKeyId = await lib.x509.AuthorityKeyIdentifierExtension.create(createPublicKey(key).export({ type: 'spki', format: 'der' }));
    return new CertificateAuthority(certificate, key, lib.signerFor(key), subject, authorityKeyId, clock);
  }

  /** A new self-signed CA: P-256, CA:true pathLen 0, keyCertSign + cRLSign, 10 years by default. */
  static async create(opts: { commonName?: string; clock?: Clock; lifetimeDays?: number } = {}): Promise<CertificateAuthority> {
    const clock = opts.clock ?? systemClock;
    const lifetimeDays = opts.lifetimeDays ?? CA_DEFAULT_LIFETIME_DAYS;
    if (!Number.isFinite(lifetimeDays) || lifetimeDays <= 0 || lifetimeDays > 30 * 365) {
      throw new UserError('CA_BAD_LIFETIME', `A CA lifetime of ${lifetimeDays} days is out of range: use 1 to ${30 * 365} days.`);
    }
    const commonName = opts.commonName ?? 'Causeway CA';
    const lib = await loadX509();
    const { x509: X, NAME_OID } = lib;
    const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
    const signer = lib.signerFor(privateKey);
    const now = clock.now();
    const cert = await X.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial().toString('hex'),
      name: lib.utf8Name([[NAME_OID.organization, 'Causeway'], [NAME_OID.commonName, commonName]]),
      notBefore: floorToSecond(now - BACKDATE_MS),
      notAfter: floorToSecond(now + lifetimeDays * DAY_MS),
      keys: { privateKey: signer.key, publicKey: lib.verifierFor(publicKey) },
      signingAlgorithm: signer.algorithm,
      extensions: [
        new X.BasicConstraintsExtension(true, 0, true),
        new X.KeyUsagesExtension(X.KeyUsageFlags.keyCertSign | X.KeyUsageFlags.cRLSign, true),
        await X.SubjectKeyIdentifierExtension.create(publicKey.export({ type: 'spki', format: 'der' })),
      ],
    });
    return CertificateAuthority.#from(lib, new X509Certificate(Buffer.from(cert.rawData)), cert.subjectName, privateKey, clock);
  }

  /** Loads a CA stored by exportEncrypted. A wrong passphrase is CA_KEY_DECRYPT_FAILED; an unencrypted key is refused. */
  static async load(stored: StoredCertificateAuthority, passphrase: string, opts: { clock?: Clock } = {}): Promise<CertificateAuthority> {
    assertPassphrase(passphrase);
    if (!stored.encryptedKeyPem.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----')) {
      throw new UserError('CA_KEY_NOT_ENCRYPTED', 'The stored CA key is not an encrypted PKCS#8 key; CA keys must be encrypted at rest. Re-export it with a passphrase.');
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: stored.encryptedKeyPem, format: 'pem', passphrase });
    } catch (err) {
      throw new UserError('CA_KEY_DECRYPT_FAILED', 'Could not decrypt the CA key: check the passphrase file or CAUSEWAY_CA_PASSPHRASE.', { cause: err });
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(stored.certPem);
    } catch (err) {
      throw new UserError('CA_CERT_INVALID', 'The stored CA certificate cannot be read; restore ca.crt from backup.', { cause: err });
    }
    if (!cert.ca) throw new UserError('CA_CERT_INVALID', 'The stored CA certificate is not a CA certificate; restore ca.crt from backup.');
    if (!cert.checkPrivateKey(key)) throw new UserError('CA_KEY_MISMATCH', 'The CA key does not belong to the CA certificate; restore the matching ca.crt and ca.key.');
    assertStrongKey(key);
    const lib = await loadX509();
    if (lib.x509.PemConverter.decodeWithHeaders(stored.certPem).filter((block) => block.type === 'CERTIFICATE').length !== 1) {
      throw new UserError('CA_CERT_INVALID', 'The stored CA certificate file must hold exactly one certificate; restore ca.crt from backup.');
    }
    let subject: x509.Name;
    try {
      subject = new lib.x509.X509Certificate(cert.raw).subjectName;
    } catch (err) {
      throw new UserError('CA_CERT_INVALID', 'The stored CA certificate cannot be read; restore ca.crt from backup.', { cause: err });
    }
    return CertificateAuthority.#from(lib, cert, subject, key, opts.clock ?? systemClock);
  }

  /** The CA for storage: certificate PEM and the key as encrypted PKCS#8 PEM (AES-256-CBC, PBKDF2). */
  exportEncrypted(passphrase: string): StoredCertificateAuthority {
    assertPassphrase(passphrase);
    const encryptedKeyPem = this.#key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase });
    return { certPem: this.certPem, encryptedKeyPem: encryptedKeyPem.toString() };
  }

  async issue(req: IssueRequest): Promise<IssuedCertificate> {
    if (!isCertType(req.type)) throw new UserError('CERT_BAD_TYPE', `Unknown certificate type "${String(req.type)}".`);
    const { type } = req;
    const problem = identityProblem(type, req.identity ?? {});
    if (problem !== undefined) throw new UserError('CERT_BAD_IDENTITY', `Cannot issue: ${problem}.`);
    if ((req.publicKeyPem === undefined) === (req.csrPem === undefined)) {
      throw new UserError('CERT_NO_KEY', 'Give exactly one of a public key or a certificate request to issue a certificate.');
    }
    const spkiDer = req.csrPem !== undefined ? await publicKeyFromCsr(req.csrPem) : publicKeyFromPem(req.publicKeyPem as string);

    const dnsNames = req.dnsNames ?? [];
    for (const d of dnsNames) {
      if (typeof d !== 'string' || d.length > 253 || !DNS_NAME_RE.test(d)) throw new UserError('CERT_BAD_NAME', `"${String(d).slice(0, 64)}" is not a valid DNS name.`);
    }
    const ipAddresses = req.ipAddresses ?? [];
    for (const ip of ipAddresses) {
      if (typeof ip !== 'string' || isIP(ip) === 0 || ip.includes('%')) throw new UserError('CERT_BAD_NAME', `"${String(ip).slice(0, 64)}" is not a valid IP address.`);
    }

    const lifetimeMs = req.lifetimeMs ?? DEFAULT_LIFETIME_MS[type];
    const range = LIFETIME_RANGE_MS[type];
    if (!Number.isFinite(lifetimeMs) || lifetimeMs < range.min || lifetimeMs > range.max) {
      throw new UserError('CERT_LIFETIME_OUT_OF_RANGE', `A ${type} certificate lifetime must be between ${range.min / 60_000} minutes and ${range.max / 3_600_000} hours.`);
    }
    const now = this.#clock.now();
    if (now >= this.notAfter.getTime()) throw new CausewayError('CA_EXPIRED', 'The CA certificate has expired: rotate the CA before issuing.');
    const notBefore = floorToSecond(now - BACKDATE_MS);
    const notAfter = floorToSecond(Math.min(now + lifetimeMs, this.notAfter.getTime()));

    const { identity } = req;
    const commonName = type === 'trust' ? `${identity.user}@${identity.device}` : type === 'device' ? (identity.device as string) : (identity.name as string);
    const serial = randomSerial();
    const lib = await loadX509();
    const { NAME_OID } = lib;
    const publicKey = new lib.x509.PublicKey(spkiDer);
    const cert = await lib.x509.X509CertificateGenerator.create({
      serialNumber: serial.toString('hex'),
      issuer: this.#subject,
      subject: lib.utf8Name([[NAME_OID.organization, 'Causeway'], [NAME_OID.organizationalUnit, type], [NAME_OID.commonName, commonName]]),
      notBefore,
      notAfter,
      publicKey,
      signingKey: this.#signer.key,
      signingAlgorithm: this.#signer.algorithm,
      extensions: [
        ...usageExtensions(lib, type),
        await lib.x509.SubjectKeyIdentifierExtension.create(publicKey),
        this.#authorityKeyId,
        lib.subjectAltName({ uris: identityUrisFor(type, identity), dnsNames, ipAddresses }),
      ],
    });
    return { certPem: lib.toPem(cert.rawData, 'CERTIFICATE'), serial: serial.toString('hex').toUpperCase(), notBefore, notAfter };
  }

  /** Keeps the key out of logs and JSON. */
  toJSON(): { certPem: string } {
    return { certPem: this.certPem };
  }
}

/** A fresh P-256 key pair and a certificate for it, for parts enrolled by an operator or a test. */
export async function issueKeyAndCert(
  ca: CertificateAuthority,
  req: Omit<IssueRequest, 'publicKeyPem' | 'csrPem'>,
): Promise<{ certPem: string; keyPem: string; caPem: string; serial: string; notAfter: Date }> {
  const keys = await generateKeyPair();
  const issued = await ca.issue({ ...req, publicKeyPem: keys.publicKeyPem });
  return { certPem: issued.certPem, keyPem: keys.privateKeyPem, caPem: ca.certPem, serial: issued.serial, notAfter: issued.notAfter };
}
