import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { UserError } from '../errors.ts';
import {
  allowListPermits,
  canonicalHostname,
  compileAllowList,
  compilePatterns,
  formatAuthority,
  matchesPatterns,
  parseAuthority,
} from './target.ts';
import type { Target, TargetPattern } from './target.ts';

/** A test-name-safe rendering of hostile input: control and non-ASCII characters escaped, long input cut. */
function show(input: string): string {
  const cut = input.length > 48 ? `${input.slice(0, 40)}…(${input.length} chars)` : input;
  return cut.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function target(authority: string): Target {
  const parsed = parseAuthority(authority);
  assert.ok(parsed.ok, `${authority} should parse: ${parsed.ok ? '' : parsed.message}`);
  return parsed.target;
}

void describe('parseAuthority', () => {
  const accepted: Array<[string, string, Target]> = [
    ['keeps a plain name and port', 'db.internal:5432', { host: 'db.internal', port: 5432, kind: 'dns' }],
    ['LP-03 lower-cases an upper-case name', 'MyKube.Corp.Example.COM:443', { host: 'mykube.corp.example.com', port: 443, kind: 'dns' }],
    ['LP-03 removes one trailing dot', 'mykube.corp.example.com.:443', { host: 'mykube.corp.example.com', port: 443, kind: 'dns' }],
    ['accepts punycode labels as they are', 'xn--bcher-kva.example:443', { host: 'xn--bcher-kva.example', port: 443, kind: 'dns' }],
    ['accepts underscores in labels', 'my_db.internal:5432', { host: 'my_db.internal', port: 5432, kind: 'dns' }],
    ['accepts a single-label name', 'localhost:8080', { host: 'localhost', port: 8080, kind: 'dns' }],
    ['accepts strict dotted-decimal IPv4', '10.0.0.1:22', { host: '10.0.0.1', port: 22, kind: 'ipv4' }],
    ['accepts zeros written as single digits', '0.0.0.0:1', { host: '0.0.0.0', port: 1, kind: 'ipv4' }],
    ['accepts the highest port', 'a.b:65535', { host: 'a.b', port: 65535, kind: 'dns' }],
    ['compresses and lower-cases IPv6', '[2001:DB8:0:0:1:0:0:1]:443', { host: '2001:db8::1:0:0:1', port: 443, kind: 'ipv6' }],
    ['compresses the first of two equal zero runs', '[2001:db8:0:0:1:0:0:1]:443', { host: '2001:db8::1:0:0:1', port: 443, kind: 'ipv6' }],
    ['removes leading zeros in IPv6 groups', '[fd00:0000:0000:0000:0000:0000:0000:0001]:80', { host: 'fd00::1', port: 80, kind: 'ipv6' }],
    ['does not compress a single zero group', '[1:0:2:3:4:5:6:7]:80', { host: '1:0:2:3:4:5:6:7', port: 80, kind: 'ipv6' }],
    ['keeps IPv6 loopback as IPv6', '[::1]:443', { host: '::1', port: 443, kind: 'ipv6' }],
    ['LP-03 turns IPv4-mapped dotted IPv6 into the IPv4 address', '[::ffff:127.0.0.1]:443', { host: '127.0.0.1', port: 443, kind: 'ipv4' }],
    ['LP-03 turns IPv4-mapped hex IPv6 into the IPv4 address', '[::ffff:7f00:1]:443', { host: '127.0.0.1', port: 443, kind: 'ipv4' }],
    ['LP-03 turns fully written IPv4-mapped IPv6 into the IPv4 address', '[0:0:0:0:0:FFFF:7F00:0001]:443', { host: '127.0.0.1', port: 443, kind: 'ipv4' }],
    ['LP-03 turns NAT64 well-known-prefix IPv6 into the IPv4 address', '[64:ff9b::7f00:1]:443', { host: '127.0.0.1', port: 443, kind: 'ipv4' }],
    ['LP-03 turns dotted NAT64 IPv6 into the IPv4 address', '[64:ff9b::10.1.2.3]:443', { host: '10.1.2.3', port: 443, kind: 'ipv4' }],
    ['LP-03 turns IPv4-compatible IPv6 into the IPv4 address', '[::127.0.0.1]:443', { host: '127.0.0.1', port: 443, kind: 'ipv4' }],
    ['LP-03 turns IPv4-translated IPv6 into the IPv4 address', '[::ffff:0:169.254.169.254]:80', { host: '169.254.169.254', port: 80, kind: 'ipv4' }],
  ];
  for (const [name, authority, expected] of accepted) {
    void test(`${name} (${show(authority)})`, () => {
      assert.deepEqual(parseAuthority(authority), { ok: true, target: expected });
    });
  }

  const refused: Array<[string, string, 'bad-authority' | 'ambiguous-ip' | 'bad-port']> = [
    ['LP-03 refuses 0x7f.1 as an ambiguous IPv4 literal', '0x7f.1:443', 'ambiguous-ip'],
    ['LP-03 refuses 2130706433 as an ambiguous IPv4 literal', '2130706433:443', 'ambiguous-ip'],
    ['LP-03 refuses 017700000001 as an ambiguous IPv4 literal', '017700000001:443', 'ambiguous-ip'],
    ['LP-03 refuses 127.1 as an ambiguous IPv4 literal', '127.1:443', 'ambiguous-ip'],
    ['LP-03 refuses 012.0.0.1 as an ambiguous IPv4 literal', '012.0.0.1:443', 'ambiguous-ip'],
    ['LP-03 refuses 0177.0.0.1 as an ambiguous IPv4 literal', '0177.0.0.1:443', 'ambiguous-ip'],
    ['LP-03 refuses 0x7f000001 as an ambiguous IPv4 literal', '0x7f000001:443', 'ambiguous-ip'],
    ['LP-03 refuses 0X7F.0.0.1 as an ambiguous IPv4 literal', '0X7F.0.0.1:443', 'ambiguous-ip'],
    ['LP-03 refuses 127.0.0.1 with a trailing dot as ambiguous', '127.0.0.1.:443', 'ambiguous-ip'],
    ['LP-03 refuses an IPv4 part above 255 as ambiguous', '256.0.0.1:443', 'ambiguous-ip'],
    ['LP-03 refuses five dotted parts as ambiguous', '1.2.3.4.5:443', 'ambiguous-ip'],
    ['LP-03 refuses a name whose last label is all digits', 'evil.example.123:443', 'ambiguous-ip'],
    ['LP-03 refuses a name whose last label is 0x-hex', 'evil.example.0xff:443', 'ambiguous-ip'],
    ['LP-03 refuses a name whose last label is a bare 0x', 'evil.0x:443', 'ambiguous-ip'],
    ['LP-03 refuses the NAT64 local-use prefix whose IPv4 part is unknown', '[64:ff9b:1::7f00:1]:443', 'ambiguous-ip'],
    ['LP-03 refuses userinfo', 'user@internal.example.com:443', 'bad-authority'],
    ['LP-03 refuses userinfo hiding the real host', 'allowed.example.com:443@evil.com:443', 'bad-authority'],
    ['LP-03 refuses a percent-encoded NUL', 'host%00.example.com:443', 'bad-authority'],
    ['LP-03 refuses a raw NUL', 'host\u0000.example.com:443', 'bad-authority'],
    ['LP-06 refuses CR LF in the authority', 'host.example.com:443\r\nX-Injected: 1', 'bad-authority'],
    ['LP-06 refuses an absolute URL as the authority', 'http://host.example.com:443', 'bad-authority'],
    ['refuses a path after the port', 'host.example.com:443/x', 'bad-authority'],
    ['refuses a backslash', 'host.example.com\\evil:443', 'bad-authority'],
    ['refuses a space', 'host .example.com:443', 'bad-authority'],
    ['refuses a tab', 'host\t.example.com:443', 'bad-authority'],
    ['refuses DEL', 'host\u007f.example.com:443', 'bad-authority'],
    ['refuses raw non-ASCII instead of converting it', 'bücher.example:443', 'bad-authority'],
    ['refuses the Kelvin sign that lower-cases to k', '\u212Aube.example.com:443', 'bad-authority'],
    ['refuses fullwidth dots', 'host\uFF0Eexample.com:443', 'bad-authority'],
    ['refuses an empty label', 'host..example.com:443', 'bad-authority'],
    ['refuses a leading dot', '.example.com:443', 'bad-authority'],
    ['refuses two trailing dots', 'example.com..:443', 'bad-authority'],
    ['refuses a label starting with a hyphen', '-host.example.com:443', 'bad-authority'],
    ['refuses a label ending with a hyphen', 'host-.example.com:443', 'bad-authority'],
    ['refuses a 64-character label', `${'a'.repeat(64)}.example.com:443`, 'bad-authority'],
    ['refuses a 254-character name', `${'a.'.repeat(126)}ab:443`, 'bad-authority'],
    ['refuses an IPv6 zone id', '[fe80::1%eth0]:443', 'bad-authority'],
    ['refuses an encoded IPv6 zone id', '[fe80::1%25eth0]:443', 'bad-authority'],
    ['refuses IPv6 without brackets', '::1:443', 'bad-authority'],
    ['refuses an unclosed bracket', '[::1:443', 'bad-authority'],
    ['refuses junk after the bracket', '[::1]x:443', 'bad-authority'],
    ['refuses an invalid IPv6 address', '[1::2::3]:443', 'bad-authority'],
    ['refuses an IPv4 address in brackets', '[127.0.0.1]:443', 'bad-authority'],
    ['refuses an empty host', ':443', 'bad-authority'],
    ['refuses an empty authority', '', 'bad-authority'],
    ['refuses a missing port', 'host.example.com', 'bad-port'],
    ['refuses a missing port after IPv6', '[::1]', 'bad-port'],
    ['refuses an empty port', 'host.example.com:', 'bad-port'],
    ['refuses port 0', 'host.example.com:0', 'bad-port'],
    ['refuses port 65536', 'host.example.com:65536', 'bad-port'],
    ['refuses a port with a leading zero', 'host.example.com:0443', 'bad-port'],
    ['refuses a signed port', 'host.example.com:+443', 'bad-port'],
    ['refuses a hex port', 'host.example.com:0x1bb', 'bad-port'],
    ['refuses a port with a fraction', 'host.example.com:443.0', 'bad-port'],
  ];
  for (const [name, authority, code] of refused) {
    void test(`${name} (${show(authority)})`, () => {
      const result = parseAuthority(authority);
      assert.equal(result.ok, false);
      if (!result.ok) {
        assert.equal(result.code, code);
        assert.ok(result.message.length > 0);
      }
    });
  }

  void test('formats IPv6 targets in brackets and others plainly', () => {
    assert.equal(formatAuthority(target('[::ffff:127.0.0.1]:443')), '127.0.0.1:443');
    assert.equal(formatAuthority(target('[FD00::0001]:80')), '[fd00::1]:80');
    assert.equal(formatAuthority(target('Example.COM.:8443')), 'example.com:8443');
  });

  void test('X-03 never throws on arbitrary strings and formatAuthority∘parseAuthority is idempotent', () => {
    const authority = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 80 }),
      fc.tuple(fc.oneof(fc.domain(), fc.ipV4(), fc.ipV4Extended(), fc.ipV6().map((v6) => `[${v6}]`)), fc.oneof(fc.integer({ min: -1, max: 70000 }).map(String), fc.string({ maxLength: 6 }))).map(([h, p]) => `${h}:${p}`),
    );
    fc.assert(
      fc.property(authority, (input) => {
        const first = parseAuthority(input);
        if (!first.ok) return;
        const again = parseAuthority(formatAuthority(first.target));
        assert.deepEqual(again, first);
      }),
      { numRuns: 3000 },
    );
  });

  void test('X-03 LP-03 never reads a non-standard IPv4 form as a DNS name', () => {
    fc.assert(
      fc.property(fc.ipV4Extended(), fc.integer({ min: 1, max: 65535 }), (host, port) => {
        const result = parseAuthority(`${host}:${port}`);
        assert.ok(!result.ok || result.target.kind === 'ipv4', `${host} was read as ${JSON.stringify(result)}`);
        if (result.ok) assert.equal(result.target.host, host, 'only strict dotted decimal is accepted, and kept as written');
      }),
      { numRuns: 2000 },
    );
  });

  void test('X-03 canonicalises IPv6 exactly like the WHATWG URL parser for addresses without an embedded IPv4', () => {
    fc.assert(
      fc.property(fc.ipV6(), (v6) => {
        const result = parseAuthority(`[${v6}]:443`);
        assert.ok(result.ok, v6);
        if (result.target.kind === 'ipv6') {
          assert.equal(`[${result.target.host}]`, new URL(`http://[${v6}]/`).hostname);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

void describe('canonicalHostname', () => {
  const cases: Array<[string, string, string | undefined]> = [
    ['AT-05 lower-cases an upper-case SNI', 'MyKube.Corp.Example.COM', 'mykube.corp.example.com'],
    ['AT-05 removes one trailing dot from an SNI', 'mykube.corp.example.com.', 'mykube.corp.example.com'],
    ['AT-05 keeps a punycode SNI as it is', 'XN--BCHER-KVA.example', 'xn--bcher-kva.example'],
    ['AT-05 refuses an IPv4 literal SNI', '10.0.0.1', undefined],
    ['AT-05 refuses an ambiguous IPv4 SNI', '0x7f.1', undefined],
    ['AT-05 refuses an IPv6 literal SNI', '[::1]', undefined],
    ['AT-05 refuses a bare IPv6 literal SNI', '::1', undefined],
    ['AT-05 refuses an empty SNI', '', undefined],
    ['AT-05 refuses a lone dot', '.', undefined],
    ['AT-05 refuses a 255-byte SNI', `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`, undefined],
    ['AT-05 refuses a 254-character SNI without a trailing dot', `${'a.'.repeat(126)}ab`, undefined],
    ['AT-05 accepts a 253-character SNI', `${'a.'.repeat(125)}abc`, `${'a.'.repeat(125)}abc`],
    ['AT-05 accepts a 253-character SNI with its trailing dot', `${'a.'.repeat(125)}abc.`, `${'a.'.repeat(125)}abc`],
    ['AT-05 refuses raw non-ASCII', 'bücher.example', undefined],
    ['AT-05 refuses a port', 'example.com:443', undefined],
    ['AT-05 refuses a NUL', 'example.com\u0000.evil', undefined],
    ['AT-05 refuses a wildcard', '*.example.com', undefined],
  ];
  for (const [name, input, expected] of cases) {
    void test(`${name} (${show(input)})`, () => {
      assert.equal(canonicalHostname(input), expected);
    });
  }

  void test('AT-05 refuses a missing SNI', () => {
    assert.equal(canonicalHostname(undefined as unknown as string), undefined);
  });

  void test('X-03 never throws, and its result is canonical', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.domain().map((d) => d.toUpperCase()), fc.ipV4Extended()), (input) => {
        const name = canonicalHostname(input);
        if (name === undefined) return;
        assert.equal(canonicalHostname(name), name);
        assert.equal(name, name.toLowerCase());
        assert.ok(!name.endsWith('.'));
      }),
      { numRuns: 3000 },
    );
  });

  void test('X-03 accepts every generated domain in any case, with or without a trailing dot', () => {
    fc.assert(
      fc.property(fc.domain(), fc.boolean(), (domain, dot) => {
        assert.equal(canonicalHostname(`${domain.toUpperCase()}${dot ? '.' : ''}`), domain.toLowerCase());
      }),
      { numRuns: 1000 },
    );
  });
});

void describe('compilePatterns and matchesPatterns', () => {
  const patterns: TargetPattern[] = [
    { hostnames: ['*.db.internal', 'host.example.com'], ports: [5432, '8000-8099'] },
    { cidrs: ['10.0.0.0/8', 'fd00::/8'], ports: [22] },
    { hostnames: ['*.example.com'], ports: [443] },
  ];
  const compiled = compilePatterns(patterns);
  const cases: Array<[string, string, boolean]> = [
    ['allows a name below a wildcard on an allowed port', 'pg.db.internal:5432', true],
    ['allows a name two labels below a wildcard', 'a.pg.db.internal:8050', true],
    ['allows both ends of a port range', 'pg.db.internal:8099', true],
    ['LP-03 refuses a port outside the list', 'pg.db.internal:5433', false],
    ['LP-03 refuses a port just outside a range', 'pg.db.internal:8100', false],
    ['refuses the wildcard base name itself', 'db.internal:5432', false],
    ['LP-03 refuses a name that only ends with the wildcard base text', 'evildb.internal:5432', false],
    ['LP-03 refuses evilhost.example.com against host.example.com', 'evilhost.example.com:5432', false],
    ['LP-03 refuses host.example.com.evil.com against host.example.com', 'host.example.com.evil.com:5432', false],
    ['LP-03 refuses host.evil.com against *.example.com', 'host.evil.com:443', false],
    ['LP-03 refuses evilexample.com against *.example.com', 'evilexample.com:443', false],
    ['LP-03 matches an upper-case target with a trailing dot after canonicalisation', 'PG.DB.Internal.:5432', true],
    ['allows an IPv4 address inside a CIDR', '10.20.30.40:22', true],
    ['LP-03 allows IPv4-mapped IPv6 exactly as its IPv4 address', '[::ffff:10.20.30.40]:22', true],
    ['allows an IPv6 address inside a CIDR', '[fd12::1]:22', true],
    ['refuses an IPv4 address outside every CIDR', '11.0.0.1:22', false],
    ['LP-03 refuses loopback written as IPv4-mapped IPv6', '[::ffff:7f00:1]:22', false],
    ['LP-03 refuses loopback written as NAT64', '[64:ff9b::127.0.0.1]:22', false],
    ['refuses an IP target that a hostname rule would name', '10.0.0.1:5432', false],
  ];
  for (const [name, authority, expected] of cases) {
    void test(`${name} (${show(authority)})`, () => {
      assert.equal(matchesPatterns(compiled, target(authority)), expected);
    });
  }

  void test('LP-03 keeps the ports of each pattern with its own hosts', () => {
    const split = compilePatterns([
      { hostnames: ['a.example.com', '*.shared.example'], cidrs: ['10.0.0.0/8', 'fd00::/8'], ports: [443] },
      { hostnames: ['b.example.com', '*.shared.example'], cidrs: ['192.168.0.0/16', 'fe80::/10'], ports: [22] },
    ]);
    const cases: Array<[string, boolean]> = [
      ['a.example.com:443', true],
      ['a.example.com:22', false],
      ['b.example.com:22', true],
      ['b.example.com:443', false],
      ['x.shared.example:443', true],
      ['x.shared.example:22', true],
      ['x.shared.example:80', false],
      ['10.1.1.1:443', true],
      ['10.1.1.1:22', false],
      ['192.168.1.1:22', true],
      ['192.168.1.1:443', false],
      ['[fd00::1]:443', true],
      ['[fd00::1]:22', false],
      ['[fe80::1]:22', true],
    ];
    for (const [authority, expected] of cases) assert.equal(matchesPatterns(split, target(authority)), expected, authority);
  });

  void test('matches nothing with an empty port list', () => {
    const none = compilePatterns([{ hostnames: ['a.example.com'], cidrs: ['0.0.0.0/0'], ports: [] }]);
    assert.equal(matchesPatterns(none, target('a.example.com:443')), false);
    assert.equal(matchesPatterns(none, target('1.2.3.4:443')), false);
  });

  void test('matches nothing with no patterns', () => {
    assert.equal(matchesPatterns(compilePatterns([]), target('a.example.com:443')), false);
  });

  void test('does not let an IPv6 rule covering everything match IPv4 targets', () => {
    const v6only = compilePatterns([{ cidrs: ['::/0'], ports: [443] }]);
    assert.equal(matchesPatterns(v6only, target('[2001:db8::1]:443')), true);
    assert.equal(matchesPatterns(v6only, target('127.0.0.1:443')), false);
    assert.equal(matchesPatterns(v6only, target('[::ffff:127.0.0.1]:443')), false);
  });

  const bad: Array<[string, TargetPattern, RegExp]> = [
    ['refuses a wildcard in the middle of a name', { hostnames: ['a.*.example.com'], ports: [1] }, /wildcard/],
    ['refuses a partial-label wildcard', { hostnames: ['*host.example.com'], ports: [1] }, /wildcard/],
    ['refuses a bare * hostname', { hostnames: ['*'], ports: [1] }, /wildcard/],
    ['refuses an IP address among hostnames', { hostnames: ['10.0.0.1'], ports: [1] }, /cidrs/],
    ['refuses a CIDR with host bits set', { cidrs: ['10.0.0.1/8'], ports: [1] }, /10\.0\.0\.0\/8/],
    ['refuses an ambiguous IPv4 CIDR', { cidrs: ['010.0.0.0/8'], ports: [1] }, /not a CIDR/],
    ['refuses a prefix longer than the family allows', { cidrs: ['10.0.0.0/33'], ports: [1] }, /prefix/],
    ['refuses an IPv4-mapped IPv6 CIDR', { cidrs: ['::ffff:10.0.0.0/104'], ports: [1] }, /IPv4/],
    ['refuses port 0', { hostnames: ['a.b'], ports: [0] }, /port/],
    ['refuses a fractional port', { hostnames: ['a.b'], ports: [1.5] }, /port/],
    ['refuses a reversed range', { hostnames: ['a.b'], ports: ['90-80'] }, /lower port/],
    ['refuses a range past 65535', { hostnames: ['a.b'], ports: ['80-70000'] }, /port/],
    ['refuses a port written in hex', { hostnames: ['a.b'], ports: ['0x50'] }, /port/],
  ];
  for (const [name, pattern, message] of bad) {
    void test(name, () => {
      assert.throws(() => compilePatterns([pattern]), (err: unknown) => err instanceof UserError && err.code === 'bad-pattern' && message.test(err.message));
    });
  }

  void test('measures parseAuthority and matchesPatterns per call (reported, not asserted)', (t) => {
    const many = compilePatterns(
      Array.from({ length: 20 }, (_, i): TargetPattern => ({ hostnames: [`*.zone${i}.internal`, `host${i}.example.com`], cidrs: [`10.${i}.0.0/16`], ports: [443, '8000-8099'] })),
    );
    const inputs: Array<[string, Target, boolean]> = [
      ['a wildcard name near the end of 20 patterns', target('db.a.b.zone19.internal:8050'), true],
      ['a name matching nothing', target('nothing.example.org:443'), false],
      ['an IPv4 address in the last CIDR', target('10.19.3.4:443'), true],
    ];
    const rounds = 200_000;
    for (const [label, input, expected] of inputs) {
      for (let i = 0; i < 10_000; i++) matchesPatterns(many, input); // warm up
      let hits = 0;
      const start = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) if (matchesPatterns(many, input)) hits++;
      const ns = Number(process.hrtime.bigint() - start) / rounds;
      assert.equal(hits, expected ? rounds : 0);
      t.diagnostic(`matchesPatterns, ${label}: ${ns.toFixed(0)} ns per call`);
    }
    let ok = 0;
    const start = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) if (parseAuthority('mykube.corp.example.com:443').ok) ok++;
    assert.equal(ok, rounds);
    t.diagnostic(`parseAuthority: ${(Number(process.hrtime.bigint() - start) / rounds).toFixed(0)} ns per call`);
  });

  void test('accepts a single port written as a string and a single address as a CIDR', () => {
    const compiledSingle = compilePatterns([{ cidrs: ['192.168.1.7', '2001:db8::7'], ports: ['5432'] }]);
    assert.equal(matchesPatterns(compiledSingle, target('192.168.1.7:5432')), true);
    assert.equal(matchesPatterns(compiledSingle, target('192.168.1.8:5432')), false);
    assert.equal(matchesPatterns(compiledSingle, target('[2001:db8:0::7]:5432')), true);
  });
});

void describe('compileAllowList and allowListPermits', () => {
  const list = compileAllowList({ cidrs: ['10.0.0.0/8'], domains: ['.svc.cluster.local', 'db.example.com', '*.corp.example'] });
  const cases: Array<[string, string, boolean]> = [
    ['permits a name below a .suffix domain', 'kube-proxy.causeway.svc.cluster.local:8443', true],
    ['does not permit the bare .suffix domain itself', 'svc.cluster.local:443', false],
    ['LP-03 does not permit a name that only ends with the suffix text', 'evilsvc.cluster.local:443', false],
    ['permits an exact domain', 'DB.example.com.:5432', true],
    ['does not permit a name below an exact domain', 'x.db.example.com:5432', false],
    ['treats *.domain like .domain', 'a.corp.example:22', true],
    ['permits an IP target inside a CIDR', '10.1.2.3:443', true],
    ['LP-03 permits IPv4-mapped IPv6 only as its IPv4 address', '[::ffff:10.1.2.3]:443', true],
    ['LP-03 refuses loopback in hex IPv4-mapped form', '[::ffff:7f00:1]:443', false],
    ['does not permit an IP target by domain', '192.168.0.1:443', false],
    ['does not permit an IPv6 target without an IPv6 CIDR', '[fd00::1]:443', false],
  ];
  for (const [name, authority, expected] of cases) {
    void test(`${name} (${show(authority)})`, () => {
      assert.equal(allowListPermits(list, target(authority)), expected);
    });
  }

  void test('refuses an invalid domain or CIDR with a UserError', () => {
    assert.throws(() => compileAllowList({ cidrs: [], domains: ['..example.com'] }), (err: unknown) => err instanceof UserError && err.code === 'bad-allow-list');
    assert.throws(() => compileAllowList({ cidrs: ['10.0.0.0/8x'], domains: [] }), (err: unknown) => err instanceof UserError && err.code === 'bad-allow-list');
  });

  void test('permits nothing when empty', () => {
    const empty = compileAllowList({ cidrs: [], domains: [] });
    assert.equal(allowListPermits(empty, target('example.com:443')), false);
    assert.equal(allowListPermits(empty, target('10.0.0.1:443')), false);
  });
});
