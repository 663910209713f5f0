import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import type { Closable } from '../lib/lifecycle.ts';
import { stringifySpecs } from '../lib/spec/index.ts';
import { eventually, makeTestPki, specs } from '../lib/tunnel/harness.testing.ts';
import { registerConnectorCommand } from './command.ts';
import type { Connector } from './index.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-connector-cmd-'));
after(() => rm(dir, { recursive: true, force: true }));

before(async () => {
  const pki = await makeTestPki();
  const cert = await pki.issue('connector', { name: 'dc1' });
  await writeFile(path.join(dir, 'dc1.crt'), cert.certPem);
  await writeFile(path.join(dir, 'dc1.key'), cert.keyPem, { mode: 0o600 });
  await writeFile(path.join(dir, 'ca.crt'), pki.caPem);
});

async function run(args: string[]): Promise<{ parts: Closable[]; connector: Connector }> {
  let started: { parts: Closable[]; connector: Connector } | undefined;
  const program = new Command('causeway').exitOverride();
  registerConnectorCommand(program, {
    logDestination: new Writable({ write: (_c: Buffer, _e, cb) => cb() }),
    onStarted: (parts, connector) => {
      started = { parts, connector };
    },
  });
  await program.parseAsync(['node', 'causeway', 'connector', ...args]);
  assert.ok(started !== undefined);
  return started;
}

void describe('causeway connector', { timeout: 30_000 }, () => {
  void test('starts from its files and follows the spec file: access tiers of its cluster appear as tunnels', async () => {
    const config = path.join(dir, 'specs.yaml');
    await writeFile(config, stringifySpecs([specs.connector('dc1', 'c1', { cidrs: ['10.0.0.0/8'] })]));
    const r = await run(['--name', 'dc1', '--config', config, '--cert', path.join(dir, 'dc1.crt'), '--key', path.join(dir, 'dc1.key'), '--ca', path.join(dir, 'ca.crt')]);
    try {
      assert.equal(r.connector.status().state, 'unconfigured');
      await writeFile(config, stringifySpecs([specs.connector('dc1', 'c1', { cidrs: ['10.0.0.0/8'] }), specs.accessTier('edge-1', 'c1', '127.0.0.1:1'), specs.accessTier('edge-9', 'c9', '127.0.0.1:2')]));
      await eventually(() => (r.connector.status().tunnels.length === 1 ? true : undefined), 10_000, 'one tunnel configured');
      assert.equal(r.connector.status().tunnels[0]?.accessTier, 'edge-1');
    } finally {
      for (const part of [...r.parts].reverse()) await part.close();
    }
  });

  void test('without --control-plane the file flags are needed; with it, --data-dir is, and the file flags are refused', async () => {
    await assert.rejects(run(['--name', 'dc1']), (err: Error & { code?: string }) => err.code === 'connector-flags-missing' && /--config, --cert, --key, --ca/.test(err.message));
    await assert.rejects(run(['--control-plane', 'https://127.0.0.1:1', '--join-token', 't']), (err: Error & { code?: string }) => err.code === 'connector-data-dir-missing');
    await assert.rejects(run(['--control-plane', 'https://127.0.0.1:1', '--data-dir', path.join(dir, 'cp'), '--key', 'k']), (err: Error & { code?: string }) => err.code === 'connector-flags-conflict');
  });

  void test('an unreadable key file is a UserError that names the flag and the file', async () => {
    await assert.rejects(
      run(['--name', 'dc1', '--config', path.join(dir, 'specs.yaml'), '--cert', path.join(dir, 'dc1.crt'), '--key', path.join(dir, 'nope.key'), '--ca', path.join(dir, 'ca.crt')]),
      (err: Error & { code?: string }) => err.code === 'connector-file-unreadable' && err.message.includes('--key'),
    );
  });
});
