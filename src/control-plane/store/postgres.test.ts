/**
 * The store on PostgreSQL. Needs a server (127.0.0.1:5432, user postgres, trust auth on development
 * and CI machines; CAUSEWAY_TEST_POSTGRES_URL points elsewhere). Each run creates its own databases,
 * causeway_test_<random>, and drops them afterwards.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { errorCode } from '../../lib/errors.ts';
import { openStore } from './index.ts';
import type { Store } from './index.ts';
import { runStoreConformance } from './store.conformance.testing.ts';

const adminUrl = process.env.CAUSEWAY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const created: string[] = [];

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>, database?: string): Promise<T> {
  const url = new URL(adminUrl);
  if (database !== undefined) url.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function createDatabase(): Promise<{ name: string; url: string }> {
  const name = `causeway_test_${randomBytes(6).toString('hex')}`;
  await withAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  created.push(name);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return { name, url: url.toString() };
}

async function dropDatabase(name: string): Promise<void> {
  await withAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  created.splice(created.indexOf(name), 1);
}

after(async () => {
  for (const name of [...created]) await dropDatabase(name);
});

const conformance = await createDatabase();

runStoreConformance(
  'PostgreSQL',
  (options) => openStore({ url: conformance.url, clock: options?.clock }),
  () => dropDatabase(conformance.name),
  () =>
    withAdmin(async (client) => {
      // Every row of every table, as text.
      const tables = await client.query<{ table_name: string }>("select table_name from information_schema.tables where table_schema = 'public'");
      const parts: string[] = [];
      for (const { table_name } of tables.rows) {
        const rows = await client.query<{ dump: string | null }>(`select string_agg(t::text, E'\\n') as dump from "${table_name}" t`);
        parts.push(rows.rows[0].dump ?? '');
      }
      return parts.join('\n');
    }, conformance.name),
);

/** Backends of one database, seen from outside. */
async function backends(database: string, applicationName: string): Promise<{ pid: number; state: string; wait_event_type: string | null }[]> {
  return withAdmin(async (c) => (await c.query<{ pid: number; state: string; wait_event_type: string | null }>('select pid, state, wait_event_type from pg_stat_activity where datname = $1 and application_name = $2', [database, applicationName])).rows);
}

async function terminate(pid: number): Promise<void> {
  await withAdmin((c) => c.query('select pg_terminate_backend($1)', [pid]));
}

void describe('PostgreSQL store', () => {
  void test('a backend terminated in the middle of a write leaves the object wholly old, with no change or audit row (CP-15)', async (t) => {
    const { name, url } = await createDatabase();
    const store = await openStore({ url });
    t.after(() => store.close());
    const kind = 'Crash';
    await store.putObject({ kind, name: 'o', spec: { n: 1 } }, { actor: 'test' });
    const revision = await store.currentRevision();

    // Hold a lock that the write will wait for after it has updated the object and appended the change.
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    t.after(() => locker.end());
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE audit_events IN EXCLUSIVE MODE');
    const write = store.putObject({ kind, name: 'o', spec: { n: 2 } }, { actor: 'test' });
    const outcome = write.then(() => 'committed', (err: unknown) => `failed: ${errorCode(err) ?? String(err)}`);
    let victim: number | undefined;
    for (let i = 0; i < 200 && victim === undefined; i++) {
      victim = (await backends(name, 'causeway-store')).find((b) => b.wait_event_type === 'Lock')?.pid;
      if (victim === undefined) await delay(10);
    }
    assert.ok(victim !== undefined, 'the write is waiting inside its transaction');
    await terminate(victim);
    assert.match(await outcome, /^failed/);
    await locker.query('ROLLBACK');

    const object = await store.getObject(kind, 'o');
    assert.deepEqual(object?.spec, { n: 1 });
    assert.equal(object?.version, 1);
    assert.equal(await store.currentRevision(), revision, 'no change row');
    assert.equal((await store.queryAuditEvents({ kind })).events.length, 1, 'no audit row');
    // The pool replaced the dead connection: the next write works.
    assert.equal((await store.putObject({ kind, name: 'o', spec: { n: 3 } }, { actor: 'test', expectedVersion: 1 })).object.version, 2);
  });

  void test('when the LISTEN connection drops, watches still see other replicas\' writes within 1 s and it reconnects', async (t) => {
    const { name, url } = await createDatabase();
    const writer = await openStore({ url });
    const reader = await openStore({ url });
    t.after(() => writer.close());
    t.after(() => reader.close());
    const seen: number[] = [];
    const stop = reader.watch((r) => seen.push(r));
    t.after(stop);
    const waitFor = async (revision: number, ms: number): Promise<boolean> => {
      const deadline = performance.now() + ms;
      while (performance.now() < deadline) {
        if (seen.some((r) => r >= revision)) return true;
        await delay(5);
      }
      return false;
    };
    let listener: number | undefined;
    for (let i = 0; i < 200 && listener === undefined; i++) {
      listener = (await backends(name, 'causeway-listen'))[0]?.pid;
      if (listener === undefined) await delay(10);
    }
    assert.ok(listener !== undefined, 'the reader listens');
    const first = await writer.putObject({ kind: 'Role', name: 'a', spec: {} }, { actor: 'test' });
    assert.ok(await waitFor(first.revision ?? 0, 1000));

    await terminate(listener);
    for (let i = 0; i < 3; i++) {
      const { revision } = await writer.putObject({ kind: 'Role', name: 'a', spec: { i } }, { actor: 'test' });
      assert.ok(await waitFor(revision ?? 0, 1000), `revision ${revision} seen within 1 s while the listener is down or back`);
    }
    let back: number | undefined;
    for (let i = 0; i < 300 && back === undefined; i++) {
      back = (await backends(name, 'causeway-listen')).find((b) => b.pid !== listener)?.pid;
      if (back === undefined) await delay(20);
    }
    assert.ok(back !== undefined, 'a new LISTEN connection');

    // Idle pooled connections killed under the store: the next calls get fresh ones.
    for (const b of await backends(name, 'causeway-store')) await terminate(b.pid);
    await delay(50);
    let done = false;
    for (let i = 0; i < 3 && !done; i++) {
      done = await writer.putObject({ kind: 'Role', name: 'b', spec: {} }, { actor: 'test' }).then(() => true, () => false);
    }
    assert.ok(done, 'the store recovers once the pool drops the dead connections');
  });

  void test('three replicas opening a new database at once all migrate it without error', async () => {
    const { url } = await createDatabase();
    const stores: Store[] = await Promise.all([openStore({ url }), openStore({ url }), openStore({ url })]);
    try {
      await stores[0].putObject({ kind: 'Role', name: 'r', spec: {} }, { actor: 'test' });
      assert.equal((await stores[2].getObject('Role', 'r'))?.version, 1);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  void test('an unreachable server is STORE_OPEN_FAILED, and the message never shows the password', async () => {
    const url = 'postgres://causeway:s3cr3t-pw@127.0.0.1:1/causeway';
    await assert.rejects(openStore({ url }), (err: Error) => {
      assert.equal(errorCode(err), 'STORE_OPEN_FAILED');
      assert.ok(!err.message.includes('s3cr3t-pw'), err.message);
      assert.ok(err.message.includes('127.0.0.1:1'));
      return true;
    });
  });
});
