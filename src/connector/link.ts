/**
 * The connector's link to one access tier: dial (TLS 1.3, our CA pinned, the server must hold the
 * access-tier certificate of that name, ALPN causeway-tunnel/1), serve HTTP/2 on the connection, and
 * when it ends for any reason, dial again after a backoff with full jitter. The attempt counter is
 * reset only once a tunnel has stayed up for STABLE_AFTER_MS, so an access tier that accepts and then
 * drops us (a revoked connector, CN-03) sees retries slow down to the cap instead of a tight loop.
 */
import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { ServerHttp2Session } from 'node:http2';
import type { Clock } from '../lib/clock.ts';
import { errorCode, errorMessage } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { parseAuthority } from '../lib/net/target.ts';
import { mtlsClientOptions } from '../lib/pki/index.ts';
import { TUNNEL_ALPN } from '../lib/tunnel/protocol.ts';
import type { Relay } from '../lib/tunnel/relay.ts';
import { serveTunnel } from '../lib/tunnel/session.ts';
import type { TunnelSessionOptions } from '../lib/tunnel/session.ts';
import { backoffDelay } from './backoff.ts';
import type { BackoffOptions } from './backoff.ts';
import { serveStream } from './streams.ts';
import type { StreamContext } from './streams.ts';

export interface AccessTierEndpoint {
  /** The access tier's name: its certificate must carry exactly this name. */
  name: string;
  /** host:port to dial. */
  address: string;
}

export type LinkState = 'connecting' | 'up' | 'waiting' | 'closed';

export interface LinkStatus {
  accessTier: string;
  address: string;
  state: LinkState;
  /** ISO time of the last state change. */
  since: string;
  /** Failed attempts since the last stable tunnel. */
  failures: number;
  lastError?: string;
  activeStreams: number;
  rttMs?: number;
}

export interface LinkDeps {
  tls: { certPem: string; keyPem: string; caPem: string };
  stream: Omit<StreamContext, 'accessTier' | 'relays'>;
  logger: Logger;
  clock: Clock;
  /** TCP connect plus TLS handshake, ms. */
  dialTimeoutMs: number;
  backoff: BackoffOptions;
  session: Omit<TunnelSessionOptions, 'onDead'>;
}

const STABLE_AFTER_MS = 5000;

export class TunnelLink {
  readonly endpoint: AccessTierEndpoint;
  readonly #deps: LinkDeps;
  readonly #relays = new Set<Relay>();
  readonly #logger: Logger;
  #state: LinkState = 'waiting';
  #since: number;
  #failures = 0;
  #lastError: string | undefined;
  #socket: TLSSocket | undefined;
  #session: ServerHttp2Session | undefined;
  #rtt: (() => number | undefined) | undefined;
  #upAt = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #tlsSession: Buffer | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;
  #onClosed: (() => void) | undefined;

  constructor(endpoint: AccessTierEndpoint, deps: LinkDeps) {
    this.endpoint = endpoint;
    this.#deps = deps;
    this.#logger = deps.logger.child({ accessTier: endpoint.name, address: endpoint.address });
    this.#since = deps.clock.now();
  }

  start(): void {
    this.#connect();
  }

  status(): LinkStatus {
    const status: LinkStatus = {
      accessTier: this.endpoint.name,
      address: this.endpoint.address,
      state: this.#state,
      since: new Date(this.#since).toISOString(),
      failures: this.#failures,
      activeStreams: this.#relays.size,
    };
    if (this.#lastError !== undefined) status.lastError = this.#lastError;
    const rtt = this.#rtt?.();
    if (rtt !== undefined) status.rttMs = Math.round(rtt * 1000) / 1000;
    return status;
  }

  /**
   * Stops reconnecting and drains: GOAWAY, so the access tier opens no new streams here, then waits
   * for the streams in flight to end, up to deadlineMs, and destroys what is left.
   */
  async close(deadlineMs: number): Promise<void> {
    if (this.#closed !== undefined) return this.#closed;
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    const session = this.#session;
    this.#closed = new Promise<void>((resolve) => {
      if (session === undefined || session.destroyed) {
        this.#socket?.destroy();
        this.#setState('closed');
        resolve();
        return;
      }
      this.#onClosed = resolve;
      const deadline = setTimeout(() => this.destroy(), deadlineMs);
      session.once('close', () => clearTimeout(deadline));
      session.close();
    });
    return this.#closed;
  }

  /** Cuts the tunnel and every stream on it now, and stops reconnecting. */
  destroy(): void {
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    for (const r of this.#relays) r.abort('connector-shutdown');
    this.#session?.destroy();
    this.#socket?.destroy();
    if (this.#session === undefined) {
      this.#setState('closed');
      this.#onClosed?.();
    }
  }

  #setState(state: LinkState): void {
    this.#state = state;
    this.#since = this.#deps.clock.now();
  }

  /** Drops the TLS session kept for resumption (the next dial does a full handshake). */
  forgetSession(): void {
    this.#tlsSession = undefined;
  }

  #connect(): void {
    if (this.#closing) return;
    this.#setState('connecting');
    const parsed = parseAuthority(this.endpoint.address);
    if (!parsed.ok) {
      this.#fail(`the access tier address "${this.endpoint.address}" is not host:port: ${parsed.message}`);
      return;
    }
    const { host, port, kind } = parsed.target;
    const tlsOptions = mtlsClientOptions({
      caPem: this.#deps.tls.caPem,
      certPem: this.#deps.tls.certPem,
      keyPem: this.#deps.tls.keyPem,
      expectServerType: 'access-tier',
      expectServerName: this.endpoint.name,
      ...(kind === 'dns' ? { servername: host } : {}),
    });
    let socket: TLSSocket;
    try {
      socket = tlsConnect({ ...tlsOptions, host, port, ALPNProtocols: [TUNNEL_ALPN], ...(this.#tlsSession !== undefined ? { session: this.#tlsSession } : {}) });
      socket.setNoDelay(true);
    } catch (err) {
      this.#fail(errorMessage(err));
      return;
    }
    this.#socket = socket;
    let settled = false;
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS connection within ${this.#deps.dialTimeoutMs} ms`)), this.#deps.dialTimeoutMs);
    const onError = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.#fail(`${errorCode(err) ?? 'error'}: ${err.message}`);
    };
    socket.on('session', (ticket: Buffer) => {
      this.#tlsSession = ticket;
    });
    socket.once('error', onError);
    socket.once('close', () => onError(new Error('the access tier closed the connection during the handshake')));
    socket.once('secureConnect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('error', onError);
      if (socket.alpnProtocol !== TUNNEL_ALPN) {
        socket.destroy();
        this.#fail(`the access tier did not accept the tunnel protocol (ALPN ${String(socket.alpnProtocol)})`);
        return;
      }
      this.#up(socket);
    });
  }

  #up(socket: TLSSocket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const { session, keepalive } = serveTunnel(socket, {
      ...this.#deps.session,
      onDead: (detail) => {
        this.#lastError = `keepalive: ${detail}`;
        this.#logger.warn({ detail }, 'tunnel to the access tier is dead; reconnecting');
      },
    });
    this.#session = session;
    this.#rtt = () => keepalive.lastRttMs();
    this.#upAt = this.#deps.clock.now();
    this.#setState('up');
    this.#logger.info({ resumed: socket.isSessionReused() }, 'tunnel up');
    const ctx: StreamContext = { ...this.#deps.stream, accessTier: this.endpoint.name, relays: this.#relays };
    session.on('stream', (stream, headers) => {
      try {
        serveStream(stream, headers, ctx);
      } catch (err) {
        // A bug on hostile input must cost one stream, never the process (AT-07).
        this.#logger.error({ err }, 'serving a tunnel stream failed');
        if (!stream.destroyed) stream.destroy();
      }
    });
    session.on('error', (err: Error) => {
      this.#lastError = `${errorCode(err) ?? 'error'}: ${err.message}`;
    });
    session.on('goaway', (code: number) => {
      this.#logger.info({ code }, 'the access tier is closing the tunnel');
    });
    session.once('close', () => {
      this.#session = undefined;
      this.#socket = undefined;
      this.#rtt = undefined;
      if (this.#closing) {
        this.#setState('closed');
        this.#onClosed?.();
        return;
      }
      if (this.#deps.clock.now() - this.#upAt >= STABLE_AFTER_MS) this.#failures = 0;
      this.#logger.warn({ lastError: this.#lastError }, 'tunnel down; reconnecting');
      this.#scheduleRetry();
    });
  }

  #fail(message: string): void {
    this.#lastError = message;
    this.#socket = undefined;
    if (this.#closing) {
      this.#setState('closed');
      this.#onClosed?.();
      return;
    }
    this.#logger.warn({ error: message, failures: this.#failures + 1 }, 'could not reach the access tier');
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    this.#setState('waiting');
    const delay = backoffDelay(this.#failures, this.#deps.backoff);
    this.#failures++;
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }
}
