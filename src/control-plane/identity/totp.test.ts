import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorCode } from '../../lib/errors.ts';
import { base32Decode, base32Encode, hotp, matchTotp, newTotpSecret, totpCode, totpStep, totpUri, verifyTotp } from './totp.ts';

/** RFC 6238 Appendix B, SHA-1 rows: the seed is the ASCII string "12345678901234567890". */
const RFC6238_SHA1: ReadonlyArray<[seconds: number, code: string]> = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
];
const RFC_SEED = Buffer.from('12345678901234567890', 'ascii');
const RFC_SECRET = base32Encode(RFC_SEED);

void test('the RFC 6238 SHA-1 test vectors come out right with 8 digits, and their last 6 digits verify', () => {
  assert.equal(RFC_SECRET, 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ');
  for (const [seconds, code] of RFC6238_SHA1) {
    assert.equal(hotp(RFC_SEED, totpStep(seconds * 1000), 8), code, `T=${seconds}`);
    assert.equal(totpCode(RFC_SECRET, seconds * 1000), code.slice(2));
    assert.equal(verifyTotp(RFC_SECRET, code.slice(2), seconds * 1000), true);
  }
});

void test('the RFC 4226 HOTP test vectors come out right', () => {
  const expected = ['755224', '287082', '359152', '969429', '338314', '254676', '287922', '162583', '399871', '520489'];
  expected.forEach((code, counter) => assert.equal(hotp(RFC_SEED, counter), code));
});

void test('a code is accepted one step either side of now and not two', () => {
  const now = 1111111111_000;
  const step = totpStep(now);
  const at = (s: number): string => hotp(RFC_SEED, s);
  assert.equal(matchTotp(RFC_SECRET, at(step), now), step);
  assert.equal(matchTotp(RFC_SECRET, at(step - 1), now), step - 1);
  assert.equal(matchTotp(RFC_SECRET, at(step + 1), now), step + 1);
  assert.equal(matchTotp(RFC_SECRET, at(step - 2), now), undefined);
  assert.equal(matchTotp(RFC_SECRET, at(step + 2), now), undefined);
  assert.equal(matchTotp(RFC_SECRET, at(step - 1), now, { window: 0 }), undefined);
});

void test('codes that are not exactly six digits never match', () => {
  const now = 59_000;
  const code = totpCode(RFC_SECRET, now);
  for (const bad of ['', `${code}0`, code.slice(1), ` ${code}`, `${code}\n`, '12345a', '１２３４５６']) {
    assert.equal(verifyTotp(RFC_SECRET, bad, now), false, JSON.stringify(bad));
  }
});

void test('new secrets are 160 random bits in base32 and round-trip', () => {
  const a = newTotpSecret();
  const b = newTotpSecret();
  assert.match(a, /^[A-Z2-7]{32}$/);
  assert.notEqual(a, b);
  assert.equal(base32Decode(a).length, 20);
  assert.equal(base32Encode(base32Decode(a)), a);
  assert.deepEqual(base32Decode('gezd-gnbv gy3t qojq'), base32Decode('GEZDGNBVGY3TQOJQ'));
  assert.throws(() => base32Decode('GEZD1'), (err: Error) => errorCode(err) === 'TOTP_SECRET_INVALID');
});

void test('the otpauth URI carries the secret, issuer, account and parameters, escaped', () => {
  const uri = totpUri({ secret: 'JBSWY3DPEHPK3PXP', account: 'alice smith', issuer: 'Causeway cp.example.com' });
  const url = new URL(uri);
  assert.equal(url.protocol, 'otpauth:');
  assert.ok(uri.startsWith('otpauth://totp/Causeway%20cp.example.com:alice%20smith?'));
  assert.equal(url.searchParams.get('secret'), 'JBSWY3DPEHPK3PXP');
  assert.equal(url.searchParams.get('issuer'), 'Causeway cp.example.com');
  assert.equal(url.searchParams.get('algorithm'), 'SHA1');
  assert.equal(url.searchParams.get('digits'), '6');
  assert.equal(url.searchParams.get('period'), '30');
});
