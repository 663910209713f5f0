import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { createUpstreamFetch } from '../../src/control-plane/identity/upstream-fetch.ts';
import { CookieClient } from './cookie-client.ts';
import { startTestIdp } from './idp.ts';
import type { TestIdp } from './idp.ts';

const REDIRECT = 'http://127.0.0.1:7/callback';

void describe('test IdP', () => {
  let idp: TestIdp;
  before(async () => {
    idp = await startTestIdp({
      users: [{ name: 'alice', password: 'alice-pw', email: 'alice@corp.example', groups: ['eng', 'ops'] }],
      clients: [
        { clientId: 'confidential', clientSecret: 'a-client-secret-long-enough', redirectUris: [REDIRECT] },
        { clientId: 'public', redirectUris: [REDIRECT] },
      ],
    });
  });
  after(async () => {
    await idp.close();
  });

  async function discover(clientId: string, secret?: string): Promise<client.Configuration> {
    return client.discovery(new URL(idp.issuer), clientId, secret, secret === undefined ? client.None() : client.ClientSecretBasic(secret), {
      [client.customFetch]: createUpstreamFetch({ caPem: idp.caPem }),
    });
  }

  async function login(config: client.Configuration, user: { name: string; password: string }): Promise<{ callback: URL; nonce: string; state: string; verifier: string }> {
    const verifier = client.randomPKCECodeVerifier();
    const nonce = client.randomNonce();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT,
      scope: 'openid email profile groups',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      nonce,
      state,
    });
    const browser = new CookieClient({ caPems: [idp.caPem] });
    const form = await browser.follow(url.href);
    assert.equal(form.status, 200);
    assert.match(form.body, /<form method="post"/);
    const done = await browser.submitForm(form, { login: user.name, password: user.password }, { stopAt: (u) => u.href.startsWith(REDIRECT) });
    assert.ok(done.location?.startsWith(REDIRECT), `expected a redirect to the client, got HTTP ${done.status} ${done.body.slice(0, 200)}`);
    return { callback: new URL(done.location ?? ''), nonce, state, verifier };
  }

  void test('discovery answers over HTTPS with the issuer exactly as given, trusted through its own CA only', async () => {
    const config = await discover('public');
    const metadata = config.serverMetadata();
    assert.equal(metadata.issuer, idp.issuer);
    assert.match(idp.issuer, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(metadata.authorization_endpoint?.startsWith(idp.issuer));
    // Without the IdP's CA, the system roots do not trust it.
    await assert.rejects(client.discovery(new URL(idp.issuer), 'public', undefined, client.None(), { [client.customFetch]: createUpstreamFetch() }));
  });

  void test('a user logs in through the form with openid-client (code, PKCE, state, nonce) and the ID token carries email and groups', async () => {
    const config = await discover('confidential', 'a-client-secret-long-enough');
    const { callback, nonce, state, verifier } = await login(config, { name: 'alice', password: 'alice-pw' });
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state });
    const claims = tokens.claims();
    assert.ok(claims !== undefined);
    assert.equal(claims.iss, idp.issuer);
    assert.equal(claims.aud, 'confidential');
    assert.equal(claims.sub, 'sub-alice');
    assert.equal(claims.preferred_username, 'alice');
    assert.equal(claims.email, 'alice@corp.example');
    assert.deepEqual(claims.groups, ['eng', 'ops']);
  });

  void test('a public client logs in too, and a changed group shows at the next login', async () => {
    const config = await discover('public');
    idp.setUser({ name: 'bob', password: 'bob-pw', groups: 'solo' });
    const first = await login(config, { name: 'bob', password: 'bob-pw' });
    const one = await client.authorizationCodeGrant(config, first.callback, { pkceCodeVerifier: first.verifier, expectedNonce: first.nonce, expectedState: first.state });
    assert.equal(one.claims()?.groups, 'solo');
    idp.setUser({ name: 'bob', password: 'bob-pw', groups: ['eng'] });
    const second = await login(config, { name: 'bob', password: 'bob-pw' });
    const two = await client.authorizationCodeGrant(config, second.callback, { pkceCodeVerifier: second.verifier, expectedNonce: second.nonce, expectedState: second.state });
    assert.deepEqual(two.claims()?.groups, ['eng']);
  });

  void test('a wrong password shows the form again with an error and issues no code', async () => {
    const config = await discover('public');
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT,
      scope: 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const browser = new CookieClient({ caPems: [idp.caPem] });
    const form = await browser.follow(url.href);
    const answer = await browser.submitForm(form, { login: 'alice', password: 'wrong' }, { stopAt: (u) => u.href.startsWith(REDIRECT) });
    assert.equal(answer.status, 401);
    assert.match(answer.body, /Wrong user name or password/);
    assert.equal(answer.location, undefined);
  });
});
