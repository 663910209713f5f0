/**
 * Live sessions end to end (issue 8), with the real control plane (`causeway server`), an access tier
 * and a connector enrolled by their commands (so both report to the control plane as in production),
 * a client proxy using the trust certificate the real CLI fetched at login, the fake Kubernetes API,
 * and every kubectl the kit has:
 *
 * - `kubectl get pods -w` through the chain shows up in `causeway sessions` (the admin CLI against
 *   the API) with the user, the device, the service, the access tier and the bytes relayed so far;
 * - `causeway sessions disconnect ID` ends it at once: kubectl's watch ends, the access tier has no
 *   such connection left, its access event says `disconnected-by-admin`, the audit log says who
 *   disconnected it, and the session is no longer listed; the user's next kubectl works (one session
 *   was cut, nobody was locked out);
 * - `GET /api/v1/peers` shows the access tier and the connector up, with their versions and the tunnel
 *   between them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClientProxy } from '../../src/client/proxy.ts';
import { kubectlBinaries, runKubectl, spawnKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary } from '../kit/kubectl.ts';
import { SERVICE, admin, newHome, startDeviceSystem, until, within } from '../kit/device-system.ts';
import type { DeviceSystem } from '../kit/device-system.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();

interface ListedSession {
  id: string;
  accessTier: string;
  user?: string;
  userName?: string;
  device?: string;
  deviceName?: string;
  service: string;
  since: string;
  bytesUp: number;
  bytesDown: number;
  via: string;
}

interface Peer {
  kind: string;
  name: string;
  status: string;
  version: string | null;
  tunnels: Array<{ peer: string; streams: number }>;
  sessions: number | null;
}

let system: DeviceSystem;

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  system = await startDeviceSystem();
});

after(async () => {
  await system?.close();
});

async function listed(): Promise<ListedSession[]> {
  const r = await admin(system, ['sessions', '-o', 'json']);
  assert.equal(r.error, undefined, r.out.join('\n'));
  return JSON.parse(r.out.join('\n')) as ListedSession[];
}

void describe('live sessions: listed with who, what and how much; disconnected at once by an admin', () => {
  let home: string;
  let deviceId: string;
  let proxy: ClientProxy;

  before(async () => {
    // The policy needs Medium: laptops the user owns are High while their firewall is on.
    await system.put('TrustProfile', 'laptops', { appliesTo: { ownership: ['other'] }, staleAfter: '15m', factors: [{ type: 'firewall', effect: 'Low' }] });
    home = await newHome(system, 'live');
    await system.login(home);
    deviceId = await system.deviceId(home);
    const good = await system.report(home, { firewall: true });
    assert.equal(good.status, 200, JSON.stringify(good.body));
    proxy = await system.proxyFor(home);
  });

  for (const bin of binaries) {
    void test(`kubectl ${bin.version}: get pods -w shows in causeway sessions with user, device, service and bytes; causeway sessions disconnect ends the watch at once and its access event says disconnected-by-admin`, async (t) => {
      const setup = system.kubectlSetup(proxy, `live-${bin.version}`);
      const since = new Date().toISOString();
      let last: { code: number | null; stderr: string } | undefined;
      await until(async () => (last = await runKubectl(bin.path, ['get', 'pods', '-o', 'name', '--request-timeout=10s'], { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 30_000 })).code === 0, 20_000, `kubectl allowed (last: ${last?.stderr.trim() ?? ''})`);
      const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
      t.after(() => watch.close());
      await watch.waitForLine(/^web-2\s/);

      // The access tier reports within about half a second of the open, and every 5 s. (The earlier
      // kubectl's connection may still be in the last report, so pick the one still open.)
      let session: ListedSession | undefined;
      await until(async () => (session = (await listed()).find((s) => s.device === deviceId && s.bytesDown > 0 && system.accessTier.liveConnections().some((c) => c.id === s.id))) !== undefined, 15_000, 'the watch listed by causeway sessions with bytes');
      assert.ok(session);
      assert.equal(session.userName, 'alice');
      assert.equal(session.service, SERVICE);
      assert.equal(session.accessTier, system.accessTier.name);
      assert.ok(session.bytesUp > 0, 'kubectl sent its TLS handshake and request');
      const live = system.accessTier.liveConnections().find((c) => c.id === session?.id);
      assert.ok(live, 'the listed id is the access tier\'s connection id');

      const table = await admin(system, ['sessions', '--user', 'alice']);
      assert.equal(table.error, undefined, table.out.join('\n'));
      assert.match(table.out.join('\n'), /ID\s+USER\s+DEVICE\s+SERVICE\s+ACCESS TIER\s+SINCE\s+UP\s+DOWN/);
      assert.ok(table.out.some((line) => line.startsWith(session?.id ?? '?') && line.includes('alice') && line.includes(SERVICE)), table.out.join('\n'));

      const cut = await admin(system, ['sessions', 'disconnect', session.id]);
      assert.equal(cut.error, undefined, cut.out.join('\n'));
      assert.match(cut.out.join('\n'), new RegExp(`Disconnected session ${session.id} \\(alice to ${SERVICE} on ${system.accessTier.name}\\)`));
      // kubectl may end a watch whose stream closes with 0 or not; what matters is that it ends, now.
      await within(10_000, 'kubectl get -w ending after the disconnect', watch.exited);
      assert.ok(!system.accessTier.liveConnections().some((c) => c.id === session?.id), 'the access tier holds no such connection');

      const event = await system.waitForEvent({ device: deviceId, service: SERVICE, since }, (e) => e.id === session?.id, 'the disconnected session\'s access event');
      assert.equal(event.closeReason, 'disconnected-by-admin');
      assert.equal(event.decision, 'allow');
      assert.ok((event.bytesDown ?? 0) >= session.bytesDown);

      const audit = await system.api('GET', `/api/v1/audit?kind=SessionKill&name=${session.id}`);
      const entries = (audit.body as { events: Array<{ action: string; actor: string; after: { session: { user?: string; service?: string } } }> }).events;
      assert.deepEqual(entries.map((e) => e.action), ['disconnect']);
      assert.match(entries[0].actor, /^token:/);
      assert.equal(entries[0].after.session.service, SERVICE);
      assert.ok(!(await listed()).some((s) => s.id === session?.id), 'no longer listed');

      // One session was cut; the user was not locked out.
      const again = await runKubectl(bin.path, ['get', 'pods', '-o', 'name', '--request-timeout=10s'], { kubeconfig: setup.kubeconfig, env: setup.env, timeoutMs: 30_000 });
      assert.equal(again.code, 0, again.stderr);
      // The ended id cannot be disconnected again once its tier has reported it gone.
      await until(async () => (await system.api('POST', `/api/v1/sessions/${session?.id ?? ''}/disconnect`, {})).status === 404, 15_000, 'the ended session answering 404');
    });
  }

  void test('GET /api/v1/peers shows the access tier and the connector up, with their version and the tunnel between them', async () => {
    let peers: Peer[] = [];
    await until(async () => {
      peers = ((await system.api('GET', '/api/v1/peers')).body as { peers: Peer[] }).peers;
      return peers.some((p) => p.kind === 'connector' && p.status === 'up' && p.tunnels.length > 0) && peers.some((p) => p.kind === 'access-tier' && p.status === 'up' && p.tunnels.length > 0);
    }, 15_000, 'both peers reporting up with a tunnel');
    const tier = peers.find((p) => p.kind === 'access-tier' && p.name === system.accessTier.name);
    const connector = peers.find((p) => p.kind === 'connector' && p.status === 'up');
    assert.ok(tier && connector);
    assert.equal(tier.version, '0.1.0');
    assert.equal(connector.version, '0.1.0');
    assert.deepEqual(tier.tunnels.map((x) => x.peer), [connector.name]);
    assert.deepEqual(connector.tunnels.map((x) => x.peer), [tier.name]);
    assert.equal(typeof tier.sessions, 'number');
  });
});
