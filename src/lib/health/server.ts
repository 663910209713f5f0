/**
 * A small local HTTP listener for health checks of a part (`--health-listen 127.0.0.1:8081`):
 *
 *     GET /healthz   200 {"status":"ok"} while the process runs (liveness)
 *     GET /readyz    200 when the part serves (status ok, or degraded with a message saying why),
 *                    503 when it cannot (no configuration yet)
 *     GET /metrics   Prometheus text exposition, when a `metrics` callback is given (else 404)
 *
 * Bind it to loopback or a private address: it says which revision is enforced, since when the
 * control plane is unreachable and (with metrics) who connects to which services how often, which is
 * no one else's business (CP-10).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RemoteConfigStatus } from '../config/remote-source.ts';
import { UserError } from '../errors.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';

export interface HealthReport {
  /** Serving: readyz answers 200. */
  ready: boolean;
  status: 'ok' | 'degraded' | 'unavailable';
  /** One line for people. */
  message: string;
  details?: Record<string, unknown>;
}

export interface HealthServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** The Prometheus text of a registry (prom-client: `{ contentType: registry.contentType, body: await registry.metrics() }`). */
export interface MetricsScrape {
  contentType: string;
  body: string;
}

export interface HealthServerOptions {
  host: string;
  port: number;
  check: () => HealthReport;
  /** When given, GET /metrics answers with what it returns. */
  metrics?: () => Promise<MetricsScrape>;
  logger?: Logger;
}

export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const logger = options.logger ?? silentLogger();
  const metrics = options.metrics;
  const served = metrics === undefined ? '/healthz and /readyz are' : '/healthz, /readyz and /metrics are';
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { status: 'error', message: 'GET only' });
    if (url === '/healthz') return send(200, { status: 'ok' });
    if (url === '/readyz') {
      let report: HealthReport;
      try {
        report = options.check();
      } catch (err) {
        logger.error({ err }, 'the readiness check failed');
        report = { ready: false, status: 'unavailable', message: 'the readiness check failed; see the log' };
      }
      return send(report.ready ? 200 : 503, { status: report.status, message: report.message, ...(report.details === undefined ? {} : { details: report.details }) });
    }
    if (url === '/metrics' && metrics !== undefined) {
      void (async () => {
        let scrape: MetricsScrape;
        try {
          scrape = await metrics();
        } catch (err) {
          logger.error({ err }, 'collecting the metrics failed');
          if (!res.headersSent) send(500, { status: 'error', message: 'collecting the metrics failed; see the log' });
          return;
        }
        if (res.destroyed) return;
        res.writeHead(200, { 'content-type': scrape.contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(scrape.body) });
        res.end(req.method === 'HEAD' ? undefined : scrape.body);
      })();
      return;
    }
    return send(404, { status: 'error', message: `not found: ${served} served here` });
  });
  server.headersTimeout = 5_000;
  server.requestTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new UserError('HEALTH_LISTEN', `cannot listen for health checks on ${options.host}:${options.port} (${err.code ?? err.message}); choose another --health-listen`, { cause: err })));
    server.listen(options.port, options.host, resolve);
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    port: address.port,
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The readiness of a part that follows the control plane's config stream. */
export function configStreamHealth(status: RemoteConfigStatus, now: number): HealthReport {
  const revision = status.revision === undefined ? 'none' : String(status.revision);
  const details: Record<string, unknown> = {
    connected: status.connected,
    stale: status.stale,
    revision: status.revision ?? null,
    configVersion: status.version ?? null,
    source: status.source,
    lastContact: status.lastContact === undefined ? null : new Date(status.lastContact).toISOString(),
  };
  if (status.version === undefined) {
    return { ready: false, status: 'unavailable', message: `no configuration yet: waiting for the control plane${status.lastError === undefined ? '' : ` (${status.lastError})`}`, details };
  }
  if (status.stale) {
    const since = status.unreachableSince ?? status.lastContact ?? now;
    details.unreachableSince = new Date(since).toISOString();
    return { ready: true, status: 'degraded', message: `serving last good config (revision ${revision}), control plane unreachable since ${new Date(since).toISOString()}`, details };
  }
  return { ready: true, status: 'ok', message: `following the control plane (revision ${revision})`, details };
}
