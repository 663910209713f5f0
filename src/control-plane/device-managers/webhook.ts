/**
 * Checking device-manager webhooks (THREATS DT-03): a notification that a device changed is only
 * believed when it is signed, fresh and new.
 *
 * Header (`Causeway-Signature`, modelled on the common `t=…,v1=…` scheme):
 *
 *     Causeway-Signature: t=1764244800,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
 *
 * v1 = hex HMAC-SHA256(secret, `${t}.${raw body}`). Several v1 entries and several secrets may be
 * given (rotation); any match is enough. Comparison is constant-time. The timestamp must be within
 * `toleranceMs` (5 min) of now either way, and a (timestamp, body) pair already accepted inside that
 * window is refused as a replay. The replay memory is bounded; when it is full of live entries a new
 * webhook is refused (fail closed) rather than an old entry forgotten.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';

export const WEBHOOK_SIGNATURE_HEADER = 'causeway-signature';
export const DEFAULT_WEBHOOK_TOLERANCE_MS = 5 * 60_000;
export const DEFAULT_WEBHOOK_MAX_BODY_BYTES = 1024 * 1024;
const MAX_HEADER_LENGTH = 1024;
const MAX_SIGNATURES = 5;

export type WebhookRefusal = 'missing-signature' | 'malformed-signature' | 'too-large' | 'stale' | 'bad-signature' | 'replayed' | 'overloaded';

export type WebhookResult = { ok: true; timestamp: number } | { ok: false; reason: WebhookRefusal; message: string };

/** The header value for a body, for senders and tests. */
export function signWebhook(secret: string, body: string | Buffer, timestampSec: number): string {
  return `t=${timestampSec},v1=${mac(secret, timestampSec, body).toString('hex')}`;
}

function mac(secret: string, timestampSec: number, body: string | Buffer): Buffer {
  return createHmac('sha256', secret).update(`${timestampSec}.`).update(body).digest();
}

export interface WebhookVerifier {
  /** `signature`: the Causeway-Signature header as received (undefined when absent); `body`: the raw bytes, unparsed. */
  verify(input: { signature: string | string[] | undefined; body: string | Buffer }): WebhookResult;
}

export function createWebhookVerifier(options: { secrets: string[]; clock?: Clock; toleranceMs?: number; maxBodyBytes?: number; maxRemembered?: number }): WebhookVerifier {
  const secrets = options.secrets.filter((s) => s.length > 0);
  if (secrets.length === 0) throw new Error('a webhook verifier needs at least one non-empty secret');
  const clock = options.clock ?? systemClock;
  const toleranceMs = options.toleranceMs ?? DEFAULT_WEBHOOK_TOLERANCE_MS;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_WEBHOOK_MAX_BODY_BYTES;
  const maxRemembered = options.maxRemembered ?? 100_000;
  /** Accepted (timestamp, body digest) → when it may be forgotten (ms). */
  const seen = new Map<string, number>();

  const refuse = (reason: WebhookRefusal, message: string): WebhookResult => ({ ok: false, reason, message });

  function prune(now: number): void {
    for (const [key, until] of seen) if (until <= now) seen.delete(key);
  }

  return {
    verify({ signature, body }): WebhookResult {
      if (signature === undefined || signature === '' || (Array.isArray(signature) && signature.length === 0)) return refuse('missing-signature', 'the webhook carries no Causeway-Signature header');
      if (Array.isArray(signature) || signature.length > MAX_HEADER_LENGTH) return refuse('malformed-signature', 'the webhook signature header is malformed');
      const size = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
      if (size > maxBodyBytes) return refuse('too-large', `the webhook body is larger than ${maxBodyBytes} bytes`);

      let timestamp: number | undefined;
      const candidates: Buffer[] = [];
      for (const part of signature.split(',')) {
        const eq = part.indexOf('=');
        if (eq <= 0) return refuse('malformed-signature', 'the webhook signature header is malformed');
        const key = part.slice(0, eq).trim();
        const value = part.slice(eq + 1).trim();
        if (key === 't') {
          if (timestamp !== undefined || !/^\d{1,12}$/.test(value)) return refuse('malformed-signature', 'the webhook signature header is malformed');
          timestamp = Number(value);
        } else if (key === 'v1') {
          if (!/^[0-9a-f]{64}$/i.test(value) || candidates.length >= MAX_SIGNATURES) return refuse('malformed-signature', 'the webhook signature header is malformed');
          candidates.push(Buffer.from(value, 'hex'));
        }
        // Other schemes (v0, future versions) are ignored, never trusted.
      }
      if (timestamp === undefined || candidates.length === 0) return refuse('malformed-signature', 'the webhook signature header needs t= and v1=');

      // Every secret against every candidate, without stopping early: the time taken says nothing.
      let matched = false;
      for (const secret of secrets) {
        const expected = mac(secret, timestamp, body);
        for (const candidate of candidates) if (timingSafeEqual(expected, candidate)) matched = true;
      }
      if (!matched) return refuse('bad-signature', 'the webhook signature does not match');

      // Checked after the signature, so an unsigned request learns nothing about our clock.
      const now = clock.now();
      if (Math.abs(now - timestamp * 1000) > toleranceMs) return refuse('stale', 'the webhook timestamp is outside the accepted window; check the sender clock');

      const key = `${timestamp}.${createHash('sha256').update(body).digest('base64url')}`;
      const until = seen.get(key);
      if (until !== undefined && until > now) return refuse('replayed', 'this webhook was already received');
      if (seen.size >= maxRemembered) prune(now);
      if (seen.size >= maxRemembered) return refuse('overloaded', 'too many webhooks in the replay window; try again later');
      seen.set(key, timestamp * 1000 + toleranceMs + 1);
      return { ok: true, timestamp };
    },
  };
}
