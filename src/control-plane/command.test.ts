/**
 * `causeway server` as its command runs it (startServer): the data directory on first and later
 * starts, replicas sharing one database, and the listeners it opens. Ports are 0 and data
 * directories temporary.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { errorCode } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { parseHostPort, startServer } from './command.ts';
import type { RunningServer, ServerFlags } from './command.ts';

const logLines: string[] = [];
const logger = createLogger({ name: 'command-test', level: 'info', destination: { write: (line: string) => void logLines.push(line) } });

function flags(dataDir: string, extra: Partial<ServerFlags> = {}): ServerFlags {
  return { dataDir, listen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', publicUrl: 'https://localhost:8440', logLevel: 'info', ...extra };
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'causeway-server-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function start(t: { after: (fn: () => Promise<void>) => void }, f: ServerFlags, env: NodeJS.ProcessEnv = {}): Promise<{ server: RunningServer; printed: string[] }> {
  const printed: string[] = [];
  const server = await startServer(f, { env, print: (line) => printed.push(line) }, logger);
  t.after(() => server.close());
  return { server, printed };
}

function whoami(server: RunningServer, caPem: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`https://localhost:${server.listener.port}/api/v1/whoami`, { ca: caPem, headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

void describe('causeway server', () => {
  void test('first start: creates the CA, a passphrase and the first admin token (0600), writes ca.crt, and says where, never what', async (t) => {
    const dir = join(await tempDir(t), 'data');
    const { server, printed } = await start(t, flags(dir));
    assert.equal(server.created, true);
    assert.equal(await mode(dir), 0o700);
    assert.equal(await mode(join(dir, 'admin-token')), 0o600);
    assert.equal(await mode(join(dir, 'ca-passphrase')), 0o600);
    assert.equal(await mode(join(dir, 'ca.crt')), 0o644);
    assert.equal(await mode(join(dir, 'causeway.db')), 0o600);
    const token = (await readFile(join(dir, 'admin-token'), 'utf8')).trim();
    assert.match(token, /^cwat_/);
    const caPem = await readFile(join(dir, 'ca.crt'), 'utf8');
    const answer = await whoami(server, caPem, token);
    assert.equal(answer.status, 200, answer.body);
    assert.equal((JSON.parse(answer.body) as { scope: string }).scope, 'admin');
    const all = [...printed, ...logLines].join('\n');
    assert.ok(!all.includes(token), 'the token itself is never printed or logged');
    assert.ok(!all.includes((await readFile(join(dir, 'ca-passphrase'), 'utf8')).trim()), 'nor the passphrase');
    assert.ok(printed.some((l) => l.includes(join(dir, 'admin-token'))));
    assert.ok(printed.some((l) => l.startsWith('Metrics and health: http://127.0.0.1:')));
    assert.ok(printed.some((l) => /pin sha256:[0-9a-f]{64}/.test(l)));
    assert.doesNotMatch(await readFile(join(dir, 'causeway.db'), 'latin1'), /PRIVATE KEY/, 'CP-16: the database holds no plaintext key');
  });

  void test('a later start reuses the CA and the database, and makes no new token', async (t) => {
    const dir = await tempDir(t);
    const first = await start(t, flags(dir));
    const caPem = await readFile(join(dir, 'ca.crt'), 'utf8');
    const token = await readFile(join(dir, 'admin-token'), 'utf8');
    await first.server.close();
    const second = await start(t, flags(dir));
    assert.equal(second.server.created, false);
    assert.equal(await readFile(join(dir, 'ca.crt'), 'utf8'), caPem);
    assert.equal(await readFile(join(dir, 'admin-token'), 'utf8'), token);
    assert.equal((await second.server.store.listApiTokens()).length, 1);
    assert.equal((await whoami(second.server, caPem, token.trim())).status, 200);
  });

  void test('a second replica on the same database needs the same passphrase, and then shares the CA', async (t) => {
    const root = await tempDir(t);
    const database = `sqlite:${join(root, 'shared.db')}`;
    const passphraseFile = join(root, 'passphrase');
    await writeFile(passphraseFile, 'shared secret\n', { mode: 0o600 });
    const one = await start(t, flags(join(root, 'one'), { database, caPassphraseFile: passphraseFile }));
    assert.equal(one.server.created, true);
    await assert.rejects(startServer(flags(join(root, 'two'), { database }), { env: {}, print: () => undefined }, logger), (err: Error) => errorCode(err) === 'CA_PASSPHRASE_MISSING');
    await assert.rejects(startServer(flags(join(root, 'three'), { database }), { env: { CAUSEWAY_CA_PASSPHRASE: 'wrong' }, print: () => undefined }, logger), (err: Error) => errorCode(err) === 'CA_KEY_DECRYPT_FAILED');
    const two = await start(t, flags(join(root, 'four'), { database }), { CAUSEWAY_CA_PASSPHRASE: 'shared secret' });
    assert.equal(two.server.created, false);
    assert.equal(await readFile(join(root, 'four', 'ca.crt'), 'utf8'), await readFile(join(root, 'one', 'ca.crt'), 'utf8'));
    await assert.rejects(stat(join(root, 'four', 'admin-token')), 'only the replica that created the installation writes a token');
  });

  void test('--insecure-http serves plain HTTP; --metrics-listen off opens no metrics listener', async (t) => {
    const dir = await tempDir(t);
    const { server } = await start(t, flags(dir, { insecureHttp: true, publicUrl: 'http://localhost:8440', metricsListen: 'off' }));
    assert.match(server.listener.url, /^http:\/\//);
    assert.equal(server.metricsListener, undefined);
  });

  void test('an http public URL without --insecure-http is refused before anything starts', async (t) => {
    const dir = await tempDir(t);
    await assert.rejects(startServer(flags(dir, { publicUrl: 'http://cp.example.com' }), { env: {}, print: () => undefined }, logger), (err: Error) => errorCode(err) === 'PUBLIC_URL_INVALID');
  });

  void test('the executable runs the server, answers on the port it prints, and exits 0 on SIGTERM', async (t) => {
    const dir = await tempDir(t);
    const main = fileURLToPath(new URL('../main.ts', import.meta.url));
    const child = spawn(process.execPath, [main, 'server', '--data-dir', dir, '--listen', '127.0.0.1:0', '--metrics-listen', 'off', '--public-url', 'https://localhost:8440', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start line in 30 s; stderr: ${stderr}`)), 30_000);
      child.stdout.on('data', (c: Buffer) => {
        stdout += c.toString();
        const match = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(stdout);
        if (match !== null) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    const caPem = await readFile(join(dir, 'ca.crt'), 'utf8');
    const token = (await readFile(join(dir, 'admin-token'), 'utf8')).trim();
    const answer = await whoami({ listener: { port } } as RunningServer, caPem, token);
    assert.equal(answer.status, 200);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
  });

  void test('listen addresses: HOST:PORT, [IPv6]:PORT and :PORT', () => {
    assert.deepEqual(parseHostPort('0.0.0.0:8440', '--listen'), { host: '0.0.0.0', port: 8440 });
    assert.deepEqual(parseHostPort('[::1]:9090', '--listen'), { host: '::1', port: 9090 });
    assert.deepEqual(parseHostPort(':8440', '--listen'), { host: '0.0.0.0', port: 8440 });
    for (const bad of ['8440', 'host:99999', 'a:b', '[::1]']) assert.throws(() => parseHostPort(bad, '--listen'), /HOST:PORT/);
  });
});
