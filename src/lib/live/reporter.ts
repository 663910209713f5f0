/**
 * The loop that keeps the control plane's picture of a peer current (wire.ts): a report every
 * `intervalMs`, and one `settleMs` after `changed()` (a session opened or closed; several changes in
 * that window share one report). Reports never overlap and never block the caller: `changed()` only
 * arms a timer, building and sending happen on it. A failed send is logged and the next tick simply
 * sends the then-current state (a report is the whole state, so nothing is lost by skipping one).
 *
 *     const reporter = startPeerReporter({ build: () => report(), send: httpReportSender({ … }), logger });
 *     registry.onChange(() => reporter.changed());
 *     …
 *     await reporter.close();
 *
 * Timers are the global ones (unref'd), so tests drive them with node:test's mock timers.
 */
import { CausewayError, errorMessage } from '../errors.ts';
import { agentPerCertificate, describeErrorBody, requestControlPlane } from '../enroll/transport.ts';
import type { ControlPlaneFetch, PeerTlsMaterial } from '../enroll/transport.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import { PEER_REPORT_PATH, REPORT_INTERVAL_MS, REPORT_SETTLE_MS } from './wire.ts';
import type { PeerReport } from './wire.ts';

export type ReportSender = (report: PeerReport, signal: AbortSignal) => Promise<void>;

export interface PeerReporterOptions {
  build: () => PeerReport;
  send: ReportSender;
  logger?: Logger;
  /** Default REPORT_INTERVAL_MS (5 s). */
  intervalMs?: number;
  /** Default REPORT_SETTLE_MS (500 ms). */
  settleMs?: number;
}

export interface PeerReporter {
  /** Something changed: report within settleMs. Cheap; safe to call on every connection. */
  changed(): void;
  /** Stops the loop; a report in flight is aborted. */
  close(): Promise<void>;
  /** Counts, for tests and metrics. */
  stats(): { sent: number; failed: number };
}

export function startPeerReporter(options: PeerReporterOptions): PeerReporter {
  const logger = options.logger ?? silentLogger();
  const intervalMs = options.intervalMs ?? REPORT_INTERVAL_MS;
  const settleMs = options.settleMs ?? REPORT_SETTLE_MS;
  let timer: NodeJS.Timeout | undefined;
  /** When the armed timer fires (epoch ms). */
  let due = Infinity;
  let inFlight: { done: Promise<void>; abort: AbortController } | undefined;
  let dirty = false;
  let closed = false;
  let sent = 0;
  let failed = 0;
  let failing = false;

  const arm = (delayMs: number): void => {
    if (closed) return;
    const at = Date.now() + delayMs;
    if (timer !== undefined && due <= at) return;
    if (timer !== undefined) clearTimeout(timer);
    due = at;
    timer = setTimeout(fire, delayMs);
    timer.unref();
  };

  const fire = (): void => {
    timer = undefined;
    due = Infinity;
    if (closed) return;
    if (inFlight !== undefined) {
      dirty = true;
      return;
    }
    dirty = false;
    const abort = new AbortController();
    const done = (async () => {
      try {
        const report = options.build();
        await options.send(report, abort.signal);
        sent++;
        if (failing) logger.info('reporting to the control plane works again');
        failing = false;
      } catch (err) {
        failed++;
        if (closed) return;
        // One warning per outage, not one every 5 s.
        if (!failing) logger.warn({ err: errorMessage(err) }, 'could not report live state to the control plane; retrying every interval');
        else logger.debug({ err: errorMessage(err) }, 'live report failed again');
        failing = true;
      } finally {
        inFlight = undefined;
        arm(dirty ? settleMs : intervalMs);
      }
    })();
    inFlight = { done, abort };
  };

  arm(0);
  return {
    changed() {
      if (closed) return;
      if (inFlight !== undefined) dirty = true;
      else arm(settleMs);
    },
    async close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      const flight = inFlight;
      if (flight !== undefined) {
        flight.abort.abort();
        await flight.done;
      }
    },
    stats: () => ({ sent, failed }),
  };
}

export interface HttpReportSenderOptions {
  controlPlaneUrl: string;
  tls: () => PeerTlsMaterial;
  /** Default 10 s. */
  timeoutMs?: number;
  fetch?: ControlPlaneFetch;
}

/** `POST /api/v1/peers/report` with the peer's current certificate over one kept-alive connection. */
export function httpReportSender(options: HttpReportSenderOptions): ReportSender & { close(): void } {
  const fetch = options.fetch ?? requestControlPlane;
  const agents = agentPerCertificate();
  const send = async (report: PeerReport, signal: AbortSignal): Promise<void> => {
    const tls = options.tls();
    const answer = await fetch({ baseUrl: options.controlPlaneUrl, path: PEER_REPORT_PATH, method: 'POST', body: report, tls, agent: agents.agentFor(tls), timeoutMs: options.timeoutMs ?? 10_000, signal });
    if (answer.status < 200 || answer.status > 299) {
      throw new CausewayError('PEER_REPORT_FAILED', `the control plane did not take the live report: ${answer.status} (${describeErrorBody(answer.body)})`, { retryable: true });
    }
  };
  return Object.assign(send, {
    close() {
      agents.destroy();
    },
  });
}
