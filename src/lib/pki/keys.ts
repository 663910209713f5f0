/**
 * Key pairs, key strength, and PKCS#10 requests: making one on the holder's side, and checking one on
 * the issuer's side (proof of possession only; nothing else in a request is believed).
 */
import { createPrivateKey, createPublicKey, generateKeyPair as generateKeyPairCb, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { UserError } from '../errors.ts';
import { DerError, TAG, children, decodeOid, expectTag, pemToDer, raw, readTlv, bitStringBytes, derToPem } from './der.ts';
import { OID, buildCsr, distinguishedName } from './x509-build.ts';
import type { Hash } from './x509-build.ts';

const generateKeyPairAsync = promisify(generateKeyPairCb);

/** A fresh ECDSA P-256 key pair: PKCS#8 private key PEM and SPKI public key PEM. */
export async function generateKeyPair(): Promise<{ privateKeyPem: string; publicKeyPem: string }> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', {
    namedCurve: 'P-256',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return { privateKeyPem: privateKey, publicKeyPem: publicKey };
}

/** Accepts EC P-256/P-384 and RSA of at least 2048 bits; anything else is CERT_WEAK_KEY (THREATS CA-07). */
export function assertStrongKey(key: KeyObject): void {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec' && (details.namedCurve === 'prime256v1' || details.namedCurve === 'secp384r1')) return;
  if (key.asymmetricKeyType === 'rsa' && (details.modulusLength ?? 0) >= 2048) return;
  const what = key.asymmetricKeyType === 'rsa'
    ? `an RSA key of ${details.modulusLength ?? 0} bits`
    : key.asymmetricKeyType === 'ec' ? `an EC key on curve ${details.namedCurve ?? 'unknown'}` : `a ${key.asymmetricKeyType ?? 'unknown'} key`;
  throw new UserError('CERT_WEAK_KEY', `Refusing to certify ${what}: use ECDSA P-256 or P-384, or RSA with at least 2048 bits.`);
}

/** SPKI DER of a public key PEM, after the strength check. */
export function publicKeyFromPem(publicKeyPem: string): Buffer {
  if (typeof publicKeyPem !== 'string' || publicKeyPem.includes('PRIVATE KEY')) {
    throw new UserError('CERT_BAD_PUBLIC_KEY', 'Expected a public key PEM; never send private keys to the issuer.');
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: publicKeyPem, format: 'pem' });
  } catch (err) {
    throw new UserError('CERT_BAD_PUBLIC_KEY', 'The public key is not a readable PEM public key; send an SPKI "PUBLIC KEY" PEM or a PKCS#10 request.', { cause: err });
  }
  if (key.type !== 'public') throw new UserError('CERT_BAD_PUBLIC_KEY', 'Expected a public key, not a private key; never send private keys to the issuer.');
  assertStrongKey(key);
  return key.export({ type: 'spki', format: 'der' });
}

const CSR_SIGNATURES: ReadonlyMap<string, { family: 'ec' | 'rsa'; hash: Hash }> = new Map([
  [OID.ecdsaWithSha256, { family: 'ec', hash: 'sha256' }],
  [OID.ecdsaWithSha384, { family: 'ec', hash: 'sha384' }],
  [OID.ecdsaWithSha512, { family: 'ec', hash: 'sha512' }],
  [OID.sha256WithRsa, { family: 'rsa', hash: 'sha256' }],
  [OID.sha384WithRsa, { family: 'rsa', hash: 'sha384' }],
  [OID.sha512WithRsa, { family: 'rsa', hash: 'sha512' }],
]);

const MAX_CSR_PEM_CHARS = 32 * 1024;

function badCsr(reason: string, cause?: unknown): UserError {
  return new UserError('CSR_INVALID', `The certificate request is not usable (${reason}); create a new PKCS#10 request with \`causeway\` or openssl.`, cause === undefined ? {} : { cause });
}

/**
 * Checks a PKCS#10 request's self-signature (proof of possession) and the key's strength, and returns
 * the SPKI DER of its key. Subject, attributes and requested extensions are deliberately ignored:
 * identity, type and lifetime come from the issuer (THREATS CA-04).
 */
export function publicKeyFromCsr(csrPem: string): Buffer {
  if (csrPem.length > MAX_CSR_PEM_CHARS) throw badCsr('too large');
  let der: Buffer;
  try {
    der = pemToDer(csrPem, 'CERTIFICATE REQUEST');
  } catch (err) {
    throw badCsr('no single "CERTIFICATE REQUEST" PEM block', err);
  }
  let info: Buffer;
  let spkiDer: Buffer;
  let algorithmOid: string;
  let signature: Buffer;
  try {
    const outer = expectTag(readTlv(der, 0), TAG.SEQUENCE, 'CertificationRequest');
    if (outer.end !== der.length) throw new DerError('trailing bytes');
    const [infoNode, algNode, sigNode] = children(der, outer);
    const infoTlv = expectTag(infoNode, TAG.SEQUENCE, 'CertificationRequestInfo');
    const [version, subject, spki] = children(der, infoTlv);
    expectTag(version, TAG.INTEGER, 'version');
    expectTag(subject, TAG.SEQUENCE, 'subject');
    const spkiTlv = expectTag(spki, TAG.SEQUENCE, 'SubjectPublicKeyInfo');
    const [algOid] = children(der, expectTag(algNode, TAG.SEQUENCE, 'signatureAlgorithm'));
    if (algOid === undefined) throw new DerError('empty signatureAlgorithm');
    algorithmOid = decodeOid(der, algOid);
    signature = bitStringBytes(der, expectTag(sigNode, TAG.BIT_STRING, 'signature'));
    info = raw(der, infoTlv);
    spkiDer = raw(der, spkiTlv);
  } catch (err) {
    if (err instanceof DerError) throw badCsr(err.message, err);
    throw err;
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (err) {
    throw badCsr('its public key cannot be read', err);
  }
  assertStrongKey(key);
  const alg = CSR_SIGNATURES.get(algorithmOid);
  if (alg === undefined) {
    if (algorithmOid === OID.ecdsaWithSha1 || algorithmOid === OID.sha1WithRsa) {
      throw new UserError('CERT_WEAK_KEY', 'Refusing a certificate request signed with SHA-1: sign it with SHA-256 or stronger.');
    }
    throw badCsr(`unsupported signature algorithm ${algorithmOid}`);
  }
  if (alg.family !== key.asymmetricKeyType) throw badCsr('its signature algorithm does not match its key');
  let ok: boolean;
  try {
    ok = verify(alg.hash, info, key, signature);
  } catch (err) {
    throw badCsr('its signature cannot be checked', err);
  }
  if (!ok) throw badCsr('its signature does not verify, so it does not prove possession of the key');
  return key.export({ type: 'spki', format: 'der' });
}

/**
 * A PKCS#10 request for this key pair (EC or RSA), signed with SHA-256. `subject` becomes the request's
 * common name; the issuer ignores it, it only helps humans reading the request.
 */
export async function createCsr(keyPair: { privateKeyPem: string; publicKeyPem: string }, subject = 'causeway'): Promise<string> {
  const signingKey = createPrivateKey({ key: keyPair.privateKeyPem, format: 'pem' });
  const spkiDer = createPublicKey(signingKey).export({ type: 'spki', format: 'der' });
  const csr = buildCsr({ subject: distinguishedName([[OID.commonName, subject]]), spkiDer, signingKey });
  return Promise.resolve(derToPem(csr, 'CERTIFICATE REQUEST'));
}
