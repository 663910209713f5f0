/**
 * Reconnect delays: exponential backoff with full jitter (a uniformly random delay between zero and
 * the exponential bound), so a fleet of connectors that lost the same access tier does not come back
 * in lockstep. The first retry comes within `firstMs` (100 ms), so a restarted access tier usually
 * has its tunnels back well within 2 s; the bound doubles from `baseMs` up to `capMs` (5 s), so a
 * connector never waits more than 5 s between attempts however long the outage.
 */
export interface BackoffOptions {
  firstMs?: number;
  baseMs?: number;
  capMs?: number;
  /** A number in [0, 1); Math.random by default. */
  random?: () => number;
}

export const DEFAULT_BACKOFF: Required<Omit<BackoffOptions, 'random'>> = { firstMs: 100, baseMs: 250, capMs: 5000 };

/** The delay before retry number `attempt` (0 for the first retry after a failure). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const firstMs = options.firstMs ?? DEFAULT_BACKOFF.firstMs;
  const baseMs = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const capMs = options.capMs ?? DEFAULT_BACKOFF.capMs;
  const random = options.random ?? Math.random;
  const bound = attempt <= 0 ? Math.min(firstMs, capMs) : Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * bound);
}
