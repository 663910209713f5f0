import { deepFreeze } from './snapshot.ts';
import type { ConfigSnapshot, ConfigSource } from './snapshot.ts';
import { FirstSnapshotWaiters, SnapshotSubscribers } from './subscribers.ts';

/**
 * A ConfigSource fed by its owner: tests, embedding, and adapters that receive snapshots from
 * elsewhere (the control plane's config stream). `ready()` waits for the first snapshot and rejects
 * if the source is closed before one arrives.
 */
export class StaticConfigSource implements ConfigSource {
  #current: ConfigSnapshot | undefined;
  readonly #subscribers = new SnapshotSubscribers();
  readonly #waiting = new FirstSnapshotWaiters();
  #closed = false;

  constructor(initial?: ConfigSnapshot) {
    if (initial !== undefined) this.#current = deepFreeze(initial);
  }

  current(): ConfigSnapshot | undefined {
    return this.#current;
  }

  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void {
    return this.#subscribers.subscribe(listener);
  }

  ready(): Promise<ConfigSnapshot> {
    return this.#waiting.wait(this.#current, this.#closed);
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
    this.#waiting.resolve(snapshot);
    const errors: unknown[] = [];
    this.#subscribers.notify(snapshot, (err) => errors.push(err));
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'several configuration listeners failed');
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#subscribers.clear();
    this.#waiting.rejectClosed();
    return Promise.resolve();
  }
}
