/**
 * The admin commands against a real control plane over HTTPS, started in this process the way
 * `causeway server` starts it (the only import from src/control-plane here, and only in this test:
 * the commands themselves speak HTTP only, as the last test checks).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { errorCode } from '../lib/errors.ts';
import { enroll } from '../lib/enroll/index.ts';
import { silentLogger } from '../lib/log.ts';
import { startServer } from '../control-plane/command.ts';
import type { RunningServer } from '../control-plane/command.ts';
import { registerAdminCommands } from './index.ts';
import { freePort } from '../../test/kit/ports.ts';

let dir: string;
let server: RunningServer;
let env: NodeJS.ProcessEnv;
let adminToken: string;

/** A port nothing listens on now, so the server's public URL (and the join command) names the real one. */
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'causeway-admin-cli-'));
  const port = await freePort();
  server = await startServer(
    { dataDir: join(dir, 'data'), listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl: `https://localhost:${port}`, logLevel: 'silent' },
    { env: {}, print: () => undefined },
    silentLogger(),
  );
  adminToken = (await readFile(join(dir, 'data', 'admin-token'), 'utf8')).trim();
  env = { CAUSEWAY_SERVER: `https://localhost:${server.listener.port}`, CAUSEWAY_TOKEN: adminToken, CAUSEWAY_CA_FILE: join(dir, 'data', 'ca.crt') };
});

after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  out: string[];
  err: string[];
  error: (Error & { code?: string }) | undefined;
}

async function run(args: string[], options: { env?: NodeJS.ProcessEnv; stdin?: string } = {}): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerAdminCommands(program, {
    env: options.env ?? env,
    out: (line) => out.push(line),
    err: (line) => err.push(line),
    readStdin: () => Promise.resolve(options.stdin ?? ''),
  });
  try {
    await program.parseAsync(['node', 'causeway', ...args]);
    return { out, err, error: undefined };
  } catch (error) {
    return { out, err, error: error as Error & { code?: string } };
  }
}

async function ok(args: string[], options: { env?: NodeJS.ProcessEnv; stdin?: string } = {}): Promise<string[]> {
  const result = await run(args, options);
  assert.equal(result.error, undefined, `causeway ${args.join(' ')}: ${result.error?.message ?? ''}\n${result.err.join('\n')}`);
  return result.out;
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

const SPECS = `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: global-edge, address: "edge.example.com:8443"}
---
apiVersion: causeway/v1
kind: Connector
metadata: {name: dc1}
spec: {cluster: global-edge, allowedCidrs: [10.0.0.0/8]}
---
apiVersion: causeway/v1
kind: Role
metadata: {name: engineers, description: Engineers on managed laptops}
spec:
  users: {groups: [eng, "ops\\u001b[31m"]}
---
apiVersion: causeway/v1
kind: Policy
metadata: {name: k8s-prod}
spec:
  access:
    - roles: [engineers]
      trustLevel: Medium
---
apiVersion: causeway/v1
kind: Service
metadata: {name: db, description: The database}
spec:
  type: tcp
  cluster: global-edge
  accessTier: edge-1
  connector: dc1
  domain: db.example.com
  port: 5432
  backend: {target: "db.internal:5432"}
  policy: {name: k8s-prod, mode: permissive}
`;

void describe('causeway apply, get, delete', () => {
  void test('apply prints one line per object; applying again is all unchanged', async () => {
    const path = await file('specs.yaml', SPECS);
    assert.deepEqual(await ok(['apply', '-f', path]), ['accesstier/edge-1 created', 'connector/dc1 created', 'role/engineers created', 'policy/k8s-prod created', 'service/db created']);
    assert.deepEqual(await ok(['apply', '-f', path]), ['accesstier/edge-1 unchanged', 'connector/dc1 unchanged', 'role/engineers unchanged', 'policy/k8s-prod unchanged', 'service/db unchanged']);
  });

  void test('get -o yaml applies back as unchanged, for one object and for all', async () => {
    const one = await ok(['get', 'service', 'db', '-o', 'yaml']);
    const doc = parseYaml(one.join('\n')) as { kind: string; metadata: { version: number }; spec: { client: { listenPort: number } } };
    assert.equal(doc.kind, 'Service');
    assert.equal(doc.metadata.version, 1);
    assert.deepEqual(await ok(['apply', '-f', await file('db.yaml', `${one.join('\n')}\n`)]), ['service/db unchanged']);
    const all = await ok(['get', 'all', '-o', 'yaml']);
    const lines = await ok(['apply', '-f', await file('all.yaml', `${all.join('\n')}\n`)]);
    assert.equal(lines.length, 5);
    assert.ok(lines.every((l) => l.endsWith(' unchanged')), lines.join('\n'));
  });

  void test('get -o json applies back too, and reads from stdin with -f -', async () => {
    const list = await ok(['get', 'policies', '-o', 'json']);
    const docs = JSON.parse(list.join('\n')) as Array<{ metadata: { name: string } }>;
    assert.deepEqual(docs.map((d) => d.metadata.name), ['k8s-prod']);
    assert.deepEqual(await ok(['apply', '-f', await file('policies.json', list.join('\n'))]), ['policy/k8s-prod unchanged']);
    const single = await ok(['get', 'role', 'engineers', '-o', 'json']);
    assert.deepEqual(await ok(['apply', '-f', '-'], { stdin: single.join('\n') }), ['role/engineers unchanged']);
  });

  void test('get prints a table with kind-specific columns, and control characters from the data as escapes', async () => {
    const services = await ok(['get', 'service']);
    assert.match(services[0], /^NAME\s+VERSION\s+UPDATED\s+TYPE\s+DOMAIN\s+PORT\s+ACCESS-TIER\s+POLICY$/);
    assert.match(services[1], /^db\s+1\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z\s+tcp\s+db\.example\.com\s+5432\s+edge-1\s+k8s-prod \(permissive\)$/);
    const roles = await ok(['get', 'role']);
    assert.ok(roles[1].includes('eng,ops\\u001b[31m'), roles[1]);
    assert.ok(!roles.join('').includes('\u001b'));
    const unknown = await run(['get', 'gadget']);
    assert.equal(unknown.error?.code, 'UNKNOWN_KIND');
    const missing = await run(['get', 'service', 'nope']);
    assert.equal(missing.error?.code, 'NOT_FOUND');
  });

  void test('an invalid file prints every problem with file, document and path, and applies nothing', async () => {
    const bad = `apiVersion: causeway/v1
kind: Role
metadata: {name: ok-role}
spec: {}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: web, colour: blue}
spec: {type: tcp, cluster: global-edge, accessTier: edge-9, domain: web.example.com, port: 99999, backend: {target: "web:80"}}
---
apiVersion: causeway/v1
kind: Policy
metadata: {name: p2}
spec: {access: [{roles: [nobody], trustLevel: Extreme}]}
`;
    const path = await file('bad.yaml', bad);
    const result = await run(['apply', '-f', path]);
    assert.equal(result.error?.code, 'SPEC_INVALID');
    assert.match(result.error?.message ?? '', /nothing was applied/);
    const text = result.err.join('\n');
    for (const expected of ['document 2 (Service web): metadata.colour: unknown field', 'document 2 (Service web): spec.port:', 'document 3 (Policy p2): spec.access[0].trustLevel:']) {
      assert.ok(text.includes(`${path}: ${expected}`), `missing "${expected}" in\n${text}`);
    }
    assert.equal((await run(['get', 'role', 'ok-role'])).error?.code, 'NOT_FOUND');
  });

  void test('a file read before someone else changed the object is refused with what to do', async () => {
    const before = await ok(['get', 'policy', 'k8s-prod', '-o', 'yaml']);
    const edited = before.join('\n').replace('trustLevel: Medium', 'trustLevel: Low');
    const someoneElse = before.join('\n').replace('trustLevel: Medium', 'trustLevel: High').replace(/\n {2}version: \d+/, '');
    assert.deepEqual(await ok(['apply', '-f', await file('theirs.yaml', `${someoneElse}\n`)]), ['policy/k8s-prod changed']);
    const mine = await run(['apply', '-f', await file('mine.yaml', `${edited}\n`)]);
    assert.equal(mine.error?.code, 'VERSION_CONFLICT');
    assert.match(mine.error?.message ?? '', /get the object again/);
    const now = parseYaml((await ok(['get', 'policy', 'k8s-prod', '-o', 'yaml'])).join('\n')) as { spec: { access: Array<{ trustLevel: string }> } };
    assert.equal(now.spec.access[0].trustLevel, 'High');
  });

  void test('delete refuses an object still named by others, naming them, and deletes once free', async () => {
    const inUse = await run(['delete', 'policy', 'k8s-prod']);
    assert.equal(inUse.error?.code, 'OBJECT_IN_USE');
    assert.ok(inUse.err.some((l) => l.includes('service/db')));
    await ok(['apply', '-f', await file('extra.yaml', 'apiVersion: causeway/v1\nkind: Role\nmetadata: {name: temp}\nspec: {}\n')]);
    assert.deepEqual(await ok(['delete', 'roles', 'temp']), ['role/temp deleted']);
    assert.equal((await run(['delete', 'role', 'temp'])).error?.code, 'NOT_FOUND');
  });
});

void describe('causeway events, join-token, user, token', () => {
  void test('events: access events as a table and as JSON, filtered; --audit shows changes', async () => {
    const now = Date.now();
    await server.store.appendAccessEvents([
      { id: 'a1', time: new Date(now - 30 * 60_000).toISOString(), type: 'access', decision: 'allow', reasons: ['policy-allows'], accessTier: 'edge-1', service: 'db', user: 'alice', device: 'd1', target: 'db.example.com:5432', source: '203.0.113.1:1' },
      { id: 'a2', time: new Date(now - 3 * 3_600_000).toISOString(), type: 'access', decision: 'deny', reasons: ['device-untrusted'], accessTier: 'edge-1', service: 'db', user: 'bob', source: '203.0.113.2:1' },
      { id: 'a3', time: new Date(now - 10 * 60_000).toISOString(), type: 'access', decision: 'allow', reasons: [], accessTier: 'edge-1', service: 'web', user: 'alice', source: '203.0.113.3:1' },
    ]);
    const table = await ok(['events', '--service', 'db']);
    assert.match(table[0], /^TIME\s+DECISION\s+USER\s+DEVICE\s+SERVICE\s+TARGET\s+REASONS$/);
    assert.equal(table.length, 3);
    assert.match(table[1], /allow\s+alice\s+d1\s+db\s+db\.example\.com:5432\s+policy-allows/);
    const recent = JSON.parse((await ok(['events', '--service', 'db', '--since', '1h', '-o', 'json'])).join('\n')) as Array<{ id: string }>;
    assert.deepEqual(recent.map((e) => e.id), ['a1']);
    const byUser = JSON.parse((await ok(['events', '--user', 'alice', '-o', 'json'])).join('\n')) as Array<{ id: string }>;
    assert.deepEqual(byUser.map((e) => e.id), ['a3', 'a1']);
    assert.equal((JSON.parse((await ok(['events', '--limit', '1', '-o', 'json'])).join('\n')) as unknown[]).length, 1);
    const audit = await ok(['events', '--audit', '--kind', 'Service']);
    assert.match(audit[0], /^TIME\s+ACTOR\s+ACTION\s+KIND\s+NAME$/);
    assert.match(audit[1], /create\s+Service\s+db/);
    assert.equal((await run(['events', '--since', 'last tuesday'])).error?.code, 'BAD_ARGUMENT');
  });

  void test('events --kube: kube proxy requests and sessions with their command, filtered (issue 6)', async () => {
    const now = Date.now();
    const base = { clusterName: 'prod', kubeProxy: 'kp-prod', groups: ['eng', 'system:authenticated'], latencyMs: 3, source: '10.0.0.1:1' };
    await server.store.appendKubeEvents([
      { ...base, id: 'k1', time: new Date(now - 20 * 60_000).toISOString(), type: 'kube-request', user: 'alice@example.com', verb: 'list', resource: 'pods', namespace: 'prod', path: '/api/v1/namespaces/prod/pods', code: 200, decision: 'allow' },
      { ...base, id: 'k2', time: new Date(now - 10 * 60_000).toISOString(), type: 'kube-session', user: 'alice@example.com', device: 'd1', verb: 'create', resource: 'pods', subresource: 'exec', namespace: 'prod', name: 'web-0', path: '/api/v1/namespaces/prod/pods/web-0/exec', code: 101, decision: 'allow', command: ['sh', '-c', 'id'], interactive: true, transport: 'spdy', durationMs: 900 },
      { ...base, id: 'k3', time: new Date(now - 5 * 60_000).toISOString(), type: 'kube-request', user: 'bob@example.com', verb: 'create', resource: 'pods', subresource: 'exec', namespace: 'prod', name: 'web-0', path: '/api/v1/namespaces/prod/pods/web-0/exec', code: 403, decision: 'deny', reason: 'rule-deny' },
    ]);
    const all = await ok(['events', '--kube']);
    assert.match(all[0], /^TIME\s+DECISION\s+USER\s+DEVICE\s+CLUSTER\s+VERB\s+RESOURCE\s+NAMESPACE\s+NAME\s+CODE\s+COMMAND\/REASON$/);
    assert.equal(all.length, 4);
    assert.match(all[1], /deny\s+bob@example\.com\s+-\s+prod\s+create\s+pods\/exec\s+prod\s+web-0\s+403\s+rule-deny/);
    assert.match(all[2], /allow\s+alice@example\.com\s+d1\s+prod\s+create\s+pods\/exec\s+prod\s+web-0\s+101\s+sh -c id/);
    const sessions = JSON.parse((await ok(['events', '--kube', '--sessions', '-o', 'json'])).join('\n')) as Array<{ id: string; command: string[] }>;
    assert.deepEqual(sessions.map((e) => [e.id, e.command]), [['k2', ['sh', '-c', 'id']]]);
    const denied = JSON.parse((await ok(['events', '--kube', '--decision', 'deny', '--cluster', 'prod', '-o', 'json'])).join('\n')) as Array<{ id: string }>;
    assert.deepEqual(denied.map((e) => e.id), ['k3']);
    assert.equal((await run(['events', '--kube', '--audit'])).error?.code, 'BAD_ARGUMENT');
  });

  void test('join-token create prints a command that enrolls: its arguments get a connector certificate, once', async () => {
    const out = await ok(['join-token', 'create', 'connector', 'dc1', '--ttl', '15m']);
    assert.match(out[0], /^Join token for connector dc1: single use, valid until /);
    const command = out.find((l) => l.trim().startsWith('causeway '))?.trim() ?? '';
    const match = /^causeway connector --control-plane (\S+) --join-token (cwjt_\S+) --ca-pin (sha256:[0-9a-f]{64})$/.exec(command);
    assert.ok(match !== null, command);
    const [, controlPlaneUrl, joinToken, caPin] = match;
    assert.equal(controlPlaneUrl, env.CAUSEWAY_SERVER);
    const caPem = await readFile(join(dir, 'data', 'ca.crt'), 'utf8');
    assert.equal(caPin, `sha256:${createHash('sha256').update(new X509Certificate(caPem).raw).digest('hex')}`);
    // What `causeway connector` does with those arguments.
    const credentials = await enroll({ controlPlaneUrl, joinToken, caPin, kind: 'connector' });
    assert.equal(credentials.name, 'dc1');
    assert.equal(credentials.caPem, caPem);
    await assert.rejects(enroll({ controlPlaneUrl, joinToken, caPin, kind: 'connector' }), 'the token is single-use (DT-06)');
    const json = JSON.parse((await ok(['join-token', 'create', 'kube-proxy', 'kp1', '-o', 'json'])).join('\n')) as { command: string; token: string };
    assert.ok(json.command.startsWith('causeway kube-proxy --control-plane '));
    const list = await ok(['join-token', 'list']);
    assert.ok(!list.join('\n').includes(json.token));
    assert.equal((await run(['join-token', 'create', 'printer', 'x'])).error?.code, 'BAD_ARGUMENT');
  });

  void test('user add, disable, enable, list, delete', async () => {
    assert.deepEqual(await ok(['user', 'add', 'carol', '--groups', 'eng, ops', '--email', 'carol@example.com']), ['user/carol created']);
    assert.deepEqual(await ok(['user', 'disable', 'carol']), ['user/carol disabled']);
    const listed = await ok(['user', 'list']);
    assert.match(listed.find((l) => l.startsWith('carol')) ?? '', /carol\s+carol@example\.com\s+eng,ops\s+disabled/);
    assert.deepEqual(await ok(['user', 'enable', 'carol']), ['user/carol enabled']);
    assert.equal((await run(['user', 'add', 'carol'])).error?.code, 'ALREADY_EXISTS');
    assert.deepEqual(await ok(['user', 'delete', 'carol']), ['user/carol deleted']);
    assert.equal((await run(['user', 'disable', 'carol'])).error?.code, 'NOT_FOUND');
  });

  void test('token create prints the secret once; a viewer token reads but cannot write; revoked, it stops working', async () => {
    const out = await run(['token', 'create', 'ci', '--scope', 'viewer', '--ttl', '30d']);
    assert.equal(out.error, undefined);
    const secret = out.out[1];
    assert.match(secret, /^cwat_[0-9a-f]{16}_/);
    assert.match(out.err.join('\n'), /shown only now/);
    const viewerEnv = { ...env, CAUSEWAY_TOKEN: secret };
    await ok(['get', 'service'], { env: viewerEnv });
    const denied = await run(['apply', '-f', await file('specs-again.yaml', SPECS)], { env: viewerEnv });
    assert.equal(denied.error?.code, 'FORBIDDEN');
    assert.match(denied.error?.message ?? '', /admin scope/);
    const list = await ok(['token', 'list']);
    assert.ok(!list.join('\n').includes(secret));
    const id = /^cwat_([0-9a-f]{16})_/.exec(secret)?.[1] ?? '';
    assert.ok(list.some((l) => l.startsWith(id) && l.includes('viewer')));
    assert.deepEqual(await ok(['token', 'revoke', id]), [`token/${id} (ci) revoked`]);
    const revoked = await run(['get', 'service'], { env: viewerEnv });
    assert.equal(revoked.error?.code, 'UNAUTHENTICATED');
    assert.match(revoked.error?.message ?? '', /set CAUSEWAY_TOKEN to an API token \(the server wrote one to DATA\/admin-token on first start\)/i);
  });
});

void describe('reaching the server', () => {
  void test('--token-file, --server and --ca-file stand in for the environment', async () => {
    const tokenFile = await file('token', `${adminToken}\n`);
    const out = await ok(['get', 'accesstier', '--server', env.CAUSEWAY_SERVER ?? '', '--token-file', tokenFile, '--ca-file', env.CAUSEWAY_CA_FILE ?? ''], { env: {} });
    assert.match(out[1], /^edge-1\s/);
  });

  void test('each missing or wrong setting is an error that says what to do', async () => {
    const noToken = await run(['get', 'service'], { env: { ...env, CAUSEWAY_TOKEN: '' } });
    assert.equal(noToken.error?.code, 'NO_TOKEN');
    assert.match(noToken.error?.message ?? '', /CAUSEWAY_TOKEN.*admin-token/);
    const noServer = await run(['get', 'service'], { env: { ...env, CAUSEWAY_SERVER: undefined } });
    assert.equal(noServer.error?.code, 'NO_SERVER');
    const untrusted = await run(['get', 'service'], { env: { ...env, CAUSEWAY_CA_FILE: undefined } });
    assert.equal(untrusted.error?.code, 'SERVER_UNTRUSTED');
    assert.match(untrusted.error?.message ?? '', /--ca-file/);
    const down = await run(['get', 'service'], { env: { ...env, CAUSEWAY_SERVER: 'https://127.0.0.1:1' } });
    assert.equal(down.error?.code, 'SERVER_UNREACHABLE');
    const missingFile = await run(['apply', '-f', join(dir, 'no-such.yaml')]);
    assert.equal(missingFile.error?.code, 'FILE_UNREADABLE');
    const badOutput = await run(['get', 'service', '-o', 'xml']);
    assert.ok(badOutput.error !== undefined && errorCode(badOutput.error) === 'commander.invalidArgument');
  });

  void test('the admin commands import nothing from src/control-plane', async () => {
    const here = new URL('.', import.meta.url).pathname;
    for (const name of await readdir(here)) {
      if (!name.endsWith('.ts') || name.endsWith('.test.ts')) continue;
      const source = await readFile(join(here, name), 'utf8');
      assert.doesNotMatch(source, /from '\.\.\/control-plane/, name);
    }
  });
});
