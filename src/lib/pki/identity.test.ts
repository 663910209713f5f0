import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { CertificateAuthority, issueKeyAndCert } from './authority.ts';
import { IDENTITY_ID_RE, identityUrisFor, parseIdentityUris, splitSubjectAltName } from './identity.ts';
import type { CertIdentity } from './types.ts';

const isError = (r: CertIdentity | { error: string }): r is { error: string } => 'error' in r;

/** Formats one SAN entry the way Node does: JSON-quoted when the value holds a character that needs it. */
function nodeEntry(label: string, value: string): string {
  const unsafe = /[",\\']/.test(value) || [...value].some((c) => c < ' ' || c === '\x7f');
  return `${label}:${unsafe ? JSON.stringify(value) : value}`;
}

const validId = fc.stringMatching(IDENTITY_ID_RE);

void describe('parseIdentityUris', () => {
  void test('reads a trust identity from Node\'s subjectAltName format', () => {
    assert.deepEqual(parseIdentityUris('URI:causeway://user/alice@example.com, URI:causeway://device/mbp-42'), { user: 'alice@example.com', device: 'mbp-42' });
  });

  void test('reads a name identity beside DNS and IP names', () => {
    assert.deepEqual(parseIdentityUris('DNS:kube.example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, URI:causeway://kube-proxy/kp-1'), { name: 'kp-1' });
  });

  void test('skips a quoted value that does not mention the scheme, commas and all', () => {
    assert.deepEqual(parseIdentityUris('DNS:"a, b", URI:causeway://device/d1'), { device: 'd1' });
  });

  void test('refuses a quoted value that hides a fake identity entry after a comma', () => {
    assert.ok(isError(parseIdentityUris('DNS:"a, URI:causeway://user/root", URI:causeway://device/d1')));
  });

  const refusals: Array<[string, string | undefined]> = [
    ['no SANs', undefined],
    ['an empty string', ''],
    ['no causeway identity', 'DNS:example.com'],
    ['a quoted causeway URI', 'URI:"causeway://user/a,b"'],
    ['entries joined without a space', 'URI:causeway://user/a,URI:causeway://device/b'],
    ['a trailing separator', 'URI:causeway://user/a, '],
    ['an unterminated quoted value', 'URI:"causeway://user/a'],
    ['two devices', 'URI:causeway://device/a, URI:causeway://device/b'],
    ['two names of different kinds', 'URI:causeway://connector/a, URI:causeway://kube-proxy/b'],
    ['an id starting with a dot', 'URI:causeway://user/.hidden'],
    ['an id of 129 characters', `URI:causeway://user/${'a'.repeat(129)}`],
    ['an empty id', 'URI:causeway://user/'],
    ['a query string', 'URI:causeway://user/alice?x=1'],
    ['a causeway URI with a port-like authority', 'URI:causeway://user:443/alice'],
    ['leading whitespace', 'URI: causeway://user/alice'],
    ['an email SAN with the scheme', 'email:causeway://user/alice'],
    ['a label with punctuation', 'U-RI:causeway://user/alice'],
  ];
  for (const [name, san] of refusals) {
    void test(`refuses ${name}`, () => {
      const result = parseIdentityUris(san);
      assert.ok(isError(result), `accepted ${JSON.stringify(result)}`);
      assert.equal(typeof result.error, 'string');
    });
  }

  void test('X-03 never throws on arbitrary input, and anything it accepts is a well-formed identity', () => {
    const sanLike = fc.array(
      fc.tuple(
        fc.constantFrom('URI', 'DNS', 'IP Address', 'email', 'DirName', 'othername'),
        fc.oneof(
          fc.string(),
          fc.string({ unit: 'grapheme' }),
          fc.tuple(fc.constantFrom('user', 'device', 'connector', 'admin', 'access-tier'), fc.string()).map(([k, id]) => `causeway://${k}/${id}`),
          validId.map((id) => `causeway://user/${id}`),
        ),
        fc.boolean(),
      ).map(([label, value, raw]) => (raw ? `${label}:${value}` : nodeEntry(label, value))),
    ).map((entries) => entries.join(', '));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), sanLike), (san) => {
        const result = parseIdentityUris(san);
        if (isError(result)) return;
        const fields = [result.user, result.device, result.name].filter((v) => v !== undefined);
        assert.ok(fields.length > 0);
        for (const v of fields) assert.match(v, IDENTITY_ID_RE);
        assert.deepEqual(Object.keys(result).filter((k) => !['user', 'device', 'name'].includes(k)), []);
      }),
      { numRuns: 2000 },
    );
  });

  void test('X-03 accepts exactly the well-formed combinations, in any order and among other names', () => {
    const noise = fc.oneof(
      fc.domain().map((d) => nodeEntry('DNS', d)),
      fc.ipV4().map((ip) => `IP Address:${ip}`),
      fc.webUrl().map((u) => nodeEntry('URI', u)),
    );
    const kinds = ['user', 'device', 'access-tier', 'connector', 'kube-proxy', 'control-plane'] as const;
    const identityEntry = fc.tuple(fc.constantFrom(...kinds), validId);
    fc.assert(
      fc.property(fc.array(identityEntry, { maxLength: 4 }), fc.array(noise, { maxLength: 3 }), fc.infiniteStream(fc.boolean()), (ids, others, coin) => {
        const entries = [...ids.map(([k, id]) => `URI:causeway://${k}/${id}`), ...others];
        // Interleave deterministically from the generated coin flips.
        entries.sort(() => (coin.next().value ? 1 : -1));
        const result = parseIdentityUris(entries.join(', '));
        const users = ids.filter(([k]) => k === 'user');
        const devices = ids.filter(([k]) => k === 'device');
        const names = ids.filter(([k]) => k !== 'user' && k !== 'device');
        const wellFormed = ids.length > 0 && users.length <= 1 && devices.length <= 1 && names.length <= 1;
        if (!wellFormed) {
          assert.ok(isError(result), `accepted ${JSON.stringify(ids)}`);
          return;
        }
        assert.ok(!isError(result), `refused ${JSON.stringify(entries)}: ${JSON.stringify(result)}`);
        assert.deepEqual(result, {
          ...(users[0] ? { user: users[0][1] } : {}),
          ...(devices[0] ? { device: devices[0][1] } : {}),
          ...(names[0] ? { name: names[0][1] } : {}),
        });
      }),
      { numRuns: 1000 },
    );
  });

  void test('X-03 round-trips every valid identity through a real certificate and Node\'s parser', async () => {
    const ca = await CertificateAuthority.create();
    await fc.assert(
      fc.asyncProperty(validId, validId, async (user, device) => {
        const issued = await issueKeyAndCert(ca, { type: 'trust', identity: { user, device } });
        assert.deepEqual(parseIdentityUris(new X509Certificate(issued.certPem).subjectAltName), { user, device });
      }),
      { numRuns: 50 },
    );
  });
});

void describe('identityUrisFor', () => {
  void test('builds the URIs each type carries', () => {
    assert.deepEqual(identityUrisFor('trust', { user: 'u', device: 'd' }), ['causeway://user/u', 'causeway://device/d']);
    assert.deepEqual(identityUrisFor('device', { device: 'd' }), ['causeway://device/d']);
    assert.deepEqual(identityUrisFor('connector', { name: 'dc1' }), ['causeway://connector/dc1']);
  });

  void test('refuses an identity that does not fit the type', () => {
    assert.throws(() => identityUrisFor('trust', { user: 'u' }));
    assert.throws(() => identityUrisFor('device', { device: 'd', user: 'u' }));
    assert.throws(() => identityUrisFor('connector', { device: 'd' }));
    assert.throws(() => identityUrisFor('connector', { name: 'a/b' }));
  });
});

void describe('splitSubjectAltName', () => {
  void test('decodes quoted values and keeps labels with spaces', () => {
    assert.deepEqual(splitSubjectAltName('IP Address:10.0.0.1, DNS:"a,b", URI:x'), [['IP Address', '10.0.0.1', false], ['DNS', 'a,b', true], ['URI', 'x', false]]);
  });
});
