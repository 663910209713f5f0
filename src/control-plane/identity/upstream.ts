/**
 * Login through an organisation's IdP (`kind: IdentityProvider`), with openid-client: the login page
 * (interactions.ts) links each IdP to `/oidc/upstream/<name>/start?uid=<interaction>`, and this module
 * runs an authorization code flow against that IdP with PKCE (S256), state and nonce, then finishes
 * our provider's interaction with the user it found or created.
 *
 *   GET /oidc/upstream/:idp/start?uid=       the interaction must exist; state, nonce and the PKCE
 *                                            verifier go into the store (model UpstreamLogin, 10 min,
 *                                            keyed by a hash of the state); 302 to the IdP
 *   GET /oidc/upstream/callback              the state record is consumed (single use); code exchange;
 *                                            ID token checks (exact iss, aud/azp, nonce, exp, and its
 *                                            signature); claims mapped; user upserted; 303 to ↓
 *   GET /oidc/interaction/:uid/upstream?done= the interaction's own cookie is checked here, then
 *                                            provider.interactionFinished(login: {accountId})
 *
 * Why the last hop: oidc-provider scopes its interaction cookie to the interaction's path
 * (`/oidc/interaction/<uid>`), so the IdP's callback never carries it, and finishing an interaction
 * without it would let anyone finish someone else's: an attacker starts a login, sends the victim the
 * `start?uid=` link, the victim logs in at the IdP, and the attacker's browser resumes the
 * interaction as the victim. The hop is under the interaction's path, so only the browser that
 * started the interaction can finish it; the `done` record it names is single use and 5 minutes long.
 *
 * Users: created at their first login with source `idp:<name>`; their email and groups are replaced
 * from the IdP's claims at every login; a disabled user is refused; a local user, or a user of
 * another IdP, with the same name is never taken over (the login is refused and says why). Claims:
 * the name from `spec.claims.name` (must be a valid user name), the email from `spec.claims.email`
 * (dropped when the IdP says `email_verified: false`, since roles match on emails), the groups from
 * `spec.claims.groups` (a list of strings or one string; anything else is no groups; at most 256).
 * When the ID token lacks one of them and the IdP has a userinfo endpoint, userinfo fills the gap.
 *
 * Nothing here takes a redirect target from the request (CP-07): the IdP's address comes from its
 * spec and discovery, and every other redirect is a fixed path of ours or the provider's returnTo.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as client from 'openid-client';
import type Provider from 'oidc-provider';
import type { Clock } from '../../lib/clock.ts';
import { CausewayError, UserError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { NAME_PATTERN, specSchemas } from '../../lib/spec/index.ts';
import type { IdentityProviderSpec } from '../../lib/spec/index.ts';
import { USER_NAME_PATTERN } from '../api/schemas.ts';
import { FailureLimiter, sourceKey } from '../auth.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { escapeHtml, PAGE_HEADERS, renderPage } from './pages.ts';
import { createUpstreamFetch } from './upstream-fetch.ts';

export const UPSTREAM_LOGIN_MODEL = 'UpstreamLogin';
export const UPSTREAM_DONE_MODEL = 'UpstreamLoginDone';
export const UPSTREAM_CALLBACK_PATH = '/oidc/upstream/callback';
export const UPSTREAM_STATE_TTL_MS = 10 * 60_000;
const DONE_TTL_MS = 5 * 60_000;
/** Discovery is reused this long (and redone at once when the spec or the secret changes). */
const DISCOVERY_TTL_MS = 60 * 60_000;
const MAX_GROUPS = 256;
const MAX_GROUP_LENGTH = 256;
const CLOCK_TOLERANCE_SEC = 10;
const HTTP_TIMEOUT_SEC = 10;
const UID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
const USER_NAME = new RegExp(USER_NAME_PATTERN);

export interface UpstreamDeps {
  provider: Provider;
  store: Store;
  clock: Clock;
  logger: Logger;
  resolveSecret: (ref: { env?: string; file?: string }) => Promise<string>;
  /** The control plane's public URL (an origin); the IdP redirects to `${publicUrl}/oidc/upstream/callback`. */
  publicUrl: string;
  /**
   * Login starts per source address (CP-12): each start stores a state record for 10 minutes, so a
   * source that starts too many is answered 429 until its bucket refills. Default: 30 at once, then
   * one every 2 s.
   */
  startLimiter?: FailureLimiter;
}

/** The IdPs the login page shows, one button each (interactions.ts). */
export interface UpstreamList {
  list(): Promise<Array<{ name: string; displayName: string }>>;
}

export interface Upstreams extends UpstreamList {
  routes(app: FastifyInstance): Promise<void>;
}

/** A login that ends with a page saying why (and an HTTP status). */
class LoginRefused extends Error {
  readonly status: number;
  readonly title: string;
  /** For the audit event; undefined: not audited (a broken or replayed link, not a login decision). */
  readonly reason: string | undefined;
  constructor(status: number, title: string, message: string, reason?: string) {
    super(message);
    this.status = status;
    this.title = title;
    this.reason = reason;
  }
}

interface Discovered {
  key: string;
  config: client.Configuration;
  expiresAt: number;
}

interface MappedIdentity {
  name: string;
  email: string | null;
  groups: string[];
}

function hashId(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url');
}

function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

function isoAt(ms: number): string {
  return new Date(ms).toISOString();
}

/** A claim's value shown in a message: short, printable. */
function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  // eslint-disable-next-line no-control-regex
  return (text.length > 80 ? `${text.slice(0, 80)}…` : text).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** `groups`: a list of strings or one string; anything else is no groups. Control characters and empty or overlong names are dropped. */
export function groupsFromClaim(value: unknown): { groups: string[]; dropped: number } {
  const raw = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
  const groups: string[] = [];
  let dropped = 0;
  for (const item of raw) {
    // eslint-disable-next-line no-control-regex
    if (typeof item !== 'string' || item.trim() === '' || item.length > MAX_GROUP_LENGTH || /[\u0000-\u001f\u007f]/.test(item)) {
      dropped++;
      continue;
    }
    if (groups.includes(item)) continue;
    if (groups.length >= MAX_GROUPS) {
      dropped++;
      continue;
    }
    groups.push(item);
  }
  return { groups, dropped };
}

/** The email, when it looks like one and the IdP did not say it is unverified. */
export function emailFromClaims(value: unknown, verified: unknown): string | null {
  if (typeof value !== 'string' || value.length > 254 || !/^[^\s@]+@[^\s@]+$/.test(value)) return null;
  if (verified === false || verified === 'false') return null;
  return value;
}

export function mapIdentity(spec: IdentityProviderSpec['spec'], claims: Record<string, unknown>): MappedIdentity {
  const nameValue = claims[spec.claims.name];
  if (typeof nameValue !== 'string' || !USER_NAME.test(nameValue)) {
    throw new LoginRefused(
      403,
      'Login refused',
      nameValue === undefined
        ? `The identity provider did not send the claim "${spec.claims.name}" that Causeway takes the user name from. An administrator can name another claim in the IdentityProvider spec (spec.claims.name).`
        : `The identity provider's claim "${spec.claims.name}" (${shown(nameValue)}) is not a user name Causeway can use (letters, digits, . _ @ -; at most 128). An administrator can name another claim in the IdentityProvider spec (spec.claims.name).`,
      'unusable-name-claim',
    );
  }
  const email = emailFromClaims(claims[spec.claims.email], claims.email_verified);
  const { groups } = groupsFromClaim(claims[spec.claims.groups]);
  return { name: nameValue, email, groups };
}

function sendPage(reply: FastifyReply, status: number, title: string, message: string): FastifyReply {
  const body = `<p class="error">${escapeHtml(message)}</p>
<p class="muted">Go back to the application and start the login again. If this keeps happening, tell your administrator.</p>`;
  return reply.code(status).headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(renderPage({ title, body }));
}

export function createUpstreams(deps: UpstreamDeps): Upstreams {
  const { provider, store, clock, publicUrl } = deps;
  const logger = deps.logger.child({ component: 'upstream-login' });
  const callbackUrl = `${publicUrl}${UPSTREAM_CALLBACK_PATH}`;
  const startLimiter = deps.startLimiter ?? new FailureLimiter({ burst: 30, refillPerSecond: 0.5, clock });
  const discovered = new Map<string, Discovered>();
  const inFlight = new Map<string, Promise<Discovered>>();

  const loadSpec = async (name: string): Promise<IdentityProviderSpec | undefined> => {
    const stored = await store.getObject('IdentityProvider', name);
    if (stored === undefined) return undefined;
    const parsed = specSchemas.IdentityProvider.safeParse({ apiVersion: 'causeway/v1', kind: 'IdentityProvider', metadata: { name }, spec: stored.spec });
    if (!parsed.success) {
      logger.error({ idp: name }, 'the stored IdentityProvider spec is not valid; its login is off until it is applied again');
      return undefined;
    }
    return parsed.data;
  };

  const discover = async (spec: IdentityProviderSpec, secret: string | undefined, key: string): Promise<Discovered> => {
    const s = spec.spec;
    const issuer = new URL(s.issuer);
    const execute = issuer.protocol === 'http:' ? [client.allowInsecureRequests] : [];
    const metadata: Partial<client.ClientMetadata> = { [client.clockTolerance]: CLOCK_TOLERANCE_SEC, ...(secret === undefined ? {} : { client_secret: secret }) };
    const options: client.DiscoveryRequestOptions = { [client.customFetch]: createUpstreamFetch(s.caPem === undefined ? {} : { caPem: s.caPem }), timeout: HTTP_TIMEOUT_SEC, execute };
    // The auth method is chosen once the metadata says what the IdP supports.
    const probe = await client.discovery(issuer, s.clientId, metadata, client.None(), options);
    const server = probe.serverMetadata();
    if (server.issuer !== s.issuer) {
      throw new CausewayError('UPSTREAM_MISCONFIGURED', `the IdP's discovery document names its issuer ${JSON.stringify(server.issuer)}, not ${JSON.stringify(s.issuer)}; write it into spec.issuer exactly as the IdP does`);
    }
    let auth: client.ClientAuth = client.None();
    if (secret !== undefined) {
      const methods = server.token_endpoint_auth_methods_supported;
      auth = methods === undefined || methods.includes('client_secret_basic') || !methods.includes('client_secret_post') ? client.ClientSecretBasic(secret) : client.ClientSecretPost(secret);
    }
    const config = new client.Configuration(server, s.clientId, metadata, auth);
    config[client.customFetch] = options[client.customFetch] as client.CustomFetch;
    config.timeout = HTTP_TIMEOUT_SEC;
    if (issuer.protocol === 'http:') client.allowInsecureRequests(config);
    // Check ID token signatures against the IdP's keys too, not only the TLS channel they came over.
    client.enableNonRepudiationChecks(config);
    return { key, config, expiresAt: clock.now() + DISCOVERY_TTL_MS };
  };

  /** The IdP's client configuration, discovered once and again when the spec or the secret changes. */
  const configFor = async (spec: IdentityProviderSpec): Promise<client.Configuration> => {
    const name = spec.metadata.name;
    let secret: string | undefined;
    if (spec.spec.clientSecret !== undefined) {
      try {
        secret = await deps.resolveSecret(spec.spec.clientSecret);
      } catch (err) {
        logger.error({ idp: name, err: err instanceof Error ? err.message : String(err) }, 'the IdentityProvider client secret could not be read');
        throw new LoginRefused(502, 'Login unavailable', `Causeway cannot read the client secret of the identity provider "${spec.spec.displayName ?? name}". An administrator must check its IdentityProvider spec (spec.clientSecret).`);
      }
    }
    const key = `${JSON.stringify(spec.spec)}|${hashId(secret ?? '')}`;
    const cached = discovered.get(name);
    if (cached !== undefined && cached.key === key && cached.expiresAt > clock.now()) return cached.config;
    let pending = inFlight.get(name);
    if (pending === undefined) {
      pending = discover(spec, secret, key).finally(() => inFlight.delete(name));
      inFlight.set(name, pending);
    }
    try {
      const fresh = await pending;
      if (fresh.key === key) discovered.set(name, fresh);
      return fresh.config;
    } catch (err) {
      logger.error({ idp: name, err: err instanceof Error ? err.message : String(err) }, 'discovery at the IdP failed');
      throw new LoginRefused(502, 'Login unavailable', `Causeway could not reach the identity provider "${spec.spec.displayName ?? name}". Try again in a moment; if this keeps happening, tell your administrator.`);
    }
  };

  const audit = async (event: { actor: string; action: string; name: string; after?: unknown }): Promise<void> => {
    try {
      await store.appendAuditEvent({ ...event, kind: 'User', at: isoAt(clock.now()) });
    } catch (err) {
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'writing the login audit event failed');
    }
  };

  /** Creates or updates the user for this login, or refuses it (the CP rules of the contract). */
  const upsertUser = async (idp: string, identity: MappedIdentity, attempt = 0): Promise<UserRecord> => {
    const source = `idp:${idp}`;
    const existing = await store.getUserByName(identity.name);
    if (existing === undefined) {
      try {
        return await store.createUser({ name: identity.name, email: identity.email, groups: identity.groups, source }, { actor: source });
      } catch (err) {
        // Two first logins at once: the other one created the user; take the update path.
        if (err instanceof UserError && err.code === 'ALREADY_EXISTS' && attempt === 0) return upsertUser(idp, identity, 1);
        throw err;
      }
    }
    if (existing.source !== source) {
      const other = existing.source === 'local' ? "Causeway's built-in directory" : `another identity provider (${existing.source.slice('idp:'.length)})`;
      throw new LoginRefused(
        409,
        'Login refused',
        `A user named "${identity.name}" already exists in ${other}, so this login cannot use that name: Causeway never merges accounts by name. An administrator must delete or rename one of them.`,
        'name-taken',
      );
    }
    if (existing.disabled) throw new LoginRefused(403, 'Account disabled', `The account "${identity.name}" is disabled in Causeway. Ask an administrator to enable it.`, 'disabled');
    const sameGroups = existing.groups.length === identity.groups.length && existing.groups.every((g, i) => g === identity.groups[i]);
    if (existing.email === identity.email && sameGroups) return existing;
    return store.updateUser(existing.id, { email: identity.email, groups: identity.groups }, { actor: source });
  };

  const start = async (request: FastifyRequest<{ Params: { idp: string }; Querystring: Record<string, unknown> }>, reply: FastifyReply): Promise<FastifyReply> => {
    // Counted before any work, valid or not: every start may cost a discovery and a stored record.
    const source = sourceKey(request.ip);
    const wait = startLimiter.retryAfter(source);
    if (wait > 0) {
      void reply.header('retry-after', String(wait));
      throw new LoginRefused(429, 'Too many logins', `Too many logins were started from this address; try again in ${wait} s.`);
    }
    startLimiter.fail(source);
    const idp = request.params.idp;
    const uid = request.query.uid;
    if (!NAME_PATTERN.test(idp)) throw new LoginRefused(404, 'Unknown identity provider', 'There is no identity provider by that name.');
    if (typeof uid !== 'string' || !UID_PATTERN.test(uid)) throw new LoginRefused(400, 'Login link not valid', 'This login link is not valid.');
    const interaction = await provider.Interaction.find(uid);
    if (interaction === undefined) throw new LoginRefused(400, 'Login expired', 'This login has expired or is unknown.');
    const spec = await loadSpec(idp);
    if (spec === undefined) throw new LoginRefused(404, 'Unknown identity provider', 'There is no identity provider by that name.');
    const config = await configFor(spec);
    const state = client.randomState();
    const nonce = client.randomNonce();
    const verifier = client.randomPKCECodeVerifier();
    const now = clock.now();
    await store.oidcUpsert(UPSTREAM_LOGIN_MODEL, hashId(state), { idp, interactionUid: uid, nonce, verifier, createdAt: isoAt(now) }, isoAt(now + UPSTREAM_STATE_TTL_MS));
    const target = client.buildAuthorizationUrl(config, {
      redirect_uri: callbackUrl,
      response_type: 'code',
      scope: spec.spec.scopes.join(' '),
      state,
      nonce,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    return reply.code(302).header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').redirect(target.href, 302);
  };

  const callback = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const rawQuery = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : '';
    const params = new URLSearchParams(rawQuery);
    const state = params.get('state');
    const expired = new LoginRefused(400, 'Login expired', 'This login has expired or was already used.');
    if (state === null || state.length > 512) throw expired;
    const stateId = hashId(state);
    const record = await store.oidcFind(UPSTREAM_LOGIN_MODEL, stateId);
    if (record === undefined || record.consumed !== undefined) throw expired;
    await store.oidcConsume(UPSTREAM_LOGIN_MODEL, stateId);
    const { idp, interactionUid, nonce, verifier } = record;
    if (typeof idp !== 'string' || typeof interactionUid !== 'string' || typeof nonce !== 'string' || typeof verifier !== 'string') throw expired;
    const spec = await loadSpec(idp);
    if (spec === undefined) throw new LoginRefused(404, 'Unknown identity provider', 'The identity provider of this login is no longer configured.');
    const label = spec.spec.displayName ?? idp;
    const config = await configFor(spec);

    // The URL the IdP redirected to, rebuilt from our public URL (not the request's Host header).
    const current = new URL(`${callbackUrl}${rawQuery}`);
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, current, { pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state, idTokenExpected: true });
    } catch (err) {
      if (err instanceof client.AuthorizationResponseError) {
        throw new LoginRefused(403, 'Login refused', `The identity provider "${label}" did not log you in (${shown(err.error)}).`, `idp-error:${shown(err.error)}`);
      }
      logger.warn({ idp, err: err instanceof Error ? err.message : String(err) }, 'the code exchange or the ID token check at the IdP failed');
      throw new LoginRefused(502, 'Login failed', `The answer of the identity provider "${label}" could not be verified.`, 'token-check-failed');
    }
    const claims = tokens.claims();
    const now = clock.now();
    // openid-client checked these already; they are what everything below rests on, so check again.
    const audience = claims?.aud;
    const audiences = Array.isArray(audience) ? audience : [audience];
    if (
      claims === undefined ||
      claims.iss !== spec.spec.issuer ||
      !audiences.includes(spec.spec.clientId) ||
      (audiences.length > 1 && claims.azp !== spec.spec.clientId) ||
      claims.nonce !== nonce ||
      typeof claims.exp !== 'number' ||
      claims.exp * 1000 + CLOCK_TOLERANCE_SEC * 1000 < now
    ) {
      logger.warn({ idp }, 'the IdP\'s ID token failed the issuer, audience, nonce or expiry check');
      throw new LoginRefused(502, 'Login failed', `The answer of the identity provider "${label}" could not be verified.`, 'token-check-failed');
    }
    let merged: Record<string, unknown> = { ...claims };
    const wanted = [spec.spec.claims.name, spec.spec.claims.email, spec.spec.claims.groups];
    if (wanted.some((c) => merged[c] === undefined) && config.serverMetadata().userinfo_endpoint !== undefined) {
      try {
        const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
        merged = { ...info, ...merged };
      } catch (err) {
        logger.warn({ idp, err: err instanceof Error ? err.message : String(err) }, 'userinfo at the IdP failed; using the ID token\'s claims alone');
      }
    }

    let claimedName = '-';
    try {
      const identity = mapIdentity(spec.spec, merged);
      claimedName = identity.name;
      const user = await upsertUser(idp, identity);
      const done = randomToken();
      await store.oidcUpsert(UPSTREAM_DONE_MODEL, hashId(done), { interactionUid, userId: user.id, idp }, isoAt(clock.now() + DONE_TTL_MS));
      return reply.code(303).header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').redirect(`/oidc/interaction/${interactionUid}/upstream?done=${done}`, 303);
    } catch (err) {
      if (err instanceof LoginRefused && err.reason !== undefined) {
        logger.info({ idp, user: claimedName, reason: err.reason }, 'an IdP login was refused');
        await audit({ actor: `idp:${idp}`, action: 'login-failed', name: claimedName, after: { method: 'idp', idp, reason: err.reason } });
      }
      throw err;
    }
  };

  const finish = async (request: FastifyRequest<{ Params: { uid: string }; Querystring: Record<string, unknown> }>, reply: FastifyReply): Promise<FastifyReply> => {
    const { uid } = request.params;
    const done = request.query.done;
    const expired = new LoginRefused(400, 'Login expired', 'This login has expired or was already used.');
    if (!UID_PATTERN.test(uid) || typeof done !== 'string' || !TOKEN_PATTERN.test(done)) throw expired;
    const doneId = hashId(done);
    const record = await store.oidcFind(UPSTREAM_DONE_MODEL, doneId);
    if (record === undefined || record.consumed !== undefined || record.interactionUid !== uid || typeof record.userId !== 'string' || typeof record.idp !== 'string') throw expired;
    await store.oidcConsume(UPSTREAM_DONE_MODEL, doneId);
    const idp = record.idp;
    let details: Awaited<ReturnType<Provider['interactionDetails']>>;
    try {
      details = await provider.interactionDetails(request.raw, reply.raw);
    } catch {
      throw new LoginRefused(400, 'Login expired', 'This login was started in another browser, or it has expired.');
    }
    if (details.uid !== uid) throw new LoginRefused(400, 'Login expired', 'This login was started in another browser, or it has expired.');
    const user = await store.getUser(record.userId);
    if (user === undefined || user.source !== `idp:${idp}`) throw expired;
    if (user.disabled) throw new LoginRefused(403, 'Account disabled', `The account "${user.name}" is disabled in Causeway. Ask an administrator to enable it.`, 'disabled');
    void reply.hijack();
    await provider.interactionFinished(request.raw, reply.raw, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
    try {
      await store.recordLoginSuccess(user.id, isoAt(clock.now()));
    } catch (err) {
      logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'recording the login time failed');
    }
    logger.info({ idp, user: user.name }, 'a user logged in through their IdP');
    await audit({ actor: `user:${user.name}`, action: 'login', name: user.name, after: { method: 'idp', idp, groups: user.groups } });
    return reply;
  };

  /** Refusals render as pages; anything else is logged and shown as a generic failure. */
  const guarded =
    <R extends FastifyRequest>(handler: (request: R, reply: FastifyReply) => Promise<FastifyReply>) =>
    async (request: R, reply: FastifyReply): Promise<FastifyReply> => {
      try {
        return await handler(request, reply);
      } catch (err) {
        if (reply.sent || reply.raw.headersSent) {
          logger.error({ err: err instanceof Error ? err.message : String(err) }, 'an upstream login step failed after answering');
          return reply;
        }
        if (err instanceof LoginRefused) return sendPage(reply, err.status, err.title, err.message);
        logger.error({ err }, 'an upstream login step failed');
        return sendPage(reply, 500, 'Login failed', 'Something went wrong on the server.');
      }
    };

  return {
    async list() {
      const objects = await store.listObjects('IdentityProvider');
      const out: Array<{ name: string; displayName: string }> = [];
      for (const object of objects) {
        const parsed = specSchemas.IdentityProvider.safeParse({ apiVersion: 'causeway/v1', kind: 'IdentityProvider', metadata: { name: object.name }, spec: object.spec });
        if (parsed.success) out.push({ name: object.name, displayName: parsed.data.spec.displayName ?? object.name });
      }
      return out;
    },
    async routes(app) {
      // Public: these are steps of a login, before anyone is authenticated.
      const config = { access: 'public' } as const;
      app.get('/oidc/upstream/:idp/start', { config }, guarded(start));
      app.get(UPSTREAM_CALLBACK_PATH, { config }, guarded(callback));
      app.get('/oidc/interaction/:uid/upstream', { config }, guarded(finish));
      return Promise.resolve();
    },
  };
}
