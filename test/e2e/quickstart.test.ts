/**
 * `causeway quickstart` as `npm start` runs it (node src/main.ts quickstart), in a child process, on
 * free ports, in a temp data directory. The kubectl commands it prints are run as printed (their
 * environment included) with every kubectl binary, and a second start reuses the first one's CA.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { kubectlBinaries, repoRoot, runKubectl } from '../kit/kubectl.ts';
import type { KubectlBinary } from '../kit/kubectl.ts';

const binaries = await kubectlBinaries();
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_MS; resolves with how it ended. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }>;
}

/** Starts `causeway quickstart` and resolves once it printed "Press Ctrl-C to stop." */
async function startCli(dataDir: string, kubePort = 0): Promise<Running> {
  const child = spawn(process.execPath, [join(repoRoot, 'src', 'main.ts'), 'quickstart', '--data-dir', dataDir, '--port', '0', '--access-tier-port', '0', '--kube-port', String(kubePort), '--log-level', 'warn'], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> | undefined;
  const running: Running = {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return { ...(await exited), killed: false };
        child.kill('SIGTERM');
        let killed = false;
        const timer = setTimeout(() => {
          killed = true;
          child.kill('SIGKILL');
        }, STOP_TIMEOUT_MS);
        const how = await exited;
        clearTimeout(timer);
        return { ...how, killed };
      })()),
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the quickstart did not get ready within ${START_TIMEOUT_MS} ms\nstdout:\n${out}\nstderr:\n${err}`)), START_TIMEOUT_MS);
    const check = (): void => {
      if (out.includes('Press Ctrl-C to stop.')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the quickstart exited (${String(code ?? signal)}) before it was ready\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
  return running;
}

/** Splits a printed command line (words quoted the way shellQuote quotes them) into env and argv. */
function parsePrinted(line: string): { env: Record<string, string>; argv: string[] } {
  const words: string[] = [];
  const re = /'((?:[^']|'\\'')*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line.trim())) !== null) words.push(m[1] !== undefined ? m[1].replace(/'\\''/g, "'") : m[2]);
  const env: Record<string, string> = {};
  while (words.length > 0 && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0])) {
    const word = words.shift()!;
    const eq = word.indexOf('=');
    env[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return { env, argv: words };
}

/** The two kubectl lines the quickstart printed. */
function printedCommands(stdout: string): Array<{ env: Record<string, string>; argv: string[] }> {
  const lines = stdout.split('\n').filter((l) => /^\s+(\S+=\S+\s+)*kubectl\s/.test(l));
  return lines.map(parsePrinted);
}

async function runPrinted(bin: KubectlBinary, command: { env: Record<string, string>; argv: string[] }): Promise<string> {
  assert.equal(command.argv[0], 'kubectl');
  const r = await runKubectl(bin.path, command.argv.slice(1), { env: command.env, timeoutMs: 60_000 });
  assert.equal(r.code, 0, `kubectl ${bin.version} ${command.argv.slice(1).join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

void describe('causeway quickstart', () => {
  let dataDir: string;
  const processes: Running[] = [];

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'causeway-quickstart-e2e-'));
  });
  after(async () => {
    for (const p of processes) await p.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  void test('at least one kubectl binary is available to test with', () => {
    assert.ok(binaries.length > 0);
  });

  void test('prints kubectl commands that list the demo pods through the chain with every kubectl, and stops cleanly on SIGTERM', async () => {
    const qs = await startCli(dataDir);
    processes.push(qs);
    const stdout = qs.stdout();
    assert.match(stdout, /new CA created/);
    assert.match(stdout, /DEMO Kubernetes API .*NOT a real cluster/);
    const commands = printedCommands(stdout);
    assert.equal(commands.length, 2, stdout);
    assert.match(commands[0].env.https_proxy ?? '', /^http:\/\/127\.0\.0\.1:\d+$/, 'the first command sets https_proxy');
    assert.deepEqual(commands[1].env, {}, 'the second command relies on proxy-url');

    for (const bin of binaries) {
      for (const command of commands) {
        const out = await runPrinted(bin, command);
        const names = out.trim().split('\n').slice(1).map((l) => l.split(/\s+/)[0]);
        assert.deepEqual(names, ['web-0', 'web-1', 'web-2'], `kubectl ${bin.version}: ${out}`);
      }
    }

    // Access events are written in batches; stopping flushes the rest.
    const stopped = await qs.stop();
    assert.equal(stopped.killed, false, `the quickstart did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\nstderr:\n${qs.stderr()}`);
    assert.equal(stopped.code, 0, qs.stderr());
    const all = (await readFile(join(dataDir, 'access-events.jsonl'), 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { decision: string; user?: string; device?: string; service?: string });
    const allowed = all.filter((e) => e.decision === 'allow' && e.service === 'demo-k8s');
    assert.ok(allowed.length >= binaries.length * 2, `one allowed connection per kubectl run at least; got ${allowed.length}`);
    assert.ok(allowed.every((e) => e.user === 'demo' && e.device === 'quickstart'));
  });

  void test('a second start reuses the CA, the token and the kubeconfig, moves the demo API off a taken port, and its printed commands work', async (t) => {
    const caBefore = await readFile(join(dataDir, 'ca', 'ca.crt'), 'utf8');
    const kubeconfigBefore = await readFile(join(dataDir, 'kubeconfig'), 'utf8');
    // Something else holds the port asked for the demo API: the quickstart takes a free one instead.
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const taken = (squatter.address() as AddressInfo).port;

    const qs = await startCli(dataDir, taken);
    processes.push(qs);
    assert.match(qs.stdout(), /existing CA reused/);
    assert.equal(await readFile(join(dataDir, 'ca', 'ca.crt'), 'utf8'), caBefore);
    assert.equal(await readFile(join(dataDir, 'kubeconfig'), 'utf8'), kubeconfigBefore);
    const demoPort = Number(/DEMO Kubernetes API\s+https:\/\/127\.0\.0\.1:(\d+)/.exec(qs.stdout())?.[1]);
    assert.ok(demoPort > 0 && demoPort !== taken, qs.stdout());
    assert.match(await readFile(join(dataDir, 'specs.yaml'), 'utf8'), new RegExp(`dnsOverride: 127\\.0\\.0\\.1:${demoPort}\\b`));
    const commands = printedCommands(qs.stdout());
    assert.equal(commands.length, 2);
    for (const command of commands) assert.match(await runPrinted(binaries[0], command), /^web-0\s+1\/1\s+Running/m);
    const stopped = await qs.stop();
    assert.equal(stopped.code, 0, qs.stderr());
  });
});
