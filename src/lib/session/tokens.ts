/**
 * The token-endpoint calls every later command makes with the login session: silent refresh of the
 * access token, the token exchange for a cluster's kube ID token (identity contract: RFC 8693 with
 * audience `kubernetes:<cluster>`), and revocation at logout. They are plain form POSTs over the
 * session's trusted fetch, so a command like kube-credential does not load the OIDC client library.
 *
 * Every read-modify-write runs under the session lock and re-reads the session first: a parallel
 * process may have refreshed it meanwhile, and spending its (now consumed) refresh token again would
 * make the provider revoke the whole grant.
 */
import { CausewayError, UserError } from '../errors.ts';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { createTrustingFetch } from './http.ts';
import type { ClientCertificate, FetchLike } from './http.ts';
import type { KubeToken, Session, SessionStore, SessionUser } from './store.ts';

/** Tokens with less than this left are renewed first. */
export const MIN_VALIDITY_MS = 60_000;

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

export interface SessionDeps {
  clock?: Clock;
  /**
   * The fetch to reach the server with, given the session's CA (and, for the token exchange, this
   * machine's device certificate when there is one); default createTrustingFetch.
   */
  fetchFor?: (caPem: string | undefined, clientCert?: ClientCertificate) => FetchLike;
  /**
   * This machine's device certificate and key for `server` (the session's), presented over TLS in the
   * token exchange so the kube ID token carries the device; undefined when the machine has none for
   * that server. Asked only when a new kube token is needed. From the command module (src/client).
   */
  deviceCredentials?: (server: string) => Promise<ClientCertificate | undefined>;
}

/** The start of the token exchange's error_description when the server refused the device certificate. */
export const DEVICE_REFUSED = 'device_refused';

/** An OAuth error answer from the token (or revocation) endpoint. */
export class OAuthError extends CausewayError {
  readonly error: string;
  readonly description: string | undefined;
  readonly status: number;

  constructor(status: number, error: string, description: string | undefined) {
    super(`OAUTH_${error.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}`, `the server refused: ${error}${description === undefined ? '' : ` (${description.slice(0, 300)})`}`, { retryable: status >= 500 || status === 429 });
    this.name = 'OAuthError';
    this.error = error;
    this.description = description;
    this.status = status;
  }
}

/** What a command says when there is no usable session; kubectl shows it verbatim from kube-credential. */
export function notLoggedIn(server: string | undefined): UserError {
  return server === undefined
    ? new UserError('NOT_LOGGED_IN', 'not logged in: run causeway login <control plane URL>')
    : new UserError('NOT_LOGGED_IN', `not logged in to ${server} (or the session expired): run causeway login ${server}`);
}

function fetchOf(deps: SessionDeps, session: Pick<Session, 'caPem'>, clientCert?: ClientCertificate): FetchLike {
  if (deps.fetchFor !== undefined) return clientCert === undefined ? deps.fetchFor(session.caPem) : deps.fetchFor(session.caPem, clientCert);
  return createTrustingFetch({ ...(session.caPem === undefined ? {} : { caPem: session.caPem }), ...(clientCert === undefined ? {} : { clientCert }) });
}

/** POSTs a form to the token endpoint; the JSON answer on 200, else OAuthError. */
export async function tokenRequest(fetchFn: FetchLike, endpoint: string, params: Record<string, string>): Promise<Record<string, unknown>> {
  const res = await fetchFn(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams(params).toString(),
    redirect: 'manual',
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  const body = json !== null && typeof json === 'object' ? (json as Record<string, unknown>) : undefined;
  if (res.status === 200 && body !== undefined) return body;
  if (body !== undefined && typeof body.error === 'string') {
    throw new OAuthError(res.status, body.error, typeof body.error_description === 'string' ? body.error_description : undefined);
  }
  throw new CausewayError('TOKEN_ENDPOINT_FAILED', `the token endpoint answered HTTP ${res.status}`, { retryable: res.status >= 500 || res.status === 429 });
}

/** The payload of a JWT, without verifying it: only for tokens just received from the token endpoint over TLS (OIDC Core 3.1.3.7). */
export function jwtPayload(jwt: string): Record<string, unknown> {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new CausewayError('TOKEN_MALFORMED', 'the server sent a malformed ID token');
  try {
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as unknown;
    if (payload === null || typeof payload !== 'object') throw new Error('not an object');
    return payload as Record<string, unknown>;
  } catch (err) {
    throw new CausewayError('TOKEN_MALFORMED', 'the server sent a malformed ID token', { cause: err });
  }
}

/** The session's user from ID token (or userinfo) claims. */
export function userFromClaims(claims: Record<string, unknown>): SessionUser {
  const id = typeof claims.sub === 'string' ? claims.sub : '';
  const name = typeof claims.preferred_username === 'string' ? claims.preferred_username : typeof claims.name === 'string' ? claims.name : id;
  const groups = Array.isArray(claims.groups) ? claims.groups.filter((g): g is string => typeof g === 'string') : [];
  return { id, name, ...(typeof claims.email === 'string' ? { email: claims.email } : {}), groups };
}

function expiresAt(json: Record<string, unknown>, now: number, what: string): number {
  const expiresIn = typeof json.expires_in === 'string' ? Number(json.expires_in) : json.expires_in;
  if (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn <= 0) {
    throw new CausewayError('TOKEN_ENDPOINT_FAILED', `the server sent ${what} without a usable expires_in`);
  }
  return now + expiresIn * 1000;
}

/** A session updated with a token answer (login or refresh). The refresh token is kept when the answer has none. */
export function applyTokenAnswer(session: Omit<Session, 'accessToken' | 'accessTokenExpiresAt' | 'user'> & Partial<Pick<Session, 'user'>>, json: Record<string, unknown>, now: number): Session {
  if (typeof json.access_token !== 'string' || json.access_token === '') throw new CausewayError('TOKEN_ENDPOINT_FAILED', 'the server sent no access token');
  const idToken = typeof json.id_token === 'string' ? json.id_token : undefined;
  const user = idToken !== undefined ? userFromClaims(jwtPayload(idToken)) : session.user;
  if (user === undefined) throw new CausewayError('TOKEN_ENDPOINT_FAILED', 'the server sent no ID token');
  const refreshToken = typeof json.refresh_token === 'string' ? json.refresh_token : session.refreshToken;
  return {
    ...session,
    accessToken: json.access_token,
    accessTokenExpiresAt: expiresAt(json, now, 'an access token'),
    ...(refreshToken === undefined ? {} : { refreshToken }),
    user,
  };
}

async function refreshLocked(session: Session, deps: SessionDeps, now: number): Promise<Session> {
  if (session.refreshToken === undefined) throw notLoggedIn(session.server);
  let json: Record<string, unknown>;
  try {
    json = await tokenRequest(fetchOf(deps, session), session.tokenEndpoint, { grant_type: 'refresh_token', client_id: session.clientId, refresh_token: session.refreshToken });
  } catch (err) {
    if (err instanceof OAuthError && (err.error === 'invalid_grant' || err.error === 'invalid_client' || err.error === 'unauthorized_client')) throw notLoggedIn(session.server);
    throw err;
  }
  // Kube tokens stay: they are independent JWTs with their own expiry.
  return applyTokenAnswer(session, json, now);
}

function loaded(session: Session | undefined): Session {
  if (session === undefined) throw notLoggedIn(undefined);
  return session;
}

/**
 * The session with an access token that has at least MIN_VALIDITY_MS left, refreshing it (under the
 * lock) when needed. NOT_LOGGED_IN when there is no session or the refresh is refused.
 */
export async function freshSession(store: SessionStore, deps: SessionDeps = {}): Promise<Session> {
  const clock = deps.clock ?? systemClock;
  const first = loaded(await store.read());
  if (first.accessTokenExpiresAt - clock.now() >= MIN_VALIDITY_MS) return first;
  return store.withLock(async () => {
    const current = loaded(await store.read());
    if (current.accessTokenExpiresAt - clock.now() >= MIN_VALIDITY_MS) return current;
    const next = await refreshLocked(current, deps, clock.now());
    await store.write(next);
    return next;
  });
}

export interface KubeTokenResult extends KubeToken {
  /** Whether it came from the session's cache (no call to the server). */
  cached: boolean;
}

/**
 * An ID token for audience `kubernetes:<cluster>`: the cached one while it has at least
 * MIN_VALIDITY_MS left, else a new one from the token exchange (refreshing the access token first
 * when needed), cached in the session.
 */
export async function kubeToken(store: SessionStore, cluster: string, deps: SessionDeps = {}): Promise<KubeTokenResult> {
  const clock = deps.clock ?? systemClock;
  const usable = (s: Session): KubeToken | undefined => {
    const t = Object.hasOwn(s.kubeTokens, cluster) ? s.kubeTokens[cluster] : undefined;
    return t !== undefined && t.expiresAt - clock.now() >= MIN_VALIDITY_MS ? t : undefined;
  };
  const first = loaded(await store.read());
  const cached = usable(first);
  if (cached !== undefined) return { ...cached, cached: true };
  return store.withLock(async () => {
    let session = loaded(await store.read());
    const again = usable(session);
    if (again !== undefined) return { ...again, cached: true };
    let refreshed = false;
    if (session.accessTokenExpiresAt - clock.now() < MIN_VALIDITY_MS) {
      session = await refreshLocked(session, deps, clock.now());
      refreshed = true;
      await store.write(session);
    }
    // This machine's device certificate, when it has one for this server: the token then names the device.
    const device = deps.deviceCredentials === undefined ? undefined : await deps.deviceCredentials(session.server).catch(() => undefined);
    const exchange = (s: Session): Promise<Record<string, unknown>> =>
      tokenRequest(fetchOf(deps, s, device), s.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE_GRANT,
        client_id: s.clientId,
        subject_token: s.accessToken,
        subject_token_type: ACCESS_TOKEN_TYPE,
        audience: `kubernetes:${cluster}`,
        requested_token_type: ID_TOKEN_TYPE,
      });
    let json: Record<string, unknown>;
    try {
      json = await exchange(session);
    } catch (err) {
      if (err instanceof OAuthError && err.error === 'invalid_target') {
        throw new UserError('UNKNOWN_CLUSTER', `${session.server} has no Kubernetes service for cluster "${cluster.slice(0, 100)}"; check --cluster (the service's spec.kubernetes.clusterName)`);
      }
      throwIfDeviceRefused(err, session.server);
      if (!(err instanceof OAuthError && err.error === 'invalid_grant')) throw err;
      // The access token was refused before its time (revoked, or the server restarted without it):
      // one refresh, then one more try; a refused refresh means logging in again.
      if (refreshed) throw notLoggedIn(session.server);
      session = await refreshLocked(session, deps, clock.now());
      await store.write(session);
      try {
        json = await exchange(session);
      } catch (second) {
        throwIfDeviceRefused(second, session.server);
        if (second instanceof OAuthError && second.error === 'invalid_grant') throw notLoggedIn(session.server);
        throw second;
      }
    }
    if (typeof json.access_token !== 'string' || json.access_token === '') throw new CausewayError('TOKEN_ENDPOINT_FAILED', 'the token exchange answered without a token');
    if (json.issued_token_type !== undefined && json.issued_token_type !== ID_TOKEN_TYPE) {
      throw new CausewayError('TOKEN_ENDPOINT_FAILED', `the token exchange issued ${JSON.stringify(json.issued_token_type)}, not an ID token`);
    }
    const token: KubeToken = { token: json.access_token, expiresAt: expiresAt(json, clock.now(), 'a kube token') };
    // The JWT's own exp wins when it is earlier than what expires_in said.
    const exp = jwtPayload(token.token).exp;
    if (typeof exp === 'number' && exp * 1000 < token.expiresAt) token.expiresAt = exp * 1000;
    // Drop expired entries of other clusters while here.
    const kubeTokens: Record<string, KubeToken> = {};
    for (const [name, t] of Object.entries(session.kubeTokens)) if (t.expiresAt > clock.now()) kubeTokens[name] = t;
    kubeTokens[cluster] = token;
    await store.write({ ...session, kubeTokens });
    return { ...token, cached: false };
  });
}

/** A token exchange refused over the device certificate is not a dead session: say what the server said. */
function throwIfDeviceRefused(err: unknown, server: string): void {
  if (!(err instanceof OAuthError) || err.error !== 'invalid_grant' || err.description?.startsWith(`${DEVICE_REFUSED}:`) !== true) return;
  const why = err.description.slice(DEVICE_REFUSED.length + 1).trim().slice(0, 300);
  throw new UserError('DEVICE_REFUSED', `${server} refused this machine's device certificate: ${why}`);
}

/**
 * Revokes the refresh token (which ends the grant: its access tokens too) and, when it has none,
 * the access token. Resolves true when the server confirmed; throws when it could not be reached.
 */
export async function revokeSession(session: Session, deps: SessionDeps = {}): Promise<boolean> {
  if (session.revocationEndpoint === undefined) return false;
  const token = session.refreshToken ?? session.accessToken;
  const res = await fetchOf(deps, session)(session.revocationEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ token, token_type_hint: session.refreshToken === undefined ? 'access_token' : 'refresh_token', client_id: session.clientId }).toString(),
    redirect: 'manual',
  });
  await res.arrayBuffer();
  return res.status === 200;
}
