/**
 * The client proxy: a listener on the user's own loopback interface that kubectl (or any HTTP CONNECT
 * client, or a plain TCP client) talks to, and that carries each connection to the access tier over
 * mTLS with the user's trust certificate (DESIGN.md §2 step 5, §3).
 *
 * Two modes, chosen by the service:
 * - CHAIN (kubernetes services, tcp services with `httpConnect` or a DNS override): the local client sends
 *   `CONNECT host:port`; the target is checked against the service, then a clean CONNECT is re-sent inside
 *   the TLS tunnel and the access tier's answer is passed back.
 * - TCP (tcp services with a fixed `backend.target`): the listener is a plain forwarder; bytes go raw
 *   through the TLS tunnel and the access tier dials the fixed target.
 *
 * Per connection, top to bottom: read the head (bounded, timed) → check the target (fail closed, nothing
 * dialled) → dial the access tier (TLS 1.3, SNI = service domain, our CA pinned, server type checked,
 * session resumed when we hold a ticket) → re-send the canonical CONNECT → read the answer → relay.
 */
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate, createHash } from 'node:crypto';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { silentLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/clock.ts';
import { systemClock } from '../lib/clock.ts';
import { mtlsClientOptions } from '../lib/pki/index.ts';
import { formatConnectResponse, parseConnectHead, parseConnectResponseHead } from '../lib/net/connect-request.ts';
import { canonicalHostname, compilePatterns, formatAuthority, matchesPatterns, parseAuthority } from '../lib/net/target.ts';
import type { Target } from '../lib/net/target.ts';
import type { ServiceSpec } from '../lib/spec/index.ts';
import { RELAY_BUFFER_BYTES } from '../lib/tunnel/relay.ts';

/** The trust certificate, its key and our CA, all PEM. */
export interface TrustMaterial {
  certPem: string;
  keyPem: string;
  caPem: string;
}

/** Fixed material, or a getter called once per new upstream connection so renewed certificates apply at once. */
export type TrustSource = TrustMaterial | (() => TrustMaterial);

/**
 * What the dialer gets: tls.connect options plus `allowHalfOpen` (which tls.connect honours but its type
 * does not declare), so one side's FIN does not end the other direction.
 */
export type AccessTierDialOptions = tls.ConnectionOptions & { allowHalfOpen?: boolean };

/** Opens the TLS connection to the access tier. The default is `tls.connect`; tests replace it. */
export type AccessTierDialer = (options: AccessTierDialOptions) => tls.TLSSocket;

export type ProxyMode = 'chain' | 'tcp';

export interface ClientProxyOptions {
  service: ServiceSpec;
  /** `host:port` (IPv6 in brackets) of the access tier to tunnel through. */
  accessTierAddress: string;
  trust: TrustSource;
  /** Loopback addresses to listen on; default 127.0.0.1 and ::1 (::1 skipped when the machine has no IPv6). */
  hosts?: string[];
  /** Listen port; 0 picks a free one (the same one on every host). */
  port: number;
  logger?: Logger;
  /** Budget for reaching the access tier: TCP connect, TLS handshake and its answer to the CONNECT. Default 10 s. */
  connectTimeoutMs?: number;
  /** Budget for the local client to send a complete CONNECT head. Default 10 s. */
  headerTimeoutMs?: number;
  /** Keep the last TLS session ticket and resume with it. Default true; false exists to measure the difference. */
  sessionResumption?: boolean;
  /** How long close() lets live relays drain after ending them before destroying them. Default 2 s. */
  closeGraceMs?: number;
  dialer?: AccessTierDialer;
  clock?: Clock;
}

export interface ClientProxyStats {
  /** Local connections accepted since start. */
  connections: number;
  /** Local connections open now. */
  active: number;
  /** Local connections answered with an error status (or closed, in TCP mode) without a relay. */
  refused: number;
  /** Bytes relayed from local clients to the access tier (after the CONNECT exchange). */
  bytesUp: number;
  /** Bytes relayed from the access tier to local clients (after the CONNECT exchange). */
  bytesDown: number;
  /** Completed TLS handshakes with the access tier, and how many of them resumed a session. */
  handshakes: number;
  resumedHandshakes: number;
}

export interface ClientProxy {
  readonly mode: ProxyMode;
  /** The port every listener is bound to. */
  port(): number;
  /** Every bound listener. */
  addresses(): Array<{ host: string; port: number }>;
  stats(): ClientProxyStats;
  /** Stops listening, refuses nothing further, ends live relays (FIN both ways) and waits for them to finish. */
  close(): Promise<void>;
  /** Stops listening and destroys every connection at once. */
  destroy(): void;
  /** close(), for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

const DEFAULT_HOSTS = ['127.0.0.1', '::1'];
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_GRACE_MS = 2_000;
/** A CONNECT head longer than this is refused even if the parser has not said so already. */
const MAX_HEAD_BYTES = 16 * 1024;
/** How much of an access tier's error body is passed back. */
const MAX_ERROR_BODY_BYTES = 2048;
/** After an error answer, how long the local client gets to read it before the socket is destroyed. */
const LINGER_MS = 1_000;

/** Which mode a service's local listener runs in. */
export function proxyModeFor(service: ServiceSpec): ProxyMode {
  const { type, backend } = service.spec;
  return type === 'tcp' && backend.target !== undefined && backend.httpConnect !== true ? 'tcp' : 'chain';
}

/**
 * Which CONNECT targets a service accepts, decided on the parsed (canonical) target before anything is
 * dialled. Kubernetes services and tcp services without `httpConnect` accept exactly their domain and port;
 * `httpConnect` services accept what their allow patterns match. Everything else fails closed.
 */
export interface TargetRule {
  accepts(target: Target): boolean;
  /** The authority re-sent to the access tier for an accepted target. */
  upstreamAuthority(target: Target): string;
  /** For the 403 body: what this proxy accepts. */
  describe(): string;
}

export function targetRuleFor(service: ServiceSpec): TargetRule {
  const domain = canonicalDomain(service);
  const port = service.spec.port;
  if (service.spec.type === 'tcp' && service.spec.backend.httpConnect === true) {
    const patterns = service.spec.backend.allowPatterns ?? [];
    const compiled = compilePatterns(patterns);
    return {
      accepts: (target) => matchesPatterns(compiled, target),
      upstreamAuthority: (target) => formatAuthority(target),
      describe: () => (patterns.length === 0 ? 'no targets (the service has no allow patterns)' : `targets matching ${describePatterns(patterns)}`),
    };
  }
  const exact = `${domain}:${port}`;
  return {
    accepts: (target) => target.kind === 'dns' && target.host === domain && target.port === port,
    upstreamAuthority: () => exact,
    describe: () => `only ${exact}`,
  };
}

/**
 * Listen addresses must be loopback (THREATS LP-01): an IPv4 literal in 127.0.0.0/8 written in plain dotted
 * decimal, or ::1. Names (even "localhost") are refused because what they resolve to is not ours to decide.
 */
export function loopbackProblem(host: string): string | undefined {
  if (net.isIPv4(host)) {
    return host.split('.')[0] === '127' ? undefined : `${host} is not a loopback address`;
  }
  if (net.isIPv6(host)) {
    const loopback = new net.BlockList();
    loopback.addAddress('::1', 'ipv6');
    return loopback.check(host, 'ipv6') ? undefined : `${host} is not a loopback address`;
  }
  return `${JSON.stringify(host.slice(0, 64))} is not an IP address; use 127.0.0.1 or ::1`;
}

export async function startClientProxy(options: ClientProxyOptions): Promise<ClientProxy> {
  const config = checkAndSetDefaults(options);
  const { logger, service } = config;
  const mode = proxyModeFor(service);
  const rule = targetRuleFor(service);
  const domain = canonicalDomain(service);
  const ownNames = serviceHostNames(service, domain);
  const upstream = splitAddress(config.accessTierAddress);

  const stats: ClientProxyStats = { connections: 0, active: 0, refused: 0, bytesUp: 0, bytesDown: 0, handshakes: 0, resumedHandshakes: 0 };
  const live = new Set<LiveConnection>();
  let closing = false;
  let nextId = 1;

  // TLS session resumption: one ticket, valid only for the trust certificate it was issued under. A new
  // certificate (renewal, another user) starts from a full handshake, so the server always sees it.
  let session: { key: string; ticket: Buffer } | undefined;
  let trustCache: { certPem: string; key: string; notAfter: number | undefined } | undefined;

  /** After a failure the ticket may be what the server refuses (revoked identity, rotated keys): start over. */
  const forgetSession = (): void => {
    session = undefined;
  };

  const resolveTrust = (): { material: TrustMaterial; key: string; notAfter: number | undefined } => {
    const material = typeof config.trust === 'function' ? config.trust() : config.trust;
    if (trustCache?.certPem !== material.certPem) {
      let notAfter: number | undefined;
      try {
        notAfter = Date.parse(new X509Certificate(material.certPem).validTo);
      } catch {
        notAfter = undefined;
      }
      const key = createHash('sha256').update(material.certPem).update('\0').update(material.caPem).digest('hex');
      trustCache = { certPem: material.certPem, key, notAfter };
    }
    return { material, key: trustCache.key, notAfter: trustCache.notAfter };
  };

  /** Opens the tunnel to the access tier; resolves once the TLS handshake is done, rejects with a classified failure. */
  const dialAccessTier = (conn: LiveConnection, onEarlyData?: () => void): Promise<tls.TLSSocket> => {
    let trust: ReturnType<typeof resolveTrust>;
    try {
      trust = resolveTrust();
    } catch (err) {
      return Promise.reject(
        new UpstreamFailure(502, 'trust-cert-unavailable', `No trust certificate could be loaded (${errorMessage(err)}). Run \`causeway login\` to get one.`, err),
      );
    }
    const ticket = config.sessionResumption && session?.key === trust.key ? session.ticket : undefined;
    let socket: tls.TLSSocket;
    try {
      const dialOptions: AccessTierDialOptions = {
        ...mtlsClientOptions({ ...trust.material, servername: domain, expectServerType: 'access-tier' }),
        host: upstream.host,
        port: upstream.port,
        servername: domain,
        allowHalfOpen: true,
        ...(ticket === undefined ? {} : { session: ticket }),
      };
      socket = config.dialer(dialOptions);
    } catch (err) {
      return Promise.reject(new UpstreamFailure(502, 'access-tier-tls-failed', `Could not set up TLS to the access tier at ${config.accessTierAddress}: ${errorMessage(err)}. Check the trust certificate files.`, err));
    }
    conn.upstream = socket;
    // Applied as soon as the TCP connection exists (ConnectionOptions has no noDelay).
    socket.setNoDelay(true);
    // Always one listener, so an error between phases never becomes an uncaught exception.
    socket.on('error', (err) => logger.debug({ id: conn.id, err }, 'access tier socket error'));
    // A TLS 1.3 server sends session tickets only after accepting our certificate, so a ticket (when one
    // arrives before a close) also proves the close was not a refused certificate.
    socket.on('session', (ticketBuf: Buffer) => {
      conn.ticketSeen = true;
      if (config.sessionResumption) session = { key: trust.key, ticket: ticketBuf };
    });
    return new Promise<tls.TLSSocket>((resolve, reject) => {
      let tcpConnected = false;
      const onConnect = (): void => {
        tcpConnected = true;
      };
      const onError = (err: Error): void => {
        cleanup();
        forgetSession();
        reject(tcpConnected ? tlsFailure(config.accessTierAddress, trust.notAfter, config.clock, err) : unreachable(config.accessTierAddress, err));
      };
      const onClose = (): void => onError(Object.assign(new Error('connection closed during the TLS handshake'), { code: 'ECONNRESET' }));
      const onSecure = (): void => {
        cleanup();
        stats.handshakes += 1;
        if (socket.isSessionReused()) stats.resumedHandshakes += 1;
        resolve(socket);
      };
      const cleanup = (): void => {
        socket.off('connect', onConnect);
        socket.off('error', onError);
        socket.off('close', onClose);
        socket.off('secureConnect', onSecure);
      };
      socket.on('connect', onConnect);
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.on('secureConnect', onSecure);
      onEarlyData?.();
    });
  };

  const refuse = (conn: LiveConnection, status: number, reason: string, message: string, hints?: readonly string[]): void => {
    stats.refused += 1;
    conn.phase = 'done';
    clearTimeout(conn.timer);
    conn.upstream?.destroy();
    const { client } = conn;
    client.removeAllListeners('data');
    if (client.destroyed) return;
    client.end(formatConnectResponse(status, reason, message, hints));
    // Drain whatever else the client sends so its FIN is seen and the socket closes without an RST that
    // could discard the answer; the linger timer ends clients that never close.
    client.resume();
    conn.timer = setTimeout(() => client.destroy(), LINGER_MS);
    conn.timer.unref();
  };

  const startRelay = (conn: LiveConnection, socket: tls.TLSSocket, clientLeftover: Buffer, upstreamLeftover: Buffer): void => {
    conn.phase = 'relay';
    clearTimeout(conn.timer);
    const { client } = conn;
    if (upstreamLeftover.length > 0) {
      stats.bytesDown += upstreamLeftover.length;
      client.write(upstreamLeftover);
    }
    if (clientLeftover.length > 0) {
      stats.bytesUp += clientLeftover.length;
      socket.write(clientLeftover);
    }
    relay(
      client,
      socket,
      (n) => (stats.bytesUp += n),
      (n) => {
        stats.bytesDown += n;
        conn.bytesDown += n;
      },
    );
    if (closing) endRelay(conn);
  };

  const handleChain = (conn: LiveConnection): void => {
    const { client } = conn;
    let head: Buffer = Buffer.alloc(0);
    conn.timer = setTimeout(() => refuse(conn, 408, 'header-timeout', `No complete CONNECT request within ${config.headerTimeoutMs} ms.`), config.headerTimeoutMs);
    conn.timer.unref();
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      let parsed: ReturnType<typeof parseConnectHead>;
      try {
        parsed = parseConnectHead(head);
      } catch (err) {
        logger.error({ err, id: conn.id }, 'CONNECT parser threw; refusing the request');
        refuse(conn, 400, 'bad-request', 'The request could not be parsed.');
        return;
      }
      if (parsed.state === 'incomplete') {
        if (head.length > MAX_HEAD_BYTES) refuse(conn, 431, 'head-too-large', `The request head exceeds ${MAX_HEAD_BYTES} bytes.`);
        return;
      }
      client.off('data', onData);
      client.off('end', onEnd);
      client.pause();
      clearTimeout(conn.timer);
      if (parsed.state === 'error') {
        logger.info({ id: conn.id, status: parsed.status, reason: parsed.code }, 'refused a malformed request');
        refuse(conn, parsed.status, parsed.code, parsed.message);
        return;
      }
      // LP-02: a web page cannot make a browser send CONNECT (fetch and XHR forbid the method, and a page
      // cannot pick the browser's proxy), so a DNS-rebinding page can only reach this port with GET/POST
      // and its own Host, which the parser refuses (405, Host mismatch) before anything is dialled. A
      // CONNECT carrying Origin did not come from kubectl or a proxy-configured client either: refuse it.
      if (parsed.headers.some(([name]) => name.toLowerCase() === 'origin')) {
        refuse(conn, 403, 'origin-not-allowed', 'Requests from web pages are not accepted by the Causeway proxy.');
        return;
      }
      if (!rule.accepts(parsed.target)) {
        logger.info({ id: conn.id, target: formatAuthority(parsed.target) }, 'refused a target outside the service');
        refuse(
          conn,
          403,
          'target-not-allowed',
          `This proxy serves the Causeway service "${service.metadata.name}" and accepts ${rule.describe()}; ${formatAuthority(parsed.target)} is not one of them.`,
        );
        return;
      }
      // Proxy-Authorization and every other client header stay here (LP-05): only the canonical authority goes up.
      const authority = rule.upstreamAuthority(parsed.target);
      const clientLeftover = head.subarray(parsed.headLength);
      conn.phase = 'dial';
      conn.timer = setTimeout(
        () => failUpstream(conn, new UpstreamFailure(502, 'access-tier-unreachable', `The access tier at ${config.accessTierAddress} did not answer within ${config.connectTimeoutMs} ms.`)),
        config.connectTimeoutMs,
      );
      conn.timer.unref();
      dialAccessTier(conn, () => conn.upstream?.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`))
        .then((socket) => {
          if (conn.phase !== 'dial') return;
          conn.phase = 'answer';
          readAnswer(conn, socket, clientLeftover);
        })
        .catch((err: unknown) => failUpstream(conn, err));
    };
    // The listener is half-open capable, so a client that ends mid-head would otherwise wait for the timer.
    const onEnd = (): void => refuse(conn, 400, 'incomplete-request', 'The connection ended before a complete CONNECT request arrived.');
    client.on('data', onData);
    client.once('end', onEnd);
  };

  const readAnswer = (conn: LiveConnection, socket: tls.TLSSocket, clientLeftover: Buffer): void => {
    let buf: Buffer = Buffer.alloc(0);
    let answered: { status: number; reason?: string; headLength: number; bodyLength: number } | undefined;
    const finish = (): void => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    const passError = (a: { status: number; reason?: string; hints?: string[]; headLength: number; bodyLength: number }, complete: boolean): void => {
      finish();
      const body = buf.subarray(a.headLength, a.headLength + Math.min(a.bodyLength, MAX_ERROR_BODY_BYTES));
      const status = a.status >= 400 && a.status <= 599 ? a.status : 502;
      const reason = a.reason === undefined ? 'access-tier-refused' : sanitiseReason(a.reason);
      const text = sanitiseText(body.toString('utf8')) || (complete ? `The access tier answered ${a.status}.` : `The access tier answered ${a.status} and closed.`);
      logger.info({ id: conn.id, status: a.status, reason }, 'access tier refused the CONNECT');
      refuse(conn, status, reason, text, a.hints);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (answered === undefined) {
        const parsed = parseConnectResponseHead(buf);
        if (parsed.state === 'incomplete') {
          if (buf.length > MAX_HEAD_BYTES) {
            finish();
            failUpstream(conn, new UpstreamFailure(502, 'access-tier-bad-response', `The access tier at ${config.accessTierAddress} sent an oversized answer.`));
          }
          return;
        }
        if (parsed.state === 'error') {
          finish();
          failUpstream(conn, new UpstreamFailure(502, 'access-tier-bad-response', `The access tier at ${config.accessTierAddress} sent an answer that is not HTTP/1.1.`));
          return;
        }
        answered = { status: parsed.status, reason: parsed.reason, ...(parsed.hints === undefined ? {} : { hints: parsed.hints }), headLength: parsed.headLength, bodyLength: parsed.bodyLength };
        if (parsed.status === 200) {
          finish();
          socket.pause();
          conn.client.write(formatConnectResponse(200));
          startRelay(conn, socket, clientLeftover, buf.subarray(parsed.headLength));
          return;
        }
      }
      if (buf.length >= answered.headLength + Math.min(answered.bodyLength, MAX_ERROR_BODY_BYTES)) passError(answered, true);
    };
    const onError = (err: Error): void => {
      finish();
      if (answered !== undefined) {
        passError(answered, false);
        return;
      }
      forgetSession();
      // Nothing at all after the handshake, not even a session ticket: in TLS 1.3 that is how a refused
      // client certificate looks from this side (the alert rarely surfaces as an error).
      const refusedAtHandshake = isTlsError(err) || (buf.length === 0 && !conn.ticketSeen);
      failUpstream(conn, refusedAtHandshake ? tlsFailure(config.accessTierAddress, trustCache?.notAfter, config.clock, err) : closedEarly(config.accessTierAddress, err));
    };
    const onEnd = (): void => onError(Object.assign(new Error('the access tier closed the connection before answering'), { code: 'ECONNRESET' }));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  };

  const failUpstream = (conn: LiveConnection, err: unknown): void => {
    if (conn.phase === 'done' || conn.phase === 'relay') return;
    const failure = err instanceof UpstreamFailure ? err : new UpstreamFailure(502, 'access-tier-unreachable', `The access tier at ${config.accessTierAddress} could not be reached: ${errorMessage(err)}`, err);
    logger.warn({ id: conn.id, reason: failure.reason, err: failure.cause ?? failure.message }, 'could not open the tunnel');
    if (mode === 'tcp') {
      stats.refused += 1;
      conn.phase = 'done';
      clearTimeout(conn.timer);
      conn.upstream?.destroy();
      conn.client.destroy();
      return;
    }
    refuse(conn, failure.status, failure.reason, failure.message);
  };

  const handleTcp = (conn: LiveConnection): void => {
    conn.client.pause();
    // LP-02: the first bytes are looked at before the relay forwards them (this listener runs first).
    conn.client.prependOnceListener('data', (chunk: Buffer) => {
      const foreign = foreignWebRequest(chunk, ownNames);
      if (foreign === undefined) return;
      logger.warn({ id: conn.id, reason: 'foreign-web-request', detail: foreign }, 'refused an HTTP request from a web page (DNS rebinding or another origin); nothing was forwarded');
      stats.refused += 1;
      conn.phase = 'done';
      clearTimeout(conn.timer);
      conn.upstream?.destroy();
      conn.client.destroy();
    });
    conn.phase = 'dial';
    conn.timer = setTimeout(
      () => failUpstream(conn, new UpstreamFailure(502, 'access-tier-unreachable', `The access tier at ${config.accessTierAddress} did not answer within ${config.connectTimeoutMs} ms.`)),
      config.connectTimeoutMs,
    );
    conn.timer.unref();
    dialAccessTier(conn)
      .then((socket) => {
        if (conn.phase !== 'dial') return;
        startRelay(conn, socket, Buffer.alloc(0), Buffer.alloc(0));
        // TCP mode has no answer to read, so a refusal (certificate or policy) is a close with nothing sent:
        // there is no status to show the local client, so say it in the log.
        socket.once('end', () => {
          if (conn.bytesDown === 0 && !conn.client.readableEnded) {
            logger.warn({ id: conn.id, reason: 'access-tier-closed' }, `the access tier at ${config.accessTierAddress} closed the tunnel without sending anything: it may have refused the trust certificate or denied access; run \`causeway login\` again if this persists`);
          }
        });
      })
      .catch((err: unknown) => failUpstream(conn, err));
  };

  const onConnection = (client: net.Socket): void => {
    client.setNoDelay(true);
    if (closing) {
      client.destroy();
      return;
    }
    stats.connections += 1;
    stats.active += 1;
    const conn: LiveConnection = { id: nextId++, client, upstream: undefined, phase: 'head', timer: undefined, ticketSeen: false, bytesDown: 0 };
    live.add(conn);
    client.on('error', (err) => {
      logger.debug({ id: conn.id, err }, 'local client socket error');
      conn.upstream?.destroy();
    });
    client.on('close', () => {
      live.delete(conn);
      stats.active -= 1;
      clearTimeout(conn.timer);
      if (conn.phase !== 'relay') conn.upstream?.destroy();
      conn.phase = 'done';
    });
    if (mode === 'tcp') handleTcp(conn);
    else handleChain(conn);
  };

  const servers = await listenAll(config.hosts, config.port, onConnection, logger);
  const boundPort = (servers[0]?.address() as net.AddressInfo).port;
  logger.info({ service: service.metadata.name, mode, port: boundPort, accessTier: config.accessTierAddress }, 'client proxy listening');

  const stopListening = (): Promise<void> =>
    Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined);

  const proxy: ClientProxy = {
    mode,
    port: () => boundPort,
    addresses: () =>
      servers.flatMap((s) => {
        const a = s.address();
        return a !== null && typeof a === 'object' ? [{ host: a.address, port: a.port }] : [];
      }),
    stats: () => ({ ...stats }),
    async close(): Promise<void> {
      closing = true;
      const listening = stopListening();
      const waits: Array<Promise<void>> = [];
      for (const conn of live) {
        waits.push(new Promise<void>((resolve) => (conn.client.destroyed ? resolve() : conn.client.once('close', () => resolve()))));
        if (conn.phase === 'relay') endRelay(conn);
        else {
          conn.upstream?.destroy();
          conn.client.destroy();
        }
      }
      const grace = setTimeout(() => {
        for (const conn of live) {
          conn.upstream?.destroy();
          conn.client.destroy();
        }
      }, config.closeGraceMs);
      await Promise.all(waits);
      clearTimeout(grace);
      await listening;
      logger.info({ service: service.metadata.name }, 'client proxy closed');
    },
    destroy(): void {
      closing = true;
      void stopListening();
      for (const conn of live) {
        conn.upstream?.destroy();
        conn.client.destroy();
      }
    },
    [Symbol.asyncDispose]: () => proxy.close(),
  };
  return proxy;
}

interface LiveConnection {
  id: number;
  client: net.Socket;
  upstream: tls.TLSSocket | undefined;
  phase: 'head' | 'dial' | 'answer' | 'relay' | 'done';
  timer: NodeJS.Timeout | undefined;
  /** The access tier sent a session ticket on this connection, so it accepted our certificate. */
  ticketSeen: boolean;
  /** Bytes relayed to the local client on this connection. */
  bytesDown: number;
}

/** Sends FIN both ways; the relay finishes once both sides have done the same. */
function endRelay(conn: LiveConnection): void {
  conn.client.end();
  conn.upstream?.end();
}

/**
 * Relays both ways with backpressure: a side whose write buffer is full pauses the other side's reads
 * until it drains. An end (FIN) on one side ends only that direction (half-close); an error or an abrupt
 * close on either side destroys both.
 */
function relay(a: net.Socket, b: net.Socket, countAB: (n: number) => void, countBA: (n: number) => void): void {
  const pipe = (from: net.Socket, to: net.Socket, count: (n: number) => void): void => {
    from.on('data', (chunk: Buffer) => {
      count(chunk.length);
      to.write(chunk);
      // Pause only once RELAY_BUFFER_BYTES wait (not at the socket's 16 KiB highWaterMark, one TLS record,
      // which paused and resumed the source after nearly every chunk); past the highWaterMark the write
      // returned false, so 'drain' comes.
      if (to.writableLength >= RELAY_BUFFER_BYTES) from.pause();
    });
    to.on('drain', () => from.resume());
    // A paused stream still emits 'end' when nothing is buffered, so a FIN may have come in while the
    // tunnel was being set up: carry it over now.
    if (from.readableEnded) to.end();
    else from.on('end', () => to.end());
    from.on('error', () => to.destroy());
    from.on('close', () => {
      // Once `from` is gone nothing can deliver `to`'s remaining bytes: unless `to` has already said it is
      // done sending, cut it.
      if (!to.destroyed && !to.readableEnded) to.destroy();
    });
  };
  pipe(a, b, countAB);
  pipe(b, a, countBA);
  a.resume();
  b.resume();
}

/** A listener per loopback host, all on one port. */
async function listenAll(hosts: string[], port: number, onConnection: (socket: net.Socket) => void, logger: Logger): Promise<net.Server[]> {
  const attempts = port === 0 ? 5 : 1;
  for (let attempt = 1; ; attempt++) {
    const servers: net.Server[] = [];
    let chosen = port;
    try {
      for (const host of hosts) {
        const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
        try {
          await listen(server, host, chosen);
        } catch (err) {
          const code = errorCode(err);
          if (host === '::1' && servers.length > 0 && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) {
            logger.debug({ host }, 'no IPv6 loopback on this machine; listening on IPv4 only');
            continue;
          }
          throw err;
        }
        servers.push(server);
        if (chosen === 0) chosen = (server.address() as net.AddressInfo).port;
      }
      return servers;
    } catch (err) {
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      if (errorCode(err) === 'EADDRINUSE') {
        if (attempt < attempts) continue;
        throw new UserError('PORT_IN_USE', `Port ${chosen} is already in use on ${hosts.join(' and ')}; stop whatever holds it or choose another port.`, { cause: err });
      }
      if (errorCode(err) === 'EACCES') {
        throw new UserError('PORT_NOT_PERMITTED', `Not permitted to listen on port ${chosen}; choose a port above 1023.`, { cause: err });
      }
      throw err;
    }
  }
}

function listen(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port, ipv6Only: net.isIPv6(host) }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function checkAndSetDefaults(options: ClientProxyOptions): Required<Omit<ClientProxyOptions, 'logger'>> & { logger: Logger } {
  const hosts = options.hosts ?? DEFAULT_HOSTS;
  if (hosts.length === 0) throw new UserError('NO_LISTEN_ADDRESS', 'The client proxy needs at least one loopback address to listen on (127.0.0.1 or ::1).');
  for (const host of hosts) {
    const problem = loopbackProblem(host);
    if (problem !== undefined) throw new UserError('NON_LOOPBACK_LISTEN', `The client proxy listens on loopback addresses only: ${problem}.`);
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new UserError('BAD_PORT', `Port ${String(options.port)} is not a port number (1-65535).`);
  }
  splitAddress(options.accessTierAddress);
  return {
    service: options.service,
    accessTierAddress: options.accessTierAddress,
    trust: options.trust,
    hosts,
    port: options.port,
    logger: options.logger ?? silentLogger(),
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    headerTimeoutMs: options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS,
    sessionResumption: options.sessionResumption ?? true,
    closeGraceMs: options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS,
    dialer: options.dialer ?? ((o: AccessTierDialOptions) => tls.connect(o)),
    clock: options.clock ?? systemClock,
  };
}

function splitAddress(address: string): { host: string; port: number } {
  const parsed = parseAuthority(address);
  if (!parsed.ok) throw new UserError('BAD_ACCESS_TIER_ADDRESS', `The access tier address ${JSON.stringify(address)} is not host:port (${parsed.message}).`);
  return { host: parsed.target.host, port: parsed.target.port };
}

/** The service domain in the form parsed targets come in (lower case, no trailing dot); a bad one is the spec's fault. */
function canonicalDomain(service: ServiceSpec): string {
  const domain = canonicalHostname(service.spec.domain);
  if (domain === undefined) throw new UserError('BAD_SERVICE_DOMAIN', `Service "${service.metadata.name}" has the domain ${JSON.stringify(service.spec.domain.slice(0, 260))}, which is not a DNS name; fix the service spec.`);
  return domain;
}

/** The names an HTTP client may legitimately use for a TCP-mode service's local port: the service domain and its backend names. */
function serviceHostNames(service: ServiceSpec, domain: string): Set<string> {
  const names = new Set([domain]);
  for (const authority of [service.spec.backend.target, service.spec.backend.dnsOverride]) {
    if (authority === undefined) continue;
    const parsed = parseAuthority(authority);
    if (parsed.ok && parsed.target.kind === 'dns') names.add(parsed.target.host);
  }
  return names;
}

const HTTP_REQUEST_LINE = /^[A-Z]{3,16} [^ \r\n]+ HTTP\/1\.[01]\r?\n/;

/**
 * LP-02 in TCP mode, where the listener forwards raw bytes: a web page that rebinds its own name to
 * 127.0.0.1 (or posts across origins) reaches this port with the browser's HTTP request, and
 * forwarding it would hand the page the service behind it with the user's identity. So when the
 * first bytes a local client sends are an HTTP request whose Host (or Origin) names anything but
 * loopback, localhost or the service's own names, the reason is returned and nothing is forwarded.
 * Anything that is not an HTTP/1 request (a database protocol, TLS) is not looked at.
 */
export function foreignWebRequest(chunk: Buffer, ownNames: ReadonlySet<string>): string | undefined {
  const text = chunk.toString('latin1', 0, Math.min(chunk.length, 16 * 1024));
  if (!HTTP_REQUEST_LINE.test(text)) return undefined;
  const end = text.search(/\r?\n\r?\n/);
  const lines = (end === -1 ? text : text.slice(0, end)).split(/\r?\n/).slice(1);
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'host' && !localName(hostOf(value), ownNames)) return `Host ${value.slice(0, 100)}`;
    if (name === 'origin') {
      let host: string | undefined;
      try {
        host = new URL(value).hostname;
      } catch {
        host = undefined;
      }
      if (host === undefined || !localName(host.replace(/^\[|\]$/g, ''), ownNames)) return `Origin ${value.slice(0, 100)}`;
    }
  }
  return undefined;
}

/** The host part of a Host header value: brackets and port removed. */
function hostOf(value: string): string {
  if (value.startsWith('[')) return value.slice(1, value.indexOf(']') === -1 ? undefined : value.indexOf(']'));
  const colon = value.lastIndexOf(':');
  return colon === -1 ? value : value.slice(0, colon);
}

function localName(host: string, ownNames: ReadonlySet<string>): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost') || name === '::1') return true;
  if (net.isIPv4(name)) return name.startsWith('127.');
  return ownNames.has(name);
}

function describePatterns(patterns: NonNullable<ServiceSpec['spec']['backend']['allowPatterns']>): string {
  return patterns
    .map((p) => {
      const hosts = [...(p.hostnames ?? []), ...(p.cidrs ?? [])];
      const ports = p.ports === undefined || p.ports.length === 0 ? 'any port' : `port ${p.ports.join(',')}`;
      return `${hosts.length === 0 ? 'any host' : hosts.join(',')} on ${ports}`;
    })
    .join('; ');
}

class UpstreamFailure extends Error {
  readonly status: number;
  readonly reason: string;

  constructor(status: number, reason: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'UpstreamFailure';
    this.status = status;
    this.reason = reason;
  }
}

function unreachable(address: string, err: Error): UpstreamFailure {
  const code = errorCode(err);
  return new UpstreamFailure(502, 'access-tier-unreachable', `The access tier at ${address} could not be reached${code === undefined ? '' : ` (${code})`}. Check the address and your network, then retry.`, err);
}

function tlsFailure(address: string, notAfter: number | undefined, clock: Clock, err: Error): UpstreamFailure {
  const code = errorCode(err);
  const expired = notAfter !== undefined && clock.now() > notAfter;
  const hint = expired
    ? `Your trust certificate expired at ${new Date(notAfter).toISOString()}; run \`causeway login\` to get a new one.`
    : 'The access tier may have refused the trust certificate (expired, revoked, or from another installation): run `causeway login` again, and check that the trust certificate and CA files belong to this installation.';
  return new UpstreamFailure(502, 'access-tier-tls-failed', `The TLS handshake with the access tier at ${address} failed${code === undefined ? '' : ` (${code})`}. ${hint}`, err);
}

function closedEarly(address: string, err: Error): UpstreamFailure {
  return new UpstreamFailure(502, 'access-tier-closed', `The access tier at ${address} closed the tunnel before answering. Retry; if it keeps happening, run \`causeway login\` again.`, err);
}

/** Alerts from the server after our side of the handshake finished (TLS 1.3 checks the client certificate then). */
function isTlsError(err: Error): boolean {
  const code = errorCode(err) ?? '';
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_');
}

/** Reason codes are tokens: lower-case letters, digits and dashes, at most 64. */
function sanitiseReason(reason: string): string {
  const clean = reason.toLowerCase().replace(/[^a-z0-9-]/g, '').slice(0, 64);
  return clean === '' ? 'access-tier-refused' : clean;
}

/** Text from the access tier shown to the user: no control or bidi-format characters, bounded length. */
function sanitiseText(text: string): string {
  return text
    .replace(/\r\n?/g, '\n')
    .replace(/[^\P{Cc}\n\t]|\p{Cf}/gu, '')
    .trim()
    .slice(0, MAX_ERROR_BODY_BYTES);
}
