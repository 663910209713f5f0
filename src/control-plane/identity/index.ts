/**
 * The identity part of the control plane, assembled: the OIDC provider (provider.ts, grants.ts) over the
 * store (adapter.ts) with rotating keys (signing-keys.ts), mounted on the control plane's Fastify app,
 * plus the login pages and upstream IdP routes that other modules provide.
 *
 * Mounting: exactly the provider's paths (PROVIDER_PATHS) go to `provider.callback()` with the raw
 * request and response, the body unread and the URL unchanged (the reply is hijacked in the route's
 * onRequest hook, before Fastify would parse anything). Fastify's own onSend hook does not run for a
 * hijacked reply, so the security headers are added here when the response head is written; the
 * request log line and the metrics still come from the app's onResponse hook. The token and device
 * authorization endpoints are rate-limited per source on failed requests (CP-12).
 *
 * The provider is rebuilt when the signing keys change (rotation, or another replica's rotation); the
 * `provider` handed out here always forwards to the current one.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Provider from 'oidc-provider';
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import type { CertificateAuthority } from '../../lib/pki/index.ts';
import { FailureLimiter, sourceKey } from '../auth.ts';
import type { FailureLimiterOptions } from '../auth.ts';
import { credentialRoutes } from '../api/credentials.ts';
import { authenticatePeer } from '../stream/peer.ts';
import type { Store } from '../store/index.ts';
import { startPruning } from './adapter.ts';
import { createDirectory } from './directory.ts';
import { interactionRoutes } from './interactions.ts';
import { sessionAuthenticator } from './session-auth.ts';
import type { SessionAuthenticator } from './session-auth.ts';
import { createUpstreams } from './upstream.ts';
import { registerGrants } from './grants.ts';
import type { DevicePeerCheck, PasswordDirectory } from './grants.ts';
import { buildProvider, DEFAULT_LIFETIMES, loadOrCreateCookieKeys, PROVIDER_PATHS, ROUTES } from './provider.ts';
import type { TokenLifetimes } from './provider.ts';
import type { SecretBox } from './secret-box.ts';
import { loadSigningKeys } from './signing-keys.ts';
import type { SigningAlgorithm, SigningKeys, SigningKeysOptions } from './signing-keys.ts';

export { loadOrCreateSecretBox } from './secret-box.ts';
export type { SecretBox } from './secret-box.ts';
export { CLI_CLIENT_ID, CLI_REDIRECT_URI, PROVIDER_PATHS, ROUTES } from './provider.ts';
export type { SigningAlgorithm } from './signing-keys.ts';
export type { LoginAttempt, LoginFailure, LoginResult, PasswordDirectory } from './grants.ts';

export const DEFAULT_KUBE_TOKEN_TTL_SECONDS = 600;
const API_CSP = "default-src 'none'; frame-ancestors 'none'";
/**
 * Set before the provider runs: it adds the SHA-256 of the one inline script it writes (the auto-submit
 * of its form_post pages, as in the device flow's verification link) to an existing `script-src`. This
 * one starts with the hash of a text we never serve, so it allows no script until the provider adds
 * its own; never 'unsafe-inline'. Our own pages (pages.ts) replace it with theirs.
 */
const PROVIDER_CSP = `default-src 'none'; script-src 'sha256-${createHash('sha256').update('causeway: no inline script').digest('base64')}'; frame-ancestors 'none'; base-uri 'none'`;

export interface AccessTokenInfo {
  accountId: string;
  clientId: string;
  /** Epoch seconds. */
  expiresAt: number;
  scope: string;
}

/** What the login pages (interactions) and upstream IdP routes get. */
export interface IdentityRouteDeps {
  provider: Provider;
  store: Store;
  secretBox: SecretBox;
  directory: PasswordDirectory;
  clock: Clock;
  logger: Logger;
  publicUrl: string;
  resolveSecret: (ref: { env?: string; file?: string }) => Promise<string>;
}

export interface IdentityOptions {
  store: Store;
  secretBox: SecretBox;
  /** The issuer: the control plane's public URL (an origin). */
  publicUrl: string;
  /** Reads a secret named by a spec ({env} or {file}); from the entry point. */
  resolveSecret: (ref: { env?: string; file?: string }) => Promise<string>;
  /** Checks built-in users' passwords (the password grant and the login page). Default: the built-in directory (directory.ts). */
  directory?: PasswordDirectory;
  clock?: Clock;
  logger?: Logger;
  /** Algorithm of ID tokens and kube tokens. Default RS256 (what kube-apiserver expects). */
  idTokenSigningAlg?: SigningAlgorithm;
  /** Lifetime of the ID tokens of token exchange. Default 600 s. */
  kubeTokenTtlSeconds?: number;
  lifetimes?: Partial<TokenLifetimes>;
  signingKeys?: Pick<SigningKeysOptions, 'publishAheadMs' | 'retireAfterMs' | 'rotateEveryMs' | 'checkEveryMs'>;
  /** Per-source limit on failed token and device authorization requests (CP-12). */
  tokenRateLimit?: FailureLimiterOptions;
  /**
   * Routes registered beside the provider's, in order. Default: the login page (interactions.ts) and
   * login through org IdPs (upstream.ts).
   */
  routes?: Array<(app: FastifyInstance, deps: IdentityRouteDeps) => Promise<void>>;
  /** How often expired records are pruned. Default 10 min. */
  pruneEveryMs?: number;
}

export interface Identity {
  /** Always the current provider (it is rebuilt when the signing keys change). */
  readonly provider: Provider;
  readonly signingKeys: SigningKeys;
  /** An access token of ours, for the admin API's session authenticator; undefined when unknown or expired. */
  findAccessToken(token: string): Promise<AccessTokenInfo | undefined>;
  /** Turns our access tokens into admin API principals (scope from AdminBindings); for the /api/v1 auth hook. */
  readonly authenticator: SessionAuthenticator;
  /**
   * Registers the provider's routes and the others'; call once, at the root of the app. With `peer`
   * (the control plane's CA), the token exchange checks a presented device certificate and puts the
   * device into kube ID tokens (grants.ts).
   */
  register(app: FastifyInstance, peer?: { ca: CertificateAuthority; clock?: Clock }): Promise<void>;
  /** Registers the admin API routes of identity (passwords, TOTP, unlock) inside /api/v1, after the auth hook. */
  registerApi(api: FastifyInstance): void;
  close(): Promise<void>;
}

export async function createIdentity(options: IdentityOptions): Promise<Identity> {
  const clock = options.clock ?? systemClock;
  const logger = (options.logger ?? silentLogger()).child({ component: 'identity' });
  const { store, secretBox, publicUrl } = options;
  const idTokenSigningAlg = options.idTokenSigningAlg ?? 'RS256';
  const kubeTokenTtlSeconds = options.kubeTokenTtlSeconds ?? DEFAULT_KUBE_TOKEN_TTL_SECONDS;
  const lifetimes: TokenLifetimes = { ...DEFAULT_LIFETIMES, ...options.lifetimes };
  const signingKeys = await loadSigningKeys({ store, secretBox, clock, logger, ...options.signingKeys });
  const cookieKeys = await loadOrCreateCookieKeys(store, secretBox);
  const directory = options.directory ?? createDirectory({ store, secretBox, clock, logger });

  // The Fastify request behind each raw request handed to the provider: the grants reach the TLS
  // client certificate through it (oidc-provider's ctx.req is that raw request).
  const requests = new WeakMap<IncomingMessage, FastifyRequest>();
  let peerDeps: { ca: CertificateAuthority; clock: Clock } | undefined;
  const devicePeer = async (req: IncomingMessage): Promise<DevicePeerCheck | undefined> => {
    const request = requests.get(req);
    if (request === undefined || peerDeps === undefined) return undefined;
    return authenticatePeer(request, ['device'], { store, ...peerDeps });
  };

  const build = (): { provider: Provider; callback: (req: FastifyRequest['raw'], res: ServerResponse) => void } => {
    const provider = buildProvider({ publicUrl, store, secretBox, signingKeys, cookieKeys, idTokenSigningAlg, lifetimes, clock, logger });
    registerGrants(provider, { store, directory, signingKeys, idTokenSigningAlg, kubeTokenTtlSeconds, logger, devicePeer, clock });
    // Koa prints unhandled errors to stderr unless someone listens.
    (provider as unknown as NodeJS.EventEmitter).on('error', (err: unknown) => logger.error({ err }, 'the OIDC provider failed a request'));
    provider.on('server_error', (_ctx, err) => logger.error({ err }, 'the OIDC provider failed a request'));
    provider.on('grant.revoked', (ctx, grantId) => {
      // A logout (the CLI revokes its refresh token) or a revocation for reuse of a consumed code or refresh token.
      const entities = ctx.oidc.entities as { RefreshToken?: { accountId?: string }; AccessToken?: { accountId?: string }; AuthorizationCode?: { accountId?: string } };
      const accountId = entities.RefreshToken?.accountId ?? entities.AccessToken?.accountId ?? entities.AuthorizationCode?.accountId;
      const action = ctx.oidc.route === 'revocation' ? 'logout' : 'grant-revoked';
      void auditGrantEvent(store, logger, accountId, action, { grant: grantId.slice(0, 8), reason: action === 'logout' ? 'revocation' : 'reuse of a consumed code or refresh token' });
    });
    const callback = provider.callback() as unknown as (req: FastifyRequest['raw'], res: ServerResponse) => void;
    return { provider, callback };
  };
  let current = build();
  const stopKeys = signingKeys.onChange(() => {
    try {
      current = build();
      logger.info({ kids: signingKeys.list().map((k) => `${k.alg}:${k.stage}:${k.kid}`) }, 'the signing keys changed; the provider uses the new set');
    } catch (err) {
      logger.error({ err }, 'rebuilding the OIDC provider with the new signing keys failed; the previous keys stay in use');
    }
  });
  const stopPruning = startPruning({ store, clock, logger, ...(options.pruneEveryMs === undefined ? {} : { everyMs: options.pruneEveryMs }) });
  const provider = forwardingProvider(() => current.provider);
  const limiter = new FailureLimiter({ clock, ...options.tokenRateLimit });

  const dispatch = (request: FastifyRequest, reply: FastifyReply): void => {
    void reply.hijack();
    const res = reply.raw;
    addSecurityHeaders(res, request.protocol === 'https');
    res.setHeader('content-security-policy', PROVIDER_CSP);
    const path = request.url.split('?')[0];
    if (path === ROUTES.token || path === ROUTES.device_authorization) {
      const source = sourceKey(request.ip);
      const wait = limiter.retryAfter(source);
      if (wait > 0) {
        res.writeHead(429, { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(wait) });
        res.end(JSON.stringify({ error: 'rate_limited', error_description: `too many failed requests from this address; retry in ${wait} s` }));
        return;
      }
      countFailures(res, () => limiter.fail(source));
      requests.set(request.raw, request);
    }
    current.callback(request.raw, res);
  };

  const findAccessToken = async (token: string): Promise<AccessTokenInfo | undefined> => {
    if (typeof token !== 'string' || token === '' || token.length > 512) return undefined;
    const at = await current.provider.AccessToken.find(token);
    if (at === undefined || at.isExpired || typeof at.exp !== 'number') return undefined;
    return { accountId: at.accountId, clientId: at.clientId ?? '', expiresAt: at.exp, scope: at.scope ?? '' };
  };
  const authenticator = sessionAuthenticator({ store, findAccessToken, clock });

  let registered = false;
  const identity: Identity = {
    provider,
    signingKeys,
    authenticator,
    findAccessToken,
    async register(app, peer) {
      if (registered) throw new Error('the identity routes are registered already');
      registered = true;
      if (peer !== undefined) peerDeps = { ca: peer.ca, clock: peer.clock ?? clock };
      for (const url of PROVIDER_PATHS) {
        app.route({
          method: ['GET', 'POST', 'OPTIONS'],
          url,
          config: { access: 'public' },
          schema: { hide: true },
          onRequest: (request, reply, done) => {
            dispatch(request, reply);
            done();
          },
          handler: (_request, reply) => reply,
        });
      }
      const deps: IdentityRouteDeps = { provider, store, secretBox, directory, clock, logger, publicUrl, resolveSecret: options.resolveSecret };
      for (const routes of options.routes ?? [loginRoutes]) await routes(app, deps);
    },
    registerApi(api) {
      credentialRoutes(api, { store, secretBox, clock, totpIssuer: `Causeway (${new URL(publicUrl).host})` });
    },
    close() {
      authenticator.close();
      stopKeys();
      stopPruning();
      signingKeys.close();
      return Promise.resolve();
    },
  };
  return identity;
}

async function auditGrantEvent(store: Store, logger: Logger, accountId: string | undefined, action: string, after: Record<string, unknown>): Promise<void> {
  try {
    const user = accountId === undefined ? undefined : await store.getUser(accountId);
    await store.appendAuditEvent({ actor: user === undefined ? 'system' : `user:${user.name}`, action, kind: 'User', name: user?.name ?? '', after });
  } catch (err) {
    logger.warn({ err }, 'recording a revoked grant in the audit log failed');
  }
}

/** The login page (built-in users, and a button per org IdP) and the org IdP login routes. */
export async function loginRoutes(app: FastifyInstance, deps: IdentityRouteDeps): Promise<void> {
  const upstreams = createUpstreams({ provider: deps.provider, store: deps.store, clock: deps.clock, logger: deps.logger, resolveSecret: deps.resolveSecret, publicUrl: deps.publicUrl });
  await upstreams.routes(app);
  await interactionRoutes(app, { provider: deps.provider, directory: deps.directory, upstreams, logger: deps.logger });
}

/** The security headers of every response (CP-08, CP-11), unless the provider or a page set its own. */
function addSecurityHeaders(res: ServerResponse, https: boolean): void {
  const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => ServerResponse;
  res.writeHead = ((...args: unknown[]) => {
    const defaults: Array<[string, string]> = [
      ['x-content-type-options', 'nosniff'],
      ['referrer-policy', 'no-referrer'],
      ['cache-control', 'no-store'],
      ['content-security-policy', API_CSP],
      ['x-frame-options', 'DENY'],
    ];
    if (https) defaults.push(['strict-transport-security', 'max-age=31536000']);
    if (!res.headersSent) for (const [name, value] of defaults) if (!res.hasHeader(name)) res.setHeader(name, value);
    return writeHead(...args);
  });
}

/**
 * Counts a failed response (4xx/5xx) against the source, except the device flow's polling answers
 * (authorization_pending, slow_down), which are how a waiting client is told to wait.
 */
function countFailures(res: ServerResponse, fail: () => void): void {
  let polling = false;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  res.end = ((...args: unknown[]) => {
    const chunk = args[0];
    if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) {
      const text = chunk.toString().slice(0, 200);
      polling = text.includes('"authorization_pending"') || text.includes('"slow_down"');
    }
    return end(...args);
  }) as ServerResponse['end'];
  res.once('finish', () => {
    if (res.statusCode >= 400 && !polling) fail();
  });
}

/**
 * A Provider that forwards to whichever is current: methods are bound to it, and properties (the model
 * classes, issuer…) read from it. Given to routes that keep the provider (login pages, upstream IdPs).
 */
function forwardingProvider(get: () => Provider): Provider {
  const isMethod = (object: object, prop: PropertyKey): boolean => {
    for (let o: object | null = Object.getPrototypeOf(object) as object | null; o !== null; o = Object.getPrototypeOf(o) as object | null) {
      const descriptor = Object.getOwnPropertyDescriptor(o, prop);
      if (descriptor !== undefined) return 'value' in descriptor && typeof descriptor.value === 'function';
    }
    return false;
  };
  return new Proxy(Object.create(Provider.prototype) as Provider, {
    get(_target, prop) {
      const target = get();
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value === 'function' && isMethod(target, prop)) return (value as (...args: unknown[]) => unknown).bind(target);
      return value;
    },
    set(_target, prop, value) {
      return Reflect.set(get(), prop, value);
    },
    has(_target, prop) {
      return prop in get();
    },
  });
}
