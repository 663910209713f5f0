/**
 * Prometheus metrics of the control plane, in a registry of its own (so several control planes in one
 * process, as in tests, do not collide). Served on the metrics listener (`--metrics-listen`), not on
 * the public one unless configured (CP-10).
 *
 *   causeway_http_requests_total{method,route,status}        requests answered
 *   causeway_http_request_duration_seconds{method,route}     time to answer
 *   causeway_store_operation_duration_seconds{operation,outcome}  store latency, per Store method
 *   causeway_objects{kind}                                   spec objects by kind (read at scrape)
 *   causeway_config_revision                                 the change feed's current revision (read at scrape)
 *   causeway_connected_access_tiers                          access tiers on the config stream (set by the stream plugin)
 */
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../../lib/log.ts';
import type { Store } from '../store/index.ts';

export interface ControlPlaneMetrics {
  registry: Registry;
  httpRequests: Counter<'method' | 'route' | 'status'>;
  httpDuration: Histogram<'method' | 'route'>;
  storeDuration: Histogram<'operation' | 'outcome'>;
  /** The config-stream plugin keeps this at the number of access tiers connected to this replica. */
  connectedAccessTiers: Gauge;
}

export interface CreateMetricsOptions {
  store: Pick<Store, 'listObjects' | 'currentRevision'>;
  logger: Logger;
  /** Node's process metrics (CPU, memory, event loop). Off by default: they install process-wide observers. */
  processMetrics?: boolean;
}

export function createMetrics(options: CreateMetricsOptions): ControlPlaneMetrics {
  const registry = new Registry();
  const { store, logger } = options;
  if (options.processMetrics === true) collectDefaultMetrics({ register: registry });
  const httpRequests = new Counter({ name: 'causeway_http_requests_total', help: 'HTTP requests answered by the control plane API', labelNames: ['method', 'route', 'status'] as const, registers: [registry] });
  const httpDuration = new Histogram({
    name: 'causeway_http_request_duration_seconds',
    help: 'Time the control plane API took to answer',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const storeDuration = new Histogram({
    name: 'causeway_store_operation_duration_seconds',
    help: 'Latency of store operations',
    labelNames: ['operation', 'outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  new Gauge({
    name: 'causeway_objects',
    help: 'Spec objects in the store, by kind',
    labelNames: ['kind'] as const,
    registers: [registry],
    async collect() {
      try {
        const counts = new Map<string, number>();
        for (const object of await store.listObjects()) counts.set(object.kind, (counts.get(object.kind) ?? 0) + 1);
        this.reset();
        for (const [kind, count] of counts) this.set({ kind }, count);
      } catch (err) {
        logger.warn({ err }, 'counting objects for the metrics failed');
      }
    },
  });
  new Gauge({
    name: 'causeway_config_revision',
    help: 'The current revision of the config change feed',
    registers: [registry],
    async collect() {
      try {
        this.set(await store.currentRevision());
      } catch (err) {
        logger.warn({ err }, 'reading the config revision for the metrics failed');
      }
    },
  });
  const connectedAccessTiers = new Gauge({ name: 'causeway_connected_access_tiers', help: 'Access tiers connected to this replica\'s config stream', registers: [registry] });
  return { registry, httpRequests, httpDuration, storeDuration, connectedAccessTiers };
}

/**
 * The store with every asynchronous method timed into `histogram` (operation = method name).
 * Methods are called on the real store, so its private fields keep working.
 */
export function instrumentStore(store: Store, histogram: Histogram<'operation' | 'outcome'>): Store {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const cached = wrapped.get(property);
      if (cached !== undefined) return cached;
      const method = value as (...args: unknown[]) => unknown;
      const operation = typeof property === 'string' ? property : 'symbol';
      const timed = (...args: unknown[]): unknown => {
        const started = performance.now();
        const result = method.apply(target, args);
        if (!(result instanceof Promise)) return result;
        return result.then(
          (v: unknown) => {
            histogram.observe({ operation, outcome: 'ok' }, (performance.now() - started) / 1000);
            return v;
          },
          (err: unknown) => {
            histogram.observe({ operation, outcome: 'error' }, (performance.now() - started) / 1000);
            throw err;
          },
        );
      };
      wrapped.set(property, timed);
      return timed;
    },
  });
}
