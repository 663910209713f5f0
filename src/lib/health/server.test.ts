import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteConfigStatus } from '../config/remote-source.ts';
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
