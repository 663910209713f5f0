import 'reflect-metadata';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { formatProblems, issuerProblem, parseSpecDocuments, stringifySpecs } from './index.ts';
import type { SpecProblem } from './index.ts';

x509.cryptoProvider.set(webcrypto);

async function selfSignedPem(): Promise<string> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=Corp IdP CA',
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: algorithm,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  return cert.toString('pem');
}

const CA_PEM = await selfSignedPem();

function document(spec: Record<string, unknown>, name = 'corp'): string {
  return JSON.stringify({ apiVersion: 'causeway/v1', kind: 'IdentityProvider', metadata: { name }, spec });
}

function problemsOf(spec: Record<string, unknown>): SpecProblem[] {
  const result = parseSpecDocuments(document(spec));
  assert.equal(result.ok, false, 'the document should have been refused');
  return result.ok ? [] : result.problems;
}

function accepted(spec: Record<string, unknown>) {
  const result = parseSpecDocuments(document(spec));
  assert.ok(result.ok, result.ok ? '' : formatProblems(result.problems));
  const object = result.objects[0];
  assert.ok(object !== undefined && object.kind === 'IdentityProvider');
  return object;
}

const minimal = { issuer: 'https://idp.example.com', clientId: 'causeway' };

void describe('kind IdentityProvider', () => {
  void test('the example of the contract is accepted, with the secret as an env reference and a CA', () => {
    const yaml = `apiVersion: causeway/v1
kind: IdentityProvider
metadata: {name: corp}
spec:
  displayName: Corp SSO
  issuer: https://idp.example.com
  clientId: causeway
  clientSecret: {env: CORP_IDP_SECRET}
  scopes: [openid, email, profile, groups]
  claims: {email: email, groups: groups, name: preferred_username}
  caPem: |
${CA_PEM.trim().split('\n').map((l) => `    ${l}`).join('\n')}
`;
    const result = parseSpecDocuments(yaml);
    assert.ok(result.ok, result.ok ? '' : formatProblems(result.problems));
    const object = result.objects[0];
    assert.ok(object?.kind === 'IdentityProvider');
    assert.deepEqual(object.spec.clientSecret, { env: 'CORP_IDP_SECRET' });
    assert.equal(object.spec.displayName, 'Corp SSO');
    assert.ok(object.spec.caPem?.includes('BEGIN CERTIFICATE'));
    // What `get -o yaml` prints applies back to the same object.
    const again = parseSpecDocuments(stringifySpecs(result.objects));
    assert.ok(again.ok);
    assert.deepEqual(again.objects, result.objects);
  });

  void test('scopes and claims get their defaults, and a public client needs no secret', () => {
    const object = accepted(minimal);
    assert.ok(object.kind === 'IdentityProvider');
    assert.deepEqual(object.spec.scopes, ['openid', 'email', 'profile', 'groups']);
    assert.deepEqual(object.spec.claims, { email: 'email', groups: 'groups', name: 'preferred_username' });
    assert.equal(object.spec.clientSecret, undefined);
    assert.equal(object.spec.caPem, undefined);
  });

  void test('one claim may be renamed while the others keep their defaults', () => {
    const object = accepted({ ...minimal, claims: { groups: 'roles' } });
    assert.ok(object.kind === 'IdentityProvider');
    assert.deepEqual(object.spec.claims, { email: 'email', groups: 'roles', name: 'preferred_username' });
  });

  void test('a secret written into the spec is refused with a message that says to use env or file, and the secret is not echoed', () => {
    const problems = problemsOf({ ...minimal, clientSecret: 'hunter2-very-secret' });
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.path, 'spec.clientSecret');
    assert.match(problems[0]?.message ?? '', /\{env: VARIABLE\}/);
    assert.match(problems[0]?.message ?? '', /\{file: /);
    assert.doesNotMatch(formatProblems(problems), /hunter2/);
  });

  void test('a file reference is accepted, and malformed references name what is wrong', () => {
    const object = accepted({ ...minimal, clientSecret: { file: '/etc/causeway/corp-idp-secret' } });
    assert.ok(object.kind === 'IdentityProvider');
    assert.deepEqual(object.spec.clientSecret, { file: '/etc/causeway/corp-idp-secret' });

    const both = problemsOf({ ...minimal, clientSecret: { env: 'A', file: '/x' } });
    assert.match(both[0]?.message ?? '', /either env or file/);
    const relative = problemsOf({ ...minimal, clientSecret: { file: 'secret.txt' } });
    assert.equal(relative[0]?.path, 'spec.clientSecret.file');
    const badEnv = problemsOf({ ...minimal, clientSecret: { env: '1 BAD' } });
    assert.equal(badEnv[0]?.path, 'spec.clientSecret.env');
    const extra = problemsOf({ ...minimal, clientSecret: { env: 'A', value: 'x' } });
    assert.deepEqual(extra.map((p) => [p.path, p.message]), [['spec.clientSecret.value', 'unknown field']]);
    const empty = problemsOf({ ...minimal, clientSecret: {} });
    assert.match(empty[0]?.message ?? '', /missing where the secret is/);
  });

  void test('the issuer must be https, except on a loopback host, and carry no user info, query or fragment', () => {
    for (const ok of ['https://idp.example.com', 'https://idp.example.com/realms/corp', 'http://127.0.0.1:8080', 'http://[::1]:9000/x', 'http://localhost:3000']) {
      assert.equal(issuerProblem(ok), undefined, ok);
      accepted({ ...minimal, issuer: ok });
    }
    const bad: Array<[string, RegExp]> = [
      ['http://idp.example.com', /https/],
      ['http://10.0.0.1', /loopback/],
      ['ftp://idp.example.com', /https/],
      ['https://user:pw@idp.example.com', /user name or password/],
      ['https://idp.example.com?x=1', /query/],
      ['https://idp.example.com#frag', /fragment/],
      [' https://idp.example.com', /without spaces/],
      ['idp.example.com', /URL/],
      ['', /issuer URL/],
    ];
    for (const [issuer, message] of bad) {
      const problems = problemsOf({ ...minimal, issuer });
      assert.equal(problems[0]?.path, 'spec.issuer', issuer);
      assert.match(problems[0]?.message ?? '', message, issuer);
    }
  });

  void test('the issuer is kept exactly as written, since it is compared byte for byte', () => {
    const object = accepted({ ...minimal, issuer: 'https://IdP.Example.com/Realm' });
    assert.ok(object.kind === 'IdentityProvider');
    assert.equal(object.spec.issuer, 'https://IdP.Example.com/Realm');
  });

  void test('caPem must be a certificate, and a private key in it is refused without being echoed', () => {
    const notPem = problemsOf({ ...minimal, caPem: 'hello' });
    assert.equal(notPem[0]?.path, 'spec.caPem');
    assert.match(notPem[0]?.message ?? '', /PEM certificate/);
    const broken = problemsOf({ ...minimal, caPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' });
    assert.match(broken[0]?.message ?? '', /not a valid X.509 certificate/);
    const key = problemsOf({ ...minimal, caPem: `${CA_PEM}\n-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----\n` });
    assert.match(key[0]?.message ?? '', /private key/);
    assert.doesNotMatch(formatProblems(key), /MIIsecret/);
  });

  void test('scopes must include openid, and unknown fields, empty client ids and odd claim names are refused in one pass', () => {
    const problems = problemsOf({ issuer: 'https://idp.example.com', clientId: ' ', scopes: ['email', 'a b'], claims: { groups: 'x y', other: 'z' }, tenant: 'x' });
    const paths = problems.map((p) => p.path).sort();
    assert.deepEqual(paths, ['spec.claims.groups', 'spec.claims.other', 'spec.clientId', 'spec.scopes', 'spec.scopes[1]', 'spec.tenant'].sort());
  });

  void test('a display name with HTML is accepted as text (the login page escapes it)', () => {
    const object = accepted({ ...minimal, displayName: '<img src=x onerror=alert(1)>' });
    assert.ok(object.kind === 'IdentityProvider');
    assert.equal(object.spec.displayName, '<img src=x onerror=alert(1)>');
  });
});
