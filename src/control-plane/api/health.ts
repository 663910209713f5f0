/**
 * Health: `/healthz` says the process is up, `/readyz` that it can serve (the store answers and the CA
 * is loaded and valid). On the public listener both answer with a bare status; the reasons (which check
 * failed) are only on the metrics listener, with `/metrics` (CP-10).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import type { CertificateAuthority } from '../../lib/pki/index.ts';
import type { Store } from '../store/index.ts';
import type { ControlPlaneMetrics } from './metrics.ts';

export interface Readiness {
  ready: boolean;
  checks: { store: string; ca: string };
}

export interface HealthDeps {
  store: Pick<Store, 'currentRevision'>;
  ca: CertificateAuthority;
  clock: Clock;
  /** How long the store may take to answer. Default 2 s. */
  timeoutMs?: number;
}

export async function checkReadiness(deps: HealthDeps): Promise<Readiness> {
  const timeoutMs = deps.timeoutMs ?? 2000;
  let store = 'ok';
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      deps.store.currentRevision(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    store = `unreachable: ${err instanceof Error ? err.message.slice(0, 200) : 'error'}`;
  } finally {
    clearTimeout(timer);
  }
  const ca = deps.ca.notAfter.getTime() > deps.clock.now() ? 'ok' : 'expired';
  return { ready: store === 'ok' && ca === 'ok', checks: { store, ca } };
}

const statusSchema = {
  type: 'object',
  properties: { status: { type: 'string' } },
  required: ['status'],
  additionalProperties: false,
} as const;

/** Bare /healthz and /readyz for load balancers on the public listener. */
export function registerPublicHealthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  app.get('/healthz', { config: { access: 'public' }, schema: { hide: true, response: { 200: statusSchema } } }, () => ({ status: 'ok' }));
  app.get('/readyz', { config: { access: 'public' }, schema: { hide: true, response: { 200: statusSchema, 503: statusSchema } } }, async (_request, reply) => {
    const readiness = await checkReadiness(deps);
    return reply.code(readiness.ready ? 200 : 503).send({ status: readiness.ready ? 'ready' : 'not-ready' });
  });
}

/** The request handler of the metrics listener: /metrics, /healthz, /readyz (with reasons); GET only. */
export function metricsRequestHandler(metrics: ControlPlaneMetrics, deps: HealthDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const send = (res: ServerResponse, status: number, type: string, body: string): void => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.end(body);
  };
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    void (async () => {
      try {
        if (path === '/metrics') {
          send(res, 200, metrics.registry.contentType, await metrics.registry.metrics());
        } else if (path === '/healthz') {
          send(res, 200, 'application/json', JSON.stringify({ status: 'ok' }));
        } else if (path === '/readyz') {
          const readiness = await checkReadiness(deps);
          send(res, readiness.ready ? 200 : 503, 'application/json', JSON.stringify({ status: readiness.ready ? 'ready' : 'not-ready', checks: readiness.checks }));
        } else {
          send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n');
        }
      } catch {
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      }
    })();
  };
}
