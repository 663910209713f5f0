/**
 * The kube proxy with live state from a config source: user and device checks, the policy's
 * kubernetes deny rules (answered as a Status kubectl prints) and KP-08, live requests and streams
 * cut when a new snapshot denies them.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { describe, test } from 'node:test';
import type { DeviceState, UserState } from '../lib/policy/index.ts';
import { rawExchange, startHarness, statusOf, waitFor } from './proxy.testing.ts';
import type { Harness } from './proxy.testing.ts';

const ADA: UserState = { id: 'user-1', email: 'ada@example.com', groups: ['eng'], disabled: false };
const CAROL: UserState = { id: 'user-3', email: 'carol@contractor.example', groups: ['contractors'], disabled: false };
const LAPTOP: DeviceState = { id: 'dev-1', known: true, mdmPresent: true, banned: false, trustLevel: 'High', ownership: 'corporate-dedicated', platform: 'linux' };

function specYaml(caPem: string, denyRules: string): string {
  const ca = caPem.trim().split('\n').map((l) => `        ${l}`).join('\n');
  return `
apiVersion: causeway/v1
kind: Role
metadata: { name: contractors }
spec:
  users: { groups: [contractors] }
---
apiVersion: causeway/v1
kind: Role
metadata: { name: everyone }
spec: {}
---
apiVersion: causeway/v1
kind: Policy
metadata: { name: k8s-prod }
spec:
  access:
    - roles: [everyone]
      trustLevel: Low
  kubernetes:
    deny:
${denyRules}
---
apiVersion: causeway/v1
kind: AccessTier
metadata: { name: edge }
spec: { cluster: main, address: "edge.example.com:443" }
---
apiVersion: causeway/v1
kind: Service
metadata: { name: kube-prod }
spec:
  type: kubernetes
  cluster: main
  accessTier: edge
  domain: kube.example.com
  policy: { name: k8s-prod }
  kubernetes:
    clusterName: prod
    caPublicKey: |
${ca}
`;
}

const CONTRACTORS_NO_EXEC = `      - roles: [contractors]
        verbs: [create]
        resources: [pods/exec, pods/attach]
        namespaces: [prod]
        message: "exec in prod is not allowed for contractors"
      - verbs: [delete, deletecollection]
        resources: [namespaces]`;

function get(path: string, token: string, extra: string[] = []): string {
  return [`GET ${path} HTTP/1.1`, 'Host: kube', `Authorization: Bearer ${token}`, ...extra, 'Connection: close', '', ''].join('\r\n');
}

function spdyExec(ns: string, token: string): string {
  return [`POST /api/v1/namespaces/${ns}/pods/web-0/exec?command=sh&stdin=true&stdout=true HTTP/1.1`, 'Host: kube', `Authorization: Bearer ${token}`, 'Connection: Upgrade', 'Upgrade: SPDY/3.1', 'X-Stream-Protocol-Version: v4.channel.k8s.io', '', ''].join('\r\n');
}

function messageOf(text: string): string {
  const at = text.indexOf('\r\n\r\n');
  return String((JSON.parse(text.slice(at + 4)) as { message: unknown }).message);
}

async function stateHarness(t: { after: (fn: () => Promise<void>) => void }, deny = CONTRACTORS_NO_EXEC): Promise<Harness & { state: NonNullable<Harness['state']> }> {
  const h = await startHarness({ state: true });
  t.after(() => h.close());
  const state = h.state;
  assert.ok(state !== undefined);
  state.users = [ADA, CAROL];
  state.devices = [LAPTOP];
  state.yaml = specYaml(h.caPem, deny);
  return { ...h, state };
}

/** A held-open connection: a watch or an upgraded stream. */
async function holdOpen(h: Harness, raw: string): Promise<{ socket: TLSSocket; text: () => string; closed: () => boolean }> {
  const socket = connect({ host: '127.0.0.1', port: h.proxy.port, ca: h.caPem });
  let text = '';
  let closed = false;
  socket.on('data', (c: Buffer) => (text += c.toString('utf8')));
  socket.on('error', () => undefined);
  socket.on('close', () => (closed = true));
  await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
  socket.write(raw);
  return { socket, text: () => text, closed: () => closed };
}

void describe('kube proxy live state', () => {
  void test('no configuration from the control plane yet: 503, nothing forwarded', async (t) => {
    const h = await stateHarness(t);
    const answer = await rawExchange(h, [get('/api/v1/pods', await h.token())]);
    assert.equal(statusOf(answer.text), 503);
    assert.match(messageOf(answer.text), /no configuration/);
    assert.equal(h.proxy.stats().ready, false);
    assert.equal(h.backend.requests.length, 0);
    h.state.publish();
    assert.equal(h.proxy.stats().ready, true);
    assert.equal(statusOf((await rawExchange(h, [get('/api/v1/pods', await h.token())])).text), 200);
  });

  void test('a kubernetes deny rule is answered as a Forbidden Status that names the rule, before the API server sees it', async (t) => {
    const h = await stateHarness(t);
    h.state.publish();
    const carol = await h.token({ sub: 'user-3', email: 'carol@contractor.example', groups: ['contractors'] });
    const denied = await rawExchange(h, [spdyExec('prod', carol)]);
    assert.equal(statusOf(denied.text), 403);
    assert.equal(messageOf(denied.text), 'causeway: exec in prod is not allowed for contractors (rule k8s-prod/deny[0])');
    assert.match(denied.text, /"reason":"Forbidden"/);
    assert.ok(denied.closed);
    // WebSocket exec is a GET, authorized as create like the API server does.
    const ws = await rawExchange(h, [get('/api/v1/namespaces/prod/pods/web-0/exec?command=ls', carol, ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Protocol: v5.channel.k8s.io']).replace('Connection: close\r\n', '')]);
    assert.equal(statusOf(ws.text), 403);
    // Percent-encoding does not dodge the rule: the API server would read it as exec.
    const encoded = await rawExchange(h, [spdyExec('prod', carol).replace('/exec?', '/%65xec?')]);
    assert.equal(statusOf(encoded.text), 403);
    assert.equal(h.backend.requests.length, 0);
    // Elsewhere, or for someone else, the rule does not apply.
    assert.equal(statusOf((await rawExchange(h, [get('/api/v1/namespaces/prod/pods', carol)])).text), 200);
    const ada = await h.token();
    h.backend.onUpgrade = (_req, socket: Duplex) => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
    assert.equal(statusOf((await rawExchange(h, [spdyExec('prod', ada)])).text), 403);
    assert.equal(h.backend.requests.filter((r) => r.upgrade).length, 1, 'ada\'s exec went to the API server (which refused it itself)');
    // A rule without roles applies to everyone.
    const del = await rawExchange(h, [get('/api/v1/namespaces/prod', ada).replace('GET', 'DELETE')]);
    assert.equal(statusOf(del.text), 403);
    assert.match(messageOf(del.text), /delete namespaces in namespace prod is not allowed \(rule k8s-prod\/deny\[1\]\)/);
    const event = h.events.find((e) => e.reason === 'rule-deny');
    assert.equal(event?.decision, 'deny');
    assert.equal(event?.user, 'carol@contractor.example');
  });

  void test('a token without a device still meets the deny rules of its user\'s roles', async (t) => {
    const h = await stateHarness(t);
    h.state.publish();
    const carol = await h.token({ sub: 'user-3', email: 'carol@contractor.example', groups: ['contractors'] });
    assert.equal(statusOf((await rawExchange(h, [spdyExec('prod', carol)])).text), 403);
    h.state.devices = [LAPTOP, { ...LAPTOP, id: 'dev-3' }];
    h.state.publish();
    const withDevice = await h.token({ sub: 'user-3', email: 'carol@contractor.example', groups: ['contractors'], device: 'dev-3' });
    assert.equal(statusOf((await rawExchange(h, [spdyExec('prod', withDevice)])).text), 403);
  });

  void test('unknown or disabled users and unknown, banned or AlwaysDeny devices are refused', async (t) => {
    const h = await stateHarness(t);
    h.state.users = [ADA, { ...CAROL, disabled: true }];
    h.state.devices = [LAPTOP, { ...LAPTOP, id: 'dev-banned', banned: true }, { ...LAPTOP, id: 'dev-deny', trustLevel: 'AlwaysDeny' }, { ...LAPTOP, id: 'dev-unreg', known: false }];
    h.state.publish();
    const cases: Array<[Record<string, unknown>, number, RegExp]> = [
      [{ sub: 'user-9' }, 401, /not known/],
      [{ sub: 'user-3', email: 'carol@contractor.example' }, 403, /disabled/],
      [{ device: 'dev-missing' }, 403, /not registered/],
      [{ device: 'dev-unreg' }, 403, /not registered/],
      [{ device: 'dev-banned' }, 403, /banned/],
      [{ device: 'dev-deny' }, 403, /AlwaysDeny/],
    ];
    for (const [claims, code, message] of cases) {
      const answer = await rawExchange(h, [get('/api/v1/pods', await h.token(claims))]);
      assert.equal(statusOf(answer.text), code, JSON.stringify(claims));
      assert.match(messageOf(answer.text), message);
    }
    assert.equal(h.backend.requests.length, 0);
    assert.equal(statusOf((await rawExchange(h, [get('/api/v1/pods', await h.token({ device: 'dev-1' }))])).text), 200);
  });

  void test('KP-08 a watch held open is cut when its user is disabled, and the cut is audited', async (t) => {
    const h = await stateHarness(t);
    h.state.publish();
    const held: ServerResponse[] = [];
    h.backend.onRequest = (_req, res) => {
      held.push(res);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"web-0"}}}\n');
    };
    const ada = await holdOpen(h, get('/api/v1/namespaces/default/pods?watch=true', await h.token()));
    const carol = await holdOpen(h, get('/api/v1/namespaces/default/pods?watch=true', await h.token({ sub: 'user-3', email: 'carol@contractor.example', groups: ['contractors'] })));
    t.after(() => {
      ada.socket.destroy();
      carol.socket.destroy();
      for (const r of held) r.destroy();
    });
    assert.ok(await waitFor(() => ada.text().includes('web-0') && carol.text().includes('web-0')));
    assert.equal(h.proxy.stats().live, 2);
    h.state.users = [{ ...ADA, disabled: true }, CAROL];
    h.state.publish();
    assert.ok(await waitFor(() => ada.closed()), 'ada\'s watch ends');
    assert.equal(carol.closed(), false, 'carol\'s stays');
    assert.equal(h.proxy.stats().cuts, 1);
    const cut = h.events.find((e) => e.decision === 'deny' && e.reason === 'user-disabled');
    assert.equal(cut?.user, 'ada@example.com');
    assert.equal(cut?.verb, 'watch');
    // And new requests of that user are refused.
    assert.equal(statusOf((await rawExchange(h, [get('/api/v1/pods', await h.token())])).text), 403);
  });

  void test('KP-08 an exec session is cut when a new rule denies it, and its session event says so', async (t) => {
    const h = await stateHarness(t, `      - verbs: [get]
        resources: [secrets]`);
    h.state.publish();
    h.backend.onUpgrade = (_req, socket: Duplex) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n');
      socket.on('data', (c: Buffer) => socket.write(c));
      socket.on('error', () => undefined);
    };
    const session = await holdOpen(h, spdyExec('prod', await h.token({ sub: 'user-3', email: 'carol@contractor.example', groups: ['contractors'] })));
    t.after(() => session.socket.destroy());
    assert.ok(await waitFor(() => session.text().startsWith('HTTP/1.1 101')));
    session.socket.write('still here');
    assert.ok(await waitFor(() => session.text().includes('still here')));
    assert.equal(h.proxy.stats().sessions, 1);
    h.state.yaml = specYaml(h.caPem, CONTRACTORS_NO_EXEC);
    h.state.publish();
    assert.ok(await waitFor(() => session.closed()), 'the exec ends');
    assert.ok(await waitFor(() => h.events.some((e) => e.type === 'kube-session')));
    const ended = h.events.find((e) => e.type === 'kube-session');
    assert.equal(ended?.decision, 'deny');
    assert.equal(ended?.reason, 'rule-deny');
    assert.deepEqual(ended?.command, ['sh']);
    assert.equal(h.proxy.stats().sessions, 0);
  });

  void test('a config change that denies nobody cuts nothing', async (t) => {
    const h = await stateHarness(t);
    h.state.publish();
    const held: ServerResponse[] = [];
    h.backend.onRequest = (_req, res) => {
      held.push(res);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"type":"ADDED"}\n');
    };
    const watch = await holdOpen(h, get('/api/v1/namespaces/prod/pods?watch=1', await h.token()));
    t.after(() => {
      watch.socket.destroy();
      for (const r of held) r.destroy();
    });
    assert.ok(await waitFor(() => watch.text().includes('ADDED')));
    h.state.users = [ADA, CAROL, { id: 'user-4', groups: [], disabled: false }];
    h.state.publish();
    held[0]?.write('{"type":"MODIFIED"}\n');
    assert.ok(await waitFor(() => watch.text().includes('MODIFIED')), 'the watch carries on');
    assert.equal(watch.closed(), false);
    assert.equal(h.proxy.stats().cuts, 0);
  });
});
