/**
 * The service catalog and kubeconfig sync against the whole system (issue 7): a real control plane,
 * access tier, connector and fake Kubernetes API (test/kit/device-system.ts), and the real CLI
 * (bin/causeway.js in child processes, CAUSEWAY_HOME, KUBECONFIG and the managed client config in
 * temp dirs).
 *
 * The catalog has the kit's Kubernetes service (its cluster keeps its own authentication: the fake
 * API's bearer token, already in the user's kubeconfig), a second one that uses Causeway's OIDC
 * provider, a TCP service and a service hidden from the catalog. Trust comes from a TrustProfile with
 * one factor this test controls on the real machine: a file that must exist. So `causeway services`
 * shows an allowed catalog, and the denial in words once the file is gone; `causeway kubeconfig sync`
 * merges both clusters into a kubeconfig that already holds other entries, and plain kubectl (no proxy
 * environment) reaches the cluster through `causeway proxy SERVICE` taking the service from the catalog,
 * with every kubectl this machine has.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { kubectlBinaries, repoRoot, runKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary } from '../kit/kubectl.ts';
import { DOMAIN, PASSWORD, SERVICE, newHome, startDeviceSystem, until, writeIn } from '../kit/device-system.ts';
import type { CliResult, DeviceSystem } from '../kit/device-system.ts';
import { freePort } from '../kit/ports.ts';

const binaries: KubectlBinary[] = await kubectlBinaries();
const BIN = join(repoRoot, 'bin', 'causeway.js');

interface Row {
  name: string;
  type: string;
  domain: string;
  connected: boolean;
  localPort: number;
  kubernetes: { clusterName: string; authentication: string } | null;
  access: { allowed: boolean; reasons: string[]; explanation: string; hints: string[] };
}

let system: DeviceSystem;
let home: string;
let marker: string;
let kubeListenPort: number;
let secondListenPort: number;
let kubeCaPem: string;

async function causeway(args: string[], env: Record<string, string> = {}, stdin?: string): Promise<CliResult> {
  return system.cli(args, { env: { CAUSEWAY_HOME: home, ...env }, ...(stdin === undefined ? {} : { stdin }) });
}

async function ok(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const r = await causeway(args, env);
  assert.equal(r.code, 0, `causeway ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

async function catalogJson(env: Record<string, string> = {}): Promise<{ hidden: boolean; services: Row[] }> {
  return JSON.parse((await ok(['services', '-o', 'json'], env)).stdout) as { hidden: boolean; services: Row[] };
}

function row(rows: Row[], name: string): Row {
  const found = rows.find((r) => r.name === name);
  assert.ok(found !== undefined, `${name} in ${rows.map((r) => r.name).join(', ')}`);
  return found;
}

/** Runs `causeway device report` (the real CLI): the real collectors check the marker file. */
async function report(): Promise<void> {
  await ok(['device', 'report']);
}

before(async () => {
  assert.ok(binaries.length > 0, 'a kubectl binary is needed');
  system = await startDeviceSystem();
  kubeCaPem = system.service.spec.kubernetes?.caPublicKey ?? '';
  marker = join(system.dir, 'corp-agent.conf');
  await writeFile(marker, 'managed\n');
  await system.put('TrustProfile', 'laptops', { appliesTo: { ownership: ['other'] }, staleAfter: '15m', factors: [{ type: 'fileExists', path: marker, effect: 'Low' }] });
  kubeListenPort = await freePort();
  secondListenPort = await freePort();
  // The kit's service, on a free local port, keeping the cluster's own authentication.
  await system.put('Service', SERVICE, {
    ...system.service.spec,
    client: { listenPort: kubeListenPort, allowUserOverride: true },
    kubernetes: { clusterName: 'e2e', caPublicKey: kubeCaPem, authentication: 'cluster' },
  });
  await system.put('Service', 'second-k8s', {
    ...system.service.spec,
    domain: 'second.devices.causeway.test',
    port: 6443,
    client: { listenPort: secondListenPort },
    kubernetes: { clusterName: 'second', caPublicKey: kubeCaPem },
  });
  await system.put('Service', 'db', { type: 'tcp', cluster: 'e2e', accessTier: '*', domain: 'db.devices.causeway.test', port: 5432, backend: { target: '127.0.0.1:5432' }, client: { listenPort: 15432 }, policy: { name: 'k8s', mode: 'enforcing' } });
  await system.put('Service', 'hidden-k8s', { ...system.service.spec, domain: 'hidden.devices.causeway.test', showInCatalog: false, kubernetes: { clusterName: 'hidden', caPublicKey: kubeCaPem } });
  home = await newHome(system, 'catalog');
  await system.login(home);
});

after(async () => {
  await system?.close();
});

void describe('causeway services', () => {
  void test('-o json lists the catalog for this device: both clusters, the TCP service, not the hidden one, all allowed while the file exists', async () => {
    await report();
    const { hidden, services } = await catalogJson();
    assert.equal(hidden, false);
    assert.deepEqual(services.map((s) => s.name), ['db', SERVICE, 'second-k8s']);
    const kube = row(services, SERVICE);
    assert.equal(kube.domain, DOMAIN);
    assert.equal(kube.localPort, kubeListenPort);
    assert.equal(kube.connected, false);
    assert.deepEqual(kube.kubernetes && { clusterName: kube.kubernetes.clusterName, authentication: kube.kubernetes.authentication }, { clusterName: 'e2e', authentication: 'cluster' });
    for (const s of services) assert.equal(s.access.allowed, true, `${s.name}: ${s.access.explanation}`);
  });

  void test('the table says why access would be denied, in words, once the device drops to Low', async (t) => {
    await rm(marker);
    t.after(async () => {
      await writeFile(marker, 'managed\n');
      await report();
    });
    await report();
    const { services } = await catalogJson();
    const kube = row(services, SERVICE);
    assert.equal(kube.access.allowed, false);
    assert.deepEqual(kube.access.reasons, ['trust-too-low']);
    assert.deepEqual(kube.access.hints, ['needs:Medium', 'has:Low', 'trust:file-missing']);
    const table = (await ok(['services'])).stdout.split('\n');
    assert.match(table[0] ?? '', /^NAME\s+TYPE\s+DOMAIN\s+PORT\s+CONNECTED\s+ACCESS$/);
    const line = table.find((l) => l.startsWith(`${SERVICE} `));
    assert.ok(line !== undefined, table.join('\n'));
    assert.match(line, new RegExp(`^${SERVICE}\\s+kubernetes\\s+${DOMAIN.replaceAll('.', '\\.')}\\s+${kubeListenPort}\\s+no\\s+denied: device trust Low, this service needs Medium \\(file missing\\)$`));
    assert.match(table.find((l) => l.startsWith('second-k8s ')) ?? '', /second\.devices\.causeway\.test:6443/);
  });

  void test('hideCatalog in the managed client config hides the catalog except autorun services; the user cannot unhide it', async () => {
    const managed = await writeIn(system, 'managed-hide.yaml', 'hideCatalog: true\nautorun: [second-k8s]\n');
    await writeFile(join(home, 'settings.yaml'), 'hideCatalog: false\n', { mode: 0o600 });
    try {
      const env = { CAUSEWAY_CLIENT_CONFIG: managed };
      const { hidden, services } = await catalogJson(env);
      assert.equal(hidden, true);
      assert.deepEqual(services.map((s) => s.name), ['second-k8s']);
      const table = await ok(['services'], env);
      assert.match(table.stdout, /^The service catalog is hidden by your organisation/);
      assert.doesNotMatch(table.stdout, /\bdb\b|e2e-k8s/);
      assert.match(table.stderr, /hideCatalog: your setting false in .*settings\.yaml is ignored/);
    } finally {
      await rm(join(home, 'settings.yaml'));
    }
  });

  void test('a managed client config others can write is refused, naming the file', async () => {
    const managed = await writeIn(system, 'managed-unsafe.yaml', 'hideCatalog: false\n');
    await chmod(managed, 0o666);
    const r = await causeway(['services'], { CAUSEWAY_CLIENT_CONFIG: managed });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /managed-unsafe\.yaml is refused: .*writable.*\(SETTINGS_UNSAFE\)/);
  });
});

void describe('causeway kubeconfig sync, and kubectl through causeway proxy from the catalog', () => {
  let kubeconfig: string;
  let original: string;
  let proxy: ChildProcess | undefined;

  before(async () => {
    kubeconfig = join(system.dir, 'kube-config');
    // The user's kubeconfig: another cluster, and the cluster's own credentials for e2e.
    original = `apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://elsewhere.example.com:6443
  name: elsewhere
contexts:
- context:
    cluster: elsewhere
    user: elsewhere-admin
  name: elsewhere
current-context: elsewhere
preferences: {}
users:
- name: elsewhere-admin
  user:
    token: not-ours
- name: e2e
  user:
    token: kubectl-test-token
`;
    await writeFile(kubeconfig, original, { mode: 0o600 });
  });

  after(() => {
    proxy?.kill('SIGTERM');
  });

  void test('sync merges a context per Kubernetes service, keeping every other entry byte-for-byte and the cluster\'s own user', async () => {
    const r = await ok(['kubeconfig', 'sync'], { KUBECONFIG: kubeconfig });
    assert.match(r.stdout, new RegExp(`^Updated ${kubeconfig.replaceAll('.', '\\.')} with contexts e2e, second \\(previous file: .*kube-config\\.causeway\\.bak\\)\\.`));
    assert.match(r.stdout, new RegExp(`e2e: run \`causeway connect ${SERVICE}\` before using kubectl --context e2e\\.`));
    const text = await readFile(kubeconfig, 'utf8');
    const lines = text.split('\n');
    let at = 0;
    for (const line of original.split('\n')) {
      const found = lines.indexOf(line, at);
      assert.ok(found >= 0, `kept: ${line}\n${text}`);
      at = found + 1;
    }
    const doc = parseYaml(text) as { clusters: Array<{ name: string; cluster: Record<string, unknown> }>; users: Array<{ name: string; user: Record<string, unknown> }>; contexts: Array<{ name: string; context: Record<string, unknown> }>; 'current-context': string };
    assert.equal(doc['current-context'], 'elsewhere');
    assert.deepEqual(doc.clusters.find((c) => c.name === 'e2e')?.cluster, { server: `https://${DOMAIN}`, 'certificate-authority-data': Buffer.from(kubeCaPem).toString('base64'), 'proxy-url': `http://localhost:${kubeListenPort}` });
    assert.equal(doc.clusters.find((c) => c.name === 'second')?.cluster.server, 'https://second.devices.causeway.test:6443');
    assert.deepEqual(doc.contexts.find((c) => c.name === 'e2e')?.context, { cluster: 'e2e', user: 'e2e' });
    assert.deepEqual(doc.users.find((u) => u.name === 'e2e')?.user, { token: 'kubectl-test-token' }, 'the cluster\'s own credentials are untouched');
    const exec = doc.users.find((u) => u.name === 'causeway-second')?.user.exec as { command: string; args: string[] };
    assert.deepEqual(exec.args.slice(-3), ['kube-credential', '--cluster', 'second']);
    assert.equal(doc.clusters.some((c) => c.name === 'hidden'), false);
    assert.equal((await readFile(`${kubeconfig}.causeway.bak`, 'utf8')), original);
    // A second sync changes nothing.
    await ok(['kubeconfig', 'sync'], { KUBECONFIG: kubeconfig });
    assert.equal(await readFile(kubeconfig, 'utf8'), text);
  });

  void test('kubeconfig --print SERVICE prints the entries and writes nothing; a TCP service has none', async () => {
    const before = await readFile(kubeconfig, 'utf8');
    const printed = await ok(['kubeconfig', '--print', 'second-k8s'], { KUBECONFIG: kubeconfig });
    const doc = parseYaml(printed.stdout) as { contexts: Array<{ name: string }>; users: Array<{ name: string }> };
    assert.deepEqual(doc.contexts.map((c) => c.name), ['second']);
    assert.deepEqual(doc.users.map((u) => u.name), ['causeway-second']);
    assert.equal(await readFile(kubeconfig, 'utf8'), before);
    const tcp = await causeway(['kubeconfig', '--print', 'db'], { KUBECONFIG: kubeconfig });
    assert.equal(tcp.code, 2);
    assert.match(tcp.stderr, /"db" is a tcp service; only Kubernetes services have kubeconfig entries/);
    const unknown = await causeway(['kubeconfig', '--print', 'nope'], { KUBECONFIG: kubeconfig });
    assert.match(unknown.stderr, /No service named "nope" in your catalog\. Known services: db, e2e-k8s, second-k8s\./);
  });

  for (const bin of binaries) {
    void test(`kubectl ${bin.version}: plain kubectl --context e2e get pods, with no proxy variables, through causeway proxy ${SERVICE} taken from the catalog`, async () => {
      if (proxy === undefined) {
        proxy = spawn(process.execPath, [BIN, 'proxy', SERVICE], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(system.dir, 'no-home'), CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: join(system.dir, 'no-client-config.yaml') }, stdio: ['ignore', 'pipe', 'pipe'] });
        let started = '';
        proxy.stdout?.on('data', (b: Buffer) => (started += b.toString()));
        proxy.stderr?.resume();
        await until(() => started.includes('Proxying'), 30_000, `causeway proxy ${SERVICE} to start (${started})`);
        assert.match(started, new RegExp(`^Proxying ${SERVICE} on 127\\.0\\.0\\.1:${kubeListenPort}`));
      }
      const got = await runKubectl(bin.path, ['--context', 'e2e', 'get', 'pods', '-o', 'name', '--request-timeout=20s'], { kubeconfig, timeoutMs: 60_000 });
      assert.equal(got.code, 0, got.stderr);
      assert.match(got.stdout, /^pod\/web-1$/m);
      const contexts = await runKubectl(bin.path, ['config', 'get-contexts', '-o', 'name'], { kubeconfig });
      assert.deepEqual(contexts.stdout.trim().split('\n').sort(), ['e2e', 'elsewhere', 'second']);
    });
  }
});

void describe('causeway login without a URL', () => {
  void test('logs in to the managed client config\'s controlPlane with its caFile; whoami shows the config and its mdmPresent', async () => {
    const fresh = await newHome(system, 'managed-login');
    const managed = await writeIn(system, 'managed-login.yaml', `controlPlane: ${system.publicUrl}\ncaFile: ${system.caFile}\nmdmPresent: true\n`);
    const r = await system.cli(['login', '--user', 'alice', '--password-stdin'], { env: { CAUSEWAY_HOME: fresh, CAUSEWAY_CLIENT_CONFIG: managed }, stdin: `${PASSWORD}\n` });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`Logged in to ${system.publicUrl.replaceAll('.', '\\.')} as alice`));
    const session = JSON.parse(await readFile(join(fresh, 'session.json'), 'utf8')) as { server: string };
    assert.equal(session.server, system.publicUrl);
    const me = await system.cli(['whoami'], { env: { CAUSEWAY_HOME: fresh, CAUSEWAY_CLIENT_CONFIG: managed } });
    assert.equal(me.code, 0, me.stderr);
    assert.match(me.stdout, /^managed: +\S+managed-login\.yaml \(MDM present\)$/m);
    const json = await system.cli(['whoami', '-o', 'json'], { env: { CAUSEWAY_HOME: fresh, CAUSEWAY_CLIENT_CONFIG: managed } });
    assert.deepEqual((JSON.parse(json.stdout) as { managedConfig: unknown }).managedConfig, { file: managed, mdmPresent: true });
  });
});
