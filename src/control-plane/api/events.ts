/** Access events (every decision the access tiers made) and audit events (every change, with before and after). */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AccessEventQuery, AuditEventQuery, Store } from '../store/index.ts';
import { accessEventSchema, auditEventSchema, cursorQuery, errorResponses, limitQuery, pageSchema, timeQuery } from './schemas.ts';

export interface EventRoutesDeps {
  store: Store;
}

const text = { type: 'string', minLength: 1, maxLength: 256 } as const;

/** A store query as a query string: the same filters, the page size as text, `cursor` for `after`. */
type QueryString<Q> = Omit<Q, 'limit' | 'after'> & { limit?: string; cursor?: string };
type AccessQuery = QueryString<AccessEventQuery>;
type AuditQuery = QueryString<AuditEventQuery>;

function paging(query: { limit?: string; cursor?: string }): { limit?: number; after?: string } {
  return { ...(query.limit === undefined ? {} : { limit: Number(query.limit) }), ...(query.cursor === undefined ? {} : { after: query.cursor }) };
}

function defined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
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
        properties: { service: text, user: text, device: text, decision: { type: 'string', enum: ['allow', 'deny', 'would-deny'] }, since: timeQuery, until: timeQuery, limit: limitQuery, cursor: cursorQuery },
        additionalProperties: false,
      },
      response: { 200: pageSchema(accessEventSchema), ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: AccessQuery }>) => {
    const { service, user, device, decision, since, until } = request.query;
    const page = await store.queryAccessEvents({ ...defined({ service, user, device, decision, since, until }), ...paging(request.query) });
    return page.next === undefined ? { events: page.events } : page;
  });

  app.get('/audit', {
    config: { access: 'read' },
    schema: {
      summary: 'Audit events (who changed what, before and after), newest first',
      tags: ['events'],
      querystring: {
        type: 'object',
        properties: { kind: text, name: text, actor: text, action: text, since: timeQuery, until: timeQuery, limit: limitQuery, cursor: cursorQuery },
        additionalProperties: false,
      },
      response: { 200: pageSchema(auditEventSchema), ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: AuditQuery }>) => {
    const { kind, name, actor, action, since, until } = request.query;
    const page = await store.queryAuditEvents({ ...defined({ kind, name, actor, action, since, until }), ...paging(request.query) });
    return page.next === undefined ? { events: page.events } : page;
  });
}
