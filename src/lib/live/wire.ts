/**
 * Live reports: what access tiers and connectors tell the control plane about themselves, so the
 * Command Center can show live sessions and the health of every peer (issue 8). Both ends import
 * this file; it is the contract.
 *
 *     POST /api/v1/peers/report        (HTTPS, the peer's client certificate: access-tier or connector)
 *     Content-Type: application/json
 *
 *     access tier: { version, startedAt, tunnels: [{ connector, since, streams }],
 *                    sessions: [{ id, user, device, service, since, source, target, via, connector?,
 *                                 bytesUp, bytesDown }] }
 *     connector:   { version, startedAt, tunnels: [{ accessTier, since, streams }] }
 *
 *     200 { accepted: true, reportedAt }        the report replaced the peer's previous one
 *     400 malformed, 401 PEER_CERT_REFUSED, 413 too large
 *
 * Each report is the peer's whole present state (not a delta): the control plane keeps only the
 * latest one per peer (kind and name come from the certificate, never from the body). A peer
 * reports every REPORT_INTERVAL_MS, and shortly after a session opens or closes; the control plane
 * counts a peer up while its last report is younger than PEER_FRESH_MS.
 *
 * Session ids are the access tier's connection ids (the UUID v7 of the connection's access event),
 * which is also what `POST /api/v1/sessions/:id/disconnect` names and what the config stream's
 * `SessionKill` change carries (see src/lib/config/wire.ts).
 */
import { z } from 'zod';

export const PEER_REPORT_PATH = '/api/v1/peers/report';
/** How often a peer reports when nothing changes. */
export const REPORT_INTERVAL_MS = 5_000;
/** How long after a session opens or closes the access tier reports (changes in between share one report). */
export const REPORT_SETTLE_MS = 500;
/** A peer whose last report is older than this is down; its sessions are not listed. */
export const PEER_FRESH_MS = 20_000;
/** Sessions one report may carry; an access tier with more reports the first this many (and says so in `truncated`). */
export const MAX_REPORTED_SESSIONS = 20_000;
export const MAX_REPORTED_TUNNELS = 1_000;
/** Largest report body the control plane reads. */
export const MAX_REPORT_BYTES = 16 * 1024 * 1024;
/** The access event close reason of a session an admin disconnected. */
export const DISCONNECTED_BY_ADMIN = 'disconnected-by-admin';

export type ReportingPeerKind = 'access-tier' | 'connector';

const text = z.string().max(1024);
const name = z.string().min(1).max(256);
const time = z.string().max(64);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const reportedSessionSchema = z.object({
  id: name,
  user: text.optional(),
  device: text.optional(),
  service: name,
  since: time,
  source: text,
  target: text,
  via: z.enum(['direct', 'connector']),
  connector: name.optional(),
  bytesUp: count,
  bytesDown: count,
});

export const accessTierTunnelSchema = z.object({ connector: name, since: time, streams: count });
export const connectorTunnelSchema = z.object({ accessTier: name, since: time, streams: count });

export const accessTierReportSchema = z.object({
  version: z.string().min(1).max(64),
  startedAt: time,
  tunnels: z.array(accessTierTunnelSchema).max(MAX_REPORTED_TUNNELS),
  sessions: z.array(reportedSessionSchema).max(MAX_REPORTED_SESSIONS),
  truncated: z.boolean().optional(),
});

export const connectorReportSchema = z.object({
  version: z.string().min(1).max(64),
  startedAt: time,
  tunnels: z.array(connectorTunnelSchema).max(MAX_REPORTED_TUNNELS),
});

export type ReportedSession = z.infer<typeof reportedSessionSchema>;
export type AccessTierTunnelReport = z.infer<typeof accessTierTunnelSchema>;
export type ConnectorTunnelReport = z.infer<typeof connectorTunnelSchema>;
export type AccessTierReport = z.infer<typeof accessTierReportSchema>;
export type ConnectorReport = z.infer<typeof connectorReportSchema>;
export type PeerReport = AccessTierReport | ConnectorReport;

export interface PeerReportAnswer {
  accepted: true;
  reportedAt: string;
}
