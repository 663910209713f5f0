import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatConnectResponse, parseConnectHead, parseConnectResponseHead } from './connect-request.ts';
import type { ConnectParse } from './connect-request.ts';

const KUBECTL_HEAD =
  'CONNECT mykube.corp.example.com:443 HTTP/1.1\r\n' +
  'Host: mykube.corp.example.com:443\r\n' +
  'User-Agent: kubectl/v1.35.0 (linux/amd64) kubernetes/abcdef\r\n' +
  'Proxy-Authorization: Basic dXNlcjpwYXNz\r\n' +
  '\r\n';

function bytes(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

function head(requestLine: string, ...headers: string[]): Buffer {
  return bytes(`${requestLine}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`);
}

/** Feeds `input` as a sequence of growing buffers split at `cuts`, as a socket would deliver it. */
function feedInPieces(input: Buffer, cuts: number[]): ConnectParse[] {
  const ends = [...new Set(cuts.map((c) => Math.min(c, input.length)))].sort((a, b) => a - b).filter((c) => c > 0);
  if (ends.at(-1) !== input.length) ends.push(input.length);
  return ends.map((end) => parseConnectHead(input.subarray(0, end)));
}

void describe('parseConnectHead', () => {
  void test('parses a kubectl CONNECT, keeping header order and names, and leaves tunnel bytes after headLength', () => {
    const input = Buffer.concat([bytes(KUBECTL_HEAD), Buffer.from([0x16, 0x03, 0x01, 0x00])]);
    const result = parseConnectHead(input);
    assert.deepEqual(result, {
      state: 'done',
      authority: 'mykube.corp.example.com:443',
      target: { host: 'mykube.corp.example.com', port: 443, kind: 'dns' },
      headers: [
        ['Host', 'mykube.corp.example.com:443'],
        ['User-Agent', 'kubectl/v1.35.0 (linux/amd64) kubernetes/abcdef'],
        ['Proxy-Authorization', 'Basic dXNlcjpwYXNz'],
      ],
      headLength: KUBECTL_HEAD.length,
    });
    assert.deepEqual([...input.subarray(result.state === 'done' ? result.headLength : 0)], [0x16, 0x03, 0x01, 0x00]);
  });

  const accepted: Array<[string, Buffer, string]> = [
    ['accepts HTTP/1.0', head('CONNECT db.internal:5432 HTTP/1.0'), 'db.internal:5432'],
    ['accepts a request without Host', head('CONNECT 10.0.0.1:22 HTTP/1.1'), '10.0.0.1:22'],
    ['accepts a Host that is the target after canonicalisation', head('CONNECT mykube.example.com:443 HTTP/1.1', 'host: MyKube.Example.com.:443'), 'mykube.example.com:443'],
    ['accepts an IPv6 target and a matching Host', head('CONNECT [FD00::1]:443 HTTP/1.1', 'Host: [fd00:0::1]:443'), 'fd00::1'],
    ['accepts an empty header value and trims optional whitespace', head('CONNECT a.example:1 HTTP/1.1', 'X-Empty:', 'X-Padded: \t v \t'), 'a.example:1'],
    ['accepts obs-text in a header value', bytes('CONNECT a.example:1 HTTP/1.1\r\nX-Latin: caf\xe9\r\n\r\n'), 'a.example:1'],
  ];
  for (const [name, input, expected] of accepted) {
    void test(name, () => {
      const result = parseConnectHead(input);
      assert.equal(result.state, 'done', JSON.stringify(result));
      if (result.state === 'done') assert.ok(result.authority.includes(expected) || result.target.host === expected || `${result.target.host}:${result.target.port}` === expected);
    });
  }

  void test('keeps the trimmed value and original name of every header', () => {
    const result = parseConnectHead(head('CONNECT a.example:1 HTTP/1.1', 'X-Padded: \t v w \t', 'x-lower:x'));
    assert.equal(result.state, 'done');
    if (result.state === 'done') assert.deepEqual(result.headers, [['X-Padded', 'v w'], ['x-lower', 'x']]);
  });

  void test('reports incomplete for every proper prefix of a valid head', () => {
    const input = bytes(KUBECTL_HEAD);
    for (let end = 0; end < input.length; end++) {
      assert.deepEqual(parseConnectHead(input.subarray(0, end)), { state: 'incomplete' }, `prefix of ${end} bytes`);
    }
  });

  const refused: Array<[string, Buffer, 400 | 405 | 431, string]> = [
    ['LP-06 refuses an absolute-form GET', head('GET http://internal.example.com/ HTTP/1.1', 'Host: internal.example.com'), 405, 'not-connect'],
    ['LP-06 refuses an origin-form GET', head('GET / HTTP/1.1', 'Host: localhost:8081'), 405, 'not-connect'],
    ['refuses a POST', head('POST /api HTTP/1.1', 'Content-Length: 0'), 405, 'not-connect'],
    ['refuses a lower-case connect method', head('connect a.example:443 HTTP/1.1'), 405, 'not-connect'],
    ['LP-06 refuses CRLF injected into the authority (the line ends early)', bytes('CONNECT a.example.com:443\r\nX-Injected: 1 HTTP/1.1\r\n\r\n'), 400, 'bad-request-line'],
    ['LP-06 refuses a percent-encoded CRLF in the authority', head('CONNECT a.example.com%0d%0a:443 HTTP/1.1'), 400, 'bad-authority'],
    ['LP-06 refuses a NUL in the authority', head('CONNECT a\u0000.example.com:443 HTTP/1.1'), 400, 'bad-authority'],
    ['LP-06 refuses a bare CR in the authority', head('CONNECT a\r.example.com:443 HTTP/1.1'), 400, 'bare-cr'],
    ['LP-06 refuses an absolute URL as the CONNECT target', head('CONNECT http://a.example.com:443/ HTTP/1.1'), 400, 'bad-authority'],
    ['LP-03 refuses userinfo in the CONNECT target', head('CONNECT user@a.example.com:443 HTTP/1.1'), 400, 'bad-authority'],
    ['LP-03 refuses an ambiguous IPv4 target', head('CONNECT 0x7f.1:443 HTTP/1.1'), 400, 'ambiguous-ip'],
    ['refuses a CONNECT without a port', head('CONNECT a.example.com HTTP/1.1'), 400, 'bad-port'],
    ['refuses a missing version', head('CONNECT a.example.com:443'), 400, 'bad-request-line'],
    ['refuses HTTP/2.0', head('CONNECT a.example.com:443 HTTP/2.0'), 400, 'bad-version'],
    ['refuses a lower-case version', head('CONNECT a.example.com:443 http/1.1'), 400, 'bad-version'],
    ['refuses a trailing space after the version', head('CONNECT a.example.com:443 HTTP/1.1 '), 400, 'bad-request-line'],
    ['refuses two spaces before the target', head('CONNECT  a.example.com:443 HTTP/1.1'), 400, 'bad-request-line'],
    ['refuses a tab as a separator', head('CONNECT\ta.example.com:443 HTTP/1.1'), 400, 'bad-request-line'],
    ['refuses a leading empty line', bytes('\r\nCONNECT a.example.com:443 HTTP/1.1\r\n\r\n'), 400, 'bad-request-line'],
    ['AT-09 refuses Content-Length on a CONNECT', head('CONNECT a.example.com:443 HTTP/1.1', 'Content-Length: 5'), 400, 'content-length'],
    ['AT-09 refuses Content-Length: 0 on a CONNECT', head('CONNECT a.example.com:443 HTTP/1.1', 'content-length: 0'), 400, 'content-length'],
    ['AT-09 refuses duplicate Content-Length', head('CONNECT a.example.com:443 HTTP/1.1', 'Content-Length: 5', 'Content-Length: 6'), 400, 'content-length'],
    ['AT-09 refuses Transfer-Encoding on a CONNECT', head('CONNECT a.example.com:443 HTTP/1.1', 'Transfer-Encoding: chunked'), 400, 'transfer-encoding'],
    ['AT-09 refuses CL.TE', head('CONNECT a.example.com:443 HTTP/1.1', 'Content-Length: 4', 'Transfer-Encoding: chunked'), 400, 'content-length'],
    ['AT-09 refuses TE.CL', head('CONNECT a.example.com:443 HTTP/1.1', 'TRANSFER-ENCODING: chunked', 'Content-Length: 4'), 400, 'transfer-encoding'],
    ['AT-09 refuses Transfer-Encoding with a chunk extension', head('CONNECT a.example.com:443 HTTP/1.1', 'Transfer-Encoding: chunked;ext="x"'), 400, 'transfer-encoding'],
    ['AT-09 refuses whitespace between a header name and its colon', head('CONNECT a.example.com:443 HTTP/1.1', 'Transfer-Encoding : chunked'), 400, 'bad-header-name'],
    ['AT-09 refuses obs-fold', head('CONNECT a.example.com:443 HTTP/1.1', 'X-Folded: a', ' b'), 400, 'obs-fold'],
    ['AT-09 refuses obs-fold with a tab', head('CONNECT a.example.com:443 HTTP/1.1', 'X-Folded: a', '\tTransfer-Encoding: chunked'), 400, 'obs-fold'],
    ['AT-09 refuses a bare LF ending a header', bytes('CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com:443\n\r\n'), 400, 'bare-lf'],
    ['AT-09 refuses a bare LF ending the request line', bytes('CONNECT a.example.com:443 HTTP/1.1\n\r\n'), 400, 'bare-lf'],
    ['AT-09 refuses a head ended by bare LFs', bytes('CONNECT a.example.com:443 HTTP/1.1\n\n'), 400, 'bare-lf'],
    ['AT-09 refuses a bare CR inside a header', bytes('CONNECT a.example.com:443 HTTP/1.1\r\nX-A: b\rTransfer-Encoding: chunked\r\n\r\n'), 400, 'bare-cr'],
    ['AT-09 refuses a NUL in a header value', head('CONNECT a.example.com:443 HTTP/1.1', 'X-A: b\u0000c'), 400, 'bad-header-value'],
    ['AT-09 refuses DEL in a header value', head('CONNECT a.example.com:443 HTTP/1.1', 'X-A: b\u007fc'), 400, 'bad-header-value'],
    ['AT-09 refuses chunk-size junk as a header line', head('CONNECT a.example.com:443 HTTP/1.1', '0;ext'), 400, 'bad-header-name'],
    ['refuses a header name that is not a token', head('CONNECT a.example.com:443 HTTP/1.1', 'X(A): b'), 400, 'bad-header-name'],
    ['refuses a header with an empty name', head('CONNECT a.example.com:443 HTTP/1.1', ': b'), 400, 'bad-header-name'],
    ['refuses a header line without a colon', head('CONNECT a.example.com:443 HTTP/1.1', 'NoColon'), 400, 'bad-header-name'],
    ['refuses a second Host header', head('CONNECT a.example.com:443 HTTP/1.1', 'Host: a.example.com:443', 'host: a.example.com:443'), 400, 'duplicate-host'],
    ['AT-02 refuses a Host naming another service', head('CONNECT a.example.com:443 HTTP/1.1', 'Host: b.example.com:443'), 400, 'host-mismatch'],
    ['refuses a Host with another port', head('CONNECT a.example.com:443 HTTP/1.1', 'Host: a.example.com:8443'), 400, 'host-mismatch'],
    ['refuses a Host without the port', head('CONNECT a.example.com:443 HTTP/1.1', 'Host: a.example.com'), 400, 'host-mismatch'],
    ['LP-02 refuses the proxy address as Host (a rebinding page)', head('CONNECT a.example.com:443 HTTP/1.1', 'Host: localhost:8081'), 400, 'host-mismatch'],
    ['refuses an empty Host', head('CONNECT a.example.com:443 HTTP/1.1', 'Host:'), 400, 'host-mismatch'],
  ];
  for (const [name, input, status, code] of refused) {
    void test(name, () => {
      const result = parseConnectHead(input);
      assert.equal(result.state, 'error', JSON.stringify(result));
      if (result.state === 'error') {
        assert.equal(result.code, code, result.message);
        assert.equal(result.status, status);
        assert.ok(result.message.length > 0);
      }
    });
  }

  void test('refuses a non-CONNECT method as soon as its request line is complete', () => {
    assert.deepEqual(parseConnectHead(bytes('GET / HTTP/1.1\r\nHost: x')).state, 'error');
    assert.deepEqual(parseConnectHead(bytes('GET / HTTP/1.1')).state, 'incomplete');
  });

  void test('refuses smuggling headers before the head is complete', () => {
    const result = parseConnectHead(bytes('CONNECT a.example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n'));
    assert.equal(result.state === 'error' && result.code, 'transfer-encoding');
  });

  void test('AT-09 treats a request smuggled after the head as tunnel bytes, not as headers', () => {
    const first = 'CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com:443\r\n\r\n';
    const result = parseConnectHead(bytes(`${first}GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n`));
    assert.equal(result.state, 'done');
    if (result.state === 'done') {
      assert.equal(result.headLength, first.length);
      assert.equal(result.headers.length, 1);
    }
  });

  void test('AT-10 accepts a head of exactly maxHeadBytes and refuses one byte more with 431', () => {
    const base = 'CONNECT a.example.com:443 HTTP/1.1\r\nX-Pad: \r\n\r\n';
    const exact = bytes(base.replace('X-Pad: ', `X-Pad: ${'p'.repeat(200 - base.length)}`));
    assert.equal(exact.length, 200);
    assert.equal(parseConnectHead(exact, { maxHeadBytes: 200 }).state, 'done');
    const over = bytes(base.replace('X-Pad: ', `X-Pad: ${'p'.repeat(201 - base.length)}`));
    assert.deepEqual(pick(parseConnectHead(over, { maxHeadBytes: 200 })), { status: 431, code: 'head-too-large' });
    assert.deepEqual(pick(parseConnectHead(over.subarray(0, 200), { maxHeadBytes: 200 })), { status: 431, code: 'head-too-large' });
    assert.equal(parseConnectHead(over.subarray(0, 199), { maxHeadBytes: 200 }).state, 'incomplete');
  });

  void test('AT-10 refuses an endless head with 431 after 8192 bytes, reading no further', () => {
    const endless = Buffer.concat([bytes('CONNECT a.example.com:443 HTTP/1.1\r\nX-Long: '), Buffer.alloc(10 * 1024 * 1024, 0x61)]);
    assert.deepEqual(pick(parseConnectHead(endless)), { status: 431, code: 'head-too-large' });
    assert.equal(parseConnectHead(endless.subarray(0, 8191)).state, 'incomplete');
    assert.deepEqual(pick(parseConnectHead(endless.subarray(0, 8192))), { status: 431, code: 'head-too-large' });
  });

  void test('AT-10 accepts 64 headers and refuses 65 with 431', () => {
    const lines = Array.from({ length: 65 }, (_, i) => `X-H${i}: v`);
    assert.equal(parseConnectHead(head('CONNECT a.example.com:443 HTTP/1.1', ...lines.slice(0, 64))).state, 'done');
    assert.deepEqual(pick(parseConnectHead(head('CONNECT a.example.com:443 HTTP/1.1', ...lines))), { status: 431, code: 'too-many-headers' });
    assert.deepEqual(pick(parseConnectHead(head('CONNECT a.example.com:443 HTTP/1.1', ...lines.slice(0, 3)), { maxHeaders: 2 })), { status: 431, code: 'too-many-headers' });
  });

  void test('X-03 never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (raw) => {
        const result = parseConnectHead(Buffer.from(raw));
        assert.ok(['incomplete', 'done', 'error'].includes(result.state));
      }),
      { numRuns: 5000 },
    );
  });

  /** Pieces of HTTP, good and bad, so random inputs get past the first line often. */
  const piece = fc.constantFrom(
    'CONNECT ', 'GET ', 'a.example.com:443', '[::1]:22', '0x7f.1:1', ' HTTP/1.1', ' HTTP/1.0', '\r\n', '\r\n\r\n', '\n', '\r', ' ', '\t', ':',
    'Host: a.example.com:443', 'Host: b.example:1', 'Content-Length: 0', 'Transfer-Encoding: chunked', 'X-A: b', 'x', '\u0000', '\u00e9', '@', '%',
  );
  const httpish = fc.array(piece, { maxLength: 24 }).map((parts) => bytes(parts.join('')));

  void test('X-03 never throws on HTTP-like input, and every prefix gives incomplete or the final answer', () => {
    fc.assert(
      fc.property(fc.oneof(httpish, fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a))), fc.integer({ min: 16, max: 300 }), (input, maxHeadBytes) => {
        const whole = parseConnectHead(input, { maxHeadBytes, maxHeaders: 3 });
        for (let end = 0; end < input.length; end++) {
          const partial = parseConnectHead(input.subarray(0, end), { maxHeadBytes, maxHeaders: 3 });
          if (partial.state !== 'incomplete') assert.deepEqual(partial, whole, `prefix of ${end} bytes`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  const headerName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/).filter((n) => !['host', 'content-length', 'transfer-encoding'].includes(n.toLowerCase()));
  const headerValue = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?$/);
  const validHead = fc
    .record({
      host: fc.domain(),
      port: fc.integer({ min: 1, max: 65535 }),
      withHost: fc.boolean(),
      headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 10 }),
      tunnel: fc.uint8Array({ maxLength: 64 }),
    })
    .map(({ host, port, withHost, headers, tunnel }) => {
      const lines = [...(withHost ? [`Host: ${host.toUpperCase()}:${port}`] : []), ...headers.map(([n, v]) => `${n}: ${v}`)];
      return Buffer.concat([head(`CONNECT ${host}:${port} HTTP/1.1`, ...lines), Buffer.from(tunnel)]);
    });

  void test('X-03 a valid head fed in random pieces gives the same result as all at once', () => {
    fc.assert(
      fc.property(validHead, fc.array(fc.nat({ max: 400 }), { maxLength: 12 }), (input, cuts) => {
        const whole = parseConnectHead(input);
        assert.equal(whole.state, 'done', JSON.stringify(whole));
        const results = feedInPieces(input, cuts);
        for (const partial of results.slice(0, -1)) assert.ok(partial.state === 'incomplete' || JSON.stringify(partial) === JSON.stringify(whole));
        assert.deepEqual(results.at(-1), whole);
      }),
      { numRuns: 1000 },
    );
  });

  void test('measures parseConnectHead per call on a kubectl head (reported, not asserted)', (t) => {
    const input = bytes(KUBECTL_HEAD);
    const rounds = 100_000;
    let done = 0;
    for (let i = 0; i < 10_000; i++) parseConnectHead(input); // warm up
    const start = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) if (parseConnectHead(input).state === 'done') done++;
    const ns = Number(process.hrtime.bigint() - start) / rounds;
    assert.equal(done, rounds);
    t.diagnostic(`parseConnectHead: ${ns.toFixed(0)} ns per call on a ${input.length}-byte kubectl head`);
  });
});

function pick(result: ConnectParse): { status: number; code: string } | string {
  return result.state === 'error' ? { status: result.status, code: result.code } : result.state;
}

void describe('formatConnectResponse', () => {
  void test('answers 200 with the bare established line', () => {
    assert.equal(formatConnectResponse(200).toString('latin1'), 'HTTP/1.1 200 Connection established\r\n\r\n');
  });

  void test('answers an error with the reason in the status phrase (all kubectl shows) and a header, a plain-text body and Connection: close', () => {
    assert.equal(
      formatConnectResponse(403, 'policy-denied', 'Your device trust level is Low; k8s-prod needs Medium.').toString('utf8'),
      'HTTP/1.1 403 Forbidden: policy-denied\r\nContent-Type: text/plain; charset=utf-8\r\nX-Causeway-Reason: policy-denied\r\nContent-Length: 55\r\nConnection: close\r\n\r\n' +
        'Your device trust level is Low; k8s-prod needs Medium.\n',
    );
  });

  void test('puts what the user can act on after the reason, in the phrase kubectl prints and in X-Causeway-Hints, and the parser reads them back', () => {
    const out = formatConnectResponse(403, 'trust-too-low', 'access denied by policy', ['needs:Medium', 'has:Low', 'trust:firewall-off']);
    const text = out.toString('utf8');
    assert.ok(text.startsWith('HTTP/1.1 403 Forbidden: trust-too-low (needs:Medium has:Low trust:firewall-off)\r\n'), text);
    assert.match(text, /\r\nX-Causeway-Hints: needs:Medium has:Low trust:firewall-off\r\n/);
    const parsed = parseConnectResponseHead(out);
    assert.equal(parsed.state, 'done');
    if (parsed.state === 'done') {
      assert.equal(parsed.reason, 'trust-too-low');
      assert.deepEqual(parsed.hints, ['needs:Medium', 'has:Low', 'trust:firewall-off']);
    }
  });

  void test('LP-06 hints with spaces, parentheses, CR or LF stay one word each and never start a header; at most eight are sent', () => {
    const hints = ['trust:a b', 'x)\r\nSet-Cookie: y=1', ...Array.from({ length: 10 }, (_, i) => `h${i}`)];
    const text = formatConnectResponse(403, 'trust-too-low', undefined, hints).toString('utf8');
    const head = text.slice(0, text.indexOf('\r\n\r\n')).split('\r\n');
    assert.equal(head[0], 'HTTP/1.1 403 Forbidden: trust-too-low (trust:a-b x---Set-Cookie:-y-1 h0 h1 h2 h3 h4 h5)');
    assert.ok(!head.some((l) => l.startsWith('Set-Cookie')));
  });

  void test('uses the status text as the body when no message is given, and omits the reason header when none is given', () => {
    const text = formatConnectResponse(502).toString('utf8');
    assert.ok(text.startsWith('HTTP/1.1 502 Bad Gateway\r\n'));
    assert.ok(!text.includes('X-Causeway-Reason'));
    assert.ok(text.endsWith('\r\n\r\nBad Gateway\n'));
  });

  void test('LP-06 keeps CR, LF and control characters in reason and message off the wire', () => {
    const out = formatConnectResponse(421, 'bad\r\nSet-Cookie: x=1', 'line one\r\nX-Injected: 1\u0000\u001b[31m\u2028end');
    const text = out.toString('utf8');
    const headEnd = text.indexOf('\r\n\r\n');
    const headLines = text.slice(0, headEnd).split('\r\n');
    assert.equal(headLines.length, 5);
    assert.ok(!headLines.some((l) => l.startsWith('Set-Cookie') || l.startsWith('X-Injected')));
    const parsed = parseConnectResponseHead(out);
    assert.equal(parsed.state, 'done');
    if (parsed.state === 'done') {
      assert.equal(parsed.reason, 'bad--Set-Cookie--x-1');
      const body = out.subarray(parsed.headLength, parsed.headLength + parsed.bodyLength).toString('utf8');
      assert.equal(parsed.headLength + parsed.bodyLength, out.length);
      // eslint-disable-next-line no-control-regex
      assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f\u2028]/.test(body), JSON.stringify(body));
      assert.ok(body.endsWith('end\n'));
    }
  });

  void test('counts Content-Length in bytes for non-ASCII messages', () => {
    const out = formatConnectResponse(403, 'x', 'Zugriff verweigert für Gerät 🖥');
    const parsed = parseConnectResponseHead(out);
    assert.ok(parsed.state === 'done' && parsed.headLength + parsed.bodyLength === out.length);
  });

  void test('X-03 any reason and message give exactly one well-formed answer', () => {
    fc.assert(
      fc.property(fc.integer({ min: 300, max: 599 }), fc.string({ unit: 'binary', maxLength: 100 }), fc.string({ unit: 'binary', maxLength: 2000 }), (status, reason, message) => {
        const out = formatConnectResponse(status, reason, message);
        const parsed = parseConnectResponseHead(out);
        assert.equal(parsed.state, 'done');
        if (parsed.state !== 'done') return;
        assert.equal(parsed.status, status);
        assert.equal(parsed.headLength + parsed.bodyLength, out.length);
        assert.ok(parsed.headers.length === 3 || parsed.headers.length === 4);
      }),
      { numRuns: 1000 },
    );
  });

  void test('refuses a status that is not a final HTTP status', () => {
    assert.throws(() => formatConnectResponse(99), { code: 'invalid-status' });
    assert.throws(() => formatConnectResponse(101), { code: 'invalid-status' });
    assert.throws(() => formatConnectResponse(600), { code: 'invalid-status' });
  });
});

void describe('parseConnectResponseHead', () => {
  void test('reads a 200 and leaves the tunnel bytes after headLength', () => {
    const input = Buffer.concat([formatConnectResponse(200), bytes('\x16\x03')]);
    assert.deepEqual(parseConnectResponseHead(input), { state: 'done', status: 200, headers: [], headLength: 39, bodyLength: 0 });
  });

  void test('reads a refusal with its reason and body length', () => {
    const input = formatConnectResponse(403, 'device-untrusted', 'denied');
    const parsed = parseConnectResponseHead(input);
    assert.equal(parsed.state, 'done');
    if (parsed.state === 'done') {
      assert.equal(parsed.status, 403);
      assert.equal(parsed.reason, 'device-untrusted');
      assert.equal(input.subarray(parsed.headLength, parsed.headLength + parsed.bodyLength).toString(), 'denied\n');
    }
  });

  void test('ignores a body length claimed by a 2xx answer', () => {
    assert.equal(pickBody(parseConnectResponseHead(bytes('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'))), 0);
  });

  void test('treats a missing Content-Length on an error as an empty body', () => {
    assert.equal(pickBody(parseConnectResponseHead(bytes('HTTP/1.1 502 Bad Gateway\r\n\r\n'))), 0);
  });

  void test('accepts a status line without a reason phrase', () => {
    assert.equal(parseConnectResponseHead(bytes('HTTP/1.1 200\r\n\r\n')).state, 'done');
  });

  void test('reports incomplete until the blank line arrives', () => {
    const input = formatConnectResponse(200);
    for (let end = 0; end < input.length; end++) assert.equal(parseConnectResponseHead(input.subarray(0, end)).state, 'incomplete');
  });

  const refused: Array<[string, string, string]> = [
    ['refuses an answer that is not HTTP', 'SSH-2.0-OpenSSH_9.6\r\n\r\n', 'bad-status-line'],
    ['refuses a two-digit status', 'HTTP/1.1 20 OK\r\n\r\n', 'bad-status-line'],
    ['refuses Transfer-Encoding', 'HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n', 'transfer-encoding'],
    ['refuses conflicting Content-Length', 'HTTP/1.1 403 Forbidden\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'content-length'],
    ['refuses a negative Content-Length', 'HTTP/1.1 403 Forbidden\r\nContent-Length: -1\r\n\r\n', 'content-length'],
    ['refuses a bare LF', 'HTTP/1.1 200 OK\n\n', 'bare-lf'],
    ['refuses a control character in the reason phrase', 'HTTP/1.1 200 O\u0000K\r\n\r\n', 'bad-status-line'],
  ];
  for (const [name, input, code] of refused) {
    void test(name, () => {
      const parsed = parseConnectResponseHead(bytes(input));
      assert.equal(parsed.state === 'error' && parsed.code, code, JSON.stringify(parsed));
    });
  }

  void test('X-03 never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
        assert.ok(['incomplete', 'done', 'error'].includes(parseConnectResponseHead(Buffer.from(raw)).state));
      }),
      { numRuns: 3000 },
    );
  });
});

function pickBody(parsed: ReturnType<typeof parseConnectResponseHead>): number | string {
  return parsed.state === 'done' ? parsed.bodyLength : parsed.state;
}
