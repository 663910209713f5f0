/**
 * The access tier's live report (src/lib/live/wire.ts): its tunnels and every live session, sent to
 * the control plane every 5 s and about 500 ms after a session opens or closes, so the console lists
 * who is connected where and can disconnect them.
 *
 * Nothing here is on the data path: the registry only tells the reporter "something changed" (which
 * arms a timer at most once per settle window); building and sending happen on that timer, and a
 * failing control plane costs a log line, never a connection.
 */
import type { Clock } from '../lib/clock.ts';
import { systemClock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import { formatAuthority } from '../lib/net/target.ts';
import { startPeerReporter } from '../lib/live/reporter.ts';
import type { PeerReporter, ReportSender } from '../lib/live/reporter.ts';
import { MAX_REPORTED_SESSIONS } from '../lib/live/wire.ts';
import type { AccessTierReport, ReportedSession } from '../lib/live/wire.ts';
import type { AccessTier } from './access-tier.ts';
import type { LiveConnection } from './registry.ts';

export interface SessionReportOptions {
  accessTier: Pick<AccessTier, 'liveConnections' | 'stats' | 'onSessionsChanged'>;
  send: ReportSender;
  /** The software version reported (the CLI's). */
  version: string;
  clock?: Clock;
  logger?: Logger;
  intervalMs?: number;
  settleMs?: number;
}

/** Starts reporting; close() stops it (the access tier's command closes it before the access tier). */
export function startSessionReport(options: SessionReportOptions): PeerReporter {
  const clock = options.clock ?? systemClock;
  const startedAt = new Date(clock.now()).toISOString();
  const reporter = startPeerReporter({
    build: () => accessTierReport(options.accessTier, options.version, startedAt),
    send: options.send,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.intervalMs === undefined ? {} : { intervalMs: options.intervalMs }),
    ...(options.settleMs === undefined ? {} : { settleMs: options.settleMs }),
  });
  const stop = options.accessTier.onSessionsChanged(() => reporter.changed());
  return {
    changed: () => reporter.changed(),
    stats: () => reporter.stats(),
    async close() {
      stop();
      await reporter.close();
    },
  };
}

/** The access tier's present state as a report; at most MAX_REPORTED_SESSIONS sessions (oldest first). */
export function accessTierReport(tier: Pick<AccessTier, 'liveConnections' | 'stats'>, version: string, startedAt: string): AccessTierReport {
  const connections = tier.liveConnections();
  const truncated = connections.length > MAX_REPORTED_SESSIONS;
  const shown = truncated ? [...connections].sort((a, b) => a.startedAt - b.startedAt).slice(0, MAX_REPORTED_SESSIONS) : connections;
  const report: AccessTierReport = {
    version,
    startedAt,
    tunnels: tier.stats().tunnels.map((t) => ({ connector: t.connector, since: t.since, streams: t.activeStreams })),
    sessions: shown.map(reportedSession),
  };
  if (truncated) report.truncated = true;
  return report;
}

function reportedSession(c: LiveConnection): ReportedSession {
  const bytes = c.bytes();
  const session: ReportedSession = {
    id: c.id,
    service: c.service,
    since: new Date(c.startedAt).toISOString(),
    source: c.source,
    target: formatAuthority(c.target),
    via: c.connector === undefined ? 'direct' : 'connector',
    bytesUp: bytes.up,
    bytesDown: bytes.down,
  };
  if (c.identity.user !== undefined) session.user = c.identity.user;
  if (c.identity.device !== undefined) session.device = c.identity.device;
  if (c.connector !== undefined) session.connector = c.connector;
  return session;
}
