import { CausewayError } from '../errors.ts';
import { deepFreeze } from './snapshot.ts';
import type { ConfigSnapshot, ConfigSource } from './snapshot.ts';

/**
 * A ConfigSource fed by its owner: tests, embedding, and adapters that receive snapshots from
 * elsewhere (the control plane's config stream). `ready()` waits for the first snapshot and rejects
 * if the source is closed before one arrives.
 */
export class StaticConfigSource implements ConfigSource {
  #current: ConfigSnapshot | undefined;
  readonly #listeners = new Set<(snapshot: ConfigSnapshot) => void>();
  readonly #waiting: Array<{ resolve: (snapshot: ConfigSnapshot) => void; reject: (err: Error) => void }> = [];
  #closed = false;

  constructor(initial?: ConfigSnapshot) {
    if (initial !== undefined) this.#current = deepFreeze(initial);
  }

  current(): ConfigSnapshot | undefined {
    return this.#current;
  }

  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  ready(): Promise<ConfigSnapshot> {
    if (this.#current !== undefined) return Promise.resolve(this.#current);
    if (this.#closed) return Promise.reject(closedError());
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /**
   * Makes `snapshot` current (frozen) and tells every subscriber, unless its version equals the
   * current one. A listener that throws does not stop the others; the first error is rethrown to the
   * caller afterwards. Ignored after close().
   */
  update(snapshot: ConfigSnapshot): void {
    if (this.#closed) return;
    if (this.#current?.version === snapshot.version) return;
    this.#current = deepFreeze(snapshot);
    for (const waiter of this.#waiting.splice(0)) waiter.resolve(snapshot);
    const errors: unknown[] = [];
    for (const listener of [...this.#listeners]) {
      try {
        listener(snapshot);
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'several configuration listeners failed');
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    for (const waiter of this.#waiting.splice(0)) waiter.reject(closedError());
    return Promise.resolve();
  }
}

function closedError(): CausewayError {
  return new CausewayError('config-closed', 'the configuration source was closed before it had a configuration');
}
