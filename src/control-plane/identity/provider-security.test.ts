/**
 * The provider's refusals and lifecycles: OP-02 redirect URIs, OP-03 PKCE and code reuse, refresh token
 * rotation and reuse detection, revocation, the password grant's failures, token exchange refusals, ES256,
 * OP-08 key rotation through the JWKS, CP-11 (no token values in logs or at rest), CP-12 rate limits.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { CookieClient } from '../../../test/kit/cookie-client.ts';
import { createTokenVerifier } from '../../lib/oidc/index.ts';
import { storageId } from './adapter.ts';
import { startIdentityHarness, submitLogin } from './identity.testing.ts';
import type { IdentityHarness } from './identity.testing.ts';
import { redirectUriAllowed } from './provider.ts';

const SCOPE = 'openid email profile groups offline_access';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const VERIFIER = 'a-pkce-code-verifier-that-is-long-enough-0123456789';
const CHALLENGE = createHash('sha256').update(VERIFIER).digest('base64url');

type Answer = { status: number; body: Record<string, unknown>; headers: Headers };

async function post(h: IdentityHarness, path: string, form: Record<string, string>): Promise<Answer> {
  const response = await h.fetch(`${h.publicUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: new URLSearchParams({ client_id: 'causeway-cli', ...form }).toString() });
  const text = await response.text();
  return { status: response.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>), headers: response.headers };
}

const token = (h: IdentityHarness, form: Record<string, string>): Promise<Answer> => post(h, '/oidc/token', form);
const passwordLogin = (h: IdentityHarness, name: string, password: string, extra: Record<string, string> = {}): Promise<Answer> => token(h, { grant_type: 'password', username: name, password, scope: SCOPE, ...extra });

async function userinfo(h: IdentityHarness, accessToken: string): Promise<{ status: number; body: string }> {
  const response = await h.fetch(`${h.publicUrl}/oidc/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  return { status: response.status, body: await response.text() };
}

function authUrl(h: IdentityHarness, params: Record<string, string>): string {
  const query = new URLSearchParams({ client_id: 'causeway-cli', response_type: 'code', scope: SCOPE, prompt: 'consent', state: 'state-123456', redirect_uri: 'http://127.0.0.1:5555/callback', code_challenge: CHALLENGE, code_challenge_method: 'S256', ...params });
  for (const [key, value] of Object.entries(params)) if (value === '') query.delete(key);
  return `${h.publicUrl}/oidc/auth?${query.toString()}`;
}

async function codeFor(h: IdentityHarness): Promise<string> {
  const browser = new CookieClient({ caPems: [h.caPem] });
  const stop = (u: URL): boolean => u.port === '5555';
  const page = await browser.follow(authUrl(h, {}), { stopAt: stop });
  const last = await submitLogin(h, browser, page, { name: 'alice', password: 'alice-password' }, stop);
  const code = new URL(last.location ?? 'http://x/').searchParams.get('code');
  assert.ok(code !== null, `no code in ${last.location ?? last.body.slice(0, 200)}`);
  return code;
}

void describe('provider refusals', () => {
  let h: IdentityHarness;
  before(async () => {
    h = await startIdentityHarness({ tokenRateLimit: { burst: 10_000 } });
  });
  after(() => h.close());

  void it('OP-02 refuses every redirect URI but the registered loopback one with any port', async () => {
    const refused = [
      'http://127.0.0.1:5555/call',
      'http://127.0.0.1:5555/callback/extra',
      'http://127.0.0.1:5555/Callback',
      'HTTP://127.0.0.1:5555/callback',
      'http://127.0.0.1:5555/callback/',
      'http://127.0.0.1:5555/callback#frag',
      'http://127.0.0.1:5555/callback?x=1',
      'http://evil@127.0.0.1:5555/callback',
      'http://127.0.0.1:5555@evil.example/callback',
      'http://127.0.0.1:5555/x/../callback',
      'http://127.0.0.1:5555/callback/..',
      'http://localhost:5555/callback',
      'http://[::1]:5555/callback',
      'https://127.0.0.1:5555/callback',
      'http://127.0.0.2:5555/callback',
      'http://127.0.0.1.evil.example:5555/callback',
      'http://127.0.0.1:0/callback',
      'http://127.0.0.1:65536/callback',
      'http://127.0.0.1:05555/callback',
      'http://127.0.0.1:/callback',
    ];
    for (const uri of refused) {
      const answer = await new CookieClient({ caPems: [h.caPem] }).request(authUrl(h, { redirect_uri: uri }));
      assert.equal(answer.status, 400, `${uri} was not refused`);
      assert.equal(answer.location, undefined, `${uri} was redirected to`);
      assert.match(answer.body, /redirect/i);
    }
    for (const uri of ['http://127.0.0.1:5555/callback', 'http://127.0.0.1:65535/callback', 'http://127.0.0.1/callback']) {
      const answer = await new CookieClient({ caPems: [h.caPem] }).request(authUrl(h, { redirect_uri: uri }));
      assert.equal(answer.status, 303, `${uri} was refused`);
      assert.match(answer.location ?? '', /\/oidc\/interaction\//);
    }
  });

  void it('OP-02 a web client gets no port flexibility, not even on loopback', () => {
    assert.equal(redirectUriAllowed(['https://app.example.com/cb'], 'web', 'https://app.example.com/cb'), true);
    assert.equal(redirectUriAllowed(['https://app.example.com/cb'], 'web', 'https://app.example.com:8443/cb'), false);
    assert.equal(redirectUriAllowed(['http://127.0.0.1/callback'], 'web', 'http://127.0.0.1:5555/callback'), false);
    assert.equal(redirectUriAllowed(['http://127.0.0.1/callback'], 'native', 'http://127.0.0.1:5555/callback'), true);
  });

  void it('OP-03 an authorization request without PKCE, or with plain, is refused', async () => {
    for (const params of [{ code_challenge: '', code_challenge_method: '' }, { code_challenge: VERIFIER, code_challenge_method: 'plain' }]) {
      const answer = await new CookieClient({ caPems: [h.caPem] }).request(authUrl(h, params));
      assert.equal(answer.status, 303);
      const location = new URL(answer.location ?? 'http://x/');
      assert.equal(location.port, '5555');
      assert.equal(location.searchParams.get('error'), 'invalid_request');
      assert.equal(location.searchParams.get('code'), null);
    }
  });

  void it('OP-03 a code needs its verifier, and a reused code revokes the tokens it issued', async () => {
    const code = await codeFor(h);
    const wrong = await token(h, { grant_type: 'authorization_code', code, redirect_uri: 'http://127.0.0.1:5555/callback', code_verifier: `${VERIFIER}x` });
    assert.equal(wrong.body.error, 'invalid_grant');

    const code2 = await codeFor(h);
    const first = await token(h, { grant_type: 'authorization_code', code: code2, redirect_uri: 'http://127.0.0.1:5555/callback', code_verifier: VERIFIER });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal((await userinfo(h, String(first.body.access_token))).status, 200);
    const reuse = await token(h, { grant_type: 'authorization_code', code: code2, redirect_uri: 'http://127.0.0.1:5555/callback', code_verifier: VERIFIER });
    assert.equal(reuse.body.error, 'invalid_grant');
    assert.equal((await userinfo(h, String(first.body.access_token))).status, 401);
    assert.equal((await token(h, { grant_type: 'refresh_token', refresh_token: String(first.body.refresh_token) })).body.error, 'invalid_grant');
  });

  void it('refresh tokens rotate, and reusing a consumed one revokes the family: the newest stops working too', async () => {
    const login = await passwordLogin(h, 'alice', 'alice-password');
    const rt1 = String(login.body.refresh_token);
    const second = await token(h, { grant_type: 'refresh_token', refresh_token: rt1 });
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const rt2 = String(second.body.refresh_token);
    assert.notEqual(rt2, rt1);
    assert.equal(decodeJwt(String(second.body.id_token)).sub, h.users.alice.id);
    const reuse = await token(h, { grant_type: 'refresh_token', refresh_token: rt1 });
    assert.equal(reuse.body.error, 'invalid_grant');
    assert.equal((await token(h, { grant_type: 'refresh_token', refresh_token: rt2 })).body.error, 'invalid_grant');
    assert.equal((await userinfo(h, String(second.body.access_token))).status, 401);
    assert.ok((await h.store.queryAuditEvents({ action: 'grant-revoked' })).events.some((e) => e.actor === 'user:alice'));
  });

  void it('revoking the refresh token (logout) ends the grant: refresh and the access token stop working', async () => {
    const login = await passwordLogin(h, 'bob', 'bob-password');
    const revoked = await post(h, '/oidc/token/revocation', { token: String(login.body.refresh_token), token_type_hint: 'refresh_token' });
    assert.equal(revoked.status, 200);
    assert.equal((await token(h, { grant_type: 'refresh_token', refresh_token: String(login.body.refresh_token) })).body.error, 'invalid_grant');
    assert.equal((await userinfo(h, String(login.body.access_token))).status, 401);
    const audit = (await h.store.queryAuditEvents({ action: 'logout' })).events;
    assert.ok(audit.some((e) => e.actor === 'user:bob' && e.name === 'bob'));
  });

  void it('a disabled user can no longer refresh, use userinfo or exchange tokens', async () => {
    const login = await passwordLogin(h, 'dave', 'dave-password');
    await h.store.updateUser(h.users.dave.id, { disabled: true }, { actor: 'system' });
    try {
      assert.equal((await token(h, { grant_type: 'refresh_token', refresh_token: String(login.body.refresh_token) })).body.error, 'invalid_grant');
      const exchanged = await token(h, { grant_type: TOKEN_EXCHANGE, subject_token: String(login.body.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod' });
      assert.equal(exchanged.status, 400);
      assert.equal(exchanged.body.error, 'invalid_grant');
      assert.notEqual((await userinfo(h, String(login.body.access_token))).status, 200);
    } finally {
      await h.store.updateUser(h.users.dave.id, { disabled: false }, { actor: 'system' });
    }
  });

  void it('the password grant maps the directory\'s failures to the contract\'s errors', async () => {
    const wrong = await passwordLogin(h, 'alice', 'nope');
    assert.deepEqual([wrong.status, wrong.body.error, wrong.body.error_description], [400, 'invalid_grant', 'invalid user name or password']);
    const unknown = await passwordLogin(h, 'nobody', 'nope');
    assert.deepEqual(unknown.body, wrong.body);
    const totp = await passwordLogin(h, 'carol', 'carol-password');
    assert.equal(totp.body.error, 'invalid_grant');
    assert.match(String(totp.body.error_description), /totp_required/);
    assert.match(String(totp.body.error_description), /a TOTP code is required/);
    assert.equal((await passwordLogin(h, 'carol', 'carol-password', { totp: '123456' })).status, 200);
    const locked = await passwordLogin(h, 'locked', 'locked-password');
    assert.deepEqual([locked.body.error, locked.body.error_description], ['invalid_grant', 'account locked; try again in 15 minutes']);
    h.directory.limitedSources.add('127.0.0.1').add('::ffff:127.0.0.1');
    try {
      const limited = await passwordLogin(h, 'alice', 'alice-password');
      assert.equal(limited.status, 429);
      assert.equal(limited.body.error, 'rate_limited');
      assert.equal(limited.headers.get('retry-after'), '30');
    } finally {
      h.directory.limitedSources.clear();
    }
    const scoped = await passwordLogin(h, 'alice', 'alice-password', { scope: 'openid admin' });
    assert.equal(scoped.body.error, 'invalid_scope');
  });

  void it('token exchange refuses an unknown audience, a revoked or expired subject token, and other token types', async () => {
    const login = await passwordLogin(h, 'alice', 'alice-password');
    const exchange = (extra: Record<string, string>): Promise<Answer> => token(h, { grant_type: TOKEN_EXCHANGE, subject_token: String(login.body.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod', ...extra });
    assert.equal((await exchange({})).status, 200);
    assert.equal((await exchange({ audience: 'kubernetes:staging' })).body.error, 'invalid_target');
    assert.equal((await exchange({ audience: 'causeway-cli' })).body.error, 'invalid_target');
    assert.equal((await exchange({ subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' })).body.error, 'invalid_request');
    assert.equal((await exchange({ requested_token_type: ACCESS_TOKEN_TYPE })).body.error, 'invalid_request');
    assert.equal((await exchange({ subject_token: 'x'.repeat(43) })).body.error, 'invalid_grant');
    assert.equal((await exchange({ subject_token: String(login.body.refresh_token) })).body.error, 'invalid_grant');

    // An access token whose time is up.
    const provider = h.identity.provider;
    const cli = await provider.Client.find('causeway-cli');
    assert.ok(cli !== undefined);
    const expired = new provider.AccessToken({ accountId: h.users.alice.id, client: cli, grantId: 'grant-of-the-past', gty: 'password', scope: 'openid' });
    expired.iat = Math.floor(Date.now() / 1000) - 7200;
    expired.exp = Math.floor(Date.now() / 1000) - 3600;
    const expiredValue = await expired.save();
    assert.equal((await exchange({ subject_token: expiredValue })).body.error, 'invalid_grant');

    // A Service of type kubernetes added later is an audience at once.
    await h.store.putObject({ kind: 'Service', name: 'staging-k8s', spec: { type: 'kubernetes', cluster: 'edge', accessTier: '*', domain: 'staging.k8s.example.com', port: 443, kubernetes: { clusterName: 'staging', caPublicKey: 'x' } } }, { actor: 'system' });
    const staging = await exchange({ audience: 'kubernetes:staging' });
    assert.equal(staging.status, 200, JSON.stringify(staging.body));
    assert.equal(decodeJwt(String(staging.body.access_token)).aud, 'kubernetes:staging');
    // OP-05: a token for one cluster is refused by another cluster's verifier.
    const prodVerifier = createTokenVerifier({ issuer: h.publicUrl, audience: 'kubernetes:prod', caPem: h.caPem });
    await assert.rejects(prodVerifier.verify(String(staging.body.access_token)));
  });

  void it('CP-11 no token value appears in the logs, and the database keeps records under hashes without the token values', async () => {
    const login = await passwordLogin(h, 'bob', 'bob-password');
    const accessToken = String(login.body.access_token);
    const refreshToken = String(login.body.refresh_token);
    const exchanged = await token(h, { grant_type: TOKEN_EXCHANGE, subject_token: accessToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod' });
    const code = await codeFor(h);
    const byCode = await token(h, { grant_type: 'authorization_code', code, redirect_uri: 'http://127.0.0.1:5555/callback', code_verifier: VERIFIER });
    assert.equal(byCode.status, 200);
    // RP-initiated logout takes the ID token in the query: the request log line must not carry it.
    const logout = await new CookieClient({ caPems: [h.caPem] }).request(`${h.publicUrl}/oidc/session/end?id_token_hint=${String(login.body.id_token)}&client_id=causeway-cli`);
    assert.equal(logout.status, 200);
    assert.match(String(logout.headers['content-security-policy']), /default-src 'none'/);
    const info = await userinfo(h, accessToken);
    assert.ok(!info.body.includes(accessToken));
    const logs = h.logs.join('\n');
    assert.ok(logs.includes('/oidc/token'), 'the requests were logged');
    for (const secret of [accessToken, refreshToken, String(login.body.id_token), String(exchanged.body.access_token), code, String(byCode.body.access_token), String(byCode.body.refresh_token), 'bob-password']) assert.ok(!logs.includes(secret), 'a token value is in the logs');

    assert.equal(await h.store.oidcFind('AccessToken', accessToken), undefined);
    const stored = await h.store.oidcFind('AccessToken', storageId(accessToken));
    assert.ok(stored !== undefined);
    assert.ok(!JSON.stringify(stored).includes(accessToken));
    const storedRefresh = await h.store.oidcFind('RefreshToken', storageId(refreshToken));
    assert.ok(storedRefresh !== undefined && !JSON.stringify(storedRefresh).includes(refreshToken));
  });
});

void describe('provider rate limits, algorithms and key rotation', () => {
  void it('CP-12 failed token requests from one source are limited; device-flow polling is not counted', async (t) => {
    const h = await startIdentityHarness({ tokenRateLimit: { burst: 3, refillPerSecond: 0.001 } });
    t.after(() => h.close());
    const started = await post(h, '/oidc/device/auth', { scope: SCOPE });
    for (let i = 0; i < 5; i++) {
      const polled = await token(h, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: String(started.body.device_code) });
      assert.ok(['authorization_pending', 'slow_down'].includes(String(polled.body.error)), JSON.stringify(polled.body));
    }
    for (let i = 0; i < 3; i++) assert.equal((await token(h, { grant_type: 'refresh_token', refresh_token: `guess-${i}-${'x'.repeat(40)}` })).status, 400);
    const limited = await token(h, { grant_type: 'password', username: 'alice', password: 'alice-password', scope: 'openid' });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error, 'rate_limited');
    assert.ok(Number(limited.headers.get('retry-after')) > 0);
    assert.equal(limited.headers.get('x-content-type-options'), 'nosniff');
    const discovery = await h.fetch(`${h.publicUrl}/.well-known/openid-configuration`);
    assert.equal(discovery.status, 200, 'other endpoints are not limited');
  });

  void it('with idTokenSigningAlg ES256, ID tokens and kube tokens are ES256 and verify', async (t) => {
    const h = await startIdentityHarness({ idTokenSigningAlg: 'ES256', kubeTokenTtlSeconds: 120 });
    t.after(() => h.close());
    const login = await passwordLogin(h, 'alice', 'alice-password');
    assert.equal(decodeProtectedHeader(String(login.body.id_token)).alg, 'ES256');
    const kube = await token(h, { grant_type: TOKEN_EXCHANGE, subject_token: String(login.body.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod' });
    assert.equal(kube.body.expires_in, 120);
    assert.equal(decodeProtectedHeader(String(kube.body.access_token)).alg, 'ES256');
    const verified = await createTokenVerifier({ issuer: h.publicUrl, audience: 'kubernetes:prod', caPem: h.caPem, algorithms: ['ES256'] }).verify(String(kube.body.access_token));
    assert.equal(verified.subject, h.users.alice.id);
  });

  void it('OP-08 a rotated key is published ahead, signs after the switch, and the retired key disappears from the JWKS after the overlap', async (t) => {
    let now = Date.now();
    const clock = { now: () => now };
    const HOUR = 3_600_000;
    const DAY = 24 * HOUR;
    const h = await startIdentityHarness({ clock, signingKeys: { publishAheadMs: HOUR, retireAfterMs: DAY, rotateEveryMs: 10 * DAY, checkEveryMs: 3_600_000 } });
    t.after(() => h.close());
    const kids = async (): Promise<string[]> => ((await (await h.fetch(`${h.publicUrl}/oidc/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
    const kubeToken = async (): Promise<string> => {
      const login = await passwordLogin(h, 'alice', 'alice-password');
      return String((await token(h, { grant_type: TOKEN_EXCHANGE, subject_token: String(login.body.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod' })).body.access_token);
    };
    const oldToken = await kubeToken();
    const oldKid = String(decodeProtectedHeader(oldToken).kid);
    assert.equal((await kids()).length, 2);

    now += 10 * DAY - HOUR;
    assert.equal(await h.identity.signingKeys.check(), true);
    assert.equal((await kids()).length, 4, 'the next keys are published ahead');
    assert.equal(decodeProtectedHeader(await kubeToken()).kid, oldKid, 'the old key still signs');

    now += HOUR;
    assert.equal(await h.identity.signingKeys.check(), true);
    const newToken = await kubeToken();
    const newKid = String(decodeProtectedHeader(newToken).kid);
    assert.notEqual(newKid, oldKid);
    const login = await passwordLogin(h, 'alice', 'alice-password');
    assert.equal(decodeProtectedHeader(String(login.body.id_token)).kid, newKid, 'the provider signs with the new key too');
    const during = createTokenVerifier({ issuer: h.publicUrl, audience: 'kubernetes:prod', caPem: h.caPem });
    assert.equal((await during.verify(oldToken)).subject, h.users.alice.id, 'a token of the retired key verifies during the overlap');
    assert.equal((await during.verify(newToken)).subject, h.users.alice.id);

    now += DAY;
    assert.equal(await h.identity.signingKeys.check(), true);
    const after = await kids();
    assert.equal(after.length, 2);
    assert.ok(!after.includes(oldKid));
    const fresh = createTokenVerifier({ issuer: h.publicUrl, audience: 'kubernetes:prod', caPem: h.caPem });
    await assert.rejects(fresh.verify(oldToken), 'the retired key no longer verifies anything');
    assert.equal((await fresh.verify(newToken)).subject, h.users.alice.id);
  });
});
