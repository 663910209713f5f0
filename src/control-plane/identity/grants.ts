/**
 * Our two token-endpoint grants, registered on the provider (provider.registerGrantType):
 *
 * `password` (built-in users, scripts): `username`, `password`, optional `totp` and `scope`, checked by
 * the Directory. Answers like authorization_code: an access token, a refresh token when
 * `offline_access` was asked for, an ID token when `openid` was. Failures are `invalid_grant` with the
 * contract's descriptions (`totp_required` in the text so the CLI can prompt), and HTTP 429
 * `rate_limited` when the Directory refuses the source.
 *
 * Token exchange (RFC 8693) for Kubernetes: an access token of ours in, an ID token for the audience
 * `kubernetes:<clusterName>` out, signed with the current key of the configured algorithm (kid in the
 * header), `aud` the audience, `azp` the CLI. Refused with `invalid_target` when no Kubernetes service
 * has that cluster name, `invalid_grant` for an unknown or expired subject token or a disabled or
 * deleted user.
 *
 * The device (issue 4/5): when the token request comes over TLS with a client certificate, that
 * certificate must be a valid device certificate of this installation (type device, our CA, not
 * expired, serial not revoked: the peer check of the config stream and the trust-cert route) of a
 * registered, unbanned device of the subject token's user, holding the device's registered key; the
 * ID token then carries `device` (its id) and `device_trust` (its current level, when scored). Any
 * other presented certificate (another user's device, a banned device, a trust certificate: CA-03)
 * is refused with `invalid_grant`, the description starting `device_refused:` so the CLI can say so;
 * without a client certificate the token has no device, as before.
 */
import { createPublicKey } from 'node:crypto';
import type { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { SignJWT } from 'jose';
import { errors } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC, TokenEndpointGrantContext } from 'oidc-provider';
import type { Logger } from '../../lib/log.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { isKubernetesAudience } from './adapter.ts';
import { CLI_CLIENT_ID, findAccount, PASSWORD_GRANT, SCOPES, TOKEN_EXCHANGE_GRANT, userClaims } from './provider.ts';
import type { SigningAlgorithm, SigningKeys } from './signing-keys.ts';

export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

/** The contract's Directory (directory.ts, H3), as much of it as the password grant uses. */
export interface LoginAttempt {
  name: string;
  password: string;
  totp?: string;
  /** The client's address. */
  source: string;
}
export type LoginFailure = 'invalid-credentials' | 'totp-required' | 'totp-invalid' | 'locked' | 'rate-limited';
export type LoginResult = { ok: true; user: UserRecord } | { ok: false; code: LoginFailure; message: string; retryAfterSeconds?: number };
export interface PasswordDirectory {
  authenticate(attempt: LoginAttempt): Promise<LoginResult>;
}

export interface GrantOptions {
  store: Store;
  directory: PasswordDirectory;
  signingKeys: SigningKeys;
  idTokenSigningAlg: SigningAlgorithm;
  kubeTokenTtlSeconds: number;
  logger: Logger;
  /**
   * Checks the TLS client certificate of a token request (index.ts, once the control plane gave its
   * CA): `undefined` when it cannot be checked here (no CA, not our request), `{ ok: false, reason:
   * 'cert-missing' }` when none was presented.
   */
  devicePeer?: (req: IncomingMessage) => Promise<DevicePeerCheck | undefined>;
  clock?: { now(): number };
}

/** The verdict on a request's client certificate as a device certificate (stream/peer.ts authenticatePeer's). */
export type DevicePeerCheck = { ok: true; identity: { type: string; device?: string; serial: string } } | { ok: false; reason: string };

/** The prefix of every token-exchange refusal about the device certificate (the CLI tells it apart from a dead session). */
export const DEVICE_REFUSED = 'device_refused';

class RateLimited extends errors.CustomOIDCProviderError {
  constructor(description: string) {
    super('rate_limited', description);
    Object.assign(this, { status: 429, statusCode: 429 });
  }
}

const invalidGrant = (description: string): Error => new errors.CustomOIDCProviderError('invalid_grant', description);

type GrantContext = TokenEndpointGrantContext;

function param(ctx: GrantContext, name: string): string | undefined {
  const value = (ctx.oidc.params as Record<string, unknown>)[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function required(ctx: GrantContext, name: string): string {
  const value = param(ctx, name);
  if (value === undefined) throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  return value;
}

/** The asked-for scopes the client may have, in a stable order. Default `openid`. */
function grantedScope(ctx: GrantContext): string {
  const allowed = new Set((ctx.oidc.client.scope ?? SCOPES.join(' ')).split(' '));
  const asked = (param(ctx, 'scope') ?? 'openid').split(' ').filter((s) => s !== '');
  const unknown = asked.filter((s) => !allowed.has(s));
  if (unknown.length > 0) throw new errors.InvalidScope('requested scope is not allowed', unknown.join(' '));
  return SCOPES.filter((s) => asked.includes(s)).join(' ');
}

export function registerGrants(provider: Provider, options: GrantOptions): void {
  provider.registerGrantType(PASSWORD_GRANT, (ctx) => passwordGrant(provider, options, ctx), ['username', 'password', 'totp', 'scope']);
  provider.registerGrantType(TOKEN_EXCHANGE_GRANT, (ctx) => tokenExchangeGrant(provider, options, ctx), ['subject_token', 'subject_token_type', 'audience', 'requested_token_type', 'scope', 'resource', 'actor_token', 'actor_token_type']);
}

async function passwordGrant(provider: Provider, options: GrantOptions, ctx: GrantContext): Promise<void> {
  const name = required(ctx, 'username');
  const password = required(ctx, 'password');
  const totp = param(ctx, 'totp');
  const scope = grantedScope(ctx);
  const source = ctx.ip;
  const result = await options.directory.authenticate({ name, password, source, ...(totp === undefined ? {} : { totp }) });
  if (!result.ok) {
    switch (result.code) {
      case 'rate-limited':
        if (result.retryAfterSeconds !== undefined) ctx.set('retry-after', String(result.retryAfterSeconds));
        throw new RateLimited(result.message);
      case 'totp-required':
        throw invalidGrant('totp_required: a TOTP code is required');
      case 'locked':
        throw invalidGrant(result.message);
      default:
        throw invalidGrant('invalid user name or password');
    }
  }
  const account = await findAccount(options.store, result.user.id);
  if (account === undefined) throw invalidGrant('invalid user name or password');
  const { client } = ctx.oidc;

  const grant = new provider.Grant({ clientId: client.clientId, accountId: account.accountId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  ctx.oidc.entity('Account', account);
  ctx.oidc.entity('Grant', grant);

  const authTime = Math.floor(Date.now() / 1000);
  const at = new provider.AccessToken({ accountId: account.accountId, client, grantId, gty: PASSWORD_GRANT, scope });
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  let refreshToken: string | undefined;
  if (scope.split(' ').includes('offline_access') && client.grantTypeAllowed('refresh_token')) {
    const rt = new provider.RefreshToken({ accountId: account.accountId, client, grantId, gty: PASSWORD_GRANT, scope, rotations: 0, authTime, amr: ['pwd'] });
    ctx.oidc.entity('RefreshToken', rt);
    refreshToken = await rt.save();
  }

  let idToken: string | undefined;
  if (scope.split(' ').includes('openid')) {
    const token = new provider.IdToken({ ...(await account.claims('id_token', scope, {}, [])), auth_time: authTime, amr: ['pwd'] }, { ctx: ctx as unknown as KoaContextWithOIDC });
    (token as unknown as { scope: string }).scope = scope;
    token.set('at_hash', accessToken);
    idToken = await token.issue({ use: 'idtoken' });
  }

  ctx.body = {
    access_token: accessToken,
    expires_in: at.expiration,
    token_type: 'Bearer',
    scope,
    ...(refreshToken === undefined ? {} : { refresh_token: refreshToken }),
    ...(idToken === undefined ? {} : { id_token: idToken }),
  };
}

async function tokenExchangeGrant(provider: Provider, options: GrantOptions, ctx: GrantContext): Promise<void> {
  const subjectToken = required(ctx, 'subject_token');
  const subjectTokenType = required(ctx, 'subject_token_type');
  const audience = required(ctx, 'audience');
  const requestedType = param(ctx, 'requested_token_type') ?? ID_TOKEN_TYPE;
  if (subjectTokenType !== ACCESS_TOKEN_TYPE) throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  if (requestedType !== ID_TOKEN_TYPE) throw new errors.InvalidRequest(`requested_token_type must be ${ID_TOKEN_TYPE}`);
  if (param(ctx, 'actor_token') !== undefined) throw new errors.InvalidRequest('actor_token is not supported');
  if (!(await isKubernetesAudience(options.store, audience))) throw new errors.InvalidTarget(`no Kubernetes service has the audience ${audience.slice(0, 200)}`);

  const at = await provider.AccessToken.find(subjectToken);
  if (at === undefined || at.isExpired) throw invalidGrant('the subject token is unknown, revoked or expired');
  if (at.clientId !== ctx.oidc.client.clientId) throw invalidGrant('the subject token was issued to another client');
  const user = await options.store.getUser(at.accountId);
  if (user === undefined || user.disabled) throw invalidGrant('the subject token\'s user is disabled or deleted');

  const device = await presentedDevice(options, ctx.req, user);

  const key = options.signingKeys.current(options.idTokenSigningAlg);
  const now = Math.floor(Date.now() / 1000);
  const ttl = options.kubeTokenTtlSeconds;
  const { sub: _sub, ...claims } = userClaims(user, at.scope ?? 'openid');
  const deviceClaims = device === undefined ? {} : { device: device.id, ...(device.trust === undefined ? {} : { device_trust: device.trust }) };
  const jwt = await new SignJWT({ ...claims, ...deviceClaims, azp: CLI_CLIENT_ID })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setIssuer(provider.issuer)
    .setSubject(user.id)
    .setAudience(audience)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
    .sign(key.privateKey);
  await options.store.appendAuditEvent({ actor: `user:${user.name}`, action: 'token-exchange', kind: 'User', name: user.name, after: { audience, expiresAt: new Date((now + ttl) * 1000).toISOString(), ...(device === undefined ? {} : { device: device.id }) } }).catch((err: unknown) => {
    options.logger.warn({ err }, 'recording a token exchange in the audit log failed');
  });
  ctx.body = { access_token: jwt, issued_token_type: ID_TOKEN_TYPE, token_type: 'N_A', expires_in: ttl };
}

const deviceRefused = (description: string): Error => invalidGrant(`${DEVICE_REFUSED}: ${description}`);

/**
 * The device whose certificate this token request presents, checked against the subject token's
 * user; undefined when no client certificate was presented (or none can be checked). Throws
 * `invalid_grant` for any certificate that is not a good device certificate of this user's device.
 */
async function presentedDevice(options: GrantOptions, req: IncomingMessage, user: UserRecord): Promise<{ id: string; trust: string | undefined } | undefined> {
  const peer = options.devicePeer === undefined ? undefined : await options.devicePeer(req);
  if (peer === undefined || (!peer.ok && peer.reason === 'cert-missing')) return undefined;
  if (!peer.ok) throw deviceRefused(`the client certificate is not a valid device certificate of this installation (${peer.reason}); remove device.crt or log in again to register this machine`);
  const id = peer.identity.device;
  const device = id === undefined ? undefined : await options.store.getDevice(id);
  if (device === undefined) throw deviceRefused('the device certificate names no registered device; log in again to register this machine');
  if (device.userId !== user.id) throw deviceRefused('the device certificate does not belong to this user');
  if (!presentedKeyIs(req, device.publicKey)) throw deviceRefused('the client certificate does not hold this device\'s registered key');
  if (device.banned) throw deviceRefused('this device is banned; ask an admin');
  return { id: device.id, trust: trustLevel(device.trust, (options.clock ?? Date).now()) };
}

/** The device's current trust level; AlwaysDeny once its verdict went stale (DT-05); undefined when never scored. */
function trustLevel(trust: Record<string, unknown> | null, now: number): string | undefined {
  if (trust === null || typeof trust.level !== 'string' || trust.level === '') return undefined;
  const staleAt = typeof trust.staleAt === 'string' ? Date.parse(trust.staleAt) : Number.NaN;
  if (trust.stale === true || staleAt <= now) return 'AlwaysDeny';
  return trust.level;
}

/** Whether the request's TLS client certificate holds `publicKeyPem`. */
function presentedKeyIs(req: IncomingMessage, publicKeyPem: string | null): boolean {
  if (publicKeyPem === null) return false;
  const socket = req.socket as Partial<TLSSocket>;
  try {
    const cert: X509Certificate | undefined = socket.getPeerX509Certificate?.();
    if (cert === undefined) return false;
    return createPublicKey(publicKeyPem).export({ type: 'spki', format: 'der' }).equals(cert.publicKey.export({ type: 'spki', format: 'der' }));
  } catch {
    return false;
  }
}
