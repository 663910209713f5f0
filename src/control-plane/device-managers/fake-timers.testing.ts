/** A clock and timers that move only when a test says so; `advance` fires due timers in order. */
import type { Clock } from '../../lib/clock.ts';
import type { Timers } from './sync.ts';

export interface FakeTimers {
  clock: Clock;
  timers: Timers;
  /** Moves time forward, firing every timer that falls due, in order, letting promises settle after each. */
  advance(ms: number): Promise<void>;
  /** Timers waiting to fire. */
  pending(): number;
  /** When the next timer fires, in ms from now; undefined when none. */
  nextInMs(): number | undefined;
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

export function fakeTimers(startMs = Date.parse('2026-11-27T12:00:00Z')): FakeTimers {
  let now = startMs;
  let seq = 0;
  const queue = new Map<number, { at: number; callback: () => void }>();
  const earliest = (limit: number): [number, { at: number; callback: () => void }] | undefined => {
    let best: [number, { at: number; callback: () => void }] | undefined;
    for (const entry of queue) if (entry[1].at <= limit && (best === undefined || entry[1].at < best[1].at || (entry[1].at === best[1].at && entry[0] < best[0]))) best = entry;
    return best;
  };
  return {
    clock: { now: () => now },
    timers: {
      setTimeout(callback, ms) {
        const id = ++seq;
        queue.set(id, { at: now + Math.max(0, ms), callback });
        return id;
      },
      clearTimeout(handle) {
        queue.delete(handle as number);
      },
    },
    async advance(ms: number): Promise<void> {
      const target = now + ms;
      await settle();
      for (let due = earliest(target); due !== undefined; due = earliest(target)) {
        queue.delete(due[0]);
        now = due[1].at;
        due[1].callback();
        await settle();
      }
      now = target;
      await settle();
    },
    pending: () => queue.size,
    nextInMs(): number | undefined {
      let min: number | undefined;
      for (const { at } of queue.values()) if (min === undefined || at < min) min = at;
      return min === undefined ? undefined : min - now;
    },
  };
}
