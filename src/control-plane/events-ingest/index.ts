/**
 * `POST /api/v1/events/batch`: access events shipped by access tiers and kube proxies, and kube
 * events (`kube-request`, `kube-session`, src/lib/audit/kube-event.ts) shipped by kube proxies, from their
 * local spools (the wire is documented in src/lib/audit/wire.ts). The caller is its client
 * certificate (an access tier or kube proxy of this installation, unrevoked); each event must name
 * the sender as its `accessTier`, so one part cannot write another's record. Events are stored once
 * per id (`appendAccessEvents`), so a batch resent after a lost answer stores nothing twice.
 *
 *     await app.register(eventsIngestPlugin, { store, ca, logger, clock });
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AccessEvent, KubeEvent } from '../../lib/audit/index.ts';
import { kubeEventSchema } from '../../lib/audit/kube-event.ts';
import { accessEventSchema, EVENTS_BATCH_PATH, MAX_BATCH_BYTES, MAX_BATCH_EVENTS } from '../../lib/audit/wire.ts';
import type { EventBatchResult } from '../../lib/audit/wire.ts';
import type { CertType } from '../../lib/pki/index.ts';
import { sendError } from '../api/errors.ts';
import { authenticatePeer, pluginDeps, refusePeer } from '../stream/peer.ts';
import type { PeerPluginOptions } from '../stream/peer.ts';

export type EventsIngestPluginOptions = PeerPluginOptions;

const SENDERS: readonly CertType[] = ['access-tier', 'kube-proxy'];
const errorRef = { $ref: 'error#' } as const;

export function eventsIngestPlugin(app: FastifyInstance, options: EventsIngestPluginOptions): Promise<void> {
  const deps = pluginDeps(options);
  const logger = deps.logger.child({ component: 'events-ingest' });
  const errors = app.getSchemas().error === undefined ? {} : { 400: errorRef, 401: errorRef, 413: errorRef };

  app.post(EVENTS_BATCH_PATH, {
    bodyLimit: MAX_BATCH_BYTES,
    schema: {
      summary: 'Store a batch of access events from an access tier or kube proxy (idempotent by event id)',
      tags: ['events'],
      security: [],
      body: { type: 'object', properties: { events: { type: 'array', items: {} } }, required: ['events'], additionalProperties: false },
      response: {
        200: {
          type: 'object',
          properties: {
            inserted: { type: 'integer' },
            duplicates: { type: 'integer' },
            rejected: { type: 'integer' },
            problems: { type: 'array', items: { type: 'object', properties: { index: { type: 'integer' }, id: { type: 'string' }, message: { type: 'string' } }, required: ['index', 'message'] } },
          },
          required: ['inserted', 'duplicates', 'rejected'],
        },
        ...errors,
      },
    },
  }, async (request: FastifyRequest<{ Body: { events: unknown[] } }>, reply) => {
    const auth = await authenticatePeer(request, SENDERS, deps);
    if (!auth.ok) {
      logger.warn({ source: request.ip, reason: auth.reason, detail: auth.message }, 'event batch refused');
      return refusePeer(reply, auth, SENDERS);
    }
    const sender = auth.identity.name ?? '';
    const { events } = request.body;
    if (events.length > MAX_BATCH_EVENTS) return sendError(reply, 413, 'BATCH_TOO_LARGE', `a batch holds at most ${MAX_BATCH_EVENTS} events; this one has ${events.length}`);
    const valid: AccessEvent[] = [];
    const kube: KubeEvent[] = [];
    const problems: NonNullable<EventBatchResult['problems']> = [];
    events.forEach((raw, index) => {
      const id = raw !== null && typeof raw === 'object' && 'id' in raw && typeof raw.id === 'string' ? raw.id.slice(0, 128) : undefined;
      const type = raw !== null && typeof raw === 'object' && 'type' in raw ? raw.type : undefined;
      if (type === 'kube-request' || type === 'kube-session') {
        // Kube events come only from kube proxies, each naming itself (issue 6).
        const kubeParsed = kubeEventSchema.safeParse(raw);
        if (!kubeParsed.success) {
          problems.push({ index, ...(id === undefined ? {} : { id }), message: kubeParsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') });
        } else if (auth.identity.type !== 'kube-proxy') {
          problems.push({ index, id: kubeParsed.data.id, message: 'kube events are accepted only from kube proxies' });
        } else if (kubeParsed.data.kubeProxy !== sender) {
          problems.push({ index, id: kubeParsed.data.id, message: `the event names ${JSON.stringify(kubeParsed.data.kubeProxy.slice(0, 64))} as its kube proxy, but was sent by "${sender}"` });
        } else {
          kube.push(kubeParsed.data);
        }
        return;
      }
      const parsed = accessEventSchema.safeParse(raw);
      if (!parsed.success) {
        problems.push({ index, ...(id === undefined ? {} : { id }), message: parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') });
      } else if (parsed.data.accessTier !== sender) {
        problems.push({ index, id: parsed.data.id, message: `the event names ${JSON.stringify(parsed.data.accessTier.slice(0, 64))} as its access tier, but was sent by "${sender}"` });
      } else {
        valid.push(parsed.data);
      }
    });
    const access = valid.length === 0 ? { inserted: 0, duplicates: 0 } : await deps.store.appendAccessEvents(valid);
    const kubeStored = kube.length === 0 ? { inserted: 0, duplicates: 0 } : await deps.store.appendKubeEvents(kube);
    const stored = { inserted: access.inserted + kubeStored.inserted, duplicates: access.duplicates + kubeStored.duplicates };
    if (problems.length > 0) logger.warn({ sender, rejected: problems.length, problems: problems.slice(0, 5) }, 'rejected access events in a batch');
    logger.debug({ sender, inserted: stored.inserted, duplicates: stored.duplicates }, 'access events stored');
    const result: EventBatchResult = { inserted: stored.inserted, duplicates: stored.duplicates, rejected: problems.length };
    if (problems.length > 0) result.problems = problems.slice(0, 100);
    return reply.send(result);
  });
  return Promise.resolve();
}
