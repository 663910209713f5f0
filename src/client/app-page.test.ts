import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Writable } from 'node:stream';
import { createLogger } from '../lib/log.ts';
import type { AgentStatus } from './agent-client.ts';
import type { AgentBackend, AgentServices } from './agent.ts';
import { APP_SECRET_HEADER, CSP, startAppPage } from './app-page.ts';

const SECRET = 'test-secret-0123456789abcdefghijklmnopqrstu';

const STATUS: AgentStatus = {
  pid: 1,
  startedAt: '2026-11-27T10:00:00.000Z',
  server: 'https://cp.example.com',
  user: { name: 'alice' },
  device: { id: 'dev-1', trustLevel: 'Low', explanation: 'firewall off' },
  trustCert: null,
  connections: [],
};

interface Page {
  port: number;
  calls: string[];
  logs: string[];
}

async function page(t: TestContext): Promise<Page> {
  const calls: string[] = [];
  const logs: string[] = [];
  const backend: AgentBackend = {
    status: () => Promise.resolve(STATUS),
    services: () => Promise.resolve<AgentServices>({ services: [], catalogHidden: false }),
    connect: (service) => {
      calls.push(`connect ${service}`);
      return Promise.resolve({ connection: { service, type: 'kubernetes', port: 8081, since: '', bytesUp: 0, bytesDown: 0, openConnections: 0, totalConnections: 0, autorun: false } });
    },
    disconnect: (service) => {
      calls.push(`disconnect ${service}`);
      return Promise.resolve({ disconnected: true });
    },
  };
  const logger = createLogger({ name: 't', level: 'debug', destination: new Writable({ write: (c: Buffer, _e, cb) => void (logs.push(c.toString()), cb()) }) });
  const app = await startAppPage({ backend, logger, secret: SECRET });
  t.after(() => app.close());
  assert.equal(app.url(), `http://127.0.0.1:${app.port()}/#${SECRET}`);
  return { port: app.port(), calls, logs };
}

function request(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false, setHost: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function good(port: number, extra: Record<string, string> = {}): Record<string, string> {
  return { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}`, [APP_SECRET_HEADER]: SECRET, 'content-type': 'application/json', ...extra };
}

void describe('the local app page refuses everyone but its own page (LP-01, LP-02)', () => {
  void test('LP-02 the page with its secret reads state and connects; the HTML is served with a strict CSP and no referrer', async (t) => {
    const p = await page(t);
    const html = await request(p.port, 'GET', '/', { host: `localhost:${p.port}` });
    assert.equal(html.status, 200);
    assert.equal(html.headers['content-security-policy'], CSP);
    assert.doesNotMatch(CSP, /unsafe-inline|unsafe-eval/);
    assert.match(CSP, /frame-ancestors 'none'/);
    assert.equal(html.headers['referrer-policy'], 'no-referrer');
    assert.doesNotMatch(html.body, /<script>|onclick=|style=/, 'no inline script or style');
    const state = await request(p.port, 'GET', '/api/state', good(p.port));
    assert.equal(state.status, 200);
    assert.equal((JSON.parse(state.body) as { status: AgentStatus }).status.device?.trustLevel, 'Low');
    const connect = await request(p.port, 'POST', '/api/connect', good(p.port), JSON.stringify({ service: 'prod-k8s' }));
    assert.equal(connect.status, 200, connect.body);
    assert.deepEqual(p.calls, ['connect prod-k8s']);
  });

  void test('LP-02 a wrong Host (DNS rebinding) is refused, even with the secret', async (t) => {
    const p = await page(t);
    for (const host of [`evil.example:${p.port}`, '127.0.0.1', `127.0.0.1:${p.port + 1}`, `127.0.0.1.nip.io:${p.port}`, `[::1]:${p.port}`, `0x7f000001:${p.port}`]) {
      const r = await request(p.port, 'POST', '/api/connect', { ...good(p.port), host }, JSON.stringify({ service: 'prod-k8s' }));
      assert.equal(r.status, 421, host);
      const html = await request(p.port, 'GET', '/', { host });
      assert.equal(html.status, 421, host);
    }
    assert.deepEqual(p.calls, []);
  });

  void test('LP-02 a request from another origin is refused, even with the secret; a write without Origin too', async (t) => {
    const p = await page(t);
    for (const origin of ['https://evil.example', `http://127.0.0.1:${p.port + 1}`, 'null', `http://localhost.evil.example:${p.port}`]) {
      const r = await request(p.port, 'POST', '/api/connect', good(p.port, { origin }), JSON.stringify({ service: 'prod-k8s' }));
      assert.equal(r.status, 403, origin);
    }
    const { origin: _dropped, ...noOrigin } = good(p.port);
    const r = await request(p.port, 'POST', '/api/disconnect', noOrigin, JSON.stringify({ service: 'prod-k8s' }));
    assert.equal(r.status, 403);
    const crossSite = await request(p.port, 'POST', '/api/disconnect', good(p.port, { 'sec-fetch-site': 'cross-site' }), JSON.stringify({ service: 'prod-k8s' }));
    assert.equal(crossSite.status, 403);
    assert.deepEqual(p.calls, []);
  });

  void test('LP-02 without the secret (or with a wrong one, or as a cookie or query) the API is refused', async (t) => {
    const p = await page(t);
    const { [APP_SECRET_HEADER]: _s, ...noSecret } = good(p.port);
    for (const headers of [noSecret, good(p.port, { [APP_SECRET_HEADER]: `${SECRET.slice(0, -1)}x` }), good(p.port, { [APP_SECRET_HEADER]: '' }), { ...noSecret, cookie: `secret=${SECRET}` }]) {
      const state = await request(p.port, 'GET', '/api/state', headers);
      assert.equal(state.status, 401);
      const connect = await request(p.port, 'POST', `/api/connect?secret=${SECRET}`, headers, JSON.stringify({ service: 'prod-k8s' }));
      assert.equal(connect.status, 401);
    }
    assert.deepEqual(p.calls, []);
    assert.ok(!p.logs.some((l) => l.includes(SECRET)), 'the secret is never logged');
  });

  void test('a malformed body is 400 and unknown routes 404', async (t) => {
    const p = await page(t);
    assert.equal((await request(p.port, 'POST', '/api/connect', good(p.port), '{')).status, 400);
    assert.equal((await request(p.port, 'POST', '/api/connect', good(p.port), JSON.stringify({ service: 1 }))).status, 400);
    assert.equal((await request(p.port, 'GET', '/api/other', good(p.port))).status, 404);
    assert.equal((await request(p.port, 'GET', '/etc/passwd', { host: `127.0.0.1:${p.port}` })).status, 404);
  });
});
