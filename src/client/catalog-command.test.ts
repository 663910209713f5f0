import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { AgentStatus } from './agent-client.ts';
import type { CatalogContext } from './catalog.ts';
import { accessText, registerCatalogCommands } from './catalog-command.ts';
import type { CatalogCommandIo } from './catalog-command.ts';

const SERVER = 'https://cp.example.com:8440';
const CA = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';
const ALLOWED = { allowed: true, mode: 'enforcing', reasons: [], explanation: 'allowed by policy k8s-prod', hints: [] };
const LOW = { allowed: false, mode: 'enforcing', reasons: ['trust-too-low'], explanation: 'denied: device trust Low, this service needs Medium (firewall off)', hints: ['needs:Medium', 'has:Low', 'trust:firewall-off'] };

function kube(name: string, clusterName: string, access: object, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    type: 'kubernetes',
    domain: `${clusterName}.corp.example.com`,
    port: 443,
    autorun: false,
    client: { listenPort: 8081, allowUserOverride: true },
    accessTiers: [{ name: 'edge-1', address: 'edge.example.com:8443' }],
    kubernetes: { clusterName, caPublicKey: CA, authentication: 'oidc' },
    proxy: { mode: 'chain' },
    access,
    ...extra,
  };
}

const CATALOG = [
  { name: 'db', type: 'tcp', domain: 'db.corp.example.com', port: 5432, autorun: true, client: { listenPort: 15432, allowUserOverride: false }, accessTiers: [{ name: 'edge-1', address: 'edge.example.com:8443' }], kubernetes: null, proxy: { mode: 'tcp' }, access: ALLOWED },
  kube('prod-k8s', 'prod', ALLOWED),
  kube('staging-k8s', 'staging', LOW, { port: 6443, client: { listenPort: 8082, allowUserOverride: true } }),
];

interface Harness {
  dir: string;
  out: string[];
  err: string[];
  run: (args: string[]) => Promise<void>;
}

function harness(t: { after: (fn: () => void) => void }, o: { status?: AgentStatus | null | Error; managed?: string; user?: string; catalog?: unknown[] } = {}): Harness {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-catalog-cmd-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const home = path.join(dir, 'home');
  fs.mkdirSync(home, { mode: 0o700 });
  if (o.managed !== undefined) fs.writeFileSync(path.join(dir, 'client.yaml'), o.managed, { mode: 0o644 });
  if (o.user !== undefined) fs.writeFileSync(path.join(home, 'settings.yaml'), o.user, { mode: 0o600 });
  const out: string[] = [];
  const err: string[] = [];
  const ctx: CatalogContext = {
    session: () => Promise.resolve({ server: SERVER, accessToken: 't' } as never),
    fetchFor: () => () => Promise.resolve(new Response(JSON.stringify({ services: o.catalog ?? CATALOG }), { status: 200 })),
    files: { readState: () => Promise.resolve({ id: 'dev-1', server: SERVER }) },
  };
  const io: Partial<CatalogCommandIo> = {
    env: { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: path.join(dir, 'client.yaml'), KUBECONFIG: path.join(dir, 'kube', 'config'), PATH: '/nonexistent' },
    homedir: () => dir,
    out: (line) => out.push(line),
    err: (line) => err.push(line),
    agentStatus: () => (o.status instanceof Error ? Promise.reject(o.status) : Promise.resolve(o.status ?? null)),
    self: { execPath: '/usr/bin/node', script: '/opt/causeway/src/main.ts' },
    isExecutable: () => false,
    catalogContext: ctx,
  };
  return {
    dir,
    out,
    err,
    run: async (args) => {
      const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
      registerCatalogCommands(program, io);
      await program.parseAsync(['node', 'causeway', ...args]);
    },
  };
}

function agentWith(connections: Array<{ service: string; port: number }>): AgentStatus {
  return {
    pid: 1,
    startedAt: '2026-01-01T00:00:00Z',
    server: SERVER,
    user: null,
    device: null,
    trustCert: null,
    connections: connections.map((c) => ({ ...c, type: 'kubernetes', since: '2026-01-01T00:00:00Z', bytesUp: 0, bytesDown: 0, openConnections: 0, totalConnections: 0, autorun: false })),
  };
}

void test('services prints NAME TYPE DOMAIN PORT CONNECTED ACCESS, the connected port from the agent and denials in words', async (t) => {
  const h = harness(t, { status: agentWith([{ service: 'prod-k8s', port: 18081 }]) });
  await h.run(['services']);
  assert.deepEqual(h.out, [
    'NAME         TYPE        DOMAIN                         PORT   CONNECTED     ACCESS',
    'db           tcp         db.corp.example.com:5432       15432  no (autorun)  allowed',
    'prod-k8s     kubernetes  prod.corp.example.com          18081  yes           allowed',
    'staging-k8s  kubernetes  staging.corp.example.com:6443  8082   no            denied: device trust Low, this service needs Medium (firewall off)',
  ]);
});

void test('services -o json and -o yaml carry every field plus connected and localPort', async (t) => {
  const h = harness(t, { status: agentWith([{ service: 'staging-k8s', port: 9000 }]) });
  await h.run(['services', '-o', 'json']);
  const json = JSON.parse(h.out.join('\n')) as { hidden: boolean; services: Array<Record<string, unknown>> };
  assert.equal(json.hidden, false);
  const staging = json.services.find((s) => s.name === 'staging-k8s');
  assert.equal(staging?.connected, true);
  assert.equal(staging?.localPort, 9000);
  assert.deepEqual((staging?.access as { hints: string[] }).hints, ['needs:Medium', 'has:Low', 'trust:firewall-off']);
  const y = harness(t);
  await y.run(['services', '-o', 'yaml']);
  assert.equal((parseYaml(y.out.join('\n')) as { services: unknown[] }).services.length, 3);
  const bad = harness(t);
  await assert.rejects(bad.run(['services', '-o', 'xml']), /must be json or yaml/);
});

void test('no agent running: nothing is connected; an agent that errors is reported and nothing is shown as connected', async (t) => {
  const h = harness(t, { status: null });
  await h.run(['services', '-o', 'json']);
  assert.ok((JSON.parse(h.out.join('\n')) as { services: Array<{ connected: boolean }> }).services.every((s) => !s.connected));
  const broken = harness(t, { status: new Error('agent answered garbage') });
  await broken.run(['services', '-o', 'json']);
  assert.ok((JSON.parse(broken.out.join('\n')) as { services: Array<{ connected: boolean }> }).services.every((s) => !s.connected));
  assert.deepEqual(broken.err, ['Cannot ask the agent what is connected (agent answered garbage); showing nothing as connected.']);
});

void test('hideCatalog: only connected and autorun services, and the user\'s attempt to unhide is reported as ignored', async (t) => {
  const h = harness(t, { managed: 'hideCatalog: true\nautorun: [staging-k8s]\n', user: 'hideCatalog: false\n', status: null });
  await h.run(['services']);
  assert.equal(h.out[0], 'The service catalog is hidden by your organisation; showing only connected and autorun services.');
  assert.deepEqual(h.out.slice(2).map((l) => l.split(/\s+/)[0]), ['db', 'staging-k8s']);
  assert.ok(h.err.some((l) => /^hideCatalog: your setting false in .*settings\.yaml is ignored/.test(l)), h.err.join('\n'));
  const none = harness(t, { managed: 'hideCatalog: true\n', catalog: [CATALOG[1]] });
  await none.run(['services']);
  assert.deepEqual(none.out, ['The service catalog is hidden by your organisation; showing only connected and autorun services.', 'None is connected or set to autorun.']);
});

void test('an empty catalog says so', async (t) => {
  const h = harness(t, { catalog: [] });
  await h.run(['services']);
  assert.deepEqual(h.out, ['No services in your catalog. Ask your administrator which services you should see.']);
});

void test('kubeconfig sync writes every Kubernetes service (allowed or not), with the connected port, and says what is not usable yet', async (t) => {
  const h = harness(t, { status: agentWith([{ service: 'prod-k8s', port: 18081 }]) });
  await h.run(['kubeconfig', 'sync']);
  const file = path.join(h.dir, 'kube', 'config');
  assert.equal(h.out[0], `Updated ${file} with contexts prod, staging.`);
  assert.deepEqual(h.out.slice(1), ['prod: ready — kubectl --context prod get pods', 'staging: denied: device trust Low, this service needs Medium (firewall off)']);
  const doc = parseYaml(fs.readFileSync(file, 'utf8')) as { clusters: Array<{ name: string; cluster: Record<string, string> }>; users: Array<{ name: string; user: { exec: { command: string; args: string[] } } }> };
  assert.equal(doc.clusters.find((c) => c.name === 'prod')?.cluster['proxy-url'], 'http://localhost:18081');
  assert.equal(doc.clusters.find((c) => c.name === 'staging')?.cluster['proxy-url'], 'http://localhost:8082');
  // Not on PATH and the script is not executable: the exec plugin runs this Node with the script.
  assert.deepEqual(doc.users.find((u) => u.name === 'causeway-prod')?.user.exec.command, '/usr/bin/node');
  assert.deepEqual(doc.users.find((u) => u.name === 'causeway-prod')?.user.exec.args, ['/opt/causeway/src/main.ts', 'kube-credential', '--cluster', 'prod']);
});

void test('kubeconfig sync in overwrite mode (the managed pin) regenerates the file and keeps a backup', async (t) => {
  const h = harness(t, { managed: 'kubeconfigOverwrite: true\n' });
  const file = path.join(h.dir, 'kube', 'config');
  fs.mkdirSync(path.dirname(file), { mode: 0o700 });
  const previous = 'apiVersion: v1\nkind: Config\nclusters:\n- name: old\n  cluster: {server: https://old.example.com}\n';
  fs.writeFileSync(file, previous, { mode: 0o600 });
  await h.run(['kubeconfig', 'sync']);
  assert.equal(h.out[0], `Regenerated ${file} with contexts prod, staging (previous file: ${file}.causeway.bak).`);
  assert.equal(fs.readFileSync(`${file}.causeway.bak`, 'utf8'), previous);
  assert.doesNotMatch(fs.readFileSync(file, 'utf8'), /old\.example\.com/);
});

void test('kubeconfig sync with no Kubernetes service writes nothing', async (t) => {
  const h = harness(t, { catalog: [CATALOG[0]] });
  await h.run(['kubeconfig', 'sync']);
  assert.deepEqual(h.out, ['Your catalog has no Kubernetes services; nothing was written.']);
  assert.equal(fs.existsSync(path.join(h.dir, 'kube', 'config')), false);
});

void test('kubeconfig --print SERVICE prints a kubeconfig for that service only; a TCP service and no action are errors', async (t) => {
  const h = harness(t);
  await h.run(['kubeconfig', '--print', 'staging-k8s']);
  const doc = parseYaml(h.out.join('\n')) as { clusters: Array<{ name: string; cluster: Record<string, string> }>; 'current-context': string };
  assert.deepEqual(doc.clusters.map((c) => c.name), ['staging']);
  assert.equal(doc.clusters[0]?.cluster.server, 'https://staging.corp.example.com:6443');
  assert.equal(doc['current-context'], 'staging');
  assert.equal(fs.existsSync(path.join(h.dir, 'kube', 'config')), false, 'nothing written');
  await assert.rejects(harness(t).run(['kubeconfig', '--print', 'db']), /NOT_KUBERNETES|"db" is a tcp service/);
  await assert.rejects(harness(t).run(['kubeconfig']), /causeway kubeconfig sync, or causeway kubeconfig --print SERVICE/);
});

void test('accessText: allowed, permissive would-deny, and a denial without an explanation', () => {
  assert.equal(accessText({ access: ALLOWED }), 'allowed');
  assert.equal(accessText({ access: { allowed: true, mode: 'permissive', reasons: ['trust-too-low'], explanation: 'allowed in permissive mode, but policy p would deny: x', hints: [] } }), 'allowed in permissive mode, but policy p would deny: x');
  assert.equal(accessText({ access: { allowed: false, mode: 'enforcing', reasons: ['no-policy'], explanation: '', hints: [] } }), 'denied: no-policy');
});
