/**
 * Device-manager (MDM / EDR) integrations of the control plane: one adapter per `kind:
 * DeviceManager`, the sync scheduler, and webhook verification. See types.ts for the contract.
 */
import { durationMs } from '../../lib/spec/device-manager.ts';
import type { DeviceManagerSpec } from '../../lib/spec/device-manager.ts';
import { createCrowdStrikeAdapter } from './crowdstrike.ts';
import { createMdmFetch } from './fetch.ts';
import { createHttpAdapter } from './generic-http.ts';
import { createIntuneAdapter } from './intune.ts';
import { createJamfAdapter } from './jamf.ts';
import type { ManagedAdapter } from './sync.ts';
import type { AdapterDeps, DeviceManagerAdapter } from './types.ts';

export type { AdapterDeps, DeviceManagerAdapter, MdmDeviceState } from './types.ts';
export { createMdmSync, DEFAULT_SYNC_INTERVAL_MS } from './sync.ts';
export type { LookupResult, ManagedAdapter, ManagerStatus, MdmSync, MdmSyncOptions, MdmUpdate, Timers } from './sync.ts';
export { createWebhookVerifier, signWebhook, WEBHOOK_SIGNATURE_HEADER } from './webhook.ts';
export type { WebhookRefusal, WebhookResult, WebhookVerifier } from './webhook.ts';
export { checkSerial, MdmError, SERIAL_PATTERN } from './http.ts';
export { createMdmFetch } from './fetch.ts';
export { createCrowdStrikeAdapter, createHttpAdapter, createIntuneAdapter, createJamfAdapter };

/**
 * The adapter for one DeviceManager spec. Without `deps.fetch` it gets its own connection pool that
 * trusts `spec.caPem` when given; `close()` releases it.
 */
export function createDeviceManagerAdapter(name: string, spec: DeviceManagerSpec, deps: AdapterDeps): DeviceManagerAdapter & { close(): void } {
  const own = deps.fetch === undefined ? createMdmFetch(spec.caPem === undefined ? {} : { caPem: spec.caPem }) : undefined;
  const full = { ...deps, name, ...(own === undefined ? {} : { fetch: own.fetch }) };
  const adapter = ((): DeviceManagerAdapter => {
    switch (spec.type) {
      case 'intune':
        return createIntuneAdapter(spec, full);
      case 'jamf':
        return createJamfAdapter(spec, full);
      case 'crowdstrike':
        return createCrowdStrikeAdapter(spec, full);
      case 'http':
        return createHttpAdapter(spec, full);
    }
  })();
  return Object.assign(adapter, { close: (): void => own?.close() });
}

/** A DeviceManager spec as the scheduler takes it (its syncInterval in ms). */
export function managedAdapter(name: string, spec: DeviceManagerSpec, deps: AdapterDeps): ManagedAdapter & { adapter: DeviceManagerAdapter & { close(): void } } {
  const intervalMs = durationMs(spec.syncInterval);
  return { name, adapter: createDeviceManagerAdapter(name, spec, deps), ...(intervalMs === undefined ? {} : { intervalMs }) };
}
