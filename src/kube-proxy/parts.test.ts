/** The kube proxy's pure pieces: request parsing, rule matching, header hygiene, backends, serving CA. */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import { CausewayError, UserError } from '../lib/errors.ts';
import { assertImpersonating, cleanBackendHeaders, cleanClientHeaders, encodeExtraKey, impersonationHeaders } from './headers.ts';
import { inClusterBackend, kubeconfigBackend } from './backend.ts';
import { parseRequestInfo } from './request-info.ts';
import type { KubeRequestInfo } from './request-info.ts';
import { ruleMatchesRequest } from './rules.ts';
import type { KubeDenyRule } from './rules.ts';
import { createServingCa, issueServingCert, servingCertNeedsRenewal } from './serving-ca.ts';

function info(method: string, target: string, upgrade = false): KubeRequestInfo {
  const [path, query = ''] = target.split('?');
  const result = parseRequestInfo(method, path, new URLSearchParams(query), upgrade);
  assert.ok(result.ok, target);
  return result.info;
}

void describe('request info', () => {
  void test('reads verbs, resources, namespaces, names and subresources as the API server does', () => {
    const cases: Array<[string, string, Partial<KubeRequestInfo>]> = [
      ['GET', '/api/v1/pods', { verb: 'list', resource: 'pods', apiGroup: '', apiVersion: 'v1' }],
      ['GET', '/api/v1/namespaces/default/pods', { verb: 'list', resource: 'pods', namespace: 'default' }],
      ['GET', '/api/v1/namespaces/default/pods?watch=true', { verb: 'watch', resource: 'pods' }],
      ['GET', '/api/v1/namespaces/default/pods?watch=1', { verb: 'watch' }],
      ['GET', '/api/v1/namespaces/default/pods?watch=yes', { verb: 'list' }],
      ['GET', '/api/v1/watch/namespaces/default/pods', { verb: 'watch', namespace: 'default', resource: 'pods' }],
      ['GET', '/api/v1/namespaces/default/pods/web-0', { verb: 'get', name: 'web-0' }],
      ['GET', '/api/v1/namespaces/default/pods/web-0/log', { verb: 'get', subresource: 'log', name: 'web-0' }],
      ['POST', '/api/v1/namespaces/prod/pods/web-0/exec', { verb: 'create', subresource: 'exec', namespace: 'prod' }],
      ['DELETE', '/api/v1/namespaces/prod/pods', { verb: 'deletecollection' }],
      ['DELETE', '/api/v1/namespaces/prod', { verb: 'delete', resource: 'namespaces', name: 'prod', namespace: 'prod' }],
      ['PUT', '/api/v1/namespaces/prod/finalize', { verb: 'update', resource: 'namespaces', name: 'prod', subresource: 'finalize' }],
      ['PATCH', '/apis/apps/v1/namespaces/prod/deployments/web/scale', { verb: 'patch', apiGroup: 'apps', resource: 'deployments', subresource: 'scale' }],
      ['GET', '/api/v1/namespaces/prod/pods?fieldSelector=metadata.name%3Dweb-0', { verb: 'list', name: 'web-0' }],
      ['GET', '/version', { isResourceRequest: false, verb: 'get' }],
      ['GET', '/apis', { isResourceRequest: false }],
      ['GET', '/apis/apps', { isResourceRequest: false }],
    ];
    for (const [method, target, expected] of cases) {
      const got = info(method, target);
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(got[k as keyof KubeRequestInfo], v, `${method} ${target} ${k}`);
    }
    assert.equal(info('GET', '/api/v1/namespaces/prod/pods/web-0/exec', true).verb, 'create', 'a WebSocket exec is create');
    assert.equal(info('GET', '/api/v1/namespaces/prod/pods/web-0/log', true).verb, 'get');
  });

  void test('paths that could be read two ways are refused', () => {
    for (const path of ['/api/v1/namespaces/a/../b/pods', '/api//v1/pods', '/api/v1/./pods', '/api/v1/pods/%2e%2e', '/api/v1/pods/%', '/api/v1/pods/%00', '/api/v1/pods%2F..%2Fsecrets']) {
      assert.equal(parseRequestInfo('GET', path, new URLSearchParams()).ok, false, path);
    }
    assert.equal(info('GET', '/api/v1/namespaces/prod/pods%2Fweb-0%2Fexec').subresource, 'exec', '%2F is a separator to Go');
  });
});

void describe('rules', () => {
  const rule = (r: Partial<KubeDenyRule>): KubeDenyRule => ({ id: 'p/deny[0]', roles: [], verbs: ['*'], resources: ['*'], namespaces: undefined, message: undefined, ...r });
  void test('resources match like RBAC: resource, resource/subresource, * and */sub', () => {
    const exec = info('POST', '/api/v1/namespaces/prod/pods/web-0/exec');
    const pods = info('GET', '/api/v1/namespaces/prod/pods');
    assert.equal(ruleMatchesRequest(rule({ resources: ['pods'] }), exec), false, 'pods does not cover pods/exec');
    assert.equal(ruleMatchesRequest(rule({ resources: ['pods'] }), pods), true);
    assert.equal(ruleMatchesRequest(rule({ resources: ['pods/exec'] }), exec), true);
    assert.equal(ruleMatchesRequest(rule({ resources: ['*/exec'] }), exec), true);
    assert.equal(ruleMatchesRequest(rule({ resources: ['pods/*'] }), exec), true);
    assert.equal(ruleMatchesRequest(rule({ resources: ['pods/*'] }), pods), false);
    assert.equal(ruleMatchesRequest(rule({ resources: ['*'] }), exec), true);
    assert.equal(ruleMatchesRequest(rule({ verbs: ['get'] }), exec), false);
    assert.equal(ruleMatchesRequest(rule({ namespaces: ['dev'] }), exec), false);
    assert.equal(ruleMatchesRequest(rule({ namespaces: ['prod'] }), exec), true);
    assert.equal(ruleMatchesRequest(rule({ namespaces: ['prod'] }), info('GET', '/api/v1/nodes')), false, 'cluster scope is outside any namespace list');
    assert.equal(ruleMatchesRequest(rule({}), info('GET', '/version')), false, 'non-resource requests are not resources');
  });
});

void describe('headers', () => {
  void test('encodeExtraKey percent-encodes as Kubernetes expects', () => {
    assert.equal(encodeExtraKey('causeway.dev/device'), 'causeway.dev%2Fdevice');
    assert.equal(encodeExtraKey('a b'), 'a%20b');
  });

  void test('KP-01 assertImpersonating refuses headers without exactly our Impersonate-User and groups', () => {
    const who = { user: 'ada', groups: ['eng', 'system:authenticated'] };
    const good = [...cleanClientHeaders(['Accept', 'application/json']), ...impersonationHeaders(who, 't')];
    assert.doesNotThrow(() => assertImpersonating(good, who));
    const without = good.filter(([n]) => n !== 'Impersonate-User');
    assert.throws(() => assertImpersonating(without, who), (e: unknown) => e instanceof CausewayError && e.code === 'KUBE_NO_IMPERSONATION');
    assert.throws(() => assertImpersonating([...good, ['impersonate-user', 'admin']], who), CausewayError);
    assert.throws(() => assertImpersonating([...good, ['Impersonate-Group', 'system:masters']], who), CausewayError);
    assert.throws(() => assertImpersonating(impersonationHeaders({ user: '', groups: [] }, undefined), { user: '', groups: [] }), CausewayError);
  });

  void test('cleanBackendHeaders drops hop-by-hop, echoed secrets and foreign locations', () => {
    const out = cleanBackendHeaders(['Connection', 'X-Foo', 'X-Foo', 'a', 'Keep-Alive', '5', 'X-Echo', 'Bearer s3cr3t-token', 'Location', 'https://elsewhere/', 'Content-Type', 'json'], ['s3cr3t-token']);
    assert.deepEqual(out, [['Content-Type', 'json']]);
  });
});

void describe('backend credentials', () => {
  const ca = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n').toString('base64');
  void test('in-cluster: https://HOST:PORT with the service account token read on each call', () => {
    let token = 'a';
    const backend = inClusterBackend({ host: '10.96.0.1', port: '443', caPem: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----', token: () => token });
    assert.equal(backend.url, 'https://10.96.0.1:443');
    token = 'b';
    assert.equal(backend.token?.(), 'b');
    assert.equal(inClusterBackend({ host: 'fd00::1', port: 6443, caPem: '-----BEGIN CERTIFICATE-----', token: () => 't' }).url, 'https://[fd00::1]:6443');
    assert.throws(() => inClusterBackend({ host: '', port: '', caPem: '', token: () => 't' }), UserError);
  });

  void test('kubeconfig: current context, data and file credentials; insecure, plugin and credential-less configs refused', () => {
    const kc = (cluster: string, user: string): string => `apiVersion: v1
kind: Config
current-context: c
contexts: [{ name: c, context: { cluster: k, user: u } }]
clusters: [{ name: k, cluster: { ${cluster} } }]
users: [{ name: u, user: { ${user} } }]
`;
    const b = kubeconfigBackend(kc(`server: "https://kube.example:6443/prefix/", certificate-authority-data: ${ca}`, 'token: abc'));
    assert.equal(b.url, 'https://kube.example:6443/prefix');
    assert.equal(b.token?.(), 'abc');
    assert.match(b.caPem ?? '', /BEGIN CERTIFICATE/);
    const files: Record<string, string> = { '/c.crt': '-----BEGIN CERTIFICATE-----', '/c.key': '-----BEGIN PRIVATE KEY-----', '/tok': 'tok\n' };
    const withFiles = kubeconfigBackend(kc('server: "https://k:1", certificate-authority: /c.crt', 'client-certificate: /c.crt, client-key: /c.key, tokenFile: /tok'), { readFile: (p) => files[p] ?? '' });
    assert.equal(withFiles.clientCert?.keyPem, '-----BEGIN PRIVATE KEY-----');
    assert.equal(withFiles.token?.(), 'tok');
    const refused = [
      kc('server: "https://k:1", insecure-skip-tls-verify: true', 'token: a'),
      kc('server: "http://k:1"', 'token: a'),
      kc('server: "https://k:1"', 'exec: { command: aws }'),
      kc('server: "https://k:1"', 'auth-provider: { name: gcp }'),
      kc('server: "https://k:1"', 'username: a, password: b'),
      kc('server: "https://k:1"', 'token: a, as: admin'),
      kc('server: "https://k:1"', 'client-certificate-data: x'),
      kc('server: "https://k:1"', 'foo: bar'),
      'not: [valid',
    ];
    for (const text of refused) assert.throws(() => kubeconfigBackend(text), UserError, text);
    assert.throws(() => kubeconfigBackend(kc('server: "https://k:1"', 'token: a'), { context: 'other' }), /no context named "other"/);
  });
});

void describe('serving CA', () => {
  void test('a CA and a serving certificate for the proxy\'s names; renewal when names, CA or time say so', async () => {
    const ca = await createServingCa({ clusterName: 'prod' });
    const caCert = new X509Certificate(ca.certPem);
    assert.equal(caCert.ca, true);
    const hosts = ['causeway-kube-proxy.causeway.svc.cluster.local', '127.0.0.1'];
    const serving = await issueServingCert(ca, { hosts });
    const leaf = new X509Certificate(serving.certPem);
    assert.equal(leaf.ca, false);
    assert.ok(leaf.verify(caCert.publicKey));
    assert.ok(leaf.checkHost('causeway-kube-proxy.causeway.svc.cluster.local'));
    assert.ok(leaf.checkIP('127.0.0.1'));
    const now = Date.now();
    assert.equal(servingCertNeedsRenewal(serving, ca.certPem, hosts, now), false);
    assert.equal(servingCertNeedsRenewal(serving, ca.certPem, [...hosts, 'other.example'], now), true);
    assert.equal(servingCertNeedsRenewal(serving, (await createServingCa({ clusterName: 'x' })).certPem, hosts, now), true);
    assert.equal(servingCertNeedsRenewal(serving, ca.certPem, hosts, now + 360 * 24 * 3600 * 1000), true);
    assert.equal(servingCertNeedsRenewal({ certPem: 'junk', keyPem: 'junk' }, ca.certPem, hosts, now), true);
    await assert.rejects(issueServingCert({ certPem: ca.certPem, keyPem: serving.keyPem }, { hosts }), UserError);
  });
});
