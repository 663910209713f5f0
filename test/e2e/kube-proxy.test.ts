/**
 * The kube proxy end to end (issue 6), with every kubectl the kit has and the exec credential plugin:
 *
 *   kubectl (causeway kube-credential --cluster e2e) ──> client proxy ══> access tier <══ connector
 *       ──> causeway kube-proxy (enrolled, following the config stream) ──Impersonate-*──> fake API
 *
 * The fake API trusts only the kube proxy's own token and requires impersonation, so every request
 * it serves shows who the proxy said the caller is; the tests check that identity (user, groups,
 * the device extra), that the caller's ID token and identity headers never arrived, and that get,
 * watch, logs -f, exec and attach (WebSocket and SPDY), port-forward (both) and cp (both ways, both
 * transports) work through the whole chain. Then the Policy's kubernetes deny rule (kubectl prints
 * the Status, a live exec is cut), and disabling the user ending a watch and an exec, with the kube
 * events at the control plane.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { ClientProxy } from '../../src/client/proxy.ts';
import type { KubeEvent } from '../../src/lib/audit/index.ts';
import type { RecordedRequest } from '../kit/fake-kube/index.ts';
import { kubectlBinaries, runKubectl, spawnKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary, KubectlResult } from '../kit/kubectl.ts';
import { CLUSTER, KUBE_PROXY_TOKEN, newHome, startDeviceSystem, until, within } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();
const SPDY_EXEC = { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' };
const SPDY_PORT_FORWARD = { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' };

let system: DeviceSystem;
let home: string;
let deviceId: string;
let proxy: ClientProxy;

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  system = await startDeviceSystem({ kubeProxy: {} });
  // Any device of alice's (eng) may reach the cluster; Kubernetes rules come per test.
  await system.put('Policy', 'k8s', { access: [{ roles: ['eng'], trustLevel: 'Low' }] });
  home = await newHome(system, 'alice');
  await system.login(home);
  deviceId = await system.deviceId(home);
  proxy = await system.proxyFor(home);
});

after(async () => {
  await system?.close();
});

function setupFor(bin: KubectlBinary): { kubeconfig: string; env: Record<string, string> } {
  return system.kubectlSetup(proxy, `alice-${bin.version}`, home);
}

async function kubectl(bin: KubectlBinary, args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<KubectlResult> {
  const setup = setupFor(bin);
  return runKubectl(bin.path, args, { kubeconfig: setup.kubeconfig, env: { ...setup.env, ...opts.env }, timeoutMs: 60_000, ...(opts.stdin === undefined ? {} : { stdin: opts.stdin }) });
}

/** Header values by lower-case name, from the raw headers exactly as the fake API received them. */
function raw(req: RecordedRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === name) out.push(req.rawHeaders[i + 1]);
  return out;
}

/** The caller's kube ID token, as kube-credential cached it. */
async function idToken(): Promise<string> {
  const session = JSON.parse(await readFile(join(home, 'session.json'), 'utf8')) as { kubeTokens: Record<string, { token: string }> };
  return session.kubeTokens[CLUSTER].token;
}

/** What the fake API must see on every request the proxy forwarded for alice. */
async function assertImpersonatedAlice(req: RecordedRequest | undefined, what: string): Promise<void> {
  assert.ok(req !== undefined, `${what}: the request reached the API server`);
  assert.deepEqual(req.user, { user: 'alice@example.com', groups: ['eng', 'system:authenticated'], extra: { 'causeway.dev/device': [deviceId] }, impersonator: 'system:serviceaccount:causeway:causeway-kube-proxy' }, what);
  assert.deepEqual(raw(req, 'authorization'), [`Bearer ${KUBE_PROXY_TOKEN}`], `${what}: only the proxy's own credential`);
  assert.deepEqual(raw(req, 'impersonate-user'), ['alice@example.com'], what);
  const token = await idToken();
  for (let i = 1; i < req.rawHeaders.length; i += 2) assert.ok(!req.rawHeaders[i].includes(token), `${what}: the caller's ID token never reaches the API server (${req.rawHeaders[i - 1]})`);
  assert.ok(!req.url.includes(token), what);
  assert.equal(req.rawHeaders.filter((_, i) => i % 2 === 0 && /^x-remote-/i.test(req.rawHeaders[i])).length, 0, `${what}: no front-proxy identity header`);
}

async function kubeEvents(query: Record<string, string>): Promise<KubeEvent[]> {
  const r = await system.api('GET', `/api/v1/kube-events?${new URLSearchParams({ limit: '500', ...query }).toString()}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return (r.body as { events: KubeEvent[] }).events;
}

async function waitForKubeEvent(query: Record<string, string>, match: (e: KubeEvent) => boolean, what: string): Promise<KubeEvent> {
  let found: KubeEvent | undefined;
  await until(async () => (found = (await kubeEvents(query)).find(match)) !== undefined, 20_000, what);
  return found as KubeEvent;
}

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

void test('causeway kube-proxy printed its serving CA, which the Service carries as caPublicKey', () => {
  assert.ok(system.kubeProxyServingCa !== undefined);
  assert.ok(system.kubeProxyPrinted.includes(system.kubeProxyServingCa.trim()));
  assert.equal(system.service.spec.kubernetes?.caPublicKey, system.kubeProxyServingCa);
});

for (const bin of binaries) {
  void describe(`kubectl ${bin.version} through the kube proxy`, () => {
    void test('get pods: the API server sees alice by impersonation (groups, device) and nothing of the caller\'s credentials', async () => {
      system.kube.clearRequests();
      const r = await kubectl(bin, ['get', 'pods', '-o', 'name']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^pod\/web-0$/m);
      const list = system.kube.requests.filter((q) => q.path === '/api/v1/namespaces/default/pods');
      assert.ok(list.length > 0);
      for (const q of system.kube.requests) await assertImpersonatedAlice(q, `${q.method} ${q.path}`);
      await waitForKubeEvent({ type: 'kube-request', device: deviceId }, (e) => e.resource === 'pods' && e.verb === 'list' && e.user === 'alice@example.com' && e.decision === 'allow' && e.code === 200, 'the list at the control plane');
    });

    void test('kubectl --as/--as-group cannot pick another identity: the client\'s Impersonate-* headers are dropped', async () => {
      system.kube.clearRequests();
      const r = await kubectl(bin, ['get', 'pods', '-o', 'name', '--as', 'admin', '--as-group', 'system:masters']);
      assert.equal(r.code, 0, r.stderr);
      const list = system.kube.requests.find((q) => q.path === '/api/v1/namespaces/default/pods');
      await assertImpersonatedAlice(list, 'with --as admin --as-group system:masters');
      assert.ok(!raw(list!, 'impersonate-group').includes('system:masters'));
    });

    void test('get pods -w sees a pod added after it started, and logs -f sees appended lines', async (t) => {
      const setup = setupFor(bin);
      const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
      t.after(() => watch.close());
      await watch.waitForLine(/^web-2\s/);
      await system.kube.waitForRequest((q) => q.query.get('watch') === 'true');
      const name = `late-${bin.version.replace(/[^a-z0-9]/gi, '')}`;
      system.kube.addPod({ name });
      await watch.waitForLine(new RegExp(`^${name}\\s`));

      const logs = await spawnKubectl(bin.path, ['logs', '-f', 'web-0'], { kubeconfig: setup.kubeconfig, env: setup.env });
      t.after(() => logs.close());
      await logs.waitForLine('web-0 started');
      await system.kube.waitForRequest((q) => q.path.endsWith('/pods/web-0/log') && q.query.get('follow') === 'true');
      system.kube.appendLog('default', 'web-0', `appended for ${bin.version}`);
      await logs.waitForLine(`appended for ${bin.version}`);
      system.kube.deletePod('default', name);
    });

    for (const [transport, env] of [['websocket', {}], ['spdy', SPDY_EXEC]] as const) {
      void test(`exec and attach over ${transport} run as alice, with stdin, exit codes and the session audited`, async () => {
        const since = new Date().toISOString();
        const before = system.kube.execs.length;
        const echo = await kubectl(bin, ['exec', 'web-0', '--', 'echo', 'through', 'the', 'proxy'], { env });
        assert.equal(echo.code, 0, echo.stderr);
        assert.equal(echo.stdout, 'through the proxy\n');
        const input = `${randomBytes(16).toString('hex')}\n`.repeat(3000);
        const cat = await kubectl(bin, ['exec', '-i', 'web-1', '--', 'cat'], { env, stdin: input });
        assert.equal(cat.code, 0, cat.stderr);
        assert.equal(cat.stdout, input);
        const failing = await kubectl(bin, ['exec', 'web-0', '--', 'sh', '-c', 'exit 3'], { env });
        assert.equal(failing.code, 3, failing.stderr);
        const attach = await kubectl(bin, ['attach', '-i', 'web-2'], { env, stdin: 'hello main process\n' });
        assert.equal(attach.code, 0, attach.stderr);
        assert.equal(attach.stdout, 'hello main process\n');
        const execs = system.kube.execs.slice(before);
        assert.deepEqual(execs.map((e) => [e.subresource, e.command.join(' '), e.transport, e.user?.user, e.exitCode]), [
          ['exec', 'echo through the proxy', transport, 'alice@example.com', 0],
          ['exec', 'cat', transport, 'alice@example.com', 0],
          ['exec', 'sh -c exit 3', transport, 'alice@example.com', 3],
          ['attach', '', transport, 'alice@example.com', 0],
        ]);
        for (const q of system.kube.requests.filter((r) => r.upgrade)) await assertImpersonatedAlice(q, `upgrade ${q.path}`);
        const session = await waitForKubeEvent({ type: 'kube-session', device: deviceId, since }, (e) => e.command?.join(' ') === 'echo through the proxy' && e.transport === transport, 'the exec session at the control plane');
        assert.equal(session.user, 'alice@example.com');
        assert.equal(session.subresource, 'exec');
        assert.equal(session.name, 'web-0');
        assert.equal(session.namespace, 'default');
        await waitForKubeEvent({ type: 'kube-session', device: deviceId, since }, (e) => e.command?.join(' ') === 'cat' && e.interactive === true, 'the interactive exec session');
      });

      void test(`cp over ${transport} copies into a pod and back out`, async () => {
        const local = join(system.dir, `cp-${bin.version}-${transport}`);
        await mkdir(join(local, 'tree'), { recursive: true });
        const blob = randomBytes(400_000);
        await writeFile(join(local, 'blob.bin'), blob);
        await writeFile(join(local, 'tree', 'notes.txt'), 'notes\n');
        const dest = `/tmp/${bin.version}-${transport}`;
        assert.equal((await kubectl(bin, ['exec', 'web-1', '--', 'mkdir', '-p', dest], { env })).code, 0);
        const up = await kubectl(bin, ['cp', join(local, 'blob.bin'), `web-1:${dest}/blob.bin`], { env });
        assert.equal(up.code, 0, up.stderr);
        assert.ok(system.kube.readFile('default', 'web-1', `${dest}/blob.bin`)?.equals(blob), 'the file arrived whole');
        const tree = await kubectl(bin, ['cp', join(local, 'tree'), `web-1:${dest}`], { env });
        assert.equal(tree.code, 0, tree.stderr);
        assert.equal(system.kube.readFile('default', 'web-1', `${dest}/tree/notes.txt`)?.toString(), 'notes\n');
        system.kube.writeFile('default', 'web-1', '/var/log/app.log', 'from the pod\n');
        const down = await kubectl(bin, ['cp', 'web-1:/var/log/app.log', join(local, 'app.log')], { env });
        assert.equal(down.code, 0, down.stderr);
        assert.equal(await readFile(join(local, 'app.log'), 'utf8'), 'from the pod\n');
        const back = await kubectl(bin, ['cp', `web-1:${dest}/blob.bin`, join(local, 'blob.back')], { env });
        assert.equal(back.code, 0, back.stderr);
        assert.ok((await readFile(join(local, 'blob.back'))).equals(blob));
      });
    }

    for (const [transport, env] of [['websocket', {}], ['spdy', SPDY_PORT_FORWARD]] as const) {
      void test(`port-forward over ${transport} carries bytes both ways`, async (t) => {
        const setup = setupFor(bin);
        system.kube.clearRequests();
        const pf = await spawnKubectl(bin.path, ['port-forward', 'pod/web-0', ':8080', '--address', '127.0.0.1'], { kubeconfig: setup.kubeconfig, env: { ...setup.env, ...env } });
        t.after(() => pf.close());
        const line = await pf.waitForLine(/Forwarding from 127\.0\.0\.1:\d+ -> 8080/);
        const port = Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
        const payload = randomBytes(500_000);
        assert.ok((await exchange(port, payload)).equals(payload));
        const upgrade = system.kube.requests.find((q) => q.upgrade && q.path.endsWith('/portforward'));
        await assertImpersonatedAlice(upgrade, 'the port-forward upgrade');
        assert.equal(system.kube.portForwards.at(-1)?.transport, transport);
        assert.equal(system.kube.portForwards.at(-1)?.user?.user, 'alice@example.com');
      });
    }
  });
}

void describe('Policy kubernetes rules and revocation through the whole chain', () => {
  const [bin] = binaries;

  void test('a kubernetes deny rule: kubectl prints the Status, a running exec is cut, other verbs still work', async (t) => {
    const setup = setupFor(bin);
    const running = await spawnKubectl(bin.path, ['exec', '-i', 'web-0', '--', 'cat'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => running.close());
    running.child.stdin?.write('still here\n');
    await running.waitForLine('still here');
    const cutsBefore = system.kubeProxy!.stats().cuts;

    await system.put('Policy', 'k8s', {
      access: [{ roles: ['eng'], trustLevel: 'Low' }],
      kubernetes: { deny: [{ roles: ['eng'], verbs: ['*'], resources: ['pods/exec', 'pods/attach'], namespaces: ['default'], message: 'exec in default is not allowed for eng' }] },
    });
    t.after(() => system.put('Policy', 'k8s', { access: [{ roles: ['eng'], trustLevel: 'Low' }] }));
    await within(15_000, 'the running exec being cut by the new rule', running.exited);
    assert.ok(system.kubeProxy!.stats().cuts > cutsBefore, 'the kube proxy cut it (the access tier knows no Kubernetes rules)');

    const denied = await kubectl(bin, ['exec', 'web-0', '--', 'echo', 'x']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden.*causeway: exec in default is not allowed for eng/);
    assert.match(denied.stderr, /rule k8s\/deny\[0\]/);
    const spdy = await kubectl(bin, ['exec', 'web-0', '--', 'echo', 'x'], { env: SPDY_EXEC });
    assert.match(spdy.stderr, /exec in default is not allowed for eng/);
    const list = await kubectl(bin, ['get', 'pods', '-o', 'name']);
    assert.equal(list.code, 0, list.stderr);
    await waitForKubeEvent({ type: 'kube-request', device: deviceId, decision: 'deny' }, (e) => e.subresource === 'exec' && e.code === 403 && (e.reason ?? '').length > 0, 'the denial at the control plane');
  });

  void test('disabling the user ends a running watch and exec; new commands are refused until enabled again', async (t) => {
    const setup = setupFor(bin);
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/);
    const exec = await spawnKubectl(bin.path, ['exec', 'web-1', '--', 'sleep', '3600'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => exec.close());
    await until(() => system.kube.execs.some((e) => e.command.join(' ') === 'sleep 3600' && e.exitCode === undefined), 20_000, 'the exec running');
    await until(() => system.kubeProxy!.stats().sessions > 0, 10_000, 'the kube proxy seeing the exec session');

    const disabled = await system.api('PATCH', '/api/v1/users/alice', { disabled: true });
    assert.equal(disabled.status, 200, JSON.stringify(disabled.body));
    t.after(async () => {
      const enabled = await system.api('PATCH', '/api/v1/users/alice', { disabled: false });
      assert.equal(enabled.status, 200, JSON.stringify(enabled.body));
    });
    await within(15_000, 'the watch ending after the user was disabled', watch.exited);
    await within(15_000, 'the exec ending after the user was disabled', exec.exited);
    await until(() => system.kubeProxy!.stats().sessions === 0, 10_000, 'no exec session left at the kube proxy');
    const refused = await kubectl(bin, ['get', 'pods']);
    assert.notEqual(refused.code, 0);

    const enabled = await system.api('PATCH', '/api/v1/users/alice', { disabled: false });
    assert.equal(enabled.status, 200, JSON.stringify(enabled.body));
    let last: KubectlResult | undefined;
    await until(async () => (last = await kubectl(bin, ['get', 'pods', '-o', 'name'])).code === 0, 30_000, `kubectl allowed again once enabled (last: ${last?.stderr ?? ''})`);
  });
});
