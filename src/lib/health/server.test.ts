import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteConfigStatus } from '../config/remote-source.ts';
import { createPartMetrics } from '../metrics/index.ts';
import { parseExposition } from '../metrics/prometheus-text.testing.ts';
import { configStreamHealth, startHealthServer } from './server.ts';
import type { HealthReport } from './server.ts';

const base: RemoteConfigStatus = { connected: true, revision: 7, version: 'rev-7', lastContact: 1_000, unreachableSince: undefined, stale: false, source: 'control-plane', lastError: undefined };

void test('readiness says whether the part follows the control plane, serves a stale configuration, or has none', () => {
  assert.deepEqual([configStreamHealth(base, 2_000).status, configStreamHealth(base, 2_000).message], ['ok', 'following the control plane (revision 7)']);
  const stale = configStreamHealth({ ...base, connected: false, stale: true, unreachableSince: Date.UTC(2026, 0, 2, 3, 4, 5), source: 'persisted' }, 0);
  assert.deepEqual([stale.ready, stale.status, stale.message], [true, 'degraded', 'serving last good config (revision 7), control plane unreachable since 2026-01-02T03:04:05.000Z']);
  const none = configStreamHealth({ ...base, connected: false, stale: true, version: undefined, revision: undefined, lastError: 'connect ECONNREFUSED' }, 0);
  assert.deepEqual([none.ready, none.status], [false, 'unavailable']);
  assert.match(none.message, /ECONNREFUSED/);
});

void test('the health listener answers /healthz always, /readyz with 200 or 503, and nothing else', async () => {
  let report: HealthReport = { ready: false, status: 'unavailable', message: 'no configuration yet' };
  const server = await startHealthServer({ host: '127.0.0.1', port: 0, check: () => report });
  try {
    const get = async (p: string): Promise<[number, unknown]> => {
      const r = await fetch(`${server.url}${p}`);
      return [r.status, await r.json()];
    };
    assert.deepEqual(await get('/healthz'), [200, { status: 'ok' }]);
    assert.deepEqual(await get('/readyz'), [503, { status: 'unavailable', message: 'no configuration yet' }]);
    report = { ready: true, status: 'degraded', message: 'serving last good config', details: { revision: 3 } };
    assert.deepEqual(await get('/readyz'), [200, { status: 'degraded', message: 'serving last good config', details: { revision: 3 } }]);
    assert.equal((await get('/metrics'))[0], 404);
    assert.equal((await fetch(`${server.url}/readyz`, { method: 'POST' })).status, 405);
  } finally {
    await server.close();
  }
});

void test('a port in use is a UserError that names the flag', async () => {
  const first = await startHealthServer({ host: '127.0.0.1', port: 0, check: () => ({ ready: true, status: 'ok', message: '' }) });
  try {
    await assert.rejects(startHealthServer({ host: '127.0.0.1', port: first.port, check: () => ({ ready: true, status: 'ok', message: '' }) }), { code: 'HEALTH_LISTEN' });
  } finally {
    await first.close();
  }
});

void test('with a metrics callback, /metrics answers in the Prometheus text format; a failing callback is a 500 and the listener goes on', async () => {
  const metrics = createPartMetrics('access-tier', { processMetrics: false });
  metrics.record({ id: 'e1', time: new Date(0).toISOString(), type: 'access', decision: 'deny', reasons: ['unknown-service'], accessTier: 'edge-1', source: '127.0.0.1:1' });
  let fail = false;
  const server = await startHealthServer({
    host: '127.0.0.1',
    port: 0,
    check: () => ({ ready: true, status: 'ok', message: 'ok' }),
    metrics: () => (fail ? Promise.reject(new Error('collect failed')) : metrics.scrape()),
  });
  try {
    const r = await fetch(`${server.url}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const scraped = parseExposition(await r.text());
    assert.equal(scraped.types.get('causeway_decisions_total'), 'counter');
    assert.equal(scraped.value('causeway_decisions_total', { result: 'deny', reason: 'unknown-service' }), 1);
    const head = await fetch(`${server.url}/metrics`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    fail = true;
    const failed = await fetch(`${server.url}/metrics`);
    assert.deepEqual([failed.status, await failed.json()], [500, { status: 'error', message: 'collecting the metrics failed; see the log' }]);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    assert.match(((await (await fetch(`${server.url}/other`)).json()) as { message: string }).message, /\/metrics/);
  } finally {
    await server.close();
    metrics.close();
  }
});
