/**
 * Measurements, not assertions about speed: the machine is shared and noisy (DESIGN.md §7). Each run
 * reports microseconds per operation as test diagnostics; the assertions only check that every
 * measured operation did its job.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { CertificateAuthority, issueKeyAndCert } from './authority.ts';
import { checkPeerCertificate } from './check.ts';
import { createCsr, generateKeyPair } from './keys.ts';

async function timeEach(n: number, fn: (i: number) => unknown): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < n; i++) await fn(i);
  return ((performance.now() - start) * 1000) / n;
}

const fmt = (us: number): string => `${us.toFixed(1)} µs/op`;

void test('measures issue() and checkPeerCertificate() over 1000 iterations each', async (t) => {
  const ca = await CertificateAuthority.create();
  const keys = await generateKeyPair();
  const csrPem = await createCsr(keys);
  const serials = new Set<string>();

  const issuePub = await timeEach(1000, async () => {
    serials.add((await ca.issue({ type: 'trust', identity: { user: 'alice', device: 'laptop-1' }, publicKeyPem: keys.publicKeyPem })).serial);
  });
  const issueCsr = await timeEach(1000, async () => {
    serials.add((await ca.issue({ type: 'trust', identity: { user: 'alice', device: 'laptop-1' }, csrPem })).serial);
  });
  const issueWithKey = await timeEach(200, async () => {
    serials.add((await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } })).serial);
  });
  assert.equal(serials.size, 2200);

  const issued = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
  const raw = new X509Certificate(issued.certPem).raw;
  const parsed = new X509Certificate(raw);
  const revoked = new Set(['00']);
  let accepted = 0;
  const count = (ok: boolean): void => {
    if (ok) accepted++;
  };
  const checkOnly = await timeEach(1000, () => count(checkPeerCertificate(parsed, 'trust', { isRevoked: (s) => (revoked.has(s) ? 'revoked' : undefined) }).ok));
  // What the access tier pays per connection: a fresh native object from the socket, then the check.
  const parseAndCheck = await timeEach(1000, () => count(checkPeerCertificate(new X509Certificate(raw), 'trust').ok));
  const withChain = await timeEach(1000, () => count(checkPeerCertificate(new X509Certificate(raw), 'trust', { trustedCas: [ca.certificate] }).ok));
  assert.equal(accepted, 3000);

  t.diagnostic(`issue() from a public key: ${fmt(issuePub)}`);
  t.diagnostic(`issue() from a CSR: ${fmt(issueCsr)}`);
  t.diagnostic(`issueKeyAndCert() (P-256 key generation included): ${fmt(issueWithKey)}`);
  t.diagnostic(`checkPeerCertificate() on a parsed certificate: ${fmt(checkOnly)}`);
  t.diagnostic(`new X509Certificate(raw) + checkPeerCertificate(): ${fmt(parseAndCheck)}`);
  t.diagnostic(`... with trustedCas (checkIssued + signature verify): ${fmt(withChain)}`);
});
