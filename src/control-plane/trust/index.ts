/**
 * Device trust on the control plane (issue 5): the trust engine (engine.ts), the device managers it
 * hears from (mdm.ts) and the admin routes (routes.ts), built together by createDeviceTrust.
 *
 *     const trust = createDeviceTrust({ store, clock, logger, resolveSecret });
 *     await trust.start();          // scores every device, follows changes, syncs device managers
 *     await trust.rescore(deviceId);
 *     await trust.close();
 */
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import type { SecretRef } from '../../lib/spec/device-manager.ts';
import type { AdapterDeps, LookupResult, Timers } from '../device-managers/index.ts';
import type { Store } from '../store/index.ts';
import { createTrustEngine } from './engine.ts';
import type { DeviceTrust, TrustEngine } from './engine.ts';
import { createDeviceManagers } from './mdm.ts';
import type { DeviceManagers } from './mdm.ts';

export { createTrustEngine, managedFactors, TRUST_ACTOR, TRUST_PROFILE_KIND, DEVICE_MANAGER_KIND } from './engine.ts';
export type { DeviceTrust, TrustEngine, TrustEngineDeps, TrustEngineMdm } from './engine.ts';
export { createDeviceManagers } from './mdm.ts';
export type { DeviceManagers, DeviceManagersDeps, DeviceManagerStatus } from './mdm.ts';
export { trustRoutes } from './routes.ts';
export type { TrustRoutesDeps } from './routes.ts';

export interface DeviceTrustOptions {
  store: Store;
  /** Reads `{env}` / `{file}` secret references of DeviceManager specs (the entry point's resolveSecret). */
  resolveSecret: (ref: SecretRef) => Promise<string>;
  clock?: Clock;
  logger?: Logger;
  /** The engine's schedule and the sync's timers (tests pass fake ones). */
  timers?: Timers;
  adapterDeps?: Partial<Omit<AdapterDeps, 'resolveSecret'>>;
}

/** The engine and the device managers as one thing to start, use and close. */
export interface DeviceTrustService {
  readonly engine: TrustEngine;
  readonly managers: DeviceManagers;
  rescore(deviceId: string): Promise<DeviceTrust>;
  /** Asks every device manager about the serial now (their answers are stored and the devices rescored). */
  lookupNow(serial: string, options?: { fresh?: boolean }): Promise<LookupResult[]>;
  start(): Promise<void>;
  /** Resolves when nothing started so far is running (tests). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export function createDeviceTrust(options: DeviceTrustOptions): DeviceTrustService {
  const clock = options.clock ?? systemClock;
  const logger = (options.logger ?? silentLogger()).child({ component: 'trust' });
  const engine = createTrustEngine({
    store: options.store,
    clock,
    logger,
    ...(options.timers === undefined ? {} : { timers: options.timers }),
    // The managers are made just below; lookups only happen once both exist.
    mdm: { lookupNow: (serial, lookupOptions) => devices.lookupNow(serial, lookupOptions) },
  });
  const devices: DeviceManagers = createDeviceManagers({
    store: options.store,
    resolveSecret: options.resolveSecret,
    onState: (update) => engine.onMdmUpdate(update),
    clock,
    logger,
    ...(options.timers === undefined ? {} : { timers: options.timers }),
    ...(options.adapterDeps === undefined ? {} : { adapterDeps: options.adapterDeps }),
  });
  let closing: Promise<void> | undefined;
  return {
    engine,
    managers: devices,
    rescore: (deviceId) => engine.rescore(deviceId),
    lookupNow: (serial, lookupOptions) => engine.lookupNow(serial, lookupOptions),
    async start() {
      engine.start();
      await devices.start();
    },
    async idle() {
      for (let i = 0; i < 10; i++) {
        await devices.idle();
        await engine.idle();
      }
    },
    close() {
      closing ??= (async () => {
        await devices.close();
        await engine.close();
      })();
      return closing;
    },
  };
}
