import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorCode } from '../lib/errors.ts';
import { agentRequest, agentStatus, ensureAgent } from './agent-client.ts';
import { Command } from 'commander';
import { silentLogger } from '../lib/log.ts';
import { APP_OPEN_FILE, appRedirectHtml, formatStatus, launchdPlist, registerAgentCommands, selfCommand, systemdUnit, table, unitFor } from './agent-command.ts';
import { startAgent } from './agent.ts';
import { startAppPage } from './app-page.ts';
import { DeviceFiles } from './device-files.ts';

const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cw-ac-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

void describe('causeway agent install: the service units', () => {
  const input = { command: ['/opt/cause way/bin/causeway'], env: { CAUSEWAY_HOME: '/home/a/.config/causeway', PATH: '/usr/bin:/bin', KUBECONFIG: '/home/a/k "x"%h' }, logFile: '/home/a/.config/causeway/agent.log' };

  void test('the systemd user unit runs `… agent` with the environment, quoted for systemd (spaces, quotes, % specifiers)', () => {
    const unit = systemdUnit(input);
    assert.match(unit, /^ExecStart="\/opt\/cause way\/bin\/causeway" "agent"$/m);
    assert.match(unit, /^Environment="CAUSEWAY_HOME=\/home\/a\/\.config\/causeway"$/m);
    assert.match(unit, /^Environment="KUBECONFIG=\/home\/a\/k \\"x\\"%%h"$/m);
    assert.match(unit, /^Restart=on-failure$/m);
    assert.match(unit, /^WantedBy=default\.target$/m);
    assert.match(unit, /^\[Unit\]\n/);
  });

  void test('the launchd plist runs the same at load, keeps it alive after a failure, and escapes XML', () => {
    const plist = launchdPlist({ ...input, command: ['/Users/a/bin/causeway<&>'] });
    assert.match(plist, /<key>Label<\/key>\s*<string>dev\.causeway\.agent<\/string>/);
    assert.match(plist, /<key>ProgramArguments<\/key>\s*<array>\s*<string>\/Users\/a\/bin\/causeway&lt;&amp;&gt;<\/string>\s*<string>agent<\/string>\s*<\/array>/);
    assert.match(plist, /<key>KUBECONFIG<\/key>\s*<string>\/home\/a\/k &quot;x&quot;%h<\/string>/);
    assert.match(plist, /<key>RunAtLoad<\/key>\s*<true\/>/);
    assert.match(plist, /<key>StandardErrorPath<\/key>\s*<string>\/home\/a\/\.config\/causeway\/agent\.log<\/string>/);
  });

  void test('unitFor: Linux → ~/.config/systemd/user, macOS → ~/Library/LaunchAgents, with the command to enable it; the causeway on PATH by its absolute path, else node + script', () => {
    const self = { execPath: '/usr/local/bin/node', script: '/opt/causeway/src/main.ts', execArgv: [] };
    const onPath = (f: string): boolean => f === '/usr/local/bin/causeway';
    const linux = unitFor({ env: { PATH: '/usr/local/bin:/usr/bin', CAUSEWAY_HOME: 'rel/home' }, homedir: () => '/home/a', platform: 'linux', self }, onPath);
    assert.equal(linux.file, '/home/a/.config/systemd/user/causeway-agent.service');
    assert.match(linux.enable, /systemctl --user enable --now causeway-agent\.service/);
    assert.match(linux.text, /^ExecStart="\/usr\/local\/bin\/causeway" "agent"$/m);
    assert.match(linux.text, new RegExp(`^Environment="CAUSEWAY_HOME=${path.resolve('rel/home')}"$`, 'm'), 'a relative home is made absolute');
    const mac = unitFor({ env: { PATH: '/usr/bin' }, homedir: () => '/Users/a', platform: 'darwin', self }, () => false);
    assert.equal(mac.file, '/Users/a/Library/LaunchAgents/dev.causeway.agent.plist');
    assert.equal(mac.enable, 'launchctl load -w /Users/a/Library/LaunchAgents/dev.causeway.agent.plist');
    assert.match(mac.text, /<string>\/usr\/local\/bin\/node<\/string>\s*<string>\/opt\/causeway\/src\/main\.ts<\/string>\s*<string>agent<\/string>/);
    assert.throws(() => unitFor({ env: {}, homedir: () => 'C:\\', platform: 'win32', self }), (err: unknown) => errorCode(err) === 'UNSUPPORTED_PLATFORM');
  });

  void test('selfCommand prefers `causeway` on PATH, then an executable script, then node with the script', () => {
    const self = { execPath: '/n/node', script: '/x/bin/causeway.js', execArgv: [] };
    assert.deepEqual(selfCommand({ env: { PATH: '/a:/b' }, self }, (f) => f === '/b/causeway'), { command: 'causeway', args: [] });
    assert.deepEqual(selfCommand({ env: { PATH: '/a' }, self }, (f) => f === '/x/bin/causeway.js'), { command: '/x/bin/causeway.js', args: [] });
    assert.deepEqual(selfCommand({ env: { PATH: '/a' }, self }, () => false), { command: '/n/node', args: ['/x/bin/causeway.js'] });
  });
});

void describe('causeway status output', () => {
  void test('no agent: says nothing is connected and how to start it', () => {
    assert.match(formatStatus(null, Date.now()).join('\n'), /not running: nothing is connected\. `causeway connect SERVICE` starts it/);
  });

  void test('every connection with its port, age, bytes and open connections; the trust certificate expiry and the device trust level', () => {
    const now = Date.parse('2026-11-27T12:00:00Z');
    const lines = formatStatus(
      {
        pid: 42,
        startedAt: '2026-11-27T11:00:00.000Z',
        server: 'https://cp.example.com',
        user: { name: 'alice' },
        device: { id: 'dev-1', trustLevel: 'Low', explanation: 'firewall off' },
        trustCert: { notAfter: '2026-11-27T14:00:00.000Z' },
        connections: [{ service: 'prod-k8s', type: 'kubernetes', port: 8081, since: '2026-11-27T11:30:00.000Z', bytesUp: 2048, bytesDown: 3 * 1024 * 1024, openConnections: 2, totalConnections: 9, autorun: false, kubeContext: 'prod' }],
      },
      now,
    ).join('\n');
    assert.match(lines, /Logged in to https:\/\/cp\.example\.com as alice/);
    assert.match(lines, /Device: dev-1, trust level Low\n {2}firewall off/);
    assert.match(lines, /Trust certificate: valid until 2026-11-27T14:00:00\.000Z \(in 2h\)/);
    assert.match(lines, /SERVICE +TYPE +PORT +SINCE +UP +DOWN +OPEN +CONTEXT/);
    assert.match(lines, /prod-k8s +kubernetes +8081 +30m +2\.0 KiB +3\.0 MiB +2 +prod/);
  });

  void test('table pads every column but the last', () => {
    assert.deepEqual(table(['A', 'BB'], [['xxx', 'y']]), ['A    BB', 'xxx  y']);
  });
});

void describe('ensureAgent starts the real `causeway agent` detached', () => {
  void test('it starts once, answers, a second `causeway agent` on the same home leaves it alone, and shutdown removes its socket', async (t) => {
    const dir = await tempDir(t);
    const home = path.join(dir, 'home');
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: path.join(dir, 'none.yaml') };
    const command = { file: process.execPath, args: [MAIN, 'agent'] };
    t.after(async () => {
      await agentRequest(home, 'POST', '/v1/shutdown').catch(() => undefined);
    });
    const status = await ensureAgent({ home, command, env, timeoutMs: 60_000 });
    assert.notEqual(status.pid, process.pid);
    assert.equal(status.user, null, 'not logged in');
    assert.equal(typeof status.appPort, 'number');
    assert.equal((await stat(path.join(home, 'agent.sock'))).mode & 0o777, 0o600);
    assert.equal((await stat(path.join(home, 'agent.log'))).mode & 0o777, 0o600);
    const again = await ensureAgent({ home, command, env });
    assert.equal(again.pid, status.pid, 'the running agent is reused');
    // A second agent (two CLIs racing) sees the first and exits 0 without touching its socket.
    const { spawnSync } = await import('node:child_process');
    const second = spawnSync(process.execPath, [MAIN, 'agent'], { env, encoding: 'utf8', timeout: 60_000 });
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stderr, /already running .*pid \d+/);
    assert.equal((await agentStatus(home))?.pid, status.pid);
    const app = await agentRequest<{ url: string }>(home, 'GET', '/v1/app');
    assert.match(app.url, /^http:\/\/127\.0\.0\.1:\d+\/#[A-Za-z0-9_-]{43}$/);
    const log = await readFile(path.join(home, 'agent.log'), 'utf8');
    assert.ok(!log.includes(app.url.split('#')[1] ?? 'none'), 'the app secret is not in the log');
    await agentRequest(home, 'POST', '/v1/shutdown');
    let gone = false;
    for (let i = 0; i < 200 && !gone; i++) {
      await new Promise((r) => setTimeout(r, 50));
      gone = !existsSync(path.join(home, 'agent.sock'));
    }
    assert.equal(gone, true, 'the socket is removed on shutdown');
    assert.equal(await agentStatus(home), null);
  });

  void test('two CLIs starting the agent at once end up with one agent', async (t) => {
    const dir = await tempDir(t);
    const home = path.join(dir, 'home');
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: path.join(dir, 'none.yaml') };
    const command = { file: process.execPath, args: [MAIN, 'agent', '--no-app'] };
    t.after(async () => {
      await agentRequest(home, 'POST', '/v1/shutdown').catch(() => undefined);
    });
    const [a, b] = await Promise.all([ensureAgent({ home, command, env, timeoutMs: 60_000 }), ensureAgent({ home, command, env, timeoutMs: 60_000 })]);
    assert.equal(a.pid, b.pid);
    assert.equal((await readFile(path.join(home, 'agent.pid'), 'utf8')).split(' ')[0], String(a.pid));
  });

  void test('an agent that dies while starting is reported with the end of its log', async (t) => {
    const dir = await tempDir(t);
    const home = path.join(dir, 'home');
    const command = { file: process.execPath, args: ['-e', "console.error('boom: cannot start'); process.exit(3)"] };
    await assert.rejects(ensureAgent({ home, command, env: { PATH: process.env.PATH ?? '' }, timeoutMs: 30_000 }), (err: unknown) => {
      assert.equal(errorCode(err), 'AGENT_START_FAILED');
      assert.match((err as Error).message, /exit 3[\s\S]*boom: cannot start/);
      return true;
    });
  });
});

void describe('causeway app', () => {
  void test('LP-01 the browser is given a 0600 file that redirects, never the URL with the secret (command lines are public); --no-browser prints the URL', async (t) => {
    const dir = await tempDir(t);
    const home = path.join(dir, 'h');
    const clock = { now: () => Date.now() };
    const agent = await startAgent({
      home,
      logger: silentLogger(),
      clock,
      ctx: {
        files: new DeviceFiles({ home }),
        session: () => Promise.reject(new Error('offline')),
        fetchFor: () => () => Promise.reject(new Error('offline')),
        clock,
        facts: () => Promise.resolve({ platform: 'linux', osVersion: '1' }),
        collect: () => Promise.resolve({ factors: {}, problems: [] }),
      },
      readSession: () => Promise.resolve(undefined),
      trust: () => {
        throw new Error('none');
      },
      fetchCatalog: () => Promise.resolve([]),
      networkInterfaces: () => ({}),
      intervals: { setInterval: () => 0, clearInterval: () => undefined },
      startApp: (backend) => startAppPage({ backend, logger: silentLogger() }),
    });
    t.after(() => agent.close());
    const url = agent.appUrl() ?? '';
    const opened: string[] = [];
    const out: string[] = [];
    const run = async (args: string[]): Promise<void> => {
      const program = new Command('causeway').exitOverride();
      registerAgentCommands(program, { env: { CAUSEWAY_HOME: home, PATH: '/usr/bin' }, homedir: () => dir, out: (l) => out.push(l), err: () => undefined, openBrowser: (u) => Promise.resolve(void opened.push(u)) });
      await program.parseAsync(['node', 'causeway', ...args]);
    };
    await run(['app']);
    const file = path.join(home, APP_OPEN_FILE);
    assert.deepEqual(opened, [`file://${file}`]);
    assert.ok(!opened[0]?.includes(url.split('#')[1] ?? 'x'));
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.match(await readFile(file, 'utf8'), new RegExp(`content="0;url=${url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`));
    await run(['app', '--no-browser']);
    assert.deepEqual(out, [url]);
  });

  void test('the redirect page accepts only a loopback app URL (nothing to inject into the HTML)', () => {
    assert.throws(() => appRedirectHtml('http://127.0.0.1:1/#a"><script>x</script>'), (err: unknown) => errorCode(err) === 'APP_URL_INVALID');
    assert.throws(() => appRedirectHtml('https://evil.example/#abc'), (err: unknown) => errorCode(err) === 'APP_URL_INVALID');
    assert.match(appRedirectHtml('http://127.0.0.1:4242/#abc_-1'), /url=http:\/\/127\.0\.0\.1:4242\/#abc_-1"/);
  });
});
