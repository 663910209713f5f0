/**
 * Test support only: certificates our CA would never issue (two type markers, SHA-1 signatures,
 * hostile SANs, weak keys, CA:true leaves), signed with a real CA's key so that only the property
 * under test is wrong. Security tests of other parts may use it too.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { CertificateAuthority } from './authority.ts';
import { derToPem, pemToDer } from './der.ts';
import {
  KEY_USAGE, OID, authorityKeyIdentifier, basicConstraints, buildCertificate, certificateSubject, distinguishedName, extKeyUsage,
  keyIdentifier, keyUsage, subjectAltName, subjectKeyIdentifier,
} from './x509-build.ts';
import type { ExtensionSpec, Hash } from './x509-build.ts';

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
  hash?: Hash;
  /** Key type of the leaf: P-256 (default), or RSA with this many bits. */
  rsaBits?: number;
  /** Make the leaf claim CA:true. */
  isCa?: boolean;
  commonName?: string;
  extraExtensions?: ExtensionSpec[];
}

/** A leaf certificate signed by `ca` with exactly the given contents; returns PEMs for TLS. */
export function forgeCertificate(o: ForgeOptions): { certPem: string; keyPem: string } {
  const { privateKey } = o.rsaBits === undefined
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: o.rsaBits });
  const spkiDer = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const caDer = pemToDer(o.ca.certPem, 'CERTIFICATE');
  const signingKey = caPrivateKey(o.ca);
  const caSpki = createPublicKey(signingKey).export({ type: 'spki', format: 'der' });
  const now = Date.now();
  const der = buildCertificate({
    serial: Buffer.from(randomBytes(16).map((b, i) => (i === 0 ? (b & 0x3f) | 0x40 : b))),
    issuer: certificateSubject(caDer),
    subject: distinguishedName([[OID.commonName, o.commonName ?? 'forged']]),
    notBefore: o.notBefore ?? new Date(now - 60_000),
    notAfter: o.notAfter ?? new Date(now + 3_600_000),
    spkiDer,
    extensions: [
      basicConstraints(o.isCa ?? false, o.isCa ? 0 : undefined),
      keyUsage(o.isCa ? [KEY_USAGE.digitalSignature, KEY_USAGE.keyCertSign] : [KEY_USAGE.digitalSignature]),
      ...(o.ekus === undefined ? [] : [extKeyUsage(o.ekus)]),
      subjectKeyIdentifier(keyIdentifier(spkiDer)),
      authorityKeyIdentifier(keyIdentifier(caSpki)),
      subjectAltName({ uris: o.uris ?? [], dnsNames: o.dnsNames ?? [], ipAddresses: o.ipAddresses ?? [] }),
      ...(o.extraExtensions ?? []),
    ],
    signingKey,
    ...(o.hash === undefined ? {} : { hash: o.hash }),
  });
  return { certPem: derToPem(der, 'CERTIFICATE'), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}
