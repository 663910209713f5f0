/**
 * Key pairs, key strength, and PKCS#10 requests: making one on the holder's side, and checking one on
 * the issuer's side (proof of possession only; nothing else in a request is believed). Requests are
 * written and read with @peculiar/x509, loaded on first use (see loadX509 in authority.ts).
 */
import { createPrivateKey, createPublicKey, generateKeyPair as generateKeyPairCb } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { UserError } from '../errors.ts';
import type { x509 } from './x509.ts';

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

/** The request signatures we accept: ECDSA or RSASSA-PKCS1-v1_5 with SHA-2, as @peculiar/x509 names them. */
const CSR_SIGNATURE_FAMILY: ReadonlyMap<string, 'ec' | 'rsa'> = new Map([['ECDSA', 'ec'], ['RSASSA-PKCS1-v1_5', 'rsa']]);
const CSR_SIGNATURE_HASHES: ReadonlySet<string> = new Set(['SHA-256', 'SHA-384', 'SHA-512']);

const MAX_CSR_PEM_CHARS = 32 * 1024;
const CSR_LABEL = 'CERTIFICATE REQUEST';

function badCsr(reason: string, cause?: unknown): UserError {
  return new UserError('CSR_INVALID', `The certificate request is not usable (${reason}); create a new PKCS#10 request with \`causeway\` or openssl.`, cause === undefined ? {} : { cause });
}

/**
 * The one piece of DER this module still reads: the length of the outermost SEQUENCE, so that bytes
 * after the request are refused. @peculiar/x509 parses with asn1js, which decodes the first element
 * and ignores whatever follows it. Returns undefined when `der` does not start with a definite-length
 * SEQUENCE header.
 */
function outerSequenceLength(der: Uint8Array): number | undefined {
  if (der.length < 2 || der[0] !== 0x30) return undefined;
  const first = der[1];
  if (first < 0x80) return 2 + first;
  const count = first & 0x7f;
  if (count === 0 || count > 4 || der.length < 2 + count) return undefined;
  let length = 0;
  for (let i = 0; i < count; i++) length = length * 256 + der[2 + i];
  return 2 + count + length;
}

/**
 * Checks a PKCS#10 request's self-signature (proof of possession) and the key's strength, and returns
 * the SPKI DER of its key. Subject, attributes and requested extensions are deliberately ignored:
 * identity, type and lifetime come from the issuer (THREATS CA-04).
 */
export async function publicKeyFromCsr(csrPem: string): Promise<Buffer> {
  if (typeof csrPem !== 'string') throw badCsr('it is not PEM text');
  if (csrPem.length > MAX_CSR_PEM_CHARS) throw badCsr('too large');
  const { x509: X } = await import('./x509.ts');
  let blocks: x509.PemStruct[];
  try {
    blocks = X.PemConverter.decodeWithHeaders(csrPem).filter((block) => block.type === CSR_LABEL);
  } catch (err) {
    throw badCsr(`no single "${CSR_LABEL}" PEM block`, err);
  }
  const [block] = blocks;
  if (block === undefined || blocks.length !== 1) throw badCsr(`${blocks.length === 0 ? 'no' : 'more than one'} "${CSR_LABEL}" PEM block`);
  const der = new Uint8Array(block.rawData);
  if (outerSequenceLength(der) !== der.length) throw badCsr('it is not exactly one DER-encoded request');
  let csr: x509.Pkcs10CertificateRequest;
  let spkiDer: Buffer;
  let algorithm: { name?: unknown; hash?: { name?: unknown } };
  try {
    csr = new X.Pkcs10CertificateRequest(der);
    spkiDer = Buffer.from(csr.publicKey.rawData);
    // An unknown algorithm comes back as { name: <its OID> } without a hash.
    algorithm = csr.signatureAlgorithm;
  } catch (err) {
    throw badCsr(err instanceof Error ? err.message : 'it cannot be parsed', err);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (err) {
    throw badCsr('its public key cannot be read', err);
  }
  assertStrongKey(key);
  const name = String(algorithm.name);
  const hash = typeof algorithm.hash?.name === 'string' ? algorithm.hash.name : undefined;
  const family = CSR_SIGNATURE_FAMILY.get(name);
  if (family === undefined || hash === undefined || !CSR_SIGNATURE_HASHES.has(hash)) {
    if (family !== undefined && hash === 'SHA-1') {
      throw new UserError('CERT_WEAK_KEY', 'Refusing a certificate request signed with SHA-1: sign it with SHA-256 or stronger.');
    }
    throw badCsr(`unsupported signature algorithm ${name}${hash === undefined ? '' : ` with ${hash}`}`);
  }
  if (family !== key.asymmetricKeyType) throw badCsr('its signature algorithm does not match its key');
  let ok: boolean;
  try {
    ok = await csr.verify();
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
  const lib = await import('./x509.ts');
  const privateKey = createPrivateKey({ key: keyPair.privateKeyPem, format: 'pem' });
  const signer = lib.signerFor(privateKey);
  const csr = await lib.x509.Pkcs10CertificateRequestGenerator.create({
    name: lib.utf8Name([[lib.NAME_OID.commonName, subject]]),
    keys: { privateKey: signer.key, publicKey: lib.verifierFor(createPublicKey(privateKey)) },
    signingAlgorithm: signer.algorithm,
  });
  return lib.toPem(csr.rawData, CSR_LABEL);
}
