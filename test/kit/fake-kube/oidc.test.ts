/**
 * The fake API server's `oidc` option: bearer ID tokens verified against an issuer's discovery and
 * JWKS (src/lib/oidc), the way kube-apiserver's --oidc-* flags work; everything else is 401.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { idTokenClaims, startTestIssuer } from '../../../src/lib/oidc/test-issuer.testing.ts';
import type { TestIssuer } from '../../../src/lib/oidc/test-issuer.testing.ts';
import { makeServerCert, makeTestCa } from '../certs.ts';
import { kubectlBinaries, runKubectl, writeKubeconfig } from '../kubectl.ts';
import { startFakeKube } from './index.ts';
import type { FakeKube } from './index.ts';

let issuer: TestIssuer;
let kube: FakeKube;
let dir: string;
const AUDIENCE = 'kubernetes:prod';

before(async () => {
  const ca = await makeTestCa({ commonName: 'issuer CA' });
  const tls = await makeServerCert(ca, { ipAddresses: ['127.0.0.1'] });
  issuer = await startTestIssuer({ tls });
  await issuer.addKey('RS256');
  kube = await startFakeKube({ oidc: { issuer: issuer.issuer, audience: AUDIENCE, caPem: ca.certPem } });
  dir = await mkdtemp(path.join(tmpdir(), 'causeway-fake-kube-oidc-'));
});

after(async () => {
  await kube.close();
  await issuer.close();
  await rm(dir, { recursive: true, force: true });
});

function get(pathname: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${kube.url}${pathname}`, { ca: kube.caPem, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function token(overrides: Record<string, unknown> = {}): Promise<string> {
  return issuer.sign(idTokenClaims(issuer.issuer, AUDIENCE, Date.now(), overrides));
}

void describe('fake kube with bearer ID tokens (oidc option)', () => {
  void test('a valid ID token for the audience is accepted as its email and groups', async () => {
    kube.clearRequests();
    const res = await get('/api/v1/namespaces/default/pods', { authorization: `Bearer ${await token()}` });
    assert.equal(res.status, 200);
    assert.deepEqual(kube.requests[0]?.user, { user: 'ada@example.com', groups: ['eng', 'system:authenticated'] });
  });

  void test('OP-05 a token for another cluster, and no token, another scheme, a wrong issuer, an expired or forged token: 401 Status Unauthorized', async () => {
    const cases: Array<[string, Record<string, string>, string]> = [
      ['no token', {}, 'NO_TOKEN'],
      ['basic auth', { authorization: 'Basic YTpi' }, 'NOT_BEARER'],
      ['wrong audience', { authorization: `Bearer ${await token({ aud: 'kubernetes:staging' })}` }, 'TOKEN_AUDIENCE_MISMATCH'],
      ['wrong issuer', { authorization: `Bearer ${await token({ iss: 'https://elsewhere.example.com' })}` }, 'TOKEN_ISSUER_MISMATCH'],
      ['expired', { authorization: `Bearer ${await token({ exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 })}` }, 'TOKEN_EXPIRED'],
      ['garbage', { authorization: 'Bearer not.a.jwt' }, 'TOKEN_MALFORMED'],
    ];
    for (const [name, headers, code] of cases) {
      kube.clearRequests();
      const res = await get('/api/v1/namespaces/default/pods', headers);
      assert.equal(res.status, 401, name);
      const status = JSON.parse(res.body) as { kind: string; reason: string; code: number };
      assert.deepEqual([status.kind, status.reason, status.code], ['Status', 'Unauthorized', 401], name);
      assert.equal(kube.requests[0]?.user, undefined, name);
      assert.equal(kube.requests[0]?.authError, code, name);
    }
  });

  void test('real kubectl works with a valid token and says Unauthorized with a bad one', async () => {
    const [kubectl] = await kubectlBinaries();
    assert.ok(kubectl !== undefined, 'a kubectl to test with');
    const good = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem, token: await token(), fileName: 'good' });
    const ok = await runKubectl(kubectl.path, ['get', 'pods', '-o', 'name'], { kubeconfig: good });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^pod\/web-0$/m);
    const bad = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem, token: await token({ aud: 'other' }), fileName: 'bad' });
    const refused = await runKubectl(kubectl.path, ['get', 'pods'], { kubeconfig: bad });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /Unauthorized|must be logged in/);
  });
});
