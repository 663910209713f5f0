import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import * as client from 'openid-client';
import { CookieClient } from '../../../test/kit/cookie-client.ts';
import { createTokenVerifier } from '../../lib/oidc/index.ts';
import { startIdentityHarness, submitLogin } from './identity.testing.ts';
import type { IdentityHarness } from './identity.testing.ts';

const CALLBACK = 'http://127.0.0.1:5555/callback';
const SCOPE = 'openid email profile groups offline_access';
const ALICE = { name: 'alice', password: 'alice-password' };

async function discover(h: IdentityHarness): Promise<client.Configuration> {
  return client.discovery(new URL(h.publicUrl), 'causeway-cli', undefined, client.None(), { [client.customFetch]: h.fetch });
}

/** The authorization request through the test login page; returns the loopback callback URL. */
async function authorize(h: IdentityHarness, config: client.Configuration, params: Record<string, string> = {}, user = ALICE): Promise<{ callback: URL; verifier: string; state: string; nonce: string }> {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: SCOPE, code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', prompt: 'consent', state, nonce, ...params });
  const browser = new CookieClient({ caPems: [h.caPem] });
  const page = await browser.follow(url.href, { stopAt: (u) => u.port === '5555' });
  const last = await submitLogin(h, browser, page, user, (u) => u.port === '5555');
  assert.ok(last.location?.startsWith('http://127.0.0.1:5555/callback?'), `expected the loopback callback, got HTTP ${last.status} ${last.location ?? last.body.slice(0, 300)}`);
  return { callback: new URL(last.location ?? ''), verifier, state, nonce };
}

async function tokenRequest(h: IdentityHarness, form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await h.fetch(`${h.publicUrl}/oidc/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: new URLSearchParams({ client_id: 'causeway-cli', ...form }).toString() });
  return { status: response.status, body: (await response.json()) as Record<string, unknown>, headers: response.headers };
}

void describe('Causeway as an OIDC provider', () => {
  let h: IdentityHarness;
  let config: client.Configuration;
  before(async () => {
    h = await startIdentityHarness();
    config = await discover(h);
  });
  after(() => h.close());

  void it('OP-09 serves discovery whose issuer is the public URL byte for byte, with the contract routes', async () => {
    const response = await h.fetch(`${h.publicUrl}/.well-known/openid-configuration`);
    assert.equal(response.status, 200);
    const text = await response.text();
    assert.ok(text.includes(`"issuer":"${h.publicUrl}"`));
    const doc = JSON.parse(text) as Record<string, unknown>;
    assert.equal(doc.token_endpoint, `${h.publicUrl}/oidc/token`);
    assert.equal(doc.authorization_endpoint, `${h.publicUrl}/oidc/auth`);
    assert.equal(doc.jwks_uri, `${h.publicUrl}/oidc/jwks`);
    assert.equal(doc.device_authorization_endpoint, `${h.publicUrl}/oidc/device/auth`);
    assert.equal(doc.userinfo_endpoint, `${h.publicUrl}/oidc/me`);
    assert.equal(doc.revocation_endpoint, `${h.publicUrl}/oidc/token/revocation`);
    assert.equal(doc.end_session_endpoint, `${h.publicUrl}/oidc/session/end`);
    assert.equal(doc.introspection_endpoint, undefined);
    assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
    assert.deepEqual((doc.id_token_signing_alg_values_supported as string[]).sort(), ['ES256', 'RS256']);
    assert.ok((doc.scopes_supported as string[]).includes('groups'));
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    assert.match(response.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  });

  void it('publishes both signing keys in the JWKS without private members', async () => {
    const response = await h.fetch(`${h.publicUrl}/oidc/jwks`);
    const text = await response.text();
    const { keys } = JSON.parse(text) as { keys: Array<Record<string, unknown>> };
    assert.deepEqual(keys.map((k) => k.alg).sort(), ['ES256', 'RS256']);
    for (const member of ['"d"', '"p"', '"q"', '"dp"', '"dq"', '"qi"']) assert.ok(!text.includes(member));
  });

  void it('OP-04 authorization code with PKCE S256: the ID token carries iss, nonce, email and groups', async () => {
    const { callback, verifier, state, nonce } = await authorize(h, config);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    const claims = tokens.claims();
    assert.ok(claims !== undefined);
    assert.equal(claims.iss, h.publicUrl);
    assert.equal(claims.sub, h.users.alice.id);
    assert.equal(claims.nonce, nonce);
    assert.equal(claims.email, 'alice@example.com');
    assert.deepEqual(claims.groups, ['eng', 'platform']);
    assert.equal(claims.preferred_username, 'alice');
    assert.equal(decodeProtectedHeader(tokens.id_token ?? '').alg, 'RS256');
    assert.ok(tokens.refresh_token !== undefined);
    const info = await client.fetchUserInfo(config, tokens.access_token, h.users.alice.id);
    assert.deepEqual(info.groups, ['eng', 'platform']);
  });

  void it('password grant answers with access, refresh and ID tokens', async () => {
    const { status, body } = await tokenRequest(h, { grant_type: 'password', username: 'bob', password: 'bob-password', scope: SCOPE });
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'Bearer');
    assert.equal(typeof body.access_token, 'string');
    assert.equal(typeof body.refresh_token, 'string');
    const id = decodeJwt(String(body.id_token));
    assert.equal(id.iss, h.publicUrl);
    assert.equal(id.sub, h.users.bob.id);
    assert.equal(id.aud, 'causeway-cli');
    assert.deepEqual(id.groups, ['eng']);
    // The hijacked provider routes still count in the metrics like every other route.
    const metrics = await h.controlPlane.metrics.registry.metrics();
    assert.match(metrics, /route="\/oidc\/token"[^\n]*status="200"|status="200"[^\n]*route="\/oidc\/token"/);
  });

  void it('token exchange mints a kube ID token that createTokenVerifier accepts against our discovery and JWKS', async () => {
    const login = await tokenRequest(h, { grant_type: 'password', username: 'alice', password: 'alice-password', scope: SCOPE });
    const { status, body } = await tokenRequest(h, {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: String(login.body.access_token),
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'kubernetes:prod',
      requested_token_type: 'urn:ietf:params:oauth:token-type:id_token',
    });
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.issued_token_type, 'urn:ietf:params:oauth:token-type:id_token');
    assert.equal(body.token_type, 'N_A');
    assert.equal(body.expires_in, 600);
    const header = decodeProtectedHeader(String(body.access_token));
    assert.equal(header.typ, 'JWT');
    assert.equal(header.alg, 'RS256');
    const verifier = createTokenVerifier({ issuer: h.publicUrl, audience: 'kubernetes:prod', caPem: h.caPem });
    const verified = await verifier.verify(String(body.access_token));
    assert.equal(verified.claims.sub, h.users.alice.id);
    assert.equal(verified.claims.azp, 'causeway-cli');
    assert.deepEqual(verified.claims.groups, ['eng', 'platform']);
  });

  void it('device authorization grant end to end: code, confirmation in the browser, tokens', async () => {
    const started = await h.fetch(`${h.publicUrl}/oidc/device/auth`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ client_id: 'causeway-cli', scope: SCOPE }).toString() });
    assert.equal(started.status, 200);
    const device = (await started.json()) as { device_code: string; user_code: string; verification_uri: string; verification_uri_complete: string; interval: number };
    assert.equal(device.verification_uri, `${h.publicUrl}/oidc/device`);
    const pending = await tokenRequest(h, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code });
    assert.equal(pending.body.error, 'authorization_pending');

    const browser = new CookieClient({ caPems: [h.caPem] });
    // The verification link answers with oidc-provider's auto-submitting form: its one script is allowed by hash.
    const autoSubmit = await browser.follow(device.verification_uri_complete);
    assert.equal(autoSubmit.status, 200);
    const autoCsp = String(autoSubmit.headers['content-security-policy']);
    assert.match(autoCsp, /script-src 'sha256-[^']+' 'sha256-[^']+'/);
    assert.ok(!autoCsp.includes('unsafe-inline'));
    const confirm = await browser.submitForm(autoSubmit, {});
    assert.equal(confirm.status, 200);
    assert.ok(confirm.body.includes(device.user_code));
    assert.match(String(confirm.headers['content-security-policy']), /default-src 'none'/);
    assert.ok(!String(confirm.headers['content-security-policy']).includes('unsafe-inline'));
    const loginPage = await browser.submitForm(confirm, {});
    const done = await submitLogin(h, browser, loginPage, { name: 'dave', password: 'dave-password' });
    assert.equal(done.status, 200, done.body.slice(0, 300));
    assert.match(done.body, /logged in/);

    const tokens = await tokenRequest(h, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(typeof tokens.body.refresh_token, 'string');
    assert.equal(decodeJwt(String(tokens.body.id_token)).sub, h.users.dave.id);
    const again = await tokenRequest(h, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code });
    assert.equal(again.body.error, 'invalid_grant');
  });
});
