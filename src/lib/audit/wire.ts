/**
 * Access events from a part to the control plane (the server is src/control-plane/events-ingest):
 *
 *     POST /api/v1/events/batch   { events: AccessEvent[] }   with the part's client certificate
 *     200 { inserted, duplicates, rejected, problems? }
 *
 * At most MAX_BATCH_EVENTS events and MAX_BATCH_BYTES of JSON per batch (413 beyond). Events are
 * stored once per id: a batch sent again after a lost answer counts as duplicates and changes
 * nothing, which is what lets the shipper resend without fear. An event that does not
 * validate, or that names another access tier than the sender's certificate, is `rejected` (the
 * others are stored); `problems` says which and why.
 */
import { z } from 'zod';
import type { AccessEvent } from './event.ts';

export const EVENTS_BATCH_PATH = '/api/v1/events/batch';
export const MAX_BATCH_EVENTS = 1000;
export const MAX_BATCH_BYTES = 1024 * 1024;

export interface EventBatchResult {
  inserted: number;
  duplicates: number;
  rejected: number;
  problems?: Array<{ index: number; id?: string; message: string }>;
}

const text = z.string().max(1024);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** One access event as the store takes it; unknown fields are dropped. */
export const accessEventSchema = z.object({
  id: z.string().min(1).max(128),
  time: z.iso.datetime({ offset: true }),
  type: z.literal('access'),
  decision: z.enum(['allow', 'deny', 'would-deny']),
  reasons: z.array(z.string().max(256)).max(64),
  accessTier: z.string().min(1).max(256),
  service: text.optional(),
  sni: text.optional(),
  target: text.optional(),
  dialled: text.optional(),
  via: z.enum(['direct', 'connector']).optional(),
  connector: text.optional(),
  user: text.optional(),
  device: text.optional(),
  certSerial: z.string().max(128).optional(),
  source: text,
  bytesUp: count.optional(),
  bytesDown: count.optional(),
  durationMs: z.number().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  closeReason: text.optional(),
}) satisfies z.ZodType<AccessEvent>;

export const eventBatchResultSchema = z.object({
  inserted: count,
  duplicates: count,
  rejected: count.optional(),
});
