import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, promisify } from 'node:util';
import { errorCode } from '../errors.ts';
import { CertificateAuthority, issueKeyAndCert } from './authority.ts';
import { createCsr, generateKeyPair } from './keys.ts';
import { NAME_OID, signerFor, subjectAltName, toPem, utf8Name, verifierFor, x509 } from './x509.ts';
import { CERT_TYPES, DEFAULT_LIFETIME_MS, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, TYPE_MARKER_OID } from './types.ts';
import type { CertIdentity, CertType } from './types.ts';

const run = promisify(execFile);
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

function identityFor(type: CertType): CertIdentity {
  if (type === 'trust') return { user: 'alice', device: 'laptop-1' };
  if (type === 'device') return { device: 'laptop-1' };
  return { name: `${type}-1` };
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<Error> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected a ${code} error, got success`);
  assert.equal(errorCode(caught), code, caught.message);
  return caught;
}

/** openssl's text dump of a certificate: an independent reading of what we encoded. */
async function opensslText(dir: string, pem: string): Promise<string> {
  const file = join(dir, `c-${Math.random().toString(36).slice(2)}.pem`);
  await writeFile(file, pem);
  return (await run('openssl', ['x509', '-in', file, '-noout', '-text'])).stdout;
}

void describe('CertificateAuthority', () => {
  let dir: string;
  let now: number;
  const clock = { now: () => now };
  let ca: CertificateAuthority;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'causeway-pki-'));
    now = Date.UTC(2026, 0, 15, 12, 0, 0);
    ca = await CertificateAuthority.create({ clock });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  void describe('the CA certificate', () => {
    void test('is a self-signed P-256 CA, CA:true pathlen 0 and keyCertSign+cRLSign (both critical), valid 10 years', async () => {
      const c = ca.certificate;
      assert.equal(c.ca, true);
      assert.ok(c.verify(c.publicKey));
      assert.equal(c.subject, c.issuer);
      assert.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
      assert.equal(c.signatureAlgorithm, 'ecdsa-with-SHA256');
      assert.equal(c.validFromDate.getTime(), now - 5 * MINUTE);
      assert.equal(c.validToDate.getTime(), now + 3650 * DAY);
      const text = await opensslText(dir, ca.certPem);
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
      assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
      assert.match(text, /X509v3 Subject Key Identifier/);
    });

    void test('takes a common name and a lifetime', async () => {
      const other = await CertificateAuthority.create({ commonName: 'Acme Causeway', lifetimeDays: 30, clock });
      assert.match(other.certificate.subject, /CN=Acme Causeway/);
      assert.equal(other.notAfter.getTime(), now + 30 * DAY);
    });
  });

  void describe('CP-16 the key at rest', () => {
    void test('is exported only as encrypted PKCS#8', () => {
      const stored = ca.exportEncrypted('correct horse battery staple');
      assert.match(stored.encryptedKeyPem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
      assert.doesNotMatch(stored.encryptedKeyPem, /-----BEGIN (EC |RSA )?PRIVATE KEY-----/);
      assert.equal(stored.certPem, ca.certPem);
    });

    void test('round-trips through load, and the loaded CA issues certificates that chain to the same CA', async () => {
      const stored = ca.exportEncrypted('pw-1');
      const loaded = await CertificateAuthority.load(stored, 'pw-1', { clock });
      assert.equal(loaded.certPem, ca.certPem);
      const issued = await issueKeyAndCert(loaded, { type: 'connector', identity: { name: 'dc1' } });
      const cert = new X509Certificate(issued.certPem);
      assert.ok(cert.checkIssued(ca.certificate));
      assert.ok(cert.verify(ca.certificate.publicKey));
    });

    void test('a wrong passphrase is CA_KEY_DECRYPT_FAILED and says to check the passphrase', async () => {
      const err = await rejectsWithCode(CertificateAuthority.load(ca.exportEncrypted('right'), 'wrong'), 'CA_KEY_DECRYPT_FAILED');
      assert.match(err.message, /passphrase/);
      assert.doesNotMatch(err.message, /right|wrong/);
    });

    void test('an empty passphrase is refused on export and on load', async () => {
      assert.throws(() => ca.exportEncrypted(''), (err: unknown) => errorCode(err) === 'CA_PASSPHRASE_EMPTY');
      await rejectsWithCode(CertificateAuthority.load(ca.exportEncrypted('x'), ''), 'CA_PASSPHRASE_EMPTY');
    });

    void test('an unencrypted key is refused on load', async () => {
      const stored = ca.exportEncrypted('pw');
      const plain = createPrivateKey({ key: stored.encryptedKeyPem, passphrase: 'pw' }).export({ type: 'pkcs8', format: 'pem' }).toString();
      await rejectsWithCode(CertificateAuthority.load({ certPem: stored.certPem, encryptedKeyPem: plain }, 'pw'), 'CA_KEY_NOT_ENCRYPTED');
    });

    void test('a key that does not belong to the certificate is refused on load', async () => {
      const other = await CertificateAuthority.create();
      await rejectsWithCode(CertificateAuthority.load({ certPem: ca.certPem, encryptedKeyPem: other.exportEncrypted('pw').encryptedKeyPem }, 'pw'), 'CA_KEY_MISMATCH');
    });

    void test('a stored certificate file holding more than one certificate is refused on load', async () => {
      const stored = ca.exportEncrypted('pw');
      const other = await CertificateAuthority.create();
      await rejectsWithCode(CertificateAuthority.load({ ...stored, certPem: stored.certPem + other.certPem }, 'pw'), 'CA_CERT_INVALID');
    });

    void test('a leaf certificate cannot be loaded as the CA', async () => {
      const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const issued = await ca.issue({ type: 'control-plane', identity: { name: 'cp' }, publicKeyPem: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString() });
      const encryptedKeyPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString();
      await rejectsWithCode(CertificateAuthority.load({ certPem: issued.certPem, encryptedKeyPem }, 'pw'), 'CA_CERT_INVALID');
    });

    void test('the key never shows in JSON or inspection of the CA object', () => {
      const pem = createPrivateKey({ key: ca.exportEncrypted('pw').encryptedKeyPem, passphrase: 'pw' }).export({ type: 'pkcs8', format: 'der' }).toString('base64').slice(30, 60);
      for (const text of [JSON.stringify(ca), inspect(ca, { depth: 5, showHidden: true })]) {
        assert.doesNotMatch(text, /PRIVATE KEY/);
        assert.ok(!text.includes(pem));
      }
    });
  });

  void describe('issue', () => {
    for (const type of CERT_TYPES) {
      void test(`a ${type} certificate carries its identity URIs, its type marker and usages, and the default lifetime`, async () => {
        const issued = await issueKeyAndCert(ca, { type, identity: identityFor(type) });
        const c = new X509Certificate(issued.certPem);
        const standard = ['trust', 'device', 'connector'].includes(type) ? [EKU_CLIENT_AUTH] : [EKU_SERVER_AUTH, EKU_CLIENT_AUTH];
        assert.deepEqual(c.keyUsage, [...standard, TYPE_MARKER_OID[type]]);
        const id = identityFor(type);
        const uris = type === 'trust' ? `URI:causeway://user/${id.user}, URI:causeway://device/${id.device}` : type === 'device' ? `URI:causeway://device/${id.device}` : `URI:causeway://${type}/${id.name}`;
        assert.equal(c.subjectAltName, uris);
        const cn = type === 'trust' ? 'alice@laptop-1' : (id.device ?? id.name);
        assert.equal(c.subject, `O=Causeway\nOU=${type}\nCN=${cn}`);
        assert.equal(c.ca, false);
        assert.equal(c.signatureAlgorithm, 'ecdsa-with-SHA256');
        assert.equal(c.validFromDate.getTime(), now - 5 * MINUTE);
        assert.equal(c.validToDate.getTime(), now + DEFAULT_LIFETIME_MS[type]);
        assert.equal(issued.notAfter.getTime(), c.validToDate.getTime());
        assert.equal(issued.serial, c.serialNumber);
        assert.match(issued.serial, /^[4-7][0-9A-F]{31}$/);
        assert.ok(c.checkIssued(ca.certificate) && c.verify(ca.certificate.publicKey));
      });
    }

    void test('issued certificates pass openssl verify for their TLS purposes and carry SKI, AKI and critical constraints', async () => {
      const edge = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' }, dnsNames: ['edge.example.com'], ipAddresses: ['127.0.0.1', '::1'] });
      const trust = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
      const caFile = join(dir, 'ca.pem');
      await writeFile(caFile, ca.certPem);
      const edgeFile = join(dir, 'edge.pem');
      await writeFile(edgeFile, edge.certPem);
      const trustFile = join(dir, 'trust.pem');
      await writeFile(trustFile, trust.certPem);
      const at = String(Math.floor(now / 1000));
      await run('openssl', ['verify', '-attime', at, '-CAfile', caFile, '-purpose', 'sslserver', edgeFile]);
      await run('openssl', ['verify', '-attime', at, '-CAfile', caFile, '-purpose', 'sslclient', edgeFile]);
      await run('openssl', ['verify', '-attime', at, '-CAfile', caFile, '-purpose', 'sslclient', trustFile]);
      await assert.rejects(run('openssl', ['verify', '-attime', at, '-CAfile', caFile, '-purpose', 'sslserver', trustFile]));
      const text = await opensslText(dir, edge.certPem);
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\n/);
      assert.match(text, /DNS:edge\.example\.com, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, URI:causeway:\/\/access-tier\/edge-1/);
      const ski = /X509v3 Subject Key Identifier:\s+([0-9A-F:]+)/.exec(await opensslText(dir, ca.certPem))?.[1];
      assert.ok(ski);
      assert.match(text, new RegExp(`X509v3 Authority Key Identifier:\\s+(keyid:)?${ski}`));
      assert.equal(new X509Certificate(edge.certPem).checkHost('edge.example.com'), 'edge.example.com');
      assert.equal(new X509Certificate(edge.certPem).checkIP('::1'), '::1');
    });

    void test('IPv6 SANs name the right address in every textual form, IPv4-mapped ones included', async () => {
      const ipAddresses = ['::ffff:10.1.2.3', '2001:DB8::1', '::', 'fe80:0:0:0:0:0:0:1', '::1.2.3.4'];
      const out = await issueKeyAndCert(ca, { type: 'kube-proxy', identity: { name: 'kp' }, ipAddresses });
      const c = new X509Certificate(out.certPem);
      for (const ip of ipAddresses) assert.equal(c.checkIP(ip), ip, ip);
      assert.equal(c.checkIP('::ffff:a'), undefined);
      assert.match(c.subjectAltName ?? '', /IP Address:0:0:0:0:0:FFFF:A01:203, IP Address:2001:DB8:0:0:0:0:0:1, IP Address:0:0:0:0:0:0:0:0, IP Address:FE80:0:0:0:0:0:0:1, IP Address:0:0:0:0:0:0:102:304,/);
    });

    void test('serials are unique', async () => {
      const { publicKeyPem } = await generateKeyPair();
      const serials = new Set<string>();
      for (let i = 0; i < 200; i++) serials.add((await ca.issue({ type: 'device', identity: { device: 'd' }, publicKeyPem })).serial);
      assert.equal(serials.size, 200);
    });

    void describe('lifetimes', () => {
      void test('a trust certificate may live from 5 minutes to 24 hours', async () => {
        const { publicKeyPem } = await generateKeyPair();
        const trust = (lifetimeMs: number) => ca.issue({ type: 'trust', identity: { user: 'u', device: 'd' }, publicKeyPem, lifetimeMs });
        assert.equal((await trust(5 * MINUTE)).notAfter.getTime(), now + 5 * MINUTE);
        assert.equal((await trust(24 * HOUR)).notAfter.getTime(), now + 24 * HOUR);
        for (const bad of [4 * MINUTE, 24 * HOUR + 1000, 0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
          const err = await rejectsWithCode(trust(bad), 'CERT_LIFETIME_OUT_OF_RANGE');
          assert.match(err.message, /between 5 minutes and 24 hours/);
        }
      });

      void test('no certificate outlives the CA', async () => {
        const shortCa = await CertificateAuthority.create({ lifetimeDays: 2, clock });
        const device = await issueKeyAndCert(shortCa, { type: 'device', identity: { device: 'd' } });
        assert.equal(device.notAfter.getTime(), shortCa.notAfter.getTime());
      });

      void test('an expired CA issues nothing', async () => {
        let t = now;
        const shortCa = await CertificateAuthority.create({ lifetimeDays: 1, clock: { now: () => t } });
        t = now + 2 * DAY;
        await rejectsWithCode(issueKeyAndCert(shortCa, { type: 'device', identity: { device: 'd' } }), 'CA_EXPIRED');
      });
    });

    void describe('what the issuer refuses', () => {
      const pub = async (): Promise<string> => (await generateKeyPair()).publicKeyPem;

      void test('an identity that does not fit the type', async () => {
        const publicKeyPem = await pub();
        await rejectsWithCode(ca.issue({ type: 'trust', identity: { user: 'u' }, publicKeyPem }), 'CERT_BAD_IDENTITY');
        await rejectsWithCode(ca.issue({ type: 'connector', identity: { user: 'u' }, publicKeyPem }), 'CERT_BAD_IDENTITY');
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'a/b' }, publicKeyPem }), 'CERT_BAD_IDENTITY');
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'x y' }, publicKeyPem }), 'CERT_BAD_IDENTITY');
        await rejectsWithCode(ca.issue({ type: 'kube-proxy', identity: { name: 'kp%2F' }, publicKeyPem }), 'CERT_BAD_IDENTITY');
      });

      void test('an unknown type', async () => {
        await rejectsWithCode(ca.issue({ type: 'admin' as CertType, identity: { name: 'x' }, publicKeyPem: await pub() }), 'CERT_BAD_TYPE');
      });

      void test('bad DNS names and IP addresses', async () => {
        const publicKeyPem = await pub();
        for (const dnsNames of [['a..b'], ['-a.com'], ['a b'], ['x'.repeat(64) + '.com'], ['a.com/evil']]) {
          await rejectsWithCode(ca.issue({ type: 'kube-proxy', identity: { name: 'kp' }, publicKeyPem, dnsNames }), 'CERT_BAD_NAME');
        }
        for (const ipAddresses of [['1.2.3'], ['fe80::1%eth0'], ['localhost'], ['01.2.3.4']]) {
          await rejectsWithCode(ca.issue({ type: 'kube-proxy', identity: { name: 'kp' }, publicKeyPem, ipAddresses }), 'CERT_BAD_NAME');
        }
      });

      void test('neither or both of a public key and a CSR', async () => {
        const keys = await generateKeyPair();
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' } }), 'CERT_NO_KEY');
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, publicKeyPem: keys.publicKeyPem, csrPem: await createCsr(keys) }), 'CERT_NO_KEY');
      });

      void test('a private key sent in place of the public key', async () => {
        const keys = await generateKeyPair();
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, publicKeyPem: keys.privateKeyPem }), 'CERT_BAD_PUBLIC_KEY');
      });

      void test('CA-07 an RSA-1024 public key or CSR, and keys on other curves or algorithms', async () => {
        const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
        const spki = (k: { publicKey: KeyObject }): string => k.publicKey.export({ type: 'spki', format: 'pem' }).toString();
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, publicKeyPem: spki(rsa1024) }), 'CERT_WEAK_KEY');
        const keyFile = join(dir, 'rsa1024.key');
        await writeFile(keyFile, rsa1024.privateKey.export({ type: 'pkcs8', format: 'pem' }));
        const csr = (await run('openssl', ['req', '-new', '-key', keyFile, '-subj', '/CN=weak', '-sha256'])).stdout;
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, csrPem: csr }), 'CERT_WEAK_KEY');
        for (const weak of [generateKeyPairSync('ed25519'), generateKeyPairSync('ec', { namedCurve: 'secp256k1' }), generateKeyPairSync('ec', { namedCurve: 'prime192v1' })]) {
          await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, publicKeyPem: spki(weak) }), 'CERT_WEAK_KEY');
        }
      });

      void test('CA-07 a CSR signed with SHA-1', async () => {
        const keys = await generateKeyPair();
        const keyFile = join(dir, 'p256.key');
        await writeFile(keyFile, keys.privateKeyPem);
        const csr = (await run('openssl', ['req', '-new', '-key', keyFile, '-subj', '/CN=old', '-sha1'])).stdout;
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, csrPem: csr }), 'CERT_WEAK_KEY');
      });

      void test('a CSR whose signature does not verify (no proof of possession)', async () => {
        const victim = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const attackerSigner = signerFor(attacker.privateKey);
        const forged = await x509.Pkcs10CertificateRequestGenerator.create({
          name: utf8Name([[NAME_OID.commonName, 'x']]), keys: { publicKey: verifierFor(victim.publicKey), privateKey: attackerSigner.key }, signingAlgorithm: attackerSigner.algorithm,
        });
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, csrPem: toPem(forged.rawData, 'CERTIFICATE REQUEST') }), 'CSR_INVALID');
        const good = await createCsr(await generateKeyPair());
        const raw = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
        raw[raw.length - 40] = (raw[raw.length - 40]) ^ 0x01;
        await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, csrPem: toPem(raw, 'CERTIFICATE REQUEST') }), 'CSR_INVALID');
      });

      void test('garbage, truncated and oversized CSRs', async () => {
        const good = await createCsr(await generateKeyPair());
        const raw = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
        const bad = [
          'not a csr',
          toPem(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), 'CERTIFICATE REQUEST'),
          toPem(raw.subarray(0, raw.length - 10), 'CERTIFICATE REQUEST'),
          toPem(Buffer.concat([raw, Buffer.from([0])]), 'CERTIFICATE REQUEST'),
          good + good,
          toPem(Buffer.alloc(40_000, 0x30), 'CERTIFICATE REQUEST'),
        ];
        for (const csrPem of bad) await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, csrPem }), 'CSR_INVALID');
      });
      void test('a request without its own PEM block (bare base64 or hex, another label) is refused, though a parser might guess it', async () => {
        const good = await createCsr(await generateKeyPair());
        const raw = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
        for (const csrPem of [raw.toString('base64'), raw.toString('hex'), good.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST')]) {
          await rejectsWithCode(ca.issue({ type: 'device', identity: { device: 'd' }, csrPem }), 'CSR_INVALID');
        }
      });
    });

    void test('CA-04 a CSR asking for extra SANs, CA:true, another identity and a longer lifetime gets none of it', async () => {
      const keys = await generateKeyPair();
      const keyFile = join(dir, 'greedy.key');
      await writeFile(keyFile, keys.privateKeyPem);
      const opensslCsr = (await run('openssl', [
        'req', '-new', '-key', keyFile, '-subj', '/O=Causeway/OU=control-plane/CN=admin',
        '-addext', 'subjectAltName=URI:causeway://user/admin,URI:causeway://control-plane/cp,DNS:evil.example.com,IP:10.0.0.1',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', `extendedKeyUsage=serverAuth,clientAuth,${TYPE_MARKER_OID['control-plane']}`,
      ])).stdout;
      // @peculiar/x509 adds what openssl's command line cannot: a privateKeyUsagePeriod ten years out
      // (its value, SEQUENCE { notAfter [1] IMPLICIT GeneralizedTime }, written out by hand).
      const key = createPrivateKey(keys.privateKeyPem);
      const signer = signerFor(key);
      const notAfter2045 = Buffer.from('20451231235959Z', 'latin1');
      const usagePeriod = new x509.Extension('2.5.29.16', false, Buffer.concat([Buffer.from([0x30, notAfter2045.length + 2, 0x81, notAfter2045.length]), notAfter2045]));
      const craftedCsr = toPem((await x509.Pkcs10CertificateRequestGenerator.create({
        name: utf8Name([[NAME_OID.commonName, 'root']]),
        keys: { privateKey: signer.key, publicKey: verifierFor(createPublicKey(key)) },
        signingAlgorithm: signer.algorithm,
        extensions: [
          new x509.BasicConstraintsExtension(true, 5, true), new x509.ExtendedKeyUsageExtension([EKU_SERVER_AUTH, TYPE_MARKER_OID['access-tier']]),
          subjectAltName({ uris: ['causeway://access-tier/edge-1'], dnsNames: ['*.example.com'] }), usagePeriod,
        ],
      })).rawData, 'CERTIFICATE REQUEST');

      for (const csrPem of [opensslCsr, craftedCsr]) {
        const issued = await ca.issue({ type: 'trust', identity: { user: 'mallory', device: 'm-laptop' }, csrPem });
        const c = new X509Certificate(issued.certPem);
        assert.equal(c.subjectAltName, 'URI:causeway://user/mallory, URI:causeway://device/m-laptop');
        assert.equal(c.subject, 'O=Causeway\nOU=trust\nCN=mallory@m-laptop');
        assert.equal(c.ca, false);
        assert.deepEqual(c.keyUsage, [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust]);
        assert.equal(c.validToDate.getTime(), now + 8 * HOUR);
        assert.ok(c.publicKey.equals(createPublicKey(keys.publicKeyPem)), 'the CSR key is the one certified');
        const text = await opensslText(dir, issued.certPem);
        assert.doesNotMatch(text, /Private Key Usage Period|evil|admin|10\.0\.0\.1/);
      }
    });

    void test('a CSR from an RSA-2048 or P-384 key is accepted', async () => {
      for (const pair of [generateKeyPairSync('rsa', { modulusLength: 2048 }), generateKeyPairSync('ec', { namedCurve: 'P-384' })]) {
        const csrPem = await createCsr({ privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString() });
        const issued = await ca.issue({ type: 'device', identity: { device: 'd' }, csrPem });
        assert.ok(new X509Certificate(issued.certPem).publicKey.equals(pair.publicKey));
      }
    });

    void test('issueKeyAndCert returns a matching key, certificate and CA', async () => {
      const out = await issueKeyAndCert(ca, { type: 'kube-proxy', identity: { name: 'kp' }, dnsNames: ['kube.example.com'] });
      const c = new X509Certificate(out.certPem);
      assert.ok(c.checkPrivateKey(createPrivateKey(out.keyPem)));
      assert.equal(out.caPem, ca.certPem);
      assert.equal(out.serial, c.serialNumber);
      assert.match(out.keyPem, /^-----BEGIN PRIVATE KEY-----/);
    });
  });
});
