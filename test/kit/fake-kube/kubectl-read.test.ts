/**
 * The real kubectl (every version kubectlBinaries() finds) against the fake, straight, no proxy:
 * discovery, get (table, json, watch), logs -f and the multi-megabyte list.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kubectlBinaries, runKubectl, spawnKubectl, writeKubeconfig } from '../kubectl.ts';
import { BIG_NAMESPACE, startFakeKube } from './index.ts';
import type { FakeKube } from './index.ts';

const binaries = await kubectlBinaries();

void test('at least one kubectl binary is available to test with', () => {
  assert.ok(binaries.length > 0);
});

for (const bin of binaries) {
  void describe(`kubectl ${bin.version}`, () => {
    let kube: FakeKube;
    let dir: string;
    let kubeconfig: string;
    const kubectl = (args: string[]) => runKubectl(bin.path, args, { kubeconfig, timeoutMs: 60_000 });

    before(async () => {
      kube = await startFakeKube({ bigPods: 2000 });
      dir = await mkdtemp(join(tmpdir(), 'fake-kube-kubectl-'));
      kubeconfig = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem });
    });
    after(async () => {
      await kube.close();
      await rm(dir, { recursive: true, force: true });
    });

    void test('get pods prints the server-side table with NAME, READY, STATUS, RESTARTS and AGE', async () => {
      kube.clearRequests();
      const r = await kubectl(['get', 'pods']);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.deepEqual(lines[0].split(/\s+/), ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
      assert.deepEqual(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 4).join(' ')), ['web-0 1/1 Running 0', 'web-1 1/1 Running 0', 'web-2 1/1 Running 0']);
      const list = kube.requests.find((q) => q.path === '/api/v1/namespaces/default/pods');
      assert.match(list?.headers.accept ?? '', /as=Table;v=v1;g=meta\.k8s\.io/);
      assert.match(list?.headers['user-agent'] ?? '', /^kubectl\//);
    });

    void test('get pods -o json returns the pods as a parsable list', async () => {
      const r = await kubectl(['get', 'pods', '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      const list = JSON.parse(r.stdout) as { kind: string; items: Array<{ metadata: { name: string }; status: { phase: string } }> };
      assert.equal(list.kind, 'List');
      assert.deepEqual(list.items.map((p) => p.metadata.name), ['web-0', 'web-1', 'web-2']);
      assert.equal(list.items[0].status.phase, 'Running');
    });

    void test('get pods -A and -n work across namespaces', async () => {
      kube.addPod({ name: 'api-0', namespace: 'team-a', phase: 'Pending' });
      const r = await kubectl(['get', 'pods', '-n', 'team-a']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /api-0\s+0\/1\s+ContainerCreating/);
      const all = await kubectl(['get', 'pods', '-A', '-o', 'name']);
      assert.equal(all.code, 0, all.stderr);
      assert.ok(all.stdout.includes('pod/api-0') && all.stdout.includes('pod/web-0'));
      const missing = await kubectl(['get', 'pod', 'nope']);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /pods "nope" not found/);
    });

    void test('get pods -w prints the list, then an injected ADDED and MODIFIED event', async (t) => {
      const proc = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig });
      t.after(() => proc.close());
      await proc.waitForLine(/^web-2\s/);
      await kube.waitForRequest((q) => q.path === '/api/v1/namespaces/default/pods' && q.query.get('watch') === 'true');
      kube.addPod({ name: 'watched-1' });
      assert.match(await proc.waitForLine(/^watched-1\s/), /watched-1\s+1\/1\s+Running/);
      kube.modifyPod('default', 'watched-1', { phase: 'Failed' });
      assert.match(await proc.waitForLine(/^watched-1\s/), /watched-1\s+0\/1\s+Error/);
      assert.equal(proc.stdoutLines.filter((l) => l.startsWith('NAME')).length, 1, 'one header');
    });

    void test('get pod NAME -w watches with a field selector and shows the change', async (t) => {
      kube.clearRequests();
      const proc = await spawnKubectl(bin.path, ['get', 'pod', 'web-1', '-w'], { kubeconfig });
      t.after(() => proc.close());
      await proc.waitForLine(/^web-1\s/);
      const watch = await kube.waitForRequest((q) => q.query.get('watch') === 'true');
      assert.equal(watch.query.get('fieldSelector'), 'metadata.name=web-1');
      kube.modifyPod('default', 'web-1', { restarts: 7 });
      assert.match(await proc.waitForLine(/^web-1\s/), /web-1\s+1\/1\s+Running\s+7/);
    });

    void test('logs -f prints the log so far and then appended lines', async (t) => {
      const proc = await spawnKubectl(bin.path, ['logs', '-f', 'web-0'], { kubeconfig });
      t.after(() => proc.close());
      await proc.waitForLine('web-0 started');
      await kube.waitForRequest((q) => q.path.endsWith('/pods/web-0/log') && q.query.get('follow') === 'true');
      kube.appendLog('default', 'web-0', 'appended one');
      kube.appendLog('default', 'web-0', 'appended two');
      await proc.waitForLine('appended one');
      await proc.waitForLine('appended two');
    });

    void test('get pods -o json on the big namespace returns at least 5 MB that parses', async () => {
      const r = await kubectl(['get', 'pods', '-n', BIG_NAMESPACE, '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(Buffer.byteLength(r.stdout) >= 5_000_000, `${Buffer.byteLength(r.stdout)} bytes`);
      const list = JSON.parse(r.stdout) as { items: unknown[] };
      assert.equal(list.items.length, 2000);
    });
  });

  void test(`kubectl ${bin.version} also works with legacy (non-aggregated) discovery`, async (t) => {
    const kube = await startFakeKube({ aggregatedDiscovery: false });
    const dir = await mkdtemp(join(tmpdir(), 'fake-kube-kubectl-'));
    t.after(async () => {
      await kube.close();
      await rm(dir, { recursive: true, force: true });
    });
    const kubeconfig = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem });
    const r = await runKubectl(bin.path, ['get', 'po', 'web-0', '-o', 'name'], { kubeconfig, timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'pod/web-0');
    assert.ok(kube.requests.some((q) => q.path === '/api/v1'), 'kubectl fell back to /api/v1');
  });
}
