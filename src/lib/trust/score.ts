/**
 * Trust scoring (DESIGN §2, issue 5): trust profiles + a device's observed factors + overrides →
 * a level (High, Medium, Low or AlwaysDeny) with its explanation.
 *
 * Rules:
 * - Which profiles apply: EVERY profile whose `appliesTo` matches the device (platforms,
 *   ownership, the user's groups; an empty list matches anything), and the result is the
 *   strictest over all their factors. Not "the most specific one": with the union, adding a
 *   profile can only add requirements, never relax what another profile demands, the order of
 *   profiles does not matter, and no one has to reason about ties in specificity. An admin who
 *   wants laxer rules for some devices writes profiles whose `appliesTo` do not overlap.
 * - The level is the most restrictive effect among unmet factors, High when all are met.
 * - A device no profile applies to is `Low` (option `unprofiledLevel`), reason `no-trust-profile`:
 *   nothing vouches for it, yet it is registered and reporting. A catch-all profile without factors
 *   makes such devices High.
 * - Stale (DT-05): no report yet, or the last one older than the shortest `staleAfter` among the
 *   applying profiles (15m with none) → AlwaysDeny, reason `stale`. A malformed `lastReportAt` is
 *   stale too.
 * - Overrides cap the level (the strictest wins); each one that caps adds `override-<source>` to the
 *   reasons and its reason text to the explanation. A malformed override caps at AlwaysDeny.
 * - DT-07: missing, negative, NaN or malformed factor values count as unmet (reason `<factor>-unknown`).
 *   A factor that does not apply to the device's platform (osVersion without a minimum for it,
 *   screenLock where no desktop session exists) is met.
 *
 * Reason codes are the `trustReasons` of the policy module's DeviceState (`firewall-off`): lower
 * case, hyphens, no colon, at most 64 characters; most restrictive effect first, without repeats.
 * Never throws, whatever the shape of its input.
 */
import { FACTOR_EFFECTS, FACTOR_TYPES, staleAfterMs } from '../spec/trust-profile.ts';
import type { FactorEffect, FactorType, TrustFactorSpec, TrustProfileSpecBody } from '../spec/trust-profile.ts';
import { compareVersions, field, readBoolean, readCheck, readCount, readDistribution, readVersion } from './factor-values.ts';
import type { FactorValues } from './factor-values.ts';
import { remedy, unknownRemedy } from './remedies.ts';
import type { RemedyPlatform } from './remedies.ts';

export type TrustLevel = 'High' | 'Medium' | 'Low' | 'AlwaysDeny';

/** A profile as stored: the spec document, or anything with its name and spec. */
export interface TrustProfileInput {
  metadata: { name: string };
  spec: TrustProfileSpecBody;
}

export interface DeviceFacts {
  platform?: string;
  ownership?: string;
  /** The groups of the device's user. */
  groups?: readonly string[];
  /** When the last accepted posture report arrived (ms since the epoch); undefined: never. */
  lastReportAt?: number;
}

export interface TrustOverride {
  /** The most this source allows. */
  maxLevel: TrustLevel;
  /** Shown to people, e.g. "incident 4711: laptop reported stolen". */
  reason: string;
  /** Who set it, e.g. `crowdstrike`, `admin-alice`, `siem`. */
  source: string;
}

export interface ScoreInput {
  profiles: readonly TrustProfileInput[];
  device: DeviceFacts;
  factors: FactorValues;
  overrides?: readonly TrustOverride[];
  /** ms since the epoch (Clock.now()). */
  now: number;
  /** The level of a device no profile applies to (default Low). */
  unprofiledLevel?: TrustLevel;
  /** staleAfter when no profile applies (default 15m). */
  defaultStaleAfterMs?: number;
}

/** A JSON value describing what was observed; null when unknown. */
export type Observed = string | number | boolean | null;

export interface FactorResult {
  type: FactorType;
  /** The profile that asked for it. */
  profile: string;
  met: boolean;
  effect: FactorEffect;
  observed: Observed;
  /** What was required, in words (e.g. `>= 14.0`, `/etc/corp/agent.conf present`). */
  required: string;
  /** Unmet: the reason code (`firewall-off`, `firewall-unknown`). */
  reason?: string;
  /** Unmet: what the user can do. */
  remedy?: string;
}

export interface TrustScore {
  level: TrustLevel;
  /** The profile whose unmet factor set the level (the first applying one when none did); undefined when none applies. */
  profile: string | undefined;
  /** Every profile that applies. */
  profiles: string[];
  factors: FactorResult[];
  /** Reason codes, most restrictive first (see above). */
  reasons: string[];
  /** One paragraph for people: the level, what failed and what to do. */
  explanation: string;
  stale: boolean;
  staleAfterMs: number;
}

export const DEFAULT_STALE_AFTER_MS = 15 * 60_000;

const RANK: Record<TrustLevel, number> = { AlwaysDeny: 0, Low: 1, Medium: 2, High: 3 };
const BY_RANK: readonly TrustLevel[] = ['AlwaysDeny', 'Low', 'Medium', 'High'];

export function levelRank(level: TrustLevel): number {
  return RANK[level];
}

function isLevel(value: unknown): value is TrustLevel {
  return typeof value === 'string' && Object.hasOwn(RANK, value);
}

function isEffect(value: unknown): value is FactorEffect {
  return typeof value === 'string' && (FACTOR_EFFECTS as readonly string[]).includes(value);
}

function isFactor(value: unknown): value is TrustFactorSpec {
  const type = field(value, 'type');
  return typeof type === 'string' && (FACTOR_TYPES as readonly string[]).includes(type);
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** Does the profile apply to the device? Every non-empty list must hold. */
export function profileApplies(spec: unknown, device: DeviceFacts): boolean {
  const appliesTo = field(spec, 'appliesTo');
  const platforms = list(field(appliesTo, 'platforms'));
  const ownership = list(field(appliesTo, 'ownership'));
  const groups = list(field(appliesTo, 'groups'));
  if (platforms.length > 0 && !platforms.includes(device.platform)) return false;
  if (ownership.length > 0 && !ownership.includes(device.ownership)) return false;
  const deviceGroups = list(device.groups);
  if (groups.length > 0 && !groups.some((g) => typeof g === 'string' && deviceGroups.includes(g))) return false;
  return true;
}

function remedyPlatform(platform: unknown): RemedyPlatform {
  return platform === 'linux' || platform === 'macos' || platform === 'windows' ? platform : 'other';
}

/** Reason codes: lower case, digits and hyphens, at most 64 characters. */
function slug(text: string): string {
  const s = text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 55);
  return s === '' ? 'unnamed' : s;
}

/** The outcome of one factor check before it is labelled with its profile and effect. */
interface Check {
  met: boolean;
  observed: Observed;
  required: string;
  /** Unmet because the value is unknown or malformed. */
  unknown?: boolean;
  reason?: string;
  target?: string;
  updates?: 'automatic' | 'pending';
}

function booleanCheck(value: unknown, metReason: string, offReason: string, unknownReason: string, required: string): Check {
  const v = readBoolean(value);
  if (v === undefined) return { met: false, observed: null, required, unknown: true, reason: unknownReason };
  return v ? { met: true, observed: true, required, reason: metReason } : { met: false, observed: false, required, reason: offReason };
}

function checkFactor(factor: TrustFactorSpec, device: DeviceFacts, values: unknown): Check {
  switch (factor.type) {
    case 'diskEncryption':
      return booleanCheck(field(values, 'diskEncryption'), '', 'disk-not-encrypted', 'disk-encryption-unknown', 'encrypted');
    case 'firewall':
      return booleanCheck(field(values, 'firewall'), '', 'firewall-off', 'firewall-unknown', 'on');
    case 'mdmPresent':
      return booleanCheck(field(values, 'mdmPresent'), '', 'mdm-absent', 'mdm-unknown', 'enrolled');
    case 'mdmCompliant':
      return booleanCheck(field(values, 'mdmCompliant'), '', 'mdm-noncompliant', 'mdm-compliance-unknown', 'compliant');
    case 'screenLock': {
      const value = field(values, 'screenLock');
      if (value === 'not-applicable') return { met: true, observed: 'not-applicable', required: 'on where a desktop session exists' };
      return booleanCheck(value, '', 'screen-lock-off', 'screen-lock-unknown', 'on where a desktop session exists');
    }
    case 'osVersion':
      return osVersionCheck(factor.minimum, device, values);
    case 'osUpdates':
      return osUpdatesCheck(factor, values);
    case 'fileExists': {
      const check = booleanCheck(readCheck(field(values, 'files'), factor.path), '', 'file-missing', 'file-unknown', `${factor.path} present`);
      return { ...check, target: factor.path };
    }
    case 'processRunning': {
      const check = booleanCheck(readCheck(field(values, 'processes'), factor.name), '', 'process-not-running', 'process-unknown', `${factor.name} running`);
      return { ...check, target: factor.name };
    }
    case 'crowdstrikeScore': {
      const required = `>= ${factor.minimum}`;
      const score = readCount(field(values, 'crowdstrikeScore'), 100);
      if (score === undefined) return { met: false, observed: null, required, unknown: true, reason: 'crowdstrike-score-unknown', target: String(factor.minimum) };
      return score >= factor.minimum ? { met: true, observed: score, required } : { met: false, observed: score, required, reason: 'crowdstrike-score-low', target: String(factor.minimum) };
    }
  }
}

function osVersionCheck(minimum: Extract<TrustFactorSpec, { type: 'osVersion' }>['minimum'], device: DeviceFacts, values: unknown): Check {
  const platform = device.platform;
  let wanted: unknown = typeof platform === 'string' && Object.hasOwn(minimum, platform) ? (minimum as Record<string, unknown>)[platform] : undefined;
  const rawVersion = field(values, 'osVersion');
  const observed: Observed = typeof rawVersion === 'string' ? rawVersion.slice(0, 64) : null;
  if (platform === 'linux' && wanted !== undefined && typeof wanted === 'object' && wanted !== null) {
    const distribution = readDistribution(field(values, 'osDistribution'));
    if (distribution === undefined) return { met: false, observed, required: 'a known Linux distribution', unknown: true, reason: 'os-version-unknown', target: 'the required version' };
    wanted = Object.hasOwn(wanted, distribution) ? (wanted as Record<string, unknown>)[distribution] : undefined;
    if (wanted === undefined) return { met: true, observed: `${distribution} ${observed ?? ''}`.trim(), required: `no minimum for ${distribution}` };
  }
  if (typeof wanted !== 'string') return { met: true, observed, required: `no minimum for ${typeof platform === 'string' ? platform : 'this platform'}` };
  const required = `>= ${wanted}`;
  const want = readVersion(wanted);
  const have = readVersion(rawVersion);
  if (want === undefined || have === undefined) return { met: false, observed, required, unknown: true, reason: 'os-version-unknown', target: wanted };
  return compareVersions(have, want) >= 0 ? { met: true, observed, required } : { met: false, observed, required, reason: 'os-outdated', target: wanted };
}

function osUpdatesCheck(factor: Extract<TrustFactorSpec, { type: 'osUpdates' }>, values: unknown): Check {
  const parts: string[] = [];
  if (factor.automatic) parts.push('automatic');
  if (factor.maxPending !== undefined) parts.push(`at most ${factor.maxPending} pending`);
  const required = parts.join(', ');
  const automatic = readBoolean(field(values, 'updatesAutomatic'));
  const pending = readCount(field(values, 'updatesPending'));
  const observedParts: string[] = [];
  if (factor.automatic) observedParts.push(automatic === undefined ? 'automatic unknown' : automatic ? 'automatic' : 'not automatic');
  if (factor.maxPending !== undefined) observedParts.push(pending === undefined ? 'pending unknown' : `${pending} pending`);
  const observed = observedParts.join(', ');
  if (factor.automatic && automatic === undefined) return { met: false, observed, required, unknown: true, reason: 'updates-unknown', updates: 'automatic' };
  if (factor.maxPending !== undefined && (pending === undefined || !Number.isInteger(pending))) return { met: false, observed, required, unknown: true, reason: 'updates-unknown', updates: 'pending' };
  if (factor.automatic && automatic === false) return { met: false, observed, required, reason: 'updates-not-automatic', updates: 'automatic' };
  if (factor.maxPending !== undefined && pending !== undefined && pending > factor.maxPending) return { met: false, observed, required, reason: 'updates-pending', updates: 'pending' };
  return { met: true, observed, required };
}

function formatAge(ms: number): string {
  if (ms < 120_000) return `${Math.round(ms / 1000)}s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)}m`;
  if (ms < 172_800_000) return `${Math.round(ms / 3_600_000)}h`;
  return `${Math.round(ms / 86_400_000)}d`;
}

const FACTOR_WORDS: Record<string, string> = {
  'disk-not-encrypted': 'the disk is not encrypted',
  'disk-encryption-unknown': 'disk encryption could not be checked',
  'firewall-off': 'the firewall is off',
  'firewall-unknown': 'the firewall could not be checked',
  'mdm-absent': 'the device is not enrolled in device management',
  'mdm-unknown': 'device management enrollment is unknown',
  'mdm-noncompliant': 'device management reports the device non-compliant',
  'mdm-compliance-unknown': 'device management compliance is unknown',
  'screen-lock-off': 'the screen lock is off',
  'screen-lock-unknown': 'the screen lock could not be checked',
  'os-outdated': 'the operating system is too old',
  'os-version-unknown': 'the operating system version could not be read',
  'updates-not-automatic': 'automatic updates are off',
  'updates-pending': 'too many updates are waiting',
  'updates-unknown': 'updates could not be checked',
  'file-missing': 'a required file is missing',
  'file-unknown': 'a required file could not be checked',
  'process-not-running': 'a required process is not running',
  'process-unknown': 'a required process could not be checked',
  'crowdstrike-score-low': 'the CrowdStrike score is too low',
  'crowdstrike-score-unknown': 'the CrowdStrike score is unknown',
};

/** Never throws. */
export function scoreDevice(input: ScoreInput): TrustScore {
  const device: DeviceFacts = input.device !== null && typeof input.device === 'object' ? input.device : {};
  const values: unknown = input.factors;
  const platform = remedyPlatform(device.platform);
  const applying = list(input.profiles).filter(
    (p): p is TrustProfileInput => p !== null && typeof p === 'object' && typeof field(field(p, 'metadata'), 'name') === 'string' && profileApplies(field(p, 'spec'), device),
  );

  // Factors.
  const results: FactorResult[] = [];
  let level: TrustLevel = 'High';
  let decidingProfile: string | undefined = applying[0]?.metadata.name;
  let invalidFactors = false;
  for (const profile of applying) {
    for (const item of list(field(profile.spec, 'factors'))) {
      if (!isFactor(item)) {
        // Never stored (the schema refuses it), but read defensively: an unreadable requirement denies.
        level = 'AlwaysDeny';
        decidingProfile = profile.metadata.name;
        invalidFactors = true;
        continue;
      }
      const factor = item;
      const effect: FactorEffect = isEffect(field(factor, 'effect')) ? factor.effect : 'AlwaysDeny';
      let check: Check;
      try {
        check = checkFactor(factor, device, values);
      } catch {
        // A factor spec that does not hold the shape the schema gives (never stored, but read defensively).
        check = { met: false, observed: null, required: 'a valid factor', unknown: true, reason: 'factor-invalid' };
      }
      if (typeof check.reason !== 'string' && !check.met) check.reason = 'factor-invalid';
      const result: FactorResult = { type: factor.type, profile: profile.metadata.name, met: check.met, effect, observed: check.observed, required: check.required };
      if (!check.met) {
        result.reason = check.reason;
        const context = { platform, target: check.target ?? check.required, updates: check.updates };
        result.remedy = check.unknown === true ? unknownRemedy(factor.type, context) : remedy(factor.type, context);
        if (RANK[effect] < RANK[level]) {
          level = effect;
          decidingProfile = profile.metadata.name;
        }
      }
      results.push(result);
    }
  }

  const reasons: string[] = [];
  const sentences: string[] = [];
  if (invalidFactors) {
    reasons.push('factor-invalid');
    sentences.push('a trust profile holds a factor that cannot be read, so the device is denied; an admin must fix the profile');
  }

  // No profile.
  if (applying.length === 0) {
    const cap = isLevel(input.unprofiledLevel) ? input.unprofiledLevel : 'Low';
    if (RANK[cap] < RANK[level]) level = cap;
    reasons.push('no-trust-profile');
    sentences.push(`no trust profile applies to this device, so it is at most ${cap}`);
  }

  // Staleness (DT-05).
  const profileStale = applying.map((p) => staleAfterMs(String(field(p.spec, 'staleAfter'))) ?? DEFAULT_STALE_AFTER_MS);
  const fallbackStale = typeof input.defaultStaleAfterMs === 'number' && input.defaultStaleAfterMs > 0 ? input.defaultStaleAfterMs : DEFAULT_STALE_AFTER_MS;
  const staleAfter = profileStale.length > 0 ? Math.min(...profileStale) : fallbackStale;
  const lastReportAt = device.lastReportAt;
  const age = typeof lastReportAt === 'number' && Number.isFinite(lastReportAt) && Number.isFinite(input.now) ? input.now - lastReportAt : undefined;
  const stale = age === undefined || age > staleAfter;
  if (stale) {
    level = 'AlwaysDeny';
    reasons.unshift('stale');
    sentences.unshift(
      age === undefined
        ? 'the device has not sent a posture report; start the Causeway client or run causeway device report'
        : `the last posture report is ${formatAge(age)} old (the limit is ${formatAge(staleAfter)}); start the Causeway client or run causeway device report`,
    );
  }

  // Overrides: the strictest wins.
  for (const override of list(input.overrides)) {
    const max: unknown = field(override, 'maxLevel');
    const cap: TrustLevel = isLevel(max) ? max : 'AlwaysDeny';
    const source = field(override, 'source');
    const why = field(override, 'reason');
    const sourceText = typeof source === 'string' && source !== '' ? source.slice(0, 64) : 'unnamed';
    if (RANK[cap] < RANK[level]) level = cap;
    if (cap !== 'High') {
      reasons.push(`override-${slug(sourceText)}`);
      sentences.push(`${sourceText} limits this device to ${cap}${typeof why === 'string' && why !== '' ? ` (${why.slice(0, 200)})` : ''}`);
    }
  }

  // Unmet factors, most restrictive effect first.
  const unmet = results.filter((r) => !r.met).sort((a, b) => RANK[a.effect] - RANK[b.effect]);
  for (const r of unmet) {
    if (r.reason !== undefined) reasons.push(r.reason);
    const words = r.reason !== undefined ? (FACTOR_WORDS[r.reason] ?? r.reason) : r.type;
    const what = r.type === 'fileExists' || r.type === 'processRunning' ? `${words} (${r.required})` : words;
    sentences.push(`${what} [${r.effect}]: ${r.remedy ?? ''}`);
  }

  const uniqueReasons = [...new Set(reasons)];
  const profileNames = applying.map((p) => p.metadata.name);
  let explanation = `Trust ${level}`;
  if (profileNames.length > 0) explanation += ` (profile${profileNames.length > 1 ? 's' : ''} ${profileNames.join(', ')})`;
  explanation += sentences.length === 0 ? ': every factor is met.' : `: ${sentences.join('; ')}.`;

  return {
    level: BY_RANK[RANK[level]] ?? 'AlwaysDeny',
    profile: decidingProfile,
    profiles: profileNames,
    factors: results,
    reasons: uniqueReasons,
    explanation,
    stale,
    staleAfterMs: staleAfter,
  };
}
