import type { Logger } from './log.ts';

/** Every long-running part implements this: close() drains gracefully. */
export interface Closable {
  close(): Promise<void>;
}

/**
 * Closes the given parts (in reverse start order) on SIGTERM or SIGINT. A second signal exits at once.
 * Only entry points call this: it touches process state.
 */
export function closeOnSignals(parts: Closable[], logger: Logger): void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (closing) {
      logger.warn({ signal }, 'second signal, exiting now');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal }, 'shutting down');
    void (async () => {
      for (const part of [...parts].reverse()) {
        try {
          await part.close();
        } catch (err) {
          logger.error({ err }, 'error while closing');
        }
      }
      process.exit(0);
    })();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
