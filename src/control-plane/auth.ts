/**
 * Who is calling the API, and whether they may. Scripts present `Authorization: Bearer <API token>`
 * (`cwat_…`; the store checks it by its hash), people the access token of their login session
 * (identity/session-auth.ts; their scope comes from `kind: AdminBinding` specs). A request passes
 * through a list of Authenticators, each of which claims only credentials of its own shape, and each
 * route says what it needs in `config.access`:
 *
 *   public  no credential needed (the CA certificate, health)
 *   user    any authenticated caller, also a user without an AdminBinding (scope `none`): whoami
 *   read    admin or viewer
 *   write   an unrestricted admin (every POST, PUT, PATCH and DELETE; also the default, so a route
 *           that forgets to say is closed rather than open). Routes that set `config.checksKinds`
 *           (the spec object writes) also let a kinds-restricted admin in and check each object's
 *           kind themselves (CP-17, see identity/admin-binding.ts).
 *
 * A missing, malformed, unknown, revoked or expired credential is 401 UNAUTHENTICATED, the same for
 * each (the caller learns nothing about which); an insufficient scope is 403 FORBIDDEN (CP-01).
 * Failed attempts are counted per source address in a token bucket, in memory and so per replica;
 * a source that runs out gets 429 RATE_LIMITED until it refills (CP-12).
 *
 * Routes that part peers call with their mTLS certificate (enrollment, the config stream) live in
 * their own plugins and use `peerIdentity` instead.
 */
import type { X509Certificate } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../lib/clock.ts';
import { systemClock } from '../lib/clock.ts';
import { checkPeerCertificate } from '../lib/pki/index.ts';
import type { CertType, CertificateAuthority, PeerCheck, PeerCheckOptions } from '../lib/pki/index.ts';
import { ApiError, sendError } from './api/errors.ts';
import type { Grant } from './identity/admin-binding.ts';
import type { ApiTokenScope, Store } from './store/index.ts';

/** `none`: authenticated, but no AdminBinding matches (only `access: 'user'` routes). */
export type Scope = ApiTokenScope | 'none';
export type Access = 'public' | 'user' | 'read' | 'write';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What a route needs; see auth.ts. Routes without it need `write`. */
    access?: Access;
    /** A `write` route that checks each object's kind itself, so kinds-restricted admins get in (CP-17). */
    checksKinds?: boolean;
  }
  interface FastifyRequest {
    /** Set by the auth hook on routes that need a credential. */
    principal?: Principal;
  }
}

export interface Principal {
  /** How they authenticated: `api-token` or `session`. */
  method: string;
  /** The API token's id, or the user's id. */
  id: string;
  /** The API token's name, or the user's name. */
  name: string;
  scope: Scope;
  /** For a kinds-restricted admin: the spec kinds they may write. Undefined: unrestricted. */
  kinds?: string[];
  /** For a session: the AdminBindings that gave the scope. */
  bindings?: string[];
  /** When the credential stops working (ISO time); null: never. */
  expiresAt?: string | null;
  /** Recorded as the actor of their changes: `token:<id>` or `user:<name>`. */
  actor: string;
}

/**
 * The principal of a logged-in user (a console session or an OIDC access token, the same rights either way):
 * their grant from the AdminBindings, until `expiresAt`.
 */
export function sessionPrincipal(user: { id: string; name: string }, grant: Grant, expiresAt: string): Principal {
  return {
    method: 'session',
    id: user.id,
    name: user.name,
    scope: grant.scope,
    ...(grant.kinds === undefined ? {} : { kinds: grant.kinds }),
    bindings: grant.bindings,
    expiresAt,
    actor: `user:${user.name}`,
  };
}

/** Whether the principal is an admin without a kinds restriction. */
export function isUnrestrictedAdmin(principal: Principal): boolean {
  return principal.scope === 'admin' && principal.kinds === undefined;
}

export type AuthOutcome =
  /** This authenticator found no credential of its kind; the next one is asked. */
  | { kind: 'none' }
  /** A credential of its kind that is not valid. */
  | { kind: 'invalid' }
  | { kind: 'ok'; principal: Principal };

export interface Authenticator {
  authenticate(request: FastifyRequest): Promise<AuthOutcome>;
}

/** Longest Authorization value looked at; our tokens are 71 characters. */
const MAX_CREDENTIAL_LENGTH = 512;

export type BearerValue = { kind: 'missing' } | { kind: 'too-long' } | { kind: 'malformed' } | { kind: 'value'; value: string };

/**
 * The value of `Authorization: Bearer <value>` (RFC 6750 b64token characters): `missing` without the
 * header, `too-long` past 512 characters, `malformed` for another scheme, no value or odd characters.
 */
export function bearerValue(request: FastifyRequest): BearerValue {
  const header = request.headers.authorization;
  if (header === undefined) return { kind: 'missing' };
  if (header.length > MAX_CREDENTIAL_LENGTH) return { kind: 'too-long' };
  const match = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i.exec(header);
  return match === null ? { kind: 'malformed' } : { kind: 'value', value: match[1] };
}

/** What API tokens look like; other bearer values are left to the other authenticators. */
export const API_TOKEN_PREFIX = 'cwat_';

/**
 * `Authorization: Bearer <API token>`, checked by the store (SHA-256, constant-time compare). Claims
 * only `cwat_…` values (an unknown, revoked or expired one is `invalid`); anything else is `none`, so
 * the session authenticator gets its turn, and a value nobody claims is still a 401.
 */
export function apiTokenAuthenticator(store: Pick<Store, 'verifyApiToken'>): Authenticator {
  return {
    async authenticate(request) {
      const bearer = bearerValue(request);
      if (bearer.kind === 'too-long') return { kind: 'invalid' };
      if (bearer.kind !== 'value' || !bearer.value.startsWith(API_TOKEN_PREFIX)) return { kind: 'none' };
      if (!/^[A-Za-z0-9_-]+$/.test(bearer.value)) return { kind: 'invalid' };
      const record = await store.verifyApiToken(bearer.value);
      if (record === undefined) return { kind: 'invalid' };
      return { kind: 'ok', principal: { method: 'api-token', id: record.id, name: record.name, scope: record.scope, expiresAt: record.expiresAt, actor: `token:${record.id}` } };
    },
  };
}

export interface FailureLimiterOptions {
  /** Failures a source may have in a row before it is refused. Default 20. */
  burst?: number;
  /** How many failures are forgiven per second. Default 0.2 (one every 5 s). */
  refillPerSecond?: number;
  /** Most sources tracked at once; the oldest are forgotten first. Default 10,000. */
  maxSources?: number;
  clock?: Clock;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket per key (a source address) that failures drain. In memory: each replica counts
 * on its own, so N replicas behind a balancer allow up to N times the burst.
 */
export class FailureLimiter {
  readonly #burst: number;
  readonly #refillPerMs: number;
  readonly #maxSources: number;
  readonly #clock: Clock;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: FailureLimiterOptions = {}) {
    this.#burst = options.burst ?? 20;
    this.#refillPerMs = (options.refillPerSecond ?? 0.2) / 1000;
    this.#maxSources = options.maxSources ?? 10_000;
    this.#clock = options.clock ?? systemClock;
  }

  /** Seconds until `key` may try again, or 0 when it may now. */
  retryAfter(key: string): number {
    const bucket = this.#refilled(key);
    if (bucket === undefined || bucket.tokens >= 1) return 0;
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.#refillPerMs / 1000));
  }

  fail(key: string): void {
    const bucket = this.#refilled(key) ?? { tokens: this.#burst, at: this.#clock.now() };
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    this.#buckets.delete(key);
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > this.#maxSources) {
      const oldest = this.#buckets.keys().next();
      if (oldest.done !== true) this.#buckets.delete(oldest.value);
    }
  }

  #refilled(key: string): Bucket | undefined {
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) return undefined;
    const now = this.#clock.now();
    bucket.tokens = Math.min(this.#burst, bucket.tokens + Math.max(0, now - bucket.at) * this.#refillPerMs);
    bucket.at = now;
    if (bucket.tokens >= this.#burst) {
      this.#buckets.delete(key);
      return undefined;
    }
    return bucket;
  }
}

/** The rate-limit key of an address: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64). */
export function sourceKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1];
  if (!isIPv6(address)) return address;
  const [head = '', tail = ''] = address.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::') ? [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups] : headGroups;
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

export interface AuthHookOptions {
  authenticators: readonly Authenticator[];
  limiter: FailureLimiter;
}

/** The onRequest hook that enforces `config.access` (see the module comment). Runs before the body is read. */
export function authHook(options: AuthHookOptions): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request, reply) => {
    const access: Access = request.routeOptions.config.access ?? 'write';
    if (access === 'public') return;
    const source = sourceKey(request.ip);
    const wait = options.limiter.retryAfter(source);
    if (wait > 0) {
      void reply.header('retry-after', String(wait));
      sendError(reply, 429, 'RATE_LIMITED', `too many failed authentication attempts from this address; retry in ${wait} s`);
      return reply;
    }
    let principal: Principal | undefined;
    for (const authenticator of options.authenticators) {
      const outcome = await authenticator.authenticate(request);
      if (outcome.kind === 'none') continue;
      if (outcome.kind === 'ok') principal = outcome.principal;
      break;
    }
    if (principal === undefined) {
      options.limiter.fail(source);
      throw new ApiError(401, 'UNAUTHENTICATED', UNAUTHENTICATED_MESSAGE);
    }
    request.principal = principal;
    const who = `the ${principal.method === 'session' ? 'user' : principal.method} "${principal.name}"`;
    if (access === 'read' && principal.scope === 'none') {
      throw new ApiError(403, 'FORBIDDEN', `this needs the viewer or admin scope; ${who} has none (no AdminBinding names them or their groups)`);
    }
    if (access === 'write') {
      if (principal.scope !== 'admin') {
        throw new ApiError(403, 'FORBIDDEN', `this needs the admin scope; ${who} has the ${principal.scope} scope`);
      }
      if (principal.kinds !== undefined && request.routeOptions.config.checksKinds !== true) {
        throw new ApiError(403, 'FORBIDDEN', `this needs an unrestricted admin; ${who} is an admin only for ${principal.kinds.join(', ') || 'no kinds'}`);
      }
    }
    return undefined;
  };
}

const UNAUTHENTICATED_MESSAGE = 'a credential is required: send Authorization: Bearer <token> with a valid, unrevoked, unexpired API token or the access token of a login session (causeway login)';

/** The authenticated caller of a route that needs one. */
export function principalOf(request: FastifyRequest): Principal {
  if (request.principal === undefined) throw new ApiError(401, 'UNAUTHENTICATED', UNAUTHENTICATED_MESSAGE);
  return request.principal;
}

/**
 * The verified identity of the TLS client certificate on this request, for routes that part peers call
 * (access tiers, connectors, kube proxies). The listener asks for a certificate but does not require
 * one (admins use tokens), so this is where it is checked: chain to our CA, validity, type marker,
 * identity, and revocation when `isRevoked` is given. `cert-missing` on plain HTTP.
 */
export function peerIdentity(request: FastifyRequest, expected: CertType | readonly CertType[], ca: CertificateAuthority, options: Omit<PeerCheckOptions, 'trustedCas'> & { clock?: Clock } = {}): PeerCheck {
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerX509Certificate !== 'function') return { ok: false, code: 'cert-missing', message: 'no client certificate (not a TLS connection)' };
  let cert: X509Certificate | undefined;
  try {
    cert = socket.getPeerX509Certificate();
  } catch {
    return { ok: false, code: 'cert-malformed', message: 'the client certificate cannot be read' };
  }
  if (cert === undefined) return { ok: false, code: 'cert-missing', message: 'no client certificate was presented' };
  if (socket.authorized !== true) {
    const reason = String(socket.authorizationError ?? '');
    if (reason === 'CERT_HAS_EXPIRED') return { ok: false, code: 'cert-expired', message: 'the client certificate has expired' };
    if (reason === 'CERT_NOT_YET_VALID') return { ok: false, code: 'cert-not-yet-valid', message: 'the client certificate is not valid yet' };
    return { ok: false, code: 'cert-unknown-ca', message: `the client certificate was not accepted by this installation's CA (${reason.slice(0, 80)})` };
  }
  const { clock, ...check } = options;
  return checkPeerCertificate(cert, expected, { ...check, now: check.now ?? (clock ?? systemClock).now(), trustedCas: [ca.certificate] });
}
