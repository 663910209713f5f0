/**
 * The fake API server's `impersonation` mode (kube-apiserver behind Causeway's kube proxy): only
 * the proxy's credentials, every request impersonating, the identity taken from the raw headers;
 * and the `authorize` hook standing in for RBAC.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { connect } from 'node:tls';
import { makeClientCert, makeTestCa } from '../certs.ts';
import { startFakeKube } from './index.ts';
import type { FakeKube } from './index.ts';

/** GET with raw header pairs (Host included: Node adds none to an array), so repeated and oddly cased names reach the server as written. */
function get(kube: FakeKube, path: string, headers: string[], tls: { cert?: string; key?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${kube.url}${path}`, { ca: kube.caPem, headers: ['Host', 'localhost', ...headers], agent: false, ...tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

const PROXY = ['Authorization', 'Bearer proxy-sa-token'];

void test('a request from the proxy runs as the impersonated user, groups and extras', async (t) => {
  const kube = await startFakeKube({ impersonation: { proxyToken: 'proxy-sa-token' } });
  t.after(() => kube.close());
  const r = await get(kube, '/api/v1/namespaces/default/pods', [...PROXY, 'Impersonate-User', 'alice@example.com', 'Impersonate-Group', 'eng', 'impersonate-group', 'oncall, night', 'Impersonate-Extra-causeway.dev%2Fdevice', 'dev-1']);
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(kube.requests[0].user, {
    user: 'alice@example.com',
    groups: ['eng', 'oncall, night', 'system:authenticated'],
    extra: { 'causeway.dev/device': ['dev-1'] },
    impersonator: 'system:serviceaccount:causeway:causeway-kube-proxy',
  });
});

void test('everything but the proxy impersonating is refused, and says why', async (t) => {
  const kube = await startFakeKube({ impersonation: { proxyToken: 'proxy-sa-token' } });
  t.after(() => kube.close());
  const cases: Array<[string, string[], number, string]> = [
    ['no credentials', ['Impersonate-User', 'alice'], 401, 'NOT_THE_PROXY'],
    ['another token', ['Authorization', 'Bearer user-token', 'Impersonate-User', 'alice'], 401, 'NOT_THE_PROXY'],
    ['the proxy token twice', [...PROXY, ...PROXY, 'Impersonate-User', 'alice'], 401, 'REPEATED_AUTHORIZATION'],
    ['the proxy as itself', [...PROXY], 403, 'IMPERSONATION_REQUIRED'],
    ['two users', [...PROXY, 'Impersonate-User', 'alice', 'IMPERSONATE-USER', 'root'], 403, 'REPEATED_IMPERSONATE_USER'],
    ['a front-proxy header', [...PROXY, 'Impersonate-User', 'alice', 'X-Remote-Group', 'system:masters'], 400, 'CLIENT_IDENTITY_HEADER'],
  ];
  for (const [name, headers, status, why] of cases) {
    kube.clearRequests();
    const r = await get(kube, '/api/v1/namespaces/default/pods', headers);
    assert.equal(r.status, status, name);
    assert.equal((JSON.parse(r.body) as { kind: string }).kind, 'Status', name);
    assert.equal(kube.requests[0].authError, why, name);
    assert.equal(kube.requests[0].user, undefined, name);
  }
});

void test('an upgrade without impersonation is refused before any exec starts', async (t) => {
  const kube = await startFakeKube({ impersonation: { proxyToken: 'proxy-sa-token' } });
  t.after(() => kube.close());
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: kube.port, ca: kube.caPem, servername: 'localhost' }, () => {
      socket.write(
        `GET /api/v1/namespaces/default/pods/web-0/exec?command=echo&stdout=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer proxy-sa-token\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n`,
      );
    });
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString()));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
  });
  assert.match(reply, /^HTTP\/1\.1 403 /);
  assert.match(reply, /requires impersonation/);
  assert.equal(kube.execs.length, 0);
});

void test('with requireClientCert the proxy is its client certificate, named as impersonator', async (t) => {
  const clientCa = await makeTestCa();
  const proxy = await makeClientCert(clientCa, { commonName: 'causeway-kube-proxy' });
  const kube = await startFakeKube({ requireClientCert: true, clientCaPem: clientCa.certPem, impersonation: {} });
  t.after(() => kube.close());
  await assert.rejects(get(kube, '/version', ['Impersonate-User', 'alice']));
  const tls = { cert: proxy.certPem, key: proxy.keyPem };
  assert.equal((await get(kube, '/version', ['Impersonate-User', 'alice'], tls)).status, 200);
  assert.equal(kube.requests.at(-1)?.user?.impersonator, 'causeway-kube-proxy');
  assert.equal((await get(kube, '/version', ['Authorization', 'Bearer x', 'Impersonate-User', 'alice'], tls)).status, 401, 'no bearer expected beside the certificate');
});

void test('the authorize hook answers 403 Forbidden with its message, as RBAC would', async (t) => {
  const kube = await startFakeKube({
    impersonation: { proxyToken: 'proxy-sa-token' },
    authorize: (user, req) => (user.groups.includes('admins') || req.method === 'GET' ? undefined : `pods is forbidden: User "${user.user}" cannot delete resource "pods"`),
  });
  t.after(() => kube.close());
  assert.equal((await get(kube, '/api/v1/namespaces/default/pods', [...PROXY, 'Impersonate-User', 'bob'])).status, 200);
  const denied = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(`${kube.url}/api/v1/namespaces/default/pods/web-0`, { method: 'DELETE', ca: kube.caPem, headers: ['Host', 'localhost', ...PROXY, 'Impersonate-User', 'bob'], agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(denied.status, 403);
  assert.match(denied.body, /cannot delete resource/);
  assert.equal(kube.requests.at(-1)?.authError, 'FORBIDDEN');
});
