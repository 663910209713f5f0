/**
 * The baselines are real programs from Debian's packages. The benchmark installs a missing one
 * itself (it runs as root on the project's machines); where it cannot, that baseline is skipped with
 * a reason and the run goes on.
 */
import { spawn, spawnSync } from 'node:child_process';

export type Availability = { available: true; path: string; version: string } | { available: false; reason: string };

export interface ProgramSpec {
  /** Command to look for on PATH, e.g. `stunnel`. */
  command: string;
  /** Debian package that provides it, e.g. `stunnel4`. */
  debianPackage: string;
  /** Arguments that make the program print its version (to stdout or stderr). */
  versionArgs: string[];
  /** Picks the version line out of that output. */
  versionPattern: RegExp;
}

export async function ensureProgram(spec: ProgramSpec, log: (line: string) => void): Promise<Availability> {
  let path = which(spec.command);
  if (path === undefined) {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      return { available: false, reason: `${spec.command} is not installed and the benchmark is not root (install the Debian package ${spec.debianPackage})` };
    }
    if (which('apt-get') === undefined) {
      return { available: false, reason: `${spec.command} is not installed and apt-get is not available to install ${spec.debianPackage}` };
    }
    log(`installing ${spec.debianPackage} from Debian's packages (${spec.command} is missing) …`);
    let result = await aptGet(['install', '-y', '-qq', '--no-install-recommends', spec.debianPackage]);
    if (!result.ok) {
      log(`apt-get install failed; refreshing the package lists and trying once more …`);
      await aptGet(['update', '-qq']);
      result = await aptGet(['install', '-y', '-qq', '--no-install-recommends', spec.debianPackage]);
    }
    path = which(spec.command);
    if (path === undefined) {
      return { available: false, reason: `could not install ${spec.debianPackage}: ${result.output.trim().split('\n').slice(-3).join(' | ')}` };
    }
  }
  const version = spawnSync(path, spec.versionArgs, { encoding: 'utf8', timeout: 10_000 });
  const text = `${version.stdout ?? ''}\n${version.stderr ?? ''}`;
  const match = spec.versionPattern.exec(text);
  return { available: true, path, version: match?.[0]?.trim() ?? 'unknown version' };
}

export function which(command: string): string | undefined {
  const result = spawnSync('sh', ['-c', `command -v "$1"`, 'sh', command], { encoding: 'utf8' });
  const path = result.stdout.trim();
  return result.status === 0 && path !== '' ? path : undefined;
}

async function aptGet(args: string[]): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve) => {
    // RUNLEVEL=1 keeps invoke-rc.d from starting the package's system service (nginx on port 80).
    const child = spawn('apt-get', args, {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', RUNLEVEL: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), 300_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, output: err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0, output });
    });
  });
}
