import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { Kysely } from 'kysely';
import { Migrator } from 'kysely/migration';
import { errorCode } from '../../lib/errors.ts';
import { openStore, parseStoreUrl } from './index.ts';
import type { Store } from './index.ts';
import { MIGRATION_LOCK_TABLE, MIGRATION_TABLE, migrations } from './migrations.ts';
import type { Database } from './schema.ts';
import { NodeSqliteDialect } from './sqlite-dialect.ts';
import { runStoreConformance } from './store.conformance.testing.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-store-'));
const file = path.join(dir, 'causeway.db');

runStoreConformance(
  'SQLite',
  (options) => openStore({ url: `sqlite:${file}`, clock: options?.clock }),
  () => rm(dir, { recursive: true, force: true }),
  async () => {
    // The database file and its write-ahead log, byte for byte.
    const parts = await Promise.all([file, `${file}-wal`].map((p) => readFile(p).catch(() => Buffer.alloc(0))));
    return Buffer.concat(parts).toString('latin1');
  },
);

void describe('SQLite store', () => {
  const own = path.join(os.tmpdir(), `causeway-store-sqlite-${process.pid}-${Date.now()}`);
  after(() => rm(own, { recursive: true, force: true }));

  async function fresh(name: string): Promise<string> {
    const d = path.join(own, name);
    await rm(d, { recursive: true, force: true });
    await mkdir(d, { recursive: true });
    return path.join(d, 'causeway.db');
  }

  void test('kill -9 during writes leaves every object wholly old or wholly new, and loses no acknowledged write (CP-15, X-02)', async (t) => {
    const child = fileURLToPath(new URL('./crash-writer.testing.ts', import.meta.url));
    for (let attempt = 0; attempt < 4; attempt++) {
      const db = await fresh(`crash-${attempt}`);
      const proc = spawn(process.execPath, [child, db], { stdio: ['ignore', 'pipe', 'pipe'] });
      let acknowledged = 0;
      let stderr = '';
      proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const killAfter = 5 + attempt * 15;
      await new Promise<void>((resolve, reject) => {
        proc.stdout.on('data', (chunk: Buffer) => {
          for (const line of chunk.toString().split('\n')) if (line !== '') acknowledged = Math.max(acknowledged, Number(line));
          if (acknowledged >= killAfter) resolve();
        });
        proc.on('exit', (code) => reject(new Error(`the writer exited early (${code}): ${stderr}`)));
      });
      // Kill mid-loop, at a moment that varies, without waiting for a quiet point.
      await new Promise((r) => setTimeout(r, attempt * 3));
      proc.kill('SIGKILL');
      await once(proc, 'exit');

      const raw = new DatabaseSync(db, { readOnly: true });
      try {
        assert.equal((raw.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check, 'ok');
      } finally {
        raw.close();
      }
      const store = await openStore({ url: `sqlite:${db}` });
      try {
        const a = await store.getObject('Crash', 'a');
        const b = await store.getObject('Crash', 'b');
        assert.ok(a !== undefined && b !== undefined);
        const round = (a.spec as { round: number }).round;
        assert.equal((b.spec as { round: number }).round, round, 'both objects of one transaction, or neither');
        assert.equal(a.version, round);
        assert.ok(round >= acknowledged, `round ${round} committed, ${acknowledged} acknowledged`);
        const changes = (await store.changesSince(0, 100_000)).filter((c) => c.kind === 'Crash');
        assert.equal(changes.length, 2 * round, 'one change per object per round, no more, no less');
        assert.deepEqual(changes.filter((c) => c.name === 'a').at(-1)?.object, a, 'the feed ends at the stored object');
        assert.equal((await store.queryAuditEvents({ kind: 'Crash', limit: 1000 })).events.length, 2 * round);
        let events = 0;
        let cursor: string | undefined;
        do {
          const page = await store.queryAccessEvents({ limit: 1000, after: cursor });
          events += page.events.length;
          cursor = page.next;
        } while (cursor !== undefined);
        assert.ok(events === 10 * round || events === 10 * (round - 1), `${events} events after ${round} rounds: batches are whole`);
        assert.ok(events >= 10 * acknowledged);
        t.diagnostic(`attempt ${attempt}: killed after ${acknowledged} acknowledged rounds; ${round} committed, ${events} events`);
      } finally {
        await store.close();
      }
    }
  });

  void test('two stores opening a new file at once both migrate it without error', async () => {
    const db = await fresh('concurrent-open');
    const stores = await Promise.all([openStore({ url: `sqlite:${db}` }), openStore({ url: `sqlite:${db}` }), openStore({ url: `sqlite://${db}` })]);
    try {
      await stores[0].putObject({ kind: 'Role', name: 'r', spec: {} }, { actor: 'test' });
      assert.equal((await stores[2].getObject('Role', 'r'))?.version, 1);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  void test('a database made before the identity migration keeps its users, who become local users with no TOTP, lock or login', async () => {
    const db = await fresh('upgrade-identity');
    const database = new DatabaseSync(db);
    const kysely = new Kysely<Database>({ dialect: new NodeSqliteDialect({ database, busyTimeoutMs: 5000, statementBusyTimeoutMs: 5000 }) });
    try {
      const migrator = new Migrator({ db: kysely, provider: { getMigrations: () => Promise.resolve(migrations('sqlite')) }, migrationTableName: MIGRATION_TABLE, migrationLockTableName: MIGRATION_LOCK_TABLE });
      const { error } = await migrator.migrateTo('0001-initial-schema');
      assert.equal(error, undefined);
    } finally {
      await kysely.destroy();
    }
    const old = new DatabaseSync(db);
    old.prepare("insert into users (id, name, email, groups, disabled, password_hash, version, created_at, created_by, updated_at, updated_by) values ('u1', 'olduser', null, '[]', 0, 'scrypt$old', 1, '2026-01-01T00:00:00.000Z', 'system', '2026-01-01T00:00:00.000Z', 'system')").run();
    old.close();
    const store = await openStore({ url: `sqlite:${db}` });
    try {
      const user = await store.getUser('u1');
      assert.equal(user?.source, 'local');
      assert.equal(user?.hasTotp, false);
      assert.equal(user?.lockedUntil, null);
      assert.equal(user?.lastLoginAt, null);
      assert.equal(user?.version, 1);
      const credentials = await store.getUserCredentials('olduser');
      assert.deepEqual({ ...credentials, user: undefined }, { user: undefined, passwordHash: 'scrypt$old', totpSecret: null, failedLogins: 0 });
      assert.deepEqual(await store.recordLoginFailure('u1', { at: '2026-01-02T00:00:00.000Z', maxFailures: 5, lockMs: 1000 }), { failedLogins: 1, lockedUntil: null });
    } finally {
      await store.close();
    }
  });

  void test('creates the database file readable by its owner only', async () => {
    const db = await fresh('mode');
    const store = await openStore({ url: `sqlite:${db}` });
    await store.close();
    assert.equal((await stat(db)).mode & 0o777, 0o600);
  });

  void test('a missing directory or a file that is not a database is a UserError naming the path', async () => {
    const missing = path.join(own, 'no', 'such', 'dir', 'causeway.db');
    await assert.rejects(openStore({ url: `sqlite:${missing}` }), (err: Error) => errorCode(err) === 'STORE_OPEN_FAILED' && err.message.includes(missing));
    const db = await fresh('garbage');
    await writeFile(db, 'this is not a database, just text that is long enough to have a header'.repeat(20));
    await assert.rejects(openStore({ url: `sqlite:${db}` }), (err: Error) => errorCode(err) === 'STORE_OPEN_FAILED' && err.message.includes(db));
  });

  void test(':memory: is a private database that works like a file', async () => {
    const stores: Store[] = [await openStore({ url: ':memory:' }), await openStore({ url: 'sqlite::memory:' })];
    try {
      await stores[0].putObject({ kind: 'Role', name: 'r', spec: {} }, { actor: 'test' });
      assert.equal((await stores[0].listObjects()).length, 1);
      assert.equal((await stores[1].listObjects()).length, 0);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  void test('store URLs: sqlite paths, :memory:, postgres; anything else is STORE_URL_INVALID', () => {
    assert.deepEqual(parseStoreUrl('sqlite:/var/lib/causeway/causeway.db'), { dialect: 'sqlite', path: '/var/lib/causeway/causeway.db' });
    assert.deepEqual(parseStoreUrl('sqlite:///var/lib/c.db'), { dialect: 'sqlite', path: '/var/lib/c.db' });
    assert.deepEqual(parseStoreUrl('sqlite:data/c.db'), { dialect: 'sqlite', path: 'data/c.db' });
    assert.deepEqual(parseStoreUrl(':memory:'), { dialect: 'sqlite', path: ':memory:' });
    assert.deepEqual(parseStoreUrl('postgresql://u@h/db'), { dialect: 'postgres', url: 'postgresql://u@h/db' });
    for (const bad of ['', 'sqlite:', 'mysql://h/db', '/var/lib/c.db', 'http://x']) assert.throws(() => parseStoreUrl(bad), { code: 'STORE_URL_INVALID' });
  });
});
