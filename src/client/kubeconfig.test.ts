import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { UserError } from '../lib/errors.ts';
import type { CatalogEntry } from './catalog.ts';
import { BACKUP_SUFFIX, kubeconfigPath, renderKubeconfigEntries, resolveCausewayCommand, writeKubeconfigEntries } from './kubeconfig.ts';
import type { KubeconfigEntryInput, KubeconfigTarget } from './kubeconfig.ts';

const CA = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';

function kube(name: string, clusterName: string, o: { port?: number; authentication?: 'oidc' | 'cluster'; domain?: string } = {}): CatalogEntry {
  return {
    name,
    type: 'kubernetes',
    domain: o.domain ?? `${clusterName}.corp.example.com`,
    port: o.port ?? 443,
    autorun: false,
    client: { listenPort: 8081, allowUserOverride: true },
    accessTiers: [{ name: 'edge-1', address: 'edge.example.com:8443' }],
    kubernetes: { clusterName, caPublicKey: CA, authentication: o.authentication ?? 'oidc' },
    proxy: { mode: 'chain' },
    access: { allowed: true, mode: 'enforcing', reasons: [], explanation: 'allowed', hints: [] },
  };
}

const prod: KubeconfigEntryInput = { entry: kube('prod-k8s', 'prod'), listenPort: 8081 };
const staging: KubeconfigEntryInput = { entry: kube('staging-k8s', 'staging', { port: 6443 }), listenPort: 8082 };

/** A kubeconfig as kubectl writes it (sequences not indented), with comments and odd-but-valid formatting. */
const KUBECTL_STYLE = `apiVersion: v1
# the team's clusters
clusters:
- cluster:
    certificate-authority-data: LS0tbm90LXJlYWwtLS0=
    server: https://10.0.0.1:6443   # keep this comment
  name: kind-dev
- name: "quoted-name"
  cluster: {server: 'https://flow.example.com'}
contexts:
- context:
    cluster: kind-dev
    user: kind-dev
  name: kind-dev
current-context: kind-dev
kind: Config
preferences: {}
users:
- name: kind-dev
  user:
    client-certificate-data: Zm9v
    client-key-data: YmFy
`;

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-kubeconfig-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function target(file: string, overwrite = false): KubeconfigTarget {
  return { file, overwrite, causewayCommand: 'causeway' };
}

function lines(text: string): string[] {
  return text.split('\n');
}

/** Every line of `original`, in order, appears in `merged` (nothing of it changed, only lines added). */
function assertSubsequence(original: string, merged: string): void {
  const out = lines(merged);
  let at = 0;
  for (const line of lines(original)) {
    const found = out.indexOf(line, at);
    assert.ok(found >= 0, `line ${JSON.stringify(line)} kept in order\n---\n${merged}`);
    at = found + 1;
  }
}

function doc(file: string): Record<string, unknown> {
  return parseYaml(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

function named(list: unknown, name: string): Record<string, unknown> | undefined {
  return (list as Array<Record<string, unknown>>).find((e) => e.name === name);
}

void test('merge keeps unrelated clusters, users, contexts and comments byte-for-byte and adds ours', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  fs.writeFileSync(file, KUBECTL_STYLE, { mode: 0o600 });
  const result = await writeKubeconfigEntries(target(file), [prod, staging]);
  assert.deepEqual(result.contexts, ['prod', 'staging']);
  assert.equal(result.overwritten, false);
  const merged = fs.readFileSync(file, 'utf8');
  assertSubsequence(KUBECTL_STYLE, merged);
  // Exactly: the original text with whole entries of ours added at the end of each list.
  const b64 = Buffer.from(CA).toString('base64');
  const cluster = (name: string, server: string, port: number): string => `- name: ${name}\n  cluster:\n    server: ${server}\n    certificate-authority-data: ${b64}\n    proxy-url: http://localhost:${port}\n`;
  const context = (name: string): string => `- name: ${name}\n  context:\n    cluster: ${name}\n    user: causeway-${name}\n`;
  const user = (name: string): string =>
    `- name: causeway-${name}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: causeway\n      args:\n      - kube-credential\n      - --cluster\n      - ${name}\n      interactiveMode: Never\n      provideClusterInfo: false\n`;
  const expected = KUBECTL_STYLE.replace('contexts:\n', `${cluster('prod', 'https://prod.corp.example.com', 8081)}${cluster('staging', 'https://staging.corp.example.com:6443', 8082)}contexts:\n`)
    .replace('current-context: kind-dev\n', `${context('prod')}${context('staging')}current-context: kind-dev\n`)
    .concat(user('prod'), user('staging'));
  assert.equal(merged, expected);
  const parsed = doc(file);
  assert.deepEqual(named(parsed.clusters, 'kind-dev'), named((parseYaml(KUBECTL_STYLE) as Record<string, unknown>).clusters, 'kind-dev'));
  assert.equal(parsed['current-context'], 'kind-dev', 'an existing current-context is kept');
  assert.deepEqual(named(parsed.clusters, 'prod')?.cluster, { server: 'https://prod.corp.example.com', 'certificate-authority-data': Buffer.from(CA).toString('base64'), 'proxy-url': 'http://localhost:8081' });
  assert.equal((named(parsed.clusters, 'staging')?.cluster as Record<string, unknown>).server, 'https://staging.corp.example.com:6443');
  assert.equal((named(parsed.clusters, 'staging')?.cluster as Record<string, unknown>)['proxy-url'], 'http://localhost:8082');
  assert.deepEqual(named(parsed.users, 'causeway-prod')?.user, {
    exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'causeway', args: ['kube-credential', '--cluster', 'prod'], interactiveMode: 'Never', provideClusterInfo: false },
  });
  assert.deepEqual(named(parsed.contexts, 'prod')?.context, { cluster: 'prod', user: 'causeway-prod' });
  // The new entries follow kubectl's own layout (no indent before "-") in this file.
  assert.match(merged, /\n- name: prod\n {2}cluster:\n/);
});

void test('merge into a file whose lists are indented keeps that indentation, and a second write with the same entries changes nothing', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  const indented = `apiVersion: v1
kind: Config
clusters:
  - name: other
    cluster:
      server: https://other.example.com
users:
  - name: other
    user:
      token: abc
contexts:
  - name: other
    context:
      cluster: other
      user: other
`;
  fs.writeFileSync(file, indented);
  await writeKubeconfigEntries(target(file), [prod]);
  const once = fs.readFileSync(file, 'utf8');
  assertSubsequence(indented, once);
  assert.match(once, /\n {2}- name: prod\n {4}cluster:\n/);
  assert.equal(doc(file)['current-context'], 'prod', 'a file without current-context gets ours');
  await writeKubeconfigEntries(target(file), [prod]);
  assert.equal(fs.readFileSync(file, 'utf8'), once, 'idempotent');
});

void test('an entry of ours is replaced in place; what surrounds it stays byte-for-byte', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  fs.writeFileSync(file, KUBECTL_STYLE);
  await writeKubeconfigEntries(target(file), [prod]);
  const before = fs.readFileSync(file, 'utf8');
  await writeKubeconfigEntries(target(file), [{ entry: prod.entry, listenPort: 9999 }]);
  const after = fs.readFileSync(file, 'utf8');
  assert.equal(after, before.replace('http://localhost:8081', 'http://localhost:9999'));
  assert.equal(fs.readFileSync(`${file}${BACKUP_SUFFIX}`, 'utf8'), before, 'the backup is the previous file');
});

void test('missing, null and empty sections are filled; an empty file becomes a whole kubeconfig', async (t) => {
  const dir = tempDir(t);
  for (const [label, text] of [
    ['null sections', 'apiVersion: v1\nkind: Config\nclusters: null\nusers:\ncontexts: []\ncurrent-context: ""\n'],
    ['no sections', 'apiVersion: v1\nkind: Config\npreferences: {}\n'],
    ['empty file', ''],
    ['no trailing newline', 'apiVersion: v1\nkind: Config'],
  ] as const) {
    const file = path.join(dir, label.replaceAll(' ', '-'));
    fs.writeFileSync(file, text);
    await writeKubeconfigEntries(target(file), [prod, staging]);
    const parsed = doc(file);
    assert.equal(parsed.apiVersion, 'v1', label);
    assert.deepEqual((parsed.contexts as Array<{ name: string }>).map((c) => c.name), ['prod', 'staging'], label);
    assert.deepEqual((parsed.clusters as Array<{ name: string }>).map((c) => c.name), ['prod', 'staging'], label);
    assert.deepEqual((parsed.users as Array<{ name: string }>).map((c) => c.name), ['causeway-prod', 'causeway-staging'], label);
    assert.equal(parsed['current-context'], 'prod', label);
  }
});

void test('a new file is created 0600 in a new 0700 directory, and an existing file is rewritten 0600 with a 0600 backup', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'kube', 'config');
  const first = await writeKubeconfigEntries(target(file), [prod]);
  assert.equal(first.backup, undefined);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
  fs.chmodSync(file, 0o644);
  const previous = fs.readFileSync(file, 'utf8');
  const second = await writeKubeconfigEntries(target(file), [staging]);
  assert.equal(second.backup, `${file}${BACKUP_SUFFIX}`);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.equal(fs.statSync(`${file}${BACKUP_SUFFIX}`).mode & 0o777, 0o600);
  assert.equal(fs.readFileSync(`${file}${BACKUP_SUFFIX}`, 'utf8'), previous);
  assert.deepEqual(fs.readdirSync(path.dirname(file)).sort(), ['config', `config${BACKUP_SUFFIX}`], 'no temporary or lock file left');
});

void test('a malformed kubeconfig is reported with file and line, left untouched, and nothing else is written', async (t) => {
  const dir = tempDir(t);
  for (const [label, text, line] of [
    ['bad yaml', 'apiVersion: v1\nclusters:\n- name: a\n  cluster: {server: x\nusers: []\n', undefined],
    ['duplicate key', 'apiVersion: v1\nkind: Config\nkind: Config\n', 3],
    ['clusters not a list', 'apiVersion: v1\nkind: Config\nclusters:\n  name: x\n', 4],
    ['entry without a name', 'apiVersion: v1\nusers:\n- user: {token: x}\n', 3],
    ['top level a list', '- a\n- b\n', 1],
  ] as const) {
    const file = path.join(dir, label.replaceAll(' ', '-'));
    fs.writeFileSync(file, text, { mode: 0o640 });
    const before = fs.statSync(file);
    await assert.rejects(writeKubeconfigEntries(target(file), [prod]), (err: unknown) => {
      assert.ok(err instanceof UserError, label);
      assert.equal(err.code, 'KUBECONFIG_INVALID', label);
      assert.ok(err.message.includes(file), `${label}: ${err.message}`);
      if (line !== undefined) assert.ok(err.message.includes(`(line ${line})`), `${label}: ${err.message}`);
      else assert.match(err.message, /\(line \d+\)/, label);
      assert.match(err.message, /left untouched/);
      return true;
    });
    assert.equal(fs.readFileSync(file, 'utf8'), text, label);
    const after = fs.statSync(file);
    assert.equal(after.mtimeMs, before.mtimeMs, label);
    assert.equal(after.mode & 0o777, 0o640, label);
    assert.equal(fs.existsSync(`${file}${BACKUP_SUFFIX}`), false, label);
  }
  assert.equal(fs.readdirSync(dir).length, 5, 'no temporary, backup or lock files');
});

void test('a crash before the rename leaves the previous kubeconfig intact and no temporary file', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  fs.writeFileSync(file, KUBECTL_STYLE);
  await assert.rejects(
    writeKubeconfigEntries(target(file), [prod], {
      beforeRename: async (tmp) => {
        assert.equal(path.dirname(tmp), dir, 'the temporary file is in the same directory (rename is atomic)');
        assert.equal(fs.statSync(tmp).mode & 0o777, 0o600);
        await Promise.resolve();
        if (!tmp.endsWith(BACKUP_SUFFIX)) throw new Error('power cut');
      },
    }),
    /KUBECONFIG_WRITE_FAILED|power cut/,
  );
  assert.equal(fs.readFileSync(file, 'utf8'), KUBECTL_STYLE);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
});

void test('overwrite mode: the causeway extension in the file, or the managed pin, regenerates the file (preferences kept, backup made)', async (t) => {
  const dir = tempDir(t);
  const withExtension = `apiVersion: v1
kind: Config
preferences:
  extensions:
  - name: causeway
    extension:
      overwrite: true
clusters:
- name: stale
  cluster: {server: https://stale.example.com}
users: []
contexts:
- name: stale
  context: {cluster: stale, user: stale}
current-context: stale
`;
  const file = path.join(dir, 'config');
  fs.writeFileSync(file, withExtension);
  const result = await writeKubeconfigEntries(target(file), [prod, staging]);
  assert.equal(result.overwritten, true);
  const parsed = doc(file);
  assert.deepEqual((parsed.clusters as Array<{ name: string }>).map((c) => c.name), ['prod', 'staging']);
  assert.deepEqual((parsed.contexts as Array<{ name: string }>).map((c) => c.name), ['prod', 'staging']);
  assert.equal(parsed['current-context'], 'prod', 'a current-context that no longer exists is replaced');
  assert.deepEqual(parsed.preferences, { extensions: [{ name: 'causeway', extension: { overwrite: true } }] }, 'overwrite mode persists');
  assert.equal(fs.readFileSync(`${file}${BACKUP_SUFFIX}`, 'utf8'), withExtension);

  const pinned = path.join(dir, 'pinned');
  fs.writeFileSync(pinned, KUBECTL_STYLE);
  const byPin = await writeKubeconfigEntries(target(pinned, true), [prod]);
  assert.equal(byPin.overwritten, true);
  assert.equal(named(doc(pinned).clusters, 'kind-dev'), undefined, 'regenerated: the other entries are gone (kept in the backup)');
  assert.equal(fs.readFileSync(`${pinned}${BACKUP_SUFFIX}`, 'utf8'), KUBECTL_STYLE);

  const off = path.join(dir, 'off');
  fs.writeFileSync(off, withExtension.replace('overwrite: true', 'overwrite: false'));
  assert.equal((await writeKubeconfigEntries(target(off), [prod])).overwritten, false);
  assert.ok(named(doc(off).clusters, 'stale') !== undefined);
});

void test("authentication 'cluster': the context uses the user named after the cluster; an existing one is never touched, else an empty one is added", async (t) => {
  const dir = tempDir(t);
  const own = { entry: kube('corp', 'corp', { authentication: 'cluster' }), listenPort: 8090 };
  const withUser = path.join(dir, 'with-user');
  const text = 'apiVersion: v1\nkind: Config\nusers:\n- name: corp\n  user:\n    token: secret-of-the-cluster\n';
  fs.writeFileSync(withUser, text);
  await writeKubeconfigEntries(target(withUser), [own]);
  const parsed = doc(withUser);
  assert.deepEqual(parsed.users, [{ name: 'corp', user: { token: 'secret-of-the-cluster' } }]);
  assert.deepEqual(named(parsed.contexts, 'corp')?.context, { cluster: 'corp', user: 'corp' });
  assertSubsequence(text, fs.readFileSync(withUser, 'utf8'));

  const without = path.join(dir, 'without');
  await writeKubeconfigEntries(target(without), [own]);
  assert.deepEqual(doc(without).users, [{ name: 'corp', user: {} }]);
  assert.equal(/causeway-corp|kube-credential/.test(fs.readFileSync(without, 'utf8')), false);
});

void test('of two services with one cluster name the first given is written and the other reported; non-kubernetes entries are ignored', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  const again = await writeKubeconfigEntries(target(file), [{ entry: kube('prod-again', 'prod', { domain: 'again.example.com' }), listenPort: 8085 }, prod]);
  assert.deepEqual(again.contexts, ['prod']);
  assert.deepEqual(again.skipped, [{ service: 'prod-k8s', clusterName: 'prod', because: 'service "prod-again" uses the same Kubernetes cluster name' }]);
  assert.equal((named(doc(file).clusters, 'prod')?.cluster as Record<string, unknown>).server, 'https://again.example.com');
  const tcp: CatalogEntry = { ...kube('db', 'db'), type: 'tcp', kubernetes: null };
  const result = await writeKubeconfigEntries(target(file), [{ entry: tcp, listenPort: 5432 }, prod]);
  assert.deepEqual(result.contexts, ['prod']);
});

void test('a symlinked kubeconfig is written through: the link stays, its target gets the entries', async (t) => {
  const dir = tempDir(t);
  const real = path.join(dir, 'dotfiles-kubeconfig');
  fs.writeFileSync(real, KUBECTL_STYLE);
  const link = path.join(dir, 'config');
  fs.symlinkSync(real, link);
  const result = await writeKubeconfigEntries(target(link), [prod]);
  assert.equal(result.file, fs.realpathSync(real));
  assert.ok(fs.lstatSync(link).isSymbolicLink());
  assert.ok(named(doc(real).clusters, 'prod') !== undefined);
});

void test('concurrent writers (the agent connecting while kubeconfig sync runs) both land', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  fs.writeFileSync(file, KUBECTL_STYLE);
  await Promise.all([writeKubeconfigEntries(target(file), [prod]), writeKubeconfigEntries(target(file), [staging])]);
  const parsed = doc(file);
  assert.ok(named(parsed.contexts, 'prod') !== undefined);
  assert.ok(named(parsed.contexts, 'staging') !== undefined);
  assert.ok(named(parsed.contexts, 'kind-dev') !== undefined);
});

void test('a stale lock (a writer that died) is taken over; a live one makes the writer wait, then give up with KUBECONFIG_LOCKED', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  const lock = `${file}.causeway.lock`;
  fs.writeFileSync(lock, '1');
  await assert.rejects(writeKubeconfigEntries(target(file), [prod], { lockTimeoutMs: 100 }), (err: unknown) => err instanceof UserError && err.code === 'KUBECONFIG_LOCKED');
  const old = new Date(Date.now() - 60_000);
  fs.utimesSync(lock, old, old);
  await writeKubeconfigEntries(target(file), [prod], { lockTimeoutMs: 100 });
  assert.equal(fs.existsSync(lock), false);
});

void test('renderKubeconfigEntries (--print) is a whole kubeconfig with only our entries, and the exec args carry the command prefix', () => {
  const text = renderKubeconfigEntries([staging], { causewayCommand: '/usr/bin/node', causewayArgs: ['/opt/causeway/src/main.ts'] });
  const parsed = parseYaml(text) as Record<string, unknown>;
  assert.equal(parsed.kind, 'Config');
  assert.equal(parsed['current-context'], 'staging');
  const exec = (named(parsed.users, 'causeway-staging')?.user as { exec: { command: string; args: string[] } }).exec;
  assert.equal(exec.command, '/usr/bin/node');
  assert.deepEqual(exec.args, ['/opt/causeway/src/main.ts', 'kube-credential', '--cluster', 'staging']);
  assert.equal((named(parsed.clusters, 'staging')?.cluster as Record<string, unknown>).server, 'https://staging.corp.example.com:6443');
});

void test('kubeconfigPath: the first path of $KUBECONFIG, else ~/.kube/config', () => {
  assert.equal(kubeconfigPath({ KUBECONFIG: `/a/one${path.delimiter}/b/two` }, '/home/u'), '/a/one');
  assert.equal(kubeconfigPath({ KUBECONFIG: `${path.delimiter}/b/two` }, '/home/u'), '/b/two');
  assert.equal(kubeconfigPath({ KUBECONFIG: '' }, '/home/u'), '/home/u/.kube/config');
  assert.equal(kubeconfigPath({}, '/home/u'), '/home/u/.kube/config');
});

void test('resolveCausewayCommand: causeway when on PATH (absolute entries only), else the executable script, else node with the script', () => {
  const exists = (set: string[]) => (file: string) => set.includes(file);
  assert.deepEqual(resolveCausewayCommand({ pathEnv: '/usr/bin:/usr/local/bin', script: '/opt/c/src/main.ts', execPath: '/n/node', isExecutable: exists(['/usr/local/bin/causeway']) }), { command: 'causeway', args: [] });
  assert.deepEqual(resolveCausewayCommand({ pathEnv: '.:bin', script: '/opt/c/bin/causeway.js', execPath: '/n/node', isExecutable: exists(['bin/causeway', 'causeway', '/opt/c/bin/causeway.js']) }), { command: '/opt/c/bin/causeway.js', args: [] });
  assert.deepEqual(resolveCausewayCommand({ pathEnv: undefined, script: '/opt/c/src/main.ts', execPath: '/n/node', isExecutable: exists([]) }), { command: '/n/node', args: ['/opt/c/src/main.ts'] });
});

void test('a hand-written flow-style list (clusters: [...]) is merged through the Document API: the data and comments stay, ours are added', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config');
  const flow = '# mine\napiVersion: v1\nkind: Config\nclusters: [{name: a, cluster: {server: "https://a.example.com"}}]\nusers: [{name: a, user: {token: t}}]\ncontexts: [{name: a, context: {cluster: a, user: a}}]\ncurrent-context: a\n';
  fs.writeFileSync(file, flow);
  await writeKubeconfigEntries(target(file), [prod]);
  const text = fs.readFileSync(file, 'utf8');
  assert.match(text, /^# mine\n/);
  const parsed = doc(file);
  assert.deepEqual(named(parsed.clusters, 'a'), { name: 'a', cluster: { server: 'https://a.example.com' } });
  assert.deepEqual(named(parsed.users, 'a'), { name: 'a', user: { token: 't' } });
  assert.ok(named(parsed.clusters, 'prod') !== undefined);
  assert.ok(named(parsed.users, 'causeway-prod') !== undefined);
  assert.deepEqual(named(parsed.contexts, 'prod')?.context, { cluster: 'prod', user: 'causeway-prod' });
  assert.equal(parsed['current-context'], 'a');
});
