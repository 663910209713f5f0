/**
 * The observed trust factors of one device: what its posture report says (signed by the device
 * key, src/lib/posture) merged with what the org's device managers say (MDM presence, compliance,
 * CrowdStrike score). A value that is absent is unknown, and trust scoring counts an unknown or
 * malformed value as unmet (DT-07); collectors never guess.
 *
 * The values arrive as JSON from another process, so scoring reads them through the readers below,
 * which accept only well-formed values and say `undefined` for anything else.
 */
import { z } from 'zod';

export interface FactorValues {
  /** Dotted numbers: `14.4.1` (macOS), `10.0.22631` (Windows), `22.04` (Linux: os-release VERSION_ID). */
  osVersion?: string;
  /** Linux only: the os-release `ID` (`ubuntu`, `debian`, `fedora`). */
  osDistribution?: string;
  /** The system / root volume is encrypted (LUKS/dm-crypt, FileVault, BitLocker). */
  diskEncryption?: boolean;
  firewall?: boolean;
  /** How many OS updates wait to be installed. */
  updatesPending?: number;
  /** Updates install automatically. */
  updatesAutomatic?: boolean;
  /** The screen locks (with a password) when idle; `not-applicable` where no desktop session exists. */
  screenLock?: boolean | 'not-applicable';
  /** Path → present, for the paths the device was asked about. */
  files?: Record<string, boolean>;
  /** Process name → running, for the names the device was asked about. */
  processes?: Record<string, boolean>;
  /** From device managers only, never from the device itself. */
  mdmPresent?: boolean;
  mdmCompliant?: boolean;
  /** CrowdStrike Zero Trust Assessment overall score, 0 to 100. */
  crowdstrikeScore?: number;
}

/** The factors only device managers may set; a posture report carrying them is refused. */
export const SERVER_FACTOR_KEYS = ['mdmPresent', 'mdmCompliant', 'crowdstrikeScore'] as const;

/** At most this many files or processes per report (profiles list few). */
export const MAX_CHECKED_ITEMS = 64;

const VERSION = /^\d{1,9}(\.\d{1,9}){0,5}$/;
const DISTRIBUTION = /^[a-z0-9][a-z0-9._-]{0,63}$/;

const checkMap = z
  .record(z.string().min(1).max(1024), z.boolean())
  .refine((map) => Object.keys(map).length <= MAX_CHECKED_ITEMS, `must list at most ${MAX_CHECKED_ITEMS} entries`);

/**
 * The factors a device may report about itself. Strict: a known factor with a wrong type, a
 * server-only factor (MDM, CrowdStrike) or an unknown key makes the report malformed.
 */
export const deviceFactorValuesSchema = z.strictObject({
  osVersion: z.string().regex(VERSION, 'must be dotted numbers').optional(),
  osDistribution: z.string().regex(DISTRIBUTION, 'must be an os-release ID').optional(),
  diskEncryption: z.boolean().optional(),
  firewall: z.boolean().optional(),
  updatesPending: z.number().int().min(0).max(1_000_000).optional(),
  updatesAutomatic: z.boolean().optional(),
  screenLock: z.union([z.boolean(), z.literal('not-applicable')]).optional(),
  files: checkMap.optional(),
  processes: checkMap.optional(),
});

// ---------------------------------------------------------------------------------------------
// Defensive readers: a well-formed value, or undefined (unknown).

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The field of a possibly malformed factors object. */
export function field(values: unknown, key: string): unknown {
  return isRecord(values) && Object.hasOwn(values, key) ? values[key] : undefined;
}

export function readBoolean(value: unknown): boolean | undefined {
  return typeof value === 'boolean' ? value : undefined;
}

/** A finite number ≥ 0 (at most `max`), else undefined: NaN, Infinity, negatives and strings are unknown. */
export function readCount(value: unknown, max = Number.MAX_SAFE_INTEGER): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= max ? value : undefined;
}

export function readVersion(value: unknown): number[] | undefined {
  if (typeof value !== 'string' || !VERSION.test(value)) return undefined;
  return value.split('.').map(Number);
}

export function readDistribution(value: unknown): string | undefined {
  return typeof value === 'string' && DISTRIBUTION.test(value) ? value : undefined;
}

/** `map[key]` when the map is an object and the entry a boolean. */
export function readCheck(map: unknown, key: string): boolean | undefined {
  return readBoolean(field(map, key));
}

/** Compares dotted versions number by number; missing parts count as 0 (`14` = `14.0.0`). */
export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}
