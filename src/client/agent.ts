/**
 * The background agent (issue 7): one process per user that holds the local proxies of connected
 * services, renews the trust certificate and reports posture on schedule (one of each for the agent, not
 * per proxy), notices sleep and network changes, starts autorun services once logged in, and serves the
 * local app page (app-page.ts). The CLI talks to it over HTTP/1.1 + JSON on a unix socket
 * (agent-client.ts).
 *
 * Who may talk to it (LP-01): the socket is `$CAUSEWAY_HOME/agent.sock`. The agent refuses to start when
 * that directory (or one above it) is writable by another user or owned by one (src/lib/fs-safety.ts),
 * makes it 0700 and the socket 0600. On Linux a unix socket is opened with write permission on the
 * socket file, and reaching it needs search permission on the directory, so the modes are the peer check:
 * only this user (and root) can connect. Every request must also carry `X-Causeway-Agent: 1` and no
 * `Origin` (a browser never gets here, but if some bridge forwarded a page's request, it could not add
 * that header without a CORS preflight nobody answers).
 *
 * One agent per home: `agent.pid` is created with O_EXCL and held for the agent's life. A second agent
 * finds it, sees the holder alive and stops (AGENT_ALREADY_RUNNING); a lock whose pid is gone is moved
 * aside and taken. Only the lock holder removes a stale socket file and listens.
 *
 * Connecting a service uses the live catalog (catalog.ts; the last good one when the control plane is
 * unreachable). A service whose policy would deny access right now still connects: the answer carries the
 * denial's explanation, so the user sees what to fix, and access follows as soon as the device qualifies
 * (the access tier decides on every connection anyway). Disconnecting leaves the kubeconfig entry in
 * place, so kubectl then fails with "connection refused" to the local proxy's port, which says plainly
 * that nothing is connected.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NetworkInterfaceInfo } from 'node:os';
import path from 'node:path';
import type { Clock } from '../lib/clock.ts';
import { CausewayError, UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { assertSafePath } from '../lib/fs-safety.ts';
import type { Logger } from '../lib/log.ts';
import type { Session } from '../lib/session/index.ts';
import { AGENT_HEADER, agentSocketPath, agentStatus, checkSocketPath } from './agent-client.ts';
import type { AgentConnection, AgentConnectResult, AgentStatus } from './agent-client.ts';
import { findEntry, proxyInputFor } from './catalog.ts';
import type { CatalogContext, CatalogEntry } from './catalog.ts';
import { currentDevice } from './device.ts';
import { HttpError, readJsonObject } from './json-body.ts';
import type { DeviceContext, TrustVerdict } from './device.ts';
import { startPostureReporting } from './posture-reporting.ts';
import type { PostureReporting, PostureReportingOptions } from './posture-reporting.ts';
import { startClientProxy } from './proxy.ts';
import type { ClientProxy, ClientProxyOptions, TrustSource } from './proxy.ts';
import { renewalTime, startTrustRenewal } from './trust-renewal.ts';
import type { Timers, TrustRenewal } from './trust-renewal.ts';

export const AGENT_PID_FILE = 'agent.pid';
/** The wall clock may run this far ahead of the interval timer before we call it a sleep. */
export const WAKE_JUMP_MS = 30_000;
export const WAKE_CHECK_MS = 5_000;
export const NETWORK_POLL_MS = 10_000;
export const CATALOG_REFRESH_MS = 5 * 60_000;
const MAX_BODY = 64 * 1024;

export interface Intervals {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

const realIntervals: Intervals = {
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (handle) => clearInterval(handle as ReturnType<typeof setInterval>),
};

/** Where a Kubernetes service's kubeconfig entry is written (CL-CAT's kubeconfig.ts behind it). */
export type KubeconfigWriter = (entries: Array<{ entry: CatalogEntry; listenPort: number }>) => Promise<{ file: string; contexts: string[] }>;

/** A catalog entry as `GET /v1/services` answers it: with whether (and where) it is connected here. */
export interface AgentServiceEntry extends CatalogEntry {
  connected: boolean;
  localPort?: number;
}

export interface AgentServices {
  services: AgentServiceEntry[];
  /** True when the managed config hides the catalog: only connected and autorun services are listed. */
  catalogHidden: boolean;
  /** Set when the live catalog could not be fetched and this is the last good one. */
  stale?: { code: string; message: string };
}

/** What the local app page needs from the agent (app-page.ts). */
export interface AgentBackend {
  status(): Promise<AgentStatus>;
  services(): Promise<AgentServices>;
  connect(service: string, port?: number): Promise<AgentConnectResult & { warning?: string }>;
  disconnect(service: string): Promise<{ disconnected: boolean }>;
}

export interface AgentAppPage {
  port(): number;
  /** The URL that opens the page with its secret. */
  url(): string;
  close(): Promise<void>;
}

export interface AgentOptions {
  home: string;
  logger: Logger;
  clock: Clock;
  /** The device context (session, device files, posture collectors); also the catalog's context. */
  ctx: DeviceContext & CatalogContext;
  /** The session on disk, without refreshing (undefined when logged out). */
  readSession: () => Promise<Session | undefined>;
  /** The trust material the proxies present (trust.crt/trust.key/ca.crt, re-read when they change). */
  trust: TrustSource;
  fetchCatalog: (ctx: CatalogContext) => Promise<CatalogEntry[]>;
  /** Writes kubeconfig entries on connect; undefined: none are written. */
  writeKubeconfig?: KubeconfigWriter;
  /** Service names the managed config says to start once logged in (beside the catalog's autorun). */
  autorun?: string[];
  hideCatalog?: boolean;
  /** Best effort: who listens on a port (Linux /proc lookup; command.ts describePortHolder). */
  describePortHolder?: (port: number) => string | undefined;
  startProxy?: (options: ClientProxyOptions) => Promise<ClientProxy>;
  /** Loopback addresses the proxies listen on; default 127.0.0.1 and ::1. */
  proxyHosts?: string[];
  networkInterfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  intervals?: Intervals;
  timers?: Timers;
  wakeCheckMs?: number;
  networkPollMs?: number;
  catalogRefreshMs?: number;
  /** Tunes the posture reports (interval, first delay, jitter). */
  reporting?: Partial<Pick<PostureReportingOptions, 'intervalMs' | 'firstDelayMs' | 'jitter' | 'random'>>;
  /** Starts the local app page (app-page.ts); undefined: no page. */
  startApp?: (backend: AgentBackend) => Promise<AgentAppPage>;
  /** Called once after a `POST /v1/shutdown` has closed the agent (the command exits). */
  onShutdown?: () => void;
  /** Checks the home's safety with this uid (tests); default the process's. */
  uid?: number;
}

export interface Agent {
  readonly socketPath: string;
  status(): Promise<AgentStatus>;
  services(): Promise<AgentServices>;
  connect(service: string, port?: number): Promise<AgentConnectResult & { warning?: string }>;
  disconnect(service: string): Promise<{ disconnected: boolean }>;
  /** What a wake-up or network change does: renew, report, refresh the catalog, start autorun services. */
  refresh(reason: string): Promise<void>;
  appUrl(): string | undefined;
  close(): Promise<void>;
}

interface Connection {
  entry: CatalogEntry;
  proxy: ClientProxy;
  since: number;
  autorun: boolean;
  kubeContext?: string;
  kubeconfig?: string;
}

/** Makes the home 0700 and refuses one another user could change. */
async function prepareHome(home: string, uid: number | undefined): Promise<void> {
  await mkdir(home, { recursive: true, mode: 0o700 });
  await assertSafePath(home, 'to run the agent in', 'AGENT_HOME_UNSAFE', uid === undefined ? {} : { uid });
  const st = await stat(home);
  if ((st.mode & 0o077) !== 0) await chmod(home, 0o700);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errorCode(err) === 'EPERM';
  }
}

/** Lock tokens held by agents in this process (an agent of this process is alive exactly while its token is here). */
const HELD_HERE = new Set<string>();

/**
 * Whether agent.pid belongs to a live agent: one of this process, or a live process that either answers
 * on the socket or took the lock less than 30 s ago (it may still be starting). A pid reused by an
 * unrelated process after a crash therefore does not block a new agent for longer than that.
 */
async function lockHeld(home: string, token: string, pid: number, mtimeMs: number): Promise<boolean> {
  // Empty or torn: another agent has just created it and is writing its pid; damaged and old: stale.
  if (!Number.isInteger(pid) || pid <= 0) return Date.now() - mtimeMs < 5_000;
  if (pid === process.pid) return HELD_HERE.has(token);
  if (!pidAlive(pid)) return false;
  if (Date.now() - mtimeMs < 30_000) return true;
  return (await agentStatus(home, { timeoutMs: 5_000 }).catch(() => null)) !== null;
}

/** Takes agent.pid for this process; AGENT_ALREADY_RUNNING when a live agent holds it. Returns its release. */
async function takePidLock(home: string): Promise<() => Promise<void>> {
  const file = path.join(home, AGENT_PID_FILE);
  const token = `${process.pid} ${randomBytes(8).toString('hex')}`;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o600);
      await handle.writeFile(`${token}\n`);
      await handle.close();
      HELD_HERE.add(token);
      return async () => {
        HELD_HERE.delete(token);
        const now = await readFile(file, 'utf8').catch(() => '');
        if (now.startsWith(token)) await unlink(file).catch(() => undefined);
      };
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw new UserError('AGENT_HOME_UNWRITABLE', `cannot create ${file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    }
    const text = await readFile(file, 'utf8').catch(() => '');
    const mtimeMs = await stat(file).then((st) => st.mtimeMs, () => 0);
    const pid = Number(text.split(' ')[0]);
    if (await lockHeld(home, text.trim(), pid, mtimeMs)) {
      throw new UserError(
        'AGENT_ALREADY_RUNNING',
        Number.isInteger(pid) && pid > 0
          ? `A Causeway agent is already running for ${home} (pid ${pid}). Use it (causeway status), or stop it first (kill ${pid}).`
          : `Another Causeway agent is starting for ${home}. Use it (causeway status).`,
      );
    }
    // Its holder is gone: move it aside under a unique name, so two agents breaking it cannot remove a fresh one.
    const aside = `${file}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
    if (await rename(file, aside).then(() => true, () => false)) await rm(aside, { force: true });
  }
  throw new CausewayError('AGENT_LOCK_CONTENDED', `could not take ${file}; another agent keeps starting. Try again.`);
}

function networkFingerprint(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): string {
  return Object.entries(interfaces)
    .flatMap(([name, list]) => (list ?? []).filter((i) => !i.internal).map((i) => `${name}/${i.family}/${i.address}/${i.netmask}`))
    .sort()
    .join(',');
}

/** The HTTP status for an error thrown by an operation: a UserError is the caller's to fix (4xx). */
function statusFor(err: unknown): number {
  if (err instanceof HttpError) return err.status;
  const code = errorCode(err);
  if (code === 'UNKNOWN_SERVICE') return 404;
  if (code === 'PORT_IN_USE' || code === 'ALREADY_CONNECTED') return 409;
  if (err instanceof UserError) return 400;
  return 500;
}

export async function startAgent(options: AgentOptions): Promise<Agent> {
  const { home, clock, ctx } = options;
  const logger = options.logger;
  const socketPath = agentSocketPath(home);
  checkSocketPath(socketPath);
  await prepareHome(home, options.uid);
  const releaseLock = await takePidLock(home);

  const intervals = options.intervals ?? realIntervals;
  const startProxy = options.startProxy ?? startClientProxy;
  const describeHolder = options.describePortHolder ?? ((): undefined => undefined);
  const managedAutorun = new Set(options.autorun ?? []);
  const startedAt = clock.now();
  const connections = new Map<string, Connection>();
  let catalog: CatalogEntry[] | undefined;
  let catalogError: { code: string; message: string } | undefined;
  let lastError: { code: string; message: string; at: string } | undefined;
  let lastTrust: TrustVerdict | null | undefined;
  let loggedInServer: string | undefined;
  let renewal: TrustRenewal | undefined;
  let reporting: PostureReporting | undefined;
  let app: AgentAppPage | undefined;
  let closed = false;
  let closing: Promise<void> | undefined;
  // Connects and disconnects run one at a time: two connects of one service, or a connect racing a
  // disconnect, must not start two proxies or leave one behind.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => undefined);
    return run;
  };

  const noteError = (err: unknown, what: string): void => {
    lastError = { code: errorCode(err) ?? 'ERROR', message: `${what}: ${errorMessage(err)}`, at: new Date(clock.now()).toISOString() };
    logger.warn({ code: lastError.code }, lastError.message);
  };

  const refreshCatalog = async (): Promise<CatalogEntry[]> => {
    try {
      catalog = await options.fetchCatalog(ctx);
      catalogError = undefined;
      return catalog;
    } catch (err) {
      catalogError = { code: errorCode(err) ?? 'ERROR', message: errorMessage(err) };
      // The last good catalog serves while the control plane is unreachable; a login problem is the user's to fix.
      if (catalog !== undefined && !(err instanceof UserError)) {
        logger.warn({ code: catalogError.code }, `using the last service catalog: ${catalogError.message}`);
        return catalog;
      }
      throw err;
    }
  };

  const connectionView = (c: Connection): AgentConnection => {
    const stats = c.proxy.stats();
    return {
      service: c.entry.name,
      type: c.entry.type,
      port: c.proxy.port(),
      since: new Date(c.since).toISOString(),
      bytesUp: stats.bytesUp,
      bytesDown: stats.bytesDown,
      openConnections: stats.active,
      totalConnections: stats.connections,
      autorun: c.autorun,
      ...(c.kubeContext === undefined ? {} : { kubeContext: c.kubeContext }),
      ...(c.kubeconfig === undefined ? {} : { kubeconfig: c.kubeconfig }),
    };
  };

  const doConnect = async (name: string, requestedPort: number | undefined, autorun: boolean): Promise<AgentConnectResult & { warning?: string }> => {
    if (closed) throw new CausewayError('AGENT_CLOSING', 'the agent is shutting down');
    const entries = await refreshCatalog();
    const entry = findEntry(entries, name);
    const existing = connections.get(entry.name);
    if (existing !== undefined) {
      if (requestedPort !== undefined && requestedPort !== existing.proxy.port()) {
        throw new UserError('ALREADY_CONNECTED', `${entry.name} is already connected on 127.0.0.1:${existing.proxy.port()}. Disconnect it first (causeway disconnect ${entry.name}) to use another port.`);
      }
      return { connection: connectionView(existing), alreadyConnected: true };
    }
    const port = listenPortFor(entry, requestedPort);
    const clash = [...connections.values()].find((c) => c.proxy.port() === port);
    if (clash !== undefined) {
      throw new UserError('PORT_IN_USE', `Port ${port} is already in use by this agent for ${clash.entry.name}. Disconnect it first${entry.client.allowUserOverride ? `, or choose another port with --port N` : ''}.`);
    }
    const input = proxyInputFor(entry);
    let proxy: ClientProxy;
    try {
      proxy = await startProxy({ ...input, trust: options.trust, port, logger: logger.child({ service: entry.name }), ...(options.proxyHosts === undefined ? {} : { hosts: options.proxyHosts }) });
    } catch (err) {
      if (errorCode(err) === 'PORT_IN_USE' || errorCode(err) === 'EADDRINUSE') {
        const holder = describeHolder(port);
        throw new UserError(
          'PORT_IN_USE',
          `Port ${port} is already in use${holder === undefined ? '' : ` by ${holder}`}. Stop it${entry.client.allowUserOverride ? ', or choose another port with --port N' : ''}, then connect ${entry.name} again.`,
          { cause: err },
        );
      }
      throw err;
    }
    const connection: Connection = { entry, proxy, since: clock.now(), autorun };
    if (entry.type === 'kubernetes' && entry.kubernetes !== null && options.writeKubeconfig !== undefined) {
      try {
        // Every Kubernetes service of the catalog, this one first: in overwrite mode the file is regenerated
        // from exactly these, and in merge mode the others' entries are refreshed (their ports as connected).
        const others = entries
          .filter((e) => e.type === 'kubernetes' && e.kubernetes !== null && e.name !== entry.name)
          .map((e) => ({ entry: e, listenPort: connections.get(e.name)?.proxy.port() ?? e.client.listenPort }));
        const written = await options.writeKubeconfig([{ entry, listenPort: proxy.port() }, ...others]);
        connection.kubeconfig = written.file;
        connection.kubeContext = written.contexts[0] ?? entry.kubernetes.clusterName;
      } catch (err) {
        await proxy.close();
        throw err;
      }
    }
    connections.set(entry.name, connection);
    logger.info({ service: entry.name, port: proxy.port(), autorun }, 'connected');
    const denied = !entry.access.allowed;
    return {
      connection: connectionView(connection),
      ...(denied ? { warning: `access is denied right now${entry.access.mode === 'permissive' ? ' (permissive mode: it is only logged)' : ''}: ${entry.access.explanation || entry.access.reasons.join(', ')}` } : {}),
    };
  };

  const doDisconnect = async (name: string): Promise<{ disconnected: boolean }> => {
    const connection = connections.get(name);
    if (connection === undefined) return { disconnected: false };
    connections.delete(name);
    await connection.proxy.close();
    logger.info({ service: name }, 'disconnected');
    return { disconnected: true };
  };

  const connect = (name: string, port?: number): Promise<AgentConnectResult & { warning?: string }> => serial(() => doConnect(name, port, false));
  const disconnect = (name: string): Promise<{ disconnected: boolean }> => serial(() => doDisconnect(name));

  /** Starts every autorun service not yet connected: the catalog's autorun:true and the managed list. */
  const startAutorun = async (entries: CatalogEntry[]): Promise<void> => {
    for (const entry of entries) {
      if (!entry.autorun && !managedAutorun.has(entry.name)) continue;
      if (connections.has(entry.name)) continue;
      await serial(() => doConnect(entry.name, undefined, true)).catch((err: unknown) => {
        noteError(err, `autorun ${entry.name}`);
      });
    }
    for (const name of managedAutorun) {
      if (!entries.some((e) => e.name === name)) logger.warn({ service: name }, `the managed config says to autorun ${name}, which is not in your catalog`);
    }
  };

  /** Starts the trust renewal and posture reports for the session's server (again after a new login). */
  const startBackground = async (session: Session): Promise<void> => {
    renewal?.close();
    await reporting?.close();
    loggedInServer = session.server;
    const r = await startTrustRenewal({ ctx, clock, logger, ...(options.timers === undefined ? {} : { timers: options.timers }) });
    renewal = r;
    reporting = startPostureReporting({
      ...options.reporting,
      ctx,
      clock,
      logger,
      ...(options.timers === undefined ? {} : { timers: options.timers }),
      onReport: (result) => {
        if (result.ok) lastTrust = result.trust;
        else noteError(new CausewayError(result.reason, result.message), 'posture report');
      },
      onTrustAllowed: async (_trust, first) => {
        if (first) {
          const held = await ctx.files.readTrust().catch(() => undefined);
          if (held !== undefined && renewalTime(held) > clock.now()) return;
        }
        await r.renewNow();
      },
    });
    void currentDevice(ctx)
      .then((found) => {
        if (found?.device !== undefined && lastTrust === undefined) lastTrust = found.device.trust;
      })
      .catch(() => undefined);
  };

  /** Stops every local proxy: the session they were for has ended (logout, or a login elsewhere). */
  const disconnectAll = async (why: string): Promise<void> => {
    const names = [...connections.keys()];
    if (names.length === 0) return;
    logger.info({ services: names }, `${why}: disconnecting every service`);
    for (const name of names) await serial(() => doDisconnect(name));
    catalog = undefined;
  };

  /**
   * Notices a login (or a login to another server) and a logout. A logout, or a login to another control
   * plane, disconnects every service first: access ends with the session it was granted to. Concurrent
   * callers (the poll, a wake-up) share one check.
   */
  let loginCheck: Promise<boolean> | undefined;
  const checkLogin = (): Promise<boolean> => {
    loginCheck ??= (async () => {
      const session = await options.readSession().catch(() => undefined);
      if (loggedInServer !== undefined && session?.server !== loggedInServer) {
        await disconnectAll(session === undefined ? 'logged out' : `logged in to another control plane (${session.server})`);
        logger.info('stopping trust renewal and posture reports');
        renewal?.close();
        await reporting?.close();
        renewal = undefined;
        reporting = undefined;
        loggedInServer = undefined;
        lastTrust = undefined;
      }
      if (session === undefined || closed) return false;
      if (session.server !== loggedInServer) {
        logger.info({ server: session.server }, 'logged in: starting trust renewal, posture reports and autorun services');
        await startBackground(session);
        const entries = await refreshCatalog().catch((err: unknown) => {
          noteError(err, 'fetching the service catalog');
          return undefined;
        });
        if (entries !== undefined) await startAutorun(entries);
      }
      return true;
    })().finally(() => {
      loginCheck = undefined;
    });
    return loginCheck;
  };

  const refresh = async (reason: string): Promise<void> => {
    if (closed) return;
    logger.info({ reason }, 'refreshing: trust certificate, posture, service catalog');
    if (!(await checkLogin())) return;
    await Promise.all([
      renewal?.renewNow().catch((err: unknown) => noteError(err, 'renewing the trust certificate')),
      reporting?.reportNow().catch((err: unknown) => noteError(err, 'posture report')),
    ]);
    const entries = await refreshCatalog().catch((err: unknown) => {
      noteError(err, 'fetching the service catalog');
      return undefined;
    });
    if (entries !== undefined) await startAutorun(entries);
  };

  const status = async (): Promise<AgentStatus> => {
    const session = await options.readSession().catch(() => undefined);
    const state = await ctx.files.readState().catch(() => undefined);
    const trust = await ctx.files.readTrust().catch(() => undefined);
    const device = state !== undefined && session !== undefined && state.server === session.server ? state : undefined;
    return {
      pid: process.pid,
      startedAt: new Date(startedAt).toISOString(),
      server: session?.server ?? null,
      user: session === undefined ? null : { name: session.user.name, ...(session.user.email === undefined ? {} : { email: session.user.email }) },
      device:
        device === undefined
          ? null
          : {
              id: device.id,
              ...(typeof lastTrust?.level === 'string' ? { trustLevel: lastTrust.level } : {}),
              ...(typeof lastTrust?.explanation === 'string' && lastTrust.explanation !== '' ? { explanation: lastTrust.explanation } : {}),
            },
      trustCert: trust === undefined ? null : { notAfter: new Date(trust.notAfter).toISOString() },
      connections: [...connections.values()].map(connectionView).sort((a, b) => a.service.localeCompare(b.service)),
      ...(lastError === undefined ? {} : { lastError }),
      ...(app === undefined ? {} : { appPort: app.port() }),
    };
  };

  const services = async (): Promise<AgentServices> => {
    let stale: AgentServices['stale'];
    const entries = await refreshCatalog();
    if (catalogError !== undefined) stale = catalogError;
    const hidden = options.hideCatalog === true;
    const listed = entries
      .filter((e) => !hidden || connections.has(e.name) || e.autorun || managedAutorun.has(e.name))
      .map((e): AgentServiceEntry => {
        const c = connections.get(e.name);
        return { ...e, connected: c !== undefined, ...(c === undefined ? {} : { localPort: c.proxy.port() }) };
      });
    return { services: listed, catalogHidden: hidden, ...(stale === undefined ? {} : { stale }) };
  };

  // --- the socket ---------------------------------------------------------------------------------
  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      sendJson(res, statusFor(err), { error: { code: errorCode(err) ?? 'INTERNAL', message: err instanceof CausewayError || err instanceof HttpError ? err.message : 'internal error; see the agent log' } });
      if (!(err instanceof CausewayError) && !(err instanceof HttpError)) logger.error({ err }, 'agent request failed');
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 120_000;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.headers[AGENT_HEADER] !== '1') throw new HttpError(403, 'AGENT_HEADER_MISSING', `requests to the agent must carry ${AGENT_HEADER}: 1`);
    if (req.headers.origin !== undefined) throw new HttpError(403, 'AGENT_ORIGIN_REFUSED', 'the agent does not answer browser requests');
    const url = new URL(req.url ?? '/', 'http://agent');
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    switch (route) {
      case 'GET /v1/status':
        sendJson(res, 200, await status());
        return;
      case 'GET /v1/services':
        sendJson(res, 200, await services());
        return;
      case 'GET /v1/app': {
        if (app === undefined) throw new HttpError(404, 'APP_DISABLED', 'this agent runs without the app page (started with --no-app)');
        sendJson(res, 200, { url: app.url(), port: app.port() });
        return;
      }
      case 'POST /v1/connect': {
        const body = await readJsonObject(req, MAX_BODY);
        const service = stringField(body, 'service');
        const port = body.port;
        if (port !== undefined && (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)) throw new HttpError(400, 'BAD_REQUEST', 'port must be a port number');
        sendJson(res, 200, await connect(service, port));
        return;
      }
      case 'POST /v1/disconnect': {
        const body = await readJsonObject(req, MAX_BODY);
        sendJson(res, 200, await disconnect(stringField(body, 'service')));
        return;
      }
      case 'POST /v1/refresh':
        await refresh('requested');
        sendJson(res, 200, await status());
        return;
      case 'POST /v1/shutdown':
        sendJson(res, 202, { stopping: true });
        res.on('finish', () => {
          void close().then(() => options.onShutdown?.());
        });
        return;
      default:
        throw new HttpError(404, 'NOT_FOUND', `no route ${route}`);
    }
  };

  // A stale socket (no agent answers it; we hold the pid lock, so none runs) is removed first.
  await rm(socketPath, { force: true });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(socketPath, 0o600);
  } catch (err) {
    await releaseLock();
    throw new CausewayError('AGENT_LISTEN_FAILED', `the agent cannot listen on ${socketPath}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
  }
  const socketIno = (await stat(socketPath)).ino;

  // --- sleep and network changes ------------------------------------------------------------------
  const wakeCheckMs = options.wakeCheckMs ?? WAKE_CHECK_MS;
  let lastTick = clock.now();
  const wakeTimer = intervals.setInterval(() => {
    const now = clock.now();
    const jump = now - lastTick - wakeCheckMs;
    lastTick = now;
    if (jump > WAKE_JUMP_MS) {
      logger.info({ jumpMs: jump }, 'the clock jumped (sleep or suspend)');
      void refresh('wake');
    }
  }, wakeCheckMs);
  let fingerprint = networkFingerprint(options.networkInterfaces());
  const networkTimer = intervals.setInterval(() => {
    const now = networkFingerprint(options.networkInterfaces());
    if (now !== fingerprint) {
      fingerprint = now;
      logger.info('the network changed');
      void refresh('network');
      return;
    }
    // Also: a login or logout since the last look, and our socket still being ours.
    void checkLogin().catch((err: unknown) => noteError(err, 'checking the session'));
    void stat(socketPath).then(
      (st) => {
        if (st.ino !== socketIno) {
          logger.warn('another process replaced the agent socket; stopping');
          void close().then(() => options.onShutdown?.());
        }
      },
      () => {
        logger.warn('the agent socket was removed; stopping');
        void close().then(() => options.onShutdown?.());
      },
    );
  }, options.networkPollMs ?? NETWORK_POLL_MS);
  const catalogTimer = intervals.setInterval(() => {
    if (loggedInServer === undefined) return;
    void refreshCatalog()
      .then(startAutorun)
      .catch((err: unknown) => noteError(err, 'fetching the service catalog'));
  }, options.catalogRefreshMs ?? CATALOG_REFRESH_MS);

  const close = (): Promise<void> => {
    closing ??= (async () => {
      closed = true;
      intervals.clearInterval(wakeTimer);
      intervals.clearInterval(networkTimer);
      intervals.clearInterval(catalogTimer);
      renewal?.close();
      await reporting?.close();
      await queue.catch(() => undefined);
      await Promise.all([...connections.values()].map((c) => c.proxy.close().catch(() => undefined)));
      connections.clear();
      await app?.close().catch(() => undefined);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      const st = await stat(socketPath).catch(() => undefined);
      if (st?.ino === socketIno) await rm(socketPath, { force: true });
      await releaseLock();
      logger.info('agent stopped');
    })();
    return closing;
  };

  const agent: Agent = {
    socketPath,
    status,
    services,
    connect,
    disconnect,
    refresh,
    appUrl: () => app?.url(),
    close,
  };
  try {
    if (options.startApp !== undefined) app = await options.startApp({ status, services, connect, disconnect });
    logger.info({ socket: socketPath, appPort: app?.port() }, 'agent started');
    await checkLogin();
  } catch (err) {
    await close();
    throw err;
  }
  return agent;
}

/** The service's listen port, or the user's when the service allows overriding it. */
export function listenPortFor(entry: CatalogEntry, requested: number | undefined): number {
  const own = entry.client.listenPort;
  if (requested === undefined || requested === own) return own;
  if (!entry.client.allowUserOverride) {
    throw new UserError(
      'PORT_OVERRIDE_NOT_ALLOWED',
      `Service "${entry.name}" listens on port ${own}, and its administrator does not allow choosing another (client.allowUserOverride is false). Connect without --port.`,
    );
  }
  return requested;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function stringField(body: Record<string, unknown>, key: string): string {
  const value = body[key];
  if (typeof value !== 'string' || value === '' || value.length > 253) throw new HttpError(400, 'BAD_REQUEST', `${key} must be a service name`);
  return value;
}
