import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CertificateAuthority, issueKeyAndCert } from '../pki/index.ts';
import type { CertType } from '../pki/index.ts';
import { caPinOf, credentialsFrom, enroll, parseCaPin } from './enroll.ts';
import { renewalDue } from './renew.ts';
import type { ControlPlaneFetch, ControlPlaneRequest } from './transport.ts';
import { controlPlaneUrl } from './transport.ts';

// The client's checks on canned answers; the real exchange is in src/control-plane/enroll/enroll.test.ts.

let ca: CertificateAuthority;
let otherCa: CertificateAuthority;

before(async () => {
  ca = await CertificateAuthority.create();
  otherCa = await CertificateAuthority.create();
});

/** A control plane that answers the CA with `caPem` and issues with `issuer` as `type` for the CSR it gets. */
function cannedControlPlane(o: { caPem?: string; issuer?: () => CertificateAuthority; type?: CertType; status?: number; keyFromElsewhere?: boolean }): { fetch: ControlPlaneFetch; requests: ControlPlaneRequest[] } {
  const requests: ControlPlaneRequest[] = [];
  const fetch: ControlPlaneFetch = async (req) => {
    requests.push(req);
    if (req.path === '/api/v1/ca') return { status: 200, body: { certPem: o.caPem ?? ca.certPem, pin: 'ignored', notAfter: '' } };
    if (o.status !== undefined && o.status !== 200) return { status: o.status, body: { error: { code: 'X', message: 'canned' } } };
    const issuer = (o.issuer ?? (() => ca))();
    const csr = (req.body as { csr: string }).csr;
    const issued = o.keyFromElsewhere === true
      ? await issueKeyAndCert(issuer, { type: o.type ?? 'access-tier', identity: { name: 'edge-1' } })
      : await issuer.issue({ type: o.type ?? 'access-tier', identity: { name: 'edge-1' }, csrPem: csr });
    return { status: 200, body: { certPem: issued.certPem, caPem: issuer.certPem, notAfter: issued.notAfter.toISOString(), name: 'edge-1', serial: issued.serial } };
  };
  return { fetch, requests };
}

const base = { controlPlaneUrl: 'https://cp.example.com:8440', joinToken: 'token-1', kind: 'access-tier' as const };

void describe('enroll (client side)', () => {
  void test('accepts an answer for its own key, of its kind, from the pinned CA; the CSR and token go only over TLS pinned to that CA', async () => {
    const { fetch, requests } = cannedControlPlane({});
    const creds = await enroll({ ...base, caPin: caPinOf(ca.certPem), fetch });
    assert.deepEqual([creds.kind, creds.name], ['access-tier', 'edge-1']);
    assert.deepEqual(requests.map((r) => [r.path, r.tls === 'discovery' ? 'discovery' : r.tls.caPem === ca.certPem]), [['/api/v1/ca', 'discovery'], ['/api/v1/enroll', true]]);
    assert.ok(!JSON.stringify(requests[1].body).includes('PRIVATE KEY'), 'the key never leaves');
  });

  void test('a pin in upper case works; a malformed pin is a UserError', () => {
    const pin = caPinOf(ca.certPem);
    assert.equal(parseCaPin(pin.toUpperCase().replace('SHA256', 'sha256')).length, 32);
    for (const bad of ['', 'sha256:', 'sha1:abcd', `md5:${pin.slice(7)}`, `${pin}00`, pin.slice(7)]) assert.throws(() => parseCaPin(bad), { code: 'CA_PIN_INVALID' });
  });

  void test('refuses a CA that does not match the pin, or that is not a CA at all', async () => {
    await assert.rejects(enroll({ ...base, caPin: caPinOf(ca.certPem), fetch: cannedControlPlane({ caPem: otherCa.certPem }).fetch }), { code: 'CA_PIN_MISMATCH' });
    const leaf = await issueKeyAndCert(ca, { type: 'control-plane', identity: { name: 'control-plane' } });
    await assert.rejects(enroll({ ...base, caPin: caPinOf(leaf.certPem), fetch: cannedControlPlane({ caPem: leaf.certPem }).fetch }), { code: 'CA_PIN_MISMATCH' });
  });

  void test('refuses an answer of another kind, for another key, or from another CA', async () => {
    const pin = caPinOf(ca.certPem);
    for (const o of [{ type: 'connector' as const }, { keyFromElsewhere: true }, { issuer: () => otherCa }]) {
      await assert.rejects(enroll({ ...base, caPin: pin, fetch: cannedControlPlane(o).fetch }), { code: 'ENROLL_BAD_ANSWER' }, JSON.stringify(o));
    }
  });

  void test('a refused token is a UserError; a busy or broken control plane is retryable', async () => {
    const pin = caPinOf(ca.certPem);
    await assert.rejects(enroll({ ...base, caPin: pin, fetch: cannedControlPlane({ status: 401 }).fetch }), { code: 'JOIN_TOKEN_INVALID', retryable: false });
    await assert.rejects(enroll({ ...base, caPin: pin, fetch: cannedControlPlane({ status: 429 }).fetch }), { code: 'RATE_LIMITED', retryable: true });
    await assert.rejects(enroll({ ...base, caPin: pin, fetch: cannedControlPlane({ status: 503 }).fetch }), { code: 'ENROLL_FAILED', retryable: true });
    await assert.rejects(enroll({ ...base, joinToken: '  ', caPin: pin, fetch: cannedControlPlane({}).fetch }), { code: 'JOIN_TOKEN_MISSING' });
  });

  void test('credentialsFrom refuses a key that does not belong to the certificate and a certificate of another kind', async () => {
    const a = await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } });
    const b = await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } });
    assert.equal(credentialsFrom(a, 'connector').name, 'dc1');
    assert.throws(() => credentialsFrom({ ...a, keyPem: b.keyPem }, 'connector'), { code: 'CREDENTIALS_INVALID' });
    assert.throws(() => credentialsFrom(a, 'access-tier'), { code: 'CREDENTIALS_INVALID' });
  });

  void test('renewal is due two thirds into the lifetime', () => {
    assert.equal(renewalDue({ notBefore: new Date(0), notAfter: new Date(3000) }), 2000);
    assert.equal(renewalDue({ notBefore: new Date(1000), notAfter: new Date(2000) }, 0.5), 1500);
  });

  void test('the control plane URL must be https without credentials; a path prefix is kept', () => {
    assert.equal(controlPlaneUrl('https://cp.example.com:8440/causeway/', '/api/v1/ca').href, 'https://cp.example.com:8440/causeway/api/v1/ca');
    for (const bad of ['http://cp.example.com', 'https://user:pw@cp.example.com', 'cp.example.com']) assert.throws(() => controlPlaneUrl(bad, '/x'), { code: 'CONTROL_PLANE_URL_INVALID' });
  });
});
