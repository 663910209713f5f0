/**
 * Test support only: an oidc-provider instance over HTTPS on 127.0.0.1 shaped like Causeway's own
 * provider (the identity contract): the `causeway-cli` native public client, the contract's routes,
 * rotating refresh tokens with reuse detection, the device flow, revocation, and the two custom
 * grants (password for built-in users, token exchange for kube ID tokens with audience
 * `kubernetes:<cluster>`). Logins at `/oidc/interaction/:uid` succeed at once as `loginAs`. It also
 * answers `GET /api/v1/whoami` for an access token, like the control plane. Counters tell tests how
 * many grants of each kind were made.
 *
 * `browse()` walks pages like a minimal browser (cookies, redirects, the first form of a page), which
 * is enough to finish an authorization request or the device pages.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { makeServerCert, makeTestCa } from '../../../test/kit/certs.ts';

export interface TestUser {
  id: string;
  name: string;
  password: string;
  email: string;
  groups: string[];
  totp?: string;
  disabled?: boolean;
}

export interface TestProviderOptions {
  users?: TestUser[];
  /** Cluster names with a Kubernetes service (audience `kubernetes:<name>`). */
  clusters?: string[];
  accessTokenTtlSeconds?: number;
  kubeTokenTtlSeconds?: number;
}

export interface TestProvider {
  readonly issuer: string;
  readonly caPem: string;
  readonly provider: Provider;
  readonly users: Map<string, TestUser>;
  /** Who the interaction page logs in. */
  loginAs: string;
  /** What /api/v1/whoami says about the device (default null). */
  whoamiDevice: unknown;
  readonly counts: { password: number; refresh: number; exchange: number; refreshReuse: number; revocation: number; whoami: number; device: number };
  setAccessTokenTtl(seconds: number): void;
  close(): Promise<void>;
}

const CLIENT_ID = 'causeway-cli';
const SCOPES = 'openid email profile groups offline_access';

function claimsOf(user: TestUser): Record<string, unknown> {
  return { sub: user.id, email: user.email, email_verified: true, name: user.name, preferred_username: user.name, groups: user.groups };
}

export async function startTestProvider(options: TestProviderOptions = {}): Promise<TestProvider> {
  const ca = await makeTestCa({ commonName: 'test provider CA' });
  const tls = await makeServerCert(ca, { ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'] });
  const users = new Map<string, TestUser>((options.users ?? [{ id: 'u-alice', name: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['eng'] }]).map((u) => [u.name, u]));
  const byId = (id: string): TestUser | undefined => [...users.values()].find((u) => u.id === id);
  const clusters = new Set(options.clusters ?? ['prod']);
  let loginAs = [...users.keys()][0] ?? 'alice';
  const counts = { password: 0, refresh: 0, exchange: 0, refreshReuse: 0, revocation: 0, whoami: 0, device: 0 };
  let accessTtl = options.accessTokenTtlSeconds ?? 3600;
  const kubeTtl = options.kubeTokenTtlSeconds ?? 600;

  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomUUID();
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  void publicKey;

  const sockets = new Set<Socket>();
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();
  const server = createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => handler(req, res));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: 'none',
        application_type: 'native',
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code', 'password', 'urn:ietf:params:oauth:grant-type:token-exchange'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        scope: SCOPES,
      },
    ],
    jwks: { keys: [privateJwk] },
    routes: {
      authorization: '/oidc/auth',
      token: '/oidc/token',
      jwks: '/oidc/jwks',
      device_authorization: '/oidc/device/auth',
      code_verification: '/oidc/device',
      userinfo: '/oidc/me',
      revocation: '/oidc/token/revocation',
      introspection: '/oidc/token/introspection',
      end_session: '/oidc/session/end',
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'] },
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false }, deviceFlow: { enabled: true }, revocation: { enabled: true }, introspection: { enabled: true } },
    interactions: { url: (_ctx, interaction) => `/oidc/interaction/${interaction.uid}` },
    rotateRefreshToken: true,
    issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: () => accessTtl,
      RefreshToken: 24 * 3600,
      Grant: 7 * 24 * 3600,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      DeviceCode: 600,
      AuthorizationCode: 60,
    },
    cookies: { keys: ['test-provider-cookie-key-0123456789'] },
    findAccount: (_ctx, id) => {
      const user = byId(id);
      if (user === undefined || user.disabled === true) return undefined;
      return { accountId: id, claims: () => ({ ...claimsOf(user), sub: user.id }) };
    },
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const { client, session } = ctx.oidc;
      if (client === undefined || session?.accountId === undefined) return undefined;
      const existing = session.grantIdFor(client.clientId);
      if (existing !== undefined) {
        const found = await ctx.oidc.provider.Grant.find(existing);
        if (found !== undefined) return found;
      }
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope(SCOPES);
      await grant.save();
      return grant;
    },
  });
  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    if (ctx.oidc.params?.grant_type === 'refresh_token') counts.refresh += 1;
    if (ctx.oidc.params?.grant_type === 'urn:ietf:params:oauth:grant-type:device_code') counts.device += 1;
  });
  provider.on('grant.error', (ctx, err) => {
    if (process.env.H5_DEBUG) console.log('grant.error', err.error_detail, err.message);
    if (ctx.oidc.params?.grant_type === 'refresh_token' && /already used/.test((err as { error_detail?: string }).error_detail ?? '')) counts.refreshReuse += 1;
  });

  async function issueFor(ctx: Parameters<Parameters<Provider['registerGrantType']>[1]>[0], user: TestUser): Promise<void> {
    const client = ctx.oidc.client;
    const grant = new provider.Grant({ clientId: client.clientId, accountId: user.id });
    grant.addOIDCScope(SCOPES);
    const grantId = await grant.save();
    const at = new provider.AccessToken({ accountId: user.id, client, grantId, scope: SCOPES, gty: 'password' });
    const accessToken = await at.save();
    const rt = new provider.RefreshToken({ accountId: user.id, client, grantId, scope: SCOPES, gty: 'password', rotations: 0, iiat: Math.floor(Date.now() / 1000) });
    const refreshToken = await rt.save();
    const idToken = await sign({ ...claimsOf(user), aud: CLIENT_ID, azp: CLIENT_ID }, 3600);
    ctx.body = { access_token: accessToken, token_type: 'Bearer', expires_in: at.expiration, refresh_token: refreshToken, id_token: idToken, scope: SCOPES };
  }

  async function sign(payload: Record<string, unknown>, ttl: number): Promise<string> {
    return new SignJWT(payload)
      .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
      .setIssuer(issuer)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
      .sign(privateKey);
  }

  provider.registerGrantType(
    'password',
    async (ctx) => {
      const p = ctx.oidc.params as Record<string, string | undefined>;
      const user = users.get(p.username ?? '');
      if (user === undefined || user.disabled === true || user.password !== p.password) throw new errors.CustomOIDCProviderError('invalid_grant', 'invalid user name or password');
      if (user.totp !== undefined) {
        if (p.totp === undefined || p.totp === '') throw new errors.CustomOIDCProviderError('invalid_grant', 'a TOTP code is required (totp_required)');
        if (p.totp !== user.totp) throw new errors.CustomOIDCProviderError('invalid_grant', 'invalid user name or password');
      }
      counts.password += 1;
      await issueFor(ctx, user);
    },
    ['username', 'password', 'totp', 'scope'],
  );

  provider.registerGrantType(
    'urn:ietf:params:oauth:grant-type:token-exchange',
    async (ctx) => {
      const p = ctx.oidc.params as Record<string, string | undefined>;
      if (p.subject_token_type !== 'urn:ietf:params:oauth:token-type:access_token') throw new errors.InvalidRequest('subject_token_type must be an access token');
      if (p.requested_token_type !== 'urn:ietf:params:oauth:token-type:id_token') throw new errors.InvalidRequest('requested_token_type must be an ID token');
      const audience = p.audience ?? '';
      if (!audience.startsWith('kubernetes:') || !clusters.has(audience.slice('kubernetes:'.length))) throw new errors.InvalidTarget('no Kubernetes service has this audience');
      const at = await provider.AccessToken.find(p.subject_token ?? '');
      const user = at?.accountId === undefined ? undefined : byId(at.accountId);
      if (at === undefined || at.isExpired || user === undefined || user.disabled === true) throw new errors.InvalidGrant('subject token is invalid');
      counts.exchange += 1;
      const token = await sign({ ...claimsOf(user), aud: audience, azp: CLIENT_ID }, kubeTtl);
      ctx.body = { access_token: token, issued_token_type: 'urn:ietf:params:oauth:token-type:id_token', token_type: 'N_A', expires_in: kubeTtl };
    },
    ['subject_token', 'subject_token_type', 'audience', 'requested_token_type'],
  );

  const callback = provider.callback();
  handler = (req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    const interaction = /^\/oidc\/interaction\/([^/]+)$/.exec(url.pathname);
    if (interaction !== null) {
      void (async () => {
        try {
          const user = users.get(loginAs);
          if (user === undefined) throw new Error(`no test user ${loginAs}`);
          const details = await provider.interactionDetails(req, res);
          if (details.prompt.name === 'login') {
            await provider.interactionFinished(req, res, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
            return;
          }
          // oidc-provider asks native clients for consent every time (reason native_client_prompt).
          const grant = new provider.Grant({ clientId: CLIENT_ID, accountId: details.session?.accountId ?? user.id });
          grant.addOIDCScope(SCOPES);
          const grantId = await grant.save();
          await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
        } catch (err) {
          res.statusCode = 500;
          res.end(String(err));
        }
      })();
      return;
    }
    if (url.pathname === '/api/v1/whoami') {
      void (async () => {
        counts.whoami += 1;
        const auth = req.headers.authorization ?? '';
        const at = auth.startsWith('Bearer ') ? await provider.AccessToken.find(auth.slice(7)) : undefined;
        const user = at?.accountId === undefined ? undefined : byId(at.accountId);
        res.setHeader('content-type', 'application/json');
        if (at === undefined || user === undefined || user.disabled === true) {
          res.statusCode = 401;
          res.end(JSON.stringify({ error: { code: 'UNAUTHENTICATED', message: 'the access token is not valid' } }));
          return;
        }
        res.end(JSON.stringify({ user: { id: user.id, name: user.name, email: user.email, groups: user.groups, source: 'local' }, scope: 'none', kinds: [], method: 'session', device: result.whoamiDevice, tokenExpiresAt: new Date((at.exp ?? 0) * 1000).toISOString() }));
      })();
      return;
    }
    if (url.pathname === '/oidc/token/revocation') counts.revocation += 1;
    void callback(req, res);
  };

  const result: TestProvider = {
    issuer,
    caPem: ca.certPem,
    whoamiDevice: null,
    provider,
    users,
    get loginAs() {
      return loginAs;
    },
    set loginAs(name: string) {
      loginAs = name;
    },
    counts,
    setAccessTokenTtl(seconds: number) {
      accessTtl = seconds;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  return result;
}

/** A minimal browser: a cookie jar, redirects (to https on the issuer; others are returned), and forms. */
export class TestBrowser {
  readonly #caPem: string;
  readonly #cookies = new Map<string, string>();
  constructor(caPem: string) {
    this.#caPem = caPem;
  }

  async #request(url: URL, init: { method: string; form?: Record<string, string> }): Promise<{ status: number; location: string | undefined; body: string }> {
    const { request } = await import('node:https');
    const { request: httpRequest } = await import('node:http');
    const body = init.form === undefined ? undefined : new URLSearchParams(init.form).toString();
    const headers: Record<string, string> = { accept: 'text/html' };
    if (this.#cookies.size > 0) headers.cookie = [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (body !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(Buffer.byteLength(body));
      headers.origin = url.origin;
    }
    return new Promise((resolve, reject) => {
      const onRes = (res: IncomingMessage): void => {
        for (const line of res.headers['set-cookie'] ?? []) {
          const [pair] = line.split(';');
          const eq = pair.indexOf('=');
          const name = pair.slice(0, eq).trim();
          const value = pair.slice(eq + 1).trim();
          if (/expires=Thu, 01 Jan 1970/i.test(line) || value === '') this.#cookies.delete(name);
          else this.#cookies.set(name, value);
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      };
      const req = url.protocol === 'https:' ? request(url, { method: init.method, headers, ca: this.#caPem, agent: false }, onRes) : httpRequest(url, { method: init.method, headers, agent: false }, onRes);
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Follows redirects from `url` (GET, or a form POST); returns the last page and its URL. */
  async go(url: string | URL, form?: Record<string, string>): Promise<{ url: URL; status: number; body: string }> {
    let current = new URL(url);
    let answer = await this.#request(current, form === undefined ? { method: 'GET' } : { method: 'POST', form });
    for (let hops = 0; answer.location !== undefined && answer.status >= 300 && answer.status < 400; hops++) {
      if (hops > 20) throw new Error('too many redirects');
      current = new URL(answer.location, current);
      answer = await this.#request(current, { method: 'GET' });
    }
    return { url: current, status: answer.status, body: answer.body };
  }

  /** Submits the first form of `page` with its hidden fields plus `fields`. */
  async submit(page: { url: URL; body: string }, fields: Record<string, string>): Promise<{ url: URL; status: number; body: string }> {
    const form = /<form[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(page.body) ?? /<form[^>]*>([\s\S]*?)<\/form>/i.exec(page.body);
    if (form === null) throw new Error(`no form on ${page.url.href}:\n${page.body.slice(0, 2000)}`);
    const action = form.length === 3 ? form[1] : page.url.href;
    const inner = form.length === 3 ? form[2] : form[1];
    const values: Record<string, string> = {};
    for (const m of inner.matchAll(/<input[^>]*>/gi)) {
      const name = /name="([^"]*)"/.exec(m[0])?.[1];
      const value = /value="([^"]*)"/.exec(m[0])?.[1];
      if (name !== undefined && value !== undefined && /type="hidden"/i.test(m[0])) values[name] = value;
    }
    return this.go(new URL(action.replace(/&amp;/g, '&'), page.url), { ...values, ...fields });
  }
}

/** Completes the device flow for `userCode` through the provider's device pages, as the test provider's `loginAs`. */
export async function approveDevice(issuer: string, caPem: string, userCode: string): Promise<string> {
  const browser = new TestBrowser(caPem);
  const input = await browser.go(`${issuer}/oidc/device`);
  const confirm = await browser.submit(input, { user_code: userCode });
  const done = await browser.submit(confirm, { confirm: 'yes' });
  return done.body;
}
