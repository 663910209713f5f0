/**
 * The device in kube ID tokens (issue 4): the token exchange over TLS with the user's device
 * certificate gives `device` and `device_trust` claims; without a client certificate there is none;
 * another user's device, a banned device, a revoked or foreign device certificate and a trust
 * certificate (CA-03) are refused with `invalid_grant`.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { CertificateAuthority, generateKeyPair, issueKeyAndCert } from '../../lib/pki/index.ts';
import { identityUrisFor } from '../../lib/pki/identity.ts';
import { startIdentityHarness } from './identity.testing.ts';
import type { IdentityHarness } from './identity.testing.ts';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

interface ClientCert {
  certPem: string;
  keyPem: string;
}

type Answer = { status: number; body: Record<string, unknown> };

/** POST /oidc/token, optionally with a TLS client certificate. */
function token(h: IdentityHarness, form: Record<string, string>, cert?: ClientCert): Promise<Answer> {
  const payload = Buffer.from(new URLSearchParams({ client_id: 'causeway-cli', ...form }).toString());
  const url = new URL('/oidc/token', h.publicUrl);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', 'content-length': String(payload.length) },
      ca: h.caPem,
      agent: false,
      ...(cert === undefined ? {} : { cert: cert.certPem, key: cert.keyPem }),
    }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function accessToken(h: IdentityHarness, name: string): Promise<string> {
  const login = await token(h, { grant_type: 'password', username: name, password: `${name}-password`, scope: 'openid email profile groups' });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  return String(login.body.access_token);
}

const exchange = (h: IdentityHarness, subjectToken: string, cert?: ClientCert): Promise<Answer> =>
  token(h, { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'kubernetes:prod' }, cert);

/** Registers a device for `user` in the store and issues its device certificate, as POST /me/devices does. */
async function registerDevice(h: IdentityHarness, userId: string, trust: Record<string, unknown> | null = null): Promise<{ id: string; cert: ClientCert; serial: string }> {
  const keys = await generateKeyPair();
  const device = await h.store.registerDevice({ id: crypto.randomUUID(), userId, platform: 'linux', osVersion: '6.1', serial: null, hostname: 'laptop', ownership: 'other', publicKey: keys.publicKeyPem }, { actor: 'system' });
  const issued = await h.ca.issue({ type: 'device', identity: { device: device.id }, publicKeyPem: keys.publicKeyPem });
  await h.store.recordCertificate({ serial: issued.serial, type: 'device', identity: identityUrisFor('device', { device: device.id }).join(' '), notAfter: issued.notAfter.toISOString() });
  if (trust !== null) await h.store.updateDevice(device.id, { trust }, { actor: 'system:trust' });
  return { id: device.id, cert: { certPem: issued.certPem, keyPem: keys.privateKeyPem }, serial: issued.serial };
}

void describe('the device in kube ID tokens', () => {
  let h: IdentityHarness;
  before(async () => {
    h = await startIdentityHarness({ tokenRateLimit: { burst: 10_000 } });
  });
  after(() => h.close());

  void it('a token exchange over TLS with the user\'s device certificate carries device and device_trust claims', async () => {
    const device = await registerDevice(h, h.users.alice.id, { level: 'Trusted', reasons: [], explanation: null, stale: false, staleAt: new Date(Date.now() + 3_600_000).toISOString() });
    const answer = await exchange(h, await accessToken(h, 'alice'), device.cert);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const claims = decodeJwt(String(answer.body.access_token));
    assert.equal(claims.sub, h.users.alice.id);
    assert.equal(claims.device, device.id);
    assert.equal(claims.device_trust, 'Trusted');
    assert.equal(claims.email, 'alice@example.com');
    const audit = (await h.store.queryAuditEvents({ action: 'token-exchange' })).events;
    assert.ok(audit.some((e) => (e.after as Record<string, unknown> | null)?.device === device.id));
  });

  void it('an unscored device gets a device claim and no device_trust; a stale verdict counts as AlwaysDeny', async () => {
    const unscored = await registerDevice(h, h.users.alice.id);
    const first = decodeJwt(String((await exchange(h, await accessToken(h, 'alice'), unscored.cert)).body.access_token));
    assert.equal(first.device, unscored.id);
    assert.equal(Object.hasOwn(first, 'device_trust'), false);
    const stale = await registerDevice(h, h.users.alice.id, { level: 'Trusted', reasons: [], staleAt: new Date(Date.now() - 1000).toISOString() });
    const second = decodeJwt(String((await exchange(h, await accessToken(h, 'alice'), stale.cert)).body.access_token));
    assert.deepEqual([second.device, second.device_trust], [stale.id, 'AlwaysDeny']);
  });

  void it('without a client certificate the kube ID token has no device claim', async () => {
    const answer = await exchange(h, await accessToken(h, 'alice'));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const claims = decodeJwt(String(answer.body.access_token));
    assert.equal(Object.hasOwn(claims, 'device'), false);
    assert.equal(Object.hasOwn(claims, 'device_trust'), false);
  });

  void it('CP-03 another user\'s device certificate is refused with invalid_grant', async () => {
    const bobs = await registerDevice(h, h.users.bob.id, { level: 'Trusted', reasons: [] });
    const answer = await exchange(h, await accessToken(h, 'alice'), bobs.cert);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error, 'invalid_grant');
    assert.match(String(answer.body.error_description), /^device_refused: the device certificate does not belong to this user/);
    assert.equal(Object.hasOwn(answer.body, 'access_token'), false);
  });

  void it('CA-06 a banned device\'s certificate is refused with invalid_grant', async () => {
    const device = await registerDevice(h, h.users.alice.id, { level: 'Trusted', reasons: [] });
    await h.store.banDevice(device.id, { actor: 'system' });
    const answer = await exchange(h, await accessToken(h, 'alice'), device.cert);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error, 'invalid_grant');
    assert.match(String(answer.body.error_description), /banned/);
  });

  void it('CA-06 a revoked device certificate is refused with invalid_grant', async () => {
    const device = await registerDevice(h, h.users.alice.id);
    await h.store.revokeCertificate(device.serial, { actor: 'system', reason: 'test' });
    const answer = await exchange(h, await accessToken(h, 'alice'), device.cert);
    assert.deepEqual([answer.status, answer.body.error], [400, 'invalid_grant']);
    assert.match(String(answer.body.error_description), /cert-revoked/);
  });

  void it('CA-03 a trust certificate presented instead of the device certificate is refused with invalid_grant', async () => {
    const device = await registerDevice(h, h.users.alice.id, { level: 'Trusted', reasons: [] });
    const trust = await issueKeyAndCert(h.ca, { type: 'trust', identity: { user: h.users.alice.id, device: device.id } });
    const answer = await exchange(h, await accessToken(h, 'alice'), trust);
    assert.deepEqual([answer.status, answer.body.error], [400, 'invalid_grant']);
    assert.match(String(answer.body.error_description), /cert-wrong-type/);
  });

  void it('CA-02 a device certificate from another CA, or one not holding the device\'s registered key, is refused', async () => {
    const device = await registerDevice(h, h.users.alice.id);
    const otherCa = await CertificateAuthority.create();
    const foreign = await issueKeyAndCert(otherCa, { type: 'device', identity: { device: device.id } });
    const refusedForeign = await exchange(h, await accessToken(h, 'alice'), foreign);
    assert.deepEqual([refusedForeign.status, refusedForeign.body.error], [400, 'invalid_grant']);
    // Our CA, the right device id, but not the device's key (a certificate the device never held).
    const forged = await issueKeyAndCert(h.ca, { type: 'device', identity: { device: device.id } });
    const refusedForged = await exchange(h, await accessToken(h, 'alice'), forged);
    assert.deepEqual([refusedForged.status, refusedForged.body.error], [400, 'invalid_grant']);
    assert.match(String(refusedForged.body.error_description), /registered key/);
  });
});
