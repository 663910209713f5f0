import assert from 'node:assert/strict';
import { createHmac, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { exportJWK, exportSPKI, generateKeyPair } from 'jose';
import { makeServerCert, makeTestCa } from '../../../test/kit/certs.ts';
import { CausewayError } from '../errors.ts';
import { createTokenVerifier } from './verify.ts';
import type { TokenVerifier, TokenVerifierEvent, TokenVerifierOptions } from './verify.ts';
import { fakeClock, handBuiltToken, idTokenClaims, signHandBuilt, startTestIssuer } from './test-issuer.testing.ts';
import type { FakeClock, IssuerKey, TestIssuer } from './test-issuer.testing.ts';

const AUD = 'cluster-a';

/** A verifier against `issuer` that records its fetches and signature checks. */
function verifierFor(issuer: TestIssuer, clock: FakeClock, options: Partial<TokenVerifierOptions> = {}): TokenVerifier & { events: TokenVerifierEvent[]; signatureChecks(): number } {
  const events: TokenVerifierEvent[] = [];
  const verifier = createTokenVerifier({ issuer: issuer.issuer, audience: AUD, clock, allowInsecureHttp: true, onEvent: (e) => events.push(e), ...options });
  return Object.assign(verifier, { events, signatureChecks: () => events.filter((e) => e.type === 'signature').length });
}

async function rejects(promise: Promise<unknown>, code: string): Promise<CausewayError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof CausewayError, `expected a CausewayError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but the token was accepted`);
}

void describe('token verification (KP-03, OP-05, OP-09)', () => {
  let issuer: TestIssuer;
  let rsa: IssuerKey;
  let ec: IssuerKey;
  const clock = fakeClock();
  const claims = (overrides: Record<string, unknown> = {}): Record<string, unknown> => idTokenClaims(issuer.issuer, AUD, clock.now(), overrides);

  before(async () => {
    issuer = await startTestIssuer({ path: '/realms/Dev' });
    rsa = await issuer.addKey('RS256');
    ec = await issuer.addKey('ES256');
  });
  after(() => issuer.close());

  void test('a valid RS256 token and a valid ES256 token are accepted with their identity', async () => {
    issuer.resetCounts();
    const verifier = verifierFor(issuer, clock);
    const token = await issuer.sign(claims({ aud: [AUD, 'other'] }), rsa);
    const verified = await verifier.verify(token);
    assert.equal(verified.subject, 'user-1');
    assert.equal(verified.issuer, issuer.issuer);
    assert.deepEqual(verified.audience, [AUD, 'other']);
    assert.equal(verified.expiresAt.getTime(), Math.floor(clock.now() / 1000) * 1000 + 600_000);
    assert.equal(verified.issuedAt?.getTime(), Math.floor(clock.now() / 1000) * 1000);
    assert.equal(verified.claims['email'], 'ada@example.com');
    const viaEc = await verifier.verify(await issuer.sign(claims(), ec));
    assert.equal(viaEc.subject, 'user-1');
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 1, total: 2 }, 'one discovery and one JWKS fetch serve both');
    assert.equal(verifier.signatureChecks(), 2);
  });

  void describe('KP-03: hostile tokens are refused before any fetch or signature check', () => {
    const pemVariants = async (): Promise<Record<string, Buffer | string>> => {
      const pem = await exportSPKI(rsa.publicKey);
      return {
        'the PEM': pem,
        'the PEM without its final newline': pem.trimEnd(),
        'the PEM with CRLF line ends': pem.replace(/\n/g, '\r\n'),
        'the PEM on one line': pem.replace(/\n/g, ''),
        'the JWK as JSON': JSON.stringify(rsa.publicJwk),
        'the DER': createPublicKey(pem).export({ type: 'spki', format: 'der' }),
        'the modulus': Buffer.from(rsa.publicJwk.n as string, 'base64url'),
      };
    };

    const cases: [string, () => Promise<string> | string, string][] = [
      ['alg none, no signature', () => handBuiltToken({ alg: 'none', kid: rsa.kid }, claims(), ''), 'TOKEN_ALG_NOT_ALLOWED'],
      ['alg none with a signature', () => handBuiltToken({ alg: 'none' }, claims()), 'TOKEN_ALG_NOT_ALLOWED'],
      ['alg None', () => handBuiltToken({ alg: 'None' }, claims()), 'TOKEN_ALG_NOT_ALLOWED'],
      ['alg NONE', () => handBuiltToken({ alg: 'NONE' }, claims()), 'TOKEN_ALG_NOT_ALLOWED'],
      ['alg rs256 in lower case', () => handBuiltToken({ alg: 'rs256', kid: rsa.kid }, claims()), 'TOKEN_ALG_NOT_ALLOWED'],
      ['alg PS256 when only RS256 and ES256 are allowed', () => signHandBuilt({ alg: 'PS256', kid: rsa.kid }, claims(), rsa.privateKey, 'PS256'), 'TOKEN_ALG_NOT_ALLOWED'],
      ['no alg', () => handBuiltToken({ kid: rsa.kid }, claims()), 'TOKEN_MALFORMED'],
      ['alg as a list', () => handBuiltToken({ alg: ['RS256'], kid: rsa.kid }, claims()), 'TOKEN_MALFORMED'],
      ['an embedded jwk (the attacker\'s own key)', async () => {
        const attacker = await generateKeyPair('RS256', { extractable: true });
        return signHandBuilt({ alg: 'RS256', jwk: await exportJWK(attacker.publicKey) }, claims(), attacker.privateKey, 'RS256');
      }, 'TOKEN_HEADER_FORBIDDEN'],
      ['jku pointing elsewhere', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, jku: 'https://evil.example/jwks' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['jku pointing at the issuer\'s own JWKS', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, jku: issuer.jwksUri }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['x5u', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, x5u: 'https://evil.example/cert.pem' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['x5c', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, x5c: ['MIIB'] }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['crit', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, crit: ['exp'] }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['b64 false', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, b64: false }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['zip', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, zip: 'DEF' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['typ at+jwt (an access token, not an ID token)', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid, typ: 'at+jwt' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['kid ../../etc/passwd', () => signHandBuilt({ alg: 'RS256', kid: '../../etc/passwd' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['kid with a backslash path', () => signHandBuilt({ alg: 'RS256', kid: '..\\..\\keys\\a' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ["kid ' OR 1=1 --", () => signHandBuilt({ alg: 'RS256', kid: "' OR 1=1 --" }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['kid with a NUL', () => signHandBuilt({ alg: 'RS256', kid: `${rsa.kid}\u0000` }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['kid of 129 characters', () => signHandBuilt({ alg: 'RS256', kid: 'k'.repeat(129) }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['kid as a number', () => signHandBuilt({ alg: 'RS256', kid: 1 }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['empty kid', () => signHandBuilt({ alg: 'RS256', kid: '' }, claims(), rsa.privateKey, 'RS256'), 'TOKEN_HEADER_FORBIDDEN'],
      ['wrong aud', () => issuer.sign(claims({ aud: 'cluster-b' }), rsa), 'TOKEN_AUDIENCE_MISMATCH'],
      ['aud as an empty list', () => issuer.sign(claims({ aud: [] }), rsa), 'TOKEN_AUDIENCE_MISMATCH'],
      ['aud with a non-string member', () => issuer.sign(claims({ aud: [AUD, 7] }), rsa), 'TOKEN_AUDIENCE_MISMATCH'],
      ['aud as a prefix of ours', () => issuer.sign(claims({ aud: 'cluster-' }), rsa), 'TOKEN_AUDIENCE_MISMATCH'],
      ['no aud', () => issuer.sign(claims({ aud: undefined }), rsa), 'TOKEN_AUDIENCE_MISMATCH'],
      ['iss with a trailing slash', () => issuer.sign(claims({ iss: `${issuer.issuer}/` }), rsa), 'TOKEN_ISSUER_MISMATCH'],
      ['iss in another case', () => issuer.sign(claims({ iss: issuer.issuer.toLowerCase() }), rsa), 'TOKEN_ISSUER_MISMATCH'],
      ['iss as a prefix of ours', () => issuer.sign(claims({ iss: issuer.issuer.slice(0, -1) }), rsa), 'TOKEN_ISSUER_MISMATCH'],
      ['iss with ours as a prefix', () => issuer.sign(claims({ iss: `${issuer.issuer}x` }), rsa), 'TOKEN_ISSUER_MISMATCH'],
      ['iss as an array', () => issuer.sign(claims({ iss: [issuer.issuer] }), rsa), 'TOKEN_ISSUER_MISMATCH'],
      ['no iss', () => issuer.sign(claims({ iss: undefined }), rsa), 'TOKEN_ISSUER_MISMATCH'],
      ['expired beyond the skew', () => issuer.sign(claims({ exp: Math.floor(clock.now() / 1000) - 31 }), rsa), 'TOKEN_EXPIRED'],
      ['not yet valid beyond the skew', () => issuer.sign(claims({ nbf: Math.floor(clock.now() / 1000) + 31 }), rsa), 'TOKEN_NOT_YET_VALID'],
      ['issued in the future beyond the skew', () => issuer.sign(claims({ iat: Math.floor(clock.now() / 1000) + 31 }), rsa), 'TOKEN_NOT_YET_VALID'],
      ['no exp', () => issuer.sign(claims({ exp: undefined }), rsa), 'TOKEN_NO_EXPIRY'],
      ['exp as a string', () => issuer.sign(claims({ exp: String(Math.floor(clock.now() / 1000) + 600) }), rsa), 'TOKEN_MALFORMED'],
      ['exp of 1e400 (Infinity after JSON.parse)', () => signHandBuilt({ alg: 'RS256', kid: rsa.kid }, JSON.stringify(claims()).replace(/"exp":\d+/, '"exp":1e400'), rsa.privateKey, 'RS256'), 'TOKEN_MALFORMED'],
      ['nbf as a string', () => issuer.sign(claims({ nbf: '0' }), rsa), 'TOKEN_MALFORMED'],
      ['no sub', () => issuer.sign(claims({ sub: undefined }), rsa), 'TOKEN_MALFORMED'],
      ['two segments', () => 'eyJhbGciOiJSUzI1NiJ9.e30', 'TOKEN_MALFORMED'],
      ['five segments (a JWE)', () => 'a.b.c.d.e', 'TOKEN_MALFORMED'],
      ['an empty string', () => '', 'TOKEN_MALFORMED'],
      ['padding characters', async () => `${await issuer.sign(claims(), rsa)}==`, 'TOKEN_MALFORMED'],
      ['standard base64 characters', async () => (await issuer.sign(claims(), rsa)).replace(/-/g, '+').replace(/_/g, '/') + '+', 'TOKEN_MALFORMED'],
      ['a header that is JSON but not an object', () => handBuiltToken('["RS256"]', claims()), 'TOKEN_MALFORMED'],
      ['a header that is not JSON', () => handBuiltToken('{alg:RS256}', claims()), 'TOKEN_MALFORMED'],
      ['a payload that is not UTF-8', () => `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: rsa.kid })).toString('base64url')}.${Buffer.from([0x7b, 0xff, 0x7d]).toString('base64url')}.${Buffer.alloc(256).toString('base64url')}`, 'TOKEN_MALFORMED'],
      ['an ES256 signature that is not 64 bytes', () => handBuiltToken({ alg: 'ES256', kid: ec.kid }, claims(), Buffer.alloc(72, 1)), 'TOKEN_MALFORMED'],
      ['a token over 8 KiB', () => issuer.sign(claims({ padding: 'x'.repeat(9000) }), rsa), 'TOKEN_MALFORMED'],
      ['a non-string token', () => 42 as unknown as string, 'TOKEN_MALFORMED'],
    ];
    for (const [name, make, code] of cases) {
      void test(`${name}: ${code}`, async () => {
        issuer.resetCounts();
        const verifier = verifierFor(issuer, clock);
        const err = await rejects(verifier.verify(await make()), code);
        assert.deepEqual(issuer.requests, { discovery: 0, jwks: 0, total: 0 }, 'nothing was fetched');
        assert.equal(verifier.signatureChecks(), 0, 'no signature was checked');
        assert.equal(err.retryable, false);
      });
    }

    void test('RS256→HS256 with the public key as the HMAC secret, in every encoding: TOKEN_ALG_NOT_ALLOWED', async () => {
      for (const [name, secret] of Object.entries(await pemVariants())) {
        for (const alg of ['HS256', 'HS384', 'HS512']) {
          issuer.resetCounts();
          const verifier = verifierFor(issuer, clock);
          const unsigned = `${Buffer.from(JSON.stringify({ alg, kid: rsa.kid })).toString('base64url')}.${Buffer.from(JSON.stringify(claims())).toString('base64url')}`;
          const mac = createHmac(`sha${alg.slice(2)}`, secret).update(unsigned).digest('base64url');
          await rejects(verifier.verify(`${unsigned}.${mac}`), 'TOKEN_ALG_NOT_ALLOWED').catch((err: unknown) => assert.fail(`${alg} with ${name}: ${String(err)}`));
          assert.equal(issuer.requests.total, 0);
          assert.equal(verifier.signatureChecks(), 0);
        }
      }
    });

    void test('an HMAC signature under alg RS256 fails the signature check: TOKEN_SIGNATURE_INVALID', async () => {
      const pem = await exportSPKI(rsa.publicKey);
      const unsigned = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: rsa.kid })).toString('base64url')}.${Buffer.from(JSON.stringify(claims())).toString('base64url')}`;
      const verifier = verifierFor(issuer, clock);
      await rejects(verifier.verify(`${unsigned}.${createHmac('sha256', pem).update(unsigned).digest('base64url')}`), 'TOKEN_SIGNATURE_INVALID');
    });

    void test('the messages of refusals never contain the token', async () => {
      const verifier = verifierFor(issuer, clock);
      for (const token of [await issuer.sign(claims({ aud: 'cluster-b' }), rsa), await issuer.sign(claims({ exp: 1 }), rsa), handBuiltToken({ alg: 'none' }, claims())]) {
        const err = await verifier.verify(token).then(() => assert.fail('accepted'), (e: unknown) => e as CausewayError);
        for (const segment of token.split('.').filter((s) => s.length > 8)) assert.ok(!err.message.includes(segment));
      }
    });
  });

  void test('tokens within the clock skew are accepted; at the skew they are not', async () => {
    const verifier = verifierFor(issuer, clock);
    const now = Math.floor(clock.now() / 1000);
    await verifier.verify(await issuer.sign(claims({ exp: now - 29 }), rsa));
    await verifier.verify(await issuer.sign(claims({ nbf: now + 29, iat: now + 29 }), rsa));
    await rejects(verifier.verify(await issuer.sign(claims({ exp: now - 30 }), rsa)), 'TOKEN_EXPIRED');
    const strict = verifierFor(issuer, clock, { clockToleranceSec: 0 });
    await rejects(strict.verify(await issuer.sign(claims({ exp: now - 1 }), rsa)), 'TOKEN_EXPIRED');
  });

  void test('OP-05: a token minted for cluster A is refused by cluster B; a verifier for both accepts it', async () => {
    const tokenForA = await issuer.sign(claims({ aud: 'cluster-a' }), rsa);
    await rejects(verifierFor(issuer, clock, { audience: 'cluster-b' }).verify(tokenForA), 'TOKEN_AUDIENCE_MISMATCH');
    await rejects(verifierFor(issuer, clock, { audience: ['cluster-b', 'cluster-c'] }).verify(tokenForA), 'TOKEN_AUDIENCE_MISMATCH');
    const both = await verifierFor(issuer, clock, { audience: ['cluster-b', 'cluster-a'] }).verify(tokenForA);
    assert.deepEqual(both.audience, ['cluster-a']);
  });

  void test('a token signed by another key under the issuer\'s kid: TOKEN_SIGNATURE_INVALID', async () => {
    const attacker = await generateKeyPair('RS256', { extractable: true });
    const verifier = verifierFor(issuer, clock);
    await rejects(verifier.verify(signHandBuilt({ alg: 'RS256', kid: rsa.kid }, claims(), attacker.privateKey, 'RS256')), 'TOKEN_SIGNATURE_INVALID');
    assert.equal(verifier.signatureChecks(), 1);
    const attackerEc = await generateKeyPair('ES256', { extractable: true });
    await rejects(verifier.verify(signHandBuilt({ alg: 'ES256', kid: ec.kid }, claims(), attackerEc.privateKey, 'ES256')), 'TOKEN_SIGNATURE_INVALID');
  });

  void test('a genuine token with one payload character changed: TOKEN_SIGNATURE_INVALID', async () => {
    const verifier = verifierFor(issuer, clock);
    const token = await issuer.sign(claims(), rsa);
    const [h, p, s] = token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, sub: 'admin' })).toString('base64url')}.${s}`;
    await rejects(verifier.verify(forged), 'TOKEN_SIGNATURE_INVALID');
  });

  void test('the key type must fit alg: an ES256 token naming an RSA key\'s kid is TOKEN_UNKNOWN_KEY', async () => {
    const verifier = verifierFor(issuer, clock);
    await rejects(verifier.verify(signHandBuilt({ alg: 'ES256', kid: rsa.kid }, claims(), ec.privateKey, 'ES256')), 'TOKEN_UNKNOWN_KEY');
    assert.equal(verifier.signatureChecks(), 0);
  });

  void test('a JWKS key whose own alg differs is not used for another algorithm (PS256 token, RS256 key)', async () => {
    const verifier = verifierFor(issuer, clock, { algorithms: ['RS256', 'PS256'] });
    await rejects(verifier.verify(signHandBuilt({ alg: 'PS256', kid: rsa.kid }, claims(), rsa.privateKey, 'PS256')), 'TOKEN_UNKNOWN_KEY');
  });

  void test('a token without kid is verified when exactly one key fits its alg', async () => {
    const verifier = verifierFor(issuer, clock);
    const token = signHandBuilt({ alg: 'ES256' }, claims(), ec.privateKey, 'ES256');
    assert.equal((await verifier.verify(token)).subject, 'user-1');
  });
});

void describe('the issuer\'s keys', () => {
  void test('OP-09: a discovery document whose issuer differs by a trailing slash is refused (ISSUER_MISCONFIGURED), and so is one in another case', async (t) => {
    const issuer = await startTestIssuer({ path: '/oidc' });
    t.after(() => issuer.close());
    await issuer.addKey('RS256');
    const clock = fakeClock();
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    for (const claimed of [`${issuer.issuer}/`, issuer.issuer.toUpperCase(), issuer.issuer.replace('/oidc', '/OIDC'), [issuer.issuer]]) {
      issuer.discovery = { issuer: claimed };
      const err = await rejects(verifierFor(issuer, clock).verify(token), 'ISSUER_MISCONFIGURED');
      assert.equal(err.retryable, false);
    }
    // And the configured issuer with a trailing slash against a discovery document without one.
    issuer.discovery = {};
    const slashed = createTokenVerifier({ issuer: `${issuer.issuer}/`, audience: AUD, clock, allowInsecureHttp: true });
    await rejects(slashed.verify(await issuer.sign(idTokenClaims(`${issuer.issuer}/`, AUD, clock.now()))), 'ISSUER_MISCONFIGURED');
    assert.equal(issuer.requests.jwks, 0, 'no JWKS was fetched from a discovery document that failed');
    assert.equal((await verifierFor(issuer, clock).verify(token)).subject, 'user-1');
  });

  void test('a jwks_uri that is http on a non-loopback host, or not a URL, is refused', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('RS256');
    const clock = fakeClock();
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    for (const jwksUri of ['http://keys.example.com/jwks', 'ftp://127.0.0.1/jwks', 'not a url', 'https://user:pw@keys.example.com/jwks']) {
      issuer.discovery = { jwks_uri: jwksUri };
      await rejects(verifierFor(issuer, clock).verify(token), 'ISSUER_MISCONFIGURED');
    }
  });

  void test('concurrent verifications on a cold cache share one discovery and one JWKS fetch', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    const results = await Promise.all(Array.from({ length: 50 }, () => verifier.verify(token)));
    assert.equal(results.length, 50);
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 1, total: 2 });
  });

  void test('OP-08: unknown kids cause at most one JWKS fetch per interval, shared by concurrent callers', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    const key = await issuer.addKey('RS256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const claims = (): Record<string, unknown> => idTokenClaims(issuer.issuer, AUD, clock.now());
    await verifier.verify(await issuer.sign(claims()));
    assert.equal(issuer.requests.jwks, 1);
    const unknown = (i: number): string => signHandBuilt({ alg: 'RS256', kid: `unknown-${i}` }, claims(), key.privateKey, 'RS256');

    // Within the interval of the first fetch: no refetch at all.
    const early = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => verifier.verify(unknown(i))));
    assert.ok(early.every((r) => r.status === 'rejected' && (r.reason as CausewayError).code === 'TOKEN_UNKNOWN_KEY'));
    assert.equal(issuer.requests.jwks, 1);

    // After it: 100 concurrent unknown kids share exactly one refetch.
    clock.advance(30_000);
    const burst = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => verifier.verify(unknown(i))));
    assert.ok(burst.every((r) => r.status === 'rejected' && (r.reason as CausewayError).code === 'TOKEN_UNKNOWN_KEY'));
    assert.equal(issuer.requests.jwks, 2);
    clock.advance(29_000);
    await rejects(verifier.verify(unknown(1)), 'TOKEN_UNKNOWN_KEY');
    assert.equal(issuer.requests.jwks, 2);
    clock.advance(1_000);
    await rejects(verifier.verify(unknown(1)), 'TOKEN_UNKNOWN_KEY');
    assert.equal(issuer.requests.jwks, 3);
    assert.equal(issuer.requests.discovery, 1, 'discovery stays cached');
    assert.equal(verifier.signatureChecks(), 1);
  });

  void test('OP-08: a new kid is fetched once and works; a removed key stops working at the next refresh', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    const oldKey = await issuer.addKey('RS256', 'old');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const claims = (): Record<string, unknown> => idTokenClaims(issuer.issuer, AUD, clock.now());
    await verifier.verify(await issuer.sign(claims(), oldKey));

    clock.advance(31_000);
    const newKey = await issuer.addKey('ES256', 'new');
    await verifier.verify(await issuer.sign(claims(), newKey));
    assert.equal(issuer.requests.jwks, 2, 'the new kid caused one refetch');
    await verifier.verify(await issuer.sign(claims(), newKey));
    assert.equal(issuer.requests.jwks, 2, 'and only one');

    issuer.removeKey('old');
    const oldToken = await issuer.sign(claims(), oldKey);
    await verifier.verify(oldToken); // still cached: the overlap
    clock.advance(5 * 60_000); // the JWKS cache (no Cache-Control: 5 min) expires
    await rejects(verifier.verify(oldToken), 'TOKEN_UNKNOWN_KEY');
    assert.equal(issuer.requests.jwks, 3);
    await verifier.verify(await issuer.sign(claims(), newKey));
  });

  void test('Cache-Control max-age is respected within bounds (at least the refetch interval, at most an hour)', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const verifyNow = async (): Promise<void> => {
      await verifier.verify(await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now())));
    };
    issuer.jwksCacheControl = 'public, max-age=120';
    await verifyNow();
    clock.advance(119_000);
    await verifyNow();
    assert.equal(issuer.requests.jwks, 1);
    clock.advance(1_000);
    issuer.jwksCacheControl = 'no-store';
    await verifyNow();
    assert.equal(issuer.requests.jwks, 2);
    clock.advance(29_000);
    await verifyNow();
    assert.equal(issuer.requests.jwks, 2, 'no-store is held for the minimum, not refetched per token');
    clock.advance(1_000);
    issuer.jwksCacheControl = 'max-age=31536000';
    await verifyNow();
    assert.equal(issuer.requests.jwks, 3);
    clock.advance(60 * 60_000);
    await verifyNow();
    assert.equal(issuer.requests.jwks, 4, 'a year is cut to an hour');
  });

  void test('an unreachable JWKS is ISSUER_UNREACHABLE (retryable), retried only after a backoff', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    issuer.jwksStatus = 503;
    const err = await rejects(verifier.verify(token), 'ISSUER_UNREACHABLE');
    assert.equal(err.retryable, true);
    for (let i = 0; i < 20; i++) await rejects(verifier.verify(token), 'ISSUER_UNREACHABLE');
    assert.equal(issuer.requests.jwks, 1, 'failures are not retried per token');
    issuer.jwksStatus = 200;
    clock.advance(5_000);
    await verifier.verify(token);
    assert.equal(issuer.requests.jwks, 2);
  });

  void test('when a refresh fails, the last good keys serve for an hour past their expiry, then ISSUER_UNREACHABLE', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const verifyNow = async (): Promise<unknown> => verifier.verify(await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now())));
    await verifyNow();
    issuer.jwksStatus = 500;
    clock.advance(5 * 60_000);
    await verifyNow();
    assert.equal(issuer.requests.jwks, 2);
    clock.advance(59 * 60_000);
    await verifyNow();
    clock.advance(60_000);
    await rejects(verifyNow(), 'ISSUER_UNREACHABLE');
  });

  void test('a JWKS that is too large, not JSON or not a key set is ISSUER_MISCONFIGURED', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    for (const body of [JSON.stringify({ keys: [], pad: 'x'.repeat(300 * 1024) }), '<html>', '{"keys":{}}', '[]', JSON.stringify({ keys: Array.from({ length: 101 }, () => issuer.keys[0]?.publicJwk) })]) {
      issuer.jwksBody = body;
      await rejects(verifierFor(issuer, clock).verify(token), 'ISSUER_MISCONFIGURED');
    }
  });

  void test('weak, private, encryption-only and duplicated keys in the JWKS are never used', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    const clock = fakeClock();
    const claims = idTokenClaims(issuer.issuer, AUD, clock.now());
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const strong = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = (k: typeof weak, kid: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ ...k.publicKey.export({ format: 'jwk' }), kid, ...extra });
    issuer.jwksBody = JSON.stringify({
      keys: [
        pub(weak, 'weak'),
        { ...strong.privateKey.export({ format: 'jwk' }), kid: 'private' },
        pub(strong, 'enc', { use: 'enc' }),
        pub(strong, 'ops', { key_ops: ['encrypt'] }),
        pub(strong, 'twice'),
        pub(strong, 'twice'),
        pub(strong, 'good'),
      ],
    });
    const verifier = verifierFor(issuer, clock);
    for (const kid of ['weak', 'private', 'enc', 'ops', 'twice']) {
      const key = kid === 'weak' ? weak.privateKey : strong.privateKey;
      await rejects(verifier.verify(signHandBuilt({ alg: 'RS256', kid }, claims, key, 'RS256')), 'TOKEN_UNKNOWN_KEY');
    }
    assert.equal(verifier.signatureChecks(), 0);
    assert.equal((await verifier.verify(signHandBuilt({ alg: 'RS256', kid: 'good' }, claims, strong.privateKey, 'RS256'))).subject, 'user-1');
    // Without a kid, two RSA keys fit: ambiguous, not tried one by one.
    await rejects(verifier.verify(signHandBuilt({ alg: 'RS256' }, claims, strong.privateKey, 'RS256')), 'TOKEN_UNKNOWN_KEY');
  });

  void test('a fixed jwksUri skips discovery', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('RS256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock, { jwksUri: issuer.jwksUri });
    await verifier.verify(await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now())));
    assert.deepEqual(issuer.requests, { discovery: 0, jwks: 1, total: 1 });
  });

  void test('an issuer over HTTPS with a private CA is trusted through caPem, and not without it', async (t) => {
    const ca = await makeTestCa();
    const cert = await makeServerCert(ca, { ipAddresses: ['127.0.0.1'] });
    const issuer = await startTestIssuer({ tls: cert });
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    const trusted = createTokenVerifier({ issuer: issuer.issuer, audience: AUD, clock, caPem: ca.certPem });
    assert.equal((await trusted.verify(token)).subject, 'user-1');
    const untrusted = createTokenVerifier({ issuer: issuer.issuer, audience: AUD, clock });
    const err = await rejects(untrusted.verify(token), 'ISSUER_UNREACHABLE');
    assert.equal(err.retryable, true);
    assert.equal(issuer.requests.total, 2, 'the untrusted verifier never completed a request');
  });

  void test('close() ends a verification waiting on the issuer and refuses later ones with VERIFIER_CLOSED', async (t) => {
    const issuer = await startTestIssuer();
    t.after(() => issuer.close());
    await issuer.addKey('ES256');
    const clock = fakeClock();
    const verifier = verifierFor(issuer, clock);
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()));
    let release = (): void => undefined;
    issuer.hold = new Promise((resolve) => (release = resolve));
    const pending = verifier.verify(token);
    while (issuer.requests.total === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    verifier.close();
    await rejects(pending, 'VERIFIER_CLOSED');
    await rejects(verifier.verify(token), 'VERIFIER_CLOSED');
    release();
  });

  void test('options are checked when the verifier is made', () => {
    const bad: [string, Partial<TokenVerifierOptions>][] = [
      ['an http issuer', { issuer: 'http://idp.example.com' }],
      ['an http issuer off loopback even when insecure http is allowed', { issuer: 'http://idp.example.com', allowInsecureHttp: true }],
      ['an issuer with a query', { issuer: 'https://idp.example.com/?x=1' }],
      ['an issuer with a fragment', { issuer: 'https://idp.example.com/#x' }],
      ['an issuer that is not a URL', { issuer: 'idp.example.com' }],
      ['an http jwksUri', { jwksUri: 'http://idp.example.com/jwks' }],
      ['an empty audience', { audience: '' }],
      ['no audiences', { audience: [] }],
      ['HS256 among the algorithms', { algorithms: ['HS256' as 'RS256'] }],
      ['none as the algorithm', { algorithms: ['none' as 'RS256'] }],
      ['no algorithms', { algorithms: [] }],
      ['a negative skew', { clockToleranceSec: -1 }],
      ['a skew of ten minutes', { clockToleranceSec: 600 }],
      ['a refetch interval under a second', { minRefetchIntervalMs: 10 }],
      ['caPem with a fetch of its own', { caPem: 'x', fetch: globalThis.fetch }],
    ];
    for (const [name, options] of bad) {
      assert.throws(() => createTokenVerifier({ issuer: 'https://idp.example.com', audience: AUD, ...options }), (err: unknown) => err instanceof CausewayError && err.code === 'OIDC_CONFIG_INVALID', name);
    }
  });
});

void describe('X-03: fuzzing verify()', () => {
  let issuer: TestIssuer;
  let rsa: IssuerKey;
  let ec: IssuerKey;
  let verifier: TokenVerifier;
  const clock = fakeClock();

  before(async () => {
    issuer = await startTestIssuer();
    rsa = await issuer.addKey('RS256');
    ec = await issuer.addKey('ES256');
    verifier = createTokenVerifier({ issuer: issuer.issuer, audience: AUD, clock, allowInsecureHttp: true, algorithms: ['RS256', 'ES256', 'PS256', 'EdDSA'] });
    await verifier.verify(await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now())));
  });
  after(async () => {
    verifier.close();
    await issuer.close();
  });

  const refused = async (token: string): Promise<void> => {
    try {
      await verifier.verify(token);
    } catch (err) {
      assert.ok(err instanceof CausewayError, `not a CausewayError: ${String(err)}`);
      return;
    }
    assert.fail('an unsigned or foreign token was accepted');
  };

  void test('arbitrary strings are refused with a CausewayError', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.stringMatching(/^[A-Za-z0-9_.-]{0,400}$/)), refused), { numRuns: 500 });
  });

  void test('JWT-shaped tokens with arbitrary headers, claims and signatures are refused with a CausewayError', async () => {
    const header = fc.oneof(
      fc.jsonValue(),
      fc.record(
        { alg: fc.constantFrom('RS256', 'ES256', 'PS256', 'EdDSA', 'HS256', 'none', ''), kid: fc.constantFrom(rsa.kid, ec.kid, 'nope', '../x'), typ: fc.constantFrom('JWT', 'jwt', 'at+jwt'), x5t: fc.string() },
        { requiredKeys: ['alg'] },
      ),
    );
    const payload = fc.oneof(
      fc.jsonValue(),
      fc.record({ iss: fc.constantFrom(issuer.issuer, `${issuer.issuer}/`), aud: fc.constantFrom(AUD, [AUD], ['x']), sub: fc.string(), exp: fc.oneof(fc.integer(), fc.double()), nbf: fc.integer(), iat: fc.integer() }, { requiredKeys: [] }),
    );
    const signature = fc.oneof(fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.uint8Array({ minLength: 256, maxLength: 256 }), fc.uint8Array({ maxLength: 300 }));
    await fc.assert(
      fc.asyncProperty(header, payload, signature, async (h, p, s) => {
        await refused(handBuiltToken(JSON.stringify(h) ?? 'null', JSON.stringify(p) ?? 'null', Buffer.from(s)));
      }),
      { numRuns: 300 },
    );
  });

  void test('tokens signed by anyone but the issuer are refused, whatever kid, alg and claims they carry', async () => {
    const attackerRsa = await generateKeyPair('RS256', { extractable: true });
    const attackerEc = await generateKeyPair('ES256', { extractable: true });
    const now = Math.floor(clock.now() / 1000);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<'RS256' | 'ES256' | 'PS256'>('RS256', 'ES256', 'PS256'),
        fc.option(fc.constantFrom(rsa.kid, ec.kid), { nil: undefined }),
        fc.record({ sub: fc.string({ minLength: 1 }), exp: fc.integer({ min: now, max: now + 86400 }), groups: fc.array(fc.string()) }),
        async (alg, kid, extra) => {
          const header = kid === undefined ? { alg } : { alg, kid };
          const key = alg === 'ES256' ? attackerEc.privateKey : attackerRsa.privateKey;
          await refused(signHandBuilt(header, idTokenClaims(issuer.issuer, AUD, clock.now(), extra), key, alg));
        },
      ),
      { numRuns: 100 },
    );
  });

  void test('a genuine token with any one character changed is refused', async () => {
    const token = await issuer.sign(idTokenClaims(issuer.issuer, AUD, clock.now()), rsa);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.';
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: token.length - 1 }), fc.constantFrom(...alphabet), async (i, c) => {
        fc.pre(token[i] !== c);
        await refused(token.slice(0, i) + c + token.slice(i + 1));
      }),
      { numRuns: 300 },
    );
  });
});
