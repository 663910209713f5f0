import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { checkPeerCertificate } from './lib/pki/index.ts';
import {
  QUICKSTART_DOMAIN, issueToFiles, openQuickstartData, patchSpecs, writeQuickstartKubeconfigs, writeQuickstartSpecs,
} from './quickstart-data.ts';
import type { RuntimeAddresses } from './quickstart-data.ts';

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'quickstart-data-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const first: RuntimeAddresses = { accessTierAddress: '127.0.0.1:8443', kubeAddress: '127.0.0.1:6443', proxyPort: 8081 };
const second: RuntimeAddresses = { accessTierAddress: '127.0.0.1:18443', kubeAddress: '127.0.0.1:40001', proxyPort: 18081 };

void test('the first open creates the CA and the demo token; a later open reuses both', async (t) => {
  const dir = await tempDir(t);
  const a = await openQuickstartData(dir);
  assert.equal(a.caCreated, true);
  assert.match(a.token, /^demo-[A-Za-z0-9_-]{24}$/);
  assert.equal((await stat(join(dir, 'ca', 'ca.key'))).mode & 0o777, 0o600);
  assert.equal((await stat(a.paths.token)).mode & 0o777, 0o600);
  assert.match(await readFile(join(dir, 'ca', 'ca.key'), 'utf8'), /ENCRYPTED PRIVATE KEY/);

  const b = await openQuickstartData(dir);
  assert.equal(b.caCreated, false);
  assert.equal(b.ca.certPem, a.ca.certPem);
  assert.equal(b.token, a.token);
});

void test('a new CA (ca/ removed) writes a new token too, since everything derived from the old CA is stale', async (t) => {
  const dir = await tempDir(t);
  const a = await openQuickstartData(dir);
  await rm(join(dir, 'ca'), { recursive: true });
  const b = await openQuickstartData(dir);
  assert.equal(b.caCreated, true);
  assert.notEqual(b.ca.certPem, a.ca.certPem);
  assert.notEqual(b.token, a.token);
});

void test('the specs are written valid on the first run and only their run-dependent fields change later', async (t) => {
  const dir = await tempDir(t);
  const data = await openQuickstartData(dir);
  const objects = await writeQuickstartSpecs(data, first);
  const service = objects.find((o) => o.kind === 'Service');
  assert.ok(service?.kind === 'Service');
  assert.equal(service.spec.domain, QUICKSTART_DOMAIN);
  assert.equal(service.spec.connector, 'dc1');
  assert.equal(service.spec.backend.dnsOverride, '127.0.0.1:6443');
  assert.equal(service.spec.kubernetes?.caPublicKey, data.ca.certPem);
  const connector = objects.find((o) => o.kind === 'Connector');
  assert.deepEqual(connector?.kind === 'Connector' ? connector.spec.allowedCidrs : undefined, ['127.0.0.0/8']);

  // The user edits the file: a comment and a description.
  const edited = (await readFile(data.paths.specs, 'utf8')).replace('kind: Connector', '# my note\nkind: Connector').replace(/description: DEMO[^\n]*/, 'description: mine');
  await writeFile(data.paths.specs, edited);

  const later = await openQuickstartData(dir);
  const again = await writeQuickstartSpecs(later, second);
  const text = await readFile(data.paths.specs, 'utf8');
  assert.match(text, /# my note/);
  assert.match(text, /description: mine/);
  const tier = again.find((o) => o.kind === 'AccessTier');
  assert.equal(tier?.kind === 'AccessTier' ? tier.spec.address : undefined, '127.0.0.1:18443');
  const svc = again.find((o) => o.kind === 'Service');
  assert.ok(svc?.kind === 'Service');
  assert.equal(svc.spec.backend.dnsOverride, '127.0.0.1:40001');
  assert.equal(svc.spec.client.listenPort, 18081);
});

void test('specs without the quickstart service are refused with a message that says how to recover', () => {
  const text = 'apiVersion: causeway/v1\nkind: AccessTier\nmetadata: {name: edge-1}\nspec: {cluster: quickstart, address: "127.0.0.1:1"}\n';
  assert.throws(() => patchSpecs(text, '/x/specs.yaml', first), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'QUICKSTART_SPECS_INVALID');
    assert.match(err.message, /Service "demo-k8s"/);
    assert.match(err.message, /delete it/);
    return true;
  });
});

void test('invalid specs are refused with every problem listed', async (t) => {
  const dir = await tempDir(t);
  const data = await openQuickstartData(dir);
  await writeQuickstartSpecs(data, first);
  const broken = (await readFile(data.paths.specs, 'utf8')).replace('allowedCidrs:', 'allowedCidrz:');
  await writeFile(data.paths.specs, broken);
  await assert.rejects(writeQuickstartSpecs(await openQuickstartData(dir), second), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'QUICKSTART_SPECS_INVALID');
    assert.match(err.message, /allowedCidrz/);
    return true;
  });
});

void test('the kubeconfig is kept once written, and the proxy-url kubeconfig follows the proxy port', async (t) => {
  const dir = await tempDir(t);
  const data = await openQuickstartData(dir);
  await writeQuickstartKubeconfigs(data, 'http://127.0.0.1:8081');
  const kubeconfig = parse(await readFile(data.paths.kubeconfig, 'utf8')) as {
    clusters: Array<{ cluster: Record<string, string> }>;
    users: Array<{ user: { token: string } }>;
    'current-context': string;
  };
  assert.equal(kubeconfig.clusters[0].cluster.server, `https://${QUICKSTART_DOMAIN}`);
  assert.equal(kubeconfig.clusters[0].cluster['proxy-url'], undefined);
  assert.equal(Buffer.from(kubeconfig.clusters[0].cluster['certificate-authority-data'], 'base64').toString(), data.ca.certPem);
  assert.equal(kubeconfig.users[0].user.token, data.token);
  assert.equal(kubeconfig['current-context'], 'demo');
  assert.equal((await stat(data.paths.kubeconfig)).mode & 0o777, 0o600);

  await writeFile(data.paths.kubeconfig, `${await readFile(data.paths.kubeconfig, 'utf8')}# edited\n`);
  await writeQuickstartKubeconfigs(await openQuickstartData(dir), 'http://127.0.0.1:9999');
  assert.match(await readFile(data.paths.kubeconfig, 'utf8'), /# edited/);
  const withProxy = parse(await readFile(data.paths.proxyUrlKubeconfig, 'utf8')) as { clusters: Array<{ cluster: Record<string, string> }> };
  assert.equal(withProxy.clusters[0].cluster['proxy-url'], 'http://127.0.0.1:9999');
});

void test('issued certificates are written with the key private and carry the requested type and names', async (t) => {
  const dir = await tempDir(t);
  const data = await openQuickstartData(dir);
  const issued = await issueToFiles(data, 'demo-kube', { type: 'kube-proxy', identity: { name: 'demo-kube' }, dnsNames: [QUICKSTART_DOMAIN] });
  assert.equal((await stat(join(dir, 'certs', 'demo-kube.key'))).mode & 0o777, 0o600);
  assert.equal(await readFile(join(dir, 'certs', 'demo-kube.crt'), 'utf8'), issued.certPem);
  const cert = new X509Certificate(issued.certPem);
  assert.ok(cert.checkHost(QUICKSTART_DOMAIN));
  const check = checkPeerCertificate(cert, 'kube-proxy');
  assert.ok(check.ok);
  assert.equal(check.identity.name, 'demo-kube');
});
