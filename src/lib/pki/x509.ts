/**
 * The one way into @peculiar/x509, which writes our certificates and PKCS#10 requests and reads the
 * requests we receive. Certificates we receive are never parsed with it: Node's native
 * X509Certificate (OpenSSL) does that on the hot path (see check.ts).
 *
 * @peculiar/x509 v2 resolves its algorithms through tsyringe, which needs the global Reflect metadata
 * polyfill before the library is even evaluated. ES modules evaluate their imports in order, so
 * `reflect-metadata` must stay the first import here, and nothing in src/lib/pki imports
 * @peculiar/x509 but through this module. (That polyfill was once the reason for a hand-written DER
 * encoder here; it is one import, and the project's stack names @peculiar/x509 for certificates.)
 * The library signs and verifies through WebCrypto: Node's, set once here.
 *
 * authority.ts and keys.ts load this module on first use, so processes that only check peers never
 * evaluate the library or install the polyfill.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

export { x509 };

export type Hash = 'sha1' | 'sha256' | 'sha384' | 'sha512';

const WEB_HASH: Readonly<Record<Hash, string>> = { sha1: 'SHA-1', sha256: 'SHA-256', sha384: 'SHA-384', sha512: 'SHA-512' };

/** OpenSSL's curve names (KeyObject.asymmetricKeyDetails) as WebCrypto names them. */
const WEB_CURVE: ReadonlyMap<string, string> = new Map([['prime256v1', 'P-256'], ['secp384r1', 'P-384'], ['secp521r1', 'P-521']]);

/** Attribute types we put in names. */
export const NAME_OID = { commonName: '2.5.4.3', organization: '2.5.4.10', organizationalUnit: '2.5.4.11' } as const;

export interface Signer {
  /** The private key as WebCrypto needs it (not extractable). */
  key: webcrypto.CryptoKey;
  /** The signing algorithm @peculiar/x509 turns into the certificate's or request's AlgorithmIdentifier. */
  algorithm: webcrypto.EcdsaParams | webcrypto.Algorithm;
}

/** The WebCrypto import parameters for a node:crypto key; ECDSA on P-256/384/521 or RSASSA-PKCS1-v1_5. */
function importParams(key: KeyObject, hash: Hash): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  if (key.asymmetricKeyType === 'ec') {
    const namedCurve = WEB_CURVE.get(key.asymmetricKeyDetails?.namedCurve ?? '');
    if (namedCurve !== undefined) return { name: 'ECDSA', namedCurve };
  } else if (key.asymmetricKeyType === 'rsa') {
    return { name: 'RSASSA-PKCS1-v1_5', hash: WEB_HASH[hash] };
  }
  const what = key.asymmetricKeyType === 'ec' ? `an EC key on curve ${key.asymmetricKeyDetails?.namedCurve ?? 'unknown'}` : `a ${key.asymmetricKeyType ?? 'unknown'} key`;
  throw new Error(`cannot sign with ${what}`);
}

/**
 * A node:crypto private key as a signer: ECDSA with `hash`, or RSASSA-PKCS1-v1_5 with `hash` (WebCrypto
 * fixes an RSA key's hash at import, so the hash is part of the converted key).
 */
export function signerFor(privateKey: KeyObject, hash: Hash = 'sha256'): Signer {
  const params = importParams(privateKey, hash);
  const key = privateKey.toCryptoKey(params, false, ['sign']);
  return { key, algorithm: params.name === 'ECDSA' ? { name: 'ECDSA', hash: WEB_HASH[hash] } : { name: params.name } };
}

/** A node:crypto public key as a WebCrypto key that @peculiar/x509 may export (for self-signed certificates and requests). */
export function verifierFor(publicKey: KeyObject, hash: Hash = 'sha256'): webcrypto.CryptoKey {
  return publicKey.toCryptoKey(importParams(publicKey, hash), true, ['verify']);
}

/** A distinguished name, one RDN per [attribute OID, value] pair, every value a UTF8String (RFC 5280 §4.1.2.4). */
export function utf8Name(attributes: ReadonlyArray<readonly [string, string]>): x509.Name {
  return new x509.Name(attributes.map(([type, value]) => ({ [type]: [{ utf8String: value }] })));
}

export interface SubjectAltNames {
  uris?: readonly string[];
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
}

/**
 * IP text as @peculiar/x509 reads it correctly. Its parser takes IPv4 and hexadecimal IPv6 only: an
 * IPv4 tail such as `::ffff:10.1.2.3` would silently become `::ffff:a` (it parses "10.1.2.3" as hex).
 * The WHATWG URL serialiser writes every IPv6 address in hexadecimal groups, so we let it rewrite.
 */
function sanIp(ip: string): string {
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family === 6 && !ip.includes('%')) return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  throw new Error(`not an IP address: ${ip}`);
}

/** subjectAltName (not critical): DNS names, then IP addresses, then URIs. */
export function subjectAltName(names: SubjectAltNames): x509.SubjectAlternativeNameExtension {
  return new x509.SubjectAlternativeNameExtension([
    ...(names.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(names.ipAddresses ?? []).map((ip) => ({ type: 'ip' as const, value: sanIp(ip) })),
    ...(names.uris ?? []).map((value) => ({ type: 'url' as const, value })),
  ]);
}

/** PEM with 64-character lines and a final newline, as OpenSSL writes it. */
export function toPem(der: ArrayBuffer | Uint8Array, label: 'CERTIFICATE' | 'CERTIFICATE REQUEST'): string {
  return `${x509.PemConverter.encode(der, label)}\n`;
}
