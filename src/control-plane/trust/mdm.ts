/**
 * The device managers the control plane asks about devices: one adapter per stored `kind:
 * DeviceManager` (rebuilt when its spec changes, closed when it goes), driven by the MDM sync
 * (device-managers/sync.ts) with the registered devices' serials for managers that cannot list.
 * What the sync learns goes to `onState` (the trust engine's onMdmUpdate).
 *
 * Secrets are spec references resolved through `resolveSecret` (the entry point's), each time a
 * token is fetched. The admin's test button builds a fresh adapter from the stored spec and never
 * repeats a secret in its message (CP-11).
 */
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { errorMessage, UserError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import { coalesce, TaskSet } from '../../lib/tasks.ts';
import { deviceManagerSpec } from '../../lib/spec/device-manager.ts';
import type { DeviceManagerSpec, SecretRef } from '../../lib/spec/device-manager.ts';
import { createDeviceManagerAdapter, createMdmSync, managedAdapter } from '../device-managers/index.ts';
import type { AdapterDeps, DeviceManagerAdapter, LookupResult, ManagedAdapter, ManagerStatus, MdmSync, MdmUpdate, Timers } from '../device-managers/index.ts';
import { canonicalJson } from '../store/values.ts';
import type { Store } from '../store/index.ts';
import { DEVICE_MANAGER_KIND } from './engine.ts';

export interface DeviceManagersDeps {
  store: Store;
  resolveSecret: (ref: SecretRef) => Promise<string>;
  onState: (update: MdmUpdate) => Promise<void>;
  clock?: Clock;
  logger?: Logger;
  /** The sync's timers (tests pass fake ones). */
  timers?: Timers;
  /** Extra adapter options (tests: timeoutMs, sleep, fetch). */
  adapterDeps?: Partial<Omit<AdapterDeps, 'resolveSecret'>>;
}

export interface DeviceManagerStatus extends Partial<ManagerStatus> {
  manager: string;
  /** false when the stored spec no longer passes its schema (the manager is not asked). */
  valid: boolean;
}

export interface DeviceManagers {
  lookupNow(serial: string, options?: { fresh?: boolean }): Promise<LookupResult[]>;
  /** Every configured manager: its sync status, or why it is not running. */
  status(): Promise<DeviceManagerStatus[]>;
  /** The admin's test button: credentials and one cheap read. NOT_FOUND for an unknown manager. */
  test(name: string): Promise<{ ok: boolean; message: string }>;
  /** Syncs one manager (or all) now and waits. */
  syncNow(name?: string): Promise<void>;
  /** Reads the DeviceManager specs and follows their changes. */
  start(): Promise<void>;
  /** Resolves when no reload, sync or lookup is running. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

interface Running {
  key: string;
  entry: ManagedAdapter & { adapter: DeviceManagerAdapter & { close(): void } };
}

/** Replaces every secret that was resolved for this adapter in a message, whatever the adapter wrote. */
function redact(message: string, secrets: ReadonlySet<string>): string {
  let out = message;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  return out;
}

export function createDeviceManagers(deps: DeviceManagersDeps): DeviceManagers {
  const { store } = deps;
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? silentLogger();
  const running = new Map<string, Running>();
  const invalid = new Map<string, string>();
  const work = new TaskSet();
  let sync: MdmSync | undefined;
  let unwatch: (() => void) | undefined;
  let closed = false;

  const adapterDeps = (resolveSecret: (ref: SecretRef) => Promise<string>): AdapterDeps => ({ clock, logger, ...deps.adapterDeps, resolveSecret });

  const track = <T>(promise: Promise<T>): Promise<T> => work.track(promise);

  async function reload(): Promise<void> {
    const objects = await store.listObjects(DEVICE_MANAGER_KIND);
    if (closed || sync === undefined) return;
    const seen = new Set<string>();
    invalid.clear();
    for (const object of objects) {
      seen.add(object.name);
      const parsed = deviceManagerSpec.safeParse(object.spec);
      if (!parsed.success) {
        // Problems name paths only: a refused value may be a secret.
        invalid.set(object.name, parsed.error.issues.map((i) => `spec.${i.path.join('.')}: ${i.message}`).join('; '));
        continue;
      }
      const key = canonicalJson(parsed.data);
      const current = running.get(object.name);
      if (current?.key === key) continue;
      current?.entry.adapter.close();
      running.set(object.name, { key, entry: managedAdapter(object.name, parsed.data, adapterDeps(deps.resolveSecret)) });
    }
    for (const [name, current] of running) {
      if (seen.has(name) && !invalid.has(name)) continue;
      current.entry.adapter.close();
      running.delete(name);
    }
    sync.setAdapters([...running.values()].map((r) => r.entry));
  }

  const followSpecs = coalesce(async () => {
    try {
      await reload();
    } catch (err) {
      if (!closed) logger.error({ err: errorMessage(err) }, 'reading the DeviceManager specs failed; will retry on the next change');
    }
  }, () => closed);

  function onRevision(): void {
    void track(followSpecs.run());
  }

  return {
    async lookupNow(serial, options) {
      return sync === undefined ? [] : sync.lookupNow(serial, options);
    },

    async status() {
      const objects = await store.listObjects(DEVICE_MANAGER_KIND);
      const statuses = new Map((sync?.status() ?? []).map((s) => [s.manager, s]));
      return objects.map((o): DeviceManagerStatus => {
        const problem = invalid.get(o.name);
        if (problem !== undefined) return { manager: o.name, valid: false, failures: 0, lastError: `the spec is not valid: ${problem}` };
        return { ...(statuses.get(o.name) ?? { failures: 0 }), manager: o.name, valid: true };
      });
    },

    async test(name) {
      const object = await store.getObject(DEVICE_MANAGER_KIND, name);
      if (object === undefined) throw new UserError('NOT_FOUND', `DeviceManager ${name} does not exist`);
      const parsed = deviceManagerSpec.safeParse(object.spec);
      if (!parsed.success) return { ok: false, message: `the spec is not valid: ${parsed.error.issues.map((i) => `spec.${i.path.join('.')}: ${i.message}`).join('; ')}` };
      const secrets = new Set<string>();
      const resolveSecret = async (ref: SecretRef): Promise<string> => {
        const value = await deps.resolveSecret(ref);
        secrets.add(value);
        return value;
      };
      const spec: DeviceManagerSpec = parsed.data;
      let adapter: (DeviceManagerAdapter & { close(): void }) | undefined;
      try {
        adapter = createDeviceManagerAdapter(name, spec, adapterDeps(resolveSecret));
        const result = await adapter.test();
        return { ok: result.ok === true, message: redact(String(result.message), secrets).slice(0, 1000) };
      } catch (err) {
        return { ok: false, message: redact(errorMessage(err), secrets).slice(0, 1000) };
      } finally {
        adapter?.close();
      }
    },

    async syncNow(name) {
      await sync?.syncNow(name);
    },

    async start() {
      if (sync !== undefined || closed) return;
      sync = createMdmSync({
        adapters: [],
        onState: deps.onState,
        clock,
        logger,
        ...(deps.timers === undefined ? {} : { timers: deps.timers }),
        knownSerials: async () => (await store.listDevices()).map((d) => d.serial).filter((s): s is string => s !== null && s !== ''),
      });
      await track(reload());
      if (!closed) unwatch = store.watch(onRevision);
    },

    async idle() {
      // The sync delivers into work (rescores) and work may start syncs: wait until both are still.
      for (;;) {
        await sync?.idle();
        await work.idle();
        await sync?.idle();
        if (!work.busy) return;
      }
    },

    async close() {
      closed = true;
      unwatch?.();
      unwatch = undefined;
      await work.idle();
      await sync?.close();
      for (const current of running.values()) current.entry.adapter.close();
      running.clear();
    },
  };
}
