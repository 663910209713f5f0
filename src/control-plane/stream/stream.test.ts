import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RemoteConfigSource, principalDirectory } from '../../lib/config/index.ts';
import type { ConfigSnapshot, ConfigSource } from '../../lib/config/index.ts';
import { decodeRecord } from '../../lib/config/wire.ts';
import type { StreamRecord } from '../../lib/config/wire.ts';
import { openControlPlaneRequest } from '../../lib/enroll/transport.ts';
import type { PeerTlsMaterial } from '../../lib/enroll/transport.ts';
import { CertificateAuthority, issueKeyAndCert } from '../../lib/pki/index.ts';
import type { PeerIdentity } from '../../lib/pki/index.ts';
import { createPolicyDecider } from '../../lib/policy/index.ts';
import type { ServiceSpec } from '../../lib/spec/index.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { applySpecs, baseSpecs, startTestControlPlane } from './harness.testing.ts';
import type { IssuedPeer, TestControlPlane, TestPlugin } from './harness.testing.ts';
import { configStreamPlugin } from './index.ts';

const streamPlugin = (extra: { heartbeatIntervalMs?: number; retainChanges?: number } = {}): TestPlugin => (app, o) => configStreamPlugin(app, { ...o, heartbeatIntervalMs: 300, ...extra });

interface RawStream {
  status: number;
  next(timeoutMs?: number): Promise<StreamRecord>;
  /** Resolves when the server ends the response. */
  ended: Promise<void>;
  close(): void;
}

async function openRaw(cp: TestControlPlane, tls: PeerTlsMaterial, query = ''): Promise<RawStream> {
  const { response, abort } = await openControlPlaneRequest({ baseUrl: cp.url, path: `/api/v1/config/stream${query}`, method: 'GET', tls });
  const records: StreamRecord[] = [];
  const waiters: Array<() => void> = [];
  let buffer = '';
  response.setEncoding('utf8');
  response.on('data', (chunk: string) => {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      const decoded = decodeRecord(line);
      if (decoded.ok && decoded.record !== undefined) records.push(decoded.record);
      else if (response.statusCode === 200) records.push({ type: 'error', code: 'test-undecodable', message: line });
    }
    for (const w of waiters.splice(0)) w();
  });
  const ended = new Promise<void>((resolve) => {
    response.once('end', resolve);
    response.once('close', resolve);
    response.once('error', () => resolve());
  });
  if (response.statusCode !== 200) response.resume();
  return {
    status: response.statusCode ?? 0,
    async next(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (records.length === 0) {
        if (Date.now() > deadline) throw new Error('no record within the deadline');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 50);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return records.shift() as StreamRecord;
    },
    ended,
    close: abort,
  };
}

function nextSnapshot(source: ConfigSource, predicate: (s: ConfigSnapshot) => boolean = () => true, timeoutMs = 5000): Promise<ConfigSnapshot> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no matching snapshot within ${timeoutMs} ms; current ${source.current()?.version}`));
    }, timeoutMs);
    const unsubscribe = source.subscribe((s) => {
      if (!predicate(s)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(s);
    });
  });
}

function trustIdentity(user: string, device: string): PeerIdentity {
  return { type: 'trust', user, device, serial: 'AB12', notBefore: new Date(0), notAfter: new Date(Date.now() + 3_600_000), fingerprint256: '' };
}

void describe('config stream', () => {
  let cp: TestControlPlane;
  let edge: IssuedPeer;
  let dc1: IssuedPeer;
  let aliceId: string;
  let laptopId: string;

  before(async () => {
    cp = await startTestControlPlane({ plugins: [streamPlugin({ retainChanges: 50 })] });
    await applySpecs(cp, baseSpecs());
    const alice = await cp.store.createUser({ name: 'alice', email: 'alice@example.com', groups: ['eng'] }, { actor: 'test' });
    aliceId = alice.id;
    const laptop = await cp.store.registerDevice({ userId: alice.id, platform: 'linux', ownership: 'corporate-dedicated', serial: 'SN-1', hostname: 'alice-laptop', publicKey: 'not-sent', trust: { level: 'High', reasons: [], detail: 'not-sent' } }, { actor: 'test' });
    laptopId = laptop.id;
    edge = await cp.issue('access-tier', { name: 'edge-1' });
    dc1 = await cp.issue('connector', { name: 'dc1' });
  });
  after(() => cp.close());

  void test('an access tier gets one snapshot with the specs, users, devices and revoked serials, and nothing a decision does not need', async () => {
    const revoked = await cp.issue('access-tier', { name: 'old-edge' });
    await cp.store.revokeCertificate(revoked.serial, { actor: 'test' });
    const s = await openRaw(cp, edge);
    try {
      assert.equal(s.status, 200);
      const first = await s.next();
      assert.equal(first.type, 'snapshot');
      if (first.type !== 'snapshot') return;
      assert.equal(first.revision, await cp.store.currentRevision());
      const snap = first.snapshot;
      assert.deepEqual(snap.services.map((d) => (d as ServiceSpec).metadata.name), ['db']);
      assert.equal((snap.services[0] as ServiceSpec).metadata.description, 'the database');
      assert.equal(snap.accessTiers.length, 1);
      assert.equal(snap.connectors.length, 1);
      assert.equal(snap.roles.length, 1);
      assert.equal(snap.policies.length, 1);
      assert.deepEqual(snap.users, [{ id: aliceId, name: 'alice', email: 'alice@example.com', groups: ['eng'], disabled: false }]);
      assert.deepEqual(snap.devices, [{ id: laptopId, user: aliceId, ownership: 'corporate-dedicated', platform: 'linux', serial: 'SN-1', known: true, mdmPresent: false, banned: false, trustLevel: 'High', trustReasons: [] }]);
      assert.ok(snap.revokedSerials.includes(revoked.serial));
      const text = JSON.stringify(first);
      for (const secret of ['not-sent', 'alice-laptop', 'hasPassword']) assert.ok(!text.includes(secret), `${secret} must not be streamed`);
    } finally {
      s.close();
    }
  });

  void test('a connector gets no users or devices, in the snapshot or in deltas', async () => {
    const s = await openRaw(cp, dc1);
    try {
      const first = await s.next();
      assert.equal(first.type, 'snapshot');
      if (first.type === 'snapshot') {
        assert.equal(first.snapshot.users, undefined);
        assert.equal(first.snapshot.devices, undefined);
      }
      const user = await cp.store.getUser(aliceId);
      await cp.store.updateUser(aliceId, { email: 'alice@corp.example.com' }, { actor: 'test', expectedVersion: user?.version });
      const delta = await s.next();
      assert.equal(delta.type, 'delta');
      if (delta.type === 'delta') {
        assert.deepEqual(delta.changes, []);
        assert.equal(delta.revision, await cp.store.currentRevision());
      }
    } finally {
      s.close();
    }
  });

  void test('a committed change arrives as a delta on open streams', async () => {
    const s = await openRaw(cp, edge);
    try {
      await s.next();
      await applySpecs(cp, [{ apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { access: [{ roles: ['eng'], trustLevel: 'High' }] } }]);
      const delta = await s.next();
      assert.equal(delta.type, 'delta');
      if (delta.type !== 'delta') return;
      assert.equal(delta.changes.length, 1);
      assert.equal(delta.changes[0].kind, 'Policy');
      assert.equal(delta.changes[0].op, 'put');
      assert.deepEqual((delta.changes[0].object as { spec: unknown }).spec, { access: [{ roles: ['eng'], trustLevel: 'High' }] });
    } finally {
      s.close();
    }
  });

  void test('a peer resuming with since gets only the changes it missed, also from a restarted control plane', async () => {
    const since = await cp.store.currentRevision();
    await applySpecs(cp, [{ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'ops' }, spec: { users: { groups: ['ops'] } } }]);
    await cp.store.banDevice(laptopId, { actor: 'test' });
    await cp.stop();
    await cp.start();
    const s = await openRaw(cp, edge, `?since=${since}`);
    try {
      const first = await s.next();
      assert.equal(first.type, 'delta');
      if (first.type !== 'delta') return;
      assert.equal(first.revision, await cp.store.currentRevision());
      assert.deepEqual(first.changes.map((c) => `${c.kind}/${c.op}`), ['Role/put', 'Device/put']);
      assert.equal((first.changes[1].object as { banned: boolean }).banned, true);
    } finally {
      s.close();
      await cp.store.unbanDevice(laptopId, { actor: 'test' });
    }
  });

  void test('a peer that is up to date gets a heartbeat first, then heartbeats while nothing changes', async () => {
    const current = await cp.store.currentRevision();
    const s = await openRaw(cp, edge, `?since=${current}`);
    try {
      const first = await s.next();
      assert.deepEqual([first.type, first.type === 'heartbeat' ? first.revision : -1], ['heartbeat', current]);
      const second = await s.next(3000);
      assert.equal(second.type, 'heartbeat');
    } finally {
      s.close();
    }
  });

  void test('a since older than the retained changes gets a snapshot, and one ahead of the database a reset snapshot', async () => {
    const old = await cp.store.currentRevision();
    for (let i = 0; i < 55; i++) await cp.store.updateUser(aliceId, { email: `alice+${i}@example.com` }, { actor: 'test' });
    const behind = await openRaw(cp, edge, `?since=${old}`);
    const ahead = await openRaw(cp, edge, `?since=${old + 10_000}`);
    try {
      const b = await behind.next();
      assert.equal(b.type, 'snapshot');
      assert.equal(b.type === 'snapshot' ? b.reset : 'x', undefined);
      const a = await ahead.next();
      assert.equal(a.type, 'snapshot');
      assert.equal(a.type === 'snapshot' ? a.reset : false, true);
    } finally {
      behind.close();
      ahead.close();
    }
  });

  void test('CA-03 no certificate, a trust certificate and a certificate of another CA are refused with 401; a bad since with 400', async () => {
    const otherCa = await CertificateAuthority.create({ commonName: 'causeway test CA' });
    const foreign = await issueKeyAndCert(otherCa, { type: 'access-tier', identity: { name: 'edge-1' } });
    const trust = await cp.issue('trust', { user: aliceId, device: laptopId });
    const cases: Array<[string, PeerTlsMaterial, string, number]> = [
      ['no certificate', { caPem: cp.ca.certPem }, '', 401],
      ['a trust certificate', trust, '', 401],
      ['another CA', { caPem: cp.ca.certPem, certPem: foreign.certPem, keyPem: foreign.keyPem }, '', 401],
      ['a bad since', edge, '?since=-1', 400],
      ['a since that is not a number', edge, '?since=1e3', 400],
    ];
    for (const [label, tls, query, status] of cases) {
      const s = await openRaw(cp, tls, query);
      s.close();
      assert.equal(s.status, status, label);
    }
  });

  void test('CA-06 a stream whose certificate is revoked ends with an error record, and the certificate cannot open another', async () => {
    const victim = await cp.issue('access-tier', { name: 'edge-1' });
    const s = await openRaw(cp, victim);
    try {
      assert.equal((await s.next()).type, 'snapshot');
      await cp.store.revokeCertificate(victim.serial, { actor: 'test', reason: 'test' });
      const delta = await s.next();
      assert.equal(delta.type, 'delta');
      if (delta.type === 'delta') assert.deepEqual(delta.changes.map((c) => [c.kind, c.name, c.op]), [['RevokedCertificate', victim.serial, 'put']]);
      const error = await s.next();
      assert.deepEqual([error.type, error.type === 'error' ? error.code : ''], ['error', 'cert-revoked']);
      await s.ended;
      const again = await openRaw(cp, victim);
      again.close();
      assert.equal(again.status, 401);
    } finally {
      s.close();
    }
  });

  void test('closing the control plane ends open streams with a shutting-down record', async () => {
    const s = await openRaw(cp, edge);
    try {
      await s.next();
      await cp.stop();
      const last = await s.next();
      assert.deepEqual([last.type, last.type === 'error' ? last.code : ''], ['error', 'shutting-down']);
      await s.ended;
    } finally {
      s.close();
      await cp.start();
    }
  });

  void test('RemoteConfigSource follows the stream into decisions: a policy edit flips the next decision', async () => {
    let persisted: string | undefined;
    const source = new RemoteConfigSource({ controlPlaneUrl: cp.url, tls: () => edge, persist: (text) => ((persisted = text), Promise.resolve()), persistIntervalMs: 10 });
    try {
      const first = await source.ready();
      assert.equal(first.revision, await cp.store.currentRevision());
      assert.ok(Object.isFrozen(first) && Object.isFrozen(first.services) && Object.isFrozen(first.services[0]));
      assert.equal(first.users?.[0].id, aliceId);
      const decider = createPolicyDecider({ directory: principalDirectory });
      const input = (s: ConfigSnapshot): Parameters<typeof decider.decide>[0] => ({ service: s.services[0], identity: trustIdentity(aliceId, laptopId), target: { kind: 'dns', host: 'db.internal', port: 5432 }, snapshot: s });
      assert.equal(decider.decide(input(first)).allow, true);

      const flipped = nextSnapshot(source, (s) => s.policies[0]?.spec.access[0]?.roles[0] === 'auditors');
      await applySpecs(cp, [
        { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'auditors' }, spec: { users: { groups: ['audit'] } } },
        { apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { access: [{ roles: ['auditors'], trustLevel: 'Low' }] } },
      ]);
      const second = await flipped;
      const decision = decider.decide(input(second));
      assert.deepEqual([decision.allow, decision.reasons[0]], [false, 'no-matching-role']);
      assert.equal(source.status().connected, true);
      assert.equal(source.status().stale, false);
      await applySpecs(cp, [{ apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { access: [{ roles: ['eng'], trustLevel: 'Low' }] } }]);
    } finally {
      await source.close();
    }
    assert.ok(persisted !== undefined && decodeRecord(persisted.trim()).ok, 'the last state was persisted');
  });
});

void describe('config stream across replicas', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-stream-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  void test('a write through one replica reaches a peer streaming from another replica on the same database', async () => {
    const file = path.join(dir, 'causeway.db');
    const storeA: Store = await openStore({ url: `sqlite:${file}`, pollIntervalMs: 25 });
    const storeB: Store = await openStore({ url: `sqlite:${file}`, pollIntervalMs: 25 });
    const a = await startTestControlPlane({ store: storeA, plugins: [streamPlugin()] });
    const b = await startTestControlPlane({ store: storeB, ca: a.ca, plugins: [streamPlugin()] });
    const edge = await a.issue('access-tier', { name: 'edge-1' });
    const source = new RemoteConfigSource({ controlPlaneUrl: b.url, tls: () => edge });
    try {
      await applySpecs(a, baseSpecs());
      await source.ready();
      const removed = nextSnapshot(source, (s) => s.services.length === 0 && s.accessTiers.length === 1);
      const del = await a.api('DELETE', '/api/v1/objects/service/db');
      assert.equal(del.status, 200, JSON.stringify(del.body));
      await removed;
    } finally {
      await source.close();
      await b.close();
      await a.close();
      await storeB.close();
      await storeA.close();
    }
  });
});

