/**
 * Live sessions and the health of access tiers and connectors (issue 8), from the reports those
 * peers send (src/lib/live/wire.ts):
 *
 *   POST /api/v1/peers/report               a peer's whole present state; its client certificate
 *                                           (access-tier or connector, unrevoked) names it
 *   GET  /api/v1/sessions                   (read) live sessions on every access tier whose last
 *                                           report is fresher than 20 s; filters user, service, accessTier
 *   GET  /api/v1/peers                      (read) access tiers and connectors: from their specs,
 *                                           their enrollments (used join tokens) and their reports
 *   POST /api/v1/sessions/:id/disconnect    (write) cuts one live session at once on whichever access
 *                                           tier holds it; 404 for an unknown or ended session
 *
 * A disconnect is a store write (`killSession`): a `SessionKill` change that the config stream carries
 * to every access tier (the one holding the session destroys it and records its access event with
 * closeReason `disconnected-by-admin`), and the audit event `disconnect` with who ordered it and what
 * the session was. Kills are deleted again after 10 minutes by a sweep here (every replica sweeps; the
 * store makes that safe). A session killed after its tier's last report is no longer listed, so the
 * console does not show it again while the next report is on its way.
 *
 * A report is trusted for what it says about its sender only: kind and name come from the certificate,
 * and a report is never read as telling anything about another peer.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import type { CertificateAuthority, CertType } from '../../lib/pki/index.ts';
import { accessTierReportSchema, connectorReportSchema, MAX_REPORT_BYTES, PEER_FRESH_MS, PEER_REPORT_PATH } from '../../lib/live/wire.ts';
import type { AccessTierReport, ConnectorReport, ReportedSession } from '../../lib/live/wire.ts';
import { ApiError, sendError } from '../api/errors.ts';
import { errorResponses } from '../api/schemas.ts';
import { principalOf } from '../auth.ts';
import { authenticatePeer, refusePeer } from '../stream/peer.ts';
import type { PeerReportRecord, ReportingPeerKind, Store } from '../store/index.ts';

export interface LiveRoutesDeps {
  store: Store;
  ca: CertificateAuthority;
  clock: Clock;
  logger: Logger;
  /** How often expired session kills are deleted; default 60 s. 0: never (tests call sweep themselves). */
  sweepIntervalMs?: number;
}

export type SessionStatus = 'up' | 'down' | 'never';

/** One live session as the API shows it. */
export interface LiveSession extends ReportedSession {
  accessTier: string;
  /** The user's name and the device's host name, when the store knows them. */
  userName?: string;
  deviceName?: string;
  /** When its access tier last reported it. */
  reportedAt: string;
}

export interface PeerView {
  kind: ReportingPeerKind;
  name: string;
  cluster: string | null;
  /** Access tiers: the address clients reach (from the spec). */
  address: string | null;
  status: SessionStatus;
  version: string | null;
  lastReport: string | null;
  startedAt: string | null;
  tunnels: Array<{ peer: string; since: string; streams: number }>;
  /** Access tiers: live sessions in the last report; connectors: null. */
  sessions: number | null;
  /** There is an AccessTier or Connector spec of this name. */
  configured: boolean;
  /** A join token of this kind and name has been used. */
  enrolled: boolean;
}

const SENDERS: readonly CertType[] = ['access-tier', 'connector'];
const text = { type: 'string', minLength: 1, maxLength: 256 } as const;
const nullableText = { type: ['string', 'null'] } as const;

const sessionSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    accessTier: { type: 'string' },
    user: { type: 'string' },
    userName: { type: 'string' },
    device: { type: 'string' },
    deviceName: { type: 'string' },
    service: { type: 'string' },
    since: { type: 'string' },
    source: { type: 'string' },
    target: { type: 'string' },
    via: { type: 'string' },
    connector: { type: 'string' },
    bytesUp: { type: 'integer' },
    bytesDown: { type: 'integer' },
    reportedAt: { type: 'string' },
  },
  required: ['id', 'accessTier', 'service', 'since', 'source', 'target', 'via', 'bytesUp', 'bytesDown', 'reportedAt'],
} as const;

const peerSchema = {
  type: 'object',
  properties: {
    kind: { type: 'string', enum: ['access-tier', 'connector'] },
    name: { type: 'string' },
    cluster: nullableText,
    address: nullableText,
    status: { type: 'string', enum: ['up', 'down', 'never'] },
    version: nullableText,
    lastReport: nullableText,
    startedAt: nullableText,
    tunnels: { type: 'array', items: { type: 'object', properties: { peer: { type: 'string' }, since: { type: 'string' }, streams: { type: 'integer' } }, required: ['peer', 'since', 'streams'] } },
    sessions: { type: ['integer', 'null'] },
    configured: { type: 'boolean' },
    enrolled: { type: 'boolean' },
  },
  required: ['kind', 'name', 'cluster', 'address', 'status', 'version', 'lastReport', 'startedAt', 'tunnels', 'sessions', 'configured', 'enrolled'],
} as const;

/** Registers the read and write routes inside the /api/v1 scope (the auth hook applies; the report route checks the certificate itself). */
export function liveRoutes(app: FastifyInstance, deps: LiveRoutesDeps): void {
  const { store, clock } = deps;
  const logger = deps.logger.child({ component: 'live' });
  const reportPath = PEER_REPORT_PATH.replace(/^\/api\/v1/, '');

  app.post(reportPath, {
    bodyLimit: MAX_REPORT_BYTES,
    config: { access: 'public' },
    schema: {
      summary: 'An access tier or connector reports its live state (its client certificate names it)',
      // A peer's wire (src/lib/live/wire.ts), like the config stream and event batches: not part of the admin API.
      hide: true,
      tags: ['live'],
      security: [],
      body: { type: 'object' },
      response: { 200: { type: 'object', properties: { accepted: { type: 'boolean' }, reportedAt: { type: 'string' } }, required: ['accepted', 'reportedAt'] }, ...errorResponses(400, 401, 413) },
    },
  }, async (request: FastifyRequest<{ Body: unknown }>, reply) => {
    const auth = await authenticatePeer(request, SENDERS, deps);
    if (!auth.ok) {
      logger.warn({ source: request.ip, reason: auth.reason }, 'peer report refused');
      return refusePeer(reply, auth, SENDERS);
    }
    const kind = auth.identity.type as ReportingPeerKind;
    const name = auth.identity.name ?? '';
    const parsed = kind === 'access-tier' ? accessTierReportSchema.safeParse(request.body) : connectorReportSchema.safeParse(request.body);
    if (!parsed.success) {
      const problems = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`);
      logger.warn({ kind, name, problems }, 'malformed peer report');
      return sendError(reply, 400, 'REPORT_INVALID', `the ${kind} report is malformed: ${problems.join('; ')}`);
    }
    const stored = await store.putPeerReport(kind, name, parsed.data);
    return { accepted: true, reportedAt: stored.reportedAt };
  });

  app.get('/sessions', {
    config: { access: 'read' },
    schema: {
      summary: 'Live sessions on every access tier that reported in the last 20 s',
      tags: ['live'],
      querystring: { type: 'object', properties: { user: text, service: text, accessTier: text }, additionalProperties: false },
      response: { 200: { type: 'object', properties: { sessions: { type: 'array', items: sessionSchema } }, required: ['sessions'] }, ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: { user?: string; service?: string; accessTier?: string } }>) => {
    const { user, service, accessTier } = request.query;
    let sessions = await liveSessions(store, clock.now());
    if (user !== undefined) sessions = sessions.filter((s) => s.user === user || s.userName === user);
    if (service !== undefined) sessions = sessions.filter((s) => s.service === service);
    if (accessTier !== undefined) sessions = sessions.filter((s) => s.accessTier === accessTier);
    return { sessions };
  });

  app.get('/peers', {
    config: { access: 'read' },
    schema: {
      summary: 'Access tiers and connectors: configuration, enrollment, health, version and tunnels',
      tags: ['live'],
      response: { 200: { type: 'object', properties: { peers: { type: 'array', items: peerSchema } }, required: ['peers'] }, ...errorResponses(401, 403) },
    },
  }, async () => ({ peers: await peerViews(store, clock.now()) }));

  app.post('/sessions/:id/disconnect', {
    config: { access: 'write' },
    schema: {
      summary: 'Cut a live session now, on whichever access tier holds it',
      tags: ['live'],
      params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9-]+$' } }, required: ['id'] },
      response: {
        200: {
          type: 'object',
          properties: { session: sessionSchema, disconnectedAt: { type: 'string' }, by: { type: 'string' }, alreadyPending: { type: 'boolean' } },
          required: ['session', 'disconnectedAt', 'by', 'alreadyPending'],
        },
        ...errorResponses(400, 401, 403, 404),
      },
    },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const principal = principalOf(request);
    const { id } = request.params;
    const session = (await liveSessions(store, clock.now(), { includeKilled: true })).find((s) => s.id === id);
    if (session === undefined) throw new ApiError(404, 'SESSION_NOT_FOUND', `no live session has the id ${id}; it may have ended already (list them with GET /api/v1/sessions or causeway sessions)`);
    const { kill, created } = await store.killSession({
      id,
      session: {
        accessTier: session.accessTier,
        service: session.service,
        ...(session.user === undefined ? {} : { user: session.user }),
        ...(session.userName === undefined ? {} : { userName: session.userName }),
        ...(session.device === undefined ? {} : { device: session.device }),
        source: session.source,
        since: session.since,
      },
    }, { actor: principal.actor });
    logger.info({ session: id, accessTier: session.accessTier, service: session.service, user: session.user, by: principal.actor, created }, 'session disconnect ordered');
    return { session, disconnectedAt: kill.at, by: kill.by, alreadyPending: !created };
  });

  const sweepEvery = deps.sweepIntervalMs ?? 60_000;
  if (sweepEvery > 0) {
    const timer = setInterval(() => {
      store.expireSessionKills().catch((err: unknown) => logger.warn({ err }, 'deleting expired session kills failed; will retry'));
    }, sweepEvery);
    timer.unref();
    app.addHook('onClose', (_instance, done) => {
      clearInterval(timer);
      done();
    });
  }
}

function isFresh(record: PeerReportRecord, now: number): boolean {
  return now - Date.parse(record.reportedAt) < PEER_FRESH_MS;
}

/** The sessions of every fresh access-tier report, newest first; those killed after their report are left out unless asked for. */
export async function liveSessions(store: Store, now: number, options: { includeKilled?: boolean } = {}): Promise<LiveSession[]> {
  const reports = (await store.listPeerReports({ kind: 'access-tier', since: new Date(now - PEER_FRESH_MS).toISOString() })).filter((r) => isFresh(r, now));
  const raw: LiveSession[] = [];
  for (const record of reports) {
    const parsed = accessTierReportSchema.safeParse(record.report);
    if (!parsed.success) continue;
    for (const s of parsed.data.sessions) raw.push({ ...s, accessTier: record.name, reportedAt: record.reportedAt });
  }
  if (raw.length === 0) return [];
  const kills = new Map((await store.listSessionKills()).map((k) => [k.id, k.at]));
  const sessions = options.includeKilled === true ? raw : raw.filter((s) => {
    const killedAt = kills.get(s.id);
    return killedAt === undefined || killedAt < s.reportedAt;
  });
  const [users, devices] = await Promise.all([
    sessions.some((s) => s.user !== undefined) ? store.listUsers() : Promise.resolve([]),
    sessions.some((s) => s.device !== undefined) ? store.listDevices() : Promise.resolve([]),
  ]);
  const userNames = new Map(users.map((u) => [u.id, u.name]));
  const deviceNames = new Map(devices.map((d) => [d.id, d.hostname]));
  for (const s of sessions) {
    const userName = s.user === undefined ? undefined : userNames.get(s.user);
    if (userName !== undefined) s.userName = userName;
    const deviceName = s.device === undefined ? undefined : deviceNames.get(s.device);
    if (typeof deviceName === 'string') s.deviceName = deviceName;
  }
  return sessions.sort((a, b) => (a.since < b.since ? 1 : a.since > b.since ? -1 : a.id < b.id ? 1 : -1));
}

/** Every access tier and connector the installation knows of, by kind then name. */
export async function peerViews(store: Store, now: number): Promise<PeerView[]> {
  const [tiers, connectors, joins, reports] = await Promise.all([store.listObjects('AccessTier'), store.listObjects('Connector'), store.listJoinTokens(), store.listPeerReports()]);
  const views = new Map<string, PeerView>();
  const key = (kind: ReportingPeerKind, name: string): string => `${kind}\u0000${name}`;
  const view = (kind: ReportingPeerKind, name: string): PeerView => {
    let v = views.get(key(kind, name));
    if (v === undefined) {
      v = { kind, name, cluster: null, address: null, status: 'never', version: null, lastReport: null, startedAt: null, tunnels: [], sessions: null, configured: false, enrolled: false };
      views.set(key(kind, name), v);
    }
    return v;
  };
  for (const object of tiers) {
    const v = view('access-tier', object.name);
    const spec = object.spec as { cluster?: unknown; address?: unknown } | null;
    v.configured = true;
    if (typeof spec?.cluster === 'string') v.cluster = spec.cluster;
    if (typeof spec?.address === 'string') v.address = spec.address;
  }
  for (const object of connectors) {
    const v = view('connector', object.name);
    const spec = object.spec as { cluster?: unknown } | null;
    v.configured = true;
    if (typeof spec?.cluster === 'string') v.cluster = spec.cluster;
  }
  for (const join of joins) {
    if (join.usedAt === null || (join.kind !== 'access-tier' && join.kind !== 'connector')) continue;
    view(join.kind, join.name).enrolled = true;
  }
  for (const record of reports) {
    const v = view(record.kind, record.name);
    v.lastReport = record.reportedAt;
    v.status = isFresh(record, now) ? 'up' : 'down';
    if (record.kind === 'access-tier') {
      const parsed = accessTierReportSchema.safeParse(record.report);
      if (parsed.success) applyReport(v, parsed.data);
    } else {
      const parsed = connectorReportSchema.safeParse(record.report);
      if (parsed.success) applyReport(v, parsed.data);
    }
    if (v.status === 'down') {
      // What a silent peer last said is history, not its present state.
      v.tunnels = [];
      v.sessions = v.kind === 'access-tier' ? 0 : null;
    }
  }
  return [...views.values()].sort((a, b) => (a.kind !== b.kind ? (a.kind < b.kind ? -1 : 1) : a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function applyReport(v: PeerView, report: AccessTierReport | ConnectorReport): void {
  v.version = report.version;
  v.startedAt = report.startedAt;
  if ('sessions' in report) {
    v.sessions = report.sessions.length;
    v.tunnels = report.tunnels.map((t) => ({ peer: t.connector, since: t.since, streams: t.streams }));
  } else {
    v.tunnels = report.tunnels.map((t) => ({ peer: t.accessTier, since: t.since, streams: t.streams }));
  }
}
