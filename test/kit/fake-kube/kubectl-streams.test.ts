/**
 * The real kubectl (every version kubectlBinaries() finds) against the fake, straight, no proxy:
 * exec, attach and cp over both WebSocket and the SPDY/3.1 fallback, and port-forward over both
 * the WebSocket tunnel and SPDY.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kubectlBinaries, runKubectl, spawnKubectl, writeKubeconfig } from '../kubectl.ts';
import { startFakeKube } from './index.ts';
import type { FakeKube } from './index.ts';

const binaries = await kubectlBinaries();

/** Connects to a local port, sends payload, half-closes, and collects the answer until EOF. */
function exchange(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => socket.end(payload));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(chunks));
    });
    socket.on('error', reject);
  });
}

/** The pod's service: greets, then reports how many bytes arrived once the client half-closes. */
async function sinkService(): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.write('hello from the pod\n');
    let n = 0;
    socket.on('data', (c: Buffer) => (n += c.length));
    socket.on('end', () => socket.end(`received ${n} bytes\n`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

void test('at least one kubectl binary is available to test with', () => {
  assert.ok(binaries.length > 0);
});

for (const bin of binaries) {
  void describe(`kubectl ${bin.version}`, () => {
    let kube: FakeKube;
    let dir: string;
    let kubeconfig: string;
    let sink: { server: Server; port: number };
    const kubectl = (args: string[], opts: { stdin?: string; env?: Record<string, string> } = {}) => runKubectl(bin.path, args, { kubeconfig, timeoutMs: 60_000, ...opts });

    before(async () => {
      kube = await startFakeKube();
      sink = await sinkService();
      kube.setPortForwardTarget('default', 'web-1', 5432, sink.port);
      dir = await mkdtemp(join(tmpdir(), 'fake-kube-kubectl-'));
      kubeconfig = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem });
    });
    after(async () => {
      await kube.close();
      sink.server.close();
      await rm(dir, { recursive: true, force: true });
    });

    void test('exec POD -- echo hello prints hello over the v5 WebSocket protocol and is recorded', async () => {
      kube.clearRequests();
      const before = kube.execs.length;
      const r = await kubectl(['exec', 'web-0', '--', 'echo', 'hello']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello\n');
      const upgrade = kube.requests.find((q) => q.upgrade);
      assert.equal(upgrade?.method, 'GET');
      assert.equal(upgrade?.headers.upgrade?.toLowerCase(), 'websocket');
      assert.match(String(upgrade?.headers['sec-websocket-protocol']), /v5\.channel\.k8s\.io/);
      const exec = kube.execs[before];
      assert.deepEqual([exec?.pod, exec?.command, exec?.protocol, exec?.exitCode], ['web-0', ['echo', 'hello'], 'v5.channel.k8s.io', 0]);
    });

    void test("a command's non-zero exit code becomes kubectl's exit code", async () => {
      const r = await kubectl(['exec', 'web-0', '--', 'sh', '-c', 'exit 3']);
      assert.equal(r.code, 3);
      assert.match(r.stderr, /command terminated with exit code 3/);
      assert.equal((await kubectl(['exec', 'web-0', '--', 'false'])).code, 1);
    });

    void test('exec -i POD -- cat returns stdin', async () => {
      const input = `line one\nline two ${randomBytes(8).toString('hex')}\n`;
      const r = await kubectl(['exec', '-i', 'web-0', '--', 'cat'], { stdin: input });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, input);
    });

    void test('an unknown command is an error from the server', async () => {
      const r = await kubectl(['exec', 'web-0', '--', 'no-such-tool']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /executable file not found/);
    });

    for (const [transport, env] of [['websocket', {}], ['spdy', { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' }]] as const) {
      void test(`exec over ${transport}: output, stdin, exit codes and the negotiated protocol`, async () => {
        kube.clearRequests();
        const before = kube.execs.length;
        const r = await kubectl(['exec', 'web-0', '--', 'echo', 'hello'], { env });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, 'hello\n');
        const upgrade = kube.requests.find((q) => q.upgrade);
        if (transport === 'spdy') {
          assert.equal(upgrade?.method, 'POST');
          assert.equal(upgrade?.headers.upgrade, 'SPDY/3.1');
          assert.match(String(upgrade?.headers['x-stream-protocol-version']), /v4\.channel\.k8s\.io/);
        }
        assert.equal(kube.execs[before]?.transport, transport);
        assert.equal(kube.execs[before]?.exitCode, 0);
        const input = `stdin ${randomBytes(8).toString('hex')}\n`.repeat(2000);
        const cat = await kubectl(['exec', '-i', 'web-0', '--', 'cat'], { stdin: input, env });
        assert.equal(cat.code, 0, cat.stderr);
        assert.equal(cat.stdout, input);
        const failed = await kubectl(['exec', 'web-0', '--', 'sh', '-c', 'echo oops; exit 4'], { env });
        assert.equal(failed.code, 4);
        assert.equal(failed.stdout, 'oops\n');
        assert.match(failed.stderr, /command terminated with exit code 4/);
        const stderr = await kubectl(['exec', 'web-0', '--', 'cat', '/nope'], { env });
        assert.equal(stderr.code, 1);
        assert.match(stderr.stderr, /cat: \/nope: No such file or directory/);
        const missing = await kubectl(['exec', 'web-0', '--', 'no-such-tool'], { env });
        assert.equal(missing.code, 1);
        assert.match(missing.stderr, /executable file not found/);
      });

      void test(`attach -i over ${transport} reaches the main process`, async () => {
        const before = kube.execs.length;
        const r = await kubectl(['attach', '-i', 'web-2'], { stdin: 'to the main process\n', env });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, 'to the main process\n');
        assert.deepEqual([kube.execs[before]?.subresource, kube.execs[before]?.pod, kube.execs[before]?.transport], ['attach', 'web-2', transport]);
      });

      void test(`cp over ${transport} copies files and directories into a pod and back`, async () => {
        const local = join(dir, `cp-${transport}`);
        await mkdir(join(local, 'tree', 'sub'), { recursive: true });
        const content = randomBytes(300_000);
        await writeFile(join(local, 'blob.bin'), content);
        await writeFile(join(local, 'tree', 'a.txt'), 'alpha\n');
        await writeFile(join(local, 'tree', 'sub', 'b.txt'), 'beta\n');
        const toPod = await kubectl(['cp', join(local, 'blob.bin'), `web-1:/tmp/${transport}/blob.bin`], { env });
        assert.notEqual(toPod.code, 0, 'the directory does not exist in the pod yet');
        assert.equal((await kubectl(['exec', 'web-1', '--', 'mkdir', '-p', `/tmp/${transport}`], { env })).code, 0);
        const copied = await kubectl(['cp', join(local, 'blob.bin'), `web-1:/tmp/${transport}/blob.bin`], { env });
        assert.equal(copied.code, 0, copied.stderr);
        assert.ok(kube.readFile('default', 'web-1', `/tmp/${transport}/blob.bin`)?.equals(content));
        const intoDir = await kubectl(['cp', join(local, 'tree'), `web-1:/tmp/${transport}`], { env });
        assert.equal(intoDir.code, 0, intoDir.stderr);
        assert.equal(kube.readFile('default', 'web-1', `/tmp/${transport}/tree/sub/b.txt`)?.toString(), 'beta\n');

        kube.writeFile('default', 'web-1', '/var/data/report.txt', 'from the pod\n');
        const fromPod = await kubectl(['cp', 'web-1:/var/data/report.txt', join(local, 'report.txt')], { env });
        assert.equal(fromPod.code, 0, fromPod.stderr);
        assert.equal(await readFile(join(local, 'report.txt'), 'utf8'), 'from the pod\n');
        const treeBack = await kubectl(['cp', `web-1:/tmp/${transport}/tree`, join(local, 'back')], { env });
        assert.equal(treeBack.code, 0, treeBack.stderr);
        assert.equal(await readFile(join(local, 'back', 'sub', 'b.txt'), 'utf8'), 'beta\n');
        const blobBack = await kubectl(['cp', `web-1:/tmp/${transport}/blob.bin`, join(local, 'blob.back')], { env });
        assert.equal(blobBack.code, 0, blobBack.stderr);
        assert.ok((await readFile(join(local, 'blob.back'))).equals(content));
        assert.ok(kube.execs.some((e) => e.transport === transport && e.command[0] === 'tar'));
      });
    }

    for (const [transport, env] of [['websocket', {}], ['spdy', { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' }]] as const) {
      void test(`port-forward over ${transport} carries bytes both ways to the pod's service`, async (t) => {
        kube.clearRequests();
        const proc = await spawnKubectl(bin.path, ['port-forward', 'pod/web-1', ':5432', '--address', '127.0.0.1'], { kubeconfig, env });
        t.after(() => proc.close());
        const line = await proc.waitForLine(/Forwarding from 127\.0\.0\.1:\d+ -> 5432/);
        const port = Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
        const payload = randomBytes(200_000);
        assert.equal((await exchange(port, payload)).toString(), 'hello from the pod\nreceived 200000 bytes\n');
        assert.equal((await exchange(port, Buffer.from('again'))).toString(), 'hello from the pod\nreceived 5 bytes\n');
        const upgrade = kube.requests.find((q) => q.upgrade);
        if (transport === 'websocket') {
          assert.equal(upgrade?.method, 'GET');
          assert.equal(upgrade?.headers['sec-websocket-protocol'], 'SPDY/3.1+portforward.k8s.io');
        } else {
          assert.equal(upgrade?.method, 'POST');
          assert.equal(upgrade?.headers.upgrade, 'SPDY/3.1');
          assert.equal(upgrade?.headers['x-stream-protocol-version'], 'portforward.k8s.io');
        }
        assert.deepEqual(kube.portForwards.slice(-2).map((p) => [p.pod, p.port, p.transport]), [['web-1', 5432, transport], ['web-1', 5432, transport]]);
      });

      void test(`port-forward over ${transport} to a port without a target reaches the built-in echo`, async (t) => {
        const proc = await spawnKubectl(bin.path, ['port-forward', 'pod/web-0', ':8080', '--address', '127.0.0.1'], { kubeconfig, env });
        t.after(() => proc.close());
        const line = await proc.waitForLine(/Forwarding from 127\.0\.0\.1:\d+ -> 8080/);
        const port = Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
        const payload = randomBytes(1_000_000);
        assert.ok((await exchange(port, payload)).equals(payload));
      });
    }
  });
}
