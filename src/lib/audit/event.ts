/**
 * Access events: one record per connection decision (DESIGN.md §8: every decision is an audit event).
 * An allowed connection is written once, when it ends, with its byte counts and duration; a denial is
 * written at once. Every field is data: sinks JSON-encode events, nothing is ever used as a format
 * string, and no field ever holds a secret (no keys, tokens or certificate bodies; a serial is public).
 */
import { randomFillSync } from 'node:crypto';
import type { KubeEvent } from './kube-event.ts';

export type AccessDecision = 'allow' | 'deny' | 'would-deny';

export interface AccessEvent {
  /** A UUID v7 (time-ordered) unless the producer chose otherwise. */
  id: string;
  /** ISO 8601 time of the decision. */
  time: string;
  type: 'access';
  decision: AccessDecision;
  /** Stable reason codes, e.g. `trust-cert-valid`, `unknown-service`, `target-not-in-service`. */
  reasons: string[];
  /** The access tier that decided. */
  accessTier: string;
  /** The service name (metadata.name), when the SNI named one. */
  service?: string;
  /** The SNI as canonicalised, or a short, JSON-safe rendering of what was sent. */
  sni?: string;
  /** host:port the client asked for (CHAIN mode) or the fixed backend (TCP mode). */
  target?: string;
  /** host:port actually dialled, after the backend DNS override. */
  dialled?: string;
  via?: 'direct' | 'connector';
  connector?: string;
  user?: string;
  device?: string;
  certSerial?: string;
  /** ip:port of the peer. */
  source: string;
  bytesUp?: number;
  bytesDown?: number;
  durationMs?: number;
  closeReason?: string;
}

/** Any event a part spools and ships: access events, and the kube proxy's kube events (kube-event.ts). */
export type AuditEvent = AccessEvent | KubeEvent;

/** Where access events go. `write` never blocks and never throws for I/O reasons; `close` flushes. */
export interface AccessEventSink {
  write(event: AccessEvent): void;
  close(): Promise<void>;
}

/**
 * A UUID v7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Time-ordered, so event files
 * and stores sort by id.
 */
export function newEventId(nowMs: number = Date.now()): string {
  const bytes = Buffer.allocUnsafe(16);
  randomFillSync(bytes, 6, 10);
  let ms = Math.max(0, Math.floor(nowMs));
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
