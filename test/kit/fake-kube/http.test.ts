import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { makeClientCert, makeTestCa } from '../certs.ts';
import { startFakeKube, BIG_NAMESPACE } from './index.ts';
import type { FakeKube } from './index.ts';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function get(kube: FakeKube, path: string, headers: Record<string, string> | string[] = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(`${kube.url}${path}`, { ca: kube.caPem, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Opens a streaming GET and hands back the response and a line reader. */
function stream(kube: FakeKube, path: string, headers: Record<string, string> = {}): Promise<{ res: IncomingMessage; next: () => Promise<string>; ended: Promise<void>; abort: () => void }> {
  return new Promise((resolve, reject) => {
    const req = request(`${kube.url}${path}`, { ca: kube.caPem, headers, agent: false }, (res) => {
      let buffered = '';
      const lines: string[] = [];
      let wake: (() => void) | undefined;
      res.setEncoding('utf8');
      res.on('data', (s: string) => {
        buffered += s;
        const parts = buffered.split('\n');
        buffered = parts.pop()!;
        lines.push(...parts);
        wake?.();
      });
      const ended = new Promise<void>((r) => res.on('close', () => r()));
      const next = async (): Promise<string> => {
        while (lines.length === 0) {
          if (res.destroyed || res.complete) throw new Error('stream ended');
          await Promise.race([new Promise<void>((r) => (wake = r)), ended]);
        }
        return lines.shift()!;
      };
      resolve({ res, next, ended, abort: () => req.destroy() });
    });
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
    req.end();
  });
}

const TABLE_ACCEPT = 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json';
const AGGREGATED_ACCEPT = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json';

void describe('fake kube API over HTTPS', () => {
  void test('serves discovery in both the legacy and the aggregated form', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());

    const version = JSON.parse((await get(kube, '/version')).body) as { major: string; gitVersion: string };
    assert.equal(version.major, '1');
    assert.match(version.gitVersion, /^v1\.32\./);

    const legacy = JSON.parse((await get(kube, '/api')).body) as { kind: string; versions: string[] };
    assert.deepEqual([legacy.kind, legacy.versions], ['APIVersions', ['v1']]);
    const groups = JSON.parse((await get(kube, '/apis')).body) as { kind: string };
    assert.equal(groups.kind, 'APIGroupList');

    const aggregated = await get(kube, '/api', { Accept: AGGREGATED_ACCEPT });
    assert.equal(aggregated.headers['content-type'], 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList');
    const list = JSON.parse(aggregated.body) as { items: Array<{ versions: Array<{ resources: Array<{ resource: string; subresources: Array<{ subresource: string }> }> }> }> };
    const pods = list.items[0].versions[0].resources.find((r) => r.resource === 'pods');
    assert.deepEqual(pods?.subresources.map((s) => s.subresource).sort(), ['attach', 'exec', 'log', 'portforward', 'status']);

    const v1 = JSON.parse((await get(kube, '/api/v1')).body) as { resources: Array<{ name: string }> };
    for (const name of ['pods', 'pods/log', 'pods/exec', 'pods/portforward', 'namespaces']) {
      assert.ok(v1.resources.some((r) => r.name === name), `${name} in /api/v1`);
    }
    assert.equal((await get(kube, '/openapi/v2')).status, 404);
  });

  void test('records every request with its raw headers, query and remote address', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    await get(kube, '/api/v1/namespaces/default/pods?limit=500&labelSelector=app%3Dweb', ['Host', `127.0.0.1:${kube.port}`, 'X-Test-Header', 'One', 'x-test-header', 'two']);
    const rec = kube.requests.at(-1)!;
    assert.equal(rec.method, 'GET');
    assert.equal(rec.path, '/api/v1/namespaces/default/pods');
    assert.equal(rec.query.get('labelSelector'), 'app=web');
    assert.equal(rec.remoteAddress, '127.0.0.1');
    const raw = rec.rawHeaders.filter((_, i) => i % 2 === 0 && /^x-test-header$/i.test(rec.rawHeaders[i]));
    assert.deepEqual(raw, ['X-Test-Header', 'x-test-header'], 'raw header names keep their casing and repetition');
    assert.ok(rec.time <= Date.now());
    kube.clearRequests();
    assert.equal(kube.requests.length, 0);
  });

  void test('lists and gets pods as JSON and as Table, with selectors', async (t) => {
    const kube = await startFakeKube({ pods: 2 });
    t.after(() => kube.close());
    kube.addPod({ name: 'db-0', namespace: 'data', labels: { app: 'db' }, containers: ['postgres', 'exporter'], restarts: 2 });

    const list = JSON.parse((await get(kube, '/api/v1/namespaces/default/pods')).body) as { kind: string; items: Array<{ metadata: { name: string } }> };
    assert.equal(list.kind, 'PodList');
    assert.deepEqual(list.items.map((p) => p.metadata.name), ['web-0', 'web-1']);

    const all = JSON.parse((await get(kube, '/api/v1/pods')).body) as { items: Array<{ metadata: { namespace: string; name: string } }> };
    assert.deepEqual(all.items.map((p) => `${p.metadata.namespace}/${p.metadata.name}`), ['data/db-0', 'default/web-0', 'default/web-1']);

    const byLabel = JSON.parse((await get(kube, '/api/v1/pods?labelSelector=app%3Ddb')).body) as { items: unknown[] };
    assert.equal(byLabel.items.length, 1);
    const byName = JSON.parse((await get(kube, '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1')).body) as { items: Array<{ metadata: { name: string } }> };
    assert.deepEqual(byName.items.map((p) => p.metadata.name), ['web-1']);

    const table = await get(kube, '/api/v1/namespaces/data/pods', { Accept: TABLE_ACCEPT });
    assert.equal(table.headers['content-type'], 'application/json;as=Table;v=v1;g=meta.k8s.io');
    const parsed = JSON.parse(table.body) as { kind: string; columnDefinitions: Array<{ name: string; priority: number }>; rows: Array<{ cells: string[]; object: { kind: string } }> };
    assert.equal(parsed.kind, 'Table');
    assert.deepEqual(parsed.columnDefinitions.filter((c) => c.priority === 0).map((c) => c.name), ['Name', 'Ready', 'Status', 'Restarts', 'Age']);
    assert.deepEqual(parsed.rows[0].cells.slice(0, 4), ['db-0', '2/2', 'Running', '4']);
    assert.equal(parsed.rows[0].object.kind, 'PartialObjectMetadata');

    const pod = JSON.parse((await get(kube, '/api/v1/namespaces/data/pods/db-0')).body) as { kind: string; spec: { containers: Array<{ name: string }> } };
    assert.equal(pod.kind, 'Pod');
    assert.deepEqual(pod.spec.containers.map((c) => c.name), ['postgres', 'exporter']);

    const missing = await get(kube, '/api/v1/namespaces/data/pods/nope');
    assert.equal(missing.status, 404);
    assert.deepEqual(JSON.parse(missing.body), { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'pods "nope" not found', reason: 'NotFound', details: { name: 'nope', kind: 'pods' }, code: 404 });
    assert.equal((await get(kube, '/api/v1/pods?labelSelector=%3D%3D%3D')).status, 400);
  });

  void test('a watch without resourceVersion starts with ADDED for every pod, then streams changes', async (t) => {
    const kube = await startFakeKube({ pods: 2 });
    t.after(() => kube.close());
    const w = await stream(kube, '/api/v1/namespaces/default/pods?watch=true');
    t.after(() => w.abort());
    assert.equal(w.res.headers['transfer-encoding'], 'chunked');
    const first = [JSON.parse(await w.next()), JSON.parse(await w.next())] as Array<{ type: string; object: { metadata: { name: string } } }>;
    assert.deepEqual(first.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED web-0', 'ADDED web-1']);
    kube.addPod({ name: 'web-9' });
    kube.addPod({ name: 'elsewhere', namespace: 'other' });
    kube.modifyPod('default', 'web-0', { phase: 'Failed' });
    kube.deletePod('default', 'web-1');
    const rest = [await w.next(), await w.next(), await w.next()].map((l) => JSON.parse(l) as { type: string; object: { metadata: { name: string }; status: { phase: string } } });
    assert.deepEqual(rest.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED web-9', 'MODIFIED web-0', 'DELETED web-1']);
    assert.equal(rest[1].object.status.phase, 'Failed');
  });

  void test('a watch from a list resourceVersion sends only later events, and a too old one gets 410 Expired', async (t) => {
    const kube = await startFakeKube({ pods: 1 });
    t.after(() => kube.close());
    kube.addPod({ name: 'before' });
    const list = JSON.parse((await get(kube, '/api/v1/namespaces/default/pods')).body) as { metadata: { resourceVersion: string } };
    kube.addPod({ name: 'after' });
    const w = await stream(kube, `/api/v1/namespaces/default/pods?watch=1&resourceVersion=${list.metadata.resourceVersion}`);
    t.after(() => w.abort());
    const e = JSON.parse(await w.next()) as { type: string; object: { metadata: { name: string } } };
    assert.equal(`${e.type} ${e.object.metadata.name}`, 'ADDED after', 'the event between list and watch is replayed, nothing older');

    const expired = await get(kube, '/api/v1/namespaces/default/pods?watch=true&resourceVersion=5');
    const event = JSON.parse(expired.body) as { type: string; object: { code: number; reason: string } };
    assert.deepEqual([event.type, event.object.code, event.object.reason], ['ERROR', 410, 'Expired']);
  });

  void test('a Table watch carries column definitions only in its first event', async (t) => {
    const kube = await startFakeKube({ pods: 1 });
    t.after(() => kube.close());
    const w = await stream(kube, '/api/v1/namespaces/default/pods?watch=true', { Accept: TABLE_ACCEPT });
    t.after(() => w.abort());
    const first = JSON.parse(await w.next()) as { object: { kind: string; columnDefinitions?: unknown[]; rows: Array<{ cells: string[] }> } };
    assert.equal(first.object.kind, 'Table');
    assert.ok((first.object.columnDefinitions?.length ?? 0) > 0);
    kube.modifyPod('default', 'web-0', { ready: false });
    const second = JSON.parse(await w.next()) as { type: string; object: { columnDefinitions?: unknown[]; rows: Array<{ cells: string[] }> } };
    assert.equal(second.type, 'MODIFIED');
    assert.equal(second.object.columnDefinitions, undefined);
    assert.equal(second.object.rows[0].cells[1], '0/1');
  });

  void test('serves logs, follows appended lines, and ends followers when the pod is deleted', async (t) => {
    const kube = await startFakeKube({ pods: 1 });
    t.after(() => kube.close());
    kube.appendLog('default', 'web-0', 'line two');
    assert.equal((await get(kube, '/api/v1/namespaces/default/pods/web-0/log')).body, 'web-0 started\nline two\n');
    assert.equal((await get(kube, '/api/v1/namespaces/default/pods/web-0/log?tailLines=1')).body, 'line two\n');
    assert.equal((await get(kube, '/api/v1/namespaces/default/pods/web-0/log?container=nope')).status, 400);

    const f = await stream(kube, '/api/v1/namespaces/default/pods/web-0/log?follow=true&container=main');
    t.after(() => f.abort());
    assert.equal(await f.next(), 'web-0 started');
    assert.equal(await f.next(), 'line two');
    kube.appendLog('default', 'web-0', 'line three');
    assert.equal(await f.next(), 'line three');
    kube.deletePod('default', 'web-0');
    await f.ended;
  });

  void test('with bearerToken set, requests without it get a 401 Status and are recorded as refused', async (t) => {
    const kube = await startFakeKube({ bearerToken: 's3cret' });
    t.after(() => kube.close());
    const refused = await get(kube, '/api/v1/pods');
    assert.equal(refused.status, 401);
    assert.equal((JSON.parse(refused.body) as { reason: string }).reason, 'Unauthorized');
    assert.equal(kube.requests.at(-1)!.user, undefined);
    assert.equal((await get(kube, '/api/v1/pods', { Authorization: 'Bearer s3cret' })).status, 200);
    assert.equal(kube.requests.at(-1)!.user?.user, 'token-user');
  });

  void test('the authenticate hook decides who the request is', async (t) => {
    const kube = await startFakeKube({ authenticate: (req) => (req.headers['x-user'] === 'alice' ? { user: 'alice', groups: ['eng'] } : undefined) });
    t.after(() => kube.close());
    assert.equal((await get(kube, '/api')).status, 401);
    assert.equal((await get(kube, '/api', { 'X-User': 'alice' })).status, 200);
    assert.deepEqual(kube.requests.at(-1)!.user, { user: 'alice', groups: ['eng'] });
  });

  void test('requireClientCert refuses clients without a certificate from the client CA; the hook sees the certificate', async (t) => {
    const clientCa = await makeTestCa();
    const alice = await makeClientCert(clientCa, { commonName: 'alice', organizations: ['eng'] });
    const kube = await startFakeKube({
      requireClientCert: true,
      clientCaPem: clientCa.certPem,
      authenticate: (req) => {
        const cert = (req.socket as TLSSocket).getPeerCertificate();
        return { user: String(cert.subject.CN), groups: [String(cert.subject.O)] };
      },
    });
    t.after(() => kube.close());
    await assert.rejects(get(kube, '/version'));
    const ok = await new Promise<number>((resolve, reject) => {
      request(`${kube.url}/api`, { ca: kube.caPem, cert: alice.certPem, key: alice.keyPem, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(ok, 200);
    assert.deepEqual(kube.requests.at(-1)!.user, { user: 'alice', groups: ['eng'] });
  });

  void test('a watch with timeoutSeconds ends by itself, and events list empty', async (t) => {
    const kube = await startFakeKube({ pods: 1 });
    t.after(() => kube.close());
    const w = await stream(kube, '/api/v1/pods?watch=true&timeoutSeconds=1');
    assert.match(await w.next(), /"ADDED"/);
    await w.ended;
    const events = JSON.parse((await get(kube, '/api/v1/namespaces/default/events')).body) as { kind: string; items: unknown[] };
    assert.deepEqual([events.kind, events.items], ['EventList', []]);
  });

  void test('bigPods makes a multi-megabyte pod list in its own namespace', async (t) => {
    const kube = await startFakeKube({ bigPods: 2000 });
    t.after(() => kube.close());
    const res = await get(kube, `/api/v1/namespaces/${BIG_NAMESPACE}/pods`);
    const list = JSON.parse(res.body) as { items: unknown[] };
    assert.equal(list.items.length, 2000);
    assert.ok(res.body.length >= 4_000_000, `${res.body.length} bytes`);
    const defaults = JSON.parse((await get(kube, '/api/v1/namespaces/default/pods')).body) as { items: unknown[] };
    assert.equal(defaults.items.length, 3);
  });

  void test('close() ends open watches and log follows and resolves once every socket is gone', async () => {
    const kube = await startFakeKube();
    const w = await stream(kube, '/api/v1/pods?watch=true');
    const f = await stream(kube, '/api/v1/namespaces/default/pods/web-0/log?follow=true');
    await w.next();
    await f.next();
    await kube.close();
    await Promise.all([w.ended, f.ended]);
    await assert.rejects(get(kube, '/version'), /ECONNREFUSED/);
  });

  void test('waitForRequest resolves for a request that arrives later, and fails on close', async () => {
    const kube = await startFakeKube();
    const waiting = kube.waitForRequest((r) => r.path === '/api/v1/namespaces');
    await get(kube, '/api/v1/namespaces');
    assert.equal((await waiting).method, 'GET');
    const never = assert.rejects(kube.waitForRequest((r) => r.path === '/never'), /closed/);
    await kube.close();
    await never;
  });
});
