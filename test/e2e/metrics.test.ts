/**
 * Prometheus /metrics of the access tier and the connector, as an operator gets them, both started by
 * their commands with --health-listen, in this process (as the quickstart runs them):
 *
 * - from spec files: one allowed connection through the connector tunnel, one denied by the access
 *   tier and one refused by the connector's own allow-list, then both listeners scraped;
 * - joined to a control plane: the revision enforced, and `causeway_config_stale` while the control
 *   plane is down.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { registerAccessTierCommand } from '../../src/access-tier/command.ts';
import type { AccessTier } from '../../src/access-tier/index.ts';
import { runConnector } from '../../src/connector/command.ts';
import { enrollmentPlugin } from '../../src/control-plane/enroll/index.ts';
import { eventsIngestPlugin } from '../../src/control-plane/events-ingest/index.ts';
import { applySpecs, baseSpecs, startTestControlPlane } from '../../src/control-plane/stream/harness.testing.ts';
import type { TestPlugin } from '../../src/control-plane/stream/harness.testing.ts';
import { configStreamPlugin } from '../../src/control-plane/stream/index.ts';
import type { Closable } from '../../src/lib/lifecycle.ts';
import { parseExposition } from '../../src/lib/metrics/prometheus-text.testing.ts';
import type { Exposition } from '../../src/lib/metrics/prometheus-text.testing.ts';
import { stringifySpecs } from '../../src/lib/spec/index.ts';
import { chainConnect, eventually, makeTestPki, roundTrip, specs, startEchoServer } from '../../src/lib/tunnel/harness.testing.ts';
import type { KeyAndCert, TestPki, TestServer } from '../../src/lib/tunnel/harness.testing.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-metrics-'));
after(() => rm(dir, { recursive: true, force: true }));

let pki: TestPki;
let trust: KeyAndCert;
let echo: TestServer;
before(async () => {
  pki = await makeTestPki();
  trust = await pki.issue('trust', { user: 'alice', device: 'laptop-1' });
  echo = await startEchoServer();
  const edge = await pki.issue('access-tier', { name: 'edge-1' });
  const dc1 = await pki.issue('connector', { name: 'dc1' });
  await writeFile(path.join(dir, 'edge.crt'), edge.certPem);
  await writeFile(path.join(dir, 'edge.key'), edge.keyPem, { mode: 0o600 });
  await writeFile(path.join(dir, 'dc1.crt'), dc1.certPem);
  await writeFile(path.join(dir, 'dc1.key'), dc1.keyPem, { mode: 0o600 });
  await writeFile(path.join(dir, 'ca.crt'), pki.caPem);
});
after(() => echo.close());

function specFile(accessTierAddress: string): string {
  return stringifySpecs([
    specs.accessTier('edge-1', 'c1', accessTierAddress),
    // The connector reaches 127.0.0.1 only; the service allows all of loopback, so 127.0.0.2 is the connector's to refuse.
    specs.connector('dc1', 'c1', { cidrs: ['127.0.0.1/32'] }),
    specs.service('db', 'c1', { type: 'tcp', domain: 'db.example.com', port: 5432, connector: 'dc1', backend: { httpConnect: true, allowPatterns: [{ cidrs: ['127.0.0.0/8'], ports: ['1-65535'] }] } }),
  ]);
}

const discard = (): Writable =>
  new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });

/** The health listener among the started parts (the only one with a url). */
function healthUrl(parts: Closable[]): string {
  const health = parts.find((p): p is Closable & { url: string } => typeof (p as { url?: unknown }).url === 'string');
  assert.ok(health !== undefined, 'a health listener was started');
  return health.url;
}

async function scrape(url: string): Promise<Exposition> {
  const r = await fetch(`${url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await r.text());
}

void test('the access tier and the connector serve /metrics on --health-listen, counting an allowed, a denied and a refused connection', { timeout: 60_000 }, async (t) => {
  const config = path.join(dir, 'specs.yaml');
  await writeFile(config, specFile('127.0.0.1:1'));

  let accessTierParts: Closable[] = [];
  let accessTier: AccessTier | undefined;
  const program = new Command('causeway').exitOverride();
  registerAccessTierCommand(program, {
    cwd: () => dir,
    logDestination: discard(),
    onStarted: (parts, started) => {
      accessTierParts = parts;
      accessTier = started;
    },
  });
  t.after(async () => {
    for (const part of [...accessTierParts].reverse()) await part.close();
  });
  const files = ['--config', config, '--cert', path.join(dir, 'edge.crt'), '--key', path.join(dir, 'edge.key'), '--ca', path.join(dir, 'ca.crt')];
  await program.parseAsync(['node', 'causeway', 'access-tier', '--name', 'edge-1', ...files, '--listen', '127.0.0.1:0', '--events', 'events.jsonl', '--health-listen', '127.0.0.1:0']);
  assert.ok(accessTier !== undefined);
  const edge = accessTier;
  const edgeUrl = healthUrl(accessTierParts);
  // Now that its port is known, the connector (which reads the spec file at start) dials it.
  await writeFile(config, specFile(`127.0.0.1:${edge.port()}`));

  let connectorParts: Closable[] = [];
  t.after(async () => {
    for (const part of [...connectorParts].reverse()) await part.close();
  });
  await runConnector(
    { name: 'dc1', config, cert: path.join(dir, 'dc1.crt'), key: path.join(dir, 'dc1.key'), ca: path.join(dir, 'ca.crt'), logLevel: 'info', healthListen: { host: '127.0.0.1', port: 0 } },
    {
      cwd: () => dir,
      env: () => ({}),
      logDestination: discard(),
      onStarted: (parts) => {
        connectorParts = parts;
      },
    },
  );
  const connectorUrl = healthUrl(connectorParts);
  await eventually(() => (edge.stats().tunnels.length === 1 ? true : undefined), 10_000, 'the connector tunnel');

  // Allowed: through the tunnel to the echo backend and back.
  const allowed = await chainConnect({ port: edge.port(), caPem: pki.caPem, servername: 'db.example.com', cert: trust, connect: `127.0.0.1:${echo.port}` });
  assert.equal(allowed.kind, 'established');
  if (allowed.kind === 'established') assert.equal((await roundTrip(allowed.socket, 'hello', allowed.rest)).toString(), 'hello');
  // Denied by the access tier: no service at that name.
  const denied = await chainConnect({ port: edge.port(), caPem: pki.caPem, servername: 'nope.example.com', cert: trust, connect: 'nope.example.com:443' });
  assert.equal(denied.kind, 'refused');
  if (denied.kind === 'refused') {
    assert.equal(denied.reason, 'unknown-service');
    denied.socket.destroy();
  }
  // Allowed by the access tier, refused by the connector's own allow-list.
  const refused = await chainConnect({ port: edge.port(), caPem: pki.caPem, servername: 'db.example.com', cert: trust, connect: `127.0.0.2:${echo.port}` });
  assert.equal(refused.kind, 'refused');
  if (refused.kind === 'refused') refused.socket.destroy();

  // An allowed connection is counted when its access event is written, as it ends.
  const atEdge = await eventually(async () => {
    const m = await scrape(edgeUrl);
    return m.value('causeway_connections_total', { service: 'db', decision: 'allow' }) === 2 ? m : undefined;
  }, 10_000, 'both allowed connections counted at the access tier');
  assert.equal(atEdge.value('causeway_decisions_total', { result: 'allow', reason: 'trust-cert-valid' }), 2);
  assert.equal(atEdge.value('causeway_decisions_total', { result: 'deny', reason: 'unknown-service' }), 1);
  assert.equal(atEdge.value('causeway_connections_total', { service: 'none', decision: 'deny' }), 1);
  assert.equal(atEdge.value('causeway_bytes_total', { direction: 'up' }), 5);
  assert.equal(atEdge.value('causeway_bytes_total', { direction: 'down' }), 5);
  assert.equal(atEdge.value('causeway_connection_duration_seconds_count'), 2);
  assert.equal(atEdge.value('causeway_tunnels', { state: 'up' }), 1);
  assert.equal(atEdge.value('causeway_tunnel_streams_opened_total'), 2);
  assert.equal(atEdge.all('causeway_config_info').length, 1);
  assert.equal(atEdge.value('causeway_config_stale'), 0);
  const edgeExpiry = atEdge.value('causeway_cert_expiry_seconds') ?? 0;
  assert.ok(edgeExpiry > 3600 && edgeExpiry <= 24 * 3600 + 600, `the access tier's certificate expires in a day: ${edgeExpiry}`);
  assert.ok(atEdge.all('process_resident_memory_bytes').length === 1, 'process metrics');

  const atConnector = await eventually(async () => {
    const m = await scrape(connectorUrl);
    return m.value('causeway_tunnel_streams_closed_total', { outcome: 'clean' }) === 1 ? m : undefined;
  }, 10_000, 'the relayed stream closed at the connector');
  assert.equal(atConnector.value('causeway_decisions_total', { result: 'allow', reason: 'target-allowed' }), 1);
  assert.equal(atConnector.value('causeway_decisions_total', { result: 'deny', reason: 'target-not-allowed' }), 1);
  assert.equal(atConnector.value('causeway_connections_total', { service: 'db', decision: 'allow' }), 1);
  assert.equal(atConnector.value('causeway_tunnel_streams_opened_total'), 1);
  assert.equal(atConnector.value('causeway_tunnels', { state: 'up' }), 1);
  assert.equal(atConnector.value('causeway_connections_active', { service: 'db' }), undefined);
  assert.ok((atConnector.value('causeway_cert_expiry_seconds') ?? 0) > 3600);
  assert.equal(atConnector.all('causeway_config_info').length, 1);

  // The access tier's decisions are not the connector's, and the health endpoints still answer.
  assert.equal(atConnector.value('causeway_decisions_total', { result: 'deny', reason: 'unknown-service' }), undefined);
  assert.equal((await fetch(`${edgeUrl}/healthz`)).status, 200);
  assert.equal((await fetch(`${connectorUrl}/readyz`)).status, 200);
});

void test('joined to a control plane, /metrics says which revision each part enforces, and that it is stale while the control plane is down', { timeout: 90_000 }, async (t) => {
  const plugins: TestPlugin[] = [(app, o) => configStreamPlugin(app, o), (app, o) => enrollmentPlugin(app, o), (app, o) => eventsIngestPlugin(app, o)];
  const cp = await startTestControlPlane({ plugins });
  t.after(() => cp.close());
  await applySpecs(cp, baseSpecs());
  const joinToken = async (kind: 'access-tier' | 'connector', name: string): Promise<{ token: string; caPin: string }> => {
    const r = await cp.api('POST', '/api/v1/join-tokens', { kind, name });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { token: string; caPin: string };
  };

  const edgeJoin = await joinToken('access-tier', 'edge-1');
  let accessTierParts: Closable[] = [];
  let accessTier: AccessTier | undefined;
  const program = new Command('causeway').exitOverride();
  registerAccessTierCommand(program, {
    cwd: () => dir,
    env: () => ({}),
    logDestination: discard(),
    onStarted: (parts, started) => {
      accessTierParts = parts;
      accessTier = started;
    },
  });
  t.after(async () => {
    for (const part of [...accessTierParts].reverse()) await part.close();
  });
  await program.parseAsync(['node', 'causeway', 'access-tier', '--control-plane', cp.url, '--join-token', edgeJoin.token, '--ca-pin', edgeJoin.caPin, '--data-dir', 'joined-edge', '--listen', '127.0.0.1:0', '--health-listen', '127.0.0.1:0']);
  assert.ok(accessTier !== undefined);
  const edge = accessTier;
  const edgeUrl = healthUrl(accessTierParts);
  await applySpecs(cp, [{ apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-1' }, spec: { cluster: 'c1', address: `127.0.0.1:${edge.port()}` } }]);

  const dcJoin = await joinToken('connector', 'dc1');
  let connectorParts: Closable[] = [];
  t.after(async () => {
    for (const part of [...connectorParts].reverse()) await part.close();
  });
  await runConnector(
    { controlPlane: cp.url, joinToken: dcJoin.token, caPin: dcJoin.caPin, dataDir: 'joined-dc1', logLevel: 'info', healthListen: { host: '127.0.0.1', port: 0 } },
    {
      cwd: () => dir,
      env: () => ({}),
      logDestination: discard(),
      onStarted: (parts) => {
        connectorParts = parts;
      },
    },
  );
  const connectorUrl = healthUrl(connectorParts);
  await eventually(() => (edge.stats().tunnels.length === 1 ? true : undefined), 15_000, 'the connector tunnel');

  const following = async (url: string): Promise<Exposition> =>
    eventually(async () => {
      const m = await scrape(url);
      return (m.value('causeway_config_revision') ?? 0) > 0 && m.value('causeway_config_stale') === 0 && m.value('causeway_tunnels', { state: 'up' }) === 1 ? m : undefined;
    }, 15_000, `${url} following the control plane`);
  const [edgeBefore, connectorBefore] = [await following(edgeUrl), await following(connectorUrl)];
  for (const m of [edgeBefore, connectorBefore]) {
    const expiry = m.value('causeway_cert_expiry_seconds') ?? 0;
    assert.ok(expiry > 3600 && expiry <= 24 * 3600 + 600, `the enrolled certificate expires in about a day: ${expiry}`);
    assert.equal(m.all('causeway_config_info').length, 1);
  }

  await cp.stop();
  let restarted = false;
  try {
    const stale = async (url: string): Promise<Exposition> =>
      eventually(async () => {
        const m = await scrape(url);
        return m.value('causeway_config_stale') === 1 ? m : undefined;
      }, 15_000, `${url} saying its configuration is stale`);
    const [edgeStale, connectorStale] = [await stale(edgeUrl), await stale(connectorUrl)];
    // The last good configuration is still the one enforced.
    assert.ok((edgeStale.value('causeway_config_revision') ?? 0) >= (edgeBefore.value('causeway_config_revision') ?? 0));
    assert.deepEqual(connectorStale.all('causeway_config_info').map((s) => s.labels), connectorBefore.all('causeway_config_info').map((s) => s.labels));
    await cp.start();
    restarted = true;
    await following(edgeUrl);
  } finally {
    if (!restarted) await cp.start();
  }
});
