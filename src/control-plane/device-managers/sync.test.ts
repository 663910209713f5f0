import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import type { FakeIntune } from '../../../test/kit/mdm/fake-intune.ts';
import { MdmError } from './http.ts';
import { createIntuneAdapter } from './intune.ts';
import { createMdmSync } from './sync.ts';
import type { MdmSync, MdmUpdate } from './sync.ts';
import { fakeTimers } from './fake-timers.testing.ts';
import { testDeps } from './deps.testing.ts';
import type { DeviceManagerAdapter, MdmDeviceState } from './types.ts';

const MIN = 60_000;

/** An in-memory adapter whose answers and failures the test sets. */
function stubAdapter(source: string, options: { canList?: boolean } = {}) {
  const devices = new Map<string, MdmDeviceState>();
  const calls = { list: 0, lookup: [] as string[] };
  let failWith: Error | undefined;
  let lookupGate: Promise<void> | undefined;
  const adapter: DeviceManagerAdapter = {
    source,
    canList: options.canList ?? true,
    async lookup(serial) {
      calls.lookup.push(serial);
      await lookupGate;
      if (failWith !== undefined) throw failWith;
      return devices.get(serial);
    },
    list() {
      calls.list++;
      const snapshot = [...devices.values()];
      const error = failWith;
      return (async function* listing(): AsyncGenerator<MdmDeviceState> {
        await Promise.resolve();
        if (error !== undefined) throw error;
        yield* snapshot;
      })();
    },
    test: () => Promise.resolve({ ok: true, message: 'ok' }),
  };
  return {
    adapter,
    calls,
    set(serial: string, compliant: boolean | undefined, extra: Partial<MdmDeviceState> = {}) {
      devices.set(serial, { serial, managed: true, compliant, source, ...extra });
    },
    fail(err: Error | undefined) {
      failWith = err;
    },
    gate(promise: Promise<void> | undefined) {
      lookupGate = promise;
    },
  };
}

void describe('MDM sync scheduler', () => {
  function setup(adapters: Array<{ name: string; adapter: DeviceManagerAdapter; intervalMs?: number }>, extra: { knownSerials?: () => Promise<string[]>; lookupCacheMs?: number } = {}) {
    const ft = fakeTimers();
    const updates: MdmUpdate[] = [];
    const sync = createMdmSync({ adapters, onState: (u) => void updates.push(u), clock: ft.clock, timers: ft.timers, ...extra });
    return { ft, updates, sync };
  }

  void test('syncs at once, then every 20 minutes by default, not sooner', async (t) => {
    const stub = stubAdapter('intune:a');
    stub.set('S1', true);
    const { ft, updates, sync } = setup([{ name: 'a', adapter: stub.adapter }]);
    t.after(() => sync.close());
    await ft.advance(0);
    assert.equal(stub.calls.list, 1);
    assert.equal(updates.length, 1);
    assert.equal(updates[0].complete, true);
    assert.deepEqual(updates[0].states.map((s) => s.serial), ['S1']);
    await ft.advance(19 * MIN);
    assert.equal(stub.calls.list, 1);
    await ft.advance(MIN);
    assert.equal(stub.calls.list, 2);
    assert.equal(sync.status()[0].devices, 1);
  });

  void test('each manager keeps its own interval', async (t) => {
    const fast = stubAdapter('http:fast');
    const slow = stubAdapter('jamf:slow');
    const { ft, sync } = setup([
      { name: 'fast', adapter: fast.adapter, intervalMs: 5 * MIN },
      { name: 'slow', adapter: slow.adapter },
    ]);
    t.after(() => sync.close());
    await ft.advance(40 * MIN);
    assert.equal(fast.calls.list, 9);
    assert.equal(slow.calls.list, 3);
  });

  void test('a full sync delivers one state per serial, the one seen last', async (t) => {
    const stub = stubAdapter('intune:a');
    const entries: MdmDeviceState[] = [
      { serial: 'DUP', managed: true, compliant: false, lastSeen: '2026-11-01T00:00:00.000Z', source: 'intune:a' },
      { serial: 'dup', managed: true, compliant: true, lastSeen: '2026-11-20T00:00:00.000Z', source: 'intune:a' },
    ];
    stub.adapter.list = () =>
      (async function* listing(): AsyncGenerator<MdmDeviceState> {
        await Promise.resolve();
        yield* entries;
      })();
    const { ft, updates, sync } = setup([{ name: 'a', adapter: stub.adapter }]);
    t.after(() => sync.close());
    await ft.advance(0);
    assert.deepEqual(updates[0].states.map((s) => s.compliant), [true]);
  });

  void test('a failing manager backs off 30 s, 1 min, 2 min … capped at its interval, and returns to its interval after a success', async (t) => {
    const broken = stubAdapter('intune:broken');
    const healthy = stubAdapter('jamf:ok');
    broken.fail(new MdmError('MDM_UNREACHABLE', 'Intune could not be reached', { retryable: true }));
    const { ft, sync } = setup([
      { name: 'broken', adapter: broken.adapter, intervalMs: 5 * MIN },
      { name: 'ok', adapter: healthy.adapter, intervalMs: 5 * MIN },
    ]);
    t.after(() => sync.close());
    await ft.advance(0);
    const delays: Array<number | undefined> = [];
    for (let i = 0; i < 5; i++) {
      const before = broken.calls.list;
      delays.push(sync.status().find((s) => s.manager === 'broken')!.failures);
      const at = Date.parse(sync.status().find((s) => s.manager === 'broken')!.nextSyncAt!) - ft.clock.now();
      delays.push(at);
      await ft.advance(at);
      assert.equal(broken.calls.list, before + 1);
    }
    assert.deepEqual(delays, [1, 30_000, 2, 60_000, 3, 120_000, 4, 240_000, 5, 300_000]);
    const status = sync.status().find((s) => s.manager === 'broken')!;
    assert.equal(status.lastError, 'Intune could not be reached');
    assert.equal(sync.status().find((s) => s.manager === 'ok')!.failures, 0);
    broken.fail(undefined);
    await ft.advance(5 * MIN);
    assert.equal(sync.status().find((s) => s.manager === 'broken')!.failures, 0);
    assert.equal(Date.parse(sync.status().find((s) => s.manager === 'broken')!.nextSyncAt!) - ft.clock.now(), 5 * MIN);
  });

  void test("a vendor's Retry-After longer than the backoff is respected", async (t) => {
    const stub = stubAdapter('crowdstrike:c');
    stub.fail(new MdmError('MDM_RATE_LIMITED', 'CrowdStrike rate-limited the request', { retryable: true, retryAfterMs: 10 * MIN }));
    const { ft, sync } = setup([{ name: 'c', adapter: stub.adapter }]);
    t.after(() => sync.close());
    await ft.advance(0);
    assert.equal(ft.nextInMs(), 10 * MIN);
  });

  void test('lookupNow asks every manager, reports found and missing, and one failure does not hide the others', async (t) => {
    const a = stubAdapter('intune:a');
    const b = stubAdapter('jamf:b');
    const c = stubAdapter('crowdstrike:c');
    a.set('DEV1', false);
    c.fail(new MdmError('MDM_UNREACHABLE', 'CrowdStrike could not be reached', { retryable: true }));
    const { ft, updates, sync } = setup([
      { name: 'a', adapter: a.adapter },
      { name: 'b', adapter: b.adapter },
      { name: 'c', adapter: c.adapter },
    ]);
    t.after(() => sync.close());
    await ft.advance(0);
    updates.length = 0;
    const results = await sync.lookupNow('DEV1');
    assert.deepEqual(
      results.map((r) => [r.manager, r.state?.compliant, r.error]),
      [
        ['a', false, undefined],
        ['b', undefined, undefined],
        ['c', undefined, 'CrowdStrike could not be reached'],
      ],
    );
    assert.deepEqual(
      updates.map((u) => [u.manager, u.states.length, u.missing, u.complete]),
      [
        ['a', 1, [], false],
        ['b', 0, ['DEV1'], false],
      ],
    );
  });

  void test('concurrent lookups of one serial share one request; a recent answer is reused unless fresh is asked', async (t) => {
    const a = stubAdapter('intune:a');
    a.set('DEV2', true);
    const { ft, sync } = setup([{ name: 'a', adapter: a.adapter }], { lookupCacheMs: MIN });
    t.after(() => sync.close());
    let open!: () => void;
    a.gate(new Promise<void>((resolve) => (open = resolve)));
    const both = Promise.all([sync.lookupNow('DEV2'), sync.lookupNow('DEV2')]);
    open();
    await both;
    assert.equal(a.calls.lookup.length, 1);
    await sync.lookupNow('DEV2');
    assert.equal(a.calls.lookup.length, 1);
    a.set('DEV2', false);
    assert.equal((await sync.lookupNow('DEV2', { fresh: true }))[0].state?.compliant, false);
    assert.equal(a.calls.lookup.length, 2);
    await ft.advance(MIN);
    await sync.lookupNow('DEV2');
    assert.equal(a.calls.lookup.length, 3);
  });

  void test('a manager that cannot list looks up the known serials one by one', async (t) => {
    const h = stubAdapter('http:h', { canList: false });
    h.set('K1', true);
    h.set('K2', false);
    const { ft, updates, sync } = setup([{ name: 'h', adapter: h.adapter }], { knownSerials: () => Promise.resolve(['K1', 'K2', 'K3', 'K1', "bad'serial"]) });
    t.after(() => sync.close());
    await ft.advance(0);
    await sync.idle();
    assert.equal(h.calls.list, 0);
    assert.deepEqual(h.calls.lookup.sort(), ['K1', 'K2', 'K3', "bad'serial"]);
    assert.equal(updates[0].complete, false);
    assert.deepEqual(updates[0].states.map((s) => s.serial).sort(), ['K1', 'K2']);
    assert.deepEqual(updates[0].missing, ['K3', "bad'serial"]);
  });

  void test('after close nothing is scheduled and a result still in flight is not delivered', async () => {
    const a = stubAdapter('intune:a');
    a.set('DEV3', true);
    const { ft, updates, sync } = setup([{ name: 'a', adapter: a.adapter }]);
    await ft.advance(0);
    updates.length = 0;
    let open!: () => void;
    a.gate(new Promise<void>((resolve) => (open = resolve)));
    const pending = sync.lookupNow('DEV3', { fresh: true });
    const closing = sync.close();
    open();
    await closing;
    await pending;
    assert.deepEqual(updates, []);
    assert.equal(ft.pending(), 0);
    assert.deepEqual(await sync.lookupNow('DEV3'), []);
  });

  void test('setAdapters syncs a new manager at once and drops what a removed one answers', async (t) => {
    const a = stubAdapter('intune:a');
    const b = stubAdapter('jamf:b');
    a.set('X', true);
    b.set('Y', true);
    const { ft, updates, sync } = setup([{ name: 'a', adapter: a.adapter }]);
    t.after(() => sync.close());
    await ft.advance(0);
    let open!: () => void;
    a.gate(new Promise<void>((resolve) => (open = resolve)));
    const pending = sync.lookupNow('X', { fresh: true });
    updates.length = 0;
    sync.setAdapters([{ name: 'b', adapter: b.adapter }]);
    open();
    await pending;
    await ft.advance(0);
    assert.deepEqual(
      updates.map((u) => u.manager),
      ['b'],
    );
    assert.deepEqual(
      sync.status().map((s) => s.manager),
      ['b'],
    );
  });

  void test('an onState failure is logged and the schedule goes on', async (t) => {
    const ft = fakeTimers();
    const a = stubAdapter('intune:a');
    let calls = 0;
    const sync = createMdmSync({
      adapters: [{ name: 'a', adapter: a.adapter, intervalMs: MIN }],
      onState: () => {
        calls++;
        throw new Error('store down');
      },
      clock: ft.clock,
      timers: ft.timers,
    });
    t.after(() => sync.close());
    await ft.advance(2 * MIN);
    assert.equal(calls, 3);
  });
});

void describe('MDM sync against the fake Intune', () => {
  let fake: FakeIntune;
  let sync: MdmSync;
  const updates: MdmUpdate[] = [];
  const ft = fakeTimers();
  before(async () => {
    fake = await startFakeIntune({ defaultPageSize: 2 });
    for (let i = 0; i < 7; i++) fake.addDevice({ serialNumber: `FLEET${i}`, complianceState: 'compliant' });
    fake.addDevice({ serialNumber: 'LAPTOP1', complianceState: 'noncompliant' });
    const t = testDeps();
    const adapter = createIntuneAdapter(
      { type: 'intune', syncInterval: '20m', tenantId: fake.tenantId, clientId: fake.clientId, clientSecret: { env: 'S' }, graphUrl: fake.url, loginUrl: fake.url },
      t.deps('corp', fake.clientSecret, { pageSize: 3 }),
    );
    sync = createMdmSync({ adapters: [{ name: 'corp', adapter }], onState: (u) => void updates.push(u), clock: ft.clock, timers: ft.timers });
  });
  after(async () => {
    await sync.close();
    await fake.close();
  });

  void test('DT-04 a sync over several pages, then a compliance flip seen by lookupNow and by the next sync', async () => {
    await ft.advance(0);
    await sync.idle();
    assert.equal(updates.length, 1);
    assert.equal(updates[0].states.length, 8);
    assert.equal(updates[0].states.find((s) => s.serial === 'LAPTOP1')?.compliant, false);

    fake.setCompliance('LAPTOP1', 'compliant');
    const [result] = await sync.lookupNow('LAPTOP1', { fresh: true });
    assert.equal(result.state?.compliant, true);
    assert.deepEqual(updates.at(-1)?.states.map((s) => [s.serial, s.compliant]), [['LAPTOP1', true]]);

    fake.setCompliance('LAPTOP1', 'noncompliant');
    await ft.advance(20 * MIN);
    await sync.idle();
    const last = updates.at(-1)!;
    assert.equal(last.complete, true);
    assert.equal(last.states.find((s) => s.serial === 'LAPTOP1')?.compliant, false);
  });
});
