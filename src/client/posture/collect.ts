/**
 * collectPosture: runs the collectors of one platform, each under its own timeout, and merges what
 * they established into FactorValues for a posture report. A collector that fails, throws or runs
 * out of time contributes nothing (unknown, which scoring counts as unmet) and a line in `problems`;
 * collectPosture itself never throws.
 */
import type { FactorValues } from '../../lib/trust/factor-values.ts';
import { filesPresent, linuxDiskEncryption, linuxFirewall, linuxOsVersion, linuxProcesses, linuxScreenLock, linuxUpdates } from './linux.ts';
import { macosDiskEncryption, macosFirewall, macosOsVersion, macosProcesses, macosScreenLock, macosUpdates } from './macos.ts';
import type { CollectContext, CollectedPosture, Collector, CollectorPlatform, CommandRunner, PostureFiles, PostureRequirements } from './types.ts';
import { windowsDiskEncryption, windowsFirewall, windowsOsVersion, windowsProcesses, windowsScreenLock, windowsUpdates } from './windows.ts';

export const DEFAULT_COLLECTOR_TIMEOUT_MS = 30_000;

export const COLLECTORS: Record<CollectorPlatform, Record<string, Collector>> = {
  linux: {
    osVersion: linuxOsVersion,
    updates: linuxUpdates,
    diskEncryption: linuxDiskEncryption,
    firewall: linuxFirewall,
    screenLock: linuxScreenLock,
    processes: linuxProcesses,
    files: filesPresent,
  },
  macos: {
    osVersion: macosOsVersion,
    updates: macosUpdates,
    diskEncryption: macosDiskEncryption,
    firewall: macosFirewall,
    screenLock: macosScreenLock,
    processes: macosProcesses,
    files: filesPresent,
  },
  windows: {
    osVersion: windowsOsVersion,
    updates: windowsUpdates,
    diskEncryption: windowsDiskEncryption,
    firewall: windowsFirewall,
    screenLock: windowsScreenLock,
    processes: windowsProcesses,
    files: filesPresent,
  },
};

export interface CollectPostureOptions {
  platform: CollectorPlatform;
  run: CommandRunner;
  files: PostureFiles;
  env?: Readonly<Record<string, string | undefined>>;
  requirements?: PostureRequirements;
  /** Each collector's budget (default 30 s); the whole collection takes at most about 4× this (update checks). */
  timeoutMs?: number;
}

/** Which platform's collectors fit `process.platform`; undefined for others. */
export function collectorPlatform(nodePlatform: string): CollectorPlatform | undefined {
  return nodePlatform === 'linux' ? 'linux' : nodePlatform === 'darwin' ? 'macos' : nodePlatform === 'win32' ? 'windows' : undefined;
}

/** Resolves with the collector's values, or rejects on its error or when its time is up. */
function withTimeout<T>(work: Promise<T>, ms: number, name: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

export async function collectPosture(options: CollectPostureOptions): Promise<CollectedPosture> {
  const timeoutMs = options.timeoutMs !== undefined && Number.isFinite(options.timeoutMs) && options.timeoutMs > 0 ? options.timeoutMs : DEFAULT_COLLECTOR_TIMEOUT_MS;
  const ctx: CollectContext = { run: options.run, files: options.files, env: options.env ?? {}, requirements: options.requirements ?? {}, timeoutMs };
  const collectors = COLLECTORS[options.platform] ?? {};
  const factors: FactorValues = {};
  const problems: string[] = [];
  // Update checks ask remote servers and may use 4× the budget; everything else 2× (a few commands each).
  const settled = await Promise.all(
    Object.entries(collectors).map(async ([name, collector]) => {
      try {
        const budget = name === 'updates' ? timeoutMs * 5 : timeoutMs * 2;
        return { name, values: await withTimeout(Promise.resolve().then(() => collector(ctx)), budget, name) };
      } catch (err) {
        return { name, error: err instanceof Error ? err.message : String(err) };
      }
    }),
  );
  for (const result of settled) {
    if ('error' in result) {
      problems.push(`${result.name}: ${result.error}`);
      continue;
    }
    Object.assign(factors, sanitize(result.values));
  }
  for (const key of ['diskEncryption', 'firewall', 'osVersion', 'screenLock', 'updatesPending', 'updatesAutomatic'] as const) {
    if (factors[key] === undefined) problems.push(`${key}: could not be established`);
  }
  return { factors, problems };
}

/** Keeps only well-typed values, so a collector bug cannot make the report malformed. */
function sanitize(values: unknown): FactorValues {
  const out: FactorValues = {};
  if (values === null || typeof values !== 'object') return out;
  const v = values as Record<string, unknown>;
  if (typeof v.osVersion === 'string' && /^\d{1,9}(\.\d{1,9}){0,5}$/.test(v.osVersion)) out.osVersion = v.osVersion;
  if (typeof v.osDistribution === 'string' && /^[a-z0-9][a-z0-9._-]{0,63}$/.test(v.osDistribution)) out.osDistribution = v.osDistribution;
  for (const key of ['diskEncryption', 'firewall', 'updatesAutomatic'] as const) if (typeof v[key] === 'boolean') out[key] = v[key];
  if (typeof v.updatesPending === 'number' && Number.isInteger(v.updatesPending) && v.updatesPending >= 0 && v.updatesPending <= 1_000_000) out.updatesPending = v.updatesPending;
  if (typeof v.screenLock === 'boolean' || v.screenLock === 'not-applicable') out.screenLock = v.screenLock;
  for (const key of ['files', 'processes'] as const) {
    const map = v[key];
    if (map === null || typeof map !== 'object' || Array.isArray(map)) continue;
    const clean: Record<string, boolean> = {};
    for (const [k, b] of Object.entries(map as Record<string, unknown>).slice(0, 64)) if (typeof b === 'boolean' && k !== '' && k.length <= 1024) clean[k] = b;
    out[key] = clean;
  }
  return out;
}
