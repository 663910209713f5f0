/**
 * What the control plane learns from a device manager (MDM or EDR) about one device, and the
 * interface every vendor adapter implements. Adapters only read: they never change anything at
 * the vendor.
 */
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import type { SecretRef } from '../../lib/spec/device-manager.ts';

export interface MdmDeviceState {
  /** The serial number as the device manager spells it. */
  serial: string;
  /** The device manager knows and manages the device (MDM enrolled, or the EDR sensor is present). */
  managed: boolean;
  /** The vendor's verdict; undefined when it gives none (unknown, not evaluated, not configured). */
  compliant: boolean | undefined;
  /** A 0–100 score when the vendor has one (CrowdStrike Zero Trust Assessment, a generic JSON field). */
  score?: number;
  /** Operating system and version, as the vendor reports them. */
  os?: string;
  /** When the device last checked in with the vendor (ISO 8601). */
  lastSeen?: string;
  /** Which device manager said this: `<type>:<DeviceManager name>`. */
  source: string;
}

export interface DeviceManagerAdapter {
  /** `<type>:<name>`, the `source` of every state it returns. */
  readonly source: string;
  /** Whether list() enumerates the vendor's devices; when false, a sync looks known serials up one by one. */
  readonly canList: boolean;
  /** One device by serial number; undefined when the device manager does not know it. */
  lookup(serial: string): Promise<MdmDeviceState | undefined>;
  /** Every device the vendor knows, page by page (batch sync). Empty when canList is false. */
  list(): AsyncIterable<MdmDeviceState>;
  /** Checks the credentials and one cheap read (the admin's "test" button). Never throws. */
  test(): Promise<{ ok: boolean; message: string }>;
}

/** What every adapter gets from the control plane. */
export interface AdapterDeps {
  /** Defaults to the global fetch; createMdmFetch gives one that trusts a private CA. */
  fetch?: typeof fetch;
  clock?: Clock;
  /** Reads `{env}` / `{file}` secret references; called each time a token is fetched, so a rotated secret is picked up. */
  resolveSecret: (ref: SecretRef) => Promise<string>;
  /** How a Retry-After wait is spent (tests record it instead of waiting). */
  sleep?: (ms: number) => Promise<void>;
  logger?: Logger;
  /** Per request; default 15 s. */
  timeoutMs?: number;
  /** Per response body; default 8 MiB. */
  maxResponseBytes?: number;
  /** Devices per page in a batch sync (the vendor's maximum applies); the adapter's default when absent. */
  pageSize?: number;
  /** The longest Retry-After that is waited out; a longer one fails the call as rate-limited. Default 60 s. */
  maxRetryAfterMs?: number;
}
