/** Kube events (issue 6) through the events ingest: only kube proxies send them, each naming itself; stored once per id. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { httpEventSender, newEventId } from '../../lib/audit/index.ts';
import type { KubeEvent } from '../../lib/audit/index.ts';
import { requestControlPlane } from '../../lib/enroll/transport.ts';
import type { PeerTlsMaterial } from '../../lib/enroll/transport.ts';
import { startTestControlPlane } from '../stream/harness.testing.ts';
import type { IssuedPeer, TestControlPlane } from '../stream/harness.testing.ts';
import { eventsIngestPlugin } from './index.ts';

function kubeEvent(kubeProxy: string, i: number, extra: Partial<KubeEvent> = {}): KubeEvent {
  return {
    id: newEventId(),
    time: new Date().toISOString(),
    type: 'kube-session',
    clusterName: 'prod',
    kubeProxy,
    user: 'ada@example.com',
    groups: ['eng', 'system:authenticated'],
    verb: 'create',
    resource: 'pods',
    subresource: 'exec',
    namespace: 'prod',
    name: 'web-0',
    path: '/api/v1/namespaces/prod/pods/web-0/exec',
    code: 101,
    latencyMs: 4,
    decision: 'allow',
    source: `127.0.0.1:${20_000 + i}`,
    command: ['sh', '-c', 'id'],
    interactive: true,
    tty: true,
    durationMs: 1200,
    transport: 'websocket',
    ...extra,
  };
}

void describe('kube events ingest', () => {
  let cp: TestControlPlane;
  let kubeProxy: IssuedPeer;
  let edge: IssuedPeer;

  before(async () => {
    cp = await startTestControlPlane({ plugins: [(app, o) => eventsIngestPlugin(app, o)] });
    kubeProxy = await cp.issue('kube-proxy', { name: 'kp-prod' });
    edge = await cp.issue('access-tier', { name: 'edge-1' });
  });
  after(() => cp.close());

  const post = (tls: PeerTlsMaterial, body: unknown): ReturnType<typeof requestControlPlane> => requestControlPlane({ baseUrl: cp.url, path: '/api/v1/events/batch', method: 'POST', body, tls });

  void test('a kube proxy\'s kube events are stored once per id and listed with their command', async () => {
    const send = httpEventSender({ controlPlaneUrl: cp.url, tls: () => kubeProxy });
    const batch = [kubeEvent('kp-prod', 1), kubeEvent('kp-prod', 2, { type: 'kube-request', command: undefined, code: 403, decision: 'deny', reason: 'rule-deny' })];
    assert.deepEqual(await send(batch), { inserted: 2, duplicates: 0, rejected: 0 });
    assert.deepEqual(await send(batch), { inserted: 0, duplicates: 2, rejected: 0 });
    const sessions = (await cp.store.queryKubeEvents({ type: 'kube-session', clusterName: 'prod' })).events;
    assert.deepEqual(sessions.find((e) => e.id === batch[0].id)?.command, ['sh', '-c', 'id']);
    const denied = (await cp.store.queryKubeEvents({ decision: 'deny' })).events;
    assert.equal(denied.find((e) => e.id === batch[1].id)?.reason, 'rule-deny');
  });

  void test('kube events naming another kube proxy, from an access tier, or malformed are rejected; the rest are stored', async () => {
    const good = kubeEvent('kp-prod', 3);
    const foreign = kubeEvent('kp-other', 4);
    const bad = { ...kubeEvent('kp-prod', 5), transport: 'carrier-pigeon' };
    const r = await post(kubeProxy, { events: [good, foreign, bad] });
    assert.equal(r.status, 200);
    const body = r.body as { inserted: number; rejected: number; problems: Array<{ index: number; message: string }> };
    assert.deepEqual([body.inserted, body.rejected, body.problems.map((p) => p.index)], [1, 2, [1, 2]]);
    assert.match(body.problems[0].message, /kp-other/);
    const fromEdge = await post(edge, { events: [kubeEvent('edge-1', 6)] });
    const edgeBody = fromEdge.body as { inserted: number; rejected: number; problems: Array<{ message: string }> };
    assert.deepEqual([edgeBody.inserted, edgeBody.rejected], [0, 1]);
    assert.match(edgeBody.problems[0].message, /only from kube proxies/);
  });
});
