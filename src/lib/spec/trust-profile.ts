/**
 * `kind: TrustProfile` (DESIGN §4, issue 5): which trust factors apply to which devices, and what
 * each unmet factor does to the device's level (Low, Medium or AlwaysDeny). Trust scoring
 * (src/lib/trust) reads these; this file only says what a valid profile is.
 *
 * ```yaml
 * apiVersion: causeway/v1
 * kind: TrustProfile
 * metadata: {name: laptops}
 * spec:
 *   appliesTo: {platforms: [linux, macos, windows], ownership: [], groups: []}   # empty = any
 *   staleAfter: 15m              # 1m to 7d; a device silent for longer is AlwaysDeny
 *   factors:
 *     - {type: diskEncryption, effect: Medium}
 *     - {type: firewall, effect: Low}
 *     - {type: osVersion, minimum: {macos: "14.0", windows: "10.0.19045", linux: {ubuntu: "22.04"}}, effect: Low}
 *     - {type: osUpdates, automatic: true, maxPending: 10, effect: Low}
 *     - {type: screenLock, effect: Low}
 *     - {type: fileExists, path: /etc/corp/agent.conf, effect: AlwaysDeny}
 *     - {type: processRunning, name: falcon-sensor, effect: Low}
 *     - {type: mdmPresent, effect: Medium}
 *     - {type: mdmCompliant, effect: AlwaysDeny}
 *     - {type: crowdstrikeScore, minimum: 70, effect: Medium}
 * ```
 *
 * Choices:
 * - `osVersion.minimum` is per platform; a platform without a minimum is not checked. Linux
 *   versions differ by distribution, so `linux` takes either one version (compared with
 *   `VERSION_ID` of /etc/os-release whatever the distribution) or a map from the os-release `ID`
 *   (`ubuntu`, `debian`, `fedora`, …) to a version. Versions are dotted numbers (`14.4.1`,
 *   `10.0.19045`), compared number by number.
 * - `osUpdates` checks that automatic updates are on (`automatic`, default true) and/or that at
 *   most `maxPending` updates wait; at least one of the two must be asked for.
 * - `staleAfter` is kept as written (so `get -o yaml` reads back the same); `staleAfterMs` turns it
 *   into milliseconds.
 *
 * This file imports nothing from schemas.ts (schemas.ts imports it: a cycle would leave the
 * constants undefined while this module evaluates); the platform and ownership lists are repeated
 * here and a test holds them equal to DEVICE_PLATFORMS and DEVICE_OWNERSHIP.
 */
import { z } from 'zod';

export const TRUST_PROFILE_PLATFORMS = ['macos', 'linux', 'windows', 'ios', 'android'] as const;
export const TRUST_PROFILE_OWNERSHIP = ['corporate-dedicated', 'corporate-shared', 'employee-owned', 'other'] as const;

/** What an unmet factor does: the device's level is at most this. */
export const FACTOR_EFFECTS = ['Low', 'Medium', 'AlwaysDeny'] as const;
export type FactorEffect = (typeof FACTOR_EFFECTS)[number];

export const FACTOR_TYPES = [
  'diskEncryption',
  'firewall',
  'osVersion',
  'osUpdates',
  'screenLock',
  'fileExists',
  'processRunning',
  'mdmPresent',
  'mdmCompliant',
  'crowdstrikeScore',
] as const;
export type FactorType = (typeof FACTOR_TYPES)[number];

// ---------------------------------------------------------------------------------------------
// Durations

const DURATION_PATTERN = /^(?:(\d{1,3})d)?(?:(\d{1,4})h)?(?:(\d{1,5})m)?(?:(\d{1,6})s)?$/;

export const MIN_STALE_AFTER_MS = 60_000;
export const MAX_STALE_AFTER_MS = 7 * 86_400_000;
export const DEFAULT_STALE_AFTER = '15m';

/** `15m`, `1h30m`, `2d`, `90s` in milliseconds; undefined for anything else (including ''). */
export function staleAfterMs(text: string): number | undefined {
  if (text === '') return undefined;
  const m = DURATION_PATTERN.exec(text);
  if (m === null) return undefined;
  const [, d, h, min, s] = m;
  return (((Number(d ?? 0) * 24 + Number(h ?? 0)) * 60 + Number(min ?? 0)) * 60 + Number(s ?? 0)) * 1000;
}

const staleAfter = z.string().superRefine((value, ctx) => {
  const ms = staleAfterMs(value);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', input: value, message: 'must be a duration such as 15m, 1h, 1h30m or 2d' });
  } else if (ms < MIN_STALE_AFTER_MS || ms > MAX_STALE_AFTER_MS) {
    ctx.addIssue({ code: 'custom', input: value, message: 'must be between 1m and 7d' });
  }
});

// ---------------------------------------------------------------------------------------------
// Versions

/** Dotted numbers, 1 to 6 parts: `14`, `14.4.1`, `10.0.19045`. */
export const VERSION_PATTERN = /^\d{1,9}(\.\d{1,9}){0,5}$/;

const version = z.string().regex(VERSION_PATTERN, 'must be a version of dotted numbers such as 14.4.1 or 10.0.19045');

/** An os-release `ID`: lower-case letters, digits and `._-`. */
const distributionId = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be an os-release ID such as ubuntu, debian or fedora');

const osMinimum = z
  .strictObject({
    macos: version.optional(),
    windows: version.optional(),
    ios: version.optional(),
    android: version.optional(),
    /** One version for every distribution, or one per os-release ID. */
    linux: z.union([version, z.record(distributionId, version)], 'must be a version, or a map from distribution (os-release ID) to version').optional(),
  })
  .superRefine((value, ctx) => {
    if (Object.values(value).every((v) => v === undefined)) {
      ctx.addIssue({ code: 'custom', input: value, message: 'give a minimum for at least one platform (macos, windows, linux, ios, android)' });
    }
  });

// ---------------------------------------------------------------------------------------------
// Factors

const effect = z.enum(FACTOR_EFFECTS, 'must be Low, Medium or AlwaysDeny (the level an unmet factor allows at most)');

/** An absolute path on any platform: `/etc/x`, `C:\x`, `C:/x`; no NUL, no `..` segment. */
const absolutePath = z
  .string()
  .max(1024, 'must be at most 1024 characters')
  .superRefine((value, ctx) => {
    const absolute = value.startsWith('/') || /^[A-Za-z]:[\\/]/.test(value);
    if (!absolute || value.includes('\0') || value.split(/[\\/]/).includes('..')) {
      ctx.addIssue({ code: 'custom', input: value, message: 'must be an absolute path such as /etc/corp/agent.conf or C:\\ProgramData\\Corp\\agent.conf, without ..' });
    }
  });

/** A process name as the OS lists it (`falcon-sensor`, `MsSense.exe`): no path separators. */
const processName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,127}$/, 'must be a process name such as falcon-sensor (letters, digits, space . _ + -; no path)');

const simple = <T extends string>(type: T) => z.strictObject({ type: z.literal(type), effect });

export const trustFactorSchema = z.discriminatedUnion(
  'type',
  [
    simple('diskEncryption'),
    simple('firewall'),
    z.strictObject({ type: z.literal('osVersion'), minimum: osMinimum, effect }),
    z
      .strictObject({
        type: z.literal('osUpdates'),
        /** Automatic updates must be on. */
        automatic: z.boolean().default(true),
        /** At most this many updates may wait. */
        maxPending: z.number().int('must be a whole number').min(0, 'must be 0 or more').max(10_000, 'must be at most 10000').optional(),
        effect,
      })
      .superRefine((value, ctx) => {
        if (!value.automatic && value.maxPending === undefined) {
          ctx.addIssue({ code: 'custom', input: value, message: 'checks nothing: set automatic: true or maxPending' });
        }
      }),
    simple('screenLock'),
    z.strictObject({ type: z.literal('fileExists'), path: absolutePath, effect }),
    z.strictObject({ type: z.literal('processRunning'), name: processName, effect }),
    simple('mdmPresent'),
    simple('mdmCompliant'),
    z.strictObject({
      type: z.literal('crowdstrikeScore'),
      /** The lowest acceptable CrowdStrike Zero Trust Assessment overall score (0 to 100). */
      minimum: z.number().int('must be a whole number').min(0, 'must be between 0 and 100').max(100, 'must be between 0 and 100'),
      effect,
    }),
  ],
  { error: `must have a type: one of ${FACTOR_TYPES.join(', ')}` },
);

export type TrustFactorSpec = z.output<typeof trustFactorSchema>;

export const trustProfileSpec = z.strictObject({
  /** Every listed attribute must hold; an empty list places no requirement. */
  appliesTo: z
    .strictObject({
      platforms: z.array(z.enum(TRUST_PROFILE_PLATFORMS)).default([]),
      ownership: z.array(z.enum(TRUST_PROFILE_OWNERSHIP)).default([]),
      /** The device's user is in any of these groups. */
      groups: z.array(z.string().trim().min(1, 'must not be empty')).default([]),
    })
    .prefault({}),
  staleAfter: staleAfter.default(DEFAULT_STALE_AFTER),
  /** No factors: every device it applies to is High while it keeps reporting. */
  factors: z.array(trustFactorSchema).max(100, 'must list at most 100 factors').default([]),
});

/** The `spec` of a TrustProfile, defaults applied. */
export type TrustProfileSpecBody = z.output<typeof trustProfileSpec>;
