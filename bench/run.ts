/**
 * `npm run bench`: Causeway's numbers from DESIGN.md §7, each measured in the same run as its
 * baseline (a direct connection, a stunnel mTLS pair, nginx) so the ratios hold on a noisy shared
 * machine. Starts the backend, the baselines and the Causeway chain as child processes, runs the
 * selected suites, writes bench/results/<timestamp>.json and bench/results/latest.md and prints the
 * table. Exits 0 when everything was measured (goals met or not), 1 when a measurement failed,
 * 2 on bad arguments. See bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBaselinePki } from './certs.ts';
import type { BaselinePki } from './certs.ts';
import { USAGE, UsageError, parseOptions, sizesFor } from './options.ts';
import { ProcessGroup } from './processes.ts';
import { evaluate, json, markdown } from './report.ts';
import type { RunInfo } from './report.ts';
import { SUITES } from './suites/index.ts';
import { SuiteSkipped } from './suites/suite.ts';
import type { Column, Metric, Need, Suite, SuiteContext } from './suites/suite.ts';
import { ensureProgram } from './system-packages.ts';
import { TargetUnavailable, startCausewayTarget } from './targets/causeway.ts';
import { directTarget } from './targets/direct.ts';
import type { HandshakeServer } from './targets/handshake-server.ts';
import { startNginxHandshakeServer } from './targets/nginx.ts';
import { startStunnelTarget } from './targets/stunnel.ts';
import type { Backend, Target } from './targets/target.ts';

const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
const RESULTS_DIR = join(BENCH_DIR, 'results');
const BACKEND_SCRIPT = join(BENCH_DIR, 'children', 'backend.ts');
/** Idle streams need about two descriptors per stream in the client proxy; the default soft limit is often 1024. */
const WANTED_FD_LIMIT = 65_536;
const FD_ENV = 'CAUSEWAY_BENCH_FD_LIMIT_RAISED';

let options;
try {
  options = parseOptions(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  console.error(`bench: ${err.message}\n${USAGE}`);
  process.exit(2);
}
if (options.help) {
  console.log(USAGE);
  process.exit(0);
}

const suites = selectSuites(options.only);
if (suites === undefined) {
  console.error(`bench: no suite matches ${options.only.join(', ')}\n${USAGE}`);
  process.exit(2);
}

raiseFdLimit(suites);

const log = (line: string): void => console.log(line);
const startedAt = new Date();
const dir = mkdtempSync(join(tmpdir(), 'causeway-bench-'));
const group = new ProcessGroup();
const sizes = sizesFor(options.quick);
const unavailable = new Map<Column, string>();
const failures: string[] = [];
const skippedSuites = new Map<string, string>();
let interrupted = false;

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    console.error(`\nbench: ${signal}, stopping the child processes …`);
    void group.stopAll().finally(() => process.exit(130));
  });
}

const needs = new Set<Need>(suites.flatMap((s) => s.needs));
log(`Causeway benchmark (${options.quick ? 'quick' : 'full'}): ${suites.map((s) => s.name).join(', ')}`);
log(`  Node ${process.version}, ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}, open-file limit ${openFileLimit()}`);
log(`  work directory ${dir}`);

let exitCode = 0;
try {
  const backend = await startBackend();
  const targets: Target[] = [directTarget(backend)];
  const handshakeServers: HandshakeServer[] = [];
  const descriptions: Record<string, string> = { direct: targets[0].description };
  let pki: BaselinePki | undefined;
  const baselinePki = (): BaselinePki => (pki ??= createBaselinePki(mkdirIn(dir, 'baseline-pki')));

  if (needs.has('stunnel')) {
    const stunnel = await ensureProgram({ command: 'stunnel', debianPackage: 'stunnel4', versionArgs: ['-version'], versionPattern: /stunnel \d+\.\d+/ }, log);
    if (!stunnel.available) {
      unavailable.set('stunnel', stunnel.reason);
      unavailable.set('stunnel-1hop', stunnel.reason);
      log(`  stunnel baseline skipped: ${stunnel.reason}`);
    } else {
      for (const hops of [2, 1] as const) {
        const target = await startStunnelTarget({ stunnelPath: stunnel.path, version: stunnel.version, backend, pki: baselinePki(), group, dir: mkdirIn(dir, 'stunnel'), hops });
        targets.push(target);
        descriptions[target.name] = target.description;
      }
    }
  }
  if (needs.has('nginx')) {
    const nginx = await ensureProgram({ command: 'nginx', debianPackage: 'nginx-light', versionArgs: ['-v'], versionPattern: /nginx\/\S+/ }, log);
    if (!nginx.available) {
      unavailable.set('nginx', nginx.reason);
      log(`  nginx baseline skipped: ${nginx.reason}`);
    } else {
      const server = await startNginxHandshakeServer({ nginxPath: nginx.path, version: nginx.version, pki: baselinePki(), group, dir });
      handshakeServers.push(server);
      descriptions['nginx'] = server.description;
    }
  }
  if (needs.has('causeway')) {
    try {
      const clientProxies = suites.some((s) => s.name === 'idle-streams') ? clientProxiesFor(sizes.idleStreams) : 1;
      const chain = await startCausewayTarget({ backend, group, dir: mkdirIn(dir, 'causeway'), log, clientProxies });
      targets.push(chain.target);
      if (needs.has('nginx')) handshakeServers.push(chain.handshakeServer);
      descriptions['causeway'] = chain.target.description;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof TargetUnavailable) {
        unavailable.set('causeway', message);
        log(`  causeway chain not measured: ${message}`);
      } else {
        unavailable.set('causeway', 'the chain failed to start (see Errors)');
        failures.push(`causeway chain: ${message}`);
        log(`  causeway chain FAILED to start: ${message}`);
      }
    }
  }

  const context: SuiteContext = { sizes, targets, unavailable, backend, handshakeServers, group, dir, log };
  const metrics: Metric[] = [];
  for (const suite of suites) {
    log(`\n${suite.title} (${suite.name})`);
    try {
      metrics.push(...(await suite.run(context)));
    } catch (err) {
      if (err instanceof SuiteSkipped) {
        skippedSuites.set(suite.name, err.message);
        log(`  skipped: ${err.message}`);
        continue;
      }
      const message = `${suite.name}: ${err instanceof Error ? err.message : String(err)}`;
      failures.push(message);
      log(`  FAILED: ${message}`);
    }
  }
  const measurementErrors = metrics.flatMap((m) => m.notes ?? []);

  const rows = metrics.map(evaluate);
  const info: RunInfo = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    mode: options.quick ? 'quick' : 'full',
    suites: suites.map((s) => s.name),
    machine: {
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      loadAverage: loadavg().map((l) => Number(l.toFixed(2))),
      openFileLimit: openFileLimit(),
      sizes,
    },
    targets: descriptions,
    unavailable: { ...Object.fromEntries(unavailable), ...Object.fromEntries(skippedSuites) },
    failures,
  };
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const jsonFile = join(RESULTS_DIR, `${stamp}.json`);
  const table = markdown(rows, info);
  writeFileSync(jsonFile, json(rows, info));
  writeFileSync(join(RESULTS_DIR, 'latest.md'), table);
  log(`\n${table}`);
  log(`Wrote ${jsonFile} and ${join(RESULTS_DIR, 'latest.md')}.`);
  if (failures.length > 0 || measurementErrors.length > 0) {
    exitCode = 1;
    log('Some measurements failed (see Errors above); the child logs are kept in the work directory.');
  }
} catch (err) {
  exitCode = 1;
  console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
}

if (!interrupted) {
  await group.stopAll();
  if (exitCode === 0 && !options.keep) rmSync(dir, { recursive: true, force: true });
  else log(`Work directory kept: ${dir}`);
  process.exit(exitCode);
}

function selectSuites(only: readonly string[]): Suite[] | undefined {
  if (only.length === 0) return [...SUITES];
  const chosen = SUITES.filter((s) => only.some((name) => s.name === name || s.name.startsWith(name)));
  return chosen.length === 0 ? undefined : chosen;
}

async function startBackend(): Promise<Backend> {
  const process = group.startNode('backend', BACKEND_SCRIPT, [], join(dir, 'backend.log'));
  const ready = await process.waitForMessage('ready', 15_000);
  return { host: '127.0.0.1', ports: ready['ports'] as Backend['ports'], process };
}

/**
 * A client proxy holds two descriptors per stream (the local socket and its TLS connection). When the
 * open-file limit cannot cover that for every idle stream in one process, the streams are spread over
 * several client proxies, as they would be over many users' machines; all of them still share the one
 * connector tunnel, whose cost per stream is the figure that matters.
 */
function clientProxiesFor(streams: number): number {
  const perProxy = Math.floor((openFileLimit() - 512) / 2);
  return Number.isFinite(perProxy) && perProxy > 0 ? Math.max(1, Math.ceil(streams / perProxy)) : 1;
}

function mkdirIn(parent: string, name: string): string {
  const path = join(parent, name);
  mkdirSync(path, { recursive: true });
  return path;
}

function openFileLimits(): { soft: number; hard: number } {
  try {
    const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    const value = (v: string | undefined): number => (v === undefined ? Number.NaN : v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v));
    return { soft: value(match?.[1]), hard: value(match?.[2]) };
  } catch {
    return { soft: Number.NaN, hard: Number.NaN };
  }
}

function openFileLimit(): number {
  return openFileLimits().soft;
}

/**
 * Idle streams hold tens of thousands of sockets across the children. A process cannot raise its own
 * limit from Node, so the benchmark re-runs itself once under `ulimit -n` when the soft limit is below
 * the hard one; children inherit the limit. What the hard limit still does not allow is handled by
 * spreading the streams over several client proxies (see clientProxiesFor).
 */
function raiseFdLimit(selected: readonly Suite[]): void {
  if (!selected.some((s) => s.name === 'idle-streams')) return;
  const { soft, hard } = openFileLimits();
  const wanted = Math.min(WANTED_FD_LIMIT, hard);
  // Only the soft limit can be raised here (up to the hard one, which needs privileges we may not have).
  if (process.env[FD_ENV] === '1' || !(soft < wanted)) return;
  const script = `ulimit -n ${wanted} && exec "$0" "$@"`;
  const result = spawnSync('bash', ['-c', script, process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, [FD_ENV]: '1' },
  });
  if (result.error !== undefined) {
    console.error(`bench: could not re-run under a higher open-file limit (${result.error.message}); going on with ${soft}`);
    return;
  }
  process.exit(result.status ?? 1);
}
