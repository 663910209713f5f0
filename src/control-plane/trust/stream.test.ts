/**
 * From a posture report to an access tier's decision: the trust engine writes the verdict, the config
 * stream carries it, and RemoteConfigSource (what access tiers run) hands it to the policy decider.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RemoteConfigSource, principalDirectory } from '../../lib/config/index.ts';
import type { ConfigSnapshot, ConfigSource } from '../../lib/config/index.ts';
import type { PeerIdentity } from '../../lib/pki/index.ts';
import { createPolicyDecider } from '../../lib/policy/index.ts';
import { applySpecs, baseSpecs, startTestControlPlane } from '../stream/harness.testing.ts';
import type { TestPlugin } from '../stream/harness.testing.ts';
import { configStreamPlugin } from '../stream/index.ts';
import { createTrustEngine } from './engine.ts';

const streamPlugin: TestPlugin = (app, o) => configStreamPlugin(app, { ...o, heartbeatIntervalMs: 300 });

function nextSnapshot(source: ConfigSource, predicate: (s: ConfigSnapshot) => boolean): Promise<ConfigSnapshot> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error('no matching snapshot within 10 s'));
    }, 10_000);
    const unsubscribe = source.subscribe((s) => {
      if (!predicate(s)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(s);
    });
  });
}

void describe('trust through the config stream', () => {
  void test('a report that turns the firewall off drops the device to Low, and an access tier following the stream denies a Medium policy', async (t) => {
    const cp = await startTestControlPlane({ plugins: [streamPlugin] });
    t.after(() => cp.close());
    const engine = createTrustEngine({ store: cp.store });
    t.after(() => engine.close());
    await applySpecs(cp, [
      ...baseSpecs().map((d) => (d.kind === 'Policy' ? { ...d, spec: { access: [{ roles: ['eng'], trustLevel: 'Medium' }] } } : d)),
      { apiVersion: 'causeway/v1', kind: 'TrustProfile', metadata: { name: 'laptops' }, spec: { staleAfter: '1h', factors: [{ type: 'firewall', effect: 'Low' }] } },
    ]);
    const alice = await cp.store.createUser({ name: 'alice', groups: ['eng'] }, { actor: 'test' });
    const laptop = await cp.store.registerDevice({ userId: alice.id, platform: 'linux', ownership: 'corporate-dedicated' }, { actor: 'test' });
    await cp.store.recordPosture(laptop.id, { factors: { firewall: true }, at: new Date().toISOString() });
    assert.equal((await engine.rescore(laptop.id)).level, 'High');

    const edge = await cp.issue('access-tier', { name: 'edge-1' });
    const source = new RemoteConfigSource({ controlPlaneUrl: cp.url, tls: () => edge });
    t.after(() => source.close());
    const identity: PeerIdentity = { type: 'trust', user: alice.id, device: laptop.id, serial: 'AB12', notBefore: new Date(0), notAfter: new Date(Date.now() + 3_600_000), fingerprint256: '' };
    const decider = createPolicyDecider({ directory: principalDirectory });
    const decide = (s: ConfigSnapshot) => {
      const service = s.services.find((x) => x.metadata.name === 'db');
      assert.ok(service !== undefined);
      return decider.decide({ service, identity, target: { kind: 'dns', host: 'db.internal', port: 5432 }, snapshot: s });
    };
    const first = await source.ready();
    assert.equal(first.devices?.find((d) => d.id === laptop.id)?.trustLevel, 'High');
    assert.equal(decide(first).allow, true);

    const dropped = nextSnapshot(source, (s) => s.devices?.find((d) => d.id === laptop.id)?.trustLevel === 'Low');
    await cp.store.recordPosture(laptop.id, { factors: { firewall: false }, at: new Date().toISOString() });
    assert.equal((await engine.rescore(laptop.id)).level, 'Low');
    const second = await dropped;
    assert.deepEqual(second.devices?.find((d) => d.id === laptop.id)?.trustReasons, ['firewall-off']);
    const denied = decide(second);
    assert.equal(denied.allow, false);
    assert.deepEqual(denied.reasons.slice(0, 3), ['trust-too-low', 'needs:Medium', 'has:Low'], denied.reasons.join(','));
  });
});
