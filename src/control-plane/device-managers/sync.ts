/**
 * Keeps the control plane's picture of every device manager's devices fresh:
 *
 * - a batch sync per manager, at once on start and then every `intervalMs` (the spec's syncInterval,
 *   20 min by default); a manager that cannot list (generic HTTP) looks up `knownSerials()` one by one
 * - `lookupNow(serial)` when a device reports or registers, asking every manager in parallel;
 *   concurrent lookups of one serial share one request per manager, and a result younger than
 *   `lookupCacheMs` is reused unless `fresh` is asked for
 * - a failing manager is retried with exponential backoff (from `initialBackoffMs`, doubling, never
 *   later than its interval, never sooner than the vendor's Retry-After); the others go on
 * - every result goes to `onState`; nothing is delivered after close() or for a manager that was
 *   replaced or removed while its request ran
 *
 * The scheduler holds no device state of its own beyond the short lookup cache: storing states and
 * turning them into trust factors is the caller's job.
 */
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { errorCode, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import { MdmError } from './http.ts';
import type { DeviceManagerAdapter, MdmDeviceState } from './types.ts';

export const DEFAULT_SYNC_INTERVAL_MS = 20 * 60_000;
export const DEFAULT_INITIAL_BACKOFF_MS = 30_000;
export const DEFAULT_LOOKUP_CACHE_MS = 60_000;
/** Per-serial lookups in a sync of a manager that cannot list, at once. */
const SERIAL_CONCURRENCY = 4;

export interface ManagedAdapter {
  /** The DeviceManager's name. */
  name: string;
  adapter: DeviceManagerAdapter;
  /** This manager's sync period; the scheduler's intervalMs when absent. */
  intervalMs?: number;
}

export interface MdmUpdate {
  manager: string;
  source: string;
  /** What the manager said, one state per serial (several records of one serial: the one seen last). */
  states: MdmDeviceState[];
  /** Serials that were asked about and that the manager does not know. */
  missing: string[];
  /**
   * A full listing: every device the manager knows is in `states`, so a serial stored for this
   * manager and absent here is no longer known to it.
   */
  complete: boolean;
  /** When the answer arrived (ISO 8601). */
  at: string;
}

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: Timers = {
  setTimeout: (callback, ms) => {
    const handle = setTimeout(callback, ms);
    handle.unref();
    return handle;
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface MdmSyncOptions {
  adapters: ManagedAdapter[];
  onState: (update: MdmUpdate) => void | Promise<void>;
  clock?: Clock;
  timers?: Timers;
  /** The default sync period. */
  intervalMs?: number;
  initialBackoffMs?: number;
  lookupCacheMs?: number;
  logger?: Logger;
  /** Serials to look up one by one for managers whose adapter cannot list (the registered devices). */
  knownSerials?: () => Promise<string[]>;
}

export interface LookupResult {
  manager: string;
  /** undefined when the manager does not know the serial, or failed (then `error`). */
  state: MdmDeviceState | undefined;
  /** The failure's message (never a secret), when the manager could not answer. */
  error?: string;
}

export interface ManagerStatus {
  manager: string;
  source: string;
  lastSyncAt?: string;
  lastSuccessAt?: string;
  lastError?: string;
  /** Failed syncs in a row. */
  failures: number;
  nextSyncAt?: string;
  devices?: number;
}

export interface MdmSync {
  lookupNow(serial: string, options?: { fresh?: boolean }): Promise<LookupResult[]>;
  /** Runs a sync of one manager (or all) now and waits for it; the schedule continues from then. */
  syncNow(manager?: string): Promise<void>;
  /** Replaces the managers (after DeviceManager specs changed): new and changed ones sync at once. */
  setAdapters(adapters: ManagedAdapter[]): void;
  status(): ManagerStatus[];
  /** Resolves when no sync or lookup is running. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

interface Manager {
  name: string;
  adapter: DeviceManagerAdapter;
  intervalMs: number;
  timer: unknown;
  running: Promise<void> | undefined;
  removed: boolean;
  status: ManagerStatus;
}

export function createMdmSync(options: MdmSyncOptions): MdmSync {
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? realTimers;
  const logger = options.logger ?? silentLogger();
  const defaultInterval = options.intervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
  const initialBackoff = options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
  const lookupCacheMs = options.lookupCacheMs ?? DEFAULT_LOOKUP_CACHE_MS;
  const managers = new Map<string, Manager>();
  const work = new Set<Promise<unknown>>();
  const inflight = new Map<string, Promise<LookupResult>>();
  const cache = new Map<string, { at: number; result: LookupResult }>();
  let closed = false;

  const iso = (ms: number): string => new Date(ms).toISOString();

  function track<T>(promise: Promise<T>): Promise<T> {
    work.add(promise);
    void promise.then(
      () => work.delete(promise),
      () => work.delete(promise),
    );
    return promise;
  }

  async function deliver(manager: Manager, update: Omit<MdmUpdate, 'manager' | 'source' | 'at'>): Promise<void> {
    if (closed || manager.removed) return;
    try {
      await options.onState({ manager: manager.name, source: manager.adapter.source, at: iso(clock.now()), ...update });
    } catch (err) {
      logger.error({ manager: manager.name, err: errorMessage(err) }, 'storing device-manager states failed');
    }
  }

  function schedule(manager: Manager, delayMs: number): void {
    if (closed || manager.removed) return;
    if (manager.timer !== undefined) timers.clearTimeout(manager.timer);
    manager.status.nextSyncAt = iso(clock.now() + delayMs);
    manager.timer = timers.setTimeout(() => {
      manager.timer = undefined;
      void runSync(manager);
    }, delayMs);
  }

  function runSync(manager: Manager): Promise<void> {
    if (manager.running !== undefined) return manager.running;
    const run = track(
      syncOnce(manager).finally(() => {
        manager.running = undefined;
      }),
    );
    manager.running = run;
    return run;
  }

  async function syncOnce(manager: Manager): Promise<void> {
    if (closed || manager.removed) return;
    const started = clock.now();
    manager.status.lastSyncAt = iso(started);
    try {
      const count = manager.adapter.canList ? await syncListing(manager) : await syncKnown(manager);
      manager.status.failures = 0;
      manager.status.lastSuccessAt = iso(clock.now());
      delete manager.status.lastError;
      manager.status.devices = count;
      logger.info({ manager: manager.name, devices: count, ms: clock.now() - started }, 'device-manager sync done');
      schedule(manager, manager.intervalMs);
    } catch (err) {
      manager.status.failures++;
      manager.status.lastError = errorMessage(err);
      const backoff = Math.min(manager.intervalMs, initialBackoff * 2 ** Math.min(manager.status.failures - 1, 20));
      const retryAfter = err instanceof MdmError && err.retryAfterMs !== undefined ? err.retryAfterMs : 0;
      const delay = Math.max(backoff, retryAfter);
      logger.warn({ manager: manager.name, code: errorCode(err), err: errorMessage(err), failures: manager.status.failures, retryInMs: delay }, 'device-manager sync failed');
      schedule(manager, delay);
    }
  }

  async function syncListing(manager: Manager): Promise<number> {
    const bySerial = new Map<string, MdmDeviceState>();
    for await (const state of manager.adapter.list()) {
      if (closed || manager.removed) return bySerial.size;
      const key = state.serial.toLowerCase();
      const seen = bySerial.get(key);
      if (seen === undefined || (state.lastSeen ?? '') > (seen.lastSeen ?? '')) bySerial.set(key, state);
    }
    await deliver(manager, { states: [...bySerial.values()], missing: [], complete: true });
    return bySerial.size;
  }

  async function syncKnown(manager: Manager): Promise<number> {
    if (options.knownSerials === undefined) return 0;
    const serials = [...new Set(await options.knownSerials())];
    const states: MdmDeviceState[] = [];
    const missing: string[] = [];
    let firstError: Error | undefined;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < serials.length && !closed && !manager.removed) {
        const serial = serials[next++];
        try {
          const state = await manager.adapter.lookup(serial);
          if (state === undefined) missing.push(serial);
          else states.push(state);
        } catch (err) {
          // A serial the adapter refuses (not a serial number) is not the manager's failure.
          if (errorCode(err) === 'MDM_INVALID_SERIAL') continue;
          firstError ??= err instanceof Error ? err : new Error(errorMessage(err));
          // Rate limits and outages apply to the rest as well.
          if (err instanceof MdmError && err.retryable) return;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(SERIAL_CONCURRENCY, serials.length) }, worker));
    await deliver(manager, { states, missing, complete: false });
    if (firstError !== undefined) throw firstError;
    return states.length;
  }

  function lookupOne(manager: Manager, serial: string, fresh: boolean): Promise<LookupResult> {
    const key = `${manager.name}\u0000${serial}`;
    const cached = cache.get(key);
    if (!fresh && cached !== undefined && clock.now() - cached.at < lookupCacheMs) return Promise.resolve(cached.result);
    const running = inflight.get(key);
    if (running !== undefined) return running;
    const promise = track(
      (async (): Promise<LookupResult> => {
        try {
          const state = await manager.adapter.lookup(serial);
          await deliver(manager, { states: state === undefined ? [] : [state], missing: state === undefined ? [serial] : [], complete: false });
          const result: LookupResult = { manager: manager.name, state };
          cache.set(key, { at: clock.now(), result });
          return result;
        } catch (err) {
          logger.warn({ manager: manager.name, code: errorCode(err), err: errorMessage(err) }, 'device-manager lookup failed');
          return { manager: manager.name, state: undefined, error: errorMessage(err) };
        } finally {
          inflight.delete(key);
        }
      })(),
    );
    inflight.set(key, promise);
    return promise;
  }

  function pruneCache(): void {
    if (cache.size < 10_000) return;
    const now = clock.now();
    for (const [key, entry] of cache) if (now - entry.at >= lookupCacheMs) cache.delete(key);
  }

  function add(entry: ManagedAdapter): void {
    const manager: Manager = {
      name: entry.name,
      adapter: entry.adapter,
      intervalMs: entry.intervalMs ?? defaultInterval,
      timer: undefined,
      running: undefined,
      removed: false,
      status: { manager: entry.name, source: entry.adapter.source, failures: 0 },
    };
    managers.set(entry.name, manager);
    schedule(manager, 0);
  }

  function remove(manager: Manager): void {
    manager.removed = true;
    if (manager.timer !== undefined) timers.clearTimeout(manager.timer);
    manager.timer = undefined;
    managers.delete(manager.name);
    for (const key of cache.keys()) if (key.startsWith(`${manager.name}\u0000`)) cache.delete(key);
  }

  for (const entry of options.adapters) {
    if (managers.has(entry.name)) throw new Error(`device manager ${entry.name} is listed twice`);
    add(entry);
  }

  return {
    async lookupNow(serial: string, lookupOptions: { fresh?: boolean } = {}): Promise<LookupResult[]> {
      if (closed) return [];
      pruneCache();
      return Promise.all([...managers.values()].map((m) => lookupOne(m, serial, lookupOptions.fresh === true)));
    },

    async syncNow(name?: string): Promise<void> {
      const targets = name === undefined ? [...managers.values()] : [managers.get(name)].filter((m) => m !== undefined);
      await Promise.all(
        targets.map(async (m) => {
          if (m.timer !== undefined) timers.clearTimeout(m.timer);
          m.timer = undefined;
          // A sync already running counts; the next one is scheduled when it ends.
          await runSync(m);
        }),
      );
    },

    setAdapters(adapters: ManagedAdapter[]): void {
      if (closed) return;
      const wanted = new Map(adapters.map((a) => [a.name, a]));
      for (const manager of [...managers.values()]) {
        const entry = wanted.get(manager.name);
        if (entry === undefined || entry.adapter !== manager.adapter || (entry.intervalMs ?? defaultInterval) !== manager.intervalMs) remove(manager);
      }
      for (const entry of adapters) if (!managers.has(entry.name)) add(entry);
    },

    status(): ManagerStatus[] {
      return [...managers.values()].map((m) => ({ ...m.status }));
    },

    async idle(): Promise<void> {
      while (work.size > 0) await Promise.allSettled([...work]);
    },

    async close(): Promise<void> {
      closed = true;
      for (const manager of managers.values()) {
        if (manager.timer !== undefined) timers.clearTimeout(manager.timer);
        manager.timer = undefined;
      }
      while (work.size > 0) await Promise.allSettled([...work]);
    },
  };
}
