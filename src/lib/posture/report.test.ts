import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import fc from 'fast-check';
import { MAX_REPORT_BYTES, SIGNATURE_CONTEXT, canonicalJson, createMemoryNonceStore, signPostureReport, verifyPostureReport } from './index.ts';
import type { PostureReport, VerifyOptions, VerifyResult } from './index.ts';

function p256() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

const DEVICE_A = p256();
const DEVICE_B = p256();
const NOW = Date.parse('2026-06-01T12:00:00Z');

function setup(now = NOW) {
  const clock = { now: () => now };
  const nonces = createMemoryNonceStore({ clock });
  const nonce = nonces.issue('dev-a');
  const report: PostureReport = { deviceId: 'dev-a', nonce, timestamp: now, factors: { firewall: true, diskEncryption: true, osVersion: '24.04', osDistribution: 'ubuntu', files: { '/etc/corp/agent.conf': true } } };
  const options: VerifyOptions = { publicKeyPem: DEVICE_A.publicKeyPem, expectedDeviceId: 'dev-a', nonceStore: nonces, now, maxSkewMs: 60_000 };
  return { nonces, nonce, report, options };
}

function rejection(result: VerifyResult): string {
  return result.ok ? 'accepted' : result.reason;
}

/** A body signed by `key` over an arbitrary payload string (to build non-canonical or odd payloads). */
function rawSigned(payload: string, key = DEVICE_A.privateKey): string {
  const signature = sign('sha256', Buffer.from(SIGNATURE_CONTEXT + payload), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  return JSON.stringify({ payload, signature });
}

void describe('posture reports', () => {
  void test('a report signed by the device key with a fresh nonce is accepted once, with its factors', async () => {
    const { report, options } = setup();
    const result = await verifyPostureReport(signPostureReport(report, DEVICE_A.privateKey), options);
    assert.ok(result.ok);
    assert.deepEqual(result.report, report);
  });

  void test('the wire body carries the payload as canonical JSON and a 64-byte P-256 signature', () => {
    const { report } = setup();
    const body = JSON.parse(signPostureReport(report, DEVICE_A.privateKey)) as { payload: string; signature: string };
    assert.deepEqual(Object.keys(body), ['payload', 'signature']);
    assert.equal(body.payload, canonicalJson(report));
    assert.ok(body.payload.startsWith('{"deviceId":"dev-a","factors":{"diskEncryption":true,"files":'));
    assert.equal(Buffer.from(body.signature, 'base64url').length, 64);
  });

  void test('DT-01 a captured report sent again is refused: its nonce was used', async () => {
    const { report, options } = setup();
    const body = signPostureReport(report, DEVICE_A.privateKey);
    assert.ok((await verifyPostureReport(body, options)).ok);
    const replay = await verifyPostureReport(body, options);
    assert.equal(rejection(replay), 'posture-replayed');
  });

  void test('DT-01 a report with a nonce the server never issued, or issued to another device, is refused', async () => {
    const { report, options, nonces } = setup();
    const invented = await verifyPostureReport(signPostureReport({ ...report, nonce: 'A'.repeat(43) }, DEVICE_A.privateKey), options);
    assert.equal(rejection(invented), 'posture-replayed');
    const other = nonces.issue('dev-b');
    const stolen = await verifyPostureReport(signPostureReport({ ...report, nonce: other }, DEVICE_A.privateKey), options);
    assert.equal(rejection(stolen), 'posture-replayed');
    // The other device can still use its nonce.
    assert.equal(await nonces.consume(other, 'dev-b'), true);
  });

  void test('DT-01 a nonce that expired is refused', async () => {
    let now = NOW;
    const nonces = createMemoryNonceStore({ clock: { now: () => now }, ttlMs: 60_000 });
    const nonce = nonces.issue('dev-a');
    now += 60_001;
    const body = signPostureReport({ deviceId: 'dev-a', nonce, timestamp: now, factors: {} }, DEVICE_A.privateKey);
    const result = await verifyPostureReport(body, { publicKeyPem: DEVICE_A.publicKeyPem, expectedDeviceId: 'dev-a', nonceStore: nonces, now });
    assert.equal(rejection(result), 'posture-replayed');
  });

  void test('DT-01 a report older than the allowed skew is refused as stale, and one from the future too', async () => {
    const { report, options, nonces } = setup();
    assert.equal(rejection(await verifyPostureReport(signPostureReport({ ...report, timestamp: NOW - 60_001 }, DEVICE_A.privateKey), options)), 'posture-stale');
    assert.equal(rejection(await verifyPostureReport(signPostureReport({ ...report, timestamp: NOW + 60_001 }, DEVICE_A.privateKey), options)), 'posture-from-future');
    // Refusals do not use up the nonce.
    assert.equal(nonces.size(), 1);
    assert.ok((await verifyPostureReport(signPostureReport({ ...report, timestamp: NOW - 60_000 }, DEVICE_A.privateKey), options)).ok);
  });

  void test('DT-01 a report re-signed by another device’s key is refused', async () => {
    const { report, options } = setup();
    // Device B signs a report that claims to be device A.
    const forged = await verifyPostureReport(signPostureReport(report, DEVICE_B.privateKey), options);
    assert.equal(rejection(forged), 'posture-bad-signature');
    // Device B signs its own report and files it for device A.
    const own = await verifyPostureReport(signPostureReport({ ...report, deviceId: 'dev-b' }, DEVICE_B.privateKey), { ...options, publicKeyPem: DEVICE_B.publicKeyPem });
    assert.equal(rejection(own), 'posture-wrong-device');
  });

  void test('DT-01 a changed payload, a changed or truncated signature, or no signature is refused', async () => {
    const { report, options } = setup();
    const body = JSON.parse(signPostureReport({ ...report, factors: { firewall: false } }, DEVICE_A.privateKey)) as { payload: string; signature: string };
    const tampered = JSON.stringify({ ...body, payload: body.payload.replace('"firewall":false', '"firewall":true') });
    assert.equal(rejection(await verifyPostureReport(tampered, options)), 'posture-bad-signature');
    const flipped = Buffer.from(body.signature, 'base64url');
    flipped[10] = (flipped[10] ?? 0) ^ 1;
    assert.equal(rejection(await verifyPostureReport(JSON.stringify({ ...body, signature: flipped.toString('base64url') }), options)), 'posture-bad-signature');
    assert.equal(rejection(await verifyPostureReport(JSON.stringify({ ...body, signature: body.signature.slice(0, 40) }), options)), 'posture-bad-signature');
    assert.equal(rejection(await verifyPostureReport(JSON.stringify({ payload: body.payload }), options)), 'posture-malformed');
    // A signature without the context prefix (the device key signing something else) does not count.
    const bare = sign('sha256', Buffer.from(body.payload), { key: DEVICE_A.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    assert.equal(rejection(await verifyPostureReport(JSON.stringify({ payload: body.payload, signature: bare }), options)), 'posture-bad-signature');
  });

  void test('a signed payload that is not canonical JSON is refused, so the signed bytes are what is checked', async () => {
    const { report, options } = setup();
    const canonical = canonicalJson(report);
    const variants = [
      canonical.replace('{"deviceId"', '{ "deviceId"'),
      JSON.stringify({ nonce: report.nonce, deviceId: report.deviceId, timestamp: report.timestamp, factors: report.factors }),
      canonical.replace('{"deviceId":"dev-a"', '{"deviceId":"dev-b","deviceId":"dev-a"'),
      canonical.replace(`"timestamp":${NOW}`, `"timestamp":${NOW}.0`),
    ];
    for (const payload of variants) {
      assert.equal(rejection(await verifyPostureReport(rawSigned(payload), options)), 'posture-malformed', payload);
    }
  });

  void test('an oversized report is refused before it is parsed', async () => {
    const { options } = setup();
    const huge = `{"payload":"${'x'.repeat(MAX_REPORT_BYTES)}","signature":"AA"}`;
    assert.equal(rejection(await verifyPostureReport(huge, options)), 'posture-too-large');
    assert.equal(rejection(await verifyPostureReport(Buffer.from(huge), options)), 'posture-too-large');
    // Not even JSON, but too large: the size answers first.
    assert.equal(rejection(await verifyPostureReport('{'.repeat(MAX_REPORT_BYTES + 1), options)), 'posture-too-large');
  });

  void test('garbage bodies are refused as malformed and never throw', async () => {
    const { options } = setup();
    for (const body of ['', 'null', '[]', '{"payload":1,"signature":"AA"}', '{"payload":"{}","signature":"!!"}', '{"payload":"{}","signature":"AA","extra":1}', new Uint8Array([0xff, 0xfe])]) {
      assert.equal(rejection(await verifyPostureReport(body, options)), 'posture-malformed', String(body));
    }
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.json()), async (body) => {
        const result = await verifyPostureReport(body, options);
        assert.equal(result.ok, false);
      }),
    );
  });

  void test('a well-signed payload of the wrong shape is refused as malformed', async () => {
    const { report, options } = setup();
    for (const value of [{ ...report, extra: 1 }, { ...report, timestamp: 1.5 }, { ...report, timestamp: -1 }, { ...report, nonce: 'short' }, { ...report, deviceId: '' }, { deviceId: 'dev-a' }]) {
      assert.equal(rejection(await verifyPostureReport(rawSigned(canonicalJson(value)), options)), 'posture-malformed', JSON.stringify(value));
    }
  });

  void test('DT-07 malformed factor values, and factors only device managers may set, refuse the report', async () => {
    const bad: unknown[] = [
      { firewall: 'true' },
      { updatesPending: -1 },
      { updatesPending: 2.5 },
      { osVersion: '14.x' },
      { osDistribution: 'Ubuntu Linux' },
      { screenLock: 'maybe' },
      { files: { '/etc/x': 'yes' } },
      { files: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`/f${i}`, true])) },
      { mdmCompliant: true },
      { crowdstrikeScore: 100 },
      { unknownFactor: 1 },
      [],
      null,
    ];
    for (const factors of bad) {
      const { report, options, nonces } = setup();
      const result = await verifyPostureReport(rawSigned(canonicalJson({ ...report, factors })), options);
      assert.equal(rejection(result), 'posture-bad-factors', JSON.stringify(factors));
      assert.equal(nonces.size(), 1, 'the nonce is not used up');
    }
    // NaN cannot even be signed: canonical JSON has no NaN.
    const { report } = setup();
    assert.throws(() => signPostureReport({ ...report, factors: { updatesPending: Number.NaN } }, DEVICE_A.privateKey), TypeError);
  });

  void test('a registered key that is not ECDSA P-256 refuses the report, and such a key cannot sign one', async () => {
    const { report, options } = setup();
    const ed = generateKeyPairSync('ed25519');
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    for (const publicKeyPem of [ed.publicKey.export({ type: 'spki', format: 'pem' }).toString(), p384.publicKey.export({ type: 'spki', format: 'pem' }).toString(), 'not a key']) {
      const result = await verifyPostureReport(signPostureReport(report, DEVICE_A.privateKey), { ...options, publicKeyPem });
      assert.equal(rejection(result), 'posture-device-key-invalid');
    }
    assert.throws(() => signPostureReport(report, ed.privateKey), /ECDSA P-256/);
  });

  void test('the nonce store issues distinct nonces, each usable once, and bounds how many it keeps', async () => {
    const nonces = createMemoryNonceStore({ clock: { now: () => NOW }, maxOutstanding: 3 });
    const issued = Array.from({ length: 5 }, () => nonces.issue('d'));
    assert.equal(new Set(issued).size, 5);
    assert.equal(nonces.size(), 3);
    assert.equal(await nonces.consume(issued[0] ?? '', 'd'), false, 'the oldest was dropped');
    assert.equal(await nonces.consume(issued[4] ?? '', 'd'), true);
    assert.equal(await nonces.consume(issued[4] ?? '', 'd'), false);
  });
});

void describe('canonicalJson', () => {
  void test('sorts keys, drops undefined members and writes no whitespace', () => {
    assert.equal(canonicalJson({ b: [1, 'x', null, true], a: { d: undefined, c: 1e21, e: 0.1 } }), '{"a":{"c":1e+21,"e":0.1},"b":[1,"x",null,true]}');
  });

  void test('refuses NaN, Infinity, undefined in arrays, class instances and deep nesting', () => {
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, [undefined], new Date(0), new Map(), () => 1, 1n]) {
      assert.throws(() => canonicalJson(value), TypeError);
    }
    let deep: unknown = 1;
    for (let i = 0; i < 20; i++) deep = [deep];
    assert.throws(() => canonicalJson(deep), /deeply/);
  });

  void test('round-trips: parsing canonical JSON and writing it again gives the same text', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), (value) => {
        const text = canonicalJson(value);
        assert.equal(canonicalJson(JSON.parse(text)), text);
      }),
    );
  });
});
