/**
 * Two small patterns that every follower of a change feed needs:
 *
 * - `coalesce(task)`: run `task` now; a call while it runs asks for exactly one more pass after it
 *   (however many calls came), and every caller gets the promise of the pass in progress. A burst
 *   of store revisions thus costs at most two reads, and no revision is missed.
 * - `TaskSet`: remembers the promises still running so `idle()` (tests) and `close()` can wait for them.
 */

export interface Coalesced {
  /** Runs a pass now, or asks the one in progress for exactly one more; resolves when they are done. */
  run(): Promise<void>;
  /** Resolves when no pass is running (does not start one). */
  settled(): Promise<void>;
}

/** Errors are the task's own business: catch and log inside it (a rejection ends the extra pass). */
export function coalesce(task: () => Promise<void>, isClosed: () => boolean = () => false): Coalesced {
  let running: Promise<void> | undefined;
  let again = false;
  return {
    run() {
      if (isClosed()) return running ?? Promise.resolve();
      if (running !== undefined) {
        again = true;
        return running;
      }
      running = (async () => {
        try {
          do {
            again = false;
            await task();
          } while (again && !isClosed());
        } finally {
          running = undefined;
        }
      })();
      return running;
    },
    settled() {
      return (running ?? Promise.resolve()).catch(() => undefined);
    },
  };
}

export class TaskSet {
  readonly #running = new Set<Promise<unknown>>();

  /** Remembers `promise` until it settles; returns it. */
  track<T>(promise: Promise<T>): Promise<T> {
    this.#running.add(promise);
    const forget = (): void => {
      this.#running.delete(promise);
    };
    void promise.then(forget, forget);
    return promise;
  }

  /** Whether anything tracked is still running. */
  get busy(): boolean {
    return this.#running.size > 0;
  }

  /** Resolves once nothing tracked is running, including what the running tasks start meanwhile. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }
}
