/**
 * For tests of the login pages: a minimal real oidc-provider (the `causeway-cli` client with its
 * loopback redirect, PKCE, in-memory storage, accounts from the store) mounted on a Fastify app the way
 * the control plane mounts it (raw request handed to `provider.callback()`), with interactionRoutes
 * beside it, listening on 127.0.0.1:0; plus a small cookie-keeping HTTP client that walks the
 * authorization code flow.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { silentLogger } from '../../lib/log.ts';
import type { Store } from '../store/index.ts';
import type { Directory } from './directory.ts';
import { interactionRoutes } from './interactions.ts';
import type { UpstreamList } from './interactions.ts';

export const TEST_CLIENT_ID = 'causeway-cli';

export interface InteractionServerOptions {
  store: Pick<Store, 'getUser'>;
  directory: Directory;
  upstreams?: UpstreamList;
  /** Give consent automatically (as the real provider does). Default true; false makes the consent prompt reach the login routes. */
  autoConsent?: boolean;
  clientName?: string;
}

export interface InteractionServer {
  origin: string;
  app: FastifyInstance;
  provider: Provider;
  close(): Promise<void>;
}

const PROVIDER_PATHS = ['/.well-known/openid-configuration', '/oidc/auth', '/oidc/auth/:uid', '/oidc/token', '/oidc/jwks', '/oidc/me'];

export async function startInteractionServer(options: InteractionServerOptions): Promise<InteractionServer> {
  // The issuer needs the port, and Fastify takes no routes once listening: find a free port first.
  const probe = Fastify({ logger: false });
  await probe.listen({ host: '127.0.0.1', port: 0 });
  const { port } = probe.server.address() as AddressInfo;
  await probe.close();

  const origin = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test', alg: 'RS256', use: 'sig' };
  const autoConsent = options.autoConsent ?? true;
  const provider = new Provider(origin, {
    clients: [{
      client_id: TEST_CLIENT_ID,
      client_name: options.clientName ?? 'Causeway CLI',
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    routes: { authorization: '/oidc/auth', token: '/oidc/token', jwks: '/oidc/jwks', userinfo: '/oidc/me' },
    interactions: { url: (_ctx: KoaContextWithOIDC, interaction) => `/oidc/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    scopes: ['openid', 'email', 'profile', 'groups'],
    findAccount: async (_ctx, id) => {
      const user = await options.store.getUser(id);
      if (user === undefined || user.disabled) return undefined;
      return { accountId: id, claims: () => ({ sub: id, preferred_username: user.name }) };
    },
    ...(autoConsent
      ? {
          loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
            const clientId = ctx.oidc.client?.clientId;
            const accountId = ctx.oidc.session?.accountId;
            if (clientId === undefined || accountId === undefined) return undefined;
            const existing = ctx.oidc.session?.grantIdFor(clientId);
            if (existing !== undefined) return ctx.oidc.provider.Grant.find(existing);
            const grant = new ctx.oidc.provider.Grant({ clientId, accountId });
            grant.addOIDCScope('openid email profile groups');
            await grant.save();
            return grant;
          },
        }
      : {}),
  });

  const real = Fastify({ logger: false, trustProxy: false });
  // As server.ts does for every response: the pages must work under these (their <meta name="referrer">
  // overrides the header's no-referrer, or the browser would send Origin: null on the login POST).
  real.addHook('onSend', async (_request, reply, payload) => {
    void reply.header('referrer-policy', 'no-referrer');
    if (!reply.hasHeader('content-security-policy')) void reply.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    return payload;
  });
  const callback = provider.callback();
  for (const path of PROVIDER_PATHS) {
    real.route({
      method: ['GET', 'POST'],
      url: path,
      onRequest: (request, reply, done) => {
        void reply.hijack();
        void callback(request.raw, reply.raw);
        done();
      },
      handler: () => undefined,
    });
  }
  await interactionRoutes(real, { provider, directory: options.directory, upstreams: options.upstreams ?? { list: () => Promise.resolve([]) }, logger: silentLogger() });
  await real.listen({ host: '127.0.0.1', port });
  return { origin, app: real, provider, close: () => real.close() };
}

/** A fetch that keeps cookies (ignoring paths) and never follows redirects. */
export class Browser {
  readonly cookies = new Map<string, string>();

  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookies.size > 0) headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const index = pair.indexOf('=');
      if (index <= 0) continue;
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return response;
  }
}

export interface StartedLogin {
  browser: Browser;
  uid: string;
  interactionUrl: string;
  verifier: string;
  redirectUri: string;
  state: string;
}

/** Starts the authorization code flow (PKCE S256) and follows it to the login page. */
export async function startLogin(server: InteractionServer, options: { redirectPort?: number; loginHint?: string } = {}): Promise<StartedLogin> {
  const browser = new Browser();
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const redirectUri = `http://127.0.0.1:${options.redirectPort ?? 45678}/callback`;
  const state = randomBytes(8).toString('hex');
  const query = new URLSearchParams({ client_id: TEST_CLIENT_ID, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256', state });
  if (options.loginHint !== undefined) query.set('login_hint', options.loginHint);
  const response = await browser.fetch(`${server.origin}/oidc/auth?${query.toString()}`);
  const location = response.headers.get('location');
  if (response.status !== 303 || location === null) throw new Error(`the authorization request was not sent to the login page: ${response.status} ${await response.text()}`);
  const interactionUrl = new URL(location, server.origin).toString();
  const uid = /\/oidc\/interaction\/([^/?#]+)$/.exec(new URL(interactionUrl).pathname)?.[1];
  if (uid === undefined) throw new Error(`unexpected login page address ${location}`);
  return { browser, uid, interactionUrl, verifier, redirectUri, state };
}

/** Posts the login form as the page would (same-origin Origin unless given). */
export function postLogin(server: InteractionServer, login: StartedLogin, fields: Record<string, string>, headers: Record<string, string> = { origin: server.origin }): Promise<Response> {
  return login.browser.fetch(`${login.interactionUrl}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(fields).toString(),
  });
}

/** Follows same-origin redirects until one leaves the server; returns that address. */
export async function followToRedirectUri(server: InteractionServer, login: StartedLogin, first: Response): Promise<URL> {
  let response = first;
  for (let hops = 0; hops < 5; hops++) {
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || location === null) throw new Error(`expected a redirect, got ${response.status}: ${(await response.text()).slice(0, 300)}`);
    const next = new URL(location, server.origin);
    if (next.origin !== server.origin) return next;
    response = await login.browser.fetch(next.toString());
  }
  throw new Error('too many redirects');
}
