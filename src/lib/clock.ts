/** A seam for time, so tests can move it. Parts take a Clock in their options and default to systemClock. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
