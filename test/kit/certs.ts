/**
 * A throwaway certificate factory for tests: a self-signed ECDSA P-256 CA and server or client
 * certificates it signs. Self-contained on purpose (it does not use src/lib/pki), so the test kit
 * stays usable while the product PKI changes.
 */
// @peculiar/x509 resolves its classes through tsyringe, which needs the Reflect metadata polyfill
// loaded before it; ES modules evaluate in import order, so this line must stay first.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

const ecdsa = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const hour = 3600_000;

export interface TestCa {
  /** The CA certificate in PEM. */
  certPem: string;
  /** The CA private key in PKCS#8 PEM. */
  keyPem: string;
  cert: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

export interface IssuedCert {
  certPem: string;
  keyPem: string;
  /** The issuing CA's certificate, for trust stores and kubeconfigs. */
  caPem: string;
}

export interface ServerCertOptions {
  dnsNames?: string[];
  ipAddresses?: string[];
  commonName?: string;
  /** Validity in milliseconds from one hour ago; default 24 hours. */
  lifetimeMs?: number;
}

export interface ClientCertOptions {
  commonName: string;
  /** Subject O= values (Kubernetes reads them as groups). */
  organizations?: string[];
  uris?: string[];
  lifetimeMs?: number;
}

/** A positive, random 16-byte serial number in hex (the top bit cleared, as Go requires). */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] & 0x7f) | 0x01;
  return Buffer.from(bytes).toString('hex');
}

async function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ecdsa, true, ['sign', 'verify']);
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** Rewrites an IPv6 address's dotted IPv4 tail (::ffff:10.0.0.1) as hex groups, which @peculiar/x509 misreads otherwise. */
function ipForSan(ip: string): string {
  const m = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (m === null) return ip;
  const [a, b, c, d] = [m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number];
  return `${m[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

/** Escapes a value for an RFC 4514 distinguished name. */
function dnValue(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, '\\$1').replace(/^([ #])/, '\\$1').replace(/ $/, '\\ ');
}

export async function makeTestCa(options: { commonName?: string; lifetimeMs?: number } = {}): Promise<TestCa> {
  const keys = await generateKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${dnValue(options.commonName ?? 'Causeway Test CA')}`,
    notBefore: new Date(now - hour),
    notAfter: new Date(now + (options.lifetimeMs ?? 7 * 24 * hour)),
    signingAlgorithm: ecdsa,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey), cert, keys };
}

async function issue(
  ca: TestCa,
  subject: string,
  extensions: x509.Extension[],
  lifetimeMs: number | undefined,
): Promise<IssuedCert> {
  const keys = await generateKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject,
    issuer: ca.cert.subject,
    notBefore: new Date(now - hour),
    notAfter: new Date(now + (lifetimeMs ?? 24 * hour)),
    signingAlgorithm: ecdsa,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ...extensions,
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey), caPem: ca.certPem };
}

/** A TLS server certificate for the given names (default: localhost and 127.0.0.1). */
export async function makeServerCert(ca: TestCa, options: ServerCertOptions = {}): Promise<IssuedCert> {
  const dnsNames = options.dnsNames ?? (options.ipAddresses === undefined ? ['localhost'] : []);
  const ipAddresses = options.ipAddresses ?? (options.dnsNames === undefined ? ['127.0.0.1'] : []);
  const names: x509.JsonGeneralName[] = [
    ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...ipAddresses.map((value) => ({ type: 'ip' as const, value: ipForSan(value) })),
  ];
  if (names.length === 0) throw new Error('makeServerCert needs at least one DNS name or IP address');
  const commonName = options.commonName ?? dnsNames[0] ?? ipAddresses[0];
  return issue(
    ca,
    `CN=${dnValue(commonName)}`,
    [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]), new x509.SubjectAlternativeNameExtension(names)],
    options.lifetimeMs,
  );
}

/** A TLS client certificate; Kubernetes maps CN to the user and O to groups. */
export async function makeClientCert(ca: TestCa, options: ClientCertOptions): Promise<IssuedCert> {
  const subject = [`CN=${dnValue(options.commonName)}`, ...(options.organizations ?? []).map((o) => `O=${dnValue(o)}`)].join(', ');
  const extensions: x509.Extension[] = [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])];
  if (options.uris !== undefined && options.uris.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(options.uris.map((value) => ({ type: 'url' as const, value }))));
  }
  return issue(ca, subject, extensions, options.lifetimeMs);
}
