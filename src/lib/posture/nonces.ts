/**
 * Server-issued nonces for posture reports, in memory: for one control-plane process and for
 * tests. Several replicas need the store-backed kind (same interface) so that a nonce issued by one
 * is consumed once across all of them.
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.ts';
import type { NonceStore } from './report.ts';

export const DEFAULT_NONCE_TTL_MS = 5 * 60_000;

export interface MemoryNonceStoreOptions {
  clock: Clock;
  /** How long an issued nonce stays usable (default 5 min). */
  ttlMs?: number;
  /** The most outstanding nonces kept; the oldest are dropped beyond it (default 10000). */
  maxOutstanding?: number;
}

export interface MemoryNonceStore extends NonceStore {
  /** A new nonce (32 random bytes, base64url) bound to the device. */
  issue(deviceId: string): string;
  /** How many are outstanding (issued, not consumed, not yet swept). */
  size(): number;
}

export function createMemoryNonceStore(options: MemoryNonceStoreOptions): MemoryNonceStore {
  const ttlMs = options.ttlMs ?? DEFAULT_NONCE_TTL_MS;
  const max = options.maxOutstanding ?? 10_000;
  // Insertion order = issue order, so the first entries are the oldest.
  const nonces = new Map<string, { deviceId: string; expiresAt: number }>();

  function sweep(now: number): void {
    for (const [nonce, entry] of nonces) {
      if (entry.expiresAt > now && nonces.size <= max) break;
      nonces.delete(nonce);
    }
  }

  return {
    issue(deviceId) {
      const nonce = randomBytes(32).toString('base64url');
      nonces.set(nonce, { deviceId, expiresAt: options.clock.now() + ttlMs });
      sweep(options.clock.now());
      return nonce;
    },
    consume(nonce, deviceId) {
      const entry = nonces.get(nonce);
      if (entry === undefined) return Promise.resolve(false);
      // A nonce meant for another device is not used up by this attempt.
      if (deviceId !== undefined && entry.deviceId !== deviceId) return Promise.resolve(false);
      nonces.delete(nonce);
      return Promise.resolve(entry.expiresAt > options.clock.now());
    },
    size() {
      return nonces.size;
    },
  };
}
