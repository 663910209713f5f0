import { CausewayError } from '../errors.ts';
import type { ConfigSnapshot } from './snapshot.ts';

/**
 * The subscribers of a ConfigSource: what `subscribe()` adds and a new snapshot is told to. Each
 * source decides what a listener's failure means (rethrown to the caller, or logged), so a listener
 * that throws is handed to `onError` and never stops the others.
 */
export class SnapshotSubscribers {
  readonly #listeners = new Set<(snapshot: ConfigSnapshot) => void>();

  /** Adds `listener`; returns the function that removes it. */
  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Calls every listener subscribed now, in the order they subscribed; one added meanwhile waits for the next snapshot. */
  notify(snapshot: ConfigSnapshot, onError: (err: unknown) => void): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(snapshot);
      } catch (err) {
        onError(err);
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}

/** The callers of `ready()` waiting for a source's first snapshot, for sources that are fed one (not read). */
export class FirstSnapshotWaiters {
  readonly #waiting: Array<{ resolve: (snapshot: ConfigSnapshot) => void; reject: (err: Error) => void }> = [];

  /** `ready()`: the current snapshot, else the next one; rejects once the source is closed without one. */
  wait(current: ConfigSnapshot | undefined, closed: boolean): Promise<ConfigSnapshot> {
    if (current !== undefined) return Promise.resolve(current);
    if (closed) return Promise.reject(closedError());
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  resolve(snapshot: ConfigSnapshot): void {
    for (const waiter of this.#waiting.splice(0)) waiter.resolve(snapshot);
  }

  /** The source closed: every waiter is rejected with `config-closed`. */
  rejectClosed(): void {
    for (const waiter of this.#waiting.splice(0)) waiter.reject(closedError());
  }
}

function closedError(): CausewayError {
  return new CausewayError('config-closed', 'the configuration source was closed before it had a configuration');
}
