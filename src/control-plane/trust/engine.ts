/**
 * The trust engine (issue 5): keeps every device's `trust` verdict current.
 *
 * A verdict is src/lib/trust's scoreDevice over
 * - the TrustProfile specs that apply (platform, ownership, the user's groups),
 * - the device's last verified posture report (`device.posture`, `device.postureAt`) merged with what
 *   the configured device managers say (`device.mdm`: MDM presence and compliance, CrowdStrike score),
 * - the device's trust overrides that have not expired (the strictest cap wins).
 *
 * It is written to `device.trust` (actor `system:trust`) only when the level, the reasons or the
 * explanation change, so the config stream, and with it every access tier, moves only on real changes.
 *
 * When it rescores:
 * - `rescore(id)` on demand (a registration, a posture report, an override, the admin's button);
 * - every device when a TrustProfile or DeviceManager changes, a user's devices when the user changes,
 *   and a device the engine scored before when someone else changes it (store.watch + changesSince);
 * - at the earliest moment a verdict would change by time alone: a device's report going stale
 *   (DT-05: a silent device is AlwaysDeny on time, without any event) or an override expiring;
 * - `onMdmUpdate`, for what the device-manager sync learns (each state is stored on the devices with
 *   that serial, then those devices are rescored).
 *
 * Stored values are read defensively: a malformed posture value, MDM state, report time or override
 * is unknown, and unknown is unmet (DT-07); scoreDevice never throws.
 */
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { errorCode, errorMessage, UserError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import { coalesce, TaskSet } from '../../lib/tasks.ts';
import { mergeFactorValues, scoreDevice } from '../../lib/trust/index.ts';
import type { FactorResult, FactorValues, TrustLevel, TrustOverride, TrustProfileInput } from '../../lib/trust/index.ts';
import type { TrustProfileSpecBody } from '../../lib/spec/trust-profile.ts';
import type { LookupResult, MdmUpdate, Timers } from '../device-managers/index.ts';
import { DEVICE_KIND, USER_KIND } from '../store/index.ts';
import type { Change, DeviceRecord, Store, StoredObject, UserRecord } from '../store/index.ts';

export const TRUST_ACTOR = 'system:trust';
export const TRUST_PROFILE_KIND = 'TrustProfile';
export const DEVICE_MANAGER_KIND = 'DeviceManager';

/** The verdict kept in `device.trust` (and answered by rescore). */
export interface DeviceTrust {
  level: TrustLevel;
  /** Reason codes, most restrictive first (what the access tiers log). */
  reasons: string[];
  /** One paragraph for people: the level, what failed, what to do. */
  explanation: string;
  /** Every factor checked, met or not, with remedies for the unmet ones. */
  factors: FactorResult[];
  /** The profile that set the level; null when none applies. */
  profile: string | null;
  /** Every profile that applies. */
  profiles: string[];
  /** What device managers say; null when none knows (or none is configured). */
  mdmPresent: boolean | null;
  mdmCompliant: boolean | null;
  stale: boolean;
  /** When this verdict was computed. */
  scoredAt: string;
  /**
   * The first moment the device counts as stale unless it reports again (null: it is stale or never
   * reported). Written with the verdict, so it may be older than the latest report: ask rescore for
   * the current one.
   */
  staleAt: string | null;
}

export interface TrustEngineMdm {
  lookupNow(serial: string, options?: { fresh?: boolean }): Promise<LookupResult[]>;
}

export interface TrustEngineDeps {
  store: Store;
  clock?: Clock;
  logger?: Logger;
  /** The device-manager sync, for lookupNow (may be given later through a getter). */
  mdm?: TrustEngineMdm;
  /** Timers for the stale and expiry schedule; real (unref'd) timers by default. */
  timers?: Timers;
  /** The longest single wait of the schedule (it re-checks then); default 1 h. */
  maxTimerMs?: number;
}

export interface TrustEngine {
  /** Scores the device now, writes `device.trust` if the verdict changed, and answers the verdict. NOT_FOUND for an unknown device. */
  rescore(deviceId: string): Promise<DeviceTrust>;
  /** Scores every device. */
  rescoreAll(): Promise<void>;
  /** Stores what a device manager said on the devices with those serials and rescores them. */
  onMdmUpdate(update: MdmUpdate): Promise<void>;
  /** Asks the device managers about a serial now; [] without a sync. */
  lookupNow(serial: string, options?: { fresh?: boolean }): Promise<LookupResult[]>;
  /** Scores every device, then follows store changes and the schedule. */
  start(): void;
  /** Resolves when no rescoring started so far is running. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

const realTimers: Timers = {
  setTimeout: (callback, ms) => {
    const handle = setTimeout(callback, ms);
    handle.unref();
    return handle;
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

const DEFAULT_MAX_TIMER_MS = 3_600_000;
const CHANGE_PAGE = 1000;
const WRITE_ATTEMPTS = 3;

/** What one scoring pass reads once and shares between devices. */
interface Context {
  profiles: TrustProfileInput[];
  managers: Set<string>;
  users: Map<string, UserRecord | undefined>;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function parseTime(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * The device managers' word on a device, from the states of managers that are still configured:
 * present when any manages it; non-compliant when any managing one says so (the strictest wins),
 * compliant when one says so and none says otherwise; the lowest CrowdStrike score. Malformed
 * entries are unknown.
 */
export function managedFactors(mdm: unknown, managers: ReadonlySet<string>): Pick<FactorValues, 'mdmPresent' | 'mdmCompliant' | 'crowdstrikeScore'> {
  const out: Pick<FactorValues, 'mdmPresent' | 'mdmCompliant' | 'crowdstrikeScore'> = {};
  if (!isRecord(mdm)) return out;
  let present: boolean | undefined;
  let compliant: boolean | undefined;
  let score: number | undefined;
  for (const [manager, state] of Object.entries(mdm)) {
    if (!managers.has(manager) || !isRecord(state)) continue;
    if (typeof state.managed !== 'boolean') continue;
    present = present === true || state.managed;
    if (!state.managed) continue;
    if (state.compliant === false) compliant = false;
    else if (state.compliant === true && compliant === undefined) compliant = true;
    if (typeof state.source === 'string' && state.source.startsWith('crowdstrike:') && typeof state.score === 'number' && Number.isFinite(state.score)) {
      score = score === undefined ? state.score : Math.min(score, state.score);
    }
  }
  if (present !== undefined) out.mdmPresent = present;
  if (compliant !== undefined) out.mdmCompliant = compliant;
  if (score !== undefined) out.crowdstrikeScore = score;
  return out;
}

/** The overrides that still apply at `now` (an unreadable expiry never expires: the cap stays). */
function activeOverrides(value: unknown, now: number): { active: TrustOverride[]; nextExpiry: number | undefined } {
  const list = Array.isArray(value) ? value : value === null || value === undefined ? [] : [value];
  const active: TrustOverride[] = [];
  let nextExpiry: number | undefined;
  for (const item of list) {
    const expiresAt = isRecord(item) ? item.expiresAt : undefined;
    const expiry = expiresAt === undefined || expiresAt === null ? undefined : parseTime(expiresAt);
    if (expiry !== undefined && expiry <= now) continue;
    if (expiry !== undefined) nextExpiry = nextExpiry === undefined ? expiry : Math.min(nextExpiry, expiry);
    active.push(item as TrustOverride);
  }
  return { active, nextExpiry };
}

function groupsKey(groups: unknown): string {
  return JSON.stringify(Array.isArray(groups) ? groups.filter((g) => typeof g === 'string').sort() : []);
}

function sameVerdict(stored: unknown, next: DeviceTrust): boolean {
  if (!isRecord(stored)) return false;
  return stored.level === next.level && stored.explanation === next.explanation && JSON.stringify(stored.reasons) === JSON.stringify(next.reasons);
}

export function createTrustEngine(deps: TrustEngineDeps): TrustEngine {
  const { store } = deps;
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? silentLogger();
  const timers = deps.timers ?? realTimers;
  const maxTimerMs = deps.maxTimerMs ?? DEFAULT_MAX_TIMER_MS;

  /** When each device's verdict would next change by time alone. */
  const due = new Map<string, number>();
  /** The groups of the users whose devices this engine scored: a user change rescores only when they differ. */
  const knownGroups = new Map<string, string>();
  /** One rescoring per device at a time, in order. */
  const locks = new Map<string, Promise<unknown>>();
  const work = new TaskSet();
  let timer: unknown;
  let timerAt: number | undefined;
  let unwatch: (() => void) | undefined;
  let revision: number | undefined;
  let started = false;
  let closed = false;

  const track = <T>(promise: Promise<T>): Promise<T> => work.track(promise);

  async function context(): Promise<Context> {
    const [profiles, managers] = await Promise.all([store.listObjects(TRUST_PROFILE_KIND), store.listObjects(DEVICE_MANAGER_KIND)]);
    return {
      profiles: profiles.map((o: StoredObject) => ({ metadata: { name: o.name }, spec: o.spec as TrustProfileSpecBody })),
      managers: new Set(managers.map((o) => o.name)),
      users: new Map(),
    };
  }

  async function userOf(ctx: Context, userId: string): Promise<UserRecord | undefined> {
    if (!ctx.users.has(userId)) {
      const user = await store.getUser(userId);
      ctx.users.set(userId, user);
      if (user !== undefined) knownGroups.set(userId, groupsKey(user.groups));
    }
    return ctx.users.get(userId);
  }

  /** The verdict for a device as stored now, and when it would next change by time alone. */
  async function score(ctx: Context, device: DeviceRecord): Promise<{ trust: DeviceTrust; nextAt: number | undefined }> {
    const now = clock.now();
    const user = await userOf(ctx, device.userId);
    const posture: unknown = device.posture;
    const managed = managedFactors(device.mdm, ctx.managers);
    // FactorValues as stored; scoreDevice reads every value defensively (DT-07).
    const reported: FactorValues | undefined = isRecord(posture) ? posture : undefined;
    const factors = mergeFactorValues(reported, managed);
    const lastReportAt = parseTime(device.postureAt);
    const { active, nextExpiry } = activeOverrides(device.trustOverrides, now);
    const result = scoreDevice({
      profiles: ctx.profiles,
      device: {
        platform: device.platform,
        ownership: device.ownership,
        groups: user?.groups ?? [],
        ...(lastReportAt === undefined ? {} : { lastReportAt }),
      },
      factors,
      overrides: active,
      now,
    });
    const staleAt = !result.stale && lastReportAt !== undefined ? lastReportAt + result.staleAfterMs + 1 : undefined;
    const trust: DeviceTrust = {
      level: result.level,
      reasons: result.reasons,
      explanation: result.explanation,
      factors: result.factors,
      profile: result.profile ?? null,
      profiles: result.profiles,
      mdmPresent: managed.mdmPresent ?? null,
      mdmCompliant: managed.mdmCompliant ?? null,
      stale: result.stale,
      scoredAt: new Date(now).toISOString(),
      staleAt: staleAt === undefined ? null : new Date(staleAt).toISOString(),
    };
    const candidates = [staleAt, nextExpiry].filter((t): t is number => t !== undefined);
    return { trust, nextAt: candidates.length === 0 ? undefined : Math.min(...candidates) };
  }

  /** Scores and writes one device (serialised per device); undefined when it no longer exists. */
  function rescoreOne(deviceId: string, shared?: Context): Promise<DeviceTrust | undefined> {
    const previous = locks.get(deviceId) ?? Promise.resolve();
    const run = previous.then(async () => {
      const ctx = shared ?? (await context());
      for (let attempt = 1; ; attempt++) {
        const device = await store.getDevice(deviceId);
        if (device === undefined) {
          due.delete(deviceId);
          return undefined;
        }
        const { trust, nextAt } = await score(ctx, device);
        if (nextAt === undefined) due.delete(deviceId);
        else due.set(deviceId, nextAt);
        reschedule();
        if (sameVerdict(device.trust, trust)) return trust;
        try {
          await store.updateDevice(deviceId, { trust: { ...trust } }, { actor: TRUST_ACTOR, expectedVersion: device.version });
          logger.info({ device: deviceId, level: trust.level, reasons: trust.reasons }, 'device trust changed');
          return trust;
        } catch (err) {
          // Someone changed the device meanwhile: score what is there now.
          if (errorCode(err) === 'VERSION_CONFLICT' && attempt < WRITE_ATTEMPTS) continue;
          if (errorCode(err) === 'NOT_FOUND') {
            due.delete(deviceId);
            return undefined;
          }
          throw err;
        }
      }
    });
    const settled = run.catch(() => undefined);
    locks.set(deviceId, settled);
    void settled.then(() => {
      if (locks.get(deviceId) === settled) locks.delete(deviceId);
    });
    return track(run);
  }

  async function rescoreMany(ids: Iterable<string>): Promise<void> {
    const ctx = await context();
    for (const id of ids) {
      if (closed) return;
      try {
        await rescoreOne(id, ctx);
      } catch (err) {
        logger.error({ device: id, err: errorMessage(err) }, 'scoring a device failed');
      }
    }
  }

  async function rescoreAll(): Promise<void> {
    const devices = await store.listDevices();
    await rescoreMany(devices.map((d) => d.id));
  }

  // --- the schedule ------------------------------------------------------------------------------

  function reschedule(): void {
    if (closed || !started) return;
    let next: number | undefined;
    for (const at of due.values()) if (next === undefined || at < next) next = at;
    if (next === timerAt) return;
    if (timer !== undefined) timers.clearTimeout(timer);
    timer = undefined;
    timerAt = next;
    if (next === undefined) return;
    const delay = Math.min(Math.max(0, next - clock.now()), maxTimerMs);
    timer = timers.setTimeout(() => {
      timer = undefined;
      timerAt = undefined;
      void track(runDue());
    }, delay);
  }

  async function runDue(): Promise<void> {
    if (closed) return;
    const now = clock.now();
    const ids = [...due.entries()].filter(([, at]) => at <= now).map(([id]) => id);
    for (const id of ids) due.delete(id);
    if (ids.length > 0) await rescoreMany(ids);
    reschedule();
  }

  // --- store changes -----------------------------------------------------------------------------

  const followChanges = coalesce(async () => {
    try {
      await processChanges();
    } catch (err) {
      if (!closed) logger.error({ err: errorMessage(err) }, 'following store changes for trust scoring failed; will retry on the next change');
    }
  }, () => closed);

  function onRevision(): void {
    void track(followChanges.run());
  }

  async function processChanges(): Promise<void> {
    if (revision === undefined) return;
    for (;;) {
      const changes = await store.changesSince(revision, CHANGE_PAGE);
      if (changes.length === 0) return;
      let all = false;
      const users = new Set<string>();
      const devices = new Set<string>();
      for (const change of changes) classify(change, users, devices, () => (all = true));
      const last = changes.at(-1);
      if (all) {
        await rescoreAll();
      } else {
        for (const userId of users) for (const device of await store.listDevices({ userId })) devices.add(device.id);
        if (devices.size > 0) await rescoreMany(devices);
      }
      if (last !== undefined) revision = last.revision;
      if (changes.length < CHANGE_PAGE) return;
    }
  }

  function classify(change: Change, users: Set<string>, devices: Set<string>, everything: () => void): void {
    if (change.kind === TRUST_PROFILE_KIND || change.kind === DEVICE_MANAGER_KIND) {
      everything();
    } else if (change.kind === USER_KIND) {
      // Only groups matter to trust, and only for users whose devices this engine scored (disabling a
      // user is the access tiers' business, not a trust change).
      const known = knownGroups.get(change.name);
      if (change.op === 'delete' || !isRecord(change.object)) {
        knownGroups.delete(change.name);
      } else if (known !== undefined) {
        const groups = groupsKey((change.object as UserRecord).groups);
        if (groups !== known) users.add(change.name);
      }
    } else if (change.kind === DEVICE_KIND) {
      if (change.op === 'delete') {
        due.delete(change.name);
      } else if (change.actor !== TRUST_ACTOR && isRecord(change.object) && typeof (change.object as DeviceRecord).trust?.scoredAt === 'string') {
        // Someone else changed a device this engine scores (an override, its ownership…).
        devices.add(change.name);
      }
    }
  }

  // --- MDM ---------------------------------------------------------------------------------------

  async function onMdmUpdate(update: MdmUpdate): Promise<void> {
    const touched = new Set<string>();
    const seen = new Set<string>();
    const record = async (serial: string, state: { managed: boolean; compliant: boolean | null; score?: number }): Promise<void> => {
      for (const device of await store.findDevicesBySerial(serial)) {
        seen.add(device.id);
        try {
          await store.recordMdmState(device.id, update.manager, { ...state, at: update.at, source: update.source });
          touched.add(device.id);
        } catch (err) {
          if (errorCode(err) !== 'NOT_FOUND') throw err;
        }
      }
    };
    for (const state of update.states) {
      await record(state.serial, { managed: state.managed, compliant: state.compliant ?? null, ...(state.score === undefined ? {} : { score: state.score }) });
    }
    for (const serial of update.missing) await record(serial, { managed: false, compliant: null });
    if (update.complete) {
      // A full listing: registered devices it does not hold are not managed by it.
      for (const device of await store.listDevices()) {
        if (device.serial === null || seen.has(device.id)) continue;
        await record(device.serial, { managed: false, compliant: null });
      }
    }
    if (touched.size > 0) await track(rescoreMany(touched));
  }

  return {
    async rescore(deviceId: string): Promise<DeviceTrust> {
      const trust = await rescoreOne(deviceId);
      if (trust === undefined) throw new UserError('NOT_FOUND', `device ${deviceId} does not exist`);
      return trust;
    },
    rescoreAll: () => track(rescoreAll()),
    onMdmUpdate: (update) => track(onMdmUpdate(update)),
    async lookupNow(serial, options) {
      return deps.mdm === undefined ? [] : deps.mdm.lookupNow(serial, options);
    },
    start(): void {
      if (started || closed) return;
      started = true;
      void track(
        (async () => {
          try {
            revision = await store.currentRevision();
            await rescoreAll();
          } catch (err) {
            if (!closed) logger.error({ err: errorMessage(err) }, 'scoring every device at start failed');
          }
          if (closed) return;
          reschedule();
          unwatch = store.watch(onRevision);
        })(),
      );
    },
    idle: () => work.idle(),
    async close(): Promise<void> {
      closed = true;
      unwatch?.();
      unwatch = undefined;
      if (timer !== undefined) timers.clearTimeout(timer);
      timer = undefined;
      await work.idle();
    },
  };
}
