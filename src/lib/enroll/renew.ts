/**
 * Automatic renewal of a part's certificate: at two thirds of its lifetime, a new key pair and a
 * CSR are sent to `POST /api/v1/renew` over TLS with the current certificate; the answer must be a
 * certificate of the same kind and name for the new key. Failures are retried with exponential
 * backoff and full jitter (1 s to 5 min by default) until the certificate expires; after that only
 * a new enrollment helps, and `onError` says so.
 *
 * `onRenewed` gets the new credentials first (the entry point writes them to disk and swaps them in
 * for new connections); only when it resolves does the renewal count as done.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { CausewayError, UserError, errorMessage } from '../errors.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import { createCsr, generateKeyPair } from '../pki/index.ts';
import { checkAnswer } from './enroll.ts';
import type { PeerCredentials } from './enroll.ts';
import { describeErrorBody, requestControlPlane } from './transport.ts';
import type { ControlPlaneFetch } from './transport.ts';
import { RENEW_PATH } from './wire.ts';

/** One renewal with these credentials; throws a CausewayError (retryable unless it cannot help). */
export async function renewOnce(options: { controlPlaneUrl: string; credentials: PeerCredentials; fetch?: ControlPlaneFetch }): Promise<PeerCredentials> {
  const fetch = options.fetch ?? requestControlPlane;
  const current = options.credentials;
  const keys = await generateKeyPair();
  const csr = await createCsr(keys, `causeway-${current.kind}`);
  const answer = await fetch({ baseUrl: options.controlPlaneUrl, path: RENEW_PATH, method: 'POST', body: { csr }, tls: { caPem: current.caPem, certPem: current.certPem, keyPem: current.keyPem } });
  if (answer.status !== 200) {
    // 401: expired or revoked (or the clock is off); retrying helps only in the last case.
    throw new CausewayError(answer.status === 401 ? 'RENEW_REFUSED' : 'RENEW_FAILED', `certificate renewal failed with ${answer.status} (${describeErrorBody(answer.body)})`, { retryable: true });
  }
  const renewed = checkAnswer(answer.body, keys.privateKeyPem, current.caPem, current.kind);
  if (renewed.name !== current.name) throw new CausewayError('RENEW_BAD_ANSWER', `the renewed certificate names ${current.kind} "${renewed.name}", not "${current.name}"`);
  return renewed;
}

export interface RenewalOptions {
  controlPlaneUrl: string;
  /** The credentials in use now. */
  current: () => PeerCredentials;
  /** Takes the new credentials (write them, swap them in); a rejection retries the whole renewal. */
  onRenewed: (renewed: PeerCredentials) => Promise<void> | void;
  /** Told about each failed attempt. */
  onError?: (err: CausewayError) => void;
  /** Fraction of the lifetime after which to renew. Default 2/3. */
  renewAt?: number;
  retry?: { initialMs?: number; maxMs?: number };
  fetch?: ControlPlaneFetch;
  clock?: Clock;
  logger?: Logger;
  random?: () => number;
}

export interface Renewal {
  /** Epoch ms of the next attempt. */
  nextAttemptAt(): number;
  /** Renews now (outside the schedule); resolves with what onRenewed was given. */
  renewNow(): Promise<PeerCredentials>;
  close(): Promise<void>;
}

/** When credentials are due: notBefore + fraction × lifetime. */
export function renewalDue(credentials: Pick<PeerCredentials, 'notBefore' | 'notAfter'>, fraction = 2 / 3): number {
  const start = credentials.notBefore.getTime();
  return start + (credentials.notAfter.getTime() - start) * fraction;
}

export function startRenewal(options: RenewalOptions): Renewal {
  const clock = options.clock ?? systemClock;
  const logger = (options.logger ?? silentLogger()).child({ component: 'renewal' });
  const fraction = options.renewAt ?? 2 / 3;
  const initialMs = options.retry?.initialMs ?? 1_000;
  const maxMs = options.retry?.maxMs ?? 300_000;
  const random = options.random ?? Math.random;
  const stop = new AbortController();
  let attempt = 0;
  let next = renewalDue(options.current(), fraction);
  let inFlight: Promise<PeerCredentials> | undefined;

  const renew = (): Promise<PeerCredentials> => {
    inFlight ??= (async () => {
      try {
        const current = options.current();
        const renewed = await renewOnce({ controlPlaneUrl: options.controlPlaneUrl, credentials: current, ...(options.fetch === undefined ? {} : { fetch: options.fetch }) });
        await options.onRenewed(renewed);
        logger.info({ kind: renewed.kind, name: renewed.name, serial: renewed.serial, previous: current.serial, notAfter: renewed.notAfter.toISOString() }, 'certificate renewed');
        attempt = 0;
        next = renewalDue(renewed, fraction);
        return renewed;
      } finally {
        inFlight = undefined;
      }
    })();
    return inFlight;
  };

  const loop = async (): Promise<void> => {
    while (!stop.signal.aborted) {
      const wait = Math.max(0, next - clock.now());
      const slice = 60 * 60_000;
      try {
        // Long waits are taken in slices, so a clock that jumps (a laptop waking up) is noticed.
        await delay(Math.min(wait, slice), undefined, { signal: stop.signal });
      } catch {
        return;
      }
      if (wait > slice) continue;
      try {
        await renew();
      } catch (err) {
        const error = err instanceof CausewayError ? err : new CausewayError('RENEW_FAILED', errorMessage(err), { cause: err, retryable: true });
        const current = options.current();
        const expired = clock.now() >= current.notAfter.getTime();
        const reported = expired
          ? new UserError('CERT_EXPIRED', `the ${current.kind} certificate expired at ${current.notAfter.toISOString()} and could not be renewed (${error.message}); enroll again with a new join token`, { cause: error, retryable: true })
          : error;
        logger.warn({ err: reported.message, attempt, expiresAt: current.notAfter.toISOString() }, 'certificate renewal failed; will retry');
        options.onError?.(reported);
        const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
        attempt++;
        next = clock.now() + Math.max(100, Math.round(random() * ceiling));
      }
    }
  };
  const running = loop();

  return {
    nextAttemptAt: () => next,
    renewNow: renew,
    async close() {
      stop.abort();
      await running;
      await inFlight?.catch(() => undefined);
    },
  };
}
