import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { checkSerial, clientCredentialsToken, fqlString, httpContext, odataString, requestJson, retryAfterMs, rsqlString } from './http.ts';

void describe('serial numbers and query escaping', () => {
  void test('real-world serials pass; quotes, backslashes, control characters, empty and overlong ones are refused', () => {
    for (const ok of ['C02XK1ABJGH5', 'PF3ABCDE', 'VMware-56 4d 3a 1b', '5CG1234XYZ', 'ABC/123:4_5.6']) assert.equal(checkSerial(ok), ok);
    for (const bad of ['', ' lead', 'trail ', "a'b", 'a"b', 'a\\b', 'a\nb', 'a\u0000b', '-x', 'x'.repeat(129), 'a&b', 'a#b', 'ä1']) {
      assert.throws(() => checkSerial(bad), { code: 'MDM_INVALID_SERIAL' }, JSON.stringify(bad));
    }
  });

  void test('OData literals double single quotes, so a quoted serial stays one literal', () => {
    assert.equal(odataString("C02' or serialNumber ne '"), "'C02'' or serialNumber ne '''");
    // Property: the literal, read back by OData's rule, is the input, and its only lone quotes are the delimiters.
    fc.assert(
      fc.property(fc.string(), (s) => {
        const literal = odataString(s);
        const inner = literal.slice(1, -1);
        assert.equal(inner.replaceAll("''", ''), s.replaceAll("'", ''));
        assert.equal(inner.replaceAll("''", "'"), s);
        assert.ok(!inner.replaceAll("''", '').includes("'"));
      }),
    );
  });

  void test('FQL and RSQL literals escape their quote and the backslash', () => {
    assert.equal(fqlString("a'b\\c"), "'a\\'b\\\\c'");
    assert.equal(rsqlString('a"b\\c'), '"a\\"b\\\\c"');
    fc.assert(
      fc.property(fc.string(), (s) => {
        const unescape = (inner: string): string => inner.replace(/\\(.)/g, '$1');
        assert.equal(unescape(fqlString(s).slice(1, -1)), s);
        assert.equal(unescape(rsqlString(s).slice(1, -1)), s);
        assert.ok(!/(^|[^\\])(\\\\)*'/.test(fqlString(s).slice(1, -1)));
      }),
    );
  });
});

void describe('bounded requests', () => {
  let server: Server;
  let base = '';
  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/huge') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`"${'x'.repeat(200_000)}"`);
      } else if (req.url === '/huge-chunked') {
        res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
        for (let i = 0; i < 50; i++) res.write('x'.repeat(10_000));
        res.end();
      } else if (req.url === '/hang') {
        // Never answers; the client's timeout must end it.
      } else if (req.url === '/redirect') {
        res.writeHead(302, { location: 'https://evil.example/' });
        res.end();
      } else if (req.url === '/html') {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>oops</html>');
      } else if (req.url === '/token') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: 'tok', expires_in: 'not a number' }));
      } else {
        res.writeHead(503, { 'retry-after': '120' });
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );

  const ctx = (extra: { timeoutMs?: number; maxResponseBytes?: number } = {}) => httpContext('Test MDM', { resolveSecret: () => Promise.resolve('s'), sleep: () => Promise.resolve(), ...extra });

  void test('a body larger than the limit is refused, whether announced or streamed', async () => {
    await assert.rejects(requestJson(ctx({ maxResponseBytes: 100_000 }), { url: `${base}/huge`, what: 'x' }), { code: 'MDM_BAD_RESPONSE', message: /larger than 100000/ });
    await assert.rejects(requestJson(ctx({ maxResponseBytes: 100_000 }), { url: `${base}/huge-chunked`, what: 'x' }), { code: 'MDM_BAD_RESPONSE' });
  });

  void test('a device manager that never answers times out as unreachable (retryable)', async () => {
    await assert.rejects(requestJson(ctx({ timeoutMs: 200 }), { url: `${base}/hang`, what: 'the lookup' }), { code: 'MDM_UNREACHABLE', retryable: true, message: /within 200 ms/ });
  });

  void test('a redirect is never followed', async () => {
    await assert.rejects(requestJson(ctx(), { url: `${base}/redirect`, what: 'x' }), { code: 'MDM_BAD_RESPONSE', message: /redirect/ });
  });

  void test('a 200 that is not JSON is a bad response', async () => {
    await assert.rejects(requestJson(ctx(), { url: `${base}/html`, what: 'x' }), { code: 'MDM_BAD_RESPONSE' });
  });

  void test('503 with a Retry-After beyond the limit is rate-limited with the wait it asked for', async () => {
    await assert.rejects(requestJson(ctx(), { url: `${base}/unavailable`, what: 'x' }), { code: 'MDM_RATE_LIMITED', retryAfterMs: 120_000 });
  });

  void test('a token without a usable lifetime is used once, not cached', async () => {
    let n = 0;
    const c = { ...ctx(), fetch: ((...args: Parameters<typeof fetch>) => (n++, fetch(...args))) as typeof fetch };
    const tokens = clientCredentialsToken(c, { tokenUrl: `${base}/token`, clientId: 'c', clientSecret: { env: 'X' } }, () => Promise.resolve('s'));
    assert.equal(await tokens.get(), 'tok');
    assert.equal(await tokens.get(), 'tok');
    assert.equal(n, 2);
  });

  void test('concurrent token requests share one fetch', async () => {
    let n = 0;
    const c = { ...ctx(), clock: { now: () => 0 }, fetch: ((...args: Parameters<typeof fetch>) => (n++, fetch(...args))) as typeof fetch };
    const tokens = clientCredentialsToken(c, { tokenUrl: `${base}/token`, clientId: 'c', clientSecret: { env: 'X' } }, () => Promise.resolve('s'));
    await Promise.all([tokens.get(), tokens.get(), tokens.get()]);
    assert.equal(n, 1);
  });

  void test('a secret that cannot be read names the reference, not a value', async () => {
    const tokens = clientCredentialsToken(ctx(), { tokenUrl: `${base}/token`, clientId: 'c', clientSecret: { file: '/run/secrets/mdm' } }, () => Promise.reject(new Error('ENOENT')));
    await assert.rejects(tokens.get(), { code: 'MDM_SECRET_UNAVAILABLE', message: /file \/run\/secrets\/mdm/ });
  });
});

void describe('Retry-After', () => {
  void test('reads seconds, an HTTP date, or CrowdStrike epoch seconds; defaults to 1 s', () => {
    const now = Date.parse('2026-11-27T12:00:00Z');
    assert.equal(retryAfterMs(new Headers({ 'retry-after': '30' }), now), 30_000);
    assert.equal(retryAfterMs(new Headers({ 'retry-after': 'Fri, 27 Nov 2026 12:00:10 GMT' }), now), 10_000);
    assert.equal(retryAfterMs(new Headers({ 'x-ratelimit-retryafter': String(now / 1000 + 5) }), now), 5000);
    assert.equal(retryAfterMs(new Headers({ 'retry-after': 'soon' }), now), 1000);
    assert.equal(retryAfterMs(new Headers(), now), 1000);
  });
});
