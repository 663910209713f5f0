/**
 * Prometheus metrics of an access tier or a connector, in a registry of their own (several parts in
 * one process, as in the quickstart and in tests, never collide). Served as /metrics on the part's
 * local health listener (`--health-listen`), never on the public one (CP-10).
 *
 *   causeway_connections_total{service,decision}        connections decided (see below for when)
 *   causeway_connections_active{service}                connections being relayed now (read at scrape)
 *   causeway_decisions_total{result,reason}             decisions: allow | deny | would-deny, first reason code
 *   causeway_bytes_total{direction}                     bytes relayed, up (client → backend) and down
 *   causeway_connection_duration_seconds                how long allowed connections lasted
 *   causeway_tunnels{state}                             connector tunnels by state (read at scrape)
 *   causeway_tunnel_streams                             streams open on those tunnels (read at scrape)
 *   causeway_tunnel_streams_opened_total                tunnel streams opened
 *   causeway_tunnel_streams_closed_total{outcome}       tunnel streams closed: clean | aborted
 *   causeway_open_sockets                               access tier: accepted TCP connections open now
 *   causeway_config_info{version}                       1, labelled with the configuration version enforced
 *   causeway_config_revision                            the control plane's revision enforced (0 without one)
 *   causeway_config_stale                               1 while serving the last good configuration through
 *                                                       a control-plane outage
 *   causeway_cert_expiry_seconds                        seconds until the part's own certificate expires
 *                                                       (once `track` names the certificate)
 *   (and prom-client's default process_* and nodejs_* metrics)
 *
 * Where the numbers come from, so that nothing is added to the per-byte data path:
 *
 * - Access tier: `meteredSink` counts each access event as it is written. Every decision is exactly
 *   one access event (DESIGN §8), so the decision and connection counters are exact; an allowed
 *   connection's event, with its bytes and duration, is written when it ends, so its connection,
 *   bytes and duration are counted then. Connector tunnels registering are decisions too
 *   (`connector-tunnel`, `tunnel-refused`) but not client connections.
 * - Connector: it records no access events; the `causeway:tunnel:stream` diagnostics channel says
 *   when a stream opens (allowed, counted at once), is refused (denied, with the refusal as reason)
 *   and closes. Bytes are counted only if the close message carries `bytesUp`/`bytesDown`.
 * - Both: tunnel stream opens and closes from that channel (each part's own `side` only), and the
 *   gauges from collect-time callbacks (`track`) reading the part's stats, its config status and its
 *   certificate at scrape time.
 *
 * The diagnostics channel is process-wide: two parts of the same kind in one process (tests) each
 * count both's tunnel streams; everything else is per instance.
 *
 * Label values are bounded (reasons.ts): reasons and results come from fixed vocabularies, services
 * must look like spec names and at most `maxServices` distinct ones are kept; anything else is
 * `other`, so no peer can blow up the number of series.
 */
import { X509Certificate } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AccessEvent, AccessEventSink } from '../audit/event.ts';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import { ServiceLabels, oneOf, reasonLabel, resultLabel, versionLabel } from './reasons.ts';

export type MetricsPart = 'access-tier' | 'connector';

/** The channel both parts publish tunnel stream opens, refusals and closes on. */
export const TUNNEL_STREAM_CHANNEL = 'causeway:tunnel:stream';

export interface PartMetricsOptions {
  /** Register into this registry instead of a new one (it must not hold these names yet). */
  registry?: Registry;
  /** Node's process metrics (CPU, memory, event loop, GC). Default true. */
  processMetrics?: boolean;
  /** Most distinct `service` label values; later services are counted as `other`. Default 500. */
  maxServices?: number;
  clock?: Clock;
  logger?: Logger;
}

/** What the gauges read at scrape time: a part's stats in one shape for both parts. */
export interface PartStats {
  /** Connector tunnels, with their state (`up` for every tunnel in an access tier's pool). */
  tunnels: ReadonlyArray<{ state: string; activeStreams: number }>;
  /** Access tier: the service of each connection being relayed (the connector counts its streams itself). */
  liveServices?: Iterable<string>;
  /** Access tier: accepted TCP connections not yet closed. */
  openSockets?: number;
  /** The configuration version enforced, when the config status does not say. */
  configVersion?: string | undefined;
}

/** The config status the gauges read (RemoteConfigStatus fits). */
export interface ConfigStatusView {
  version?: string | undefined;
  revision?: number | undefined;
  stale?: boolean;
}

export interface PartSources {
  stats?: () => PartStats;
  config?: () => ConfigStatusView | undefined;
  /** The PEM of the certificate the part serves or dials with now (read at every scrape). */
  certificatePem?: () => string | undefined;
}

export interface PartMetrics {
  readonly part: MetricsPart;
  readonly registry: Registry;
  /** Counts one access event (what meteredSink calls). Never throws. */
  record(event: AccessEvent): void;
  /** Where the gauges read from at scrape time; each call replaces the sources it names. */
  track(sources: PartSources): void;
  /** The Prometheus text exposition, for the health listener's /metrics. */
  scrape(): Promise<{ contentType: string; body: string }>;
  /** Unsubscribes from the diagnostics channel. The registry stays readable. */
  close(): void;
}

const CONNECTOR_TUNNEL_STATES: ReadonlySet<string> = new Set(['connecting', 'up', 'waiting', 'closed']);
const ACCESS_TIER_TUNNEL_STATES: ReadonlySet<string> = new Set(['up']);
const TUNNEL_EVENT_REASONS: ReadonlySet<string> = new Set(['connector-tunnel', 'tunnel-refused']);
const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600];

export function createPartMetrics(part: MetricsPart, opts: PartMetricsOptions = {}): PartMetrics {
  return new PartMetricsImpl(part, opts);
}

/**
 * An AccessEventSink that counts each event into `metrics` as it is written, then hands it to
 * `inner`. Counting never throws into the caller; `inner`'s behaviour is unchanged.
 */
export function meteredSink(inner: AccessEventSink, metrics: Pick<PartMetrics, 'record'>): AccessEventSink {
  return {
    write(event) {
      metrics.record(event);
      inner.write(event);
    },
    close: () => inner.close(),
  };
}

/** The stats of an access tier (its `stats()` and `liveConnections()`), for `track`. */
export function accessTierStats(tier: {
  stats(): { configVersion: string; openSockets: number; tunnels: ReadonlyArray<{ activeStreams: number }> };
  liveConnections(): ReadonlyArray<{ service: string }>;
}): () => PartStats {
  return () => {
    const stats = tier.stats();
    return {
      tunnels: stats.tunnels.map((t) => ({ state: 'up', activeStreams: t.activeStreams })),
      liveServices: tier.liveConnections().map((c) => c.service),
      openSockets: stats.openSockets,
      configVersion: stats.configVersion === '' ? undefined : stats.configVersion,
    };
  };
}

/** The stats of a connector (its `status()`), for `track`. */
export function connectorStats(connector: { status(): { configVersion: string | undefined; tunnels: ReadonlyArray<{ state: string; activeStreams: number }> } }): () => PartStats {
  return () => {
    const status = connector.status();
    return { tunnels: status.tunnels, configVersion: status.configVersion };
  };
}

interface OpenStream {
  service: string;
  started: number;
}

class PartMetricsImpl implements PartMetrics {
  readonly part: MetricsPart;
  readonly registry: Registry;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #services: ServiceLabels;
  readonly #sources: PartSources = {};
  readonly #connections: Counter<'service' | 'decision'>;
  readonly #decisions: Counter<'result' | 'reason'>;
  readonly #bytes: Counter<'direction'>;
  readonly #duration: Histogram;
  readonly #streamsOpened: Counter;
  readonly #streamsClosed: Counter<'outcome'>;
  /** Connector: streams relaying now, by `accessTier\0session`. */
  readonly #open = new Map<string, OpenStream>();
  readonly #onStream: (message: unknown) => void;
  #certificate: { pem: string; notAfter: number } | undefined;
  #expiry: Gauge | undefined;
  #closed = false;

  constructor(part: MetricsPart, opts: PartMetricsOptions) {
    this.part = part;
    this.registry = opts.registry ?? new Registry();
    this.#logger = opts.logger ?? silentLogger();
    this.#clock = opts.clock ?? systemClock;
    this.#services = new ServiceLabels(opts.maxServices ?? 500);
    const registers = [this.registry];
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });

    this.#connections = new Counter({
      name: 'causeway_connections_total',
      help: part === 'access-tier' ? 'Client connections decided, by service and decision; an allowed connection is counted when it ends' : 'Tunnel streams asked of this connector, by service and decision',
      labelNames: ['service', 'decision'] as const,
      registers,
    });
    const active: Gauge<'service'> = new Gauge({
      name: 'causeway_connections_active',
      help: 'Connections being relayed now, by service',
      labelNames: ['service'] as const,
      registers,
      collect: () =>
        this.#safely('active connections', () => {
          const counts = new Map<string, number>();
          if (this.part === 'connector') {
            for (const s of this.#open.values()) counts.set(s.service, (counts.get(s.service) ?? 0) + 1);
          } else {
            for (const service of this.#sources.stats?.().liveServices ?? []) {
              const label = this.#services.label(service);
              counts.set(label, (counts.get(label) ?? 0) + 1);
            }
          }
          active.reset();
          for (const [service, n] of counts) active.set({ service }, n);
        }),
    });
    this.#decisions = new Counter({
      name: 'causeway_decisions_total',
      help: 'Access decisions, by result (allow, deny, would-deny) and first reason code (other when not a known code)',
      labelNames: ['result', 'reason'] as const,
      registers,
    });
    this.#bytes = new Counter({ name: 'causeway_bytes_total', help: 'Bytes relayed, up (client to backend) and down, counted when each connection ends', labelNames: ['direction'] as const, registers });
    this.#duration = new Histogram({ name: 'causeway_connection_duration_seconds', help: 'How long allowed connections lasted', buckets: DURATION_BUCKETS, registers });
    const tunnelStates = part === 'connector' ? CONNECTOR_TUNNEL_STATES : ACCESS_TIER_TUNNEL_STATES;
    const tunnels: Gauge<'state'> = new Gauge({
      name: 'causeway_tunnels',
      help: part === 'connector' ? 'Tunnels to access tiers, by state' : 'Connector tunnels held, by state',
      labelNames: ['state'] as const,
      registers,
      collect: () =>
        this.#safely('tunnels', () => {
          const stats = this.#sources.stats?.();
          if (stats === undefined) return;
          const counts = new Map<string, number>([...tunnelStates].map((s) => [s, 0]));
          for (const t of stats.tunnels) {
            const state = oneOf(t.state, tunnelStates);
            counts.set(state, (counts.get(state) ?? 0) + 1);
          }
          tunnels.reset();
          for (const [state, n] of counts) tunnels.set({ state }, n);
        }),
    });
    const streams: Gauge = new Gauge({
      name: 'causeway_tunnel_streams',
      help: 'Streams open on the connector tunnels now',
      registers,
      collect: () =>
        this.#safely('tunnel streams', () => {
          const stats = this.#sources.stats?.();
          if (stats !== undefined) streams.set(stats.tunnels.reduce((n, t) => n + t.activeStreams, 0));
        }),
    });
    this.#streamsOpened = new Counter({ name: 'causeway_tunnel_streams_opened_total', help: 'Tunnel streams opened', registers });
    this.#streamsClosed = new Counter({ name: 'causeway_tunnel_streams_closed_total', help: 'Tunnel streams closed: clean, or aborted (reset, cut or failed)', labelNames: ['outcome'] as const, registers });
    if (part === 'access-tier') {
      const sockets: Gauge = new Gauge({
        name: 'causeway_open_sockets',
        help: 'Accepted TCP connections not yet closed (clients and tunnels, handshaking or not)',
        registers,
        collect: () =>
          this.#safely('open sockets', () => {
            const open = this.#sources.stats?.().openSockets;
            if (open !== undefined) sockets.set(open);
          }),
      });
    }
    const info: Gauge<'version'> = new Gauge({
      name: 'causeway_config_info',
      help: 'Always 1, labelled with the version of the configuration being enforced',
      labelNames: ['version'] as const,
      registers,
      collect: () =>
        this.#safely('config version', () => {
          const version = this.#sources.config?.()?.version ?? this.#sources.stats?.().configVersion;
          info.reset();
          if (version !== undefined && version !== '') info.set({ version: versionLabel(version) }, 1);
        }),
    });
    const revision: Gauge = new Gauge({
      name: 'causeway_config_revision',
      help: 'The control plane revision of the configuration being enforced (0 without a control plane)',
      registers,
      collect: () =>
        this.#safely('config revision', () => {
          const value = this.#sources.config?.()?.revision;
          revision.set(typeof value === 'number' && Number.isFinite(value) ? value : 0);
        }),
    });
    const stale: Gauge = new Gauge({
      name: 'causeway_config_stale',
      help: '1 while the last good configuration is served through a control-plane outage, else 0',
      registers,
      collect: () =>
        this.#safely('config staleness', () => {
          stale.set(this.#sources.config?.()?.stale === true ? 1 : 0);
        }),
    });

    this.#onStream = (message) => this.#stream(message);
    subscribe(TUNNEL_STREAM_CHANNEL, this.#onStream);
  }

  record(event: AccessEvent): void {
    try {
      const result = resultLabel(event.decision);
      this.#decisions.inc({ result, reason: reasonLabel(event.reasons) });
      if (Array.isArray(event.reasons) && TUNNEL_EVENT_REASONS.has(event.reasons[0])) return;
      this.#connections.inc({ service: this.#services.label(event.service), decision: result });
      if (result !== 'allow' && result !== 'would-deny') return;
      if (isCount(event.bytesUp)) this.#bytes.inc({ direction: 'up' }, event.bytesUp);
      if (isCount(event.bytesDown)) this.#bytes.inc({ direction: 'down' }, event.bytesDown);
      if (isCount(event.durationMs)) this.#duration.observe(event.durationMs / 1000);
    } catch (err) {
      this.#logger.error({ err }, 'counting an access event for the metrics failed');
    }
  }

  track(sources: PartSources): void {
    if (sources.stats !== undefined) this.#sources.stats = sources.stats;
    if (sources.config !== undefined) this.#sources.config = sources.config;
    if (sources.certificatePem !== undefined) {
      this.#sources.certificatePem = sources.certificatePem;
      // Registered once there is a certificate to read: an unlabelled gauge always has a value, and 0 would say "expired now".
      if (this.#expiry === undefined) {
        const expiry: Gauge = new Gauge({
          name: 'causeway_cert_expiry_seconds',
          help: 'Seconds until this part\'s own certificate expires (negative once expired)',
          registers: [this.registry],
          collect: () =>
            this.#safely('certificate expiry', () => {
              const notAfter = this.#notAfter();
              if (notAfter !== undefined) expiry.set((notAfter - this.#clock.now()) / 1000);
            }),
        });
        this.#expiry = expiry;
      }
    }
  }

  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    unsubscribe(TUNNEL_STREAM_CHANNEL, this.#onStream);
    this.#open.clear();
  }

  /** One message from the tunnel stream channel; only this part's side counts. */
  #stream(message: unknown): void {
    try {
      if (typeof message !== 'object' || message === null) return;
      const m = message as Record<string, unknown>;
      if (m.side !== this.part) return;
      if (this.part === 'access-tier') {
        if (m.event === 'open') this.#streamsOpened.inc();
        else if (m.event === 'close') this.#streamsClosed.inc({ outcome: m.rstCode === undefined || m.rstCode === 0 ? 'clean' : 'aborted' });
        return;
      }
      const key = `${String(m.accessTier)}\u0000${String(m.session)}`;
      if (m.event === 'open') {
        const service = this.#services.label(m.service);
        this.#streamsOpened.inc();
        this.#decisions.inc({ result: 'allow', reason: 'target-allowed' });
        this.#connections.inc({ service, decision: 'allow' });
        this.#open.set(key, { service, started: performance.now() });
      } else if (m.event === 'refused') {
        this.#decisions.inc({ result: 'deny', reason: reasonLabel([m.refusal]) });
        this.#connections.inc({ service: this.#services.label(m.service), decision: 'deny' });
      } else if (m.event === 'close') {
        this.#streamsClosed.inc({ outcome: m.outcome === 'done' ? 'clean' : 'aborted' });
        if (isCount(m.bytesUp)) this.#bytes.inc({ direction: 'up' }, m.bytesUp);
        if (isCount(m.bytesDown)) this.#bytes.inc({ direction: 'down' }, m.bytesDown);
        const open = this.#open.get(key);
        if (open !== undefined) {
          this.#open.delete(key);
          this.#duration.observe((performance.now() - open.started) / 1000);
        }
      }
    } catch (err) {
      this.#logger.error({ err }, 'counting a tunnel stream for the metrics failed');
    }
  }

  #notAfter(): number | undefined {
    const pem = this.#sources.certificatePem?.();
    if (pem === undefined || pem === '') return undefined;
    if (this.#certificate?.pem !== pem) this.#certificate = { pem, notAfter: new X509Certificate(pem).validToDate.getTime() };
    return this.#certificate.notAfter;
  }

  /** A collect callback that fails leaves its metric as it was and logs; the scrape goes on. */
  #safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#logger.warn({ err }, `reading ${what} for the metrics failed`);
    }
  }
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

