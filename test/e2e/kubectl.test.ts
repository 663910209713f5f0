/**
 * The real kubectl through the whole chain (client proxy, access tier, connector, fake API), with
 * every kubectl binary the kit finds, both ways kubectl can be pointed at the proxy: HTTPS_PROXY
 * with the service domain as server, and proxy-url in the kubeconfig. One chain is shared: the cases
 * are independent of each other (each uses its own pods and log lines).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { startEchoServer } from '../../src/lib/tunnel/harness.testing.ts';
import type { TestServer } from '../../src/lib/tunnel/harness.testing.ts';
import type { AccessEvent } from '../../src/lib/audit/index.ts';
import { BIG_NAMESPACE } from '../kit/fake-kube/index.ts';
import { CHAIN_NAMES, startChain } from '../kit/chain.ts';
import type { Chain, ProxyStyle } from '../kit/chain.ts';
import { kubectlBinaries, runKubectl, spawnKubectl } from '../kit/kubectl.ts';

const binaries = await kubectlBinaries();
const STYLES: ProxyStyle[] = ['https-proxy', 'proxy-url'];
/** Pods of about 1 KiB of annotations each: `get pods -n big -o json` prints a little over 5 MB. */
const BIG_PODS = 1200;
const KUBECTL_TIMEOUT_MS = 60_000;

/** Polls until `check` holds; fails (never hangs) after timeoutMs. */
async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sends `size` random bytes through a local port and checks the same bytes come back. */
async function echoThrough(port: number, size: number): Promise<{ sent: string; received: string }> {
  const payload = randomBytes(size);
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  const chunks: Buffer[] = [];
  let length = 0;
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => socket.write(payload));
    socket.on('data', (b: Buffer) => {
      chunks.push(b);
      length += b.length;
      if (length >= size) resolve();
    });
    socket.once('error', reject);
    socket.once('close', () => (length >= size ? resolve() : reject(new Error(`the port-forward closed after ${length} of ${size} bytes`))));
  });
  socket.destroy();
  return { sent: createHash('sha256').update(payload).digest('hex'), received: createHash('sha256').update(Buffer.concat(chunks)).digest('hex') };
}

void describe('kubectl through the whole chain', () => {
  let chain: Chain;
  let echo: TestServer;

  before(async () => {
    chain = await startChain({ kube: { bigPods: BIG_PODS } });
    echo = await startEchoServer();
  });
  after(async () => {
    await chain?.close();
    await echo?.close();
  });

  void test('at least one kubectl binary is available to test with', () => {
    assert.ok(binaries.length > 0);
  });

  for (const bin of binaries) {
    for (const style of STYLES) {
      void describe(`kubectl ${bin.version} with ${style}`, () => {
        const tag = `${bin.version.replace(/[^0-9a-z]/gi, '')}-${style}`;
        let setup: { kubeconfig: string; env: Record<string, string> };
        let eventMark = 0;
        let connectionMark = 0;
        const kubectl = (args: string[]) => runKubectl(bin.path, args, { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: KUBECTL_TIMEOUT_MS });
        const spawn = (args: string[]) => spawnKubectl(bin.path, args, { kubeconfig: setup.kubeconfig, env: setup.env });

        before(() => {
          setup = chain.kubectlSetup(style);
          eventMark = chain.events.events.length;
          connectionMark = chain.proxy.stats().connections;
        });

        void test('get pods prints the table of pods', async () => {
          const r = await kubectl(['get', 'pods']);
          assert.equal(r.code, 0, r.stderr);
          const lines = r.stdout.trim().split('\n');
          assert.deepEqual(lines[0].split(/\s+/), ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
          for (const name of ['web-0', 'web-1', 'web-2']) assert.match(r.stdout, new RegExp(`^${name}\\s+1/1\\s+Running\\s+0\\s`, 'm'));
        });

        void test('get pods -w receives a pod added while it watches', async (t) => {
          chain.kube.clearRequests();
          const proc = await spawn(['get', 'pods', '-w']);
          t.after(() => proc.close());
          await proc.waitForLine(/^web-2\s/);
          await chain.kube.waitForRequest((q) => q.path === '/api/v1/namespaces/default/pods' && q.query.get('watch') === 'true');
          chain.kube.addPod({ name: `watched-${tag}` });
          assert.match(await proc.waitForLine(new RegExp(`^watched-${tag}\\s`)), /1\/1\s+Running/);
        });

        void test('logs -f receives lines appended while it follows', async (t) => {
          const pod = `logger-${tag}`;
          chain.kube.addPod({ name: pod });
          chain.kube.appendLog('default', pod, 'first line');
          const proc = await spawn(['logs', '-f', pod]);
          t.after(() => proc.close());
          await proc.waitForLine('first line');
          chain.kube.appendLog('default', pod, `appended for ${tag}`);
          await proc.waitForLine(`appended for ${tag}`);
          chain.kube.appendLog('default', pod, 'and another');
          await proc.waitForLine('and another');
        });

        void test('exec runs a command and returns its output and exit code', async () => {
          const ok = await kubectl(['exec', 'web-0', '--', 'echo', 'hello', tag]);
          assert.equal(ok.code, 0, ok.stderr);
          assert.equal(ok.stdout, `hello ${tag}\n`);
          const failing = await kubectl(['exec', 'web-1', '--', 'sh', '-c', `echo before-exit-${tag}; exit 3`]);
          assert.equal(failing.code, 3, failing.stderr);
          assert.equal(failing.stdout, `before-exit-${tag}\n`);
          const recorded = chain.kube.execs.filter((e) => e.command.some((c) => c.includes(tag)));
          assert.deepEqual(recorded.map((e) => e.exitCode), [0, 3]);
        });

        for (const transport of ['websocket', 'spdy'] as const) {
          void test(`port-forward (${transport === 'websocket' ? 'SPDY in a WebSocket' : 'plain SPDY upgrade'}) carries bytes both ways to the pod port`, async (t) => {
            const pod = `forward-${transport}-${tag}`;
            chain.kube.addPod({ name: pod });
            chain.kube.setPortForwardTarget('default', pod, 8080, echo.port);
            const extraEnv: Record<string, string> = transport === 'spdy' ? { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {};
            const proc = await spawnKubectl(bin.path, ['port-forward', '--address', '127.0.0.1', pod, ':8080'], { kubeconfig: setup.kubeconfig, env: { ...setup.env, ...extraEnv } });
            t.after(() => proc.close());
            const line = await proc.waitForLine(/^Forwarding from 127\.0\.0\.1:\d+ -> 8080/);
            const localPort = Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
            const acceptedBefore = echo.accepted;
            const small = await echoThrough(localPort, 1024);
            assert.equal(small.received, small.sent);
            const large = await echoThrough(localPort, 2 * 1024 * 1024);
            assert.equal(large.received, large.sent);
            assert.equal(echo.accepted - acceptedBefore, 2, 'each local connection reached the target once');
            const forwards = chain.kube.portForwards.filter((f) => f.pod === pod);
            assert.ok(forwards.length >= 2 && forwards.every((f) => f.port === 8080 && f.transport === transport), JSON.stringify(forwards));
          });
        }

        void test('a list of more than 5 MB arrives whole (-o json)', async () => {
          const r = await kubectl(['get', 'pods', '-n', BIG_NAMESPACE, '-o', 'json']);
          assert.equal(r.code, 0, r.stderr);
          assert.ok(r.stdout.length > 5_000_000, `only ${r.stdout.length} bytes`);
          const list = JSON.parse(r.stdout) as { items: Array<{ metadata: { name: string; annotations: Record<string, string> } }> };
          assert.equal(list.items.length, BIG_PODS);
          assert.equal(list.items[BIG_PODS - 1].metadata.name, `big-${String(BIG_PODS - 1).padStart(5, '0')}`);
          assert.equal(list.items[0].metadata.annotations['causeway.test/filler'].length, 1000);
        });

        void test('every connection kubectl made is an allow event with user, device, service, bytes and duration', async () => {
          // Events are written when a connection ends; kubectl has exited, so every one is ending.
          await until(() => chain.proxy.stats().active === 0 && chain.accessTier.liveConnections().length === 0, 10_000, 'every connection closing');
          const connections = chain.proxy.stats().connections - connectionMark;
          const events = chain.eventsSince(eventMark).filter((e: AccessEvent) => e.service === CHAIN_NAMES.service);
          assert.ok(connections > 0);
          assert.equal(events.length, connections, `one event per proxied connection: ${JSON.stringify(events.map((e) => e.closeReason))}`);
          for (const e of events) {
            assert.equal(e.decision, 'allow');
            assert.equal(e.user, CHAIN_NAMES.user);
            assert.equal(e.device, CHAIN_NAMES.device);
            assert.equal(e.target, `${chain.domain}:443`);
            assert.equal(e.via, 'connector');
            assert.equal(e.connector, CHAIN_NAMES.connector);
            assert.ok((e.bytesUp ?? 0) > 0 && (e.bytesDown ?? 0) > 0, `bytes counted: ${JSON.stringify(e)}`);
            assert.ok(typeof e.durationMs === 'number' && e.durationMs >= 0);
          }
          const biggest = Math.max(...events.map((e) => e.bytesDown ?? 0));
          assert.ok(biggest > 2 * 1024 * 1024, 'the port-forward or the big list shows in the byte counts');
        });
      });
    }
  }
});
