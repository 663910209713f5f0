/**
 * Builds X.509 v3 certificates (RFC 5280) from parts. No policy here: authority.ts decides what goes
 * in; this only encodes and signs. Exported for tests that need certificates the CA would never issue.
 */
import { createHash, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import {
  TAG, bitString, bitStringBytes, boolean, children, contextTag, expectTag, integer, integerFromBytes, nullValue,
  octetString, oid, raw, readTlv, sequence, set, time, tlv, utf8String,
} from './der.ts';

export const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecdsaWithSha1: '1.2.840.10045.4.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
  sha1WithRsa: '1.2.840.113549.1.1.5',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  sha384WithRsa: '1.2.840.113549.1.1.12',
  sha512WithRsa: '1.2.840.113549.1.1.13',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  privateKeyUsagePeriod: '2.5.29.16',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
} as const;

export type Hash = 'sha1' | 'sha256' | 'sha384' | 'sha512';

const SIGNATURE_OIDS: Record<'ec' | 'rsa', Record<Hash, string>> = {
  ec: { sha1: OID.ecdsaWithSha1, sha256: OID.ecdsaWithSha256, sha384: OID.ecdsaWithSha384, sha512: OID.ecdsaWithSha512 },
  rsa: { sha1: OID.sha1WithRsa, sha256: OID.sha256WithRsa, sha384: OID.sha384WithRsa, sha512: OID.sha512WithRsa },
};

/** AlgorithmIdentifier for a signature by this key with this hash (ECDSA: no parameters; RSA: NULL). */
export function signatureAlgorithm(key: KeyObject, hash: Hash): Buffer {
  const kind = key.asymmetricKeyType;
  if (kind === 'ec') return sequence(oid(SIGNATURE_OIDS.ec[hash]));
  if (kind === 'rsa') return sequence(oid(SIGNATURE_OIDS.rsa[hash]), nullValue());
  throw new Error(`cannot sign with a ${String(kind)} key`);
}

/** Signs `tbs` and returns SEQUENCE { tbs, algorithm, BIT STRING signature } (certificate and CSR share the shape). */
export function signed(tbs: Buffer, algorithm: Buffer, key: KeyObject, hash: Hash): Buffer {
  return sequence(tbs, algorithm, bitString(sign(hash, tbs, key)));
}

/** A distinguished name from [attribute OID, value] pairs, one RDN each, values as UTF8String. */
export function distinguishedName(attributes: ReadonlyArray<readonly [string, string]>): Buffer {
  return sequence(...attributes.map(([type, value]) => set(sequence(oid(type), utf8String(value)))));
}

export interface ExtensionSpec {
  oid: string;
  critical: boolean;
  /** DER of the extension value (what goes inside extnValue's OCTET STRING). */
  value: Buffer;
}

export function extension(spec: ExtensionSpec): Buffer {
  return spec.critical ? sequence(oid(spec.oid), boolean(true), octetString(spec.value)) : sequence(oid(spec.oid), octetString(spec.value));
}

export function basicConstraints(ca: boolean, pathLen?: number): ExtensionSpec {
  const parts = ca ? [boolean(true), ...(pathLen === undefined ? [] : [integer(pathLen)])] : [];
  return { oid: OID.basicConstraints, critical: true, value: sequence(...parts) };
}

export const KEY_USAGE = { digitalSignature: 0, keyEncipherment: 2, keyAgreement: 4, keyCertSign: 5, cRLSign: 6 } as const;

/** keyUsage as a DER BIT STRING with the minimal number of bits. */
export function keyUsage(bits: ReadonlyArray<number>): ExtensionSpec {
  let value = 0;
  for (const bit of bits) value |= 0x80 >> bit;
  const highest = Math.max(...bits);
  const unused = 7 - highest;
  return { oid: OID.keyUsage, critical: true, value: tlv(TAG.BIT_STRING, Buffer.from([unused, value])) };
}

export function extKeyUsage(oids: readonly string[]): ExtensionSpec {
  return { oid: OID.extKeyUsage, critical: false, value: sequence(...oids.map((o) => oid(o))) };
}

export interface SubjectAltNames {
  uris?: readonly string[];
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
}

function ipBytes(ip: string): Buffer {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family === 6) {
    const [head = '', tail = ''] = ip.includes('::') ? ip.split('::') : [ip, ''];
    const groups = (part: string): string[] => (part === '' ? [] : part.split(':'));
    let h = groups(head);
    let t = groups(tail);
    // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
    const v4 = (arr: string[]): string[] => {
      const last = arr[arr.length - 1];
      if (last === undefined || !last.includes('.')) return arr;
      const b = last.split('.').map(Number) as [number, number, number, number];
      return [...arr.slice(0, -1), ((b[0] << 8) | b[1]).toString(16), ((b[2] << 8) | b[3]).toString(16)];
    };
    if (ip.includes('::')) t = v4(t);
    else h = v4(h);
    const zeros = ip.includes('::') ? Array<string>(8 - h.length - t.length).fill('0') : [];
    const all = [...h, ...zeros, ...t];
    const out = Buffer.alloc(16);
    all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
    return out;
  }
  throw new Error(`not an IP address: ${ip}`);
}

export function subjectAltName(names: SubjectAltNames): ExtensionSpec {
  const items = [
    ...(names.dnsNames ?? []).map((d) => contextTag(2, Buffer.from(d, 'latin1'), false)),
    ...(names.ipAddresses ?? []).map((ip) => contextTag(7, ipBytes(ip), false)),
    ...(names.uris ?? []).map((u) => contextTag(6, Buffer.from(u, 'latin1'), false)),
  ];
  return { oid: OID.subjectAltName, critical: false, value: sequence(...items) };
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spkiDer: Buffer): Buffer {
  const spki = readTlv(spkiDer, 0);
  const [, bits] = children(spkiDer, expectTag(spki, TAG.SEQUENCE, 'SubjectPublicKeyInfo'));
  if (bits === undefined) throw new Error('SubjectPublicKeyInfo without a key');
  return createHash('sha1').update(bitStringBytes(spkiDer, bits)).digest();
}

export function subjectKeyIdentifier(keyId: Buffer): ExtensionSpec {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: octetString(keyId) };
}

export function authorityKeyIdentifier(keyId: Buffer): ExtensionSpec {
  return { oid: OID.authorityKeyIdentifier, critical: false, value: sequence(contextTag(0, keyId, false)) };
}

/** The DER of the subject Name inside a certificate, byte for byte (the issuer of what that CA signs). */
export function certificateSubject(certDer: Buffer): Buffer {
  const cert = expectTag(readTlv(certDer, 0), TAG.SEQUENCE, 'Certificate');
  const [tbs] = children(certDer, cert);
  const fields = children(certDer, expectTag(tbs, TAG.SEQUENCE, 'TBSCertificate'));
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
  return raw(certDer, expectTag(fields[offset + 4], TAG.SEQUENCE, 'subject'));
}

export interface CertificateParts {
  /** Serial magnitude (big-endian, positive). */
  serial: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spkiDer: Buffer;
  extensions: readonly ExtensionSpec[];
  signingKey: KeyObject;
  hash?: Hash;
}

/** DER of a signed X.509 v3 certificate. */
export function buildCertificate(parts: CertificateParts): Buffer {
  const hash = parts.hash ?? 'sha256';
  const algorithm = signatureAlgorithm(parts.signingKey, hash);
  const tbs = sequence(
    contextTag(0, integer(2), true),
    integerFromBytes(parts.serial),
    algorithm,
    parts.issuer,
    sequence(time(parts.notBefore), time(parts.notAfter)),
    parts.subject,
    parts.spkiDer,
    contextTag(3, sequence(...parts.extensions.map(extension)), true),
  );
  return signed(tbs, algorithm, parts.signingKey, hash);
}

export interface CsrParts {
  subject: Buffer;
  spkiDer: Buffer;
  /** Extensions requested through the PKCS#9 extensionRequest attribute. */
  extensions?: readonly ExtensionSpec[];
  signingKey: KeyObject;
  hash?: Hash;
}

/** DER of a PKCS#10 certification request (RFC 2986). */
export function buildCsr(parts: CsrParts): Buffer {
  const hash = parts.hash ?? 'sha256';
  const attributes = parts.extensions?.length
    ? sequence(oid(OID.extensionRequest), set(sequence(...parts.extensions.map(extension))))
    : Buffer.alloc(0);
  const info = sequence(integer(0), parts.subject, parts.spkiDer, contextTag(0, attributes, true));
  return signed(info, signatureAlgorithm(parts.signingKey, hash), parts.signingKey, hash);
}
