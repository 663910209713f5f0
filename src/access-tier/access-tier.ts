/**
 * The access tier (`causeway access-tier`): one TLS 1.3 listener for clients and connectors.
 *
 * - Connections are dispatched by ALPN: `causeway-tunnel/1` is a connector registering a tunnel
 *   (tunnel-accept.ts); anything else is a client (client-connection.ts). A client offering only
 *   protocols we do not speak (e.g. `h2`) is refused in the handshake (no_application_protocol).
 * - A client certificate is required and verified against our CA only; see peer.ts for why OpenSSL's
 *   verdict is read by us rather than enforced by Node. Handshakes time out (AT-11), each source
 *   address may hold a bounded number of connections (AT-11), every socket has TCP_NODELAY, and TLS
 *   session tickets are on so reconnecting clients resume cheaply (the certificate checks run again
 *   on every connection, resumed or not).
 * - Configuration comes from a ConfigSource; each snapshot becomes one immutable state (state.ts),
 *   swapped as a whole. After a swap every live connection and tunnel is checked again and the ones
 *   no longer allowed are cut at once (service removed, serial revoked, policy flipped), and so is a
 *   session an admin disconnected (a SessionKill naming its id: closeReason `disconnected-by-admin`).
 */
import { createServer } from 'node:tls';
import type { Server, TLSSocket } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import type { AccessEventSink } from '../lib/audit/index.ts';
import { systemClock } from '../lib/clock.ts';
import type { Clock } from '../lib/clock.ts';
import type { ConfigSnapshot, ConfigSource } from '../lib/config/index.ts';
import { UserError, errorCode } from '../lib/errors.ts';
import { DISCONNECTED_BY_ADMIN } from '../lib/live/wire.ts';
import { silentLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import { mtlsServerOptions } from '../lib/pki/index.ts';
import { certificateDecider } from '../lib/policy/decider.ts';
import type { Decider } from '../lib/policy/decider.ts';
import type { BackendDialer } from '../lib/tunnel/dial.ts';
import { DEFAULT_CONNECT_TIMEOUT_MS } from '../lib/tunnel/dial.ts';
import { DEFAULT_KEEPALIVE_INTERVAL_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS } from '../lib/tunnel/keepalive.ts';
import { TUNNEL_ALPN } from '../lib/tunnel/protocol.ts';
import { DEFAULT_TUNNEL_LIMITS } from '../lib/tunnel/settings.ts';
import { handleClient, stillAllowed } from './client-connection.ts';
import { makeRecorder, sourceOf } from './context.ts';
import type { AccessTierContext, AccessTierLimits } from './context.ts';
import { ConnectionRegistry } from './registry.ts';
import type { ConnectionFilter, LiveConnection } from './registry.ts';
import { buildState } from './state.ts';
import type { AccessTierState } from './state.ts';
import { acceptTunnel, tunnelProblem } from './tunnel-accept.ts';
import { TunnelPool } from './tunnel-pool.ts';

export const DEFAULT_ACCESS_TIER_PORT = 8443;

export const DEFAULT_ACCESS_TIER_LIMITS: Readonly<AccessTierLimits> = {
  handshakeTimeoutMs: 10_000,
  headerTimeoutMs: 10_000,
  maxHeadBytes: 8192,
  connectTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS,
  streamOpenTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS + 5_000,
  waitForTunnelMs: 1_500,
  maxConnectionsPerSource: 1_024,
  maxStreamsPerServicePerTunnel: 12_288,
  drainTimeoutMs: 10_000,
  lingerMs: 5_000,
  cutOnCertExpiry: true,
  tunnel: DEFAULT_TUNNEL_LIMITS,
  keepaliveIntervalMs: DEFAULT_KEEPALIVE_INTERVAL_MS,
  keepaliveTimeoutMs: DEFAULT_KEEPALIVE_TIMEOUT_MS,
};

export interface AccessTierOptions {
  /** This access tier's name: its AccessTier spec and its certificate carry it. */
  name: string;
  config: ConfigSource;
  tls: { certPem: string; keyPem: string; caPem: string };
  /** Where access events go; the caller owns it (and closes it after the access tier). */
  events: AccessEventSink;
  /** Default 0.0.0.0:8443. */
  listen?: { host?: string; port?: number };
  decider?: Decider;
  /** Backend dialer for directly reached services (tests inject failures here). */
  dialer?: BackendDialer;
  clock?: Clock;
  logger?: Logger;
  limits?: Partial<AccessTierLimits>;
}

export interface AccessTierStats {
  configVersion: string;
  /** Accepted TCP connections not yet closed (clients and tunnels, handshaking or not). */
  openSockets: number;
  /** Allowed client connections being relayed. */
  liveConnections: number;
  refusedBySourceCap: number;
  tunnels: Array<{ id: number; connector: string; source: string; since: string; activeStreams: number }>;
}

export interface AccessTier {
  readonly name: string;
  address(): AddressInfo;
  port(): number;
  stats(): AccessTierStats;
  liveConnections(): LiveConnection[];
  /** Called after a live connection is added or removed (the live-session reporter); returns the function that stops it. */
  onSessionsChanged(listener: () => void): () => void;
  /** Cuts the live connections matching every given field; returns how many (for the control plane's revocations). */
  cut(filter: ConnectionFilter, reason: string): number;
  /**
   * Serves a renewed certificate and key (and CA) to new handshakes; live connections and tunnels
   * keep the session they authenticated with.
   */
  setTls(tls: { certPem: string; keyPem: string; caPem: string }): void;
  /** Stops accepting, lets live connections finish for up to limits.drainTimeoutMs, then cuts the rest and closes tunnels. */
  close(): Promise<void>;
  /** Cuts everything now. */
  destroy(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function startAccessTier(options: AccessTierOptions): Promise<AccessTier> {
  const tier = new AccessTierServer(options);
  await tier.start();
  return tier;
}

class AccessTierServer implements AccessTier {
  readonly name: string;
  readonly #options: AccessTierOptions;
  readonly #limits: AccessTierLimits;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #registry = new ConnectionRegistry();
  readonly #pool: TunnelPool;
  readonly #server: Server;
  readonly #ctx: AccessTierContext;
  readonly #rawSockets = new Set<Socket>();
  readonly #clientSockets = new Set<TLSSocket>();
  readonly #perSource = new Map<string, number>();
  readonly #refused = new WeakSet<Socket>();
  #refusedBySourceCap = 0;
  #state: AccessTierState | undefined;
  #unsubscribe: (() => void) | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(options: AccessTierOptions) {
    if (typeof options.name !== 'string' || options.name.length === 0) throw new UserError('access-tier-name-missing', 'the access tier needs a name (--name): the name of its AccessTier spec');
    for (const field of ['certPem', 'keyPem', 'caPem'] as const) {
      if (typeof options.tls?.[field] !== 'string' || options.tls[field].length === 0) throw new UserError('access-tier-tls-missing', `the access tier needs its certificate, key and CA (${field} is missing): pass --cert, --key and --ca`);
    }
    this.name = options.name;
    this.#options = options;
    this.#limits = { ...DEFAULT_ACCESS_TIER_LIMITS, ...options.limits };
    this.#logger = (options.logger ?? silentLogger()).child({ accessTier: options.name });
    this.#clock = options.clock ?? systemClock;
    this.#pool = new TunnelPool({ maxStreamsPerService: this.#limits.maxStreamsPerServicePerTunnel });
    this.#ctx = {
      name: options.name,
      state: () => this.#state as AccessTierState,
      decider: options.decider ?? certificateDecider,
      registry: this.#registry,
      pool: this.#pool,
      limits: this.#limits,
      dialer: options.dialer,
      clock: this.#clock,
      logger: this.#logger,
      record: makeRecorder(options.name, options.events, this.#clock, this.#logger),
      closing: () => this.#closing,
    };
    this.#server = createServer({
      ...mtlsServerOptions({ caPem: options.tls.caPem, certPem: options.tls.certPem, keyPem: options.tls.keyPem }),
      // OpenSSL still verifies the chain and validity; peer.ts reads its verdict and refuses (see there).
      rejectUnauthorized: false,
      ALPNProtocols: [TUNNEL_ALPN, 'http/1.1'],
      handshakeTimeout: this.#limits.handshakeTimeoutMs,
      // Half-open only once a client is established (see #dispatch): a FIN during the handshake ends it.
      allowHalfOpen: false,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: 60_000,
      sessionTimeout: 300,
    });
  }

  async start(): Promise<void> {
    let first: ConfigSnapshot;
    try {
      first = await this.#options.config.ready();
    } catch (err) {
      throw err instanceof UserError ? err : new UserError('access-tier-config', `the access tier has no configuration: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    this.#apply(first);
    this.#unsubscribe = this.#options.config.subscribe((snapshot) => this.#apply(snapshot));
    this.#server.prependListener('connection', (raw: Socket) => this.#onRawConnection(raw));
    this.#server.on('secureConnection', (socket: TLSSocket) => this.#dispatch(socket));
    this.#server.on('tlsClientError', (err: Error, socket: TLSSocket) => this.#onTlsError(err, socket));
    const host = this.#options.listen?.host ?? '0.0.0.0';
    const port = this.#options.listen?.port ?? DEFAULT_ACCESS_TIER_PORT;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        this.#unsubscribe?.();
        reject(new UserError('access-tier-listen', `the access tier cannot listen on ${host}:${port} (${err.code ?? err.message}); choose another --listen address`, { cause: err }));
      };
      this.#server.once('error', onError);
      this.#server.listen(port, host, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    this.#server.on('error', (err) => this.#logger.error({ err }, 'access tier listener error'));
    this.#logger.info({ address: this.address(), configVersion: this.#state?.version }, 'access tier listening');
  }

  address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  port(): number {
    return this.address().port;
  }

  stats(): AccessTierStats {
    return {
      configVersion: this.#state?.version ?? '',
      openSockets: this.#rawSockets.size,
      liveConnections: this.#registry.size,
      refusedBySourceCap: this.#refusedBySourceCap,
      tunnels: this.#pool.tunnels().map((t) => ({ id: t.id, connector: t.connector, source: t.source, since: new Date(t.since).toISOString(), activeStreams: t.active })),
    };
  }

  liveConnections(): LiveConnection[] {
    return this.#registry.all();
  }

  onSessionsChanged(listener: () => void): () => void {
    return this.#registry.onChange(listener);
  }

  cut(filter: ConnectionFilter, reason: string): number {
    return this.#registry.cut(filter, reason);
  }

  setTls(tls: { certPem: string; keyPem: string; caPem: string }): void {
    for (const field of ['certPem', 'keyPem', 'caPem'] as const) {
      if (typeof tls[field] !== 'string' || tls[field].length === 0) throw new UserError('access-tier-tls-missing', `a renewed certificate, key and CA are needed (${field} is missing)`);
    }
    this.#server.setSecureContext(mtlsServerOptions({ caPem: tls.caPem, certPem: tls.certPem, keyPem: tls.keyPem }));
    this.#logger.info('serving a renewed certificate to new connections');
  }

  close(): Promise<void> {
    this.#closed ??= this.#drain();
    return this.#closed;
  }

  destroy(): void {
    this.#closing = true;
    this.#unsubscribe?.();
    this.#server.close();
    for (const c of this.#registry.all()) c.cut('shutdown');
    for (const t of this.#pool.tunnels()) {
      t.closeReason = 'shutdown';
      this.#pool.retire(t);
      t.session.destroy();
    }
    for (const s of this.#clientSockets) s.destroy();
    for (const s of this.#rawSockets) s.destroy();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #drain(): Promise<void> {
    this.#closing = true;
    this.#unsubscribe?.();
    const serverClosed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    // Clients first: let them finish (their streams may still need the tunnels), up to the deadline.
    const deadline = Date.now() + this.#limits.drainTimeoutMs;
    while (this.#clientSockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const c of this.#registry.all()) c.cut('shutdown');
    for (const s of this.#clientSockets) s.destroy();
    // Then the tunnels: GOAWAY, a moment for the connector to see it, then gone.
    const tunnels = this.#pool.tunnels();
    await Promise.all(
      tunnels.map(
        (t) =>
          new Promise<void>((resolve) => {
            t.closeReason = 'shutdown';
            this.#pool.retire(t);
            if (t.session.destroyed) {
              resolve();
              return;
            }
            const timer = setTimeout(() => t.session.destroy(), 1000);
            t.session.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            t.session.close();
          }),
      ),
    );
    for (const s of this.#rawSockets) s.destroy();
    await serverClosed;
    this.#logger.info('access tier closed');
  }

  #apply(snapshot: ConfigSnapshot): void {
    try {
      if (this.#state?.version === snapshot.version) return;
      const killedBefore = this.#state?.snapshot.sessionKills;
      const next = buildState(snapshot, this.name);
      for (const problem of next.problems) this.#logger.warn({ configVersion: next.version, problem }, 'configuration problem');
      this.#state = next;
      this.#logger.info({ configVersion: next.version, services: next.bySni.size, connectors: next.connectors.size }, 'configuration applied');
      let cut = 0;
      // An admin's disconnect: the named session ends now, whatever the policy says.
      const killed = new Set<string>();
      const kills = next.snapshot.sessionKills;
      if (kills !== undefined && kills.length > 0) {
        const before = new Set(killedBefore ?? []);
        for (const id of kills) {
          if (before.has(id)) continue;
          const c = this.#registry.get(id);
          if (c === undefined) continue;
          c.cut(DISCONNECTED_BY_ADMIN);
          killed.add(id);
          cut++;
          this.#logger.info({ session: id, service: c.service, user: c.identity.user }, 'session disconnected by an admin');
        }
      }
      // A decision that no longer holds is cut at once (DESIGN §2 step 8).
      for (const c of this.#registry.all()) {
        if (killed.has(c.id)) continue;
        const why = stillAllowed(c, next, this.#ctx);
        if (why !== undefined) {
          c.cut(why);
          cut++;
        }
      }
      for (const t of this.#pool.tunnels()) {
        const why = tunnelProblem(t.connector, t.serial, next);
        if (why !== undefined) {
          t.closeReason = why;
          this.#pool.retire(t);
          t.session.destroy();
          cut++;
        }
      }
      if (cut > 0) this.#logger.info({ configVersion: next.version, cut }, 'cut connections the new configuration no longer allows');
    } catch (err) {
      this.#logger.error({ err }, 'applying a configuration failed; keeping the previous one');
    }
  }

  #onRawConnection(raw: Socket): void {
    raw.setNoDelay(true);
    raw.on('error', () => undefined);
    if (this.#closing) {
      this.#refused.add(raw);
      raw.destroy();
      return;
    }
    const ip = raw.remoteAddress ?? 'unknown';
    const count = (this.#perSource.get(ip) ?? 0) + 1;
    if (count > this.#limits.maxConnectionsPerSource) {
      this.#refused.add(raw);
      this.#refusedBySourceCap++;
      this.#ctx.record({ decision: 'deny', reasons: ['source-connection-limit'], source: sourceOf(raw), closeReason: `more than ${this.#limits.maxConnectionsPerSource} concurrent connections from ${ip}` });
      raw.destroy();
      return;
    }
    this.#perSource.set(ip, count);
    this.#rawSockets.add(raw);
    raw.once('close', () => {
      this.#rawSockets.delete(raw);
      const n = (this.#perSource.get(ip) ?? 1) - 1;
      if (n <= 0) this.#perSource.delete(ip);
      else this.#perSource.set(ip, n);
    });
  }

  #dispatch(socket: TLSSocket): void {
    try {
      if (this.#closing) {
        socket.destroy();
        return;
      }
      if (socket.alpnProtocol === TUNNEL_ALPN) {
        acceptTunnel(socket, this.#ctx);
        return;
      }
      // TCP half-close is part of what clients tunnel: a FIN from the client ends only its direction.
      socket.allowHalfOpen = true;
      this.#clientSockets.add(socket);
      socket.once('close', () => this.#clientSockets.delete(socket));
      handleClient(socket, this.#ctx);
    } catch (err) {
      // AT-07: whatever a hostile peer triggers costs its own connection only.
      this.#logger.error({ err }, 'handling a new connection failed; closed it');
      socket.destroy();
    }
  }

  #onTlsError(err: Error, socket: TLSSocket): void {
    const raw = (socket as TLSSocket & { _parent?: Socket })._parent;
    // Node leaves a socket whose handshake failed open (a timed-out one included): close it here.
    socket.destroy();
    raw?.destroy();
    try {
      if (raw !== undefined && this.#refused.has(raw)) return;
      const code = errorCode(err) ?? 'unknown';
      const reason =
        code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? 'tls-handshake-timeout'
        : code === 'ERR_SSL_NO_APPLICATION_PROTOCOL' ? 'tls-alpn-mismatch'
        : code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' ? 'cert-missing'
        : code === 'ECONNRESET' ? 'tls-handshake-aborted'
        : 'tls-handshake-failed';
      const source = raw !== undefined && raw.remoteAddress !== undefined ? sourceOf(raw) : sourceOf(socket);
      const sni: unknown = socket.servername;
      this.#ctx.record({ decision: 'deny', reasons: [reason], source, closeReason: code, ...(typeof sni === 'string' ? { sni: sni.slice(0, 64).replace(/[^\x21-\x7e]/g, '?') } : {}) });
      this.#logger.debug({ source, reason, code }, 'TLS handshake failed');
    } catch (e) {
      this.#logger.error({ err: e }, 'recording a failed handshake failed');
    }
  }
}
