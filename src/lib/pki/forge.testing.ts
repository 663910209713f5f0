/**
 * Test support only: certificates our CA would never issue (two type markers, SHA-1 signatures,
 * hostile SANs, weak keys, CA:true leaves), signed with a real CA's key so that only the property
 * under test is wrong. Security tests of other parts may use it too. Built with @peculiar/x509 like
 * the real ones, so the encoding is the same and only what the test asks for differs.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { CertificateAuthority } from './authority.ts';
import { NAME_OID, signerFor, subjectAltName, toPem, utf8Name, x509 } from './x509.ts';
import type { Hash } from './x509.ts';

const PASSPHRASE = 'forge-only-in-tests';

/** The CA's private key, through its encrypted export (the only way out). */
export function caPrivateKey(ca: CertificateAuthority): KeyObject {
  return createPrivateKey({ key: ca.exportEncrypted(PASSPHRASE).encryptedKeyPem, format: 'pem', passphrase: PASSPHRASE });
}

export interface ForgeOptions {
  /** Signer; its key is used through exportEncrypted. */
  ca: CertificateAuthority;
  /** Extended key usages, verbatim. */
  ekus?: string[];
  uris?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  notBefore?: Date;
  notAfter?: Date;
  /** Digest of the CA's signature: SHA-256 by default; 'sha1' for CA-07 cases. */
  hash?: Hash;
  /** Key type of the leaf: P-256 (default), or RSA with this many bits. */
  rsaBits?: number;
  /** Make the leaf claim CA:true. */
  isCa?: boolean;
  commonName?: string;
  /** Appended verbatim after the usual extensions (any OID, any DER value: `new x509.Extension(oid, critical, der)`). */
  extraExtensions?: x509.Extension[];
}

/** A leaf certificate signed by `ca` with exactly the given contents; returns PEMs for TLS. */
export async function forgeCertificate(o: ForgeOptions): Promise<{ certPem: string; keyPem: string }> {
  const { privateKey } = o.rsaBits === undefined
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: o.rsaBits });
  const spkiDer = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const caKey = caPrivateKey(o.ca);
  const signer = signerFor(caKey, o.hash ?? 'sha256');
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(randomBytes(16).map((b, i) => (i === 0 ? (b & 0x3f) | 0x40 : b))).toString('hex'),
    issuer: new x509.X509Certificate(o.ca.certificate.raw).subjectName,
    subject: utf8Name([[NAME_OID.commonName, o.commonName ?? 'forged']]),
    notBefore: o.notBefore ?? new Date(now - 60_000),
    notAfter: o.notAfter ?? new Date(now + 3_600_000),
    publicKey: spkiDer,
    signingKey: signer.key,
    signingAlgorithm: signer.algorithm,
    extensions: [
      o.isCa ? new x509.BasicConstraintsExtension(true, 0, true) : new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(o.isCa ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature, true),
      ...(o.ekus === undefined ? [] : [new x509.ExtendedKeyUsageExtension(o.ekus)]),
      await x509.SubjectKeyIdentifierExtension.create(spkiDer),
      await x509.AuthorityKeyIdentifierExtension.create(createPublicKey(caKey).export({ type: 'spki', format: 'der' })),
      subjectAltName({ uris: o.uris ?? [], dnsNames: o.dnsNames ?? [], ipAddresses: o.ipAddresses ?? [] }),
      ...(o.extraExtensions ?? []),
    ],
  });
  return { certPem: toPem(cert.rawData, 'CERTIFICATE'), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}
