/**
 * The connector (`causeway connector`): inside the private network, it dials out to every access
 * tier of its cluster, keeps one tunnel to each, and opens backend TCP connections on request, only
 * to targets its own Connector spec allows. Several connector processes may run with one name: the
 * access tiers treat them as one connector with failover.
 *
 * Configuration comes from a ConfigSource and is followed live: the connector's own Connector spec
 * (its cluster and allow-list) and the AccessTier specs of that cluster (where to dial). An explicit
 * `accessTiers` list replaces the latter (for embedding, or before the specs name reachable
 * addresses). A tunnel to an access tier that leaves the configuration is drained and closed; a new
 * one is dialled at once.
 */
import type { Clock } from '../lib/clock.ts';
import { systemClock } from '../lib/clock.ts';
import type { ConfigSnapshot, ConfigSource } from '../lib/config/index.ts';
import { UserError, errorMessage } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { silentLogger } from '../lib/log.ts';
import { compileAllowList } from '../lib/net/target.ts';
import type { CompiledAllowList } from '../lib/net/target.ts';
import type { BackendDialer } from '../lib/tunnel/dial.ts';
import { DEFAULT_CONNECT_TIMEOUT_MS } from '../lib/tunnel/dial.ts';
import type { TunnelLimits } from '../lib/tunnel/settings.ts';
import type { BackoffOptions } from './backoff.ts';
import { TunnelLink } from './link.ts';
import type { AccessTierEndpoint, LinkStatus } from './link.ts';

export interface ConnectorOptions {
  /** The connector's name: its Connector spec and its certificate carry it. */
  name: string;
  config: ConfigSource;
  tls: { certPem: string; keyPem: string; caPem: string };
  /** Access tiers to dial instead of the AccessTier specs of the connector's cluster. */
  accessTiers?: AccessTierEndpoint[];
  /** Opens backend connections (tests inject failures here); TCP with TCP_NODELAY by default. */
  dialer?: BackendDialer;
  clock?: Clock;
  logger?: Logger;
  /** Backend TCP connect timeout, ms (default 10 s). */
  connectTimeoutMs?: number;
  /** close(): how long streams in flight may take to finish before they are cut (default 10 s). */
  drainTimeoutMs?: number;
  tunnel?: {
    limits?: TunnelLimits;
    keepaliveIntervalMs?: number;
    keepaliveTimeoutMs?: number;
    /** TCP connect plus TLS handshake to an access tier, ms (default 10 s). */
    dialTimeoutMs?: number;
    backoff?: BackoffOptions;
  };
}

export type ConnectorState = 'unconfigured' | 'connecting' | 'up' | 'degraded' | 'closed';

export interface ConnectorStatus {
  name: string;
  cluster: string | undefined;
  /** up: every tunnel is up; degraded: some are; connecting: none yet; unconfigured: nothing to dial. */
  state: ConnectorState;
  healthy: boolean;
  tunnels: LinkStatus[];
  activeStreams: number;
  configVersion: string | undefined;
  problem: string | undefined;
}

export interface Connector {
  readonly name: string;
  status(): ConnectorStatus;
  /** Dials with a renewed certificate and key (and CA) from now on; tunnels that are up stay up. */
  setTls(tls: { certPem: string; keyPem: string; caPem: string }): void;
  /** Stops dialling, drains streams in flight up to the deadline, then closes every tunnel. */
  close(): Promise<void>;
  /** Cuts every tunnel and stream now. */
  destroy(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** What the connector takes from a snapshot. */
export type ConnectorView =
  | { ok: true; cluster: string; accessTiers: AccessTierEndpoint[]; allowList: CompiledAllowList }
  | { ok: false; problem: string };

/** The connector's view of a configuration snapshot: its cluster, its allow-list, the access tiers to dial. */
export function connectorView(snapshot: ConfigSnapshot, name: string): ConnectorView {
  const own = snapshot.connectors.find((c) => c.metadata.name === name);
  if (own === undefined) return { ok: false, problem: `no Connector spec is named "${name}"; the connector dials nothing and refuses every stream until one exists` };
  let allowList: CompiledAllowList;
  try {
    allowList = compileAllowList({ cidrs: own.spec.allowedCidrs, domains: own.spec.allowedDomains });
  } catch (err) {
    return { ok: false, problem: `the Connector spec "${name}" has a bad allow-list: ${errorMessage(err)}` };
  }
  const accessTiers = snapshot.accessTiers.filter((t) => t.spec.cluster === own.spec.cluster).map((t) => ({ name: t.metadata.name, address: t.spec.address }));
  return { ok: true, cluster: own.spec.cluster, accessTiers, allowList };
}

export async function startConnector(options: ConnectorOptions): Promise<Connector> {
  const connector = new ConnectorRuntime(options);
  await connector.start();
  return connector;
}

function endpointKey(e: AccessTierEndpoint): string {
  return `${e.name}\u0000${e.address}`;
}

class ConnectorRuntime implements Connector {
  readonly name: string;
  readonly #options: ConnectorOptions;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #links = new Map<string, TunnelLink>();
  /** The material every link dials with; setTls replaces its fields, so links pick it up on their next dial. */
  readonly #tls: { certPem: string; keyPem: string; caPem: string };
  readonly #retiring = new Set<Promise<void>>();
  #allowList: CompiledAllowList | undefined;
  #cluster: string | undefined;
  #version: string | undefined;
  #problem: string | undefined;
  #unsubscribe: (() => void) | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(options: ConnectorOptions) {
    if (typeof options.name !== 'string' || options.name.length === 0) throw new UserError('connector-name-missing', 'the connector needs a name (--name): the name of its Connector spec');
    for (const field of ['certPem', 'keyPem', 'caPem'] as const) {
      if (typeof options.tls?.[field] !== 'string' || options.tls[field].length === 0) throw new UserError('connector-tls-missing', `the connector needs its certificate, key and CA (${field} is missing): pass --cert, --key and --ca`);
    }
    this.name = options.name;
    this.#options = options;
    this.#tls = { certPem: options.tls.certPem, keyPem: options.tls.keyPem, caPem: options.tls.caPem };
    this.#logger = (options.logger ?? silentLogger()).child({ connector: options.name });
    this.#clock = options.clock ?? systemClock;
  }

  async start(): Promise<void> {
    let first: ConfigSnapshot;
    try {
      first = await this.#options.config.ready();
    } catch (err) {
      throw err instanceof UserError ? err : new UserError('connector-config', `the connector has no configuration: ${errorMessage(err)}`, { cause: err });
    }
    this.#apply(first);
    this.#unsubscribe = this.#options.config.subscribe((snapshot) => this.#apply(snapshot));
  }

  status(): ConnectorStatus {
    const tunnels = [...this.#links.values()].map((l) => l.status());
    const up = tunnels.filter((t) => t.state === 'up').length;
    const state: ConnectorState = this.#closing ? 'closed' : tunnels.length === 0 ? 'unconfigured' : up === tunnels.length ? 'up' : up > 0 ? 'degraded' : 'connecting';
    return {
      name: this.name,
      cluster: this.#cluster,
      state,
      healthy: up > 0,
      tunnels,
      activeStreams: tunnels.reduce((n, t) => n + t.activeStreams, 0),
      configVersion: this.#version,
      problem: this.#problem,
    };
  }

  setTls(tls: { certPem: string; keyPem: string; caPem: string }): void {
    for (const field of ['certPem', 'keyPem', 'caPem'] as const) {
      if (typeof tls[field] !== 'string' || tls[field].length === 0) throw new UserError('connector-tls-missing', `a renewed certificate, key and CA are needed (${field} is missing)`);
    }
    Object.assign(this.#tls, { certPem: tls.certPem, keyPem: tls.keyPem, caPem: tls.caPem });
    // A resumed session would carry the old certificate's identity: handshake afresh.
    for (const link of this.#links.values()) link.forgetSession();
    this.#logger.info('dialling with a renewed certificate from now on');
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      this.#unsubscribe?.();
      const deadline = this.#options.drainTimeoutMs ?? 10_000;
      await Promise.all([...[...this.#links.values()].map((l) => l.close(deadline)), ...this.#retiring]);
      this.#links.clear();
      this.#logger.info('connector closed');
    })();
    return this.#closed;
  }

  destroy(): void {
    this.#closing = true;
    this.#unsubscribe?.();
    for (const link of this.#links.values()) link.destroy();
    this.#links.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #apply(snapshot: ConfigSnapshot): void {
    if (this.#closing) return;
    try {
      const view = connectorView(snapshot, this.name);
      this.#version = snapshot.version;
      if (!view.ok) {
        this.#problem = view.problem;
        this.#allowList = undefined;
        this.#logger.warn({ configVersion: snapshot.version, problem: view.problem }, 'configuration problem');
      } else {
        this.#problem = undefined;
        this.#allowList = view.allowList;
        this.#cluster = view.cluster;
      }
      const wanted = this.#options.accessTiers ?? (view.ok ? view.accessTiers : []);
      this.#reconcile(wanted);
      this.#logger.info({ configVersion: snapshot.version, cluster: this.#cluster, accessTiers: wanted.map((t) => t.name) }, 'configuration applied');
    } catch (err) {
      this.#logger.error({ err }, 'applying a configuration failed; keeping the previous one');
    }
  }

  #reconcile(wanted: AccessTierEndpoint[]): void {
    const keys = new Set(wanted.map(endpointKey));
    for (const [key, link] of this.#links) {
      if (keys.has(key)) continue;
      this.#links.delete(key);
      const closing = link.close(this.#options.drainTimeoutMs ?? 10_000);
      this.#retiring.add(closing);
      void closing.finally(() => this.#retiring.delete(closing));
    }
    for (const endpoint of wanted) {
      const key = endpointKey(endpoint);
      if (this.#links.has(key)) continue;
      const link = new TunnelLink(endpoint, {
        tls: this.#tls,
        stream: {
          allowList: () => this.#allowList,
          dialer: this.#options.dialer,
          connectTimeoutMs: this.#options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
          logger: this.#logger,
          draining: () => this.#closing,
        },
        logger: this.#logger,
        clock: this.#clock,
        dialTimeoutMs: this.#options.tunnel?.dialTimeoutMs ?? 10_000,
        backoff: this.#options.tunnel?.backoff ?? {},
        session: {
          ...(this.#options.tunnel?.limits !== undefined ? { limits: this.#options.tunnel.limits } : {}),
          ...(this.#options.tunnel?.keepaliveIntervalMs !== undefined ? { keepaliveIntervalMs: this.#options.tunnel.keepaliveIntervalMs } : {}),
          ...(this.#options.tunnel?.keepaliveTimeoutMs !== undefined ? { keepaliveTimeoutMs: this.#options.tunnel.keepaliveTimeoutMs } : {}),
        },
      });
      this.#links.set(key, link);
      link.start();
    }
  }
}
