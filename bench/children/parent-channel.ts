/**
 * The child side of the IPC channel between the benchmark and one of its Node children (backend,
 * client proxy, access tier, connector): announce `ready` with what the parent needs (ports), answer
 * `memory` requests (optionally after a full GC, the child runs with --expose-gc), and exit when the
 * parent asks or goes away, so no child outlives a benchmark run.
 */
export type RequestHandler = (message: Record<string, unknown>) => Promise<Record<string, unknown>>;

export function serveParent(
  ready: Record<string, unknown>,
  close: () => Promise<void>,
  handlers: Record<string, RequestHandler> = {},
): void {
  const send = process.send?.bind(process);
  if (send === undefined) throw new Error('this is a benchmark child process: start it from bench/run.ts (it needs an IPC channel)');

  const reply = (message: Record<string, unknown>): void => {
    if (process.connected) send(message);
  };

  let closing = false;
  const shutdown = (code: number): void => {
    if (closing) return;
    closing = true;
    const force = setTimeout(() => process.exit(code), 3_000);
    force.unref();
    close()
      .catch((err: unknown) => console.error('close failed:', err))
      .finally(() => process.exit(code));
  };

  process.on('message', (raw: unknown) => {
    const message = raw as Record<string, unknown>;
    const id = message['id'];
    const type = String(message['type']);
    void (async () => {
      try {
        if (type === 'memory') {
          if (message['gc'] === true) collectGarbage();
          const m = process.memoryUsage();
          reply({ id, type, rss: m.rss, heapUsed: m.heapUsed, external: m.external });
        } else if (type === 'close') {
          reply({ id, type });
          shutdown(0);
        } else if (handlers[type] !== undefined) {
          reply({ id, type, ...(await handlers[type](message)) });
        } else {
          reply({ id, type: 'error', message: `unknown request "${type}"` });
        }
      } catch (err) {
        reply({ id, type: 'error', message: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  process.on('disconnect', () => shutdown(0));
  process.on('SIGTERM', () => shutdown(0));
  send({ type: 'ready', ...ready });
}

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return;
  gc();
  gc();
}
