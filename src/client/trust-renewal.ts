/**
 * Renewing the trust certificate while `causeway proxy` runs (issue 5): at 2/3 of the current
 * certificate's lifetime (at once when there is none), a new one is fetched with the login session
 * and the device certificate (device.ts fetchTrustCert) and written to trust.key / trust.crt, which
 * the proxy re-reads for each new connection. A refusal (trust too low, device banned, stale posture)
 * is logged with its reason and retried later; live connections keep the certificate they started
 * with until the access tier cuts them.
 */
import type { Clock } from '../lib/clock.ts';
import { errorCode, errorMessage } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { fetchTrustCert } from './device.ts';
import type { DeviceContext, TrustCertOutcome } from './device.ts';

/** When a certificate is renewed: this fraction of its lifetime after notBefore. */
export const RENEW_AT_FRACTION = 2 / 3;
export const DEFAULT_RETRY_MS = 60_000;
const MAX_TIMER_MS = 2_147_483_647;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real timers that never keep the process alive on their own: the proxy's or agent's listeners do that. */
export const unrefTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface TrustRenewalOptions {
  ctx: DeviceContext;
  clock: Clock;
  logger: Logger;
  timers?: Timers;
  /** After a refusal or a failure, try again this much later (never past the certificate's expiry). Default 60 s. */
  retryMs?: number;
}

export interface TrustRenewal {
  /** When the next attempt is due (epoch ms); undefined once closed. */
  nextAt(): number | undefined;
  /** Renews now (and schedules the next); resolves with the outcome, undefined when it could not try. */
  renewNow(): Promise<TrustCertOutcome | undefined>;
  close(): void;
}

/** When the certificate with this validity should be renewed (its lifetime counted from issuance, not the backdated notBefore). */
export function renewalTime(trust: { issuedAt: number; notAfter: number }): number {
  return trust.issuedAt + Math.max(0, trust.notAfter - trust.issuedAt) * RENEW_AT_FRACTION;
}

export async function startTrustRenewal(options: TrustRenewalOptions): Promise<TrustRenewal> {
  const { ctx, clock } = options;
  const logger = options.logger.child({ component: 'trust-renewal' });
  const timers = options.timers ?? unrefTimers;
  const retryMs = options.retryMs ?? DEFAULT_RETRY_MS;
  let handle: unknown;
  let due: number | undefined;
  let closed = false;
  let running: Promise<TrustCertOutcome | undefined> | undefined;

  const schedule = (at: number): void => {
    if (closed) return;
    if (handle !== undefined) timers.clearTimeout(handle);
    due = at;
    handle = timers.setTimeout(() => {
      handle = undefined;
      void renewNow();
    }, Math.min(MAX_TIMER_MS, Math.max(0, at - clock.now())));
  };

  const current = async (): Promise<{ issuedAt: number; notAfter: number } | undefined> => ctx.files.readTrust().catch(() => undefined);

  const retryAt = async (): Promise<number> => {
    const now = clock.now();
    const trust = await current();
    // Never wait past the expiry of the certificate we hold; try at most every retryMs.
    return trust === undefined || trust.notAfter <= now ? now + retryMs : Math.min(now + retryMs, Math.max(now, trust.notAfter - 1000));
  };

  const attempt = async (): Promise<TrustCertOutcome | undefined> => {
    let outcome: TrustCertOutcome | undefined;
    try {
      const state = await ctx.files.readState();
      const session = await ctx.session();
      if (state === undefined || state.server !== session.server) {
        logger.warn({ reason: 'no-device' }, 'this machine has no device registered at the current server, so the trust certificate cannot be renewed; run causeway login');
      } else {
        outcome = await fetchTrustCert(ctx, state);
        if (outcome.ok) logger.info({ notAfter: outcome.notAfter }, 'trust certificate renewed');
        else logger.warn({ reason: outcome.reason, code: outcome.code, status: outcome.status }, `the trust certificate was not renewed: ${outcome.message}`);
      }
    } catch (err) {
      logger.warn({ reason: errorCode(err) ?? 'error' }, `the trust certificate could not be renewed: ${errorMessage(err)}`);
    }
    if (outcome?.ok === true) {
      const trust = await current();
      schedule(trust === undefined ? await retryAt() : renewalTime(trust));
    } else {
      schedule(await retryAt());
    }
    return outcome;
  };

  const renewNow = (): Promise<TrustCertOutcome | undefined> => {
    if (closed) return Promise.resolve(undefined);
    running ??= attempt().finally(() => {
      running = undefined;
    });
    return running;
  };

  const trust = await current();
  schedule(trust === undefined ? clock.now() : renewalTime(trust));

  return {
    nextAt: () => (closed ? undefined : due),
    renewNow,
    close: () => {
      closed = true;
      due = undefined;
      if (handle !== undefined) timers.clearTimeout(handle);
      handle = undefined;
    },
  };
}
