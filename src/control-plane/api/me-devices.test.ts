/**
 * The user's device routes on a real control plane: HTTPS on port 0 (client certificates are part of
 * the contract), a real SQLite store, login sessions through the session authenticator with a fake
 * provider (`findAccessToken` over a map), and a stand-in trust engine (me-devices.testing.ts).
 * Every response is kept and scanned at the end for keys and tokens (CP-11).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { CertificateAuthority, createCsr, generateKeyPair, issueKeyAndCert } from '../../lib/pki/index.ts';
import { TYPE_MARKER_OID } from '../../lib/pki/types.ts';
import { signPostureReport } from '../../lib/posture/index.ts';
import type { PostureReport } from '../../lib/posture/index.ts';
import { apiTokenAuthenticator } from '../auth.ts';
import { sessionAuthenticator } from '../identity/session-auth.ts';
import type { AccessTokenInfo } from '../identity/session-auth.ts';
import { createControlPlane, issueServingCertificate } from '../server.ts';
import type { ControlPlane, Listener } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { clampTrustCertLifetime } from './me-devices.ts';
import { fakeTrustEngine } from './me-devices.testing.ts';
import type { FakeTrustEngine } from './me-devices.testing.ts';

const HOUR = 3_600_000;
const LIFETIME_MS = 2 * HOUR;

const seen: Array<{ what: string; body: string }> = [];
const secrets = new Set<string>();

interface Response {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

interface ClientCert {
  certPem: string;
  keyPem: string;
}

interface DeviceKeys {
  privateKeyPem: string;
  publicKeyPem: string;
}

interface Registered {
  id: string;
  keys: DeviceKeys;
  cert: ClientCert;
  serial: string;
}

let ca: CertificateAuthority;
let store: Store;
let cp: ControlPlane;
let listener: Listener;
let engine: FakeTrustEngine;
let adminToken: string;
const tokens = new Map<string, AccessTokenInfo>();
const sessions: Record<string, string> = {};
const users: Record<string, string> = {};
let closeAuthenticator = (): void => undefined;

async function call(method: string, path: string, o: { token?: string; body?: unknown; raw?: string; cert?: ClientCert; port?: number } = {}): Promise<Response> {
  const payload = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  const headers: Record<string, string> = {};
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (payload !== undefined) headers['content-type'] = 'application/json';
  const response = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: o.port ?? listener.port,
      path,
      method,
      headers,
      ca: ca.certPem,
      agent: false,
      ...(o.cert === undefined ? {} : { cert: o.cert.certPem, key: o.cert.keyPem }),
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
  seen.push({ what: `${method} ${path} → ${response.status}`, body: response.text });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(response.text) as Record<string, unknown>;
  } catch {
    // not JSON
  }
  return { ...response, json };
}

function errorOf(response: Response): { code: string; message: string; details?: Record<string, unknown> } {
  return response.json.error as { code: string; message: string; details?: Record<string, unknown> };
}

async function login(name: string): Promise<string> {
  const user = await store.getUserByName(name);
  assert.ok(user !== undefined, name);
  const token = randomBytes(32).toString('base64url');
  tokens.set(token, { accountId: user.id, clientId: 'causeway-cli', expiresAt: Math.floor(Date.now() / 1000) + 3600, scope: 'openid offline_access' });
  secrets.add(token);
  return token;
}

async function register(user: string, extra: Record<string, unknown> = {}): Promise<Registered> {
  const keys = await generateKeyPair();
  secrets.add(keys.privateKeyPem.replace(/-----[^-]+-----|\s/g, '').slice(0, 60));
  const response = await call('POST', '/api/v1/me/devices', { token: sessions[user], body: { csrPem: await createCsr(keys), platform: 'linux', osVersion: '24.04', hostname: 'laptop-1', ...extra } });
  assert.equal(response.status, 201, response.text);
  const device = response.json.device as { id: string };
  const certPem = response.json.certificatePem as string;
  return { id: device.id, keys, cert: { certPem, keyPem: keys.privateKeyPem }, serial: new X509Certificate(certPem).serialNumber };
}

async function nonceFor(user: string, device: string): Promise<string> {
  const response = await call('POST', `/api/v1/me/devices/${device}/posture/nonce`, { token: sessions[user] });
  assert.equal(response.status, 200, response.text);
  return response.json.nonce as string;
}

function report(device: Registered, nonce: string, o: { timestamp?: number; key?: string; deviceId?: string } = {}): string {
  const body: PostureReport = { deviceId: o.deviceId ?? device.id, nonce, timestamp: o.timestamp ?? Date.now(), factors: { firewall: true, diskEncryption: true, osVersion: '24.04', osDistribution: 'ubuntu' } };
  return signPostureReport(body, o.key ?? device.keys.privateKeyPem);
}

async function sendReport(user: string, device: Registered, o: { timestamp?: number; key?: string } = {}): Promise<Response> {
  return call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions[user], raw: report(device, await nonceFor(user, device.id), o) });
}

async function trustCsr(): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await generateKeyPair();
  return { csrPem: await createCsr(keys), keyPem: keys.privateKeyPem };
}

async function denials(device: string): Promise<string[][]> {
  const page = await store.queryAccessEvents({ device, decision: 'deny', limit: 1000 });
  for (const event of page.events) {
    assert.equal(event.accessTier, 'control-plane');
    assert.equal(event.type, 'access');
    assert.match(event.source, /^127\.0\.0\.1:\d+$/);
  }
  return page.events.map((e) => e.reasons);
}

/** A CSR for `keys` that asks for everything it should not get (CA-04). */
async function greedyCsr(keys: DeviceKeys): Promise<string> {
  const lib = await import('../../lib/pki/x509.ts');
  const privateKey = createPrivateKey(keys.privateKeyPem);
  const signer = lib.signerFor(privateKey);
  const csr = await lib.x509.Pkcs10CertificateRequestGenerator.create({
    name: lib.utf8Name([[lib.NAME_OID.commonName, 'admin']]),
    keys: { privateKey: signer.key, publicKey: lib.verifierFor(createPublicKey(privateKey)) },
    signingAlgorithm: signer.algorithm,
    extensions: [
      new lib.x509.BasicConstraintsExtension(true, 2, true),
      lib.subjectAltName({ uris: ['causeway://user/someone-else', 'causeway://device/another-device'], dnsNames: ['cp.example.com'] }),
      new lib.x509.ExtendedKeyUsageExtension([TYPE_MARKER_OID['control-plane'], TYPE_MARKER_OID.trust]),
    ],
  });
  return lib.toPem(csr.rawData, 'CERTIFICATE REQUEST');
}

/** The same request with one bit of its signature flipped: it no longer proves possession. */
function brokenSignature(csrPem: string): string {
  const body = csrPem.replace(/-----[^-]+-----|\s/g, '');
  const der = Buffer.from(body, 'base64');
  der[der.length - 1] ^= 0x01;
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

before(async () => {
  ca = await CertificateAuthority.create({ commonName: 'me-devices test CA' });
  store = await openStore({ url: ':memory:' });
  engine = fakeTrustEngine(store);
  const authenticator = sessionAuthenticator({ store, findAccessToken: (token) => Promise.resolve(tokens.get(token)) });
  cp = await createControlPlane({
    store,
    ca,
    publicUrl: 'https://127.0.0.1:8440',
    authFailures: { burst: 10_000 },
    authenticators: [apiTokenAuthenticator(store), authenticator],
    deviceTrust: engine,
    trustCertLifetimeMs: LIFETIME_MS,
  });
  const serving = await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1:8440' });
  listener = await cp.listen({ host: '127.0.0.1', port: 0, tls: serving });
  adminToken = (await store.createApiToken({ name: 'seed', scope: 'admin' }, { actor: 'test' })).token;
  secrets.add(adminToken);
  for (const name of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
    users[name] = (await store.createUser({ name, groups: ['eng'] }, { actor: 'test' })).id;
    sessions[name] = await login(name);
  }
  await store.putObject({ kind: 'TrustProfile', name: 'linux', spec: { staleAfter: '1h', appliesTo: { platforms: ['linux'] }, factors: [{ type: 'fileExists', path: '/etc/corp/agent.conf', effect: 'Low' }, { type: 'processRunning', name: 'corp-agent', effect: 'Low' }] } }, { actor: 'test' });
  closeAuthenticator = () => authenticator.close();
});

after(async () => {
  closeAuthenticator();
  await cp.close();
  await store.close();
});

void describe('the user\'s devices', () => {
  void test('registration issues a device certificate whose only identity is the new device id, records it, and rescores the device', async () => {
    const device = await register('alice', { serial: 'SN-1', ownership: 'corporate-dedicated' });
    const cert = new X509Certificate(device.cert.certPem);
    assert.equal(cert.subjectAltName, `URI:causeway://device/${device.id}`);
    assert.ok(cert.keyUsage?.includes(TYPE_MARKER_OID.device));
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIssued(ca.certificate));
    assert.ok(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(createPublicKey(device.keys.publicKeyPem).export({ type: 'spki', format: 'der' })));
    const recorded = await store.getCertificate(device.serial);
    assert.equal(recorded?.type, 'device');
    assert.equal(recorded?.identity, `causeway://device/${device.id}`);
    const stored = await store.getDevice(device.id);
    assert.equal(stored?.userId, users.alice);
    assert.equal(stored?.ownership, 'corporate-dedicated');
    assert.equal(stored?.serial, 'SN-1');
    assert.ok(engine.rescored.includes(device.id));
    const listed = await call('GET', '/api/v1/me/devices', { token: sessions.alice });
    assert.equal(listed.status, 200);
    const items = listed.json.items as Array<Record<string, unknown>>;
    const mine = items.find((d) => d.id === device.id);
    assert.ok(mine !== undefined);
    assert.equal((mine.trust as { level: string }).level, 'AlwaysDeny');
    assert.equal(mine.publicKey, undefined, 'no key material in the device view');
  });

  void test('ownership defaults to other', async () => {
    const device = await register('carol');
    assert.equal((await store.getDevice(device.id))?.ownership, 'other');
  });

  void test('CA-04 a request asking for another identity, CA:true and other types gets a plain device certificate for the new id', async () => {
    const keys = await generateKeyPair();
    const response = await call('POST', '/api/v1/me/devices', { token: sessions.alice, body: { csrPem: await greedyCsr(keys), platform: 'macos', osVersion: '14.5' } });
    assert.equal(response.status, 201, response.text);
    const id = (response.json.device as { id: string }).id;
    const cert = new X509Certificate(response.json.certificatePem as string);
    assert.equal(cert.ca, false);
    assert.equal(cert.subjectAltName, `URI:causeway://device/${id}`);
    assert.deepEqual(cert.keyUsage?.filter((u) => u.startsWith('1.3.6.1.4.1.59541.')), [TYPE_MARKER_OID.device]);
    assert.ok(!cert.subject.includes('admin'));
  });

  void test('CA-04 a request whose self-signature does not verify is refused and registers nothing', async () => {
    const keys = await generateKeyPair();
    const before = (await store.listDevices({ userId: users.dave })).length;
    const response = await call('POST', '/api/v1/me/devices', { token: sessions.dave, body: { csrPem: brokenSignature(await createCsr(keys)), platform: 'linux', osVersion: '24.04' } });
    assert.equal(response.status, 400, response.text);
    assert.equal(errorOf(response).code, 'CSR_INVALID');
    assert.equal((await store.listDevices({ userId: users.dave })).length, before);
  });

  void test('a device key that is not P-256 is refused (posture reports are signed with it)', async () => {
    const keys = await (async () => {
      const { generateKeyPairSync } = await import('node:crypto');
      const pair = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
      return { privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString() };
    })();
    const response = await call('POST', '/api/v1/me/devices', { token: sessions.dave, body: { csrPem: await createCsr(keys), platform: 'linux', osVersion: '24.04' } });
    assert.equal(response.status, 400);
    assert.equal(errorOf(response).code, 'DEVICE_KEY_UNSUPPORTED');
  });

  void test('a user may register at most 20 devices', async () => {
    const existing = (await store.listDevices({ userId: users.dave })).length;
    for (let i = existing; i < 20; i++) await register('dave');
    const keys = await generateKeyPair();
    const response = await call('POST', '/api/v1/me/devices', { token: sessions.dave, body: { csrPem: await createCsr(keys), platform: 'linux', osVersion: '24.04' } });
    assert.equal(response.status, 409);
    assert.equal(errorOf(response).code, 'TOO_MANY_DEVICES');
    assert.equal((await store.listDevices({ userId: users.dave })).length, 20);
  });

  void test('API tokens get 403 SESSION_REQUIRED on every /me route', async () => {
    const device = await register('alice');
    const csr = await createCsr(await generateKeyPair());
    for (const [method, path, body] of [
      ['POST', '/api/v1/me/devices', { csrPem: csr, platform: 'linux', osVersion: '24.04' }],
      ['GET', '/api/v1/me/devices', undefined],
      ['GET', `/api/v1/me/devices/${device.id}`, undefined],
      ['POST', `/api/v1/me/devices/${device.id}/posture/nonce`, undefined],
      ['POST', `/api/v1/me/devices/${device.id}/posture`, { payload: '{}', signature: 'AA' }],
      ['POST', `/api/v1/me/devices/${device.id}/trust-cert`, { csrPem: csr }],
    ] as const) {
      const response = await call(method, path, { token: adminToken, ...(body === undefined ? {} : { body }) });
      assert.equal(response.status, 403, `${method} ${path}: ${response.text}`);
      assert.equal(errorOf(response).code, 'SESSION_REQUIRED');
    }
    assert.equal((await call('GET', '/api/v1/me/devices')).status, 401);
  });

  void test('CP-03 user B cannot read, get a nonce for, report for, or get a trust certificate for A\'s device (404, as if it did not exist)', async () => {
    const device = await register('alice');
    const stolenNonce = await nonceFor('alice', device.id);
    const csr = await trustCsr();
    const attempts = [
      await call('GET', `/api/v1/me/devices/${device.id}`, { token: sessions.bob }),
      await call('POST', `/api/v1/me/devices/${device.id}/posture/nonce`, { token: sessions.bob }),
      await call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions.bob, raw: report(device, stolenNonce) }),
      await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.bob, body: { csrPem: csr.csrPem }, cert: device.cert }),
    ];
    const missing = await call('GET', '/api/v1/me/devices/no-such-device', { token: sessions.bob });
    for (const response of attempts) {
      assert.equal(response.status, 404, response.text);
      assert.equal(errorOf(response).code, 'NOT_FOUND');
      assert.equal(errorOf(response).message, errorOf(missing).message.replace('no-such-device', device.id));
    }
    const listed = await call('GET', '/api/v1/me/devices', { token: sessions.bob });
    assert.ok(!(listed.json.items as Array<{ id: string }>).some((d) => d.id === device.id));
    // Bob's attempt did not use up Alice's nonce.
    const accepted = await call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions.alice, raw: report(device, stolenNonce) });
    assert.equal(accepted.status, 200, accepted.text);
  });
});

void describe('posture reports', () => {
  void test('a device gets at most 30 nonces in a row (each is a store row), then 429 with Retry-After', async () => {
    const device = await register('carol');
    for (let i = 0; i < 30; i++) assert.equal((await call('POST', `/api/v1/me/devices/${device.id}/posture/nonce`, { token: sessions.carol })).status, 200);
    const limited = await call('POST', `/api/v1/me/devices/${device.id}/posture/nonce`, { token: sessions.carol });
    assert.equal(limited.status, 429);
    assert.equal(errorOf(limited).code, 'RATE_LIMITED');
  });

  void test('the nonce comes with what the report must cover, from the trust profiles that apply', async () => {
    const device = await register('alice');
    const response = await call('POST', `/api/v1/me/devices/${device.id}/posture/nonce`, { token: sessions.alice });
    assert.equal(response.status, 200);
    assert.match(response.json.nonce as string, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(Date.parse(response.json.expiresAt as string) > Date.now());
    assert.deepEqual(response.json.requirements, { files: ['/etc/corp/agent.conf'], processes: ['corp-agent'] });
  });

  void test('an accepted report is recorded with the server\'s time, asks the device managers about the serial, rescores and answers the trust', async () => {
    const device = await register('alice', { serial: 'SN-POSTURE' });
    const response = await sendReport('alice', device);
    assert.equal(response.status, 200, response.text);
    const trust = response.json.trust as { level: string; explanation: string; factors: unknown[] };
    assert.equal(trust.level, 'High');
    assert.equal(trust.factors.length, 1);
    const stored = await store.getDevice(device.id);
    assert.ok(stored?.postureAt !== null && stored?.postureAt !== undefined);
    assert.equal((stored.posture as { firewall: boolean }).firewall, true);
    assert.ok(engine.lookedUp.includes('SN-POSTURE'));
    const shown = await call('GET', `/api/v1/me/devices/${device.id}`, { token: sessions.alice });
    assert.equal(shown.json.postureAt, stored.postureAt);
  });

  void test('DT-01 a replayed report (same nonce) is refused with posture-replayed and an access event', async () => {
    const device = await register('alice');
    const body = report(device, await nonceFor('alice', device.id));
    assert.equal((await call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions.alice, raw: body })).status, 200);
    const replay = await call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions.alice, raw: body });
    assert.equal(replay.status, 409, replay.text);
    assert.equal(errorOf(replay).code, 'posture-replayed');
    assert.deepEqual(await denials(device.id), [['posture-replayed']]);
    const events = await store.queryAccessEvents({ device: device.id, decision: 'deny' });
    assert.equal(events.events[0].user, users.alice);
  });

  void test('DT-01 a nonce handed to another device is refused, and stays usable by its device', async () => {
    const a = await register('alice');
    const b = await register('alice');
    const nonceOfB = await nonceFor('alice', b.id);
    const response = await call('POST', `/api/v1/me/devices/${a.id}/posture`, { token: sessions.alice, raw: report(a, nonceOfB) });
    assert.equal(response.status, 409);
    assert.equal(errorOf(response).code, 'posture-replayed');
    assert.equal((await call('POST', `/api/v1/me/devices/${b.id}/posture`, { token: sessions.alice, raw: report(b, nonceOfB) })).status, 200);
  });

  void test('DT-01 a report signed by another device\'s key is refused with posture-bad-signature and an access event', async () => {
    const device = await register('alice');
    const other = await register('alice');
    const response = await sendReport('alice', device, { key: other.keys.privateKeyPem });
    assert.equal(response.status, 400, response.text);
    assert.equal(errorOf(response).code, 'posture-bad-signature');
    assert.deepEqual(await denials(device.id), [['posture-bad-signature']]);
  });

  void test('DT-01 a stale report (timestamp outside the skew) is refused with posture-stale and an access event', async () => {
    const device = await register('alice');
    const response = await sendReport('alice', device, { timestamp: Date.now() - 10 * 60_000 });
    assert.equal(response.status, 400, response.text);
    assert.equal(errorOf(response).code, 'posture-stale');
    assert.deepEqual(await denials(device.id), [['posture-stale']]);
  });

  void test('a malformed report is refused with posture-malformed and an access event', async () => {
    const device = await register('alice');
    const response = await call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions.alice, body: { payload: 'x', signature: 'AA', extra: true } });
    assert.equal(response.status, 400);
    assert.equal(errorOf(response).code, 'posture-malformed');
    assert.deepEqual(await denials(device.id), [['posture-malformed']]);
  });

  void test('a banned device\'s nonce requests and reports are refused with device-banned and access events', async () => {
    const device = await register('alice');
    const nonce = await nonceFor('alice', device.id);
    await store.banDevice(device.id, { actor: 'test' });
    const nonceResponse = await call('POST', `/api/v1/me/devices/${device.id}/posture/nonce`, { token: sessions.alice });
    assert.equal(nonceResponse.status, 403);
    const response = await call('POST', `/api/v1/me/devices/${device.id}/posture`, { token: sessions.alice, raw: report(device, nonce) });
    assert.equal(response.status, 403);
    assert.equal(errorOf(response).code, 'DEVICE_BANNED');
    assert.equal(errorOf(response).details?.reason, 'device-banned');
    assert.deepEqual(await denials(device.id), [['device-banned'], ['device-banned']]);
    assert.equal((await store.getDevice(device.id))?.postureAt, null);
  });
});

void describe('trust certificates', () => {
  async function reported(user = 'erin'): Promise<Registered> {
    const device = await register(user);
    const response = await sendReport(user, device);
    assert.equal(response.status, 200, response.text);
    return device;
  }

  void test('the issued trust certificate names exactly (user, device), lives the configured lifetime, is recorded and can be revoked', async () => {
    const device = await reported();
    const csr = await trustCsr();
    const response = await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: csr.csrPem }, cert: device.cert });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(Object.keys(response.json).sort(), ['caPem', 'certificatePem', 'notAfter', 'serial']);
    assert.equal(response.json.caPem, ca.certPem);
    const cert = new X509Certificate(response.json.certificatePem as string);
    assert.equal(cert.subjectAltName, `URI:causeway://user/${users.erin}, URI:causeway://device/${device.id}`);
    assert.deepEqual(cert.keyUsage?.filter((u) => u.startsWith('1.3.6.1.4.1.59541.')), [TYPE_MARKER_OID.trust]);
    assert.equal(cert.ca, false);
    assert.ok(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(createPublicKey(csr.keyPem).export({ type: 'spki', format: 'der' })));
    // Lifetime: the configured 2 h (plus the 5 min backdate every certificate gets).
    const span = cert.validToDate.getTime() - cert.validFromDate.getTime();
    assert.ok(Math.abs(span - (LIFETIME_MS + 5 * 60_000)) <= 1000, String(span));
    assert.equal(response.json.notAfter, cert.validToDate.toISOString());
    const recorded = await store.getCertificate(cert.serialNumber);
    assert.equal(recorded?.type, 'trust');
    assert.equal(recorded?.identity, `causeway://user/${users.erin} causeway://device/${device.id}`);
    await store.revokeCertificate(cert.serialNumber, { actor: 'test', reason: 'test' });
    assert.ok((await store.listRevokedCertificates()).some((c) => c.serial === cert.serialNumber));
    const allowed = await store.queryAccessEvents({ device: device.id, decision: 'allow' });
    assert.deepEqual(allowed.events.map((e) => [e.reasons, e.certSerial]), [[['trust-cert-issued'], cert.serialNumber]]);
  });

  void test('CA-03 a trust certificate needs this device\'s own certificate on the TLS connection', async () => {
    const device = await reported();
    const sibling = await reported();
    const csr = await trustCsr();
    const ask = (cert?: ClientCert): Promise<Response> => call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: csr.csrPem }, ...(cert === undefined ? {} : { cert }) });
    const none = await ask();
    assert.equal(none.status, 403);
    assert.equal(errorOf(none).code, 'DEVICE_CERT_REQUIRED');
    assert.equal(errorOf(none).details?.reason, 'cert-missing');
    // A trust certificate of this very (user, device) is not the device's certificate.
    const good = await ask(device.cert);
    assert.equal(good.status, 200, good.text);
    const trustCert = { certPem: good.json.certificatePem as string, keyPem: csr.keyPem };
    const withTrust = await ask(trustCert);
    assert.equal(withTrust.status, 403);
    assert.equal(errorOf(withTrust).details?.reason, 'cert-wrong-type');
    // Another device's certificate (same user).
    const withSibling = await ask(sibling.cert);
    assert.equal(withSibling.status, 403);
    assert.equal(errorOf(withSibling).details?.reason, 'device-cert-mismatch');
    // A device certificate for this id but another key (issued outside registration).
    const forged = await issueKeyAndCert(ca, { type: 'device', identity: { device: device.id } });
    const withForged = await ask({ certPem: forged.certPem, keyPem: forged.keyPem });
    assert.equal(errorOf(withForged).details?.reason, 'device-cert-mismatch');
    // A revoked device certificate.
    await store.revokeCertificate(device.serial, { actor: 'test', reason: 'lost' });
    const revoked = await ask(device.cert);
    assert.equal(revoked.status, 403);
    assert.equal(errorOf(revoked).details?.reason, 'cert-revoked');
    assert.deepEqual(await denials(device.id), [
      ['trust-cert-refused', 'cert-revoked'],
      ['trust-cert-refused', 'device-cert-mismatch'],
      ['trust-cert-refused', 'device-cert-mismatch'],
      ['trust-cert-refused', 'cert-wrong-type'],
      ['trust-cert-refused', 'cert-missing'],
    ]);
  });

  void test('a device whose trust is AlwaysDeny (stale: no report yet, or scored so) gets no trust certificate', async () => {
    const device = await register('erin');
    const csr = await trustCsr();
    const stale = await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: csr.csrPem }, cert: device.cert });
    assert.equal(stale.status, 403, stale.text);
    assert.equal(errorOf(stale).code, 'TRUST_TOO_LOW');
    assert.equal(errorOf(stale).details?.reason, 'stale');
    assert.equal((await sendReport('erin', device)).status, 200);
    engine.set(device.id, { level: 'AlwaysDeny', reasons: ['override-security'], explanation: 'AlwaysDeny: reported stolen' });
    const denied = await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: csr.csrPem }, cert: device.cert });
    assert.equal(denied.status, 403);
    assert.equal(errorOf(denied).details?.reason, 'always-deny');
    assert.match(errorOf(denied).message, /reported stolen/);
    engine.set(device.id, { level: 'Low', reasons: ['firewall-off'], explanation: 'Low: the firewall is off' });
    const low = await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: csr.csrPem }, cert: device.cert });
    assert.equal(low.status, 200, 'Low is a level policies decide on; only AlwaysDeny gets no certificate');
    assert.deepEqual(await denials(device.id), [['trust-cert-refused', 'always-deny'], ['trust-cert-refused', 'stale']]);
  });

  void test('a banned device gets no trust certificate', async () => {
    const device = await reported();
    await store.banDevice(device.id, { actor: 'test' });
    const response = await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: (await trustCsr()).csrPem }, cert: device.cert });
    assert.equal(response.status, 403);
    assert.equal(errorOf(response).code, 'DEVICE_BANNED');
    assert.deepEqual(await denials(device.id), [['trust-cert-refused', 'device-banned']]);
  });

  void test('a trust certificate request whose self-signature does not verify is refused', async () => {
    const device = await reported();
    const response = await call('POST', `/api/v1/me/devices/${device.id}/trust-cert`, { token: sessions.erin, body: { csrPem: brokenSignature((await trustCsr()).csrPem) }, cert: device.cert });
    assert.equal(response.status, 400);
    assert.equal(errorOf(response).code, 'CSR_INVALID');
  });

  void test('the lifetime option is clamped to 5 minutes – 24 hours, 8 hours by default', () => {
    assert.equal(clampTrustCertLifetime(undefined), 8 * HOUR);
    assert.equal(clampTrustCertLifetime(60_000), 5 * 60_000);
    assert.equal(clampTrustCertLifetime(48 * HOUR), 24 * HOUR);
    assert.equal(clampTrustCertLifetime(LIFETIME_MS), LIFETIME_MS);
    assert.equal(clampTrustCertLifetime(Number.NaN), 8 * HOUR);
  });
});

void describe('without a trust engine', () => {
  void test('registration, reports and trust certificates work before the engine is wired (the verdict stays unscored)', async (t) => {
    const bare = await createControlPlane({
      store,
      ca,
      publicUrl: 'https://127.0.0.1:8440',
      authFailures: { burst: 10_000 },
      authenticators: [sessionAuthenticator({ store, findAccessToken: (token) => Promise.resolve(tokens.get(token)) })],
    });
    t.after(() => bare.close());
    const serving = await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1:8440' });
    const { port } = await bare.listen({ host: '127.0.0.1', port: 0, tls: serving });
    const keys = await generateKeyPair();
    const registered = await call('POST', '/api/v1/me/devices', { port, token: sessions.carol, body: { csrPem: await createCsr(keys), platform: 'windows', osVersion: '10.0.22631' } });
    assert.equal(registered.status, 201, registered.text);
    const id = (registered.json.device as { id: string; trust: unknown }).id;
    assert.equal((registered.json.device as { trust: unknown }).trust, null);
    const device: Registered = { id, keys, cert: { certPem: registered.json.certificatePem as string, keyPem: keys.privateKeyPem }, serial: '' };
    const nonce = (await call('POST', `/api/v1/me/devices/${id}/posture/nonce`, { port, token: sessions.carol })).json.nonce as string;
    const reportResponse = await call('POST', `/api/v1/me/devices/${id}/posture`, { port, token: sessions.carol, raw: report(device, nonce) });
    assert.equal(reportResponse.status, 200, reportResponse.text);
    assert.equal(reportResponse.json.trust, null);
    assert.notEqual((await store.getDevice(id))?.postureAt, null);
    const trustCert = await call('POST', `/api/v1/me/devices/${id}/trust-cert`, { port, token: sessions.carol, body: { csrPem: (await trustCsr()).csrPem }, cert: device.cert });
    assert.equal(trustCert.status, 200, trustCert.text);
    // The default lifetime: 8 h.
    const cert = new X509Certificate(trustCert.json.certificatePem as string);
    assert.ok(Math.abs(cert.validToDate.getTime() - cert.validFromDate.getTime() - (8 * HOUR + 5 * 60_000)) <= 1000);
    // A stored verdict past its staleAt counts as stale when no engine can say better.
    await store.updateDevice(id, { trust: { level: 'High', reasons: [], explanation: 'High', staleAt: new Date(Date.now() - 1000).toISOString() } }, { actor: 'test' });
    const stale = await call('POST', `/api/v1/me/devices/${id}/trust-cert`, { port, token: sessions.carol, body: { csrPem: (await trustCsr()).csrPem }, cert: device.cert });
    assert.equal(stale.status, 403);
    assert.equal(errorOf(stale).details?.reason, 'stale');
  });
});

void describe('whoami', () => {
  void test('whoami shows the device whose certificate is on the connection, or the one ?device= names, with its trust; never someone else\'s', async () => {
    const device = await register('frank', { hostname: 'alice-laptop' });
    assert.equal((await sendReport('frank', device)).status, 200);
    const byCert = await call('GET', '/api/v1/whoami', { token: sessions.frank, cert: device.cert });
    assert.equal(byCert.status, 200, byCert.text);
    const shown = byCert.json.device as { id: string; platform: string; hostname: string; trust: { level: string; explanation: string; reasons: string[]; factors: unknown[] } };
    assert.equal(shown.id, device.id);
    assert.equal(shown.platform, 'linux');
    assert.equal(shown.hostname, 'alice-laptop');
    assert.equal(shown.trust.level, 'High');
    assert.equal(typeof shown.trust.explanation, 'string');
    const byQuery = await call('GET', `/api/v1/whoami?device=${device.id}`, { token: sessions.frank });
    assert.equal((byQuery.json.device as { id: string }).id, device.id);
    assert.equal((await call('GET', '/api/v1/whoami', { token: sessions.frank })).json.device, null);
    assert.equal((await call('GET', `/api/v1/whoami?device=${device.id}`, { token: sessions.bob })).json.device, null);
    assert.equal((await call('GET', '/api/v1/whoami', { token: sessions.bob, cert: device.cert })).json.device, null);
    assert.equal((await call('GET', `/api/v1/whoami?device=${device.id}`, { token: adminToken })).json.device, null);
  });
});

after(() => {
  // CP-11: nothing but certificates; no private key, no token, no public key PEM outside a certificate.
  for (const { what, body } of seen) {
    assert.ok(!body.includes('PRIVATE KEY'), what);
    assert.ok(!body.includes('BEGIN PUBLIC KEY'), what);
    for (const secret of secrets) assert.ok(!body.includes(secret), `${what} carries a secret`);
  }
});
