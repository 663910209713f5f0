import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Command, CommanderError } from 'commander';
import type { AccessEvent } from '../lib/audit/index.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { stringifySpecs } from '../lib/spec/index.ts';
import { chainConnect, eventually, makeTestPki, roundTrip, specs, startEchoServer } from '../lib/tunnel/harness.testing.ts';
import type { KeyAndCert, TestPki, TestServer } from '../lib/tunnel/harness.testing.ts';
import { eventsPathFor, parseListen, registerAccessTierCommand } from './command.ts';
import type { AccessTier } from './index.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-access-tier-cmd-'));
after(() => rm(dir, { recursive: true, force: true }));

let pki: TestPki;
let trust: KeyAndCert;
let echo: TestServer;
before(async () => {
  pki = await makeTestPki();
  trust = await pki.issue('trust', { user: 'alice', device: 'laptop-1' });
  echo = await startEchoServer();
  const edge = await pki.issue('access-tier', { name: 'edge-1' });
  await writeFile(path.join(dir, 'edge.crt'), edge.certPem);
  await writeFile(path.join(dir, 'edge.key'), edge.keyPem, { mode: 0o600 });
  await writeFile(path.join(dir, 'ca.crt'), pki.caPem);
});
after(() => echo.close());

function specFile(services: string[]): string {
  return stringifySpecs([
    specs.accessTier('edge-1', 'c1', '127.0.0.1:8443'),
    ...services.map((name) => specs.service(name, 'c1', { type: 'tcp', domain: `${name}.example.com`, port: 5432, backend: { target: echo.address } })),
  ]);
}

interface Run {
  parts: Closable[];
  accessTier: AccessTier;
  logs: string[];
}

async function run(args: string[]): Promise<Run> {
  const logs: string[] = [];
  let started: Run | undefined;
  const program = new Command('causeway').exitOverride();
  registerAccessTierCommand(program, {
    cwd: () => dir,
    logDestination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString());
        cb();
      },
    }),
    onStarted: (parts, accessTier) => {
      started = { parts, accessTier, logs };
    },
  });
  await program.parseAsync(['node', 'causeway', 'access-tier', ...args]);
  assert.ok(started !== undefined);
  return started;
}

async function stop(r: Run): Promise<void> {
  for (const part of [...r.parts].reverse()) await part.close();
}

void describe('causeway access-tier', { timeout: 30_000 }, () => {
  void test('starts from its files, serves the spec file\'s services, follows edits to it, and writes access events as JSON lines', async () => {
    const config = path.join(dir, 'specs.yaml');
    await writeFile(config, specFile(['db']));
    const r = await run(['--name', 'edge-1', '--config', config, '--listen', '127.0.0.1:0', '--cert', path.join(dir, 'edge.crt'), '--key', path.join(dir, 'edge.key'), '--ca', path.join(dir, 'ca.crt'), '--events', 'events.jsonl']);
    try {
      const port = r.accessTier.port();
      const first = await chainConnect({ port, caPem: pki.caPem, servername: 'db.example.com', cert: trust });
      assert.equal(first.kind, 'established');
      if (first.kind === 'established') {
        assert.equal((await roundTrip(first.socket, 'hello')).toString(), 'hello');
        first.socket.destroy();
      }
      await writeFile(config, specFile(['db', 'cache']));
      const second = await eventually(async () => {
        const attempt = await chainConnect({ port, caPem: pki.caPem, servername: 'cache.example.com', cert: trust });
        if (attempt.kind !== 'failed') attempt.socket.destroy();
        return attempt.kind === 'established' ? attempt : undefined;
      }, 10_000, 'the new service served');
      assert.equal(second.kind, 'established');
      assert.ok(r.logs.some((l) => (JSON.parse(l) as { msg?: string }).msg === 'access tier started'));
    } finally {
      await stop(r);
    }
    const lines = (await readFile(path.join(dir, 'events.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as AccessEvent);
    assert.ok(lines.some((e) => e.service === 'db' && e.decision === 'allow' && e.bytesUp === 5));
  });

  void test('an unreadable certificate file is a UserError that names the flag and the file', async () => {
    await writeFile(path.join(dir, 'ok.yaml'), specFile([]));
    await assert.rejects(
      run(['--name', 'edge-1', '--config', path.join(dir, 'ok.yaml'), '--cert', path.join(dir, 'missing.crt'), '--key', path.join(dir, 'edge.key'), '--ca', path.join(dir, 'ca.crt')]),
      (err: Error & { code?: string }) => err.code === 'access-tier-file-unreadable' && err.message.includes('--cert') && err.message.includes('missing.crt'),
    );
  });

  void test('a spec file with problems stops the start with every problem listed', async () => {
    await writeFile(path.join(dir, 'bad.yaml'), 'apiVersion: causeway/v1\nkind: Service\nmetadata: {name: x}\nspec: {type: tcp}\n');
    await assert.rejects(run(['--name', 'edge-1', '--config', path.join(dir, 'bad.yaml'), '--listen', '127.0.0.1:0', '--cert', path.join(dir, 'edge.crt'), '--key', path.join(dir, 'edge.key'), '--ca', path.join(dir, 'ca.crt')]), (err: Error & { code?: string }) => err.code === 'config-invalid');
  });

  void test('--listen takes host:port, [v6]:port and :port, and refuses anything else', () => {
    assert.deepEqual(parseListen('0.0.0.0:8443'), { host: '0.0.0.0', port: 8443 });
    assert.deepEqual(parseListen('[::]:8443'), { host: '::', port: 8443 });
    assert.deepEqual(parseListen(':9443'), { host: '0.0.0.0', port: 9443 });
    assert.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.throws(() => parseListen('8443'), CommanderError);
    assert.throws(() => parseListen('127.1:8443'), CommanderError);
  });

  void test('without --control-plane the file flags are needed, and the error names the missing ones and the other way', async () => {
    await assert.rejects(run(['--name', 'edge-1', '--cert', path.join(dir, 'edge.crt')]), (err: Error & { code?: string }) => err.code === 'access-tier-flags-missing' && /--config, --key, --ca/.test(err.message) && err.message.includes('--control-plane'));
  });

  void test('with --control-plane, --data-dir is needed and the file flags are refused before anything is contacted', async () => {
    await assert.rejects(run(['--control-plane', 'https://127.0.0.1:1', '--join-token', 't', '--ca-pin', 'sha256:00']), (err: Error & { code?: string }) => err.code === 'access-tier-data-dir-missing');
    await assert.rejects(run(['--control-plane', 'https://127.0.0.1:1', '--data-dir', 'cp', '--config', 'specs.yaml', '--cert', 'x.crt']), (err: Error & { code?: string }) => err.code === 'access-tier-flags-conflict' && err.message.includes('--config, --cert'));
    await assert.rejects(run(['--control-plane', 'https://127.0.0.1:1', '--data-dir', 'never-joined']), (err: Error & { code?: string }) => err.code === 'NOT_ENROLLED' && err.message.includes('--join-token'));
  });

  void test('events go to --events, else under --data-dir, else ./access-events.jsonl', () => {
    assert.equal(eventsPathFor({ events: 'e.jsonl' }, '/srv'), '/srv/e.jsonl');
    assert.equal(eventsPathFor({ dataDir: '/var/lib/causeway' }, '/srv'), '/var/lib/causeway/access-events.jsonl');
    assert.equal(eventsPathFor({}, '/srv'), '/srv/access-events.jsonl');
  });
});
