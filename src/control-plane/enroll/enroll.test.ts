import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { caPinOf, enroll, renewOnce, requestControlPlane, startRenewal } from '../../lib/enroll/index.ts';
import type { ControlPlaneFetch, EnrollKind, PeerCredentials } from '../../lib/enroll/index.ts';
import { CertificateAuthority, createCsr, generateKeyPair } from '../../lib/pki/index.ts';
import { startTestControlPlane } from '../stream/harness.testing.ts';
import type { TestControlPlane } from '../stream/harness.testing.ts';
import { enrollmentPlugin } from './index.ts';

const run = promisify(execFile);

async function joinToken(cp: TestControlPlane, kind: EnrollKind, name: string): Promise<{ token: string; caPin: string; command: string }> {
  const r = await cp.api('POST', '/api/v1/join-tokens', { kind, name });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body as { token: string; caPin: string; command: string };
}

async function postEnroll(cp: TestControlPlane, body: unknown): Promise<{ status: number; body: unknown }> {
  return requestControlPlane({ baseUrl: cp.url, path: '/api/v1/enroll', method: 'POST', body, tls: { caPem: cp.ca.certPem } });
}

void describe('enrollment', () => {
  let cp: TestControlPlane;
  let clockOffset = 0;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-enroll-'));
    // The CA's clock can be moved back, to issue certificates that are already expired.
    const ca = await CertificateAuthority.create({ commonName: 'causeway enroll test CA', clock: { now: () => Date.now() + clockOffset } });
    // Many tests here fail on purpose from one address: a larger bucket than the default (CP-12 has its own test).
    cp = await startTestControlPlane({ ca, plugins: [(app, o) => enrollmentPlugin(app, { ...o, failures: { burst: 1000 } })] });
  });
  after(async () => {
    await cp.close();
    await rm(dir, { recursive: true, force: true });
  });

  void test('an access tier enrolls with the join command: a certificate of its kind, named by the token, from the pinned CA, for a key made here', async () => {
    const { token, caPin, command } = await joinToken(cp, 'access-tier', 'edge-1');
    assert.ok(command.includes(caPin) && command.includes('--join-token'));
    const creds = await enroll({ controlPlaneUrl: cp.url, joinToken: token, kind: 'access-tier', caPin });
    assert.deepEqual([creds.kind, creds.name], ['access-tier', 'edge-1']);
    assert.equal(creds.caPem, cp.ca.certPem);
    const cert = new X509Certificate(creds.certPem);
    assert.ok(cert.checkIssued(cp.ca.certificate) && cert.verify(cp.ca.certificate.publicKey));
    assert.ok(cert.checkPrivateKey(await import('node:crypto').then((c) => c.createPrivateKey(creds.keyPem))));
    const lifetime = creds.notAfter.getTime() - creds.notBefore.getTime();
    assert.ok(lifetime > 23 * 3_600_000 && lifetime < 25 * 3_600_000, 'the default 24 h');
    const recorded = await cp.store.getCertificate(creds.serial);
    assert.deepEqual([recorded?.type, recorded?.identity], ['access-tier', 'causeway://access-tier/edge-1']);
    assert.notEqual((await cp.store.listJoinTokens()).find((t) => t.name === 'edge-1')?.usedAt, null);
  });

  void test('DT-06 a used, expired, other-kind or guessed join token gets one and the same 401', async () => {
    const csr = await createCsr(await generateKeyPair());
    const used = await joinToken(cp, 'connector', 'dc-used');
    assert.equal((await postEnroll(cp, { joinToken: used.token, kind: 'connector', csr })).status, 200);
    const expired = await cp.store.createJoinToken({ kind: 'connector', name: 'dc-expired', ttlMs: 1 }, { actor: 'test' });
    await new Promise((r) => setTimeout(r, 20));
    const otherKind = await joinToken(cp, 'kube-proxy', 'kp-1');
    const answers = [
      await postEnroll(cp, { joinToken: used.token, kind: 'connector', csr }),
      await postEnroll(cp, { joinToken: expired.token, kind: 'connector', csr }),
      await postEnroll(cp, { joinToken: otherKind.token, kind: 'connector', csr }),
      await postEnroll(cp, { joinToken: `${used.token.slice(0, -4)}AAAA`, kind: 'connector', csr }),
      await postEnroll(cp, { joinToken: 'x', kind: 'access-tier', csr }),
    ];
    for (const a of answers) {
      assert.equal(a.status, 401);
      assert.deepEqual(a.body, answers[0].body);
    }
    assert.equal((answers[0].body as { error: { code: string } }).error.code, 'JOIN_TOKEN_INVALID');
    const text = JSON.stringify(answers);
    for (const secret of [used.token, expired.token, otherKind.token]) assert.ok(!text.includes(secret), 'no token is echoed');
  });

  void test('CA-04 a CSR asking for another identity, extra SANs, CA:true or another kind gets none of it', async () => {
    const { token, caPin } = await joinToken(cp, 'connector', 'dc-honest');
    const key = path.join(dir, 'hostile.key');
    await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
    const { stdout: csr } = await run('openssl', [
      'req', '-new', '-key', key, '-sha256', '-subj', '/O=Causeway/OU=access-tier/CN=edge-evil',
      '-addext', 'subjectAltName=URI:causeway://access-tier/edge-evil,URI:causeway://user/admin,DNS:cp.example.com',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'extendedKeyUsage=serverAuth,clientAuth,1.3.6.1.4.1.59541.1.6',
    ]);
    const a = await postEnroll(cp, { joinToken: token, kind: 'connector', csr });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    const { certPem, name } = a.body as { certPem: string; name: string };
    assert.equal(name, 'dc-honest');
    const cert = new X509Certificate(certPem);
    assert.equal(cert.ca, false);
    assert.equal(cert.subjectAltName, 'URI:causeway://connector/dc-honest');
    assert.ok(cert.keyUsage?.includes('1.3.6.1.4.1.59541.1.4') && !cert.keyUsage.includes('1.3.6.1.4.1.59541.1.6') && !cert.keyUsage.includes('1.3.6.1.5.5.7.3.1'));
    assert.ok(!cert.subject.includes('edge-evil'));
    assert.ok(caPin.startsWith('sha256:'));
  });

  void test('a CSR without proof of possession is 400 and does not spend the token', async () => {
    const { token } = await joinToken(cp, 'connector', 'dc-retry');
    const good = await createCsr(await generateKeyPair());
    const der = Buffer.from(good.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
    der[der.length - 1] ^= 0x01; // the last byte of the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    const bad = await postEnroll(cp, { joinToken: token, kind: 'connector', csr: tampered });
    assert.equal(bad.status, 400);
    assert.equal((await postEnroll(cp, { joinToken: token, kind: 'connector', csr: good })).status, 200);
  });

  void test('a pin that does not match the control plane\'s CA is refused before the token is sent', async () => {
    const { token } = await joinToken(cp, 'access-tier', 'edge-pin');
    const other = await CertificateAuthority.create();
    const sent: string[] = [];
    const spy: ControlPlaneFetch = (req) => {
      sent.push(req.path);
      return requestControlPlane(req);
    };
    await assert.rejects(enroll({ controlPlaneUrl: cp.url, joinToken: token, kind: 'access-tier', caPin: caPinOf(other.certPem), fetch: spy }), { code: 'CA_PIN_MISMATCH' });
    assert.deepEqual(sent, ['/api/v1/ca']);
    await assert.rejects(enroll({ controlPlaneUrl: cp.url, joinToken: token, kind: 'access-tier', caPin: 'sha256:abc' }), { code: 'CA_PIN_INVALID' });
    assert.equal((await cp.store.listJoinTokens()).find((t) => t.name === 'edge-pin')?.usedAt, null);
  });

  void test('the client says what to do when the token is refused', async () => {
    const { caPin } = await joinToken(cp, 'connector', 'dc-unused');
    await assert.rejects(enroll({ controlPlaneUrl: cp.url, joinToken: 'wrong', kind: 'connector', caPin }), (err: Error & { code?: string }) => err.code === 'JOIN_TOKEN_INVALID' && /causeway join-token create connector/.test(err.message));
  });

  void test('renewal gives the same kind and name a new certificate for a new key; the old one keeps working until it expires', async () => {
    const { token, caPin } = await joinToken(cp, 'connector', 'dc-renew');
    const first = await enroll({ controlPlaneUrl: cp.url, joinToken: token, kind: 'connector', caPin });
    const second = await renewOnce({ controlPlaneUrl: cp.url, credentials: first });
    assert.deepEqual([second.kind, second.name], ['connector', 'dc-renew']);
    assert.notEqual(second.serial, first.serial);
    assert.notEqual(createPublicKey(second.keyPem).export({ format: 'pem', type: 'spki' }), createPublicKey(first.keyPem).export({ format: 'pem', type: 'spki' }));
    assert.equal((await cp.store.getCertificate(second.serial))?.identity, 'causeway://connector/dc-renew');
    const third = await renewOnce({ controlPlaneUrl: cp.url, credentials: first });
    assert.equal(third.name, 'dc-renew');
  });

  void test('CA-06 CA-01 CA-03 a revoked, an expired or a trust certificate cannot renew', async () => {
    const { token, caPin } = await joinToken(cp, 'access-tier', 'edge-revoked');
    const revoked = await enroll({ controlPlaneUrl: cp.url, joinToken: token, kind: 'access-tier', caPin });
    await cp.store.revokeCertificate(revoked.serial, { actor: 'test' });
    await assert.rejects(renewOnce({ controlPlaneUrl: cp.url, credentials: revoked }), { code: 'RENEW_REFUSED' });

    clockOffset = -24 * 3_600_000;
    const stale = await cp.issue('access-tier', { name: 'edge-old' }, 5 * 60_000);
    clockOffset = 0;
    const staleCert = new X509Certificate(stale.certPem);
    const expired: PeerCredentials = { certPem: stale.certPem, keyPem: stale.keyPem, caPem: cp.ca.certPem, kind: 'access-tier', name: 'edge-old', serial: stale.serial, notBefore: staleCert.validFromDate, notAfter: staleCert.validToDate };
    assert.ok(expired.notAfter.getTime() < Date.now());
    await assert.rejects(renewOnce({ controlPlaneUrl: cp.url, credentials: expired }), { code: 'RENEW_REFUSED' });

    const trust = await cp.issue('trust', { user: 'u1', device: 'd1' });
    const r = await requestControlPlane({ baseUrl: cp.url, path: '/api/v1/renew', method: 'POST', body: { csr: await createCsr(await generateKeyPair()) }, tls: trust });
    assert.equal(r.status, 401);
    assert.equal((r.body as { error: { code: string } }).error.code, 'PEER_CERT_REFUSED');
  });

  void test('startRenewal renews when two thirds of the lifetime have passed, hands the result over, and retries failures', async () => {
    const { token, caPin } = await joinToken(cp, 'connector', 'dc-auto');
    let current = await enroll({ controlPlaneUrl: cp.url, joinToken: token, kind: 'connector', caPin });
    const lifetime = current.notAfter.getTime() - current.notBefore.getTime();
    // A clock two thirds into the certificate's life: due now.
    const clock = { now: () => current.notBefore.getTime() + lifetime * 0.7 };
    let failures = 2;
    const flaky: ControlPlaneFetch = (req) => (failures-- > 0 ? Promise.reject(Object.assign(new Error('down'), { code: 'CONTROL_PLANE_UNREACHABLE', retryable: true })) : requestControlPlane(req));
    const errors: string[] = [];
    const renewed = new Promise<PeerCredentials>((resolve) => {
      const renewal = startRenewal({
        controlPlaneUrl: cp.url,
        current: () => current,
        onRenewed: (next) => {
          current = next;
          resolve(next);
          void renewal.close();
        },
        onError: (err) => errors.push(err.code),
        fetch: flaky,
        clock,
        retry: { initialMs: 10, maxMs: 20 },
      });
    });
    const next = await renewed;
    assert.equal(errors.length, 2);
    assert.equal(next.name, 'dc-auto');
    assert.equal(current, next);
  });

  void test('CP-12 repeated failures from one address are refused with 429 for a while, even with a good token', async () => {
    const limited = await startTestControlPlane({ plugins: [(app, o) => enrollmentPlugin(app, { ...o, failures: { burst: 3, refillPerSecond: 0.001 } })] });
    try {
      const csr = await createCsr(await generateKeyPair());
      for (let i = 0; i < 3; i++) assert.equal((await postEnroll(limited, { joinToken: `guess-${i}`, kind: 'connector', csr })).status, 401);
      const good = await joinToken(limited, 'connector', 'dc-late');
      const refused = await postEnroll(limited, { joinToken: good.token, kind: 'connector', csr });
      assert.equal(refused.status, 429);
      assert.equal((await limited.store.listJoinTokens()).find((t) => t.name === 'dc-late')?.usedAt, null, 'the good token was not spent');
    } finally {
      await limited.close();
    }
  });
});

void test('a CSR file written by openssl for an RSA-1024 key is refused as weak', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-enroll-weak-'));
  const cp = await startTestControlPlane({ plugins: [(app, o) => enrollmentPlugin(app, o)] });
  try {
    const key = path.join(dir, 'weak.key');
    await run('openssl', ['genrsa', '-out', key, '1024']);
    const { stdout: csr } = await run('openssl', ['req', '-new', '-key', key, '-subj', '/CN=weak', '-sha256']);
    await writeFile(path.join(dir, 'weak.csr'), csr);
    const { token } = await joinToken(cp, 'connector', 'dc-weak');
    const r = await postEnroll(cp, { joinToken: token, kind: 'connector', csr });
    assert.equal(r.status, 400);
    assert.equal((r.body as { error: { code: string } }).error.code, 'CERT_WEAK_KEY');
  } finally {
    await cp.close();
    await rm(dir, { recursive: true, force: true });
  }
});
