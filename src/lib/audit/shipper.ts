/**
 * The HTTPS side of the spool's shipper: one `POST /api/v1/events/batch` per batch, with the part's
 * current client certificate (a getter, so a renewed one is used from the next batch on). Anything
 * but a 2xx with a well-formed answer is an error, and the spool keeps the batch and retries it.
 */
import { CausewayError } from '../errors.ts';
import { agentPerCertificate, describeErrorBody, requestControlPlane } from '../enroll/transport.ts';
import type { ControlPlaneFetch, PeerTlsMaterial } from '../enroll/transport.ts';
import type { AuditEvent } from './event.ts';
import type { EventBatchSender } from './spool.ts';
import { EVENTS_BATCH_PATH, eventBatchResultSchema } from './wire.ts';
import type { EventBatchResult } from './wire.ts';

export interface HttpEventSenderOptions {
  controlPlaneUrl: string;
  tls: () => PeerTlsMaterial;
  /** Default 15 s per batch. */
  timeoutMs?: number;
  fetch?: ControlPlaneFetch;
}

export function httpEventSender(options: HttpEventSenderOptions): EventBatchSender {
  const fetch = options.fetch ?? requestControlPlane;
  // One kept-alive connection per certificate: a renewal brings a new agent, the old one is dropped.
  const { agentFor } = agentPerCertificate();
  return async (events: AuditEvent[]): Promise<EventBatchResult> => {
    const tls = options.tls();
    const answer = await fetch({ baseUrl: options.controlPlaneUrl, path: EVENTS_BATCH_PATH, method: 'POST', body: { events }, tls, agent: agentFor(tls), timeoutMs: options.timeoutMs ?? 15_000 });
    if (answer.status < 200 || answer.status > 299) {
      throw new CausewayError('EVENTS_SHIP_FAILED', `the control plane did not take ${events.length} access events: ${answer.status} (${describeErrorBody(answer.body)})`, { retryable: true });
    }
    const parsed = eventBatchResultSchema.safeParse(answer.body);
    if (!parsed.success) throw new CausewayError('EVENTS_SHIP_FAILED', 'the control plane answered an event batch without counts', { retryable: true });
    const body = answer.body as EventBatchResult;
    return { inserted: parsed.data.inserted, duplicates: parsed.data.duplicates, rejected: parsed.data.rejected ?? 0, ...(Array.isArray(body.problems) ? { problems: body.problems } : {}) };
  };
}
