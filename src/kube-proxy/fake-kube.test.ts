/**
 * The kube proxy in front of the fake Kubernetes API (test/kit/fake-kube): the API server sees the
 * proxy's own credential and the caller's impersonation headers and nothing the client sent about
 * identity; list, logs and a WebSocket exec (KP-07) work through it and the exec is audited.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { startFakeKube } from '../../test/kit/fake-kube/index.ts';
import type { FakeKube, FakeKubeUser } from '../../test/kit/fake-kube/index.ts';
import type { KubeEvent } from '../lib/audit/kube-event.ts';
import { idTokenClaims, startTestIssuer } from '../lib/oidc/test-issuer.testing.ts';
import type { TestIssuer } from '../lib/oidc/test-issuer.testing.ts';
import type { KubeProxy } from './index.ts';
import { startKubeProxy } from './proxy.ts';
import { createServingCa, issueServingCert } from './serving-ca.ts';
import { waitFor } from './proxy.testing.ts';

const PROXY_TOKEN = 'fake-kube-proxy-sa-token-0123456789';

/** As kube-apiserver: the proxy's token authenticates it; Impersonate-* then says who the request is for. */
function impersonatingAuth(req: IncomingMessage): FakeKubeUser | undefined {
  if (req.headers.authorization !== `Bearer ${PROXY_TOKEN}`) return undefined;
  const users: string[] = [];
  const groups: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    if (name === 'impersonate-user') users.push(req.rawHeaders[i + 1]);
    if (name === 'impersonate-group') groups.push(req.rawHeaders[i + 1]);
  }
  return users.length === 1 ? { user: users[0], groups } : undefined;
}

interface Setup {
  kube: FakeKube;
  issuer: TestIssuer;
  proxy: KubeProxy;
  caPem: string;
  events: KubeEvent[];
  token: string;
}

async function setup(t: { after: (fn: () => Promise<void>) => void }): Promise<Setup> {
  const kube = await startFakeKube({ authenticate: impersonatingAuth });
  t.after(() => kube.close());
  const issuer = await startTestIssuer();
  t.after(() => issuer.close());
  await issuer.addKey('ES256');
  const ca = await createServingCa({ clusterName: 'prod' });
  const serving = await issueServingCert(ca, { hosts: ['127.0.0.1'] });
  const events: KubeEvent[] = [];
  const proxy = await startKubeProxy({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { ...serving, caPem: ca.certPem },
    issuer: issuer.issuer,
    audience: 'kubernetes:prod',
    allowInsecureIssuer: true,
    claims: { groupsPrefix: 'oidc:' },
    backend: { url: kube.url, caPem: kube.caPem, token: () => PROXY_TOKEN },
    clusterName: 'prod',
    events: { write: (e) => events.push(e) },
  });
  t.after(() => proxy.close());
  const token = await issuer.sign(idTokenClaims(issuer.issuer, 'kubernetes:prod', Date.now(), { groups: ['eng', 'system:masters'] }));
  return { kube, issuer, proxy, caPem: ca.certPem, events, token };
}

function get(s: Setup, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${s.proxy.url}${path}`, { ca: s.caPem, headers: { Authorization: `Bearer ${s.token}`, ...headers }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

void describe('kube proxy with the fake API server', () => {
  void test('KP-01 the API server sees the proxy credential and the caller impersonated, never the client identity headers', async (t) => {
    const s = await setup(t);
    const answer = await get(s, '/api/v1/namespaces/default/pods', { 'Impersonate-User': 'admin', 'impersonate-group': 'system:masters', 'X-Remote-User': 'admin' });
    assert.equal(answer.status, 200);
    assert.ok((JSON.parse(answer.body) as { items: unknown[] }).items.length > 0);
    const seen = s.kube.requests.find((r) => r.path === '/api/v1/namespaces/default/pods');
    assert.deepEqual(seen?.user, { user: 'ada@example.com', groups: ['oidc:eng', 'oidc:system:masters', 'system:authenticated'] }, 'KP-10: with a prefix an IdP system:masters is only oidc:system:masters');
    const names = (seen?.rawHeaders ?? []).filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    assert.ok(!names.some((n) => n.startsWith('x-remote-')));
    assert.equal(names.filter((n) => n === 'impersonate-user').length, 1);
    assert.ok(!(seen?.rawHeaders ?? []).includes(s.token));
    const logs = await get(s, '/api/v1/namespaces/default/pods/web-0/log');
    assert.equal(logs.status, 200);
  });

  void test('KP-07 an exec over WebSocket (v5.channel.k8s.io) runs as the caller and is audited with its command', async (t) => {
    const s = await setup(t);
    const url = `${s.proxy.url.replace('https:', 'wss:')}/api/v1/namespaces/default/pods/web-0/exec?command=echo&command=hello&stdout=true&stderr=true`;
    const ws = new WebSocket(url, ['v5.channel.k8s.io'], { ca: s.caPem, headers: { Authorization: `Bearer ${s.token}` } });
    const messages: Array<{ channel: number; data: string }> = [];
    ws.on('message', (data: Buffer) => messages.push({ channel: data[0], data: data.subarray(1).toString() }));
    ws.on('error', () => undefined);
    await once(ws, 'close');
    assert.equal(ws.protocol, 'v5.channel.k8s.io');
    assert.equal(messages.filter((m) => m.channel === 1).map((m) => m.data).join(''), 'hello\n');
    const exec = s.kube.execs[0];
    assert.deepEqual(exec.command, ['echo', 'hello']);
    assert.equal(exec.user?.user, 'ada@example.com');
    assert.equal(exec.transport, 'websocket');
    assert.ok(await waitFor(() => s.events.some((e) => e.type === 'kube-session')));
    const session = s.events.find((e) => e.type === 'kube-session');
    assert.deepEqual(session?.command, ['echo', 'hello']);
    assert.equal(session?.transport, 'websocket');
    assert.equal(session?.interactive, false);
    assert.deepEqual(session?.groups, ['oidc:eng', 'oidc:system:masters', 'system:authenticated']);
  });
});
