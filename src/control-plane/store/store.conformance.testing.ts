/**
 * One conformance suite for every Store implementation (as Pomerium's storagetest): sqlite.test.ts and
 * postgres.test.ts each run it against their database. Every test works on kinds and names of its own,
 * so tests share one database without seeing each other, and closes every store it opens.
 *
 * What is dialect-specific (kill -9 mid-write, LISTEN reconnects, file modes) stays in those files.
 */
import { after, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { newEventId } from '../../lib/audit/index.ts';
import type { AccessEvent, KubeEvent } from '../../lib/audit/index.ts';
import type { Clock } from '../../lib/clock.ts';
import { errorCode } from '../../lib/errors.ts';
import { hashToken } from './tokens.ts';
import type { Change, Store, StoredObject } from './types.ts';

export interface OpenOptions {
  clock?: Clock;
}

/** Opens another Store on the suite's database: a new instance with its own connection(s). */
export type OpenStore = (options?: OpenOptions) => Promise<Store>;

/** Everything the database holds, as text (file bytes, or every table's rows), for CP-16 scans. */
export type DumpDatabase = () => Promise<string>;

export class FakeClock implements Clock {
  #now: number;
  constructor(start = Date.now()) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  advance(ms: number): void {
    this.#now += ms;
  }
}

const uid = (): string => randomBytes(4).toString('hex');
const actor = 'user:conformance';

function accessEvent(i: number, extra: Partial<AccessEvent> = {}): AccessEvent {
  return {
    id: newEventId(),
    time: new Date(1_800_000_000_000 + i * 1000).toISOString(),
    type: 'access',
    decision: i % 3 === 0 ? 'deny' : 'allow',
    reasons: [i % 3 === 0 ? 'policy-denied' : 'trust-cert-valid'],
    accessTier: 'edge-1',
    source: `192.0.2.1:${40000 + i}`,
    ...extra,
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<Error> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected a rejection with ${code}`);
  assert.equal(errorCode(caught), code, `expected ${code}, got ${errorCode(caught)}: ${caught.message}`);
  return caught;
}

export function runStoreConformance(name: string, openStore: OpenStore, cleanup: () => Promise<void>, dump: DumpDatabase): void {
  // At the file's root, so the database outlives every describe block below (each feature adds one).
  after(cleanup);
  void describe(`${name} store conformance`, () => {

    async function open(t: TestContext, options?: OpenOptions): Promise<Store> {
      const store = await openStore(options);
      t.after(() => store.close());
      return store;
    }

    // --- objects ---------------------------------------------------------------------------------

    void test('putObject creates an object at version 1 and getObject returns it with who and when', async (t) => {
      const clock = new FakeClock(Date.parse('2026-03-01T10:00:00.000Z'));
      const store = await open(t, { clock });
      const kind = `Role${uid()}`;
      const put = await store.putObject({ kind, name: 'engineers', spec: { users: { groups: ['eng'] } }, metadata: { description: 'Engineers' } }, { actor });
      assert.equal(put.result, 'created');
      assert.equal(typeof put.revision, 'number');
      const expected: StoredObject = { kind, name: 'engineers', metadata: { description: 'Engineers' }, spec: { users: { groups: ['eng'] } }, version: 1, createdAt: '2026-03-01T10:00:00.000Z', createdBy: actor, updatedAt: '2026-03-01T10:00:00.000Z', updatedBy: actor };
      assert.deepEqual(put.object, expected);
      assert.deepEqual(await store.getObject(kind, 'engineers'), expected);
      assert.equal(await store.getObject(kind, 'nobody'), undefined);
    });

    void test('putObject of the same spec again is unchanged: no version bump, no change, no audit event (idempotent apply)', async (t) => {
      const store = await open(t);
      const kind = `Role${uid()}`;
      await store.putObject({ kind, name: 'a', spec: { x: 1, y: { b: 2, a: [1, 'two'] } }, metadata: { link: 'https://wiki' } }, { actor });
      const revision = await store.currentRevision();
      const audits = (await store.queryAuditEvents({ kind })).events.length;
      // Same content, other key order, and an expectedVersion that matches.
      const again = await store.putObject({ kind, name: 'a', spec: { y: { a: [1, 'two'], b: 2 }, x: 1 }, metadata: { link: 'https://wiki' } }, { actor: 'someone-else', expectedVersion: 1 });
      assert.equal(again.result, 'unchanged');
      assert.equal(again.revision, undefined);
      assert.equal(again.object.version, 1);
      assert.equal(again.object.updatedBy, actor);
      assert.equal(await store.currentRevision(), revision);
      assert.equal((await store.queryAuditEvents({ kind })).events.length, audits);
      // Metadata counts too.
      const described = await store.putObject({ kind, name: 'a', spec: { x: 1, y: { b: 2, a: [1, 'two'] } }, metadata: { link: 'https://wiki', description: 'new' } }, { actor });
      assert.equal(described.result, 'changed');
      assert.equal(described.object.version, 2);
    });

    void test('putObject with a new spec bumps the version and the audit event holds before and after', async (t) => {
      const clock = new FakeClock();
      const store = await open(t, { clock });
      const kind = `Policy${uid()}`;
      const first = await store.putObject({ kind, name: 'p', spec: { access: [] } }, { actor: 'user:alice' });
      clock.advance(1000);
      const second = await store.putObject({ kind, name: 'p', spec: { access: [{ roles: ['eng'] }] } }, { actor: 'user:bob', expectedVersion: 1 });
      assert.equal(second.result, 'changed');
      assert.equal(second.object.version, 2);
      assert.equal(second.object.createdBy, 'user:alice');
      assert.equal(second.object.createdAt, first.object.createdAt);
      assert.equal(second.object.updatedBy, 'user:bob');
      assert.equal(Date.parse(second.object.updatedAt) - Date.parse(first.object.updatedAt), 1000);
      assert.ok((second.revision ?? 0) > (first.revision ?? 0));
      const audit = (await store.queryAuditEvents({ kind, name: 'p' })).events;
      assert.deepEqual(audit.map((e) => [e.action, e.actor]), [['update', 'user:bob'], ['create', 'user:alice']]);
      assert.deepEqual(audit[0].before, first.object);
      assert.deepEqual(audit[0].after, second.object);
      assert.equal(audit[1].before, null);
      assert.deepEqual(audit[1].after, first.object);
    });

    void test('a write against a stale version gets VERSION_CONFLICT and changes nothing (CP-14)', async (t) => {
      const store = await open(t);
      const kind = `Service${uid()}`;
      await store.putObject({ kind, name: 's', spec: { port: 1 } }, { actor, expectedVersion: 0 });
      await store.putObject({ kind, name: 's', spec: { port: 2 } }, { actor, expectedVersion: 1 });
      const revision = await store.currentRevision();
      await rejectsWith(store.putObject({ kind, name: 's', spec: { port: 3 } }, { actor, expectedVersion: 1 }), 'VERSION_CONFLICT');
      await rejectsWith(store.putObject({ kind, name: 's', spec: { port: 3 } }, { actor, expectedVersion: 0 }), 'VERSION_CONFLICT');
      await rejectsWith(store.putObject({ kind, name: 'missing', spec: {} }, { actor, expectedVersion: 4 }), 'VERSION_CONFLICT');
      await rejectsWith(store.deleteObject(kind, 's', { actor, expectedVersion: 1 }), 'VERSION_CONFLICT');
      await rejectsWith(store.putObject({ kind, name: 's', spec: {} }, { actor, expectedVersion: -1 }), 'INVALID_ARGUMENT');
      assert.deepEqual((await store.getObject(kind, 's'))?.spec, { port: 2 });
      assert.equal(await store.currentRevision(), revision);
      assert.equal((await store.queryAuditEvents({ kind })).events.length, 2);
    });

    void test('two stores racing on one version: exactly one write wins, the other gets VERSION_CONFLICT (CP-14)', async (t) => {
      const a = await open(t);
      const b = await open(t);
      const kind = `Race${uid()}`;
      await a.putObject({ kind, name: 'x', spec: { by: 'nobody' } }, { actor });
      for (let round = 1; round <= 20; round++) {
        const results = await Promise.allSettled([
          a.putObject({ kind, name: 'x', spec: { by: 'a', round } }, { actor: 'a', expectedVersion: round }),
          b.putObject({ kind, name: 'x', spec: { by: 'b', round } }, { actor: 'b', expectedVersion: round }),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r) => r.status === 'rejected');
        assert.equal(won.length, 1, `round ${round}: ${JSON.stringify(results.map((r) => (r.status === 'rejected' ? errorCode(r.reason) ?? String(r.reason) : 'ok')))}`);
        assert.equal(errorCode(lost[0].reason), 'VERSION_CONFLICT');
        assert.equal((await a.getObject(kind, 'x'))?.version, round + 1);
      }
      // Both also create the same new object with expectedVersion 0: one creates it.
      const creates = await Promise.allSettled([a.putObject({ kind, name: 'new', spec: { by: 'a' } }, { actor, expectedVersion: 0 }), b.putObject({ kind, name: 'new', spec: { by: 'b' } }, { actor, expectedVersion: 0 })]);
      assert.equal(creates.filter((r) => r.status === 'fulfilled').length, 1);
      const changes = (await a.changesSince(0, 10_000)).filter((c) => c.kind === kind && c.name === 'x');
      assert.deepEqual(changes.map((c) => c.version), Array.from({ length: 21 }, (_, i) => i + 1));
    });

    void test('read-modify-write with retry on VERSION_CONFLICT loses no update across stores (CP-14)', async (t) => {
      const stores = [await open(t), await open(t), await open(t)];
      const kind = `Counter${uid()}`;
      await stores[0].putObject({ kind, name: 'n', spec: { count: 0 } }, { actor });
      let conflicts = 0;
      const increment = async (store: Store): Promise<void> => {
        for (;;) {
          const current = await store.getObject(kind, 'n');
          assert.ok(current !== undefined);
          try {
            await store.putObject({ kind, name: 'n', spec: { count: (current.spec as { count: number }).count + 1 } }, { actor, expectedVersion: current.version });
            return;
          } catch (err) {
            if (errorCode(err) !== 'VERSION_CONFLICT') throw err;
            conflicts++;
          }
        }
      };
      await Promise.all(stores.map(async (store) => {
        for (let i = 0; i < 10; i++) await increment(store);
      }));
      const final = await stores[1].getObject(kind, 'n');
      assert.deepEqual(final?.spec, { count: 30 });
      assert.equal(final?.version, 31);
      t.diagnostic(`${conflicts} conflicts retried`);
    });

    void test('listObjects filters by kind and orders by kind, then name, bytewise', async (t) => {
      const store = await open(t);
      const k1 = `A${uid()}`;
      const k2 = `B${uid()}`;
      for (const n of ['b', 'a-b', 'ab', 'A', 'a']) await store.putObject({ kind: k1, name: n, spec: {} }, { actor });
      await store.putObject({ kind: k2, name: 'z', spec: {} }, { actor });
      assert.deepEqual((await store.listObjects(k1)).map((o) => o.name), ['A', 'a', 'a-b', 'ab', 'b']);
      const all = (await store.listObjects()).filter((o) => o.kind === k1 || o.kind === k2);
      assert.deepEqual(all.map((o) => `${o.kind}/${o.name}`), [...['A', 'a', 'a-b', 'ab', 'b'].map((n) => `${k1}/${n}`), `${k2}/z`]);
    });

    void test('deleteObject removes the object, checks expectedVersion, and says NOT_FOUND for a missing one', async (t) => {
      const store = await open(t);
      const kind = `Connector${uid()}`;
      const put = await store.putObject({ kind, name: 'dc1', spec: { cluster: 'edge' } }, { actor });
      const deleted = await store.deleteObject(kind, 'dc1', { actor: 'user:carol', expectedVersion: 1 });
      assert.deepEqual(deleted.object, put.object);
      assert.ok(deleted.revision > (put.revision ?? 0));
      assert.equal(await store.getObject(kind, 'dc1'), undefined);
      await rejectsWith(store.deleteObject(kind, 'dc1', { actor }), 'NOT_FOUND');
      const audit = (await store.queryAuditEvents({ kind, action: 'delete' })).events;
      assert.equal(audit.length, 1);
      assert.deepEqual(audit[0].before, put.object);
      assert.equal(audit[0].after, null);
      assert.equal(audit[0].actor, 'user:carol');
      // Re-creating starts again at version 1.
      assert.equal((await store.putObject({ kind, name: 'dc1', spec: {} }, { actor, expectedVersion: 0 })).object.version, 1);
    });

    void test('applyObjects writes every object in one transaction, or none when one fails', async (t) => {
      const store = await open(t);
      const kind = `Apply${uid()}`;
      const results = await store.applyObjects([
        { kind, name: 'a', spec: { v: 1 } },
        { kind, name: 'b', spec: { v: 1 } },
      ], { actor });
      assert.deepEqual(results.map((r) => r.result), ['created', 'created']);
      const revision = await store.currentRevision();
      const again = await store.applyObjects([
        { kind, name: 'a', spec: { v: 1 } },
        { kind, name: 'b', spec: { v: 2 } },
      ], { actor });
      assert.deepEqual(again.map((r) => r.result), ['unchanged', 'changed']);
      assert.equal(await store.currentRevision(), again[1].revision);
      assert.ok((again[1].revision ?? 0) > revision);
      // The third item conflicts: the first two must not be written either.
      const before = await store.currentRevision();
      await rejectsWith(store.applyObjects([
        { kind, name: 'a', spec: { v: 9 } },
        { kind, name: 'c', spec: { v: 9 } },
        { kind, name: 'b', spec: { v: 9 }, expectedVersion: 1 },
      ], { actor }), 'VERSION_CONFLICT');
      assert.deepEqual((await store.getObject(kind, 'a'))?.spec, { v: 1 });
      assert.equal(await store.getObject(kind, 'c'), undefined);
      assert.equal(await store.currentRevision(), before);
      assert.equal((await store.queryAuditEvents({ kind })).events.length, 3);
    });

    void test('putObject refuses the change-feed record kinds and malformed input with INVALID_ARGUMENT', async (t) => {
      const store = await open(t);
      for (const kind of ['User', 'Device', 'Certificate', '']) await rejectsWith(store.putObject({ kind, name: 'x', spec: {} }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.putObject({ kind: 'Role', name: '', spec: {} }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.putObject({ kind: 'Role', name: 'x', spec: undefined }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.putObject({ kind: 'Role', name: 'x', spec: {} }, { actor: '' }), 'INVALID_ARGUMENT');
    });

    // --- change feed -----------------------------------------------------------------------------

    void test('every put and delete appends one change, in order, and changesSince resumes after any revision', async (t) => {
      const store = await open(t);
      const kind = `Feed${uid()}`;
      const start = await store.currentRevision();
      const a1 = await store.putObject({ kind, name: 'a', spec: { n: 1 } }, { actor });
      const b1 = await store.putObject({ kind, name: 'b', spec: { n: 1 } }, { actor });
      await store.putObject({ kind, name: 'a', spec: { n: 1 } }, { actor }); // unchanged: no change
      const a2 = await store.putObject({ kind, name: 'a', spec: { n: 2 } }, { actor });
      const del = await store.deleteObject(kind, 'b', { actor: 'user:dave' });
      const mine = (changes: Change[]): Change[] => changes.filter((c) => c.kind === kind);
      const all = mine(await store.changesSince(start, 10_000));
      assert.deepEqual(all.map((c) => [c.name, c.op, c.version]), [['a', 'put', 1], ['b', 'put', 1], ['a', 'put', 2], ['b', 'delete', 1]]);
      assert.deepEqual(all.map((c) => c.revision), [a1.revision, b1.revision, a2.revision, del.revision]);
      assert.deepEqual(all[2].object, a2.object);
      assert.equal(all[3].object, null);
      assert.equal(all[3].actor, 'user:dave');
      for (let i = 1; i < all.length; i++) assert.ok(all[i].revision > all[i - 1].revision);
      // Resume after each revision: exactly the later ones.
      for (let i = 0; i < all.length; i++) assert.deepEqual(mine(await store.changesSince(all[i].revision, 10_000)), all.slice(i + 1));
      assert.equal(await store.currentRevision(), del.revision);
    });

    void test('changesSince honours its limit, so a consumer can page through the feed', async (t) => {
      const store = await open(t);
      const kind = `Page${uid()}`;
      const start = await store.currentRevision();
      for (let i = 0; i < 7; i++) await store.putObject({ kind, name: `o${i}`, spec: {} }, { actor });
      const seen: Change[] = [];
      let revision = start;
      for (;;) {
        const page = await store.changesSince(revision, 3);
        assert.ok(page.length <= 3);
        if (page.length === 0) break;
        seen.push(...page);
        revision = page[page.length - 1].revision;
      }
      assert.deepEqual(seen.filter((c) => c.kind === kind).map((c) => c.name), ['o0', 'o1', 'o2', 'o3', 'o4', 'o5', 'o6']);
      await rejectsWith(store.changesSince(-1), 'INVALID_ARGUMENT');
    });

    void test('a snapshot taken while another store writes, plus the changes after its revision, gives the current state', async (t) => {
      const writer = await open(t);
      const reader = await open(t);
      const kind = `Snap${uid()}`;
      let writing = true;
      const writes = (async () => {
        for (let i = 0; writing && i < 200; i++) {
          const name = `o${i % 5}`;
          if (i % 7 === 6) await writer.deleteObject(kind, name, { actor }).catch(() => {});
          else await writer.putObject({ kind, name, spec: { i } }, { actor });
        }
      })();
      const snapshots = [];
      for (let i = 0; i < 10; i++) {
        snapshots.push(await reader.snapshot());
        await delay(5);
      }
      writing = false;
      await writes;
      const final = new Map((await reader.listObjects(kind)).map((o) => [o.name, o]));
      for (const snap of snapshots) {
        const state = new Map(snap.objects.filter((o) => o.kind === kind).map((o) => [o.name, o]));
        for (const change of await reader.changesSince(snap.revision, 10_000)) {
          if (change.kind !== kind) continue;
          if (change.op === 'put') state.set(change.name, change.object as StoredObject);
          else state.delete(change.name);
        }
        assert.deepEqual(state, final, `snapshot at revision ${snap.revision}`);
      }
    });

    void test('a write through one store reaches a watch on another store of the same database within 1 s', async (t) => {
      const writer = await open(t);
      const watcher = await open(t);
      const kind = `Watch${uid()}`;
      // One watch for the whole test, started before the writes, as an access tier's stream would.
      const seen: { revision: number; at: number }[] = [];
      const stop = watcher.watch((revision) => seen.push({ revision, at: performance.now() }));
      t.after(stop);
      const now = await writer.currentRevision();
      for (let i = 0; i < 500 && !seen.some((s) => s.revision >= now); i++) await delay(10);
      assert.ok(seen.some((s) => s.revision >= now), 'the first call reports where the feed is');
      const latencies: number[] = [];
      for (let i = 0; i < 5; i++) {
        const started = performance.now();
        const { revision } = await writer.putObject({ kind, name: 'o', spec: { i } }, { actor });
        const deadline = started + 1000;
        while (!seen.some((s) => s.revision >= (revision ?? 0)) && performance.now() < deadline) await delay(5);
        const hit = seen.find((s) => s.revision >= (revision ?? 0));
        assert.ok(hit !== undefined, `revision ${revision} not seen by the other store within 1 s`);
        latencies.push(hit.at - started);
        await delay(i * 37); // land at different points of the other store's poll cycle
      }
      t.diagnostic(`cross-store watch latency: ${latencies.map((ms) => ms.toFixed(1)).join(', ')} ms`);
    });

    void test('watch reports the current revision at once, then each new one, and stops after unsubscribe', async (t) => {
      const store = await open(t);
      const kind = `W${uid()}`;
      const seen: number[] = [];
      const start = await store.currentRevision();
      const stop = store.watch((r) => seen.push(r));
      for (let i = 0; i < 100 && seen.length === 0; i++) await delay(10);
      assert.deepEqual(seen, [start]);
      const { revision } = await store.putObject({ kind, name: 'o', spec: {} }, { actor });
      assert.equal(seen.at(-1), revision, 'a write through the same store is announced when it commits');
      stop();
      await store.putObject({ kind, name: 'o', spec: { again: true } }, { actor });
      await delay(300);
      assert.equal(seen.at(-1), revision);
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1]);
    });

    void test('user, device and certificate revocation changes go through the same feed, so access tiers learn of them', async (t) => {
      const store = await open(t);
      const start = await store.currentRevision();
      const user = await store.createUser({ name: `feed-${uid()}`, groups: ['eng'] }, { actor });
      const device = await store.registerDevice({ userId: user.id, platform: 'linux' }, { actor });
      await store.updateUser(user.id, { disabled: true }, { actor });
      await store.banDevice(device.id, { actor });
      const serial = uid();
      await store.recordCertificate({ serial, type: 'trust', identity: `causeway://device/${device.id}`, notAfter: new Date(Date.now() + 3_600_000).toISOString() });
      await store.revokeCertificate(serial, { actor, reason: 'device lost' });
      await store.unregisterDevice(device.id, { actor });
      const changes = (await store.changesSince(start, 10_000)).filter((c) => c.name === user.id || c.name === device.id || c.name === serial);
      assert.deepEqual(changes.map((c) => [c.kind, c.op, c.version]), [
        ['User', 'put', 1],
        ['Device', 'put', 1],
        ['User', 'put', 2],
        ['Device', 'put', 2],
        ['Certificate', 'put', 1],
        ['Device', 'delete', 2],
      ]);
      assert.equal((changes[2].object as { disabled: boolean }).disabled, true);
      assert.equal((changes[3].object as { banned: boolean }).banned, true);
      assert.equal((changes[4].object as { reason: string }).reason, 'device lost');
      const snap = await store.snapshot();
      assert.ok(snap.revokedSerials.includes(serial));
      assert.equal(snap.users.find((u) => u.id === user.id)?.disabled, true);
      assert.equal(snap.devices.find((d) => d.id === device.id), undefined);
    });

    // --- users and devices -----------------------------------------------------------------------

    void test('users: create, read by id and name, list, update with versions, and refuse a duplicate name', async (t) => {
      const store = await open(t);
      const name = `alice-${uid()}`;
      const created = await store.createUser({ name, email: 'alice@example.com', groups: ['eng', 'ops'] }, { actor });
      assert.equal(created.version, 1);
      assert.equal(created.disabled, false);
      assert.equal(created.hasPassword, false);
      assert.deepEqual(await store.getUser(created.id), created);
      assert.deepEqual(await store.getUserByName(name), created);
      assert.ok((await store.listUsers()).some((u) => u.id === created.id));
      await rejectsWith(store.createUser({ name }, { actor }), 'ALREADY_EXISTS');
      await rejectsWith(store.createUser({ id: created.id, name: `other-${uid()}` }, { actor }), 'ALREADY_EXISTS');

      const updated = await store.updateUser(created.id, { groups: ['eng'], disabled: true }, { actor: 'user:admin', expectedVersion: 1 });
      assert.equal(updated.version, 2);
      assert.deepEqual(updated.groups, ['eng']);
      assert.equal(updated.disabled, true);
      assert.equal(updated.updatedBy, 'user:admin');
      await rejectsWith(store.updateUser(created.id, { disabled: false }, { actor, expectedVersion: 1 }), 'VERSION_CONFLICT');
      const same = await store.updateUser(created.id, { groups: ['eng'] }, { actor });
      assert.equal(same.version, 2, 'a patch that changes nothing writes nothing');
      await rejectsWith(store.updateUser('no-such-user', { disabled: true }, { actor }), 'NOT_FOUND');
      const audit = (await store.queryAuditEvents({ kind: 'User', name: created.id })).events;
      assert.deepEqual(audit.map((e) => e.action), ['update', 'create']);
      assert.deepEqual(audit[0].before, created);
      assert.deepEqual(audit[0].after, updated);
    });

    void test('a password hash is returned by getUserCredentials only', async (t) => {
      const store = await open(t);
      const name = `pw-${uid()}`;
      const hash = `scrypt$${uid()}${uid()}`;
      const user = await store.createUser({ name, passwordHash: hash }, { actor });
      assert.equal(user.hasPassword, true);
      assert.deepEqual(await store.getUserCredentials(name), { user, passwordHash: hash, totpSecret: null, failedLogins: 0 });
      const everything = JSON.stringify([user, await store.getUser(user.id), await store.listUsers(), await store.snapshot(), await store.changesSince(0, 10_000), await store.queryAuditEvents({ kind: 'User', name: user.id })]);
      assert.ok(!everything.includes(hash));
      const changed = await store.updateUser(user.id, { passwordHash: null }, { actor });
      assert.equal(changed.hasPassword, false);
      assert.equal((await store.getUserCredentials(name))?.passwordHash, null);
      assert.equal(await store.getUserCredentials('nobody-at-all'), undefined);
    });

    void test('a new user is local with no TOTP, no lock and no login; source and a sealed TOTP secret are set and patched like other fields', async (t) => {
      const store = await open(t);
      const plain = await store.createUser({ name: `plain-${uid()}` }, { actor });
      assert.equal(plain.source, 'local');
      assert.equal(plain.hasTotp, false);
      assert.equal(plain.lockedUntil, null);
      assert.equal(plain.lastLoginAt, null);
      const name = `idp-${uid()}`;
      const idp = await store.createUser({ name, source: 'idp:corp', email: 'e@example.com', groups: ['platform'] }, { actor });
      assert.equal(idp.source, 'idp:corp');
      assert.deepEqual(await store.getUserByName(name), idp);
      const sealed = `sealed.v1.${uid()}${uid()}`;
      const withTotp = await store.updateUser(plain.id, { totpSecret: sealed }, { actor, expectedVersion: 1 });
      assert.equal(withTotp.hasTotp, true);
      assert.equal(withTotp.version, 2);
      assert.equal((await store.updateUser(plain.id, { totpSecret: sealed }, { actor })).version, 2, 'the same secret again writes nothing');
      const moved = await store.updateUser(plain.id, { source: 'idp:other' }, { actor });
      assert.equal(moved.source, 'idp:other');
      assert.equal(moved.version, 3);
      const cleared = await store.updateUser(plain.id, { totpSecret: null }, { actor });
      assert.equal(cleared.hasTotp, false);
      await rejectsWith(store.createUser({ name: `bad-${uid()}`, source: 'ldap' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.createUser({ name: `bad-${uid()}`, source: 'idp:' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.updateUser(plain.id, { source: 'idp: spaced' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.updateUser(plain.id, { totpSecret: '' }, { actor }), 'INVALID_ARGUMENT');
    });

    void test('a TOTP secret and a password hash come from getUserCredentials only, never from a record, the feed, a snapshot or the audit log (CP-11)', async (t) => {
      const store = await open(t);
      const name = `totp-${uid()}`;
      const hash = `scrypt$${uid()}${uid()}`;
      const sealed = `sealed.v1.${uid()}${uid()}`;
      const user = await store.createUser({ name, passwordHash: hash, totpSecret: sealed }, { actor });
      assert.equal(user.hasTotp, true);
      await store.recordLoginFailure(user.id, { at: new Date().toISOString(), maxFailures: 1, lockMs: 60_000 });
      await store.unlockUser(user.id, { actor });
      await store.recordLoginSuccess(user.id, new Date().toISOString());
      const credentials = await store.getUserCredentials(name);
      assert.equal(credentials?.totpSecret, sealed);
      assert.equal(credentials?.passwordHash, hash);
      assert.equal(credentials?.failedLogins, 0);
      const records = [await store.getUser(user.id), await store.getUserByName(name), await store.listUsers(), await store.snapshot(), await store.changesSince(0, 10_000), await store.queryAuditEvents({ kind: 'User', name: user.id })];
      const everything = JSON.stringify(records);
      for (const secret of [sealed, hash]) assert.ok(!everything.includes(secret), 'no secret outside getUserCredentials');
      for (const field of ['totpSecret', 'totp_secret', 'passwordHash', 'password_hash', 'failedLogins']) assert.ok(!everything.includes(`"${field}"`), `no ${field} field in any record`);
      await rejectsWith(store.updateUser(user.id, { totpSecret: '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----' }, { actor }), 'PLAINTEXT_KEY_REFUSED');
    });

    void test('recordLoginFailure counts failures and locks at maxFailures; success resets them; neither bumps the version nor writes a change or audit event', async (t) => {
      const store = await open(t);
      const user = await store.createUser({ name: `lock-${uid()}` }, { actor });
      const revision = await store.currentRevision();
      const t0 = Date.parse('2026-05-01T12:00:00.000Z');
      const at = (ms: number): string => new Date(t0 + ms).toISOString();
      const opts = (ms: number) => ({ at: at(ms), maxFailures: 3, lockMs: 60_000 });
      assert.deepEqual(await store.recordLoginFailure(user.id, opts(0)), { failedLogins: 1, lockedUntil: null });
      assert.deepEqual(await store.recordLoginFailure(user.id, opts(1000)), { failedLogins: 2, lockedUntil: null });
      assert.deepEqual(await store.recordLoginFailure(user.id, opts(2000)), { failedLogins: 3, lockedUntil: at(62_000) });
      assert.equal((await store.getUser(user.id))?.lockedUntil, at(62_000));
      // A failure while locked counts and restarts the lock.
      assert.deepEqual(await store.recordLoginFailure(user.id, opts(10_000)), { failedLogins: 4, lockedUntil: at(70_000) });
      // After the lock has run out, counting starts again.
      assert.deepEqual(await store.recordLoginFailure(user.id, opts(80_000)), { failedLogins: 1, lockedUntil: null });
      assert.equal((await store.getUserCredentials(user.name))?.failedLogins, 1);
      await store.recordLoginSuccess(user.id, at(90_000));
      const after = await store.getUser(user.id);
      assert.equal(after?.lastLoginAt, at(90_000));
      assert.equal(after?.lockedUntil, null);
      assert.equal((await store.getUserCredentials(user.name))?.failedLogins, 0);
      assert.equal(after?.version, 1);
      assert.equal(await store.currentRevision(), revision);
      assert.deepEqual((await store.queryAuditEvents({ kind: 'User', name: user.id })).events.map((e) => e.action), ['create']);
      // An update racing with failures does not undo their count.
      await store.recordLoginFailure(user.id, opts(91_000));
      await store.updateUser(user.id, { groups: ['eng'] }, { actor });
      assert.equal((await store.getUserCredentials(user.name))?.failedLogins, 1);
      await rejectsWith(store.recordLoginFailure('no-such-user', opts(0)), 'NOT_FOUND');
      await rejectsWith(store.recordLoginSuccess('no-such-user', at(0)), 'NOT_FOUND');
      await rejectsWith(store.recordLoginFailure(user.id, { at: at(0), maxFailures: 0, lockMs: 1 }), 'INVALID_ARGUMENT');
      await rejectsWith(store.recordLoginFailure(user.id, { at: 'yesterday', maxFailures: 5, lockMs: 1 }), 'INVALID_ARGUMENT');
    });

    void test('20 concurrent login failures through two stores with maxFailures 5 are all counted and lock the user (no lost update)', async (t) => {
      const a = await open(t);
      const b = await open(t);
      const user = await a.createUser({ name: `race-${uid()}` }, { actor });
      const at = '2026-05-01T12:00:00.000Z';
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).recordLoginFailure(user.id, { at, maxFailures: 5, lockMs: 15 * 60_000 })));
      assert.deepEqual(results.map((r) => r.failedLogins).sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i + 1));
      for (const r of results) assert.equal(r.lockedUntil, r.failedLogins >= 5 ? '2026-05-01T12:15:00.000Z' : null);
      assert.equal((await a.getUserCredentials(user.name))?.failedLogins, 20);
      assert.equal((await b.getUser(user.id))?.lockedUntil, '2026-05-01T12:15:00.000Z');
    });

    void test('unlockUser is an admin write: it resets the lock with a version bump, a change and an unlock audit event', async (t) => {
      const store = await open(t);
      const user = await store.createUser({ name: `unlock-${uid()}` }, { actor });
      const same = await store.unlockUser(user.id, { actor: 'user:admin' });
      assert.deepEqual(same, user, 'unlocking a user who is not locked writes nothing');
      const at = new Date().toISOString();
      for (let i = 0; i < 5; i++) await store.recordLoginFailure(user.id, { at, maxFailures: 5, lockMs: 60_000 });
      const locked = await store.getUser(user.id);
      assert.ok(locked?.lockedUntil !== null);
      const start = await store.currentRevision();
      await rejectsWith(store.unlockUser(user.id, { actor: 'user:admin', expectedVersion: 7 }), 'VERSION_CONFLICT');
      const unlocked = await store.unlockUser(user.id, { actor: 'user:admin', expectedVersion: 1 });
      assert.equal(unlocked.lockedUntil, null);
      assert.equal(unlocked.version, 2);
      assert.equal(unlocked.updatedBy, 'user:admin');
      assert.deepEqual(await store.getUser(user.id), unlocked);
      assert.equal((await store.getUserCredentials(user.name))?.failedLogins, 0);
      const changes = (await store.changesSince(start)).filter((c) => c.name === user.id);
      assert.deepEqual(changes.map((c) => [c.kind, c.op, c.version]), [['User', 'put', 2]]);
      assert.deepEqual(changes[0].object, unlocked);
      const audit = (await store.queryAuditEvents({ kind: 'User', name: user.id })).events;
      assert.deepEqual(audit.map((e) => [e.action, e.actor]), [['unlock', 'user:admin'], ['create', actor]]);
      assert.deepEqual(audit[0].before, locked);
      assert.deepEqual(audit[0].after, unlocked);
      await rejectsWith(store.unlockUser('no-such-user', { actor }), 'NOT_FOUND');
    });

    void test('deleteUser removes the user and their devices, each as a change and an audit event', async (t) => {
      const store = await open(t);
      const user = await store.createUser({ name: `del-${uid()}` }, { actor });
      const d1 = await store.registerDevice({ userId: user.id, platform: 'macos' }, { actor });
      const d2 = await store.registerDevice({ userId: user.id, platform: 'linux' }, { actor });
      const start = await store.currentRevision();
      await rejectsWith(store.deleteUser(user.id, { actor, expectedVersion: 7 }), 'VERSION_CONFLICT');
      const deleted = await store.deleteUser(user.id, { actor, expectedVersion: 1 });
      assert.equal(deleted.id, user.id);
      assert.equal(await store.getUser(user.id), undefined);
      assert.deepEqual(await store.listDevices({ userId: user.id }), []);
      const changes = (await store.changesSince(start)).filter((c) => [user.id, d1.id, d2.id].includes(c.name));
      assert.deepEqual(changes.map((c) => `${c.kind}:${c.op}`).sort(), ['Device:delete', 'Device:delete', 'User:delete']);
      await rejectsWith(store.deleteUser(user.id, { actor }), 'NOT_FOUND');
    });

    void test('devices: register, read, list by user, update (an empty change writes nothing), ban, unban, touch, unregister', async (t) => {
      const clock = new FakeClock();
      const store = await open(t, { clock });
      const user = await store.createUser({ name: `dev-${uid()}` }, { actor });
      await rejectsWith(store.registerDevice({ userId: 'no-such-user', platform: 'linux' }, { actor }), 'NOT_FOUND');
      const device = await store.registerDevice({ userId: user.id, platform: 'macos', osVersion: '14.5', serial: 'C02XYZ', hostname: 'laptop', ownership: 'corporate-dedicated', publicKey: '-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n' }, { actor: `user:${user.name}` });
      assert.equal(device.version, 1);
      assert.equal(device.banned, false);
      assert.equal(device.lastSeen, null);
      assert.equal(device.trust, null);
      assert.deepEqual(await store.getDevice(device.id), device);
      await rejectsWith(store.registerDevice({ id: device.id, userId: user.id, platform: 'linux' }, { actor }), 'ALREADY_EXISTS');
      const other = await store.registerDevice({ userId: user.id, platform: 'linux' }, { actor });
      assert.deepEqual((await store.listDevices({ userId: user.id })).map((d) => d.id), [device.id, other.id].sort());
      assert.equal(other.ownership, 'other');

      const trusted = await store.updateDevice(device.id, { trust: { level: 'High', factors: { diskEncryption: true } }, osVersion: '14.6' }, { actor: 'system:trust', expectedVersion: 1 });
      assert.equal(trusted.version, 2);
      assert.deepEqual(trusted.trust, { level: 'High', factors: { diskEncryption: true } });
      const revision = await store.currentRevision();
      const same = await store.updateDevice(device.id, { trust: { factors: { diskEncryption: true }, level: 'High' } }, { actor: 'system:trust' });
      assert.equal(same.version, 2);
      assert.equal(await store.currentRevision(), revision);
      await rejectsWith(store.updateDevice(device.id, { banned: true }, { actor, expectedVersion: 1 }), 'VERSION_CONFLICT');

      const banned = await store.banDevice(device.id, { actor: 'user:admin' });
      assert.equal(banned.banned, true);
      assert.equal(banned.version, 3);
      assert.equal((await store.unbanDevice(device.id, { actor: 'user:admin' })).banned, false);
      const actions = (await store.queryAuditEvents({ kind: 'Device', name: device.id })).events.map((e) => e.action);
      assert.deepEqual(actions, ['unban', 'ban', 'update', 'create']);

      clock.advance(5000);
      await store.touchDevice(device.id);
      const touched = await store.getDevice(device.id);
      assert.equal(touched?.lastSeen, new Date(clock.now()).toISOString());
      assert.equal(touched?.version, 4, 'touching is not a change');
      await rejectsWith(store.touchDevice('no-such-device'), 'NOT_FOUND');

      const gone = await store.unregisterDevice(device.id, { actor, expectedVersion: 4 });
      assert.equal(gone.id, device.id);
      assert.equal(await store.getDevice(device.id), undefined);
      await rejectsWith(store.unregisterDevice(device.id, { actor }), 'NOT_FOUND');
    });

    void test('a new device has no posture, no MDM state and no overrides; recordPosture stores the factors and server time without a version bump or change', async (t) => {
      const clock = new FakeClock(Date.parse('2026-11-27T12:00:00.000Z'));
      const store = await open(t, { clock });
      const user = await store.createUser({ name: `posture-${uid()}` }, { actor });
      const device = await store.registerDevice({ userId: user.id, platform: 'linux' }, { actor });
      assert.equal(device.posture, null);
      assert.equal(device.postureAt, null);
      assert.deepEqual(device.mdm, {});
      assert.deepEqual(device.trustOverrides, []);
      const revision = await store.currentRevision();
      await store.recordPosture(device.id, { factors: { firewall: true, osVersion: '22.04', files: { '/etc/corp': true } }, at: '2026-11-27T12:00:01Z' });
      const stored = await store.getDevice(device.id);
      assert.deepEqual(stored?.posture, { firewall: true, osVersion: '22.04', files: { '/etc/corp': true } });
      assert.equal(stored?.postureAt, '2026-11-27T12:00:01.000Z');
      assert.equal(stored?.version, 1, 'a report is not a change');
      assert.equal(await store.currentRevision(), revision);
      assert.deepEqual((await store.queryAuditEvents({ kind: 'Device', name: device.id })).events.map((e) => e.action), ['create']);
      await store.recordPosture(device.id, { factors: { firewall: false }, at: '2026-11-27T12:05:00Z' });
      assert.deepEqual((await store.getDevice(device.id))?.posture, { firewall: false }, 'a report replaces the last one');
      await rejectsWith(store.recordPosture('no-such-device', { factors: {}, at: '2026-11-27T12:00:00Z' }), 'NOT_FOUND');
      await rejectsWith(store.recordPosture(device.id, { factors: [] as unknown as Record<string, unknown>, at: '2026-11-27T12:00:00Z' }), 'INVALID_ARGUMENT');
      await rejectsWith(store.recordPosture(device.id, { factors: {}, at: 'soon' }), 'INVALID_ARGUMENT');
      const snapshot = await store.snapshot();
      assert.equal(snapshot.devices.find((d) => d.id === device.id)?.postureAt, '2026-11-27T12:05:00.000Z');
    });

    void test('recordMdmState keeps one state per manager, removes it on null, writes no change, and loses nothing when managers write at once', async (t) => {
      const store = await open(t);
      const other = await open(t);
      const user = await store.createUser({ name: `mdm-${uid()}` }, { actor });
      const device = await store.registerDevice({ userId: user.id, platform: 'macos', serial: `C02${uid()}` }, { actor });
      const revision = await store.currentRevision();
      const at = '2026-11-27T12:00:00.000Z';
      await store.recordMdmState(device.id, 'intune', { managed: true, compliant: false, at, source: 'intune:intune' });
      await store.recordMdmState(device.id, 'falcon', { managed: true, compliant: null, score: 82, at, source: 'crowdstrike:falcon' });
      assert.deepEqual((await store.getDevice(device.id))?.mdm, {
        intune: { managed: true, compliant: false, at, source: 'intune:intune' },
        falcon: { managed: true, compliant: null, score: 82, at, source: 'crowdstrike:falcon' },
      });
      await store.recordMdmState(device.id, 'falcon', null);
      await store.recordMdmState(device.id, 'falcon', null);
      assert.deepEqual(Object.keys((await store.getDevice(device.id))?.mdm ?? {}), ['intune']);
      assert.equal((await store.getDevice(device.id))?.version, 1);
      assert.equal(await store.currentRevision(), revision, 'MDM states are not changes');
      await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? store : other).recordMdmState(device.id, `m${i}`, { managed: i % 3 !== 0, compliant: true, at, source: `http:m${i}` })));
      assert.equal(Object.keys((await store.getDevice(device.id))?.mdm ?? {}).length, 13, 'every concurrent write is kept');
      await rejectsWith(store.recordMdmState('no-such-device', 'intune', null), 'NOT_FOUND');
      await rejectsWith(store.recordMdmState(device.id, 'intune', { managed: 'yes', compliant: true, at, source: 'x' } as never), 'INVALID_ARGUMENT');
      await rejectsWith(store.recordMdmState(device.id, '', null), 'INVALID_ARGUMENT');
    });

    void test('trust overrides: one per source, set and cleared as versioned, audited changes carried by the feed; bad input is refused', async (t) => {
      const clock = new FakeClock(Date.parse('2026-11-27T12:00:00.000Z'));
      const store = await open(t, { clock });
      const user = await store.createUser({ name: `override-${uid()}` }, { actor });
      const device = await store.registerDevice({ userId: user.id, platform: 'windows' }, { actor });
      const revision = await store.currentRevision();
      const set = await store.setTrustOverride(device.id, { source: 'security-team', maxLevel: 'Low', reason: 'incident 4711' }, { actor: 'user:alice', expectedVersion: 1 });
      assert.equal(set.version, 2);
      assert.deepEqual(set.trustOverrides, [{ source: 'security-team', maxLevel: 'Low', reason: 'incident 4711', setBy: 'user:alice', setAt: '2026-11-27T12:00:00.000Z' }]);
      const twice = await store.setTrustOverride(device.id, { source: 'siem', maxLevel: 'AlwaysDeny', reason: 'beaconing', expiresAt: '2026-11-28T00:00:00Z' }, { actor: 'token:siem' });
      const replaced = await store.setTrustOverride(device.id, { source: 'security-team', maxLevel: 'Medium', reason: 'incident 4711 closing' }, { actor: 'user:alice' });
      assert.equal(replaced.version, 4);
      assert.deepEqual(replaced.trustOverrides.map((o) => [o.source, o.maxLevel, o.expiresAt ?? null]), [['siem', 'AlwaysDeny', '2026-11-28T00:00:00.000Z'], ['security-team', 'Medium', null]]);
      assert.equal(twice.trustOverrides.length, 2);
      const changes = await store.changesSince(revision);
      assert.deepEqual(changes.map((c) => [c.kind, c.name, c.version]), [['Device', device.id, 2], ['Device', device.id, 3], ['Device', device.id, 4]]);
      assert.equal((changes[2]?.object as { trustOverrides: unknown[] }).trustOverrides.length, 2);
      const cleared = await store.clearTrustOverride(device.id, 'siem', { actor: 'user:alice' });
      assert.deepEqual(cleared.trustOverrides.map((o) => o.source), ['security-team']);
      const none = await store.clearTrustOverride(device.id, 'siem', { actor: 'user:alice' });
      assert.equal(none.version, cleared.version, 'clearing an absent override writes nothing');
      const actions = (await store.queryAuditEvents({ kind: 'Device', name: device.id })).events.map((e) => e.action);
      assert.deepEqual(actions, ['trust-override-clear', 'trust-override', 'trust-override', 'trust-override', 'create']);
      await rejectsWith(store.setTrustOverride(device.id, { source: 'x', maxLevel: 'Lowest' as never, reason: 'r' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.setTrustOverride(device.id, { source: 'bad source', maxLevel: 'Low', reason: 'r' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.setTrustOverride(device.id, { source: 'x', maxLevel: 'Low', reason: '' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.setTrustOverride(device.id, { source: 'x', maxLevel: 'Low', reason: 'r', expiresAt: 'never' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.setTrustOverride(device.id, { source: 'x', maxLevel: 'Low', reason: 'r' }, { actor, expectedVersion: 1 }), 'VERSION_CONFLICT');
      await rejectsWith(store.setTrustOverride('no-such-device', { source: 'x', maxLevel: 'Low', reason: 'r' }, { actor }), 'NOT_FOUND');
      await rejectsWith(store.clearTrustOverride(device.id, 'x', { actor: '' }), 'INVALID_ARGUMENT');
    });

    void test('findDevicesBySerial matches serials ignoring case and finds nothing for an unknown one', async (t) => {
      const store = await open(t);
      const user = await store.createUser({ name: `serial-${uid()}` }, { actor });
      const serial = `C02ab${uid()}`;
      const a = await store.registerDevice({ userId: user.id, platform: 'macos', serial }, { actor });
      const b = await store.registerDevice({ userId: user.id, platform: 'macos', serial: serial.toUpperCase() }, { actor });
      await store.registerDevice({ userId: user.id, platform: 'linux' }, { actor });
      assert.deepEqual((await store.findDevicesBySerial(serial.toLowerCase())).map((d) => d.id), [a.id, b.id].sort());
      assert.deepEqual(await store.findDevicesBySerial(`none-${uid()}`), []);
      await rejectsWith(store.findDevicesBySerial(''), 'INVALID_ARGUMENT');
    });

    // --- tokens ----------------------------------------------------------------------------------

    void test('an API token verifies until it is revoked or expires, and its secret is shown once and never returned again', async (t) => {
      const clock = new FakeClock();
      const store = await open(t, { clock });
      const { token, record } = await store.createApiToken({ name: 'ci', scope: 'admin', expiresAt: new Date(clock.now() + 3_600_000).toISOString() }, { actor });
      assert.match(token, /^cwat_[0-9a-f]{16}_/);
      assert.equal(record.scope, 'admin');
      assert.equal(record.lastUsedAt, null);
      const verified = await store.verifyApiToken(token);
      assert.equal(verified?.id, record.id);
      assert.equal(verified?.lastUsedAt, new Date(clock.now()).toISOString());
      // last_used_at is written lazily: not again within a minute.
      clock.advance(30_000);
      assert.equal((await store.verifyApiToken(token))?.lastUsedAt, new Date(clock.now() - 30_000).toISOString());
      clock.advance(31_000);
      assert.equal((await store.verifyApiToken(token))?.lastUsedAt, new Date(clock.now()).toISOString());

      // Wrong secrets: another token's shape, one changed character, garbage, empty.
      const tampered = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
      for (const bad of [tampered, token.replace('cwat_', 'cwjt_'), 'cwat_0000000000000000_' + 'A'.repeat(43), 'garbage', '']) assert.equal(await store.verifyApiToken(bad), undefined, bad);

      const listed = await store.listApiTokens();
      const everything = JSON.stringify([record, verified, listed, await store.queryAuditEvents({ kind: 'ApiToken' })]);
      assert.ok(!everything.includes(token.split('_').slice(2).join('_')), 'the secret is never returned again');
      assert.ok(!everything.includes(hashToken(token)), 'nor its hash');
      assert.ok(!everything.includes('hash'));

      clock.advance(3_600_000);
      assert.equal(await store.verifyApiToken(token), undefined, 'expired');

      const viewer = await store.createApiToken({ name: 'dash', scope: 'viewer' }, { actor });
      assert.equal(viewer.record.expiresAt, null);
      assert.equal((await store.verifyApiToken(viewer.token))?.scope, 'viewer');
      const revoked = await store.revokeApiToken(viewer.record.id, { actor: 'user:admin' });
      assert.equal(revoked.revokedAt, new Date(clock.now()).toISOString());
      assert.equal(await store.verifyApiToken(viewer.token), undefined, 'revoked');
      assert.equal((await store.revokeApiToken(viewer.record.id, { actor })).revokedAt, revoked.revokedAt, 'revoking twice changes nothing');
      await rejectsWith(store.revokeApiToken('0000000000000000', { actor }), 'NOT_FOUND');
      await rejectsWith(store.createApiToken({ name: 'x', scope: 'root' as 'admin' }, { actor }), 'INVALID_ARGUMENT');
      const actions = (await store.queryAuditEvents({ kind: 'ApiToken', name: viewer.record.id })).events.map((e) => e.action);
      assert.deepEqual(actions, ['revoke', 'create']);
    });

    void test('a join token works once; reuse, expiry, another kind and a guess all get JOIN_TOKEN_INVALID with one message (DT-06)', async (t) => {
      const clock = new FakeClock();
      const store = await open(t, { clock });
      const name = `edge-${uid()}`;
      const { token, record } = await store.createJoinToken({ kind: 'access-tier', name }, { actor });
      assert.match(token, /^cwjt_[0-9a-f]{16}_/);
      assert.equal(Date.parse(record.expiresAt) - clock.now(), 3_600_000, 'one hour by default');
      assert.equal(record.usedAt, null);

      const messages = new Set<string>();
      const invalid = async (promise: Promise<unknown>): Promise<void> => {
        messages.add((await rejectsWith(promise, 'JOIN_TOKEN_INVALID')).message);
      };
      await invalid(store.consumeJoinToken(token, 'connector'));
      const used = await store.consumeJoinToken(token, 'access-tier');
      assert.equal(used.id, record.id);
      assert.equal(used.usedAt, new Date(clock.now()).toISOString());
      await invalid(store.consumeJoinToken(token, 'access-tier'));

      const short = await store.createJoinToken({ kind: 'connector', name: 'dc1', ttlMs: 60_000 }, { actor });
      clock.advance(60_000);
      await invalid(store.consumeJoinToken(short.token, 'connector'));
      await invalid(store.consumeJoinToken(`cwjt_${short.record.id}_${'x'.repeat(43)}`, 'connector'));
      await invalid(store.consumeJoinToken('cwjt_0123456789abcdef_' + 'A'.repeat(43), 'connector'));
      await invalid(store.consumeJoinToken('not a token', 'connector'));
      assert.equal(messages.size, 1, 'the reason is never told');
      await rejectsWith(store.createJoinToken({ kind: 'connector', name: 'dc1', ttlMs: 48 * 3_600_000 }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.createJoinToken({ kind: 'server' as 'connector', name: 'dc1' }, { actor }), 'INVALID_ARGUMENT');

      const listed = (await store.listJoinTokens()).find((r) => r.id === record.id);
      assert.deepEqual(listed, used);
      const actions = (await store.queryAuditEvents({ kind: 'JoinToken', name: record.id })).events.map((e) => [e.action, e.actor]);
      assert.deepEqual(actions, [['use', `access-tier:${name}`], ['create', actor]]);
    });

    void test('two stores consuming one join token at once: exactly one succeeds (DT-06)', async (t) => {
      const a = await open(t);
      const b = await open(t);
      for (let i = 0; i < 10; i++) {
        const { token } = await a.createJoinToken({ kind: 'kube-proxy', name: `kp-${i}` }, { actor });
        const results = await Promise.allSettled([a.consumeJoinToken(token, 'kube-proxy'), b.consumeJoinToken(token, 'kube-proxy'), b.consumeJoinToken(token, 'kube-proxy')]);
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
        for (const r of results) if (r.status === 'rejected') assert.equal(errorCode(r.reason), 'JOIN_TOKEN_INVALID');
      }
    });

    // --- certificates and settings ---------------------------------------------------------------

    void test('revoked certificates are listed until they expire; revoking twice is one revocation; an unrecorded serial can be revoked', async (t) => {
      const clock = new FakeClock();
      const store = await open(t, { clock });
      const soon = uid();
      const later = uid();
      const notAfter = (ms: number): string => new Date(clock.now() + ms).toISOString();
      const recorded = await store.recordCertificate({ serial: soon, type: 'trust', identity: 'causeway://user/alice', notAfter: notAfter(60_000) });
      assert.equal(recorded.revokedAt, null);
      assert.deepEqual(await store.recordCertificate({ serial: soon, type: 'other', identity: 'x', notAfter: notAfter(1) }), recorded, 'recording is idempotent');
      await store.recordCertificate({ serial: later, type: 'device', identity: 'causeway://device/d1', notAfter: notAfter(3_600_000) });
      const revoked = await store.revokeCertificate(soon, { actor: 'user:admin', reason: 'key compromise' });
      assert.equal(revoked.revokedBy, 'user:admin');
      assert.equal(revoked.reason, 'key compromise');
      const revision = await store.currentRevision();
      assert.deepEqual(await store.revokeCertificate(soon, { actor }), revoked);
      assert.equal(await store.currentRevision(), revision, 'a second revocation writes nothing');
      await store.revokeCertificate(later, { actor });
      const unknown = `unrecorded-${uid()}`;
      const forced = await store.revokeCertificate(unknown, { actor, type: 'connector', identity: 'causeway://connector/dc1' });
      assert.equal(forced.type, 'connector');
      const mine = async (): Promise<string[]> => (await store.listRevokedCertificates()).map((c) => c.serial).filter((s) => [soon, later, unknown].includes(s));
      assert.deepEqual(await mine(), [soon, later, unknown].sort());
      clock.advance(60_000);
      assert.deepEqual(await mine(), [later, unknown].sort(), 'an expired certificate needs no revocation entry');
      assert.deepEqual((await store.snapshot()).revokedSerials.filter((s) => [soon, later, unknown].includes(s)), [later, unknown].sort());
      assert.equal((await store.getCertificate(soon))?.revokedAt, revoked.revokedAt);
      assert.equal(await store.getCertificate('none'), undefined);
    });

    void test('settings round-trip; putSettingIfAbsent keeps the first value; a PEM private key is refused (CP-16)', async (t) => {
      const store = await open(t);
      const key = `ca-${uid()}`;
      assert.equal(await store.getSetting(key), undefined);
      assert.deepEqual(await store.putSettingIfAbsent(key, 'first', { actor: 'system' }), { value: 'first', inserted: true });
      assert.deepEqual(await store.putSettingIfAbsent(key, 'second', { actor: 'system' }), { value: 'first', inserted: false });
      await store.putSetting(key, 'third', { actor: 'system' });
      assert.equal(await store.getSetting(key), 'third');
      const pem = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n';
      await rejectsWith(store.putSetting(`k-${uid()}`, pem, { actor }), 'PLAINTEXT_KEY_REFUSED');
      await rejectsWith(store.putSettingIfAbsent(`k-${uid()}`, pem.replace('PRIVATE', 'ENCRYPTED PRIVATE'), { actor }), 'PLAINTEXT_KEY_REFUSED');
      const audit = (await store.queryAuditEvents({ kind: 'Setting', name: key })).events;
      assert.deepEqual(audit.map((e) => [e.action, e.before, e.after]), [['update', null, null], ['create', null, null]]);
    });

    // --- events ----------------------------------------------------------------------------------

    void test('appendKubeEvents is idempotent by id and queryKubeEvents filters and pages newest first (issue 6)', async (t) => {
      const store = await open(t);
      const clusterName = `c-${uid()}`;
      const events: KubeEvent[] = Array.from({ length: 30 }, (_, i) => ({
        id: newEventId(1_800_000_000_000 + i * 1000),
        time: new Date(1_800_000_000_000 + i * 1000).toISOString(),
        type: i % 5 === 0 ? 'kube-session' : 'kube-request',
        clusterName,
        kubeProxy: clusterName,
        user: i % 2 === 0 ? 'ada@example.com' : 'bob@example.com',
        groups: ['eng', 'system:authenticated'],
        verb: i % 5 === 0 ? 'create' : 'list',
        resource: 'pods',
        ...(i % 5 === 0 ? { subresource: 'exec', command: ['sh', '-c', `echo ${i}`], transport: 'spdy' as const, durationMs: 10 } : {}),
        namespace: i % 3 === 0 ? 'prod' : 'dev',
        path: '/api/v1/namespaces/x/pods',
        code: i % 7 === 0 ? 403 : 200,
        latencyMs: 3,
        decision: i % 7 === 0 ? 'deny' : 'allow',
        source: '192.0.2.1:1',
      }));
      assert.deepEqual(await store.appendKubeEvents(events), { inserted: 30, duplicates: 0 });
      assert.deepEqual(await store.appendKubeEvents(events.slice(0, 5)), { inserted: 0, duplicates: 5 });
      const all: KubeEvent[] = [];
      let after: string | undefined;
      do {
        const page = await store.queryKubeEvents({ clusterName, limit: 7, after });
        all.push(...page.events);
        after = page.next;
      } while (after !== undefined);
      assert.deepEqual(all.map((e) => e.id), [...events].reverse().map((e) => e.id));
      assert.deepEqual(all.find((e) => e.type === 'kube-session')?.command?.slice(0, 2), ['sh', '-c']);
      const sessions = (await store.queryKubeEvents({ clusterName, type: 'kube-session' })).events;
      assert.deepEqual(sessions.map((e) => e.id).sort(), events.filter((e) => e.type === 'kube-session').map((e) => e.id).sort());
      const filtered = (await store.queryKubeEvents({ clusterName, user: 'ada@example.com', namespace: 'prod', decision: 'deny' })).events;
      assert.deepEqual(filtered.map((e) => e.id).sort(), events.filter((e) => e.user === 'ada@example.com' && e.namespace === 'prod' && e.decision === 'deny').map((e) => e.id).sort());
      assert.equal((await store.queryKubeEvents({ clusterName, verb: 'create' })).events.length, 6);
      await rejectsWith(store.appendKubeEvents([{ ...events[0], id: '' }]), 'INVALID_ARGUMENT');
    });

    void test('appendAccessEvents is idempotent by id: re-shipping a batch duplicates nothing (X-02)', async (t) => {
      const store = await open(t);
      const service = `svc-${uid()}`;
      const batch = Array.from({ length: 1200 }, (_, i) => accessEvent(i, { service }));
      assert.deepEqual(await store.appendAccessEvents(batch), { inserted: 1200, duplicates: 0 });
      assert.deepEqual(await store.appendAccessEvents(batch), { inserted: 0, duplicates: 1200 });
      // A partly new batch, with a repeat inside it too.
      const more = [...batch.slice(0, 10), accessEvent(5000, { service }), accessEvent(5001, { service })];
      more.push(more[10]);
      assert.deepEqual(await store.appendAccessEvents(more), { inserted: 2, duplicates: 11 });
      assert.deepEqual(await store.appendAccessEvents([]), { inserted: 0, duplicates: 0 });
      let count = 0;
      let after: string | undefined;
      do {
        const page = await store.queryAccessEvents({ service, limit: 1000, after });
        count += page.events.length;
        after = page.next;
      } while (after !== undefined);
      assert.equal(count, 1202);
      await rejectsWith(store.appendAccessEvents([{ ...accessEvent(1), id: '' }]), 'INVALID_ARGUMENT');
    });

    void test('queryAccessEvents filters and pages newest first with a cursor that neither skips nor repeats', async (t) => {
      const store = await open(t);
      const service = `svc-${uid()}`;
      const events = Array.from({ length: 45 }, (_, i) => accessEvent(i % 15, { service, user: `u${i % 3}`, device: `d${i % 5}` }));
      await store.appendAccessEvents(events);
      const byNewest = (a: AccessEvent, b: AccessEvent): number => (a.time === b.time ? (a.id < b.id ? 1 : -1) : a.time < b.time ? 1 : -1);
      const expected = [...events].sort(byNewest);
      const pages: AccessEvent[] = [];
      let after: string | undefined;
      do {
        const page = await store.queryAccessEvents({ service, limit: 7, after });
        assert.ok(page.events.length <= 7);
        pages.push(...page.events);
        after = page.next;
      } while (after !== undefined);
      assert.deepEqual(pages.map((e) => e.id), expected.map((e) => e.id));
      assert.deepEqual(pages[0], expected[0], 'the event reads back as shipped');

      const filtered = (await store.queryAccessEvents({ service, user: 'u1', decision: 'deny' })).events;
      assert.deepEqual(filtered.map((e) => e.id), expected.filter((e) => e.user === 'u1' && e.decision === 'deny').map((e) => e.id));
      assert.deepEqual((await store.queryAccessEvents({ service, device: 'd2' })).events.map((e) => e.id), expected.filter((e) => e.device === 'd2').map((e) => e.id));
      const since = new Date(1_800_000_000_000 + 5000).toISOString();
      const until = new Date(1_800_000_000_000 + 10_000).toISOString();
      const window = (await store.queryAccessEvents({ service, since, until })).events;
      assert.deepEqual(window.map((e) => e.id), expected.filter((e) => e.time >= since && e.time < until).map((e) => e.id));
      await rejectsWith(store.queryAccessEvents({ after: 'not-a-cursor' }), 'INVALID_CURSOR');
      await rejectsWith(store.queryAccessEvents({ since: 'yesterday' }), 'INVALID_ARGUMENT');
      await rejectsWith(store.queryAccessEvents({ limit: 0 }), 'INVALID_ARGUMENT');
    });

    void test('hostile strings in events (NUL, lone surrogates, quotes, CR/LF, SQL) are stored as data and read back alike on every database', async (t) => {
      const store = await open(t);
      const service = `svc-${uid()}`;
      const nasty = "evil\r\n{\"decision\":\"allow\"}'; DROP TABLE access_events; --\u001b[31m %s \\u0000 \u0000 \ud800 end";
      const event = accessEvent(1, { service, sni: nasty, target: nasty, user: nasty, closeReason: nasty, time: '2027-01-15T10:00:00+02:00' });
      assert.deepEqual(await store.appendAccessEvents([event]), { inserted: 1, duplicates: 0 });
      const [back] = (await store.queryAccessEvents({ service })).events;
      const stored = nasty.replace('\u0000', '\u2400').replace('\ud800', '\ufffd');
      assert.equal(back.sni, stored);
      assert.equal(back.user, stored);
      assert.equal(back.time, event.time, 'the event keeps the time as shipped');
      assert.equal((await store.queryAccessEvents({ service, user: stored })).events.length, 1);
      assert.equal((await store.queryAccessEvents({ service, user: nasty })).events.length, 1, 'a filter is read the way the value was stored');
      assert.equal((await store.queryAccessEvents({ service, since: '2027-01-15T08:00:00.000Z', until: '2027-01-15T08:00:00.001Z' })).events.length, 1, 'and is indexed by its UTC instant');
      assert.deepEqual(await store.appendAccessEvents([event]), { inserted: 0, duplicates: 1 });
    });

    void test('queryAuditEvents filters by kind, name, actor and action, and pages newest first', async (t) => {
      const clock = new FakeClock();
      const store = await open(t, { clock });
      const kind = `Audit${uid()}`;
      for (let i = 0; i < 12; i++) {
        clock.advance(i % 4 === 0 ? 0 : 1); // some in the same millisecond
        await store.putObject({ kind, name: `o${i % 3}`, spec: { i } }, { actor: `user:u${i % 2}` });
      }
      const all: string[] = [];
      let after: string | undefined;
      do {
        const page = await store.queryAuditEvents({ kind, limit: 5, after });
        all.push(...page.events.map((e) => e.id));
        after = page.next;
      } while (after !== undefined);
      assert.equal(all.length, 12);
      assert.equal(new Set(all).size, 12);
      const full = (await store.queryAuditEvents({ kind })).events;
      assert.deepEqual(full.map((e) => e.id), all);
      for (let i = 1; i < full.length; i++) assert.ok(full[i - 1].at >= full[i].at);
      assert.equal((await store.queryAuditEvents({ kind, name: 'o1' })).events.length, 4);
      assert.equal((await store.queryAuditEvents({ kind, actor: 'user:u1' })).events.length, 6);
      assert.equal((await store.queryAuditEvents({ kind, action: 'create' })).events.length, 3);
      assert.equal((await store.queryAuditEvents({ kind, since: full[0].at })).events.length >= 1, true);
    });

    void test('appendAuditEvent records login events, making id and at when missing, and queryAuditEvents finds them', async (t) => {
      const clock = new FakeClock(Date.parse('2026-06-01T08:00:00.000Z'));
      const store = await open(t, { clock });
      const name = `login-${uid()}`;
      await store.appendAuditEvent({ actor: `user:${name}`, action: 'login', kind: 'User', name, after: { method: 'password', source: '192.0.2.7' } });
      clock.advance(1000);
      await store.appendAuditEvent({ actor: `user:${name}`, action: 'login-failed', kind: 'User', name, at: '2026-06-01T07:59:59.5Z' });
      await store.appendAuditEvent({ id: `audit-${uid()}`, actor: 'system', action: 'locked', kind: 'User', name, before: { failedLogins: 4 }, after: { failedLogins: 5 } });
      const events = (await store.queryAuditEvents({ kind: 'User', name })).events;
      assert.deepEqual(events.map((e) => [e.action, e.at]), [
        ['locked', '2026-06-01T08:00:01.000Z'],
        ['login', '2026-06-01T08:00:00.000Z'],
        ['login-failed', '2026-06-01T07:59:59.500Z'],
      ]);
      assert.deepEqual(events[1].after, { method: 'password', source: '192.0.2.7' });
      assert.equal(events[1].before, null);
      assert.ok(events.every((e) => typeof e.id === 'string' && e.id !== ''));
      assert.equal((await store.queryAuditEvents({ action: 'login', name })).events.length, 1);
      await rejectsWith(store.appendAuditEvent({ actor: '', action: 'login', kind: 'User', name }), 'INVALID_ARGUMENT');
      await rejectsWith(store.appendAuditEvent({ actor, action: '', kind: 'User', name }), 'INVALID_ARGUMENT');
      await rejectsWith(store.appendAuditEvent({ actor, action: 'login', kind: 'User', name, at: 'soon' }), 'INVALID_ARGUMENT');
    });

    void test('OIDC records: upsert replaces the whole record, find returns the payload until it expires, destroy removes it', async (t) => {
      const clock = new FakeClock(Date.parse('2026-06-01T08:00:00.000Z'));
      const store = await open(t, { clock });
      const model = `AccessToken${uid()}`;
      const payload = { accountId: 'u1', grantId: `g-${uid()}`, scope: 'openid email', claims: { nested: ['a', 1, null, true] }, kind: 'AccessToken' };
      await store.oidcUpsert(model, 'tok1', payload, '2026-06-01T09:00:00.000Z');
      assert.deepEqual(await store.oidcFind(model, 'tok1'), payload);
      assert.equal(await store.oidcFind(model, 'other'), undefined);
      assert.equal(await store.oidcFind(`Other${uid()}`, 'tok1'), undefined, 'records are per model');
      // Replacing: a new payload, no grant, no expiry; the old grant index goes with it.
      await store.oidcUpsert(model, 'tok1', { accountId: 'u2' }, null);
      assert.deepEqual(await store.oidcFind(model, 'tok1'), { accountId: 'u2' });
      assert.equal(await store.oidcRevokeByGrantId(payload.grantId), 0);
      clock.advance(365 * 24 * 3_600_000);
      assert.deepEqual(await store.oidcFind(model, 'tok1'), { accountId: 'u2' }, 'null expiry never expires');
      await store.oidcUpsert(model, 'tok2', { accountId: 'u3' }, new Date(clock.now() + 1000).toISOString());
      assert.deepEqual(await store.oidcFind(model, 'tok2'), { accountId: 'u3' });
      clock.advance(1000);
      assert.equal(await store.oidcFind(model, 'tok2'), undefined, 'expired at its expiry time');
      await store.oidcDestroy(model, 'tok1');
      assert.equal(await store.oidcFind(model, 'tok1'), undefined);
      await store.oidcDestroy(model, 'tok1');
      await rejectsWith(store.oidcUpsert(model, '', {}, null), 'INVALID_ARGUMENT');
      await rejectsWith(store.oidcUpsert(model, 'x', {}, 'later'), 'INVALID_ARGUMENT');
    });

    void test('OIDC records: consume marks a record with consumed epoch seconds, kept until an upsert replaces it', async (t) => {
      const clock = new FakeClock(Date.parse('2026-06-01T08:00:00.250Z'));
      const store = await open(t, { clock });
      const model = `RefreshToken${uid()}`;
      await store.oidcUpsert(model, 'rt', { accountId: 'u1' }, null);
      await store.oidcConsume(model, 'rt');
      const consumedAt = Math.floor(Date.parse('2026-06-01T08:00:00.250Z') / 1000);
      assert.deepEqual(await store.oidcFind(model, 'rt'), { accountId: 'u1', consumed: consumedAt });
      clock.advance(5000);
      await store.oidcConsume(model, 'rt');
      assert.equal((await store.oidcFind(model, 'rt'))?.consumed, consumedAt, 'the first consumption counts');
      await store.oidcConsume(model, 'missing');
      await store.oidcUpsert(model, 'rt', { accountId: 'u1', rotated: true }, null);
      assert.deepEqual(await store.oidcFind(model, 'rt'), { accountId: 'u1', rotated: true });
    });

    void test('oidcConsumeOnce is true for the first of many concurrent callers only, and false when unknown, expired or consumed', async (t) => {
      const clock = new FakeClock(Date.parse('2026-06-01T08:00:00.000Z'));
      const store = await open(t, { clock });
      const other = await open(t, { clock });
      const model = `PostureNonce${uid()}`;
      await store.oidcUpsert(model, 'n1', { deviceId: 'd1' }, '2026-06-01T08:05:00.000Z');
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? store : other).oidcConsumeOnce(model, 'n1')));
      assert.equal(results.filter(Boolean).length, 1, 'exactly one caller consumes it');
      assert.equal(await store.oidcConsumeOnce(model, 'n1'), false);
      assert.equal(await store.oidcConsumeOnce(model, 'unknown'), false);
      await store.oidcUpsert(model, 'n2', { deviceId: 'd1' }, '2026-06-01T08:05:00.000Z');
      clock.advance(5 * 60_000);
      assert.equal(await store.oidcConsumeOnce(model, 'n2'), false, 'expired at its expiry time');
    });

    void test('OIDC records: found by user code and by uid within their model, unless expired', async (t) => {
      const clock = new FakeClock(Date.parse('2026-06-01T08:00:00.000Z'));
      const store = await open(t, { clock });
      const device = `DeviceCode${uid()}`;
      const session = `Interaction${uid()}`;
      const userCode = `WDJB-${uid()}`;
      await store.oidcUpsert(device, 'dc1', { userCode, clientId: 'causeway-cli' }, '2026-06-01T08:10:00.000Z');
      await store.oidcUpsert(session, 'i1', { uid: 'interaction-uid', userCode: 42 }, '2026-06-01T08:05:00.000Z');
      assert.deepEqual(await store.oidcFindByUserCode(device, userCode), { userCode, clientId: 'causeway-cli' });
      assert.equal(await store.oidcFindByUserCode(session, userCode), undefined);
      assert.equal(await store.oidcFindByUserCode(device, 'WDJB-NONE'), undefined);
      assert.deepEqual(await store.oidcFindByUid(session, 'interaction-uid'), { uid: 'interaction-uid', userCode: 42 });
      assert.equal(await store.oidcFindByUid(device, 'interaction-uid'), undefined);
      clock.advance(5 * 60_000);
      assert.equal(await store.oidcFindByUid(session, 'interaction-uid'), undefined);
      assert.ok((await store.oidcFindByUserCode(device, userCode)) !== undefined);
      clock.advance(5 * 60_000);
      assert.equal(await store.oidcFindByUserCode(device, userCode), undefined);
    });

    void test('OIDC records: revoking a grant deletes its records of every model; prune deletes only expired records', async (t) => {
      const store = await open(t);
      const grantId = `grant-${uid()}`;
      const m = uid();
      await store.oidcUpsert(`AccessToken${m}`, 'a', { grantId }, null);
      await store.oidcUpsert(`RefreshToken${m}`, 'r', { grantId }, '2099-01-01T00:00:00.000Z');
      await store.oidcUpsert(`AuthorizationCode${m}`, 'c', { grantId }, '2099-01-01T00:00:00.000Z');
      await store.oidcUpsert(`AccessToken${m}`, 'other', { grantId: `${grantId}-other` }, null);
      assert.equal(await store.oidcRevokeByGrantId(grantId), 3);
      assert.equal(await store.oidcFind(`RefreshToken${m}`, 'r'), undefined);
      assert.deepEqual(await store.oidcFind(`AccessToken${m}`, 'other'), { grantId: `${grantId}-other` });
      assert.equal(await store.oidcRevokeByGrantId(grantId), 0);

      // Prune at a time far in the past touches nothing of this test; at a later time, only the expired.
      await store.oidcUpsert(`Session${m}`, 'old', {}, '2001-01-01T00:00:00.000Z');
      await store.oidcUpsert(`Session${m}`, 'older', {}, '2000-06-01T00:00:00.000Z');
      await store.oidcUpsert(`Session${m}`, 'new', {}, '2099-01-01T00:00:00.000Z');
      await store.oidcUpsert(`Session${m}`, 'forever', {}, null);
      assert.ok((await store.oidcPrune('2001-01-01T00:00:00.000Z')) >= 2);
      assert.equal(await store.oidcFind(`Session${m}`, 'old'), undefined);
      assert.deepEqual(await store.oidcFind(`Session${m}`, 'new'), {});
      assert.deepEqual(await store.oidcFind(`Session${m}`, 'forever'), {});
      assert.equal(await store.oidcPrune('2001-01-01T00:00:00.000Z'), 0, 'nothing left to prune at that time');
      await rejectsWith(store.oidcPrune('whenever'), 'INVALID_ARGUMENT');
    });

    void test('OIDC records hold hostile strings as data and refuse a PEM private key (CP-16)', async (t) => {
      const store = await open(t);
      const model = `Session${uid()}`;
      const hostile = "x'); drop table oidc_records; --\u0000\ud800\r\n\"";
      await store.oidcUpsert(model, hostile, { uid: hostile, note: hostile }, null);
      const clean = "x'); drop table oidc_records; --\u2400\ufffd\r\n\"";
      assert.deepEqual(await store.oidcFind(model, hostile), { uid: clean, note: clean });
      assert.deepEqual(await store.oidcFindByUid(model, hostile), { uid: clean, note: clean });
      await rejectsWith(store.oidcUpsert(model, 'k', { key: '-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----' }, null), 'PLAINTEXT_KEY_REFUSED');
      assert.equal(await store.oidcFind(model, 'k'), undefined);
    });

    // --- durability and secrets ------------------------------------------------------------------

    void test('everything survives close and reopen, and reopening runs no migration twice', async () => {
      const kind = `Reopen${uid()}`;
      const first = await openStore();
      await first.putObject({ kind, name: 'o', spec: { kept: true } }, { actor });
      const revision = await first.currentRevision();
      await first.close();
      await first.close(); // idempotent
      await rejectsWith(first.getObject(kind, 'o'), 'STORE_CLOSED');
      const second = await openStore();
      try {
        assert.deepEqual((await second.getObject(kind, 'o'))?.spec, { kept: true });
        assert.ok((await second.currentRevision()) >= revision);
      } finally {
        await second.close();
      }
    });

    void test('no token secret and no PRIVATE KEY is anywhere in the database after every kind of write, TOTP secrets and OIDC records included (CP-16)', async (t) => {
      const store = await open(t);
      const secrets: string[] = [];
      const api = await store.createApiToken({ name: 'scan', scope: 'admin' }, { actor });
      secrets.push(api.token);
      await store.verifyApiToken(api.token);
      await store.revokeApiToken(api.record.id, { actor });
      const join = await store.createJoinToken({ kind: 'connector', name: 'scan' }, { actor });
      secrets.push(join.token);
      await store.consumeJoinToken(join.token, 'connector');
      await store.consumeJoinToken(join.token, 'connector').catch(() => {});
      await store.consumeJoinToken(join.token.replace('cwjt', 'cwat'), 'connector').catch(() => {});
      await store.putSetting(`ca-key-${uid()}`, Buffer.from('ciphertext of the CA key').toString('base64'), { actor: 'system' });
      await store.putSetting(`k-${uid()}`, '-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----', { actor }).catch(() => {});
      await store.putObject({ kind: `Service${uid()}`, name: 'k8s', spec: { kubernetes: { caPublicKey: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' } } }, { actor });
      const pem = '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----';
      const totpUser = await store.createUser({ name: `scan-${uid()}`, totpSecret: `sealed.${uid()}` }, { actor });
      await store.createUser({ name: `scan-${uid()}`, totpSecret: pem }, { actor }).catch(() => {});
      await store.updateUser(totpUser.id, { totpSecret: pem }, { actor }).catch(() => {});
      await store.oidcUpsert(`Session${uid()}`, 'scan', { accountId: totpUser.id, grantId: 'g' }, null);
      await store.oidcUpsert(`Session${uid()}`, 'scan-key', { key: pem }, null).catch(() => {});
      await store.appendAuditEvent({ actor, action: 'login', kind: 'User', name: totpUser.name });
      const text = await dump();
      assert.ok(text.length > 1000, 'the dump holds the data');
      assert.ok(text.includes(hashToken(api.token)), 'hashes are stored, which shows the dump is complete');
      for (const secret of secrets) {
        assert.ok(!text.includes(secret), 'a token is not stored');
        // The secret part is base64url and may itself contain '_': take everything after the id.
        assert.ok(!text.includes(secret.split('_').slice(2).join('_')), 'nor its secret part');
      }
      assert.ok(!text.includes('PRIVATE KEY'));
    });

    // --- measurements ----------------------------------------------------------------------------

    void test('measures putObject and appendAccessEvents (batches of 500) throughput (reported, not asserted)', async (t) => {
      const store = await open(t);
      const kind = `Bench${uid()}`;
      const spec = { type: 'kubernetes', cluster: 'global-edge', accessTier: '*', domain: 'kube.example.com', port: 443, backend: { dnsOverride: 'kube-proxy:8443' }, policy: { name: 'k8s-prod', mode: 'enforcing' } };
      const puts = 200;
      let start = performance.now();
      for (let i = 0; i < puts; i++) await store.putObject({ kind, name: `s${i % 20}`, spec: { ...spec, port: i } }, { actor });
      const putMs = performance.now() - start;
      const batches = 10;
      const service = `bench-${uid()}`;
      const events = Array.from({ length: batches * 500 }, (_, i) => accessEvent(i, { service, user: 'alice', device: 'd1', target: 'kube.example.com:443', certSerial: '0a1b2c', bytesUp: 1234, bytesDown: 56789, durationMs: 42 }));
      start = performance.now();
      for (let b = 0; b < batches; b++) await store.appendAccessEvents(events.slice(b * 500, (b + 1) * 500));
      const appendMs = performance.now() - start;
      start = performance.now();
      for (let b = 0; b < batches; b++) await store.appendAccessEvents(events.slice(b * 500, (b + 1) * 500));
      const reshipMs = performance.now() - start;
      t.diagnostic(`${name}: putObject ${((puts * 1000) / putMs).toFixed(0)}/s (${((putMs * 1000) / puts).toFixed(0)} µs each, sequential, one transaction each)`);
      t.diagnostic(`${name}: appendAccessEvents ${((batches * 500 * 1000) / appendMs).toFixed(0)} events/s (${(appendMs / batches).toFixed(1)} ms per batch of 500); re-shipped duplicates ${((batches * 500 * 1000) / reshipMs).toFixed(0)} events/s`);
      assert.equal((await store.listObjects(kind)).length, 20);
    });
  });

  // --- live sessions and peers (issue 8, WEB-LIVE) -------------------------------------------------

  void describe(`${name} store conformance: live sessions and peers`, () => {
    async function open(t: TestContext, options?: OpenOptions): Promise<Store> {
      const store = await openStore(options);
      t.after(() => store.close());
      return store;
    }

    void test('putPeerReport keeps only the latest report per kind and name; listPeerReports filters by kind and freshness', async (t) => {
      const clock = new FakeClock(Date.parse('2030-01-01T00:00:00.000Z'));
      const store = await open(t, { clock });
      const tier = `edge-${uid()}`;
      const first = await store.putPeerReport('access-tier', tier, { version: '1', sessions: [{ id: 'a' }] });
      assert.equal(first.reportedAt, '2030-01-01T00:00:00.000Z');
      clock.advance(5_000);
      const second = await store.putPeerReport('access-tier', tier, { version: '2', sessions: [] });
      await store.putPeerReport('connector', tier, { version: '3', tunnels: [] }, '2029-12-31T23:00:00Z');
      const mine = (await store.listPeerReports()).filter((r) => r.name === tier);
      assert.deepEqual(mine.map((r) => [r.kind, r.reportedAt, (r.report as { version: string }).version]), [
        ['access-tier', second.reportedAt, '2'],
        ['connector', '2029-12-31T23:00:00.000Z', '3'],
      ]);
      assert.deepEqual((await store.listPeerReports({ kind: 'connector' })).filter((r) => r.name === tier).length, 1);
      assert.deepEqual((await store.listPeerReports({ kind: 'access-tier' })).filter((r) => r.name === tier).map((r) => r.kind), ['access-tier']);
      const fresh = (await store.listPeerReports({ since: '2030-01-01T00:00:01Z' })).filter((r) => r.name === tier);
      assert.deepEqual(fresh.map((r) => r.kind), ['access-tier']);
      await rejectsWith(store.putPeerReport('kube-proxy' as 'connector', tier, {}), 'INVALID_ARGUMENT');
      await rejectsWith(store.putPeerReport('connector', '', {}), 'INVALID_ARGUMENT');
    });

    void test('a peer report with hostile strings round-trips as data', async (t) => {
      const store = await open(t);
      const tier = `edge-${uid()}`;
      const hostile = { version: '1\r\n\u001b[31m', sessions: [{ id: '<script>alert(1)</script>', user: "'; drop table peer_reports; --", service: 'k8s' }] };
      await store.putPeerReport('access-tier', tier, hostile);
      const [stored] = (await store.listPeerReports({ kind: 'access-tier' })).filter((r) => r.name === tier);
      assert.deepEqual(stored.report, hostile);
    });

    void test('killSession writes one SessionKill change and a disconnect audit event; a second kill of the same session writes nothing', async (t) => {
      const store = await open(t);
      const id = newEventId();
      const before = await store.currentRevision();
      const first = await store.killSession({ id, session: { user: 'u1', service: 'k8s', accessTier: 'edge-1' } }, { actor: 'user:alice' });
      assert.equal(first.created, true);
      assert.equal(first.kill.by, 'user:alice');
      assert.equal(Date.parse(first.kill.expiresAt) - Date.parse(first.kill.at), 10 * 60 * 1000);
      const again = await store.killSession({ id }, { actor: 'user:bob' });
      assert.equal(again.created, false);
      assert.equal(again.kill.by, 'user:alice');
      const changes = (await store.changesSince(before)).filter((c) => c.name === id);
      assert.equal(changes.length, 1);
      assert.equal(changes[0].kind, 'SessionKill');
      assert.equal(changes[0].op, 'put');
      assert.deepEqual(changes[0].object, first.kill);
      const audit = await store.queryAuditEvents({ kind: 'SessionKill', name: id });
      assert.deepEqual(audit.events.map((e) => [e.action, e.actor]), [['disconnect', 'user:alice']]);
      assert.deepEqual((audit.events[0].after as { session: unknown }).session, { user: 'u1', service: 'k8s', accessTier: 'edge-1' });
      assert.ok((await store.listSessionKills()).some((k) => k.id === id));
      await rejectsWith(store.killSession({ id: '' }, { actor }), 'INVALID_ARGUMENT');
      await rejectsWith(store.killSession({ id }, { actor: '' }), 'INVALID_ARGUMENT');
      await rejectsWith(store.putObject({ kind: 'SessionKill', name: 'x', spec: {} }, { actor }), 'INVALID_ARGUMENT');
    });

    void test('expireSessionKills deletes kills past their time with a delete change each; a kill after expiry is new again', async (t) => {
      const clock = new FakeClock(Date.parse('2001-01-01T00:00:00.000Z'));
      const store = await open(t, { clock });
      const id = newEventId();
      const short = newEventId();
      await store.killSession({ id }, { actor });
      await store.killSession({ id: short, ttlMs: 1000 }, { actor });
      const before = await store.currentRevision();
      clock.advance(2_000);
      assert.equal(await store.expireSessionKills('2001-01-01T00:00:01.500Z'), 1);
      let kills = (await store.listSessionKills()).map((k) => k.id);
      assert.ok(kills.includes(id) && !kills.includes(short));
      const deleted = (await store.changesSince(before)).filter((c) => c.name === short);
      assert.deepEqual(deleted.map((c) => [c.kind, c.op, c.object]), [['SessionKill', 'delete', null]]);
      clock.advance(10 * 60 * 1000);
      assert.ok(await store.expireSessionKills() >= 1);
      kills = (await store.listSessionKills()).map((k) => k.id);
      assert.ok(!kills.includes(id));
      assert.equal(await store.expireSessionKills(), 0);
      const renewed = await store.killSession({ id }, { actor: 'user:carol' });
      assert.equal(renewed.created, true);
      assert.equal(renewed.kill.by, 'user:carol');
    });
  });

  void describe(`${name} store conformance: console sessions and event reasons`, () => {
    async function open(t: TestContext, options?: OpenOptions): Promise<Store> {
      const store = await openStore(options);
      t.after(() => store.close());
      return store;
    }

    void test('a console session is found by its secret until its idle or absolute end; each use (to the minute) moves the idle end', async (t) => {
      const clock = new FakeClock(Date.parse('2031-01-01T00:00:00.000Z'));
      const store = await open(t, { clock });
      const userId = `u-${uid()}`;
      const { token, record } = await store.createConsoleSession({ userId, ttlMs: 8 * 3_600_000 });
      assert.match(token, /^cwcs_[A-Za-z0-9_-]{43}$/);
      assert.deepEqual(record, { id: hashToken(token).slice(0, 16), userId, createdAt: '2031-01-01T00:00:00.000Z', expiresAt: '2031-01-01T08:00:00.000Z', lastSeenAt: '2031-01-01T00:00:00.000Z' });
      const idleMs = 3_600_000;
      assert.deepEqual(await store.useConsoleSession(token, { idleMs }), record);
      clock.advance(30_000);
      assert.equal((await store.useConsoleSession(token, { idleMs }))?.lastSeenAt, '2031-01-01T00:00:00.000Z', 'uses within a minute are not written');
      clock.advance(59 * 60_000);
      assert.equal((await store.useConsoleSession(token, { idleMs }))?.lastSeenAt, '2031-01-01T00:59:30.000Z');
      clock.advance(idleMs - 1);
      assert.notEqual(await store.useConsoleSession(token, { idleMs }), undefined);
      clock.advance(idleMs);
      assert.equal(await store.useConsoleSession(token, { idleMs }), undefined, 'idle for an hour');

      const busy = await store.createConsoleSession({ userId, ttlMs: 2 * 3_600_000 });
      for (let i = 0; i < 3; i++) {
        clock.advance(35 * 60_000);
        assert.notEqual(await store.useConsoleSession(busy.token, { idleMs }), undefined, `use ${i}`);
      }
      clock.advance(40 * 60_000);
      assert.equal(await store.useConsoleSession(busy.token, { idleMs }), undefined, 'past the absolute end');

      for (const bad of ['', 'cwcs_', `cwcs_${'a'.repeat(42)}`, token.slice(0, -1), `${token}x`, `cwat_${token.slice(5)}`, token.toUpperCase()]) {
        assert.equal(await store.useConsoleSession(bad, { idleMs }), undefined, bad);
      }
      assert.equal(await store.useConsoleSession(`cwcs_${randomBytes(32).toString('base64url')}`, { idleMs }), undefined);
    });

    void test('console sessions end by secret or by user, and prune removes only ended ones; only hashes are stored', async (t) => {
      const clock = new FakeClock(Date.parse('2031-02-01T00:00:00.000Z'));
      const store = await open(t, { clock });
      const alice = `u-${uid()}`;
      const bob = `u-${uid()}`;
      const a1 = await store.createConsoleSession({ userId: alice, ttlMs: 8 * 3_600_000 });
      const a2 = await store.createConsoleSession({ userId: alice, ttlMs: 8 * 3_600_000 });
      const b1 = await store.createConsoleSession({ userId: bob, ttlMs: 8 * 3_600_000 });
      assert.notEqual(a1.token, a2.token);
      const text = await dump();
      for (const s of [a1, a2, b1]) {
        assert.ok(!text.includes(s.token.slice(5)), 'the secret is not stored');
        assert.ok(text.includes(hashToken(s.token)), 'its hash is');
      }
      assert.equal(await store.deleteConsoleSession(a1.token), true);
      assert.equal(await store.deleteConsoleSession(a1.token), false);
      assert.equal(await store.deleteConsoleSession('not a secret'), false);
      assert.equal(await store.useConsoleSession(a1.token, { idleMs: 3_600_000 }), undefined);
      assert.equal(await store.deleteConsoleSessionsOfUser(alice), 1);
      assert.equal(await store.useConsoleSession(a2.token, { idleMs: 3_600_000 }), undefined);
      assert.notEqual(await store.useConsoleSession(b1.token, { idleMs: 3_600_000 }), undefined);

      const short = await store.createConsoleSession({ userId: bob, ttlMs: 60_000 });
      const idle = await store.createConsoleSession({ userId: bob, ttlMs: 8 * 3_600_000 });
      clock.advance(30 * 60_000);
      const live = await store.createConsoleSession({ userId: bob, ttlMs: 8 * 3_600_000 });
      await store.useConsoleSession(b1.token, { idleMs: 3_600_000 });
      clock.advance(40 * 60_000);
      // Prune is global (other tests share the database): count only what it did to ours.
      await store.pruneConsoleSessions(new Date(clock.now()).toISOString(), 3_600_000);
      clock.advance(-1);
      assert.equal(await store.useConsoleSession(short.token, { idleMs: 10 * 3_600_000 }), undefined, 'past its end: pruned');
      assert.equal(await store.useConsoleSession(idle.token, { idleMs: 10 * 3_600_000 }), undefined, 'idle 70 minutes: pruned');
      assert.notEqual(await store.useConsoleSession(live.token, { idleMs: 3_600_000 }), undefined);
      assert.notEqual(await store.useConsoleSession(b1.token, { idleMs: 3_600_000 }), undefined);
      await rejectsWith(store.createConsoleSession({ userId: '', ttlMs: 1000 }), 'INVALID_ARGUMENT');
      await rejectsWith(store.createConsoleSession({ userId: alice, ttlMs: 0 }), 'INVALID_ARGUMENT');
    });

    void test('access events filter by one reason code: an element of reasons, exactly', async (t) => {
      const store = await open(t);
      const service = `svc-${uid()}`;
      const events = [
        accessEvent(1, { service, reasons: ['no-matching-role'] }),
        accessEvent(2, { service, reasons: ['trust-too-low', 'trust:firewall-off'] }),
        accessEvent(3, { service, reasons: ['no-matching-role-x', 'xno-matching-role'] }),
        accessEvent(4, { service, reasons: ['"no-matching-role"', 'No-Matching-Role'] }),
        accessEvent(5, { service, reasons: [] }),
      ];
      await store.appendAccessEvents(events);
      const ids = async (reason: string): Promise<string[]> => (await store.queryAccessEvents({ service, reason })).events.map((e) => e.id).sort();
      assert.deepEqual(await ids('no-matching-role'), [events[0].id]);
      assert.deepEqual(await ids('trust:firewall-off'), [events[1].id]);
      assert.deepEqual(await ids('trust-too-low'), [events[1].id]);
      assert.deepEqual(await ids('"no-matching-role"'), [events[3].id]);
      assert.deepEqual(await ids('matching'), []);
      assert.deepEqual(await ids("x' or '1'='1"), []);
      const page = await store.queryAccessEvents({ service, reason: 'no-matching-role', decision: events[0].decision, limit: 1 });
      assert.deepEqual(page.events.map((e) => e.id), [events[0].id]);
    });
  });
}
