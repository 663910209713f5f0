/**
 * The whole system joined to a control plane, with the real kubectl:
 *
 *   kubectl ──CONNECT──> client proxy ══mTLS══> access tier <══tunnel══ connector ──> fake Kubernetes API
 *                                                   │  config stream, events  │ config stream
 *                                                   └──────> control plane <──┘  (createControlPlane, in this process)
 *
 * The access tier and the connector are started by their commands (`causeway access-tier
 * --control-plane … --join-token … --ca-pin … --data-dir …`, run in this process), enrolled with join
 * tokens created through the admin API; specs, users and policy edits go through the admin API too.
 * Every wait is bounded: a test that would hang fails instead. The cases of a describe run in order
 * on one system; each leaves it whole for the next.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { Command } from 'commander';
import pg from 'pg';
import { registerAccessTierCommand } from '../../src/access-tier/command.ts';
import { decisionChannel } from '../../src/access-tier/index.ts';
import type { AccessTier } from '../../src/access-tier/index.ts';
import { startClientProxy } from '../../src/client/proxy.ts';
import type { ClientProxy } from '../../src/client/proxy.ts';
import { registerConnectorCommand } from '../../src/connector/command.ts';
import type { Connector } from '../../src/connector/index.ts';
import { enrollmentPlugin } from '../../src/control-plane/enroll/index.ts';
import { eventsIngestPlugin } from '../../src/control-plane/events-ingest/index.ts';
import { openStore } from '../../src/control-plane/store/index.ts';
import type { Store } from '../../src/control-plane/store/index.ts';
import { startTestControlPlane } from '../../src/control-plane/stream/harness.testing.ts';
import type { TestControlPlane } from '../../src/control-plane/stream/harness.testing.ts';
import { configStreamPlugin } from '../../src/control-plane/stream/index.ts';
import type { AccessEvent } from '../../src/lib/audit/index.ts';
import type { JoinedPeer } from '../../src/lib/enroll/index.ts';
import type { Closable } from '../../src/lib/lifecycle.ts';
import { CertificateAuthority, issueKeyAndCert } from '../../src/lib/pki/index.ts';
import { parseSpecDocuments } from '../../src/lib/spec/index.ts';
import type { ServiceSpec } from '../../src/lib/spec/index.ts';
import { makeServerCert, makeTestCa } from '../kit/certs.ts';
import { startFakeKube } from '../kit/fake-kube/index.ts';
import type { FakeKube } from '../kit/fake-kube/index.ts';
import { DEFAULT_TEST_TOKEN, kubectlBinaries, runKubectl, spawnKubectl, writeKubeconfig } from '../kit/kubectl.ts';
import type { KubectlResult } from '../kit/kubectl.ts';

const [bin] = await kubectlBinaries();
const DOMAIN = 'kube.cp.causeway.test';
const RUN_TIMEOUT_MS = 30_000;

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function doc(kind: string, name: string, spec: unknown): Record<string, unknown> {
  return { apiVersion: 'causeway/v1', kind, metadata: { name }, spec };
}

async function allAccessEvents(store: Store): Promise<AccessEvent[]> {
  const out: AccessEvent[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await store.queryAccessEvents({ limit: 1000, ...(cursor === undefined ? {} : { after: cursor }) });
    out.push(...page.events);
    if (page.next === undefined) return out;
    cursor = page.next;
  }
}

/** The data path of one test system: fake API, access tier and connector (by their commands), client proxy, kubeconfig. */
interface System {
  kube: FakeKube;
  accessTier: AccessTier;
  accessJoined: JoinedPeer;
  connector: Connector;
  proxy: ClientProxy;
  healthUrl: string;
  kubeconfig: string;
  env: Record<string, string>;
  userId: string;
  deviceId: string;
  service(mode: 'enforcing' | 'permissive', policy?: string): Record<string, unknown>;
  kubectl(args: string[]): Promise<KubectlResult>;
  close(): Promise<void>;
}

const sharedPlugins = [
  (app: Parameters<typeof configStreamPlugin>[0], o: Parameters<typeof configStreamPlugin>[1]) => configStreamPlugin(app, o),
  (app: Parameters<typeof enrollmentPlugin>[0], o: Parameters<typeof enrollmentPlugin>[1]) => enrollmentPlugin(app, o),
  (app: Parameters<typeof eventsIngestPlugin>[0], o: Parameters<typeof eventsIngestPlugin>[1]) => eventsIngestPlugin(app, o),
];

/**
 * Starts the data path: the access tier and connector join `peers` (a control plane URL) with tokens
 * made through `admin`; specs, the user and the device are written through `admin` and its store.
 */
async function startSystem(admin: TestControlPlane, peersUrl: string, dir: string): Promise<System> {
  const toClose: Array<() => Promise<unknown>> = [];
  const closeAll = async (): Promise<void> => {
    for (const close of toClose.splice(0).reverse()) await close().catch(() => undefined);
  };
  const quiet = new Writable({ write: (_chunk, _enc, cb) => cb() });
  try {
    const kubeCa = await makeTestCa({ commonName: 'e2e cluster CA' });
    const kubeCert = await makeServerCert(kubeCa, { dnsNames: [DOMAIN, 'localhost'], ipAddresses: ['127.0.0.1'] });
    const kube = await startFakeKube({ bearerToken: DEFAULT_TEST_TOKEN, host: '127.0.0.1', port: 0, certPem: kubeCert.certPem, keyPem: kubeCert.keyPem, caPem: kubeCert.caPem });
    toClose.push(() => kube.close());

    const token = async (kind: 'access-tier' | 'connector', name: string): Promise<{ token: string; caPin: string }> => {
      const r = await admin.api('POST', '/api/v1/join-tokens', { kind, name });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body as { token: string; caPin: string };
    };

    // causeway access-tier --control-plane URL --join-token T --ca-pin PIN --data-dir DIR --listen … --health-listen …
    const edgeJoin = await token('access-tier', 'edge-1');
    let accessTier: AccessTier | undefined;
    let accessParts: Closable[] = [];
    let accessJoined: JoinedPeer | undefined;
    const program = new Command('causeway').exitOverride();
    registerAccessTierCommand(program, {
      cwd: () => dir,
      env: () => ({}),
      logDestination: quiet,
      onJoined: (joined) => (accessJoined = joined),
      onStarted: (parts, started) => {
        accessParts = parts;
        accessTier = started;
      },
    });
    await program.parseAsync(['node', 'causeway', 'access-tier', '--control-plane', peersUrl, '--join-token', edgeJoin.token, '--ca-pin', edgeJoin.caPin, '--data-dir', 'edge', '--listen', '127.0.0.1:0', '--health-listen', '127.0.0.1:0']);
    assert.ok(accessTier !== undefined && accessJoined !== undefined);
    toClose.push(async () => {
      for (const part of [...accessParts].reverse()) await part.close();
    });
    const health = accessParts.find((p): p is Closable & { url: string } => 'url' in p && typeof (p as { url: unknown }).url === 'string');
    assert.ok(health !== undefined, 'the health listener started');
    const accessTierAddress = `127.0.0.1:${accessTier.port()}`;

    // Specs, a user and a device through the admin API (devices register through login, which is not under test here).
    const service = (mode: 'enforcing' | 'permissive', policy = 'k8s'): Record<string, unknown> =>
      doc('Service', 'e2e-k8s', { type: 'kubernetes', cluster: 'e2e', accessTier: 'edge-1', connector: 'dc1', domain: DOMAIN, port: 443, backend: { dnsOverride: `127.0.0.1:${kube.port}` }, kubernetes: { clusterName: 'e2e', caPublicKey: kubeCa.certPem }, policy: { name: policy, mode } });
    for (const d of [
      doc('AccessTier', 'edge-1', { cluster: 'e2e', address: accessTierAddress }),
      doc('Connector', 'dc1', { cluster: 'e2e', allowedCidrs: ['127.0.0.0/8'] }),
      doc('Role', 'eng', { users: { groups: ['eng'] } }),
      doc('Role', 'auditors', { users: { groups: ['audit'] } }),
      doc('Policy', 'k8s', { access: [{ roles: ['eng'], trustLevel: 'Medium' }] }),
      service('enforcing'),
    ]) {
      const r = await admin.put(`/api/v1/objects/${String(d.kind).toLowerCase()}/${(d.metadata as { name: string }).name}`, d);
      assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
    }
    const userAnswer = await admin.api('POST', '/api/v1/users', { name: 'alice', email: 'alice@example.com', groups: ['eng'] });
    assert.equal(userAnswer.status, 201, JSON.stringify(userAnswer.body));
    const userId = (userAnswer.body as { id: string }).id;
    const device = await admin.store.registerDevice({ userId, platform: 'linux', ownership: 'corporate-dedicated', serial: 'SN-E2E', trust: { level: 'High', reasons: [] } }, { actor: 'e2e' });

    // causeway connector --control-plane URL --join-token T --ca-pin PIN --data-dir DIR
    const dcJoin = await token('connector', 'dc1');
    let connector: Connector | undefined;
    let connectorParts: Closable[] = [];
    const connectorProgram = new Command('causeway').exitOverride();
    registerConnectorCommand(connectorProgram, {
      cwd: () => dir,
      env: () => ({ CAUSEWAY_JOIN_TOKEN: dcJoin.token }),
      logDestination: quiet,
      onStarted: (parts, started) => {
        connectorParts = parts;
        connector = started;
      },
    });
    await connectorProgram.parseAsync(['node', 'causeway', 'connector', '--control-plane', peersUrl, '--ca-pin', dcJoin.caPin, '--data-dir', 'dc1']);
    assert.ok(connector !== undefined);
    toClose.push(async () => {
      for (const part of [...connectorParts].reverse()) await part.close();
    });
    const edge = accessTier;
    await until(() => edge.stats().tunnels.some((t) => t.connector === 'dc1'), 15_000, 'the connector\'s tunnel to the access tier');

    // The user's trust certificate, as login would issue it; the client proxy as `causeway connect` runs it.
    const trustCert = await issueKeyAndCert(admin.ca, { type: 'trust', identity: { user: userId, device: device.id } });
    const parsed = parseSpecDocuments(JSON.stringify(service('enforcing')));
    assert.ok(parsed.ok);
    const proxy = await startClientProxy({ service: parsed.objects[0] as ServiceSpec, accessTierAddress, trust: { certPem: trustCert.certPem, keyPem: trustCert.keyPem, caPem: admin.ca.certPem }, hosts: ['127.0.0.1'], port: 0, closeGraceMs: 300 });
    toClose.push(() => proxy.close());
    const kubeconfig = writeKubeconfig(dir, { server: `https://${DOMAIN}`, caPem: kubeCa.certPem, fileName: 'kubeconfig' });
    const env = { HTTPS_PROXY: `http://127.0.0.1:${proxy.port()}` };

    return {
      kube,
      accessTier,
      accessJoined,
      connector,
      proxy,
      healthUrl: health.url,
      kubeconfig,
      env,
      userId,
      deviceId: device.id,
      service,
      kubectl: (args) => runKubectl(bin.path, [...args, '--request-timeout=10s'], { kubeconfig, env, timeoutMs: RUN_TIMEOUT_MS }),
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

async function readyz(system: System): Promise<{ status: number; body: { status: string; message: string } }> {
  const r = await fetch(`${system.healthUrl}/readyz`);
  return { status: r.status, body: (await r.json()) as { status: string; message: string } };
}

void describe(`the system joined to a control plane (kubectl ${bin?.version ?? 'missing'})`, () => {
  let dir: string;
  let cp: TestControlPlane;
  let store: Store;
  let system: System;
  const decided: string[] = [];
  const onDecision = (message: unknown): void => {
    const id = (message as { id?: string }).id;
    if (typeof id === 'string') decided.push(id);
  };

  before(async () => {
    assert.ok(bin !== undefined, 'a kubectl binary is needed');
    dir = await mkdtemp(join(tmpdir(), 'causeway-e2e-cp-'));
    store = await openStore({ url: `sqlite:${join(dir, 'causeway.db')}` });
    cp = await startTestControlPlane({ store, plugins: sharedPlugins });
    system = await startSystem(cp, cp.url, dir);
    decisionChannel.subscribe(onDecision);
  });
  after(async () => {
    decisionChannel.unsubscribe(onDecision);
    await system?.close();
    await cp?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const getPodsWorks = async (): Promise<void> => {
    const r = await system.kubectl(['get', 'pods', '-o', 'name']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^pod\/web-0$/m);
  };

  void test('an access tier and a connector enrolled with join tokens carry kubectl, and the access events reach the control plane', async () => {
    await getPodsWorks();
    const ready = await readyz(system);
    assert.deepEqual([ready.status, ready.body.status], [200, 'ok']);
    assert.match(ready.body.message, /^following the control plane \(revision \d+\)$/);
    await until(async () => (await store.queryAccessEvents({ service: 'e2e-k8s', decision: 'allow' })).events.some((e) => e.user === system.userId && e.accessTier === 'edge-1'), 15_000, 'the allow event reaching the control plane');
  });

  void test('X-01 a policy edit that drops the user cuts a running kubectl get pods -w, and the next get pods says access was denied', async (t) => {
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: system.kubeconfig, env: system.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/);
    await until(() => system.accessTier.liveConnections().some((c) => c.identity.user === system.userId), 5_000, 'the watch connection being live');

    const edit = await cp.put('/api/v1/objects/policy/k8s', doc('Policy', 'k8s', { access: [{ roles: ['auditors'], trustLevel: 'Medium' }] }));
    assert.equal(edit.status, 200, JSON.stringify(edit.body));
    // kubectl's exit code is not asserted: Go's watch decoder treats a cut stream as the watch ending and
    // kubectl sometimes exits 0; what matters is that it ends, nothing stays live and the next request is denied.
    await within(10_000, 'kubectl get -w ending after the policy edit', watch.exited);
    assert.equal(system.accessTier.liveConnections().length, 0);

    const denied = await system.kubectl(['get', 'pods']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden: no-matching-role/);
    await until(async () => {
      const events = await allAccessEvents(store);
      return events.some((e) => e.decision === 'allow' && e.closeReason === 'no-matching-role') && events.some((e) => e.decision === 'deny' && e.reasons[0] === 'no-matching-role');
    }, 15_000, 'the cut and the denial reaching the control plane');
  });

  void test('CP-18 switching the service to permissive lets kubectl in again, recorded as would-deny', async () => {
    const r = await cp.put('/api/v1/objects/service/e2e-k8s', system.service('permissive'));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await until(async () => (await system.kubectl(['get', 'pods', '-o', 'name'])).code === 0, 10_000, 'kubectl working in permissive mode');
    await until(async () => (await store.queryAccessEvents({ service: 'e2e-k8s', decision: 'would-deny' })).events.some((e) => e.reasons.includes('no-matching-role')), 15_000, 'would-deny events at the control plane');
  });

  void test('X-02 with the control plane stopped the access tier keeps enforcing and says so; after a restart every access event arrives, once', async () => {
    const mark = decided.length;
    await cp.stop();
    let restarted = false;
    try {
      await until(async () => (await readyz(system)).body.status === 'degraded', 10_000, 'readyz saying the control plane is unreachable');
      const ready = await readyz(system);
      assert.equal(ready.status, 200, 'still serving');
      assert.match(ready.body.message, /^serving last good config \(revision \d+\), control plane unreachable since \d{4}-\d\d-\d\dT/);
      for (let i = 0; i < 3; i++) await getPodsWorks();
      await until(() => system.accessTier.liveConnections().length === 0, 5_000, 'kubectl\'s connections ending');
      await cp.start();
      restarted = true;
      const ids = decided.slice(mark);
      assert.ok(ids.length >= 3, `decisions while the control plane was down: ${ids.length}`);
      await until(async () => {
        const stored = new Set((await allAccessEvents(store)).map((e) => e.id));
        return ids.every((id) => stored.has(id));
      }, 30_000, 'every event of the outage reaching the control plane');
      const events = await allAccessEvents(store);
      const counts = new Map<string, number>();
      for (const e of events) counts.set(e.id, (counts.get(e.id) ?? 0) + 1);
      assert.deepEqual(ids.filter((id) => counts.get(id) !== 1), [], 'each stored exactly once');
      await until(async () => (await readyz(system)).body.status === 'ok', 15_000, 'readyz following the control plane again');
    } finally {
      if (!restarted) await cp.start();
    }
  });

  void test('a renewed access tier certificate is served to new connections at once, and kubectl keeps working', async () => {
    const before = system.accessJoined.credentials().serial;
    const renewed = await system.accessJoined.renewal.renewNow();
    assert.notEqual(renewed.serial, before);
    const served = await new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: system.accessTier.port(), servername: DOMAIN, ca: cp.ca.certPem, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
      socket.once('secureConnect', () => {
        resolve(new X509Certificate(socket.getPeerCertificate().raw).serialNumber);
        socket.destroy();
      });
      socket.once('error', reject);
    });
    assert.equal(served, renewed.serial);
    await until(async () => (await system.kubectl(['get', 'pods', '-o', 'name'])).code === 0, 10_000, 'kubectl through the renewed access tier');
  });
});

const postgresAdmin = process.env.CAUSEWAY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

void describe(`two control-plane replicas on PostgreSQL (kubectl ${bin?.version ?? 'missing'})`, () => {
  let dir: string;
  let database: string;
  let storeA: Store;
  let storeB: Store;
  let replicaA: TestControlPlane;
  let replicaB: TestControlPlane;
  let system: System;

  const admin = async (sql: string): Promise<void> => {
    const client = new pg.Client({ connectionString: postgresAdmin });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };

  before(async () => {
    assert.ok(bin !== undefined, 'a kubectl binary is needed');
    dir = await mkdtemp(join(tmpdir(), 'causeway-e2e-pg-'));
    database = `causeway_e2e_${randomBytes(6).toString('hex')}`;
    await admin(`CREATE DATABASE ${database}`);
    const url = new URL(postgresAdmin);
    url.pathname = `/${database}`;
    storeA = await openStore({ url: url.toString() });
    storeB = await openStore({ url: url.toString() });
    const ca = await CertificateAuthority.create({ commonName: 'causeway e2e replicas CA' });
    replicaA = await startTestControlPlane({ store: storeA, ca, plugins: sharedPlugins });
    replicaB = await startTestControlPlane({ store: storeB, ca, plugins: sharedPlugins });
    // Tokens, specs and the user are written through replica A; the parts enroll with and follow replica B.
    system = await startSystem(replicaA, replicaB.url, dir);
  });
  after(async () => {
    await system?.close();
    await replicaB?.close();
    await replicaA?.close();
    await storeB?.close();
    await storeA?.close();
    if (database !== undefined) await admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await rm(dir, { recursive: true, force: true });
  });

  void test('the parts enrolled through replica B with tokens made on replica A, and kubectl works', async () => {
    const r = await system.kubectl(['get', 'pods', '-o', 'name']);
    assert.equal(r.code, 0, r.stderr);
  });

  void test('X-01 disabling the user through replica A cuts a watch on an access tier that follows replica B, and denies the next request', async (t) => {
    const watch = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: system.kubeconfig, env: system.env });
    t.after(() => watch.close());
    await watch.waitForLine(/^web-2\s/);
    await until(() => system.accessTier.liveConnections().length > 0, 5_000, 'the watch connection being live');
    const r = await replicaA.api('PATCH', '/api/v1/users/alice', { disabled: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await within(10_000, 'kubectl get -w ending after the user was disabled', watch.exited);
    const denied = await system.kubectl(['get', 'pods']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden: user-disabled/);
    await until(async () => (await storeA.queryAccessEvents({ decision: 'deny' })).events.some((e) => e.reasons[0] === 'user-disabled'), 15_000, 'the denial stored, seen from replica A');
  });
});
