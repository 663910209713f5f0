/**
 * The control plane's HTTP server (the Command Center API): one Fastify app with
 *
 *   /api/v1/…            the admin API (api/*.ts), bearer tokens, JSON schemas on every route
 *   /api/v1/openapi.json the OpenAPI document generated from those schemas
 *   /healthz, /readyz    bare status for load balancers
 *   plugins              routes that parts call with their certificates (enrollment, the config
 *                        stream, event batches), written elsewhere and passed in `plugins`
 *
 * and listeners created on demand: the public one (HTTPS, TLS 1.3, asking for but not requiring a
 * client certificate, so parts can present theirs while admins use tokens; plain HTTP only when asked
 * for explicitly) and the metrics one (/metrics and detailed health, CP-10).
 *
 * Everything it needs comes through options; it reads no files or environment (command.ts does).
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import swagger from '@fastify/swagger';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../lib/clock.ts';
import { systemClock } from '../lib/clock.ts';
import { UserError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { silentLogger } from '../lib/log.ts';
import { issueKeyAndCert } from '../lib/pki/index.ts';
import type { CertType, CertificateAuthority, PeerCheck, PeerCheckOptions } from '../lib/pki/index.ts';
import { ApiError, installErrorHandling } from './api/errors.ts';
import { jsonNestingExceeds, MAX_DOCUMENT_DEPTH, StoredSpecCache } from './api/documents.ts';
import { eventRoutes } from './api/events.ts';
import { checkReadiness, metricsRequestHandler, registerPublicHealthRoutes } from './api/health.ts';
import { metaRoutes } from './api/meta.ts';
import { createMetrics, instrumentStore } from './api/metrics.ts';
import type { ControlPlaneMetrics } from './api/metrics.ts';
import { objectRoutes } from './api/objects.ts';
import { errorSchema } from './api/schemas.ts';
import { tokenRoutes } from './api/tokens.ts';
import { userRoutes } from './api/users.ts';
import { meDeviceRoutes, whoamiDeviceResolver } from './api/me-devices.ts';
import type { DeviceTrustHooks } from './api/me-devices.ts';
import { whoamiRoutes } from './api/whoami.ts';
import { meServiceRoutes } from './api/me-services.ts';
import type { DeviceTrustService } from './trust/index.ts';
import { trustRoutes } from './trust/routes.ts';
import { liveRoutes } from './live/routes.ts';
import { apiTokenAuthenticator, authHook, FailureLimiter, peerIdentity } from './auth.ts';
import { createConsole } from './console/index.ts';
import { rolePreviewRoutes } from './console/preview.ts';
import type { ConsoleOptions } from './console/index.ts';
import type { Authenticator, FailureLimiterOptions } from './auth.ts';
import type { Identity } from './identity/index.ts';
import type { Store } from './store/index.ts';

export const DEFAULT_BODY_LIMIT = 1024 * 1024;
const CLOSE_DRAIN_MS = 5_000;
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/** What plugins (enrollment, the config stream) get: as `opts.causeway` when registered, and as `app.causeway`. */
export interface ControlPlaneDeps {
  /** The store, timed into the metrics. */
  store: Store;
  ca: CertificateAuthority;
  clock: Clock;
  logger: Logger;
  publicUrl: string;
  metrics: ControlPlaneMetrics;
  /** Device trust, when it runs (see ControlPlaneOptions.trust). */
  trust?: DeviceTrustService;
  /** The verified certificate identity of the caller (see auth.ts peerIdentity). */
  peerIdentity: (request: FastifyRequest, expected: CertType | readonly CertType[], options?: Omit<PeerCheckOptions, 'trustedCas' | 'now'>) => PeerCheck;
}

export interface ControlPlanePluginOptions {
  causeway: ControlPlaneDeps;
}

declare module 'fastify' {
  interface FastifyInstance {
    causeway: ControlPlaneDeps;
  }
}

export interface ControlPlaneOptions {
  store: Store;
  ca: CertificateAuthority;
  /** Where parts and people reach this control plane, such as https://cp.example.com:8440. */
  publicUrl: string;
  logger?: Logger;
  clock?: Clock;
  /** Registered at the root (give routes their full paths); each receives `{ causeway: ControlPlaneDeps }` as options. */
  plugins?: Array<FastifyPluginAsync<ControlPlanePluginOptions> | FastifyPluginAsync>;
  /** Largest request body, in bytes. Default 1 MiB; larger is 413 before parsing (CP-13). */
  bodyLimit?: number;
  /** Tried in order; default: API tokens. The identity work adds user sessions here. */
  authenticators?: Authenticator[];
  /** The per-source limit on failed authentications (CP-12). */
  authFailures?: FailureLimiterOptions;
  /** Also serve /metrics on the public listener (to viewer or admin tokens). Default false (CP-10). */
  metricsOnPublicListener?: boolean;
  /** Node process metrics in /metrics. Default false. */
  processMetrics?: boolean;
  /**
   * Causeway as an OIDC provider (identity/index.ts createIdentity): its routes are mounted on the public
   * listener (discovery, /oidc/…, the login pages), its access tokens open the admin API (after API
   * tokens, unless `authenticators` says otherwise), its credential routes join /api/v1, and the control
   * plane closes it on close.
   */
  identity?: Identity;
  /** The trust engine for the user's device routes (api/me-devices.ts): rescoring after registrations and reports, MDM lookups. */
  deviceTrust?: DeviceTrustHooks;
  /**
   * Device trust (trust/index.ts createDeviceTrust: the trust engine and the device managers): started
   * once the app is ready, closed on close; serves the trust admin routes (overrides, rescoring, device
   * managers) and, unless `deviceTrust` is given, the user's device routes.
   */
  trust?: DeviceTrustService;
  /** Lifetime of trust certificates; default 8 h, clamped to 5 min–24 h. */
  trustCertLifetimeMs?: number;
  /**
   * The web console (console/index.ts): login through `identity` (required), its session cookie as a
   * credential for /api/v1 (after the bearer ones, unless `authenticators` says otherwise), and the
   * built app from `dir` at `/`.
   */
  console?: ConsoleOptions;
}

export interface ServingTls {
  certPem: string;
  keyPem: string;
}

export interface ListenOptions {
  host: string;
  port: number;
  /** The serving certificate and key (see issueServingCertificate). */
  tls?: ServingTls;
  /** Plain HTTP: for development only, and only when asked for in so many words. */
  insecureHttp?: boolean;
}

export interface Listener {
  readonly host: string;
  readonly port: number;
  /** http(s)://host:port as bound (IPv6 in brackets). */
  readonly url: string;
  /** Swaps the serving certificate for new connections (renewal). */
  setCertificate(tls: ServingTls): void;
  close(): Promise<void>;
}

export interface ControlPlane {
  readonly app: FastifyInstance;
  readonly deps: ControlPlaneDeps;
  readonly metrics: ControlPlaneMetrics;
  /** The public listener. */
  listen(options: ListenOptions): Promise<Listener>;
  /** The metrics listener: /metrics, /healthz, /readyz with reasons. Plain HTTP; bind it to a private address. */
  listenMetrics(options: { host: string; port: number }): Promise<Listener>;
  /** Stops the listeners (live requests get a few seconds), then the app and its plugins. Not the store. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function createControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const clock = options.clock ?? systemClock;
  const baseLogger = options.logger ?? silentLogger();
  const logger = baseLogger.child({ component: 'control-plane' }, {
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie', 'token', 'secret', 'password', 'privateKey', 'keyPem', '*.token', '*.secret', '*.password', '*.privateKey', '*.keyPem'],
      censor: '[redacted]',
    },
  });
  const publicUrl = checkPublicUrl(options.publicUrl);
  const rawStore = options.store;
  const metrics = createMetrics({ store: rawStore, logger, processMetrics: options.processMetrics ?? false });
  const store = instrumentStore(rawStore, metrics.storeDuration);
  const { ca } = options;
  const deps: ControlPlaneDeps = {
    store,
    ca,
    clock,
    logger,
    publicUrl,
    metrics,
    ...(options.trust === undefined ? {} : { trust: options.trust }),
    peerIdentity: (request, expected, checkOptions = {}) => peerIdentity(request, expected, ca, { ...checkOptions, clock }),
  };

  const fastifyLogger: FastifyBaseLogger = logger;
  const app = Fastify({
    loggerInstance: fastifyLogger,
    // One line per request comes from the onResponse hook instead (installResponseHooks).
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
    trustProxy: false,
    genReqId: () => randomUUID(),
    return503OnClosing: true,
    routerOptions: { maxParamLength: 256 },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: true } },
  });
  app.decorate('causeway', deps);
  installErrorHandling(app);
  installJsonParser(app);
  installResponseHooks(app, metrics);
  app.addSchema(errorSchema);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Causeway Command Center API', version: 'v1', description: 'Specs, users, devices, tokens and events. Authenticate with `Authorization: Bearer <API token>`.' },
      servers: [{ url: publicUrl }],
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  const limiter = new FailureLimiter({ clock, ...options.authFailures });
  if (options.console !== undefined && options.identity === undefined) throw new UserError('CONSOLE_NEEDS_IDENTITY', 'the web console logs in through Causeway\'s own OIDC provider: give the identity option too, or leave the console out');
  const webConsole = options.console === undefined || options.identity === undefined ? undefined : createConsole(options.console, { store, identity: options.identity, publicUrl, clock, logger });
  const authenticators = options.authenticators ?? [apiTokenAuthenticator(store), ...(options.identity === undefined ? [] : [options.identity.authenticator]), ...(webConsole === undefined ? [] : [webConsole.authenticator])];
  const onRequestAuth = authHook({ authenticators, limiter });
  const specs = new StoredSpecCache((object) => logger.warn({ kind: object.kind, name: object.name, version: object.version }, 'a stored object no longer passes its schema; it is left out of reference checks'));
  const serialize = serializer();

  await app.register(async (api) => {
    api.addHook('onRequest', onRequestAuth);
    await objectRoutes(api, { store, specs, serialize });
    userRoutes(api, { store });
    tokenRoutes(api, { store, ca, clock, publicUrl });
    eventRoutes(api, { store });
    rolePreviewRoutes(api, { store });
    metaRoutes(api, { ca, openapi: () => app.swagger() });
    whoamiRoutes(api, { store, deviceOf: whoamiDeviceResolver({ store, ca, clock }) });
    meDeviceRoutes(api, { store, ca, clock, logger, trust: () => options.deviceTrust ?? options.trust, ...(options.trustCertLifetimeMs === undefined ? {} : { trustCertLifetimeMs: options.trustCertLifetimeMs }) });
    meServiceRoutes(api, { store, clock });
    trustRoutes(api, { store, clock, trust: () => options.trust });
    liveRoutes(api, { store, ca, clock, logger });
    options.identity?.registerApi(api);
  }, { prefix: '/api/v1' });

  registerPublicHealthRoutes(app, { store, ca, clock });
  if (options.identity !== undefined) await options.identity.register(app, { ca, clock });
  await webConsole?.register(app);
  if (options.metricsOnPublicListener === true) {
    await app.register((scope, _options, registered) => {
      scope.addHook('onRequest', onRequestAuth);
      scope.get('/metrics', { config: { access: 'read' }, schema: { hide: true } }, async (_request, reply) => {
        return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
      });
      registered();
    });
  }

  for (const plugin of options.plugins ?? []) {
    await app.register(plugin as FastifyPluginAsync<ControlPlanePluginOptions>, { causeway: deps });
  }
  await app.ready();
  try {
    await options.trust?.start();
  } catch (err) {
    await options.trust?.close();
    await app.close();
    throw err;
  }

  const listeners = new Set<Listener>();
  let closing: Promise<void> | undefined;

  const controlPlane: ControlPlane = {
    app,
    deps,
    metrics,
    async listen(listenOptions) {
      if (closing !== undefined) throw new UserError('CLOSED', 'the control plane is closed');
      const handler = (req: IncomingMessage, res: ServerResponse): void => app.routing(req, res);
      let server: HttpServer;
      let secure: { setSecureContext(options: object): void } | undefined;
      if (listenOptions.tls !== undefined) {
        if (listenOptions.insecureHttp === true) throw new UserError('LISTEN_OPTIONS', 'give a serving certificate or insecureHttp, not both');
        const https = createHttpsServer({ ...tlsOptions(listenOptions.tls, ca), ...serverTimeouts }, handler);
        secure = https;
        server = https;
      } else if (listenOptions.insecureHttp === true) {
        server = createHttpServer({ ...serverTimeouts }, handler);
        logger.warn('the public listener serves plain HTTP (--insecure-http): tokens cross the network in the clear; use it for development only');
      } else {
        throw new UserError('LISTEN_OPTIONS', 'the control plane serves HTTPS: give it a serving certificate (or insecureHttp for development)');
      }
      server.keepAliveTimeout = 65_000;
      const listener = await bind(server, listenOptions.host, listenOptions.port, secure === undefined ? 'http' : 'https', (tls) => {
        if (secure === undefined) throw new UserError('LISTEN_OPTIONS', 'a plain HTTP listener has no certificate');
        secure.setSecureContext(tlsOptions(tls, ca));
      }, () => listeners.delete(listener));
      listeners.add(listener);
      logger.info({ url: listener.url }, 'control plane API listening');
      return listener;
    },
    async listenMetrics(listenOptions) {
      if (closing !== undefined) throw new UserError('CLOSED', 'the control plane is closed');
      const server = createHttpServer({ ...serverTimeouts }, metricsRequestHandler(metrics, { store, ca, clock }));
      const listener = await bind(server, listenOptions.host, listenOptions.port, 'http', () => {
        throw new UserError('LISTEN_OPTIONS', 'the metrics listener has no certificate');
      }, () => listeners.delete(listener));
      listeners.add(listener);
      logger.info({ url: `${listener.url}/metrics` }, 'metrics listening');
      return listener;
    },
    close() {
      closing ??= (async () => {
        const closingListeners = [...listeners].map((l) => l.close());
        await app.close();
        await Promise.all(closingListeners);
        await options.trust?.close();
        await options.identity?.close();
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return controlPlane.close();
    },
  };
  return controlPlane;
}

/** Readiness, for callers that embed the control plane (the quickstart). */
export { checkReadiness };

const serverTimeouts = {
  /** Slow senders of headers are cut (slowloris). */
  headersTimeout: 20_000,
  /** A whole request (not its response, so long-lived streams are fine) must arrive within this. */
  requestTimeout: 60_000,
};

function tlsOptions(tls: ServingTls, ca: CertificateAuthority) {
  return {
    minVersion: 'TLSv1.3' as const,
    cert: tls.certPem,
    key: tls.keyPem,
    ca: [ca.certPem],
    // Parts present their certificates on the routes that need them; admins have none.
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: ['http/1.1'],
  };
}

async function bind(server: HttpServer, host: string, port: number, scheme: 'http' | 'https', setCertificate: (tls: ServingTls) => void, onClosed: () => void): Promise<Listener> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') reject(new UserError('PORT_IN_USE', `${host}:${port} is already in use: stop what holds it or choose another address`, { cause: err }));
      else if (code === 'EACCES') reject(new UserError('PORT_DENIED', `not allowed to listen on ${host}:${port}: choose a port above 1023 or grant the capability`, { cause: err }));
      else reject(err);
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = isIP(address.address) === 6 ? `[${address.address}]` : address.address;
  let closed: Promise<void> | undefined;
  return {
    host: address.address,
    port: address.port,
    url: `${scheme}://${shownHost}:${address.port}`,
    setCertificate,
    close() {
      closed ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), CLOSE_DRAIN_MS);
        server.close(() => {
          clearTimeout(timer);
          onClosed();
          resolve();
        });
        server.closeIdleConnections();
      });
      return closed;
    },
  };
}

/** Every response: no sniffing, no caching, no framing, no scripts (CP-08, CP-11); plugins may set their own. */
function installResponseHooks(app: FastifyInstance, metrics: ControlPlaneMetrics): void {
  app.addHook('onRequest', (request, _reply, next) => {
    (request as FastifyRequest & { startedAt?: number }).startedAt = performance.now();
    next();
  });
  app.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    void reply.header('x-content-type-options', 'nosniff');
    // The console's pages keep their same-origin (with no-referrer, their POSTs carry `Origin: null`).
    if (!reply.hasHeader('referrer-policy')) void reply.header('referrer-policy', 'no-referrer');
    if (!reply.hasHeader('cache-control')) void reply.header('cache-control', 'no-store');
    if (!reply.hasHeader('content-security-policy')) void reply.header('content-security-policy', API_CSP);
    if (!reply.hasHeader('x-frame-options')) void reply.header('x-frame-options', 'DENY');
    if (request.protocol === 'https') void reply.header('strict-transport-security', 'max-age=31536000');
    return payload;
  });
  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const started = (request as FastifyRequest & { startedAt?: number }).startedAt ?? performance.now();
    const seconds = (performance.now() - started) / 1000;
    metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: request.method, route }, seconds);
    // One line per request; pino JSON-encodes every value, so hostile URLs stay on it (CP-09).
    request.log.info({ method: request.method, url: loggableUrl(request.url).slice(0, 1024), route, status: reply.statusCode, ms: Math.round(seconds * 1000), actor: request.principal?.actor, source: request.ip }, 'request');
  });
}

/** Query parameters that can carry a credential (OIDC logout's id_token_hint, a device user code…): kept out of logs (CP-11). */
const SECRET_QUERY_PARAMETERS = /([?&](?:id_token_hint|code|user_code|token|access_token|refresh_token|subject_token|logout_token|state|login_hint_token)=)[^&#]*/gi;

function loggableUrl(url: string): string {
  return url.includes('?') ? url.replace(SECRET_QUERY_PARAMETERS, '$1[redacted]') : url;
}

/** JSON only (no text/plain: CP-06), and nesting refused before parsing (CP-13). */
function installJsonParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, raw, done) => {
    const body = typeof raw === 'string' ? raw : raw.toString('utf8');
    if (jsonNestingExceeds(body, MAX_DOCUMENT_DEPTH)) {
      done(new ApiError(413, 'BODY_TOO_DEEP', `the JSON is nested deeper than ${MAX_DOCUMENT_DEPTH} levels`), undefined);
      return;
    }
    void parse(request, body, done);
  });
}

function serializer(): <T>(fn: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => undefined);
    return run;
  };
}

function checkPublicUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch (err) {
    throw new UserError('PUBLIC_URL_INVALID', `--public-url "${text.slice(0, 200)}" is not a URL: give where parts reach this server, such as https://cp.example.com:8440`, { cause: err });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UserError('PUBLIC_URL_INVALID', '--public-url must be an https:// URL (http:// only with --insecure-http)');
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') throw new UserError('PUBLIC_URL_INVALID', '--public-url takes a scheme, host and port only');
  return url.origin;
}

/**
 * A serving certificate for the public listener: type control-plane, with the public URL's host and
 * the listen host (unless a wildcard address) as DNS or IP names, and loopback for local admin use.
 */
export async function issueServingCertificate(ca: CertificateAuthority, options: { publicUrl: string; listenHost?: string; extraNames?: string[]; lifetimeMs?: number }): Promise<ServingTls & { notAfter: Date }> {
  const names = new Set<string>(['localhost', '127.0.0.1', '::1']);
  const host = new URL(options.publicUrl).hostname.replace(/^\[|\]$/g, '');
  names.add(host);
  if (options.listenHost !== undefined && !['0.0.0.0', '::', ''].includes(options.listenHost)) names.add(options.listenHost.replace(/^\[|\]$/g, ''));
  for (const name of options.extraNames ?? []) names.add(name);
  const dnsNames = [...names].filter((n) => isIP(n) === 0);
  const ipAddresses = [...names].filter((n) => isIP(n) !== 0);
  const issued = await issueKeyAndCert(ca, {
    type: 'control-plane',
    identity: { name: 'control-plane' },
    dnsNames,
    ipAddresses,
    ...(options.lifetimeMs === undefined ? {} : { lifetimeMs: options.lifetimeMs }),
  });
  return { certPem: issued.certPem, keyPem: issued.keyPem, notAfter: issued.notAfter };
}
