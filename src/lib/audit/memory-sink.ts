import { CausewayError } from '../errors.ts';
import type { AccessEvent, AccessEventSink } from './event.ts';

interface Waiter {
  predicate: (event: AccessEvent) => boolean;
  resolve: (event: AccessEvent) => void;
}

/** Keeps events in memory: for tests and for embedding, where the owner reads `events`. */
export class MemoryEventSink implements AccessEventSink {
  readonly events: AccessEvent[] = [];
  #waiters = new Set<Waiter>();
  #closed = false;

  write(event: AccessEvent): void {
    if (this.#closed) throw new CausewayError('audit-sink-closed', 'access event written after the sink was closed; this is a bug');
    this.events.push(event);
    for (const waiter of this.#waiters) {
      if (waiter.predicate(event)) {
        this.#waiters.delete(waiter);
        waiter.resolve(event);
      }
    }
  }

  /** The first event (already written or still to come) that matches; rejects after timeoutMs. */
  async waitFor(predicate: (event: AccessEvent) => boolean, timeoutMs = 5000): Promise<AccessEvent> {
    const found = this.events.find(predicate);
    if (found !== undefined) return found;
    return new Promise<AccessEvent>((resolve, reject) => {
      const waiter: Waiter = {
        predicate,
        resolve: (event) => {
          clearTimeout(timer);
          resolve(event);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new CausewayError('audit-wait-timeout', `no matching access event within ${timeoutMs} ms; saw ${this.events.length}: ${JSON.stringify(this.events.slice(-5))}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}
