import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { CertificateAuthority, issueKeyAndCert } from './authority.ts';
import { checkPeerCertificate } from './check.ts';
import type { PeerCheck } from './check.ts';
import { forgeCertificate } from './forge.testing.ts';
import { NAME_OID, signerFor, toPem, utf8Name, verifierFor, x509 } from './x509.ts';
import { CERT_TYPES, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, TYPE_MARKER_OID } from './types.ts';
import type { CertIdentity, CertType } from './types.ts';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

function identityFor(type: CertType): CertIdentity {
  if (type === 'trust') return { user: 'alice', device: 'laptop-1' };
  if (type === 'device') return { device: 'laptop-1' };
  return { name: `${type}-1` };
}

function failure(result: PeerCheck): { code: string; message: string } {
  assert.equal(result.ok, false, 'expected the certificate to be refused');
  return result;
}

void describe('checkPeerCertificate', () => {
  let ca: CertificateAuthority;
  const certs = new Map<CertType, X509Certificate>();

  before(async () => {
    ca = await CertificateAuthority.create();
    for (const type of CERT_TYPES) {
      const issued = await issueKeyAndCert(ca, { type, identity: identityFor(type) });
      certs.set(type, new X509Certificate(issued.certPem));
    }
  });
  const cert = (type: CertType): X509Certificate => certs.get(type) as X509Certificate;

  void test('AT-01 no certificate is cert-missing', () => {
    assert.equal(failure(checkPeerCertificate(undefined, 'trust')).code, 'cert-missing');
  });

  void test('accepts a trust certificate and reports its user, device, serial, validity and fingerprint', () => {
    const c = cert('trust');
    const result = checkPeerCertificate(c, 'trust', { trustedCas: [ca.certificate] });
    assert.ok(result.ok, JSON.stringify(result));
    assert.deepEqual(result.identity, {
      user: 'alice', device: 'laptop-1', type: 'trust', serial: c.serialNumber,
      notBefore: c.validFromDate, notAfter: c.validToDate, fingerprint256: c.fingerprint256,
    });
  });

  void test('accepts each type where that type is expected, alone or in a list', () => {
    for (const type of CERT_TYPES) {
      const alone = checkPeerCertificate(cert(type), type);
      assert.ok(alone.ok, `${type}: ${JSON.stringify(alone)}`);
      assert.equal(alone.identity.type, type);
      assert.deepEqual({ user: alone.identity.user, device: alone.identity.device, name: alone.identity.name }, { user: undefined, device: undefined, name: undefined, ...identityFor(type) });
      const listed = checkPeerCertificate(cert(type), ['device', type]);
      assert.ok(listed.ok);
    }
  });

  void test('CA-03 every type presented as every other type is refused', () => {
    for (const presented of CERT_TYPES) {
      for (const expected of CERT_TYPES) {
        if (presented === expected) continue;
        const result = failure(checkPeerCertificate(cert(presented), expected));
        assert.equal(result.code, 'cert-wrong-type', `${presented} as ${expected}`);
        assert.match(result.message, new RegExp(`a ${presented} certificate was presented where ${expected} is required`));
      }
    }
  });

  void test('CA-03 a certificate without a type marker (only standard usages) is refused as the wrong type', async () => {
    const plain = await forgeCertificate({ ca, ekus: [EKU_SERVER_AUTH, EKU_CLIENT_AUTH], uris: ['causeway://access-tier/edge-1'] });
    assert.equal(failure(checkPeerCertificate(new X509Certificate(plain.certPem), 'access-tier')).code, 'cert-wrong-type');
    const noEku = await forgeCertificate({ ca, uris: ['causeway://access-tier/edge-1'] });
    assert.equal(failure(checkPeerCertificate(new X509Certificate(noEku.certPem), 'access-tier')).code, 'cert-wrong-type');
  });

  void test('CA-03 a certificate carrying two type markers is malformed, even when one is expected', async () => {
    const both = await forgeCertificate({ ca, ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.connector, TYPE_MARKER_OID['access-tier']], uris: ['causeway://connector/dc1'] });
    for (const expected of ['connector', 'access-tier'] as const) {
      assert.equal(failure(checkPeerCertificate(new X509Certificate(both.certPem), expected)).code, 'cert-malformed');
    }
  });

  void test('CN-01 a connector marker with an access-tier name URI is malformed', async () => {
    const mixed = await forgeCertificate({ ca, ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.connector], uris: ['causeway://access-tier/edge-1'] });
    assert.equal(failure(checkPeerCertificate(new X509Certificate(mixed.certPem), 'connector')).code, 'cert-malformed');
  });

  void test('a certificate claiming CA:true is never accepted as a peer', async () => {
    const caLeaf = await forgeCertificate({ ca, isCa: true, ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust], uris: ['causeway://user/alice', 'causeway://device/laptop-1'] });
    assert.equal(failure(checkPeerCertificate(new X509Certificate(caLeaf.certPem), 'trust')).code, 'cert-malformed');
    assert.equal(failure(checkPeerCertificate(ca.certificate, 'trust')).code, 'cert-malformed');
  });

  void test('CA-07 an RSA CA signing with SHA-1 is refused, and with SHA-2 accepted', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const signer = signerFor(privateKey);
    const caCert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '42', name: utf8Name([[NAME_OID.commonName, 'RSA CA']]), notBefore: new Date(Date.now() - HOUR), notAfter: new Date(Date.now() + HOUR),
      keys: { privateKey: signer.key, publicKey: verifierFor(publicKey) }, signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(publicKey.export({ type: 'spki', format: 'der' })),
      ],
    });
    const encryptedKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString();
    const rsaCa = await CertificateAuthority.load({ certPem: toPem(caCert.rawData, 'CERTIFICATE'), encryptedKeyPem }, 'pw');
    for (const [hash, ok] of [['sha1', false], ['sha256', true], ['sha384', true], ['sha512', true]] as const) {
      const leaf = await forgeCertificate({ ca: rsaCa, hash, ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.device], uris: ['causeway://device/d1'] });
      assert.equal(checkPeerCertificate(new X509Certificate(leaf.certPem), 'device', { trustedCas: [rsaCa.certificate] }).ok, ok, hash);
    }
  });

  void test('CA-07 a SHA-1 signature is refused even from the trusted CA', async () => {
    const sha1 = await forgeCertificate({ ca, hash: 'sha1', ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust], uris: ['causeway://user/alice', 'causeway://device/laptop-1'] });
    const result = failure(checkPeerCertificate(new X509Certificate(sha1.certPem), 'trust', { trustedCas: [ca.certificate] }));
    assert.equal(result.code, 'cert-malformed');
    assert.match(result.message, /weak/);
  });

  void describe('CA-01 validity window', () => {
    void test('an expired certificate is refused, with no grace after notAfter', () => {
      const c = cert('trust');
      const after = c.validToDate.getTime() + 1000;
      const result = failure(checkPeerCertificate(c, 'trust', { now: after }));
      assert.equal(result.code, 'cert-expired');
      assert.ok(checkPeerCertificate(c, 'trust', { now: c.validToDate.getTime() }).ok, 'valid through its last second');
    });

    void test('a certificate not yet valid beyond the skew is refused', () => {
      const c = cert('trust');
      const result = failure(checkPeerCertificate(c, 'trust', { now: c.validFromDate.getTime() - 5 * MINUTE - 1000 }));
      assert.equal(result.code, 'cert-not-yet-valid');
    });

    void test('a certificate whose notBefore is 2 minutes ahead of the verifier is accepted', () => {
      const c = cert('trust');
      assert.ok(checkPeerCertificate(c, 'trust', { now: c.validFromDate.getTime() - 2 * MINUTE }).ok);
    });

    void test('the skew is configurable, down to none', () => {
      const c = cert('trust');
      const now = c.validFromDate.getTime() - 2 * MINUTE;
      assert.equal(failure(checkPeerCertificate(c, 'trust', { now, skewMs: 0 })).code, 'cert-not-yet-valid');
      assert.ok(checkPeerCertificate(c, 'trust', { now, skewMs: 3 * MINUTE }).ok);
    });

    void test('a certificate issued by a CA whose clock runs 3 minutes ahead is valid at once for the verifier', async () => {
      const ahead = await CertificateAuthority.load(ca.exportEncrypted('pw'), 'pw', { clock: { now: () => Date.now() + 3 * MINUTE } });
      const issued = await issueKeyAndCert(ahead, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
      assert.ok(checkPeerCertificate(new X509Certificate(issued.certPem), 'trust', { skewMs: 0 }).ok);
    });
  });

  void describe('CA-02 trusted CAs', () => {
    void test('a certificate from another CA with the same subject and issuer names is refused', async () => {
      const impostor = await CertificateAuthority.create();
      assert.equal(impostor.certificate.subject, ca.certificate.subject);
      const fake = await issueKeyAndCert(impostor, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
      const fakeCert = new X509Certificate(fake.certPem);
      assert.equal(fakeCert.issuer, cert('trust').issuer);
      const result = failure(checkPeerCertificate(fakeCert, 'trust', { trustedCas: [ca.certificate] }));
      assert.equal(result.code, 'cert-unknown-ca');
    });

    void test('an empty trust list trusts nothing', () => {
      assert.equal(failure(checkPeerCertificate(cert('trust'), 'trust', { trustedCas: [] })).code, 'cert-unknown-ca');
    });

    void test('CA-08 during a rotation both CAs are trusted, and after it only the new one', async () => {
      const next = await CertificateAuthority.create({ commonName: 'Causeway CA 2' });
      const fromNext = new X509Certificate((await issueKeyAndCert(next, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } })).certPem);
      const overlap = [ca.certificate, next.certificate];
      assert.ok(checkPeerCertificate(cert('trust'), 'trust', { trustedCas: overlap }).ok);
      assert.ok(checkPeerCertificate(fromNext, 'trust', { trustedCas: overlap }).ok);
      assert.equal(failure(checkPeerCertificate(cert('trust'), 'trust', { trustedCas: [next.certificate] })).code, 'cert-unknown-ca');
    });

    void test('a certificate is refused once its issuing CA has expired', async () => {
      let now = Date.now() - 2 * 24 * HOUR;
      const shortCa = await CertificateAuthority.create({ lifetimeDays: 1, clock: { now: () => now } });
      const leaf = new X509Certificate((await issueKeyAndCert(shortCa, { type: 'device', identity: { device: 'laptop-1' } })).certPem);
      now = Date.now();
      // The leaf was capped at the CA's notAfter, so both are over; the CA is reported first.
      assert.ok(leaf.validToDate.getTime() <= shortCa.notAfter.getTime());
      assert.equal(failure(checkPeerCertificate(leaf, 'device', { trustedCas: [shortCa.certificate] })).code, 'cert-unknown-ca');
    });
  });

  void describe('CA-06 revocation', () => {
    void test('isRevoked sees the serial and identity, and its reason refuses the certificate', () => {
      const c = cert('trust');
      const seen: Array<[string, string | undefined]> = [];
      const result = failure(checkPeerCertificate(c, 'trust', {
        isRevoked: (serial, id) => {
          seen.push([serial, id.device]);
          return id.device === 'laptop-1' ? 'device revoked' : undefined;
        },
      }));
      assert.equal(result.code, 'cert-revoked');
      assert.match(result.message, /device revoked/);
      assert.deepEqual(seen, [[c.serialNumber, 'laptop-1']]);
    });

    void test('a certificate not on the list is accepted', () => {
      assert.ok(checkPeerCertificate(cert('connector'), 'connector', { isRevoked: () => undefined }).ok);
    });

    void test('a revocation check that throws fails closed', () => {
      const result = failure(checkPeerCertificate(cert('trust'), 'trust', {
        isRevoked: () => {
          throw new Error('store unavailable');
        },
      }));
      assert.equal(result.code, 'cert-revoked');
    });
  });

  void describe('malformed identities are refused', () => {
    const trustEkus = [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust];
    const cases: Array<{ name: string; uris?: string[]; dnsNames?: string[] }> = [
      { name: 'a trust certificate with no device', uris: ['causeway://user/alice'] },
      { name: 'a trust certificate with two users', uris: ['causeway://user/alice', 'causeway://user/bob', 'causeway://device/laptop-1'] },
      { name: 'a trust certificate that also names a connector', uris: ['causeway://user/alice', 'causeway://device/laptop-1', 'causeway://connector/dc1'] },
      { name: 'an unknown causeway URI kind', uris: ['causeway://user/alice', 'causeway://device/laptop-1', 'causeway://admin/root'] },
      { name: 'a percent-encoded slash in an id', uris: ['causeway://user/alice%2Fbob', 'causeway://device/laptop-1'] },
      { name: 'a path after the id', uris: ['causeway://user/alice/x', 'causeway://device/laptop-1'] },
      { name: 'an upper-case scheme', uris: ['CAUSEWAY://user/alice', 'causeway://device/laptop-1'] },
      { name: 'a URI smuggling a second name after a comma', uris: ['causeway://user/alice, URI:causeway://user/bob', 'causeway://device/laptop-1'] },
      { name: 'a causeway identity in a DNS name', uris: ['causeway://device/laptop-1'], dnsNames: ['causeway://user/alice'] },
      { name: 'no SANs at all', uris: [] },
    ];
    for (const c of cases) {
      void test(`${c.name} is cert-malformed`, async () => {
        const forged = await forgeCertificate({ ca, ekus: trustEkus, uris: c.uris ?? [], ...(c.dnsNames ? { dnsNames: c.dnsNames } : {}) });
        const result = failure(checkPeerCertificate(new X509Certificate(forged.certPem), 'trust', { trustedCas: [ca.certificate] }));
        assert.equal(result.code, 'cert-malformed', result.message);
      });
    }

    void test('a DNS name that merely contains "causeway" does not disturb the identity', async () => {
      const forged = await forgeCertificate({ ca, ekus: trustEkus, uris: ['causeway://user/alice', 'causeway://device/laptop-1'], dnsNames: ['causeway.example.com'] });
      assert.ok(checkPeerCertificate(new X509Certificate(forged.certPem), 'trust').ok);
    });
  });
});
