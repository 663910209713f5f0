/**
 * The kube proxy against a recording HTTPS backend and raw TLS sockets: the socket-level attack
 * cases of THREATS.md (KP-01, KP-04, KP-05, KP-06, KP-08, KP-10, KP-12, OP-05, AT-09) and the
 * forwarding, streaming, upgrade, audit and rule behaviour they protect.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect } from 'node:tls';
import { describe, test } from 'node:test';
import { AUDIENCE, BACKEND_TOKEN, rawExchange, recorded, startHarness, statusOf, waitFor } from './proxy.testing.ts';
import type { Harness } from './proxy.testing.ts';
import { createHmac } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import { fakeClock, handBuiltToken, idTokenClaims, signHandBuilt } from '../lib/oidc/test-issuer.testing.ts';

const b64 = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');

type Headers = Array<[string, string]>;

function request(method: string, path: string, headers: Headers, opts: { close?: boolean; body?: string } = {}): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: kube.example', ...headers.map(([k, v]) => `${k}: ${v}`)];
  if (opts.body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(opts.body)}`);
  if (opts.close !== false) lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n${opts.body ?? ''}`;
}

function bodyOf(text: string): string {
  const at = text.indexOf('\r\n\r\n');
  return at === -1 ? '' : text.slice(at + 4);
}

function statusJson(text: string): Record<string, unknown> {
  return JSON.parse(bodyOf(text)) as Record<string, unknown>;
}

async function withHarness(t: { after: (fn: () => Promise<void>) => void }, opts: Parameters<typeof startHarness>[0] = {}): Promise<Harness> {
  const h = await startHarness(opts);
  t.after(() => h.close());
  return h;
}

void describe('kube proxy forwarding', () => {
  void test('a verified request is forwarded with the proxy credential and impersonation, never the client token', async (t) => {
    const h = await withHarness(t);
    const token = await h.token({ device: 'dev-1' });
    const answer = await rawExchange(h, [request('GET', '/api/v1/namespaces/default/pods?limit=5', [['Authorization', `Bearer ${token}`]])]);
    assert.equal(statusOf(answer.text), 200);
    assert.match(bodyOf(answer.text), /PodList/);
    assert.equal(h.backend.requests.length, 1);
    const got = h.backend.requests[0];
    assert.equal(got.url, '/api/v1/namespaces/default/pods?limit=5');
    assert.deepEqual(recorded(got, 'authorization'), [`Bearer ${BACKEND_TOKEN}`]);
    assert.deepEqual(recorded(got, 'impersonate-user'), ['ada@example.com']);
    assert.deepEqual(recorded(got, 'impersonate-group'), ['eng', 'system:authenticated']);
    assert.deepEqual(recorded(got, 'impersonate-extra-causeway.dev%2Fdevice'), ['dev-1']);
    assert.ok(!got.rawHeaders.join('\n').includes(token), 'the client token never reaches the API server');
    const [event] = h.events;
    assert.equal(event.type, 'kube-request');
    assert.equal(event.decision, 'allow');
    assert.equal(event.user, 'ada@example.com');
    assert.equal(event.userId, 'user-1');
    assert.equal(event.device, 'dev-1');
    assert.equal(event.verb, 'list');
    assert.equal(event.resource, 'pods');
    assert.equal(event.namespace, 'default');
    assert.equal(event.code, 200);
    assert.equal(event.path, '/api/v1/namespaces/default/pods', 'the query string is not recorded');
    assert.equal(event.clusterName, 'prod');
  });

  void test('a GET on a kept-alive API server connection that died while idle is sent again once, on a new one', async (t) => {
    const h = await withHarness(t);
    const served = new WeakSet<object>();
    h.backend.onRequest = (req, res) => {
      if (served.has(req.socket)) {
        req.socket.destroy();
        return;
      }
      served.add(req.socket);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
      res.end('{}');
    };
    const token = await h.token();
    assert.equal(statusOf((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])])).text), 200);
    assert.equal(statusOf((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])])).text), 200);
    assert.equal(h.backend.requests.length, 3, 'the second request reached a dead connection, then a fresh one');
    const post = await rawExchange(h, [request('POST', '/api/v1/namespaces/default/pods', [['Authorization', `Bearer ${token}`]], { body: '{}' })]);
    assert.equal(statusOf(post.text), 502, 'a request with a body is never sent twice');
  });

  void test('a username outside ASCII reaches the API server as UTF-8', async (t) => {
    const h = await withHarness(t);
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${await h.token({ email: 'jürgen@例え.jp', groups: ['équipe'] })}`]])]);
    assert.equal(statusOf(answer.text), 200);
    const got = h.backend.requests[0];
    assert.deepEqual(recorded(got, 'impersonate-user').map((v) => Buffer.from(v, 'latin1').toString('utf8')), ['jürgen@例え.jp']);
    assert.deepEqual(recorded(got, 'impersonate-group').map((v) => Buffer.from(v, 'latin1').toString('utf8')), ['équipe', 'system:authenticated']);
  });

  void test('a 5 MB list arrives intact, and the serving TLS offers HTTP/1.1 only', async (t) => {
    const h = await withHarness(t);
    const items = Array.from({ length: 5000 }, (_, i) => ({ metadata: { name: `pod-${i}`, annotations: { blob: 'x'.repeat(1000) } } }));
    const big = JSON.stringify({ kind: 'PodList', items });
    h.backend.onRequest = (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      for (let i = 0; i < big.length; i += 64 * 1024) res.write(big.slice(i, i + 64 * 1024));
      res.end();
    };
    const answer = await rawExchange(h, [request('GET', '/api/v1/namespaces/big/pods', [['Authorization', `Bearer ${await h.token()}`]])], { waitMs: 30_000 });
    assert.equal(statusOf(answer.text), 200);
    const chunked = bodyOf(answer.text);
    let body = '';
    for (let at = 0; ;) {
      const eol = chunked.indexOf('\r\n', at);
      const size = parseInt(chunked.slice(at, eol), 16);
      if (size === 0) break;
      body += chunked.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
    assert.equal(body.length, big.length);
    assert.equal(body, big);
    const socket = connect({ host: '127.0.0.1', port: h.proxy.port, ca: h.caPem, ALPNProtocols: ['h2', 'http/1.1'] });
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    const alpn = socket.alpnProtocol;
    socket.destroy();
    assert.equal(alpn, 'http/1.1');
  });

  void test('close() ends idle connections, even one whose TLS handshake is still under way', async (t) => {
    const h = await withHarness(t);
    const raw = new Socket();
    raw.connect(h.proxy.port, '127.0.0.1');
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const tlsClient = connect({ host: '127.0.0.1', port: h.proxy.port, ca: h.caPem });
    await new Promise<void>((resolve) => tlsClient.once('secureConnect', () => resolve()));
    const ended = [new Promise<void>((resolve) => raw.once('close', () => resolve())), new Promise<void>((resolve) => tlsClient.once('close', () => resolve()))];
    raw.on('error', () => undefined);
    tlsClient.on('error', () => undefined);
    await h.proxy.close();
    await Promise.all(ended);
    assert.equal(raw.destroyed && tlsClient.destroyed, true);
  });

  void test('a request body is forwarded intact', async (t) => {
    const h = await withHarness(t);
    const body = JSON.stringify({ kind: 'Pod', metadata: { name: 'x' } });
    const answer = await rawExchange(h, [request('POST', '/api/v1/namespaces/default/pods', [['Authorization', `Bearer ${await h.token()}`], ['Content-Type', 'application/json']], { body })]);
    assert.equal(statusOf(answer.text), 200);
    assert.equal(h.backend.requests[0].body, body);
    assert.equal(h.events[0].verb, 'create');
  });

  void test('KP-01 client Impersonate-*, X-Remote-* and Authorization headers in any casing and repetition are stripped', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    const hostile: Headers = [
      ['Impersonate-Group', 'system:masters'],
      ['IMPERSONATE-GROUP', 'system:masters'],
      ['impersonate-group', 'system:nodes'],
      ['iMpErSoNaTe-UsEr', 'admin'],
      ['Impersonate-User', 'system:admin'],
      ['Impersonate-Uid', '0'],
      ['Impersonate-Extra-scopes', 'all'],
      ['X-Remote-User', 'admin'],
      ['x-remote-group', 'system:masters'],
      ['X-REMOTE-EXTRA-foo', 'bar'],
      ['Proxy-Authorization', 'Basic YWRtaW46YWRtaW4='],
    ];
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [...hostile, ['Authorization', `Bearer ${token}`]])]);
    assert.equal(statusOf(answer.text), 200);
    const got = h.backend.requests[0];
    assert.deepEqual(recorded(got, 'impersonate-user'), ['ada@example.com']);
    assert.deepEqual(recorded(got, 'impersonate-group'), ['eng', 'system:authenticated']);
    assert.deepEqual(recorded(got, 'impersonate-uid'), []);
    assert.deepEqual(recorded(got, 'impersonate-extra-scopes'), []);
    assert.ok(!got.rawHeaders.some((n, i) => i % 2 === 0 && n.toLowerCase().startsWith('x-remote-')), 'no X-Remote-* header arrives');
    assert.deepEqual(recorded(got, 'proxy-authorization'), []);
    assert.deepEqual(recorded(got, 'authorization'), [`Bearer ${BACKEND_TOKEN}`]);
  });

  void test('KP-01 Connection: Impersonate-User (and friends) cannot remove the proxy\'s own headers', async (t) => {
    const h = await withHarness(t);
    const answer = await rawExchange(h, [
      request('GET', '/api/v1/pods', [['Authorization', `Bearer ${await h.token()}`], ['Connection', 'Impersonate-User, Impersonate-Group, Authorization, Impersonate-Extra-causeway.dev%2Fdevice'], ['X-Trace', 'kept'], ['Connection', 'x-trace']], { close: false }),
    ], { waitMs: 1500 });
    assert.equal(statusOf(answer.text), 200);
    const got = h.backend.requests[0];
    assert.deepEqual(recorded(got, 'impersonate-user'), ['ada@example.com']);
    assert.deepEqual(recorded(got, 'impersonate-group'), ['eng', 'system:authenticated']);
    assert.deepEqual(recorded(got, 'authorization'), [`Bearer ${BACKEND_TOKEN}`]);
    assert.deepEqual(recorded(got, 'x-trace'), [], 'a header the client names in Connection is hop-by-hop and dropped');
  });

  void test('KP-01 without its own credential the proxy still never forwards without Impersonate-User', async (t) => {
    const h = await withHarness(t, { backendToken: null });
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${await h.token()}`]])]);
    assert.equal(statusOf(answer.text), 200);
    assert.deepEqual(recorded(h.backend.requests[0], 'authorization'), []);
    assert.deepEqual(recorded(h.backend.requests[0], 'impersonate-user'), ['ada@example.com']);
  });

  void test('KP-04 a token in the query string is refused with 401 and never forwarded', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    for (const path of [`/api/v1/pods?access_token=${token}`, `/api/v1/pods?watch=1&access_token=${token}`]) {
      const answer = await rawExchange(h, [request('GET', path, [])]);
      assert.equal(statusOf(answer.text), 401);
      assert.equal(statusJson(answer.text).reason, 'Unauthorized');
      assert.match(String(statusJson(answer.text).message), /query string/);
    }
    const both = await rawExchange(h, [request('GET', `/api/v1/pods?access_token=${token}`, [['Authorization', `Bearer ${token}`]])]);
    assert.equal(statusOf(both.text), 401, 'even with a good header token');
    assert.equal(h.backend.requests.length, 0);
    assert.ok(h.events.every((e) => e.decision === 'deny' && e.reason === 'token-in-query' && !e.path.includes(token)));
  });

  void test('KP-04 duplicate Authorization headers, a missing or non-bearer token are refused with 401', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    const other = await h.token({ sub: 'user-2', email: 'bob@example.com' });
    const cases: Headers[] = [
      [['Authorization', `Bearer ${token}`], ['Authorization', `Bearer ${other}`]],
      [['Authorization', `Bearer ${token}`], ['authorization', `Bearer ${token}`]],
      [],
      [['Authorization', `Basic ${Buffer.from('a:b').toString('base64')}`]],
      [['Authorization', `Bearer ${token}, Bearer ${other}`]],
    ];
    for (const headers of cases) {
      const answer = await rawExchange(h, [request('GET', '/api/v1/pods', headers)]);
      assert.equal(statusOf(answer.text), 401, JSON.stringify(headers.map(([k]) => k)));
      assert.equal(statusJson(answer.text).kind, 'Status');
    }
    assert.equal(h.backend.requests.length, 0);
  });

  void test('KP-04 the WebSocket bearer subprotocol is refused with 401 and never forwarded', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    const sub = `base64url.bearer.authorization.k8s.io.${Buffer.from(token).toString('base64url')}`;
    const answer = await rawExchange(h, [
      request('GET', '/api/v1/namespaces/default/pods/web-0/exec?command=ls&stdout=1', [['Upgrade', 'websocket'], ['Connection', 'Upgrade'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Protocol', `v5.channel.k8s.io, ${sub}`]], { close: false }),
    ]);
    assert.equal(statusOf(answer.text), 401);
    assert.ok(answer.closed);
    assert.equal(h.backend.requests.length, 0);
  });

  void test('KP-04 a second request on a kept-alive connection with another token is that token\'s request', async (t) => {
    const h = await withHarness(t);
    const ada = await h.token();
    const bob = await h.token({ sub: 'user-2', email: 'bob@example.com', groups: ['ops'] });
    const badAudience = await h.issuer.sign(idTokenClaims(h.issuer.issuer, 'kubernetes:staging', Date.now()));
    const answer = await rawExchange(h, [
      request('GET', '/api/v1/pods', [['Authorization', `Bearer ${ada}`]], { close: false }),
      request('GET', '/api/v1/pods', [['Authorization', `Bearer ${bob}`]], { close: false }),
      request('GET', '/api/v1/pods', [['Authorization', `Bearer ${badAudience}`]], { close: false }),
      request('GET', '/api/v1/pods', []),
    ], { gapMs: 150 });
    const statuses = [...answer.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 200, 401, 401]);
    assert.deepEqual(h.backend.requests.map((r) => recorded(r, 'impersonate-user')[0]), ['ada@example.com', 'bob@example.com']);
    assert.deepEqual(recorded(h.backend.requests[1], 'impersonate-group'), ['ops', 'system:authenticated']);
  });

  void test('OP-05 a token for another cluster\'s audience is refused', async (t) => {
    const h = await withHarness(t);
    const token = await h.issuer.sign(idTokenClaims(h.issuer.issuer, 'kubernetes:staging', Date.now()));
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])]);
    assert.equal(statusOf(answer.text), 401);
    assert.match(String(statusJson(answer.text).message), /TOKEN_AUDIENCE_MISMATCH/);
    assert.equal(h.backend.requests.length, 0);
    const expired = await h.issuer.sign(idTokenClaims(h.issuer.issuer, AUDIENCE, Date.now() - 3_600_000));
    assert.equal(statusOf((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${expired}`]])])).text), 401);
  });

  void test('KP-03 forged, altered and malformed tokens are refused with 401 and nothing is forwarded', async (t) => {
    const h = await withHarness(t);
    const key = h.issuer.keys[0];
    const claims = idTokenClaims(h.issuer.issuer, AUDIENCE, Date.now());
    const attacker = await generateKeyPair('ES256');
    const good = await h.token();
    const [header, , signature] = good.split('.');
    const hmac = createHmac('sha256', JSON.stringify(key.publicJwk)).update(`${b64({ alg: 'HS256', kid: key.kid })}.${b64(claims)}`).digest('base64url');
    const tokens: Array<[string, string]> = [
      ['alg none', handBuiltToken({ alg: 'none', kid: key.kid }, claims, '')],
      ['HS256 with the public key as secret', `${b64({ alg: 'HS256', kid: key.kid })}.${b64(claims)}.${hmac}`],
      ['an embedded jwk', signHandBuilt({ alg: 'ES256', jwk: await exportJWK(attacker.publicKey) }, claims, attacker.privateKey, 'ES256')],
      ['jku elsewhere', signHandBuilt({ alg: 'ES256', kid: key.kid, jku: 'https://evil.example/jwks' }, claims, key.privateKey, 'ES256')],
      ['kid with a path', signHandBuilt({ alg: 'ES256', kid: '../../etc/passwd' }, claims, key.privateKey, 'ES256')],
      ['another key with our kid', signHandBuilt({ alg: 'ES256', kid: key.kid }, claims, attacker.privateKey, 'ES256')],
      ['payload swapped after signing', `${header}.${b64({ ...claims, email: 'admin@example.com' })}.${signature}`],
      ['wrong issuer', await h.issuer.sign({ ...claims, iss: 'https://evil.example' })],
      ['iss as an array', await h.issuer.sign({ ...claims, iss: [h.issuer.issuer] as unknown as string })],
      ['expired', await h.issuer.sign({ ...claims, exp: Math.floor(Date.now() / 1000) - 3600 })],
      ['not yet valid', await h.issuer.sign({ ...claims, nbf: Math.floor(Date.now() / 1000) + 3600 })],
      ['no exp', await h.issuer.sign({ ...claims, exp: undefined })],
      ['not a JWT', 'abc.def'],
      ['huge', `${header}.${'A'.repeat(20_000)}.${signature}`],
    ];
    for (const [what, token] of tokens) {
      const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])]);
      assert.equal(statusOf(answer.text), 401, what);
    }
    assert.equal(h.backend.requests.length, 0);
    assert.ok(h.events.every((e) => e.decision === 'deny' && e.user === ''));
  });

  void test('a verified token is remembered briefly (same identity), and refused once expired', async (t) => {
    const clock = fakeClock(Date.now());
    const h = await withHarness(t, { options: { clock } });
    const token = await h.issuer.sign(idTokenClaims(h.issuer.issuer, AUDIENCE, clock.now(), { exp: Math.floor(clock.now() / 1000) + 10 }));
    const get = async (): Promise<number> => statusOf((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])])).text);
    assert.equal(await get(), 200);
    assert.equal(await get(), 200);
    assert.deepEqual(h.backend.requests.map((r) => recorded(r, 'impersonate-user')[0]), ['ada@example.com', 'ada@example.com']);
    clock.advance(45_000);
    assert.equal(await get(), 401, 'past exp (and the verifier\'s 30 s tolerance) the cached identity is not used');
  });

  void test('KP-10 IdP groups never become system:masters, and a system: username is refused', async (t) => {
    const h = await withHarness(t);
    const token = await h.token({ groups: ['system:masters', 'System:Nodes', 'eng'] });
    assert.equal(statusOf((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])])).text), 200);
    assert.deepEqual(recorded(h.backend.requests[0], 'impersonate-group'), ['eng', 'system:authenticated']);
    const admin = await h.token({ email: 'system:admin' });
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${admin}`]])]);
    assert.equal(statusOf(answer.text), 401);
    assert.match(String(statusJson(answer.text).message), /CLAIM_USERNAME_RESERVED/);
    assert.equal(h.backend.requests.length, 1);
  });

  void test('KP-12 a backend 302 is passed on, never followed, and without a foreign Location', async (t) => {
    const h = await withHarness(t);
    let location = 'https://evil.example/steal';
    h.backend.onRequest = (_req, res) => {
      res.writeHead(302, { Location: location, 'Content-Length': 0 });
      res.end();
    };
    const token = await h.token();
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])]);
    assert.equal(statusOf(answer.text), 302);
    assert.doesNotMatch(answer.text, /location:/i);
    assert.equal(h.backend.requests.length, 1, 'not followed');
    for (const foreign of ['//evil.example/x', '/\\evil.example']) {
      location = foreign;
      assert.doesNotMatch((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])])).text, /location:/i);
    }
    location = '/api/v1/namespaces/default/pods';
    assert.match((await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`]])])).text, /Location: \/api\/v1\/namespaces\/default\/pods/i);
  });

  void test('KP-12 the proxy\'s own token never appears in a response, headers or body', async (t) => {
    const h = await withHarness(t);
    h.backend.onRequest = (req, res) => {
      const auth = req.headers.authorization ?? '';
      const body = `{"kind":"Status","message":"you sent ${auth} and ${auth}"}`;
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${auth}"`, 'X-Echo': auth, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    };
    const answer = await rawExchange(h, [request('GET', '/api/v1/pods', [['Authorization', `Bearer ${await h.token()}`]])]);
    assert.equal(statusOf(answer.text), 401);
    assert.ok(!answer.text.includes(BACKEND_TOKEN), 'token scrubbed');
    assert.doesNotMatch(answer.text, /x-echo/i);
    assert.match(answer.text, /you sent Bearer \*+ and Bearer \*+/);
  });

  void test('a watch streams each event as it comes, with no buffering', async (t) => {
    const h = await withHarness(t);
    let backendRes: ServerResponse | undefined;
    h.backend.onRequest = (_req, res) => {
      backendRes = res;
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
      res.write('{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"web-0"}}}\n');
    };
    const socket = connect({ host: '127.0.0.1', port: h.proxy.port, ca: h.caPem });
    t.after(() => socket.destroy());
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('utf8')));
    socket.write(request('GET', '/api/v1/namespaces/default/pods?watch=true', [['Authorization', `Bearer ${await h.token()}`]]));
    assert.ok(await waitFor(() => text.includes('web-0')), 'the first event arrives while the watch stays open');
    assert.equal(h.events[0].verb, 'watch');
    backendRes?.write('{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"web-1"}}}\n');
    assert.ok(await waitFor(() => text.includes('web-1')), 'and so does the next');
    assert.equal(h.proxy.stats().live, 1);
    backendRes?.end();
  });

  void test('AT-09 smuggling attempts get 400 and the socket closed; oversized headers get 431', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    const auth = `Authorization: Bearer ${token}\r\n`;
    const cases = [
      `POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/secrets HTTP/1.1\r\nHost: x\r\n\r\n`,
      `POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd`,
      `GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n${auth}X-Folded: a\r\n b\r\n\r\n`,
      `GET /api/v1/pods HTTP/1.1\nHost: x\n${auth}\n`,
      `POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked\r\n\r\n4;ext=\u0001\r\nabcd\r\n0\r\n\r\n`,
    ];
    for (const raw of cases) {
      const answer = await rawExchange(h, [raw]);
      assert.equal(statusOf(answer.text), 400, raw.slice(0, 80));
      assert.ok(answer.closed, 'closed');
    }
    assert.ok(h.backend.requests.every((r) => !r.url.includes('secrets')));
    const huge = await rawExchange(h, [`GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n${auth}X-Big: ${'a'.repeat(40_000)}\r\n\r\n`]);
    assert.equal(statusOf(huge.text), 431);
    assert.ok(huge.closed);
  });

  void test('a path that could be read two ways is refused; a percent-encoded one is read as the API server reads it', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    for (const path of ['/api/v1/namespaces/default/pods/../secrets', '/api/v1//pods', '/api/v1/pods/%zz', '/api/v1/namespaces/default/pods/%2e%2e/x', 'http://other.example/api/v1/pods']) {
      const answer = await rawExchange(h, [request('GET', path, [['Authorization', `Bearer ${token}`]])]);
      assert.equal(statusOf(answer.text), 400, path);
    }
    assert.equal(h.backend.requests.length, 0);
    await rawExchange(h, [request('GET', '/api/v1/namespaces/de%66ault/pods/web-0/%6Cog', [['Authorization', `Bearer ${token}`]])]);
    const event = h.events.at(-1);
    assert.equal(event?.namespace, 'default');
    assert.equal(event?.subresource, 'log');
  });
});

void describe('kube proxy upgrades', () => {
  const spdyExec = (token: string, extra: Headers = [], path = '/api/v1/namespaces/default/pods/web-0/exec?command=ls&command=-l&container=app&stdin=true&stdout=true&tty=true'): string =>
    request('POST', path, [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade'], ['Upgrade', 'SPDY/3.1'], ['X-Stream-Protocol-Version', 'v4.channel.k8s.io'], ['X-Stream-Protocol-Version', 'channel.k8s.io'], ...extra], { close: false }).replace('Connection: Upgrade\r\n', 'Connection: Upgrade\r\n');

  void test('KP-06 Upgrade: h2c and other protocols are refused with 400 and the socket closed', async (t) => {
    const h = await withHarness(t);
    const token = await h.token();
    const cases = [
      request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA']], { close: false }),
      request('GET', '/api/v1/namespaces/default/pods/web-0/exec?command=ls', [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade'], ['Upgrade', 'TLS/1.0']], { close: false }),
      request('GET', '/api/v1/namespaces/default/pods/web-0/exec?command=ls', [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade'], ['Upgrade', 'websocket, h2c'], ['Sec-WebSocket-Protocol', 'v5.channel.k8s.io']], { close: false }),
      request('GET', '/api/v1/namespaces/default/pods/web-0/log?follow=true', [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Protocol', 'v5.channel.k8s.io']], { close: false }),
      request('GET', '/api/v1/namespaces/default/services/web/proxy/', [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Protocol', 'v5.channel.k8s.io']], { close: false }),
      request('GET', '/api/v1/namespaces/default/pods/web-0/exec?command=ls', [['Authorization', `Bearer ${token}`], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Protocol', 'evil.protocol']], { close: false }),
      spdyExec(token, []).replace('X-Stream-Protocol-Version: v4.channel.k8s.io', 'X-Stream-Protocol-Version: something.else'),
      request('GET', '/api/v1/pods', [['Authorization', `Bearer ${token}`], ['Upgrade', 'h2c']], { close: false }),
      spdyExec(token, [['Content-Length', '5']]) + 'hello',
      spdyExec(token, [['Upgrade', 'websocket']]),
      spdyExec(token, [], '/apis/apps/v1/namespaces/default/pods/web-0/exec?command=ls'),
    ];
    for (const raw of cases) {
      const answer = await rawExchange(h, [raw]);
      assert.equal(statusOf(answer.text), 400, raw.split('\r\n')[0]);
      assert.ok(answer.closed, 'closed');
    }
    assert.equal(h.backend.requests.length, 0);
  });

  void test('KP-05 a refused upgrade followed by raw bytes on the same socket: the bytes never reach the API server', async (t) => {
    const h = await withHarness(t);
    h.backend.onUpgrade = (_req, socket) => {
      const body = '{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}';
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    };
    const token = await h.token();
    const smuggled = 'GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: x\r\n\r\n';
    const answer = await rawExchange(h, [spdyExec(token) + smuggled, smuggled, smuggled], { gapMs: 100 });
    assert.equal(statusOf(answer.text), 403);
    assert.ok(answer.closed, 'the client socket is closed');
    assert.equal(h.backend.requests.length, 1);
    const seen = h.backend.connections.map((c) => Buffer.concat(c).toString('latin1')).join('');
    assert.ok(!seen.includes('secrets'), 'no later byte reached the API server');
  });

  void test('KP-07 an exec over SPDY is relayed both ways and audited with user and command', async (t) => {
    const h = await withHarness(t);
    h.backend.onUpgrade = (req, socket: Duplex) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n');
      socket.on('data', (c: Buffer) => socket.write(Buffer.from(c.toString('utf8').toUpperCase())));
      socket.on('end', () => socket.end());
      void req;
    };
    const token = await h.token({ device: 'dev-9' });
    const received: Buffer[] = [];
    const echo = h.backend.onUpgrade;
    h.backend.onUpgrade = (req, socket: Duplex, head: Buffer) => {
      if (head.length > 0) received.push(head);
      socket.on('data', (c: Buffer) => received.push(c));
      echo(req, socket, head);
    };
    const answer = await rawExchange(h, [spdyExec(token), 'hello from stdin'], { gapMs: 200, waitMs: 1500 });
    assert.equal(Buffer.concat(received).toString('latin1'), 'hello from stdin', 'the API server gets exactly the client\'s stream bytes, no body framing');
    assert.deepEqual(recorded(h.backend.requests[0], 'transfer-encoding'), []);
    assert.equal(statusOf(answer.text), 101);
    assert.match(answer.text, /X-Stream-Protocol-Version: v4\.channel\.k8s\.io/);
    assert.match(answer.text, /HELLO FROM STDIN/);
    const got = h.backend.requests[0];
    assert.deepEqual(recorded(got, 'impersonate-user'), ['ada@example.com']);
    assert.deepEqual(recorded(got, 'upgrade'), ['SPDY/3.1']);
    assert.ok(!got.rawHeaders.join('\n').includes(token));
    assert.ok(await waitFor(() => h.events.some((e) => e.type === 'kube-session')));
    const session = h.events.find((e) => e.type === 'kube-session');
    assert.deepEqual(session?.command, ['ls', '-l']);
    assert.equal(session?.container, 'app');
    assert.equal(session?.interactive, true);
    assert.equal(session?.tty, true);
    assert.equal(session?.transport, 'spdy');
    assert.equal(session?.user, 'ada@example.com');
    assert.equal(session?.device, 'dev-9');
    assert.equal(session?.verb, 'create');
    assert.equal(session?.subresource, 'exec');
    assert.ok((session?.bytesUp ?? 0) >= 'hello from stdin'.length);
    assert.equal(h.events.find((e) => e.type === 'kube-request')?.code, 101);
  });

  void test('KP-07 a WebSocket port-forward is relayed with its subprotocol', async (t) => {
    const h = await withHarness(t);
    h.backend.onUpgrade = (req, socket: Duplex) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: ${String(req.headers['sec-websocket-protocol']).split(',')[0]}\r\n\r\n`);
      socket.on('data', (c: Buffer) => socket.write(c));
    };
    const answer = await rawExchange(h, [
      request('GET', '/api/v1/namespaces/default/pods/web-0/portforward?ports=8080', [['Authorization', `Bearer ${await h.token()}`], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Protocol', 'SPDY/3.1+portforward.k8s.io']], { close: false }),
      'ping-bytes',
    ], { gapMs: 200, waitMs: 1000 });
    assert.equal(statusOf(answer.text), 101);
    assert.match(answer.text, /Sec-WebSocket-Protocol: SPDY\/3\.1\+portforward\.k8s\.io/);
    assert.match(answer.text, /ping-bytes/);
    assert.deepEqual(recorded(h.backend.requests[0], 'sec-websocket-key'), ['dGhlIHNhbXBsZSBub25jZQ==']);
  });
});
