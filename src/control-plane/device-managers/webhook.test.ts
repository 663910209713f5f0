import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createWebhookVerifier, signWebhook } from './webhook.ts';

const SECRET = 'whsec-test-secret';
const START = Date.parse('2026-11-27T12:00:00Z');
const NOW_SEC = START / 1000;

function verifier(extra: { secrets?: string[]; maxRemembered?: number } = {}) {
  let now = START;
  const v = createWebhookVerifier({ secrets: extra.secrets ?? [SECRET], clock: { now: () => now }, ...(extra.maxRemembered === undefined ? {} : { maxRemembered: extra.maxRemembered }) });
  return { v, advance: (ms: number) => (now += ms) };
}

const body = JSON.stringify({ event: 'device.compliance', serial: 'C02XK1', compliant: false });

void describe('DT-03 device-manager webhook verification', () => {
  void test('a correctly signed, fresh webhook is accepted', () => {
    const { v } = verifier();
    assert.deepEqual(v.verify({ signature: signWebhook(SECRET, body, NOW_SEC), body }), { ok: true, timestamp: NOW_SEC });
    assert.equal(v.verify({ signature: signWebhook(SECRET, Buffer.from('{"other":1}'), NOW_SEC), body: Buffer.from('{"other":1}') }).ok, true);
  });

  void test('DT-03 an unsigned webhook is refused', () => {
    const { v } = verifier();
    for (const signature of [undefined, '', []]) {
      const r = v.verify({ signature, body });
      assert.equal(r.ok, false);
      assert.equal(!r.ok && r.reason, 'missing-signature');
    }
  });

  void test('DT-03 a wrongly signed webhook is refused: other secret, changed body, changed timestamp, truncated MAC', () => {
    const { v } = verifier();
    const reason = (signature: string, b = body): string | undefined => {
      const r = v.verify({ signature, body: b });
      return r.ok ? undefined : r.reason;
    };
    assert.equal(reason(signWebhook('another-secret', body, NOW_SEC)), 'bad-signature');
    assert.equal(reason(signWebhook(SECRET, body, NOW_SEC), body.replace('false', 'true ')), 'bad-signature');
    const good = signWebhook(SECRET, body, NOW_SEC);
    assert.equal(reason(good.replace(`t=${NOW_SEC}`, `t=${NOW_SEC + 1}`)), 'bad-signature');
    assert.equal(reason(good.slice(0, -2)), 'malformed-signature');
    assert.equal(reason(`t=${NOW_SEC},v1=${'0'.repeat(64)}`), 'bad-signature');
  });

  void test('DT-03 malformed headers are refused without trusting any part', () => {
    const { v } = verifier();
    const good = signWebhook(SECRET, body, NOW_SEC);
    const sig = good.split('v1=')[1];
    for (const header of [`v1=${sig}`, `t=${NOW_SEC}`, `t=abc,v1=${sig}`, `t=${NOW_SEC},t=${NOW_SEC},v1=${sig}`, 'garbage', `t=${NOW_SEC},v0=${sig}`, `${good},${'x'.repeat(2000)}`, [good, good]]) {
      const r = v.verify({ signature: header, body });
      assert.equal(r.ok, false, String(header).slice(0, 60));
      assert.ok(!r.ok && (r.reason === 'malformed-signature'), String(header).slice(0, 60));
    }
  });

  void test('DT-03 a replayed webhook is refused, also with the other secret during rotation', () => {
    const { v } = verifier({ secrets: ['old-secret', 'new-secret'] });
    const signature = signWebhook('new-secret', body, NOW_SEC);
    assert.equal(v.verify({ signature, body }).ok, true);
    const again = v.verify({ signature, body });
    assert.equal(!again.ok && again.reason, 'replayed');
    const viaOld = v.verify({ signature: signWebhook('old-secret', body, NOW_SEC), body });
    assert.equal(!viaOld.ok && viaOld.reason, 'replayed');
  });

  void test('DT-03 a webhook outside the 5 minute window is refused as stale, both past and future', () => {
    const { v, advance } = verifier();
    const old = v.verify({ signature: signWebhook(SECRET, body, NOW_SEC - 301), body });
    assert.equal(!old.ok && old.reason, 'stale');
    const future = v.verify({ signature: signWebhook(SECRET, body, NOW_SEC + 301), body });
    assert.equal(!future.ok && future.reason, 'stale');
    const signature = signWebhook(SECRET, body, NOW_SEC);
    assert.equal(v.verify({ signature, body }).ok, true);
    advance(6 * 60_000);
    const late = v.verify({ signature, body });
    assert.equal(!late.ok && late.reason, 'stale');
  });

  void test('the replay memory is bounded and fails closed when full of live entries', () => {
    const { v, advance } = verifier({ maxRemembered: 2 });
    const sign = (n: number): { signature: string; body: string } => ({ signature: signWebhook(SECRET, `{"n":${n}}`, NOW_SEC), body: `{"n":${n}}` });
    assert.equal(v.verify(sign(1)).ok, true);
    assert.equal(v.verify(sign(2)).ok, true);
    const third = v.verify(sign(3));
    assert.equal(!third.ok && third.reason, 'overloaded');
    advance(6 * 60_000);
    const fresh = { signature: signWebhook(SECRET, '{"n":4}', NOW_SEC + 360), body: '{"n":4}' };
    assert.equal(v.verify(fresh).ok, true);
  });

  void test('an oversized body is refused before any MAC is computed, and an empty secret list is a setup error', () => {
    const { v } = verifier();
    const big = Buffer.alloc(1024 * 1024 + 1, 0x20);
    const r = v.verify({ signature: signWebhook(SECRET, big, NOW_SEC), body: big });
    assert.equal(!r.ok && r.reason, 'too-large');
    assert.throws(() => createWebhookVerifier({ secrets: [''] }));
  });
});
