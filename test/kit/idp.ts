/**
 * A test stand-in for an organisation's identity provider: a second, independent OpenID Connect
 * server (an `oidc-provider` instance) over HTTPS with its own CA, its own users and its own plain
 * login form. ID tokens carry `email`, `name`, `preferred_username` and `groups` (like an IdP set up
 * to put groups in the token), so Causeway's upstream login can be tested end to end.
 *
 * Users and their claims can be changed while it runs (`setUser`), so a test can change a user's
 * groups "at the IdP" and log in again. `groups` is sent exactly as given, so tests can also send a
 * single string or something that is not a list of strings at all.
 *
 * No dev interactions: GET /interaction/:uid renders the form, POST /interaction/:uid/login checks
 * the password and finishes the interaction; consent is granted automatically.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import type { Account, ClientMetadata, KoaContextWithOIDC } from 'oidc-provider';
import { makeServerCert, makeTestCa } from './certs.ts';

export interface TestIdpUser {
  /** The login name typed into the form; also `preferred_username`. */
  name: string;
  password: string;
  email?: string;
  /** Default true. */
  emailVerified?: boolean;
  /** Sent as the `groups` claim exactly as given (a list, a string, anything). */
  groups?: unknown;
  /** The `sub` claim; default `sub-<name>` (deliberately not the name). */
  sub?: string;
  /** More claims for the ID token (e.g. another claim to map the name from). */
  extraClaims?: Record<string, unknown>;
}

export interface TestIdpClient {
  clientId: string;
  /** Omitted: a public client (token_endpoint_auth_method none). */
  clientSecret?: string;
  redirectUris: string[];
}

export interface TestIdpOptions {
  users?: TestIdpUser[];
  clients?: TestIdpClient[];
}

export interface TestIdp {
  /** `https://127.0.0.1:<port>`, exactly as in discovery and ID tokens. */
  issuer: string;
  /** The CA that issued the IdP's TLS certificate. */
  caPem: string;
  /** Adds or replaces a user (by name). */
  setUser(user: TestIdpUser): void;
  /** How many password logins the form has accepted (to tell a fresh login from single sign-on). */
  readonly formLogins: number;
  close(): Promise<void>;
}

const SCOPE_CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'preferred_username'],
  groups: ['groups'],
};

/** oidc-provider's storage, in memory and per instance (its built-in one warns that it is for development). */
export function memoryAdapter() {
  const records = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  return class MemoryAdapter {
    readonly #model: string;
    constructor(model: string) {
      this.#model = model;
    }
    #key(id: string): string {
      return `${this.#model}:${id}`;
    }
    upsert(id: string, payload: Record<string, unknown>, expiresIn: number): Promise<void> {
      records.set(this.#key(id), { payload, expiresAt: Date.now() + expiresIn * 1000 });
      return Promise.resolve();
    }
    find(id: string): Promise<Record<string, unknown> | undefined> {
      const record = records.get(this.#key(id));
      return Promise.resolve(record === undefined || record.expiresAt < Date.now() ? undefined : record.payload);
    }
    findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
      return Promise.resolve([...records.entries()].find(([k, r]) => k.startsWith(`${this.#model}:`) && r.payload.uid === uid)?.[1].payload);
    }
    findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
      return Promise.resolve([...records.entries()].find(([k, r]) => k.startsWith(`${this.#model}:`) && r.payload.userCode === userCode)?.[1].payload);
    }
    consume(id: string): Promise<void> {
      const record = records.get(this.#key(id));
      if (record !== undefined) record.payload.consumed = Math.floor(Date.now() / 1000);
      return Promise.resolve();
    }
    destroy(id: string): Promise<void> {
      records.delete(this.#key(id));
      return Promise.resolve();
    }
    revokeByGrantId(grantId: string): Promise<void> {
      for (const [k, r] of records) if (r.payload.grantId === grantId) records.delete(k);
      return Promise.resolve();
    }
  };
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

function loginPage(uid: string, error?: string): string {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Test IdP: sign in</title></head>
<body>
<h1>Test IdP</h1>
${error === undefined ? '' : `<p id="error">${escape(error)}</p>`}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>User <input type="text" name="login" autocomplete="username"></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body></html>`;
}

function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 16 * 1024) {
        reject(new Error('form too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

export async function startTestIdp(options: TestIdpOptions = {}): Promise<TestIdp> {
  const ca = await makeTestCa({ commonName: 'Test IdP CA' });
  const cert = await makeServerCert(ca, { ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'] });
  const users = new Map<string, TestIdpUser>();
  for (const user of options.users ?? []) users.set(user.name, user);
  let formLogins = 0;

  const app: { handler?: (req: IncomingMessage, res: ServerResponse) => void } = {};
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    if (app.handler === undefined) send(res, 503, 'starting');
    else app.handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const issuer = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: `idp-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

  const findUserBySub = (sub: string): TestIdpUser | undefined => [...users.values()].find((u) => (u.sub ?? `sub-${u.name}`) === sub);

  const clients: ClientMetadata[] = (options.clients ?? []).map((c) => ({
    client_id: c.clientId,
    ...(c.clientSecret === undefined ? { token_endpoint_auth_method: 'none' } : { client_secret: c.clientSecret, token_endpoint_auth_method: 'client_secret_basic' }),
    redirect_uris: c.redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }));

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: SCOPE_CLAIMS,
    scopes: ['openid', 'email', 'profile', 'groups'],
    // Scope claims go into the ID token too, as IdPs set up for groups do.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    adapter: memoryAdapter(),
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    interactions: { url: (_ctx: KoaContextWithOIDC, interaction) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    findAccount: (_ctx: KoaContextWithOIDC, sub: string): Account | undefined => {
      if (findUserBySub(sub) === undefined) return undefined;
      return {
        accountId: sub,
        // Read at token time, so a change made with setUser shows at the next login.
        claims: () => {
          const user = findUserBySub(sub);
          if (user === undefined) return { sub };
          return {
            sub,
            preferred_username: user.name,
            name: user.name,
            ...(user.email === undefined ? {} : { email: user.email, email_verified: user.emailVerified ?? true }),
            ...(user.groups === undefined ? {} : { groups: user.groups }),
            ...(user.extraClaims ?? {}),
          };
        },
      };
    },
    // Consent is automatic: this is the organisation's own IdP and Causeway its registered client.
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const accountId = ctx.oidc.session?.accountId;
      const client = ctx.oidc.client;
      if (accountId === undefined || client === undefined) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId });
      const scope = ctx.oidc.params?.scope;
      grant.addOIDCScope(typeof scope === 'string' ? scope : 'openid');
      await grant.save();
      return grant;
    },
  });
  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`test IdP server_error: ${err.stack ?? String(err)}\n`);
  });
  const callback = provider.callback();

  app.handler = (req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    const interaction = /^\/interaction\/([A-Za-z0-9_-]{1,64})(\/login)?$/.exec(url.pathname);
    if (interaction === null) {
      void callback(req, res);
      return;
    }
    const uid = interaction[1] ?? '';
    void (async () => {
      try {
        const details = await provider.interactionDetails(req, res);
        if (details.uid !== uid) return send(res, 400, 'this sign-in belongs to another browser');
        if (interaction[2] === undefined) {
          if (req.method !== 'GET') return send(res, 405, 'method not allowed');
          return send(res, 200, loginPage(uid));
        }
        if (req.method !== 'POST') return send(res, 405, 'method not allowed');
        const form = await readForm(req);
        const user = users.get(form.get('login') ?? '');
        if (user === undefined || user.password !== form.get('password')) return send(res, 401, loginPage(uid, 'Wrong user name or password.'));
        formLogins++;
        await provider.interactionFinished(req, res, { login: { accountId: user.sub ?? `sub-${user.name}` } }, { mergeWithLastSubmission: false });
      } catch (err) {
        if (!res.headersSent) send(res, 400, `sign-in failed: ${escape(err instanceof Error ? err.message : String(err))}`);
      }
    })();
  };

  return {
    issuer,
    caPem: ca.certPem,
    setUser(user) {
      users.set(user.name, user);
    },
    get formLogins() {
      return formLogins;
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
