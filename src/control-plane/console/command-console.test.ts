/**
 * `causeway server` and the console: served from <package root>/dist/web (or --console-dir) by
 * default, absent with --no-console (commander's negated flag sets `console: false`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { silentLogger } from '../../lib/log.ts';
import { freePort } from '../../lib/tunnel/harness.testing.ts';
import { caFetch } from '../identity/identity.testing.ts';
import { registerServerCommand, startServer } from '../command.ts';
import type { ServerFlags } from '../command.ts';

async function serve(t: { after: (fn: () => Promise<unknown>) => void }, extra: Partial<ServerFlags>): Promise<{ get: (path: string) => Promise<{ status: number; body: string }>; printed: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'causeway-console-cmd-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const printed: string[] = [];
  const server = await startServer({ dataDir: join(dir, 'data'), listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl: `https://127.0.0.1:${port}`, logLevel: 'silent', ...extra }, { env: {}, print: (line) => printed.push(line) }, silentLogger());
  t.after(() => server.close());
  const fetch = caFetch(await readFile(join(dir, 'data', 'ca.crt'), 'utf8'));
  return {
    printed,
    async get(path) {
      const response = await fetch(`https://127.0.0.1:${port}${path}`, { headers: { accept: 'text/html' } });
      return { status: response.status, body: await response.text() };
    },
  };
}

void test('causeway server serves the console from --console-dir, and not at all with --no-console', async (t) => {
  const build = await mkdtemp(join(tmpdir(), 'causeway-console-build-'));
  t.after(() => rm(build, { recursive: true, force: true }));
  await mkdir(join(build, 'assets'));
  await writeFile(join(build, 'index.html'), '<!DOCTYPE html><title>console</title>');

  const on = await serve(t, { consoleDir: build });
  assert.deepEqual(await on.get('/'), { status: 200, body: '<!DOCTYPE html><title>console</title>' });
  assert.equal((await on.get('/console/login')).status, 302);
  assert.ok(on.printed.some((line) => /^Web console: https:\/\/127\.0\.0\.1:\d+\/$/.test(line)), on.printed.join('\n'));

  const missing = await serve(t, { consoleDir: join(build, 'nothing-here') });
  assert.equal((await missing.get('/')).status, 503);
  assert.ok(missing.printed.some((line) => line.includes('not built: run npm run build:web')));

  const off = await serve(t, { console: false });
  assert.equal((await off.get('/')).status, 404);
  assert.equal((await off.get('/console/login')).status, 404);
  assert.equal((await off.get('/console/session')).status, 404);
  assert.ok(!off.printed.some((line) => line.startsWith('Web console')));
});

void test('--no-console and --console-dir reach the server flags', async () => {
  const seen: ServerFlags[] = [];
  const parse = async (args: string[]): Promise<ServerFlags> => {
    const program = new Command('causeway').exitOverride();
    const command = registerServerCommand(program);
    command.action((flags: ServerFlags) => {
      seen.push(flags);
    });
    await program.parseAsync(['node', 'causeway', 'server', ...args]);
    const flags = seen.pop();
    assert.ok(flags !== undefined);
    return flags;
  };
  assert.equal((await parse([])).console, true);
  assert.equal((await parse(['--no-console'])).console, false);
  assert.equal((await parse(['--console-dir', '/srv/web'])).consoleDir, '/srv/web');
});
