import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { REASON_CODES, ServiceLabels, reasonLabel, resultLabel, versionLabel } from './reasons.ts';

const src = path.resolve(import.meta.dirname, '../..');

/** Reason-code literals in a source text: in `reasons: [...]`, as `reason: '...'`, as peer check `code: '...'`, and TLS handshake reasons. */
function reasonLiterals(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/\breasons: \[([^\]]*)\]/g)) for (const l of m[1].matchAll(/'([a-z][a-z-]*)'/g)) found.push(l[1]);
  for (const m of text.matchAll(/(?<![A-Za-z])reason: '([a-z][a-z-]*)'/g)) found.push(m[1]);
  for (const m of text.matchAll(/(?<![A-Za-z])code: '(cert-[a-z-]+)'/g)) found.push(m[1]);
  for (const m of text.matchAll(/'(tls-[a-z-]+)'/g)) found.push(m[1]);
  return found;
}

/**
 * The sources of a directory. tunnel-pool.ts is left out: its `reason`s are why a stream could not be
 * opened, recorded as the close reason of an allowed connection, never as a decision's reason.
 */
async function sources(dir: string): Promise<string[]> {
  const names = (await readdir(path.join(src, dir))).filter((n) => n.endsWith('.ts') && !n.endsWith('.test.ts') && !n.endsWith('.testing.ts') && n !== 'tunnel-pool.ts');
  return Promise.all(names.map((n) => readFile(path.join(src, dir, n), 'utf8')));
}

void test('every reason code the access tier, the connector and the deciders record is in the metrics vocabulary', async () => {
  const texts = [...(await sources('access-tier')), ...(await sources('connector')), ...(await sources('lib/policy')), ...(await sources('lib/pki'))];
  const found = new Set(texts.flatMap(reasonLiterals));
  assert.ok(found.has('source-connection-limit') && found.has('tls-handshake-timeout') && found.has('connector-tunnel') && found.has('trust-cert-valid'), 'the scan finds codes');
  const missing = [...found].filter((code) => !REASON_CODES.has(code));
  assert.deepEqual(missing, [], 'add these to src/lib/metrics/reasons.ts (or they are counted as other)');

  // The CONNECT head refusals (the response-side `bad-status-line` is the client's business).
  const head = await readFile(path.join(src, 'lib/net/connect-request.ts'), 'utf8');
  const headCodes = [...head.matchAll(/requestError\(\d+, '([a-z-]+)'/g)].map((m) => m[1]).filter((c) => c !== 'bad-status-line');
  assert.ok(headCodes.length > 10);
  assert.deepEqual(headCodes.filter((c) => !REASON_CODES.has(c)), []);
});

void test('the reason label is the first code of a decision, none without one, other outside the vocabulary', () => {
  assert.equal(reasonLabel(['trust-too-low', 'needs:Medium', 'has:Low']), 'trust-too-low');
  assert.equal(reasonLabel(['needs:Medium', 'outside-schedule']), 'outside-schedule');
  assert.equal(reasonLabel(['user-disabled', 'device-revoked']), 'user-disabled');
  assert.equal(reasonLabel([]), 'none');
  assert.equal(reasonLabel(undefined), 'none');
  assert.equal(reasonLabel(['role:x']), 'none');
  assert.equal(reasonLabel(['Trust-Too-Low']), 'other');
  assert.equal(reasonLabel(['a'.repeat(10_000)]), 'other');
  assert.equal(reasonLabel([42, 'bad-sni']), 'bad-sni');
  assert.equal(reasonLabel([undefined]), 'none');
});

void test('results are allow, deny and would-deny only', () => {
  assert.deepEqual(['allow', 'deny', 'would-deny', 'ALLOW', '', undefined, 1].map(resultLabel), ['allow', 'deny', 'would-deny', 'other', 'other', 'other', 'other']);
});

void test('service labels are spec names, at most the given number of distinct ones, the rest other', () => {
  const labels = new ServiceLabels(2);
  assert.deepEqual(['prod-k8s', 'db', 'prod-k8s', 'cache', undefined, '', 'Prod', 'a b', 'x'.repeat(64), 7].map((s) => labels.label(s)), ['prod-k8s', 'db', 'prod-k8s', 'other', 'none', 'none', 'other', 'other', 'other', 'other']);
});

void test('config version labels are short and printable, else other', () => {
  assert.equal(versionLabel('r42'), 'r42');
  assert.equal(versionLabel('0123456789abcdef'), '0123456789abcdef');
  assert.equal(versionLabel('r1-reset-1767225600000'), 'r1-reset-1767225600000');
  assert.equal(versionLabel('v\n1'), 'other');
  assert.equal(versionLabel('v'.repeat(65)), 'other');
});
