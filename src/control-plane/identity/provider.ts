/**
 * Causeway as an OpenID Connect provider: the oidc-provider configuration of the identity contract
 * (/work/prompts/identity.md; README "Identity").
 *
 *   issuer        the control plane's public URL, byte for byte (OP-09)
 *   routes        discovery at /.well-known/openid-configuration, everything else under /oidc/
 *   clients       `causeway-cli` (public, native; loopback redirect http://127.0.0.1/callback where only the
 *                 port may vary, RFC 8252 §7.3; OP-02), `causeway-console` (the web console's server side:
 *                 redirect only to <public URL>/console/callback), and `kubernetes:<clusterName>` per Kubernetes
 *                 service (adapter.ts), the audiences of token exchange
 *   grants        authorization code (PKCE S256 required, OP-03), device code, refresh token (rotated on
 *                 every use; reuse revokes the grant), and our `password` and token-exchange (grants.ts)
 *   tokens        opaque access tokens (1 h), ID tokens RS256 by default or ES256, refresh tokens 24 h idle
 *                 within a 7 d grant
 *   accounts      users in the store; a disabled or deleted user has no account, so nothing is issued
 *                 or refreshed for them
 *   pages         error, logout and device-flow pages from pages.ts (escaped, no inline code)
 *
 * The keys come from signing-keys.ts; whoever builds the provider rebuilds it when they change
 * (index.ts). The cookie keys are sealed in a setting so every replica signs cookies alike.
 */
import { randomBytes } from 'node:crypto';
import Provider, { interactionPolicy } from 'oidc-provider';
import type { Account, AccountClaims, Configuration, KoaContextWithOIDC } from 'oidc-provider';
import type { Clock } from '../../lib/clock.ts';
import { UserError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { createAdapterFactory } from './adapter.ts';
import { logoutSource, postLogoutSuccessSource, renderProviderError, successSource, userCodeConfirmSource, userCodeInputSource } from './pages.ts';
import type { PageContext } from './pages.ts';
import type { SecretBox } from './secret-box.ts';
import type { SigningAlgorithm, SigningKeys } from './signing-keys.ts';

export const CLI_CLIENT_ID = 'causeway-cli';
export const CLI_REDIRECT_URI = 'http://127.0.0.1/callback';
/** The web console's server side (console/): a confidential-by-placement client whose code is exchanged by the server itself. */
export const CONSOLE_CLIENT_ID = 'causeway-console';
export const CONSOLE_CALLBACK_PATH = '/console/callback';
export const PASSWORD_GRANT = 'password';
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
export const SCOPES = ['openid', 'email', 'profile', 'groups', 'offline_access'] as const;
export const COOKIE_KEYS_SETTING_KEY = 'identity.cookie-keys';

export const ROUTES = {
  authorization: '/oidc/auth',
  token: '/oidc/token',
  jwks: '/oidc/jwks',
  device_authorization: '/oidc/device/auth',
  code_verification: '/oidc/device',
  userinfo: '/oidc/me',
  revocation: '/oidc/token/revocation',
  introspection: '/oidc/token/introspection',
  end_session: '/oidc/session/end',
} as const;

/** Every path the provider answers (introspection is off); the server hands exactly these to it. */
export const PROVIDER_PATHS: readonly string[] = [
  '/.well-known/openid-configuration',
  '/.well-known/oauth-authorization-server',
  ROUTES.authorization,
  `${ROUTES.authorization}/:uid`,
  ROUTES.token,
  ROUTES.jwks,
  ROUTES.device_authorization,
  ROUTES.code_verification,
  `${ROUTES.code_verification}/:uid`,
  ROUTES.userinfo,
  ROUTES.revocation,
  ROUTES.end_session,
  `${ROUTES.end_session}/confirm`,
  `${ROUTES.end_session}/success`,
];

export interface TokenLifetimes {
  /** Access tokens. Default 1 h. */
  accessTokenSeconds: number;
  /** A refresh token unused this long expires. Default 24 h. */
  refreshTokenIdleSeconds: number;
  /** The whole grant (login) ends this long after it began, however often refreshed. Default 7 d. */
  grantSeconds: number;
  /** ID tokens from the provider's own flows. Default 1 h. */
  idTokenSeconds: number;
  /** The device flow's codes. Default 10 min. */
  deviceCodeSeconds: number;
  /** A login page (interaction). Default 1 h. */
  interactionSeconds: number;
  /** The browser session at the provider. Default 7 d. */
  sessionSeconds: number;
}

export const DEFAULT_LIFETIMES: TokenLifetimes = {
  accessTokenSeconds: 3600,
  refreshTokenIdleSeconds: 24 * 3600,
  grantSeconds: 7 * 24 * 3600,
  idTokenSeconds: 3600,
  deviceCodeSeconds: 600,
  interactionSeconds: 3600,
  sessionSeconds: 7 * 24 * 3600,
};

export interface ProviderOptions {
  publicUrl: string;
  store: Store;
  secretBox: SecretBox;
  signingKeys: SigningKeys;
  cookieKeys: string[];
  idTokenSigningAlg: SigningAlgorithm;
  lifetimes: TokenLifetimes;
  clock: Clock;
  logger: Logger;
}

/** The claims of a user for the given scope (ID tokens, userinfo, kube tokens). */
export function userClaims(user: UserRecord, scope: string): AccountClaims {
  const scopes = new Set(scope.split(' '));
  const claims: AccountClaims = { sub: user.id };
  if (scopes.has('email') && user.email !== null) {
    claims.email = user.email;
    claims.email_verified = true;
  }
  if (scopes.has('profile')) {
    claims.name = user.name;
    claims.preferred_username = user.name;
  }
  if (scopes.has('groups')) claims.groups = [...user.groups];
  return claims;
}

/** The account of a user id, or undefined for an unknown or disabled user. */
export async function findAccount(store: Pick<Store, 'getUser'>, id: string): Promise<Account | undefined> {
  if (typeof id !== 'string' || id === '' || id.length > 256) return undefined;
  const user = await store.getUser(id);
  if (user === undefined || user.disabled) return undefined;
  return {
    accountId: user.id,
    user,
    claims: (_use: string, scope: string) => userClaims(user, scope),
  };
}

/** The cookie-signing keys, made on first start and shared by replicas through a sealed setting. */
export async function loadOrCreateCookieKeys(store: Pick<Store, 'getSetting' | 'putSettingIfAbsent'>, secretBox: SecretBox): Promise<string[]> {
  let sealed = await store.getSetting(COOKIE_KEYS_SETTING_KEY);
  if (sealed === undefined) {
    const keys = [randomBytes(32).toString('base64url')];
    sealed = (await store.putSettingIfAbsent(COOKIE_KEYS_SETTING_KEY, secretBox.seal(JSON.stringify(keys), COOKIE_KEYS_SETTING_KEY), { actor: 'system' })).value;
  }
  const keys = JSON.parse(secretBox.open(sealed, COOKIE_KEYS_SETTING_KEY)) as unknown;
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => typeof k === 'string')) throw new UserError('COOKIE_KEYS_STORED_INVALID', 'the cookie keys in the database are not in a known format; restore the database from a backup');
  return keys;
}

/**
 * RFC 8252 §7.3 for the CLI: `http://127.0.0.1:<port>/callback`, where only the port may differ from the
 * registered URI; every other difference is refused (OP-02). Other clients: exact match.
 */
export function redirectUriAllowed(registered: readonly string[], applicationType: string | undefined, value: string): boolean {
  if (registered.includes(value)) return true;
  if (applicationType !== 'native') return false;
  const match = /^http:\/\/127\.0\.0\.1:([1-9][0-9]{0,4})(\/[^?#]*)$/.exec(value);
  if (match === null || Number(match[1]) > 65535) return false;
  return registered.includes(`http://127.0.0.1${match[2]}`);
}

/**
 * oidc-provider's prompts less the checks that ask for a consent page (every time for native clients,
 * and whenever `prompt=consent` is sent, which OIDC requires alongside `offline_access`):
 * our only native client is our own CLI, consent to it is implied (loadExistingGrant), and there is
 * no consent page. What it guarded against (another program on the machine starting a login with our
 * client id and a session cookie of the browser) still needs that program to beat PKCE and to own a
 * loopback port the user's browser is sent to; such a program already runs as the user.
 */
function interactionPolicyWithoutConsentPage(): ReturnType<typeof interactionPolicy.base> {
  const policy = interactionPolicy.base();
  const consent = policy.get('consent');
  if (consent !== undefined) {
    consent.checks.remove('native_client_prompt');
    // prompt=consent stays valid (OIDC asks for it with offline_access) but needs no page either.
    consent.checks.remove('consent_prompt');
  }
  return policy;
}

export function buildProvider(options: ProviderOptions): Provider {
  const { store, lifetimes } = options;
  const secure = options.publicUrl.startsWith('https:');
  const pageCtx = (ctx: KoaContextWithOIDC): PageContext => ctx;

  const configuration: Configuration = {
    adapter: createAdapterFactory({ store, secretBox: options.secretBox, clock: options.clock }),
    clients: [
      {
        client_id: CLI_CLIENT_ID,
        client_name: 'Causeway CLI',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: [CLI_REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT, PASSWORD_GRANT, TOKEN_EXCHANGE_GRANT],
        response_types: ['code'],
        id_token_signed_response_alg: options.idTokenSigningAlg,
        scope: SCOPES.join(' '),
      },
      {
        // Only ever redirects to this server's own callback; the code is exchanged server-side with PKCE.
        client_id: CONSOLE_CLIENT_ID,
        client_name: 'Causeway Command Center',
        application_type: 'web',
        token_endpoint_auth_method: 'none',
        redirect_uris: [`${options.publicUrl}${CONSOLE_CALLBACK_PATH}`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        id_token_signed_response_alg: options.idTokenSigningAlg,
        scope: 'openid email profile groups',
      },
    ],
    clientDefaults: {
      grant_types: [],
      response_types: [],
      id_token_signed_response_alg: options.idTokenSigningAlg,
      token_endpoint_auth_method: 'none',
    },
    jwks: options.signingKeys.providerJwks(),
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256'],
      userinfoSigningAlgValues: ['RS256', 'ES256'],
      authorizationSigningAlgValues: ['RS256', 'ES256'],
      introspectionSigningAlgValues: ['RS256', 'ES256'],
      requestObjectSigningAlgValues: ['RS256', 'ES256'],
      clientAuthSigningAlgValues: ['RS256', 'ES256'],
    },
    routes: { ...ROUTES },
    scopes: [...SCOPES],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // The ID token carries the claims of its scopes (email, groups…) even when an access token is issued too.
    conformIdTokenClaims: false,
    allowOmittingSingleRegisteredRedirectUri: false,
    findAccount: (_ctx, sub) => findAccount(store, sub),
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        userCodeInputSource: (ctx, form, out, err) => userCodeInputSource(pageCtx(ctx), form, out, err),
        userCodeConfirmSource: (ctx, form, client, deviceInfo, userCode) => userCodeConfirmSource(pageCtx(ctx), form, { clientId: client.clientId, clientName: client.clientName }, deviceInfo, userCode),
        successSource: (ctx) => successSource(pageCtx(ctx)),
      },
      revocation: { enabled: true },
      introspection: { enabled: false },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: (ctx, form) => logoutSource(pageCtx(ctx), form),
        postLogoutSuccessSource: (ctx) => postLogoutSuccessSource(pageCtx(ctx)),
      },
      dPoP: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      resourceIndicators: { enabled: false },
      clientCredentials: { enabled: false },
      registration: { enabled: false },
    },
    pkce: { required: () => true },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: lifetimes.accessTokenSeconds,
      AuthorizationCode: 60,
      IdToken: lifetimes.idTokenSeconds,
      DeviceCode: lifetimes.deviceCodeSeconds,
      Interaction: lifetimes.interactionSeconds,
      Session: lifetimes.sessionSeconds,
      Grant: lifetimes.grantSeconds,
      RefreshToken: (ctx, token) => {
        // Idle expiry, never past the end of the grant.
        const grant = ctx?.oidc?.entities?.Grant as { exp?: number } | undefined;
        const now = Math.floor(Date.now() / 1000);
        const idle = lifetimes.refreshTokenIdleSeconds;
        const grantLeft = typeof grant?.exp === 'number' ? grant.exp - now : undefined;
        const tokenIat = typeof token.iat === 'number' ? token.iat : now;
        const left = grantLeft === undefined ? idle : Math.min(idle, grantLeft - Math.max(0, tokenIat - now));
        return Math.max(1, left);
      },
    },
    expiresWithSession: (_ctx, source) => Promise.resolve(!source.scopes.has('offline_access')),
    issueRefreshToken: (_ctx, client, source) => Promise.resolve(client.grantTypeAllowed('refresh_token') && source.scopes.has('offline_access')),
    loadExistingGrant: async (ctx) => {
      // First-party clients only (we have no others): consent is implied, so every login gets a grant
      // for the scopes it asked for (within the client's), and no consent page exists.
      const { client, session, params } = ctx.oidc;
      if (client === undefined || session?.accountId === undefined) return undefined;
      const allowed = new Set((client.scope ?? SCOPES.join(' ')).split(' '));
      const requested = (typeof params?.scope === 'string' ? params.scope : '').split(' ').filter((s) => allowed.has(s));
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope(requested.join(' '));
      await grant.save();
      return grant;
    },
    interactions: {
      url: (_ctx, interaction) => `/oidc/interaction/${interaction.uid}`,
      policy: interactionPolicyWithoutConsentPage(),
    },
    cookies: {
      keys: options.cookieKeys,
      long: { httpOnly: true, sameSite: 'lax', secure },
      short: { httpOnly: true, sameSite: 'lax', secure },
    },
    renderError: (ctx, out, error) => renderProviderError(pageCtx(ctx), out as unknown as Record<string, unknown>, error),
    clockTolerance: 5,
  };
  const provider = new Provider(options.publicUrl, configuration);
  provider.proxy = false;

  // OP-02: our own loopback rule instead of oidc-provider's (which also lets `localhost` and `[::1]` through).
  const clientPrototype = provider.Client.prototype as unknown as { redirectUriAllowed(this: { redirectUris: string[]; applicationType?: string }, value: string): boolean };
  clientPrototype.redirectUriAllowed = function redirectAllowed(value: string) {
    return redirectUriAllowed(this.redirectUris, this.applicationType, value);
  };
  return provider;
}
