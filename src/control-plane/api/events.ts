/**
 * Access events (every decision the access tiers made), kube events (`/kube-events`: every request and
 * exec/attach/port-forward session through a kube proxy, issue 6) and audit events (every change, with before and
 * after): pages of at most 1000, newest first, and `/export` of each, which streams every page of the
 * same filters as JSON lines (application/x-ndjson, one event a line, newest first) up to `limit`
 * (default and most 100,000) for download.
 */
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessEventQuery, AuditEventQuery, KubeEventQuery, Page, Store } from '../store/index.ts';
import { badRequest } from './errors.ts';
import { accessEventSchema, auditEventSchema, cursorQuery, errorResponses, kubeEventSchema, limitQuery, pageSchema, timeQuery } from './schemas.ts';

export interface EventRoutesDeps {
  store: Store;
}

const text = { type: 'string', minLength: 1, maxLength: 256 } as const;
export const EXPORT_MAX = 100_000;
const EXPORT_PAGE = 1000;
const exportLimit = { type: 'string', pattern: '^[0-9]{1,6}$', description: `at most this many events, 1 to ${EXPORT_MAX} (default ${EXPORT_MAX})` } as const;
const accessFilters = { service: text, user: text, device: text, decision: { type: 'string', enum: ['allow', 'deny', 'would-deny'] }, reason: { ...text, description: 'only events whose reasons include this code' }, since: timeQuery, until: timeQuery } as const;
const auditFilters = { kind: text, name: text, actor: text, action: text, since: timeQuery, until: timeQuery } as const;

/** A store query as a query string: the same filters, the page size as text, `cursor` for `after`. */
type QueryString<Q> = Omit<Q, 'limit' | 'after'> & { limit?: string; cursor?: string };
type AccessQuery = QueryString<AccessEventQuery>;
type AuditQuery = QueryString<AuditEventQuery>;
type KubeQuery = Omit<QueryString<KubeEventQuery>, 'clusterName'> & { cluster?: string };

function paging(query: { limit?: string; cursor?: string }): { limit?: number; after?: string } {
  return { ...(query.limit === undefined ? {} : { limit: Number(query.limit) }), ...(query.cursor === undefined ? {} : { after: query.cursor }) };
}

function defined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Every page of a query as JSON lines, up to `limit` events. The first page is read before the answer
 * starts, so a bad filter is still a clean 400; a store failure later cuts the download short (the
 * client sees a truncated transfer, not a silently shorter file).
 */
async function sendExport<E>(reply: FastifyReply, filename: string, limitText: string | undefined, query: (page: { limit: number; after?: string }) => Promise<Page<E>>): Promise<FastifyReply> {
  const limit = limitText === undefined ? EXPORT_MAX : Number(limitText);
  if (!(limit >= 1 && limit <= EXPORT_MAX)) throw badRequest('INVALID_REQUEST', `limit must be 1 to ${EXPORT_MAX}`);
  const first = await query({ limit: Math.min(EXPORT_PAGE, limit) });
  async function* lines(): AsyncGenerator<string> {
    let page = first;
    let left = limit;
    for (;;) {
      const events = page.events.slice(0, left);
      if (events.length > 0) yield `${events.map((e) => JSON.stringify(e)).join('\n')}\n`;
      left -= events.length;
      if (left <= 0 || page.next === undefined) return;
      page = await query({ limit: Math.min(EXPORT_PAGE, left), after: page.next });
    }
  }
  return reply
    .type('application/x-ndjson; charset=utf-8')
    .header('content-disposition', `attachment; filename="${filename}"`)
    .send(Readable.from(lines()));
}

export function eventRoutes(app: FastifyInstance, deps: EventRoutesDeps): void {
  const { store } = deps;

  app.get('/events', {
    config: { access: 'read' },
    schema: {
      summary: 'Access events, newest first',
      tags: ['events'],
      querystring: {
        type: 'object',
        properties: { ...accessFilters, limit: limitQuery, cursor: cursorQuery },
        additionalProperties: false,
      },
      response: { 200: pageSchema(accessEventSchema), ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: AccessQuery }>) => {
    const { service, user, device, decision, reason, since, until } = request.query;
    const page = await store.queryAccessEvents({ ...defined({ service, user, device, decision, reason, since, until }), ...paging(request.query) });
    return page.next === undefined ? { events: page.events } : page;
  });

  app.get('/events/export', {
    config: { access: 'read' },
    schema: {
      summary: 'Access events as JSON lines (a download): every page of the same filters as /events, newest first',
      tags: ['events'],
      querystring: { type: 'object', properties: { ...accessFilters, limit: exportLimit }, additionalProperties: false },
      response: { 200: { description: 'application/x-ndjson, one access event per line', type: 'string' }, ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: Omit<AccessQuery, 'cursor'> }>, reply) => {
    const { service, user, device, decision, reason, since, until } = request.query;
    const filters = defined({ service, user, device, decision, reason, since, until });
    return sendExport(reply, 'causeway-events.jsonl', request.query.limit, (page) => store.queryAccessEvents({ ...filters, ...page }));
  });

  app.get('/kube-events', {
    config: { access: 'read' },
    schema: {
      summary: 'Kube proxy events (requests and exec/attach/port-forward sessions), newest first',
      tags: ['events'],
      querystring: {
        type: 'object',
        properties: {
          type: { type: 'string', enum: ['kube-request', 'kube-session'] },
          cluster: text,
          user: text,
          device: text,
          namespace: text,
          verb: { type: 'string', minLength: 1, maxLength: 64 },
          decision: { type: 'string', enum: ['allow', 'deny'] },
          since: timeQuery,
          until: timeQuery,
          limit: limitQuery,
          cursor: cursorQuery,
        },
        additionalProperties: false,
      },
      response: { 200: pageSchema(kubeEventSchema), ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: KubeQuery }>) => {
    const { type, cluster, user, device, namespace, verb, decision, since, until } = request.query;
    const page = await store.queryKubeEvents({ ...defined({ type, clusterName: cluster, user, device, namespace, verb, decision, since, until }), ...paging(request.query) });
    return page.next === undefined ? { events: page.events } : page;
  });

  app.get('/audit', {
    config: { access: 'read' },
    schema: {
      summary: 'Audit events (who changed what, before and after), newest first',
      tags: ['events'],
      querystring: {
        type: 'object',
        properties: { ...auditFilters, limit: limitQuery, cursor: cursorQuery },
        additionalProperties: false,
      },
      response: { 200: pageSchema(auditEventSchema), ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: AuditQuery }>) => {
    const { kind, name, actor, action, since, until } = request.query;
    const page = await store.queryAuditEvents({ ...defined({ kind, name, actor, action, since, until }), ...paging(request.query) });
    return page.next === undefined ? { events: page.events } : page;
  });

  app.get('/audit/export', {
    config: { access: 'read' },
    schema: {
      summary: 'Audit events as JSON lines (a download): every page of the same filters as /audit, newest first',
      tags: ['events'],
      querystring: { type: 'object', properties: { ...auditFilters, limit: exportLimit }, additionalProperties: false },
      response: { 200: { description: 'application/x-ndjson, one audit event per line', type: 'string' }, ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: Omit<AuditQuery, 'cursor'> }>, reply) => {
    const { kind, name, actor, action, since, until } = request.query;
    const filters = defined({ kind, name, actor, action, since, until });
    return sendExport(reply, 'causeway-audit.jsonl', request.query.limit, (page) => store.queryAuditEvents({ ...filters, ...page }));
  });
}
