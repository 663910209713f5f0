/**
 * The kube proxy's serving certificate: a small CA of its own (the PEM an admin pastes into the
 * Kubernetes Service's `caPublicKey`), and a leaf for the proxy's names issued from it. Pure
 * functions over PEMs; command.ts reads and writes the files (DIR/serving-ca.crt, .key, …).
 *
 * The CA is not Causeway's installation CA: it only ever signs this proxy's serving certificate,
 * so its key living in the pod can vouch for nothing else.
 */
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPair as generateKeyPairCb, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { systemClock } from '../lib/clock.ts';
import type { Clock } from '../lib/clock.ts';
import { UserError } from '../lib/errors.ts';
import type * as X509Lib from '../lib/pki/x509.ts';

const generateKeyPairAsync = promisify(generateKeyPairCb);
const DAY_MS = 24 * 60 * 60 * 1000;
const BACKDATE_MS = 5 * 60 * 1000;
export const SERVING_CA_LIFETIME_DAYS = 3650;
export const SERVING_CERT_LIFETIME_DAYS = 365;
/** A serving certificate with less than this left is reissued at start. */
export const SERVING_RENEW_BEFORE_MS = 30 * DAY_MS;

export interface ServingCa {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
}

export interface ServingCert {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  notAfter: Date;
}

type X509Module = typeof X509Lib;
const loadX509 = (): Promise<X509Module> => import('../lib/pki/x509.ts');

function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

function lifetime(days: number | undefined, fallback: number): number {
  const d = days ?? fallback;
  if (!Number.isInteger(d) || d < 1 || d > 30 * 365) throw new UserError('KUBE_SERVING_BAD_LIFETIME', `a serving certificate lifetime of ${d} days is out of range: use 1 to ${30 * 365}`);
  return d;
}

/** A new self-signed P-256 CA for the proxy's serving certificate (CA:true, pathLen 0). */
export async function createServingCa(o: { clusterName: string; clock?: Clock; lifetimeDays?: number }): Promise<ServingCa> {
  const lib = await loadX509();
  const X = lib.x509;
  const now = (o.clock ?? systemClock).now();
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  const signer = lib.signerFor(privateKey);
  const cert = await X.X509CertificateGenerator.createSelfSigned({
    serialNumber: `01${randomBytes(15).toString('hex')}`,
    name: lib.utf8Name([[lib.NAME_OID.organization, 'Causeway'], [lib.NAME_OID.commonName, `Causeway kube proxy CA (${o.clusterName})`.slice(0, 64)]]),
    notBefore: floorToSecond(now - BACKDATE_MS),
    notAfter: floorToSecond(now + lifetime(o.lifetimeDays, SERVING_CA_LIFETIME_DAYS) * DAY_MS),
    keys: { privateKey: signer.key, publicKey: lib.verifierFor(publicKey) },
    signingAlgorithm: signer.algorithm,
    extensions: [
      new X.BasicConstraintsExtension(true, 0, true),
      new X.KeyUsagesExtension(X.KeyUsageFlags.keyCertSign | X.KeyUsageFlags.cRLSign, true),
      await X.SubjectKeyIdentifierExtension.create(publicKey.export({ type: 'spki', format: 'der' })),
    ],
  });
  return { certPem: lib.toPem(cert.rawData, 'CERTIFICATE'), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

function loadCa(ca: ServingCa): { cert: X509Certificate; key: KeyObject } {
  let cert: X509Certificate;
  let key: KeyObject;
  try {
    cert = new X509Certificate(ca.certPem);
    key = createPrivateKey(ca.keyPem);
  } catch (err) {
    throw new UserError('KUBE_SERVING_CA_INVALID', 'the serving CA certificate or key cannot be read; remove them to have a new CA made (and update the Service caPublicKey)', { cause: err });
  }
  if (!cert.ca || !cert.checkPrivateKey(key)) {
    throw new UserError('KUBE_SERVING_CA_INVALID', 'the serving CA certificate is not a CA or does not match its key; remove both to have a new CA made (and update the Service caPublicKey)');
  }
  return { cert, key };
}

/** A serving certificate for `hosts` (DNS names and IP addresses), signed by `ca`. */
export async function issueServingCert(ca: ServingCa, o: { hosts: string[]; clock?: Clock; lifetimeDays?: number }): Promise<ServingCert> {
  if (o.hosts.length === 0) throw new UserError('KUBE_SERVING_NO_HOSTS', 'the serving certificate needs at least one host name');
  const { cert: caCert, key: caKey } = loadCa(ca);
  const lib = await loadX509();
  const X = lib.x509;
  const now = (o.clock ?? systemClock).now();
  const notAfter = floorToSecond(Math.min(now + lifetime(o.lifetimeDays, SERVING_CERT_LIFETIME_DAYS) * DAY_MS, caCert.validToDate.getTime()));
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  const caSubject = new X.X509Certificate(caCert.raw).subjectName;
  const dnsNames = o.hosts.filter((h) => isIP(h) === 0);
  const ipAddresses = o.hosts.filter((h) => isIP(h) !== 0);
  const cert = await X.X509CertificateGenerator.create({
    serialNumber: `01${randomBytes(15).toString('hex')}`,
    subject: lib.utf8Name([[lib.NAME_OID.organization, 'Causeway'], [lib.NAME_OID.commonName, (o.hosts[0] ?? '').slice(0, 64)]]),
    issuer: caSubject,
    notBefore: floorToSecond(now - BACKDATE_MS),
    notAfter,
    publicKey: lib.verifierFor(publicKey),
    signingKey: lib.signerFor(caKey).key,
    signingAlgorithm: lib.signerFor(caKey).algorithm,
    extensions: [
      new X.BasicConstraintsExtension(false, undefined, true),
      new X.KeyUsagesExtension(X.KeyUsageFlags.digitalSignature, true),
      new X.ExtendedKeyUsageExtension([X.ExtendedKeyUsage.serverAuth], false),
      await X.AuthorityKeyIdentifierExtension.create(createPublicKey(caKey).export({ type: 'spki', format: 'der' })),
      lib.subjectAltName({ dnsNames, ipAddresses }),
    ],
  });
  return { certPem: lib.toPem(cert.rawData, 'CERTIFICATE'), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), notAfter };
}

/**
 * Whether a stored serving certificate must be reissued: unreadable, not from `caPem`, not matching
 * its key, missing one of `hosts`, or expiring within SERVING_RENEW_BEFORE_MS.
 */
export function servingCertNeedsRenewal(cert: { certPem: string; keyPem: string }, caPem: string, hosts: string[], now: number): boolean {
  try {
    const leaf = new X509Certificate(cert.certPem);
    const ca = new X509Certificate(caPem);
    if (!leaf.verify(ca.publicKey) || !leaf.checkPrivateKey(createPrivateKey(cert.keyPem))) return true;
    if (leaf.validToDate.getTime() - now < SERVING_RENEW_BEFORE_MS || leaf.validFromDate.getTime() > now) return true;
    return !hosts.every((h) => (isIP(h) === 0 ? leaf.checkHost(h, { wildcards: false }) !== undefined : leaf.checkIP(h) !== undefined));
  } catch {
    return true;
  }
}
