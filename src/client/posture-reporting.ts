/**
 * Periodic posture reports while `causeway proxy` runs (issue 5: "on login, every 5 minutes and on
 * demand"), until the background agent takes this over. Shortly after start, then every interval
 * (jittered a little so many clients do not report in lock-step), this machine's posture is collected
 * for the nonce's requirements, signed with the device key and sent (device.ts reportPosture).
 *
 * A refused or failed report is logged with its reason and tried again at the next interval; it never
 * stops the proxy. When a report moves the trust level so that a trust certificate is newly allowed
 * (back from AlwaysDeny or stale), `onTrustAllowed` runs at once (the proxy renews its trust certificate);
 * when it moves it so one is refused, that is logged (the access tiers cut the live sessions and the
 * renewal's own attempts are refused until a good report).
 *
 * close() clears the timer and aborts a report in flight. Nothing here reads files or the environment
 * other than through the DeviceContext; the clock and timers come in as options (tests move them).
 */
import type { Clock } from '../lib/clock.ts';
import { errorCode, errorMessage } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { FetchLike } from '../lib/session/index.ts';
import { reportPosture } from './device.ts';
import type { DeviceContext, TrustVerdict } from './device.ts';
import { unrefTimers } from './trust-renewal.ts';
import type { Timers } from './trust-renewal.ts';

export const DEFAULT_REPORT_INTERVAL_MS = 5 * 60_000;
/** The first report: this long after start (jittered too). */
export const DEFAULT_FIRST_REPORT_MS = 5_000;
/** Each wait is the interval ± this fraction of it. */
export const DEFAULT_REPORT_JITTER = 0.1;
export const MIN_REPORT_INTERVAL_MS = 10_000;

export interface PostureReportingOptions {
  ctx: DeviceContext;
  /** Schedules the reports (the report's own timestamp comes from ctx.clock). */
  clock: Clock;
  logger: Logger;
  timers?: Timers;
  /** Between reports; default 5 min, at least 10 s. */
  intervalMs?: number;
  /** From start to the first report; default 5 s. */
  firstDelayMs?: number;
  /** Each wait is multiplied by 1 ± jitter (uniform); default 0.1. 0 for none. */
  jitter?: number;
  /** A number in [0, 1); default Math.random. */
  random?: () => number;
  /** Runs when a report newly allows a trust certificate (the level left AlwaysDeny/stale/unscored, or the first report allows one). */
  onTrustAllowed?: (trust: TrustVerdict, first: boolean) => void | Promise<unknown>;
  /** Receives each report's result once it is handled (after onTrustAllowed). */
  onReport?: (result: PostureReportResult) => void;
}

export type PostureReportResult =
  | { ok: true; trust: TrustVerdict | null; allowed: boolean }
  | { ok: false; reason: string; message: string };

export interface PostureReporting {
  /** When the next report is due (epoch ms on the given clock); undefined once closed. */
  nextAt(): number | undefined;
  /** Reports now (and schedules the next one an interval later); joins a report already running. */
  reportNow(): Promise<PostureReportResult | undefined>;
  /** Clears the timer and aborts a report in flight; resolves once it has settled. */
  close(): Promise<void>;
}

/** Whether the server issues a trust certificate at this verdict (it refuses AlwaysDeny, stale and unscored devices). */
export function trustCertAllowed(trust: TrustVerdict | null | undefined): boolean {
  return trust !== null && trust !== undefined && typeof trust.level === 'string' && trust.level !== 'AlwaysDeny' && trust.stale !== true;
}

export function startPostureReporting(options: PostureReportingOptions): PostureReporting {
  const { ctx, clock } = options;
  const logger = options.logger.child({ component: 'posture-reporting' });
  const timers = options.timers ?? unrefTimers;
  const intervalMs = Math.max(MIN_REPORT_INTERVAL_MS, options.intervalMs ?? DEFAULT_REPORT_INTERVAL_MS);
  const firstDelayMs = Math.max(0, options.firstDelayMs ?? DEFAULT_FIRST_REPORT_MS);
  const jitter = Math.min(0.5, Math.max(0, options.jitter ?? DEFAULT_REPORT_JITTER));
  const random = options.random ?? Math.random;
  let handle: unknown;
  let due: number | undefined;
  let closed = false;
  let running: Promise<PostureReportResult | undefined> | undefined;
  let inFlight: AbortController | undefined;
  /** Whether the last accepted report allowed a trust certificate; undefined before the first. */
  let allowed: boolean | undefined;

  const jittered = (ms: number): number => Math.round(ms * (1 + jitter * (2 * random() - 1)));

  const schedule = (delayMs: number): void => {
    if (closed) return;
    if (handle !== undefined) timers.clearTimeout(handle);
    due = clock.now() + delayMs;
    handle = timers.setTimeout(() => {
      handle = undefined;
      void reportNow();
    }, delayMs);
  };

  /** The context with every API request tied to this report's abort signal. */
  const abortable = (signal: AbortSignal): DeviceContext => ({
    ...ctx,
    fetchFor: (caPem): FetchLike => {
      const inner = ctx.fetchFor(caPem);
      return (url, init = {}) => inner(url, { ...init, signal });
    },
  });

  const attempt = async (): Promise<PostureReportResult | undefined> => {
    const controller = new AbortController();
    inFlight = controller;
    let result: PostureReportResult;
    try {
      const state = await ctx.files.readState();
      const session = await ctx.session();
      if (state === undefined || state.server !== session.server) {
        result = { ok: false, reason: 'no-device', message: 'this machine has no device registered at the current server; run causeway login' };
      } else {
        const outcome = await reportPosture(abortable(controller.signal), state);
        result = { ok: true, trust: outcome.trust, allowed: trustCertAllowed(outcome.trust) };
      }
    } catch (err) {
      result = { ok: false, reason: errorCode(err) ?? 'error', message: errorMessage(err) };
    } finally {
      inFlight = undefined;
    }
    if (closed) return undefined;
    if (!result.ok) {
      logger.warn({ reason: result.reason }, `the posture report was not accepted: ${result.message}; trying again at the next interval`);
    } else {
      logger.info({ level: result.trust?.level ?? null, reasons: result.trust?.reasons ?? [] }, 'posture reported');
      const before = allowed;
      allowed = result.allowed;
      if (result.allowed && before !== true && result.trust !== null) {
        try {
          await options.onTrustAllowed?.(result.trust, before === undefined);
        } catch (err) {
          logger.warn({ reason: errorCode(err) ?? 'error' }, `after the posture report, the trust certificate could not be renewed: ${errorMessage(err)}`);
        }
      } else if (!result.allowed && before !== false) {
        logger.warn(
          { level: result.trust?.level ?? null, reasons: result.trust?.reasons ?? [] },
          `at this trust level no trust certificate is issued: ${result.trust?.explanation ?? 'the device is not scored'}; it is renewed after a report that allows one`,
        );
      }
    }
    schedule(jittered(intervalMs));
    options.onReport?.(result);
    return result;
  };

  const reportNow = (): Promise<PostureReportResult | undefined> => {
    if (closed) return Promise.resolve(undefined);
    running ??= attempt().finally(() => {
      running = undefined;
    });
    return running;
  };

  schedule(jittered(firstDelayMs));

  return {
    nextAt: () => (closed ? undefined : due),
    reportNow,
    close: async () => {
      closed = true;
      due = undefined;
      if (handle !== undefined) timers.clearTimeout(handle);
      handle = undefined;
      inFlight?.abort();
      await running?.catch(() => undefined);
    },
  };
}
