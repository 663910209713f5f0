/**
 * Kube audit events: what the kube proxy saw and decided, one record per Kubernetes API request
 * (`kube-request`) and one per exec/attach/port-forward session when it ends (`kube-session`).
 * They travel with the access events (same spool, shipper and ingest route, POST
 * /api/v1/events/batch) and are listed by `GET /api/v1/events?type=kube-request|kube-session`.
 *
 * Like access events, every field is data and none holds a secret: `path` never carries the query
 * string (tokens could be there), `command` is what the user ran (the audit point of it) and the
 * proxy's own credentials never appear.
 */
import { z } from 'zod';

export type KubeEventType = 'kube-request' | 'kube-session';

export interface KubeEvent {
  /** A UUID v7 (newEventId). */
  id: string;
  /** ISO 8601 time the request arrived (request) or the session ended (session). */
  time: string;
  type: KubeEventType;
  /** The kube proxy's --cluster-name, e.g. `prod`. */
  clusterName: string;
  /** The kube proxy's name (its enrolled certificate's name; the cluster name without a control plane). */
  kubeProxy: string;
  /** The Kubernetes username impersonated (after the prefix); `''` when the token did not verify. */
  user: string;
  /** The Causeway user id (the token's `sub`), when the token verified. */
  userId?: string;
  groups: string[];
  device?: string;
  verb: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  apiGroup?: string;
  /** The request path without its query string. */
  path: string;
  /** The HTTP status given to the client (101 for an upgraded session). */
  code: number;
  latencyMs: number;
  decision: 'allow' | 'deny';
  /** Why it was denied (a stable code, e.g. `token-invalid`, `rule-deny`, `user-disabled`), or why a session ended. */
  reason?: string;
  /** ip:port of the peer. */
  source: string;
  /** exec: the `command=` query parameters in order. */
  command?: string[];
  container?: string;
  /** exec/attach: stdin was asked for. */
  interactive?: boolean;
  tty?: boolean;
  /** Sessions: how long the upgraded stream lasted. */
  durationMs?: number;
  transport?: 'websocket' | 'spdy';
  /** Sessions: bytes from the client to the API server and back. */
  bytesUp?: number;
  bytesDown?: number;
}

/** Where kube events go; `write` never blocks and never throws. */
export interface KubeEventSink {
  write(event: KubeEvent): void;
}

export const KUBE_EVENT_TYPES: readonly KubeEventType[] = ['kube-request', 'kube-session'];

const text = z.string().max(1024);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** One kube event as the store takes it; unknown fields are dropped. */
export const kubeEventSchema = z.object({
  id: z.string().min(1).max(128),
  time: z.iso.datetime({ offset: true }),
  type: z.enum(['kube-request', 'kube-session']),
  clusterName: z.string().min(1).max(256),
  kubeProxy: z.string().min(1).max(256),
  user: text,
  userId: text.optional(),
  groups: z.array(text).max(256),
  device: text.optional(),
  verb: z.string().max(64),
  resource: text.optional(),
  subresource: text.optional(),
  namespace: text.optional(),
  name: text.optional(),
  apiGroup: text.optional(),
  path: z.string().max(4096),
  code: z.number().int().min(0).max(999),
  latencyMs: z.number().min(0).max(Number.MAX_SAFE_INTEGER),
  decision: z.enum(['allow', 'deny']),
  reason: text.optional(),
  source: text,
  command: z.array(z.string().max(4096)).max(256).optional(),
  container: text.optional(),
  interactive: z.boolean().optional(),
  tty: z.boolean().optional(),
  durationMs: z.number().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  transport: z.enum(['websocket', 'spdy']).optional(),
  bytesUp: count.optional(),
  bytesDown: count.optional(),
}) satisfies z.ZodType<KubeEvent>;
