/**
 * The embedded default: one SQLite file under the data directory, through node:sqlite.
 *
 * WAL (readers never wait for the writer), synchronous=FULL (a committed write survives power loss,
 * not only a crash: access events are acknowledged to the access tier once committed, X-02),
 * foreign keys on. A kill -9 mid-write leaves the file with the transaction wholly applied or wholly
 * absent (CP-15): that is SQLite's journal, tested in sqlite.test.ts with a child process.
 *
 * Other Store instances on the same file, in this process or another, are noticed by polling the
 * highest revision (a primary-key lookup) while someone watches.
 */
import { closeSync, existsSync, openSync, statSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Kysely } from 'kysely';
import { UserError, errorMessage } from '../../lib/errors.ts';
import type { Backend, RevisionSource } from './backend.ts';
import { migrateToLatest } from './migrations.ts';
import type { Database } from './schema.ts';
import { NodeSqliteDialect } from './sqlite-dialect.ts';

export interface SqliteBackendOptions {
  /** A file path, or ':memory:'. */
  path: string;
  /** How often other instances' writes are looked for while someone watches. Default 250 ms. */
  pollIntervalMs?: number;
  /** How long a write waits for another connection's write lock. Default 5000 ms. */
  busyTimeoutMs?: number;
}

export async function openSqliteBackend(options: SqliteBackendOptions): Promise<Backend> {
  const file = options.path;
  if (file !== ':memory:') prepareFile(file);
  let database: DatabaseSync;
  try {
    database = new DatabaseSync(file, { enableForeignKeyConstraints: true });
  } catch (err) {
    throw new UserError('STORE_OPEN_FAILED', `cannot open the SQLite database ${file}: ${errorMessage(err)}; check the path and its permissions`, { cause: err });
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  try {
    database.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    database.exec('PRAGMA journal_mode = WAL');
    database.exec('PRAGMA synchronous = FULL');
    database.exec('PRAGMA foreign_keys = ON');
  } catch (err) {
    database.close();
    throw new UserError('STORE_OPEN_FAILED', `cannot use ${file} as a SQLite database: ${errorMessage(err)}`, { cause: err });
  }
  const db = new Kysely<Database>({ dialect: new NodeSqliteDialect({ database, busyTimeoutMs, statementBusyTimeoutMs: busyTimeoutMs }) });
  try {
    await migrateToLatest(db, 'sqlite');
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const pollIntervalMs = options.pollIntervalMs ?? 250;
  return {
    dialect: 'sqlite',
    db,
    lockChangeFeed: () => Promise.resolve(),
    announceInTransaction: () => Promise.resolve(),
    listen(_onRevision, poll): RevisionSource {
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        void poll().finally(() => {
          running = false;
        });
      }, pollIntervalMs);
      timer.unref();
      return {
        stop: () => {
          clearInterval(timer);
          return Promise.resolve();
        },
      };
    },
    close: () => db.destroy(),
  };
}

/** The directory must exist; a new database file is created readable by its owner only. */
function prepareFile(file: string): void {
  const dir = path.dirname(path.resolve(file));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new UserError('STORE_OPEN_FAILED', `the directory of the SQLite database ${file} does not exist; create it or choose another --data-dir`);
  }
  if (!existsSync(file)) {
    try {
      closeSync(openSync(file, 'a', 0o600));
    } catch (err) {
      throw new UserError('STORE_OPEN_FAILED', `cannot create the SQLite database ${file}: ${errorMessage(err)}`, { cause: err });
    }
  }
}
