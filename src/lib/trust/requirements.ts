/**
 * What the control plane tells a device to check, and how what the device reports meets what
 * device managers say.
 */
import { SERVER_FACTOR_KEYS } from './factor-values.ts';
import type { FactorValues } from './factor-values.ts';
import { profileApplies } from './score.ts';
import type { DeviceFacts, TrustProfileInput } from './score.ts';

export interface DeviceRequirements {
  /** Paths of the fileExists factors of every profile that applies, sorted, without repeats. */
  files: string[];
  /** Names of the processRunning factors, sorted, without repeats. */
  processes: string[];
}

/** The files and processes a device must report on (handed out with the nonce). */
export function postureRequirements(profiles: readonly TrustProfileInput[], device: DeviceFacts): DeviceRequirements {
  const files = new Set<string>();
  const processes = new Set<string>();
  for (const profile of profiles) {
    if (!profileApplies(profile.spec, device)) continue;
    for (const factor of profile.spec.factors) {
      if (factor.type === 'fileExists') files.add(factor.path);
      if (factor.type === 'processRunning') processes.add(factor.name);
    }
  }
  return { files: [...files].sort(), processes: [...processes].sort() };
}

/**
 * The factor values scoring reads: the device's own report for what it can observe, and device
 * managers alone for MDM presence, compliance and the CrowdStrike score (a report that carried them
 * was refused already; they are dropped here too, so no path lets a device vouch for itself).
 */
export function mergeFactorValues(reported: FactorValues | undefined, managed: Pick<FactorValues, (typeof SERVER_FACTOR_KEYS)[number]> | undefined): FactorValues {
  const out: FactorValues = { ...(reported ?? {}) };
  for (const key of SERVER_FACTOR_KEYS) delete out[key];
  for (const key of SERVER_FACTOR_KEYS) {
    const value = managed?.[key];
    if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  }
  return out;
}
