import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { joinControlPlane, nodePeerFiles } from '../../lib/enroll/join.ts';
import { configStreamHealth } from '../../lib/health/server.ts';
import { applySpecs, baseSpecs, startTestControlPlane } from '../stream/harness.testing.ts';
import type { TestControlPlane } from '../stream/harness.testing.ts';
import { configStreamPlugin } from '../stream/index.ts';
import { enrollmentPlugin } from './index.ts';

async function eventually(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

void describe('joinControlPlane', () => {
  let cp: TestControlPlane;
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'causeway-join-'));
    cp = await startTestControlPlane({ plugins: [(app, o) => enrollmentPlugin(app, { ...o, failures: { burst: 1000 } }), (app, o) => configStreamPlugin(app, o)] });
    await applySpecs(cp, baseSpecs());
  });
  after(async () => {
    await cp.close();
    await rm(root, { recursive: true, force: true });
  });

  const token = async (kind: 'access-tier' | 'connector', name: string): Promise<{ token: string; caPin: string }> => {
    const r = await cp.api('POST', '/api/v1/join-tokens', { kind, name });
    return r.body as { token: string; caPin: string };
  };

  void test('enrolls once, keeps the identity under the data directory (key 0600), and reuses it when started again with the spent token', async () => {
    const dir = path.join(root, 'edge');
    const { token: joinToken, caPin } = await token('access-tier', 'edge-1');
    const first = await joinControlPlane({ kind: 'access-tier', controlPlaneUrl: cp.url, joinToken, caPin, files: nodePeerFiles(dir) });
    try {
      assert.deepEqual([first.enrolled, first.name], [true, 'edge-1']);
      const snapshot = await first.config.ready();
      assert.deepEqual(snapshot.services.map((s) => s.metadata.name), ['db']);
      assert.equal((await stat(path.join(dir, 'identity.json'))).mode & 0o777, 0o600);
      assert.equal(await readFile(path.join(dir, 'ca.pem'), 'utf8'), cp.ca.certPem);
    } finally {
      await first.close();
    }
    assert.equal((await stat(path.join(dir, 'config.json'))).mode & 0o777, 0o600, 'the last good configuration is kept');
    const again = await joinControlPlane({ kind: 'access-tier', controlPlaneUrl: cp.url, joinToken, caPin, files: nodePeerFiles(dir) });
    try {
      assert.deepEqual([again.enrolled, again.name, again.credentials().serial], [false, 'edge-1', first.credentials().serial]);
    } finally {
      await again.close();
    }
  });

  void test('without a stored identity or a join token it says how to join; a connector directory is not an access tier\'s', async () => {
    await assert.rejects(joinControlPlane({ kind: 'connector', controlPlaneUrl: cp.url, files: nodePeerFiles(path.join(root, 'empty')) }), { code: 'NOT_ENROLLED' });
    const dir = path.join(root, 'dc');
    const { token: joinToken, caPin } = await token('connector', 'dc1');
    const joined = await joinControlPlane({ kind: 'connector', controlPlaneUrl: cp.url, joinToken, caPin, files: nodePeerFiles(dir) });
    const snapshot = await joined.config.ready();
    assert.equal(snapshot.users, undefined, 'a connector gets no principal state');
    await joined.close();
    await assert.rejects(joinControlPlane({ kind: 'access-tier', controlPlaneUrl: cp.url, files: nodePeerFiles(dir) }), { code: 'IDENTITY_WRONG_KIND' });
  });

  void test('renews its certificate, stores it, tells listeners, and the config stream reconnects with it', async () => {
    const dir = path.join(root, 'edge-renew');
    const { token: joinToken, caPin } = await token('access-tier', 'edge-1');
    const joined = await joinControlPlane({ kind: 'access-tier', controlPlaneUrl: cp.url, joinToken, caPin, files: nodePeerFiles(dir) });
    try {
      await joined.config.ready();
      const before = joined.credentials().serial;
      const told: string[] = [];
      joined.onRenewed((tls) => told.push(tls.certPem));
      const renewed = await joined.renewal.renewNow();
      assert.notEqual(renewed.serial, before);
      assert.equal(joined.credentials().serial, renewed.serial);
      assert.deepEqual(told, [renewed.certPem]);
      const stored = JSON.parse(await readFile(path.join(dir, 'identity.json'), 'utf8')) as { serial: string };
      assert.equal(stored.serial, renewed.serial);
      // Revoking the old certificate ends its stream; the source comes back with the new one.
      await cp.store.revokeCertificate(before, { actor: 'test' });
      const revision = await cp.store.currentRevision();
      await eventually(() => (joined.config.status().revision ?? 0) >= revision && joined.config.status().connected, 'reconnected with the renewed certificate');
    } finally {
      await joined.close();
    }
  });

  void test('restarted while the control plane is down, it serves the persisted configuration and says so', async () => {
    const dir = path.join(root, 'edge-outage');
    const { token: joinToken, caPin } = await token('access-tier', 'edge-1');
    const first = await joinControlPlane({ kind: 'access-tier', controlPlaneUrl: cp.url, joinToken, caPin, files: nodePeerFiles(dir), config: { persistIntervalMs: 0 } });
    const revision = (await first.config.ready()).revision;
    await first.close();
    await cp.stop();
    try {
      const restarted = await joinControlPlane({ kind: 'access-tier', controlPlaneUrl: cp.url, files: nodePeerFiles(dir), config: { initialWaitMs: 500, backoff: { initialMs: 20, maxMs: 50 } } });
      try {
        const served = await restarted.config.ready();
        assert.equal(served.revision, revision);
        const health = configStreamHealth(restarted.config.status(), Date.now());
        assert.deepEqual([health.ready, health.status], [true, 'degraded']);
        assert.match(health.message, /^serving last good config \(revision \d+\), control plane unreachable since \d{4}-/);
      } finally {
        await restarted.close();
      }
    } finally {
      await cp.start();
    }
  });
});
