/**
 * The upstream (org IdP) login against the test IdP of test/kit/idp.ts, through a stand-in for
 * Causeway's provider (a plain oidc-provider with the contract's routes and interaction URL, so these
 * tests do not depend on the provider module), driven by a cookie-keeping HTTP client that sends
 * each cookie only where a browser would. The real-browser test is test/e2e/identity-browser.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { exportJWK, generateKeyPair } from 'jose';
import type { FastifyInstance } from 'fastify';
import Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import * as client from 'openid-client';
import { silentLogger } from '../../lib/log.ts';
import { CookieClient } from '../../../test/kit/cookie-client.ts';
import type { ClientResponse } from '../../../test/kit/cookie-client.ts';
import { memoryAdapter, startTestIdp } from '../../../test/kit/idp.ts';
import type { TestIdp } from '../../../test/kit/idp.ts';
import { FailureLimiter } from '../auth.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { createUpstreams, emailFromClaims, groupsFromClaim, UPSTREAM_LOGIN_MODEL } from './upstream.ts';
import type { Upstreams } from './upstream.ts';

const CLI_REDIRECT = 'http://127.0.0.1:9/callback';
const IDP_SECRET = randomBytes(24).toString('base64url');

interface Harness {
  publicUrl: string;
  store: Store;
  idp: TestIdp;
  upstreams: Upstreams;
  app: FastifyInstance;
  provider: Provider;
}

/** Causeway's provider as the contract describes it, minus everything these tests do not touch. */
function standInProvider(publicUrl: string, store: Store, signingKey: Record<string, unknown>): Provider {
  return new Provider(publicUrl, {
    adapter: memoryAdapter(),
    jwks: { keys: [signingKey] },
    clients: [{ client_id: 'causeway-cli', token_endpoint_auth_method: 'none', redirect_uris: [CLI_REDIRECT], grant_types: ['authorization_code'], response_types: ['code'] }],
    routes: { authorization: '/oidc/auth', token: '/oidc/token', jwks: '/oidc/jwks', userinfo: '/oidc/me', end_session: '/oidc/session/end' },
    interactions: { url: (_ctx: KoaContextWithOIDC, interaction) => `/oidc/interaction/${interaction.uid}` },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: { openid: ['sub'], email: ['email'], profile: ['preferred_username'], groups: ['groups'] },
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    findAccount: async (_ctx: KoaContextWithOIDC, sub: string) => {
      const user = await store.getUser(sub);
      if (user === undefined) return undefined;
      return { accountId: sub, claims: () => ({ sub, preferred_username: user.name, email: user.email, groups: user.groups }) };
    },
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const accountId = ctx.oidc.session?.accountId;
      if (accountId === undefined || ctx.oidc.client === undefined) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId });
      grant.addOIDCScope('openid email profile groups');
      await grant.save();
      return grant;
    },
  });
}

void describe('upstream login through the org IdP', () => {
  let h: Harness;
  let app: FastifyInstance;
  let publicUrl: string;

  before(async () => {
    // Fastify takes no routes after listen, and the provider's issuer needs the port: reserve one first.
    const reserved = createServer();
    await new Promise<void>((resolve) => reserved.listen(0, '127.0.0.1', () => resolve()));
    const port = (reserved.address() as AddressInfo).port;
    await new Promise<void>((resolve) => reserved.close(() => resolve()));
    publicUrl = `http://127.0.0.1:${port}`;
    h = await startWithPort(port);
    app = h.app;
  });
  after(async () => {
    await app.close();
    await h.idp.close();
    await h.store.close();
  });

  async function startWithPort(port: number): Promise<Harness> {
    const store = await openStore({ url: ':memory:' });
    const url = `http://127.0.0.1:${port}`;
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const provider = standInProvider(url, store, { ...(await exportJWK(privateKey)), kid: 'stand-in', alg: 'RS256', use: 'sig' });
    const callback = provider.callback();
    const fastify = Fastify({
      serverFactory: (handler) =>
        createServer((req, res) => {
          const path = (req.url ?? '/').split('?')[0] ?? '/';
          if (path.startsWith('/.well-known/') || /^\/oidc\/(auth|token|jwks|me|session)(\/|$)/.test(path)) void callback(req, res);
          else handler(req, res);
        }),
    });
    fastify.get('/oidc/interaction/:uid', (request, reply) => reply.type('text/html').send(`<p>login page for ${(request.params as { uid: string }).uid}</p>`));
    const idp = await startTestIdp({
      users: [{ name: 'alice', password: 'alice-pw', email: 'alice@corp.example', groups: ['eng', 'ops'] }],
      clients: [{ clientId: 'causeway', clientSecret: IDP_SECRET, redirectUris: [`${url}/oidc/upstream/callback`] }],
    });
    const upstreams = createUpstreams({
      provider,
      store,
      clock: { now: () => Date.now() },
      logger: silentLogger(),
      publicUrl: url,
      resolveSecret: (ref) => (ref.env === 'CORP_IDP_SECRET' ? Promise.resolve(IDP_SECRET) : Promise.reject(new Error(`no secret ${JSON.stringify(ref)}`))),
    });
    await upstreams.routes(fastify);
    await fastify.listen({ port, host: '127.0.0.1' });
    await putIdp(store, idp, {});
    return { publicUrl: url, store, idp, upstreams, app: fastify, provider };
  }

  async function putIdp(store: Store, idp: TestIdp, overrides: Record<string, unknown>, name = 'corp'): Promise<void> {
    await store.putObject(
      { kind: 'IdentityProvider', name, spec: { displayName: 'Corp SSO', issuer: idp.issuer, clientId: 'causeway', clientSecret: { env: 'CORP_IDP_SECRET' }, caPem: idp.caPem, ...overrides } },
      { actor: 'test' },
    );
  }

  interface Started {
    browser: CookieClient;
    uid: string;
    verifier: string;
  }

  /** The CLI's authorization request at our provider, up to our login page. */
  async function beginAtCauseway(browser = new CookieClient({ caPems: [h.idp.caPem] })): Promise<Started> {
    const verifier = client.randomPKCECodeVerifier();
    const auth = new URL(`${publicUrl}/oidc/auth`);
    auth.search = new URLSearchParams({
      client_id: 'causeway-cli',
      redirect_uri: CLI_REDIRECT,
      response_type: 'code',
      scope: 'openid email profile groups',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: client.randomState(),
    }).toString();
    const page = await browser.follow(auth.href);
    const uid = /\/oidc\/interaction\/([A-Za-z0-9_-]+)$/.exec(new URL(page.url).pathname)?.[1];
    assert.ok(uid !== undefined, `expected our login page, got ${page.url} (HTTP ${page.status})`);
    return { browser, uid, verifier };
  }

  /** From the login page's IdP button to the IdP's form, the form, and back through Causeway. */
  async function loginAtIdp(started: Started, user: { name: string; password: string }, idpName = 'corp'): Promise<ClientResponse> {
    const form = await started.browser.follow(`${publicUrl}/oidc/upstream/${idpName}/start?uid=${started.uid}`);
    assert.equal(form.status, 200, `expected the IdP's form: ${form.url} ${form.body.slice(0, 300)}`);
    assert.ok(form.url.startsWith(h.idp.issuer), form.url);
    return started.browser.submitForm(form, { login: user.name, password: user.password }, { stopAt: (u) => u.href.startsWith(CLI_REDIRECT) });
  }

  async function idTokenClaims(end: ClientResponse, verifier: string): Promise<Record<string, unknown>> {
    assert.ok(end.location?.startsWith(CLI_REDIRECT), `expected the CLI's redirect, got HTTP ${end.status} at ${end.url}: ${end.body.slice(0, 400)}`);
    const config = await client.discovery(new URL(publicUrl), 'causeway-cli', undefined, client.None(), { execute: [client.allowInsecureRequests] });
    const tokens = await client.authorizationCodeGrant(config, new URL(end.location ?? ''), { pkceCodeVerifier: verifier, expectedState: client.skipStateCheck });
    const claims = tokens.claims();
    assert.ok(claims !== undefined);
    return claims;
  }

  void test('a first login creates the user with source idp:corp, the IdP\'s email and groups, and our ID token carries the groups', async () => {
    const started = await beginAtCauseway();
    const end = await loginAtIdp(started, { name: 'alice', password: 'alice-pw' });
    const claims = await idTokenClaims(end, started.verifier);
    const user = await h.store.getUserByName('alice');
    assert.ok(user !== undefined);
    assert.equal(user.source, 'idp:corp');
    assert.equal(user.email, 'alice@corp.example');
    assert.deepEqual(user.groups, ['eng', 'ops']);
    assert.equal(claims.sub, user.id);
    assert.deepEqual(claims.groups, ['eng', 'ops']);
    const audit = await h.store.queryAuditEvents({ action: 'login' });
    assert.ok(audit.events.some((e) => e.actor === 'user:alice' && e.name === 'alice'), 'a login audit event');
  });

  void test('groups changed at the IdP replace the user\'s groups at the next login; a single string is one group, anything else none', async () => {
    h.idp.setUser({ name: 'carol', password: 'carol-pw', email: 'carol@corp.example', groups: ['eng'] });
    let started = await beginAtCauseway();
    await idTokenClaims(await loginAtIdp(started, { name: 'carol', password: 'carol-pw' }), started.verifier);
    assert.deepEqual((await h.store.getUserByName('carol'))?.groups, ['eng']);

    h.idp.setUser({ name: 'carol', password: 'carol-pw', email: 'carol@corp.example', groups: 'platform' });
    started = await beginAtCauseway();
    const claims = await idTokenClaims(await loginAtIdp(started, { name: 'carol', password: 'carol-pw' }), started.verifier);
    assert.deepEqual((await h.store.getUserByName('carol'))?.groups, ['platform']);
    assert.deepEqual(claims.groups, ['platform']);

    h.idp.setUser({ name: 'carol', password: 'carol-pw', email: 'carol@corp.example', groups: { admin: true } });
    started = await beginAtCauseway();
    await idTokenClaims(await loginAtIdp(started, { name: 'carol', password: 'carol-pw' }), started.verifier);
    assert.deepEqual((await h.store.getUserByName('carol'))?.groups, []);
  });

  void test('a local user with the same name is not taken over: the login is refused with a page that says why, and the user is untouched', async () => {
    const local = await h.store.createUser({ name: 'dave', email: 'dave@local', groups: ['local-only'] }, { actor: 'test' });
    h.idp.setUser({ name: 'dave', password: 'dave-pw', email: 'dave@corp.example', groups: ['admins'] });
    const started = await beginAtCauseway();
    const end = await loginAtIdp(started, { name: 'dave', password: 'dave-pw' });
    assert.equal(end.status, 409);
    assert.match(end.body, /already exists in Causeway&#39;s built-in directory/);
    assert.match(end.body, /delete or rename/);
    assert.equal(end.location, undefined);
    const after = await h.store.getUserByName('dave');
    assert.deepEqual(after, local);
    const failed = await h.store.queryAuditEvents({ action: 'login-failed' });
    assert.ok(failed.events.some((e) => e.name === 'dave'));
  });

  void test('a user of another IdP with the same name is refused too', async () => {
    await h.store.createUser({ name: 'erin', groups: [], source: 'idp:other' }, { actor: 'test' });
    h.idp.setUser({ name: 'erin', password: 'erin-pw', groups: ['eng'] });
    const started = await beginAtCauseway();
    const end = await loginAtIdp(started, { name: 'erin', password: 'erin-pw' });
    assert.equal(end.status, 409);
    assert.match(end.body, /another identity provider \(other\)/);
    assert.deepEqual((await h.store.getUserByName('erin'))?.groups, []);
  });

  void test('a disabled IdP user is refused with a page saying the account is disabled, and keeps their groups', async () => {
    h.idp.setUser({ name: 'frank', password: 'frank-pw', groups: ['eng'] });
    let started = await beginAtCauseway();
    await idTokenClaims(await loginAtIdp(started, { name: 'frank', password: 'frank-pw' }), started.verifier);
    const frank = await h.store.getUserByName('frank');
    assert.ok(frank !== undefined);
    await h.store.updateUser(frank.id, { disabled: true }, { actor: 'test' });
    h.idp.setUser({ name: 'frank', password: 'frank-pw', groups: ['admins'] });
    started = await beginAtCauseway();
    const end = await loginAtIdp(started, { name: 'frank', password: 'frank-pw' });
    assert.equal(end.status, 403);
    assert.match(end.body, /Account disabled/);
    assert.match(end.body, /is disabled/);
    assert.deepEqual((await h.store.getUserByName('frank'))?.groups, ['eng']);
  });

  void test('OP-04 the callback is single use: replaying it answers that the login expired, and an unknown state is refused', async () => {
    h.idp.setUser({ name: 'gina', password: 'gina-pw', groups: [] });
    const started = await beginAtCauseway();
    const form = await started.browser.follow(`${publicUrl}/oidc/upstream/corp/start?uid=${started.uid}`);
    const back = await started.browser.submitForm(form, { login: 'gina', password: 'gina-pw' }, { stopAt: (u) => u.pathname === '/oidc/upstream/callback' });
    assert.ok(back.location !== undefined && new URL(back.location).pathname === '/oidc/upstream/callback');
    const first = await started.browser.request(back.location);
    assert.equal(first.status, 303);
    const replay = await started.browser.request(back.location);
    assert.equal(replay.status, 400);
    assert.match(replay.body, /expired or was already used/);
    const forged = await started.browser.request(`${publicUrl}/oidc/upstream/callback?code=x&state=${client.randomState()}`);
    assert.equal(forged.status, 400);
  });

  void test('a login started in one browser cannot be finished in another (the interaction cookie is checked before the provider is told)', async () => {
    h.idp.setUser({ name: 'victim', password: 'victim-pw', groups: ['admins'] });
    const attacker = await beginAtCauseway();
    // The victim follows the attacker's start link and logs in at the IdP.
    const victim = new CookieClient({ caPems: [h.idp.caPem] });
    const form = await victim.follow(`${publicUrl}/oidc/upstream/corp/start?uid=${attacker.uid}`);
    const end = await victim.submitForm(form, { login: 'victim', password: 'victim-pw' }, { stopAt: (u) => u.href.startsWith(CLI_REDIRECT) });
    assert.equal(end.status, 400);
    assert.match(end.body, /started in another browser/);
    // The attacker's browser resumes the interaction and gets no code: it is sent back to log in.
    const resumed = await attacker.browser.follow(`${publicUrl}/oidc/auth/${attacker.uid}`, { stopAt: (u) => u.href.startsWith(CLI_REDIRECT) });
    assert.ok(resumed.location === undefined || !resumed.location.startsWith(CLI_REDIRECT), `no code for the attacker: ${resumed.location ?? resumed.url}`);
  });

  void test('CP-07 the start link follows no redirect parameter, and unknown IdPs, malformed or unknown interactions are refused', async () => {
    const started = await beginAtCauseway();
    for (const extra of ['next=//evil.example', 'redirect=https://evil.example', 'redirect_uri=https://evil.example/cb', 'returnTo=/\\evil.example']) {
      const answer = await started.browser.request(`${publicUrl}/oidc/upstream/corp/start?uid=${started.uid}&${extra}`);
      assert.equal(answer.status, 302, extra);
      const location = new URL(answer.location ?? '');
      assert.equal(location.origin, h.idp.issuer, extra);
      assert.equal(location.searchParams.get('redirect_uri'), `${publicUrl}/oidc/upstream/callback`, extra);
      assert.doesNotMatch(answer.location ?? '', /evil/, extra);
    }
    assert.equal((await started.browser.request(`${publicUrl}/oidc/upstream/nope/start?uid=${started.uid}`)).status, 404);
    assert.equal((await started.browser.request(`${publicUrl}/oidc/upstream/corp/start?uid=../../x`)).status, 400);
    assert.equal((await started.browser.request(`${publicUrl}/oidc/upstream/corp/start?uid=${'a'.repeat(20)}`)).status, 400);
    assert.equal((await started.browser.request(`${publicUrl}/oidc/upstream/corp/start`)).status, 400);
    const finish = await started.browser.request(`${publicUrl}/oidc/interaction/${started.uid}/upstream?done=${client.randomState()}&next=//evil.example`);
    assert.equal(finish.status, 400);
    assert.equal(finish.location, undefined);
  });

  void test('the start link stores PKCE, state and nonce for 10 minutes and sends the IdP an S256 challenge', async () => {
    const started = await beginAtCauseway();
    const answer = await started.browser.request(`${publicUrl}/oidc/upstream/corp/start?uid=${started.uid}`);
    const location = new URL(answer.location ?? '');
    assert.equal(location.searchParams.get('code_challenge_method'), 'S256');
    assert.ok((location.searchParams.get('nonce') ?? '').length >= 32);
    assert.equal(location.searchParams.get('scope'), 'openid email profile groups');
    const state = location.searchParams.get('state') ?? '';
    assert.ok(state.length >= 32);
    // The record is keyed by a hash of the state, not the state itself.
    assert.equal(await h.store.oidcFind(UPSTREAM_LOGIN_MODEL, state), undefined);
  });

  void test('list() gives each IdP\'s display name (or its name), and a spec change is discovered again: a wrong issuer fails, the right one works', async () => {
    await putIdp(h.store, h.idp, { displayName: undefined }, 'plain');
    const list = await h.upstreams.list();
    assert.deepEqual(list, [
      { name: 'corp', displayName: 'Corp SSO' },
      { name: 'plain', displayName: 'plain' },
    ]);

    await putIdp(h.store, h.idp, { issuer: `${h.idp.issuer}/` }, 'plain');
    let started = await beginAtCauseway();
    const wrong = await started.browser.request(`${publicUrl}/oidc/upstream/plain/start?uid=${started.uid}`);
    assert.equal(wrong.status, 502);
    assert.match(wrong.body, /could not reach the identity provider/);

    await putIdp(h.store, h.idp, {}, 'plain');
    started = await beginAtCauseway();
    const right = await started.browser.request(`${publicUrl}/oidc/upstream/plain/start?uid=${started.uid}`);
    assert.equal(right.status, 302);
    await h.store.deleteObject('IdentityProvider', 'plain', { actor: 'test' });
  });

  void test('without its caPem the IdP\'s private CA is not trusted, and a wrong client secret fails the login', async () => {
    await putIdp(h.store, h.idp, { caPem: undefined }, 'untrusted');
    let started = await beginAtCauseway();
    const untrusted = await started.browser.request(`${publicUrl}/oidc/upstream/untrusted/start?uid=${started.uid}`);
    assert.equal(untrusted.status, 502);
    await h.store.deleteObject('IdentityProvider', 'untrusted', { actor: 'test' });

    await putIdp(h.store, h.idp, { clientSecret: { env: 'MISSING' } }, 'nosecret');
    started = await beginAtCauseway();
    const missing = await started.browser.request(`${publicUrl}/oidc/upstream/nosecret/start?uid=${started.uid}`);
    assert.equal(missing.status, 502);
    assert.match(missing.body, /cannot read the client secret/);
    assert.doesNotMatch(missing.body, new RegExp(IDP_SECRET));
    await h.store.deleteObject('IdentityProvider', 'nosecret', { actor: 'test' });
  });
});

void describe('claim mapping', () => {
  void test('CP-12 login starts are limited per source address: past the burst the start link answers 429 with Retry-After before doing any work', async () => {
    const app = Fastify();
    const store = await openStore({ url: ':memory:' });
    const upstreams = createUpstreams({
      provider: {} as Provider,
      store,
      clock: { now: () => Date.now() },
      logger: silentLogger(),
      publicUrl: 'https://cp.example.com',
      resolveSecret: () => Promise.reject(new Error('no secrets here')),
      startLimiter: new FailureLimiter({ burst: 2, refillPerSecond: 0.001 }),
    });
    try {
      await upstreams.routes(app);
      const start = () => app.inject({ method: 'GET', url: '/oidc/upstream/corp/start?uid=../x' });
      assert.equal((await start()).statusCode, 400);
      assert.equal((await start()).statusCode, 400);
      const limited = await start();
      assert.equal(limited.statusCode, 429);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      assert.match(limited.body, /Too many logins/);
      assert.equal((await store.listObjects()).length, 0);
    } finally {
      await app.close();
      await store.close();
    }
  });

  void test('groups: a list of strings, or one string; other values and non-string items are dropped; at most 256', () => {
    assert.deepEqual(groupsFromClaim(['a', 'b', 'a']).groups, ['a', 'b']);
    assert.deepEqual(groupsFromClaim('solo').groups, ['solo']);
    assert.deepEqual(groupsFromClaim(undefined).groups, []);
    assert.deepEqual(groupsFromClaim(42).groups, []);
    assert.deepEqual(groupsFromClaim({ a: 1 }).groups, []);
    assert.deepEqual(groupsFromClaim(['ok', 1, null, '', ' ', 'bad\nline', 'x'.repeat(300), { a: 1 }]), { groups: ['ok'], dropped: 7 });
    const many = groupsFromClaim(Array.from({ length: 300 }, (_, i) => `g${i}`));
    assert.equal(many.groups.length, 256);
    assert.equal(many.dropped, 44);
  });

  void test('email: kept when it looks like one and is not marked unverified', () => {
    assert.equal(emailFromClaims('a@b.example', true), 'a@b.example');
    assert.equal(emailFromClaims('a@b.example', undefined), 'a@b.example');
    assert.equal(emailFromClaims('a@b.example', false), null);
    assert.equal(emailFromClaims('not an email', true), null);
    assert.equal(emailFromClaims(['a@b.example'], true), null);
  });
});
