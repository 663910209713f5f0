import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { newEventId } from '../../lib/audit/index.ts';
import { RemoteConfigSource } from '../../lib/config/index.ts';
import type { ConfigSnapshot } from '../../lib/config/index.ts';
import { requestControlPlane } from '../../lib/enroll/transport.ts';
import type { PeerTlsMaterial } from '../../lib/enroll/transport.ts';
import { httpReportSender } from '../../lib/live/reporter.ts';
import type { AccessTierReport, ConnectorReport, ReportedSession } from '../../lib/live/wire.ts';
import { applySpecs, baseSpecs, startTestControlPlane } from '../stream/harness.testing.ts';
import type { IssuedPeer, TestControlPlane } from '../stream/harness.testing.ts';
import { configStreamPlugin } from '../stream/index.ts';
import type { LiveSession, PeerView } from './routes.ts';

async function eventually<T>(read: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function session(extra: Partial<ReportedSession> = {}): ReportedSession {
  return { id: newEventId(), service: 'db', since: new Date().toISOString(), source: '198.51.100.7:50123', target: 'db.internal.example.com:5432', via: 'connector', connector: 'dc1', bytesUp: 1200, bytesDown: 34_000, ...extra };
}

function tierReport(sessions: ReportedSession[]): AccessTierReport {
  return { version: '0.1.0', startedAt: '2030-01-01T00:00:00.000Z', tunnels: [{ connector: 'dc1', since: '2030-01-01T00:00:01.000Z', streams: sessions.length }], sessions };
}

void describe('live sessions and peers API', () => {
  let cp: TestControlPlane;
  let edge: IssuedPeer;
  let dc1: IssuedPeer;
  let viewerToken: string;
  let aliceId: string;
  let laptopId: string;

  before(async () => {
    cp = await startTestControlPlane({ plugins: [(app, o) => configStreamPlugin(app, { ...o, heartbeatIntervalMs: 300 })] });
    await applySpecs(cp, baseSpecs());
    edge = await cp.issue('access-tier', { name: 'edge-1' });
    dc1 = await cp.issue('connector', { name: 'dc1' });
    viewerToken = (await cp.store.createApiToken({ name: 'viewer', scope: 'viewer' }, { actor: 'test' })).token;
    aliceId = (await cp.store.createUser({ name: 'alice', groups: ['eng'] }, { actor: 'test' })).id;
    laptopId = (await cp.store.registerDevice({ userId: aliceId, platform: 'linux', hostname: 'alice-laptop' }, { actor: 'test' })).id;
  });
  after(() => cp.close());

  const report = (tls: PeerTlsMaterial, body: unknown): ReturnType<typeof requestControlPlane> => requestControlPlane({ baseUrl: cp.url, path: '/api/v1/peers/report', method: 'POST', body, tls });
  const asViewer = (method: 'GET' | 'POST', path: string, body?: unknown): ReturnType<typeof requestControlPlane> =>
    requestControlPlane({ baseUrl: cp.url, path, method, ...(body === undefined ? {} : { body }), tls: { caPem: cp.ca.certPem }, headers: { authorization: `Bearer ${viewerToken}` } });
  const sessions = async (query = ''): Promise<LiveSession[]> => {
    const r = await cp.api('GET', `/api/v1/sessions${query}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body as { sessions: LiveSession[] }).sessions;
  };
  const peers = async (): Promise<PeerView[]> => {
    const r = await cp.api('GET', '/api/v1/peers');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body as { peers: PeerView[] }).peers;
  };

  void test('an access tier\'s report lists its sessions with user and device names; peers show both reporters, their tunnels and a configured tier that never reported', async () => {
    const send = httpReportSender({ controlPlaneUrl: cp.url, tls: () => edge });
    const mine = session({ user: aliceId, device: laptopId });
    const anonymous = session({ via: 'direct', target: 'k8s.example.com:443', service: 'k8s' });
    delete anonymous.connector;
    try {
      await send(tierReport([mine, anonymous]), new AbortController().signal);
    } finally {
      send.close();
    }
    const connectorReport: ConnectorReport = { version: '0.1.0', startedAt: '2030-01-01T00:00:00.000Z', tunnels: [{ accessTier: 'edge-1', since: '2030-01-01T00:00:01.000Z', streams: 2 }] };
    assert.equal((await report(dc1, connectorReport)).status, 200);
    await cp.api('PUT', '/api/v1/objects/accesstier/edge-2', { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-2' }, spec: { cluster: 'global-edge', address: 'edge-2.example.com:8443' } });

    const listed = await sessions();
    const alice = listed.find((s) => s.id === mine.id);
    assert.ok(alice);
    assert.deepEqual(
      { accessTier: alice.accessTier, user: alice.user, userName: alice.userName, device: alice.device, deviceName: alice.deviceName, service: alice.service, bytesUp: alice.bytesUp, bytesDown: alice.bytesDown, via: alice.via, connector: alice.connector },
      { accessTier: 'edge-1', user: aliceId, userName: 'alice', device: laptopId, deviceName: 'alice-laptop', service: 'db', bytesUp: 1200, bytesDown: 34_000, via: 'connector', connector: 'dc1' },
    );
    assert.deepEqual((await sessions('?user=alice')).map((s) => s.id), [mine.id]);
    assert.deepEqual((await sessions('?service=k8s')).map((s) => s.id), [anonymous.id]);
    assert.deepEqual(await sessions('?accessTier=edge-9'), []);

    const all = await peers();
    const tier = all.find((p) => p.kind === 'access-tier' && p.name === 'edge-1');
    assert.deepEqual(tier && { status: tier.status, version: tier.version, sessions: tier.sessions, tunnels: tier.tunnels, enrolled: tier.enrolled }, { status: 'up', version: '0.1.0', sessions: 2, tunnels: [{ peer: 'dc1', since: '2030-01-01T00:00:01.000Z', streams: 2 }], enrolled: false });
    const connector = all.find((p) => p.kind === 'connector' && p.name === 'dc1');
    assert.deepEqual(connector && { status: connector.status, sessions: connector.sessions, tunnels: connector.tunnels.map((t) => t.peer) }, { status: 'up', sessions: null, tunnels: ['edge-1'] });
    const silent = all.find((p) => p.name === 'edge-2');
    assert.deepEqual(silent && { kind: silent.kind, status: silent.status, configured: silent.configured, address: silent.address, cluster: silent.cluster, lastReport: silent.lastReport }, { kind: 'access-tier', status: 'never', configured: true, address: 'edge-2.example.com:8443', cluster: 'global-edge', lastReport: null });
  });

  void test('an access tier silent for more than 20 s is down and its sessions are not listed', async () => {
    const stale = await cp.issue('access-tier', { name: 'edge-stale' });
    const old = session();
    assert.equal((await report(stale, tierReport([old]))).status, 200);
    assert.ok((await sessions()).some((s) => s.id === old.id));
    await cp.store.putPeerReport('access-tier', 'edge-stale', tierReport([old]), new Date(Date.now() - 21_000).toISOString());
    assert.ok(!(await sessions()).some((s) => s.id === old.id));
    const view = (await peers()).find((p) => p.name === 'edge-stale');
    assert.deepEqual(view && { status: view.status, sessions: view.sessions, tunnels: view.tunnels }, { status: 'down', sessions: 0, tunnels: [] });
  });

  void test('CA-03 CA-06 only an unrevoked access tier or connector certificate may report, under its own name; malformed reports are refused', async () => {
    const trust = await cp.issue('trust', { user: aliceId, device: laptopId });
    const device = await cp.issue('device', { device: laptopId });
    const forged = session({ user: aliceId });
    for (const tls of [trust, device, { caPem: cp.ca.certPem }]) {
      const r = await report(tls, tierReport([forged]));
      assert.equal(r.status, 401);
      assert.equal((r.body as { error: { code: string } }).error.code, 'PEER_CERT_REFUSED');
    }
    const revoked = await cp.issue('access-tier', { name: 'edge-revoked' });
    await cp.store.revokeCertificate(revoked.serial, { actor: 'test' });
    assert.equal((await report(revoked, tierReport([forged]))).status, 401);
    // A connector's certificate makes it a connector report, whatever the body says: sessions in it are dropped.
    assert.equal((await report(dc1, { ...tierReport([forged]), tunnels: [] })).status, 200);
    const stored = (await cp.store.listPeerReports({ kind: 'connector' })).find((p) => p.name === 'dc1');
    assert.deepEqual(stored?.report, { version: '0.1.0', startedAt: '2030-01-01T00:00:00.000Z', tunnels: [] });
    for (const bad of [{}, { ...tierReport([]), sessions: [{ id: 'x' }] }, { ...tierReport([]), version: '' }, { ...tierReport([session({ bytesUp: -1 })]) }, 'text']) {
      const r = await report(edge, bad);
      assert.ok(r.status === 400 || r.status === 415, `${JSON.stringify(bad)} → ${r.status}`);
    }
    assert.ok(!(await sessions()).some((s) => s.id === forged.id));
    // An admin's API token is no peer certificate either.
    const r = await cp.api('POST', '/api/v1/peers/report', tierReport([forged]));
    assert.equal(r.status, 401);
  });

  void test('a disconnect is a SessionKill carried by the config stream to access tiers but not connectors, audited with who did it; the session leaves the list; unknown ids are 404', async () => {
    const target = session({ user: aliceId, device: laptopId, service: 'db' });
    assert.equal((await report(edge, tierReport([target]))).status, 200);
    const tierSource = new RemoteConfigSource({ controlPlaneUrl: cp.url, tls: () => edge });
    const connectorSource = new RemoteConfigSource({ controlPlaneUrl: cp.url, tls: () => dc1 });
    try {
      await tierSource.ready();
      await connectorSource.ready();
      const r = await cp.api('POST', `/api/v1/sessions/${target.id}/disconnect`, {});
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const body = r.body as { session: LiveSession; by: string; alreadyPending: boolean };
      assert.deepEqual([body.session.id, body.session.accessTier, body.alreadyPending], [target.id, 'edge-1', false]);
      assert.match(body.by, /^token:/);
      const seen: ConfigSnapshot = await eventually(() => {
        const current = tierSource.current();
        return current?.sessionKills?.includes(target.id) === true ? current : undefined;
      }, 'the access tier hears of the kill');
      assert.ok(seen.revision !== undefined);
      assert.equal(connectorSource.current()?.sessionKills, undefined);
      assert.ok(!(await sessions()).some((s) => s.id === target.id), 'a killed session is not listed while its tier still reports it');

      const audit = await cp.api('GET', `/api/v1/audit?kind=SessionKill&name=${target.id}`);
      const events = (audit.body as { events: Array<{ action: string; actor: string; after: { session: Record<string, unknown> } }> }).events;
      assert.deepEqual(events.map((e) => [e.action, e.actor]), [['disconnect', body.by]]);
      assert.deepEqual(events[0].after.session, { accessTier: 'edge-1', service: 'db', user: aliceId, userName: 'alice', device: laptopId, source: target.source, since: target.since });

      const again = await cp.api('POST', `/api/v1/sessions/${target.id}/disconnect`, {});
      assert.equal((again.body as { alreadyPending: boolean }).alreadyPending, true);

      // A tier that reconnects learns of the pending kill from its snapshot.
      const late = new RemoteConfigSource({ controlPlaneUrl: cp.url, tls: () => edge });
      try {
        assert.ok((await late.ready()).sessionKills?.includes(target.id));
      } finally {
        await late.close();
      }
    } finally {
      await tierSource.close();
      await connectorSource.close();
    }
    const unknown = await cp.api('POST', `/api/v1/sessions/${newEventId()}/disconnect`, {});
    assert.equal(unknown.status, 404);
    assert.equal((unknown.body as { error: { code: string } }).error.code, 'SESSION_NOT_FOUND');
    for (const hostile of ['..%2F..%2Fetc', '%3Cscript%3E', 'a'.repeat(200)]) {
      const r = await cp.api('POST', `/api/v1/sessions/${hostile}/disconnect`, {});
      assert.ok(r.status === 400 || r.status === 404, `${hostile} → ${r.status}`);
    }
  });

  void test('CP-01 a viewer lists sessions and peers but cannot disconnect; the session is not killed', async () => {
    const kept = session({ user: aliceId });
    assert.equal((await report(edge, tierReport([kept]))).status, 200);
    assert.equal((await asViewer('GET', '/api/v1/sessions')).status, 200);
    assert.equal((await asViewer('GET', '/api/v1/peers')).status, 200);
    const r = await asViewer('POST', `/api/v1/sessions/${kept.id}/disconnect`, {});
    assert.equal(r.status, 403);
    assert.ok(!(await cp.store.listSessionKills()).some((k) => k.id === kept.id));
    assert.ok((await sessions()).some((s) => s.id === kept.id));
    const anonymous = await requestControlPlane({ baseUrl: cp.url, path: '/api/v1/sessions', method: 'GET', tls: { caPem: cp.ca.certPem } });
    assert.equal(anonymous.status, 401);
  });
});
