/**
 * A Kysely dialect over Node's built-in `node:sqlite` (`DatabaseSync`): no native addon to build.
 * Kysely ships no such dialect (0.29), so this reuses its SQLite query compiler, adapter and
 * introspector and replaces only the driver.
 *
 * Two things differ from Kysely's own SQLite driver, both for several connections on one file
 * (several Store instances, or a second process):
 * - A read-write transaction starts with `BEGIN IMMEDIATE`, so it holds the write lock from its first
 *   statement and never fails half-way with SQLITE_BUSY when it upgrades from reading to writing.
 *   Waiting for that lock is done asynchronously (busy_timeout 0 and a retry with backoff), because
 *   `DatabaseSync` blocks the event loop while SQLite's busy handler sleeps: a connection in the same
 *   process that holds the lock could then never reach its COMMIT.
 * - A `read only` transaction starts with a plain (deferred) `BEGIN`: a WAL snapshot that never
 *   blocks writers.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { setTimeout as delay } from 'node:timers/promises';
import { SqliteAdapter, SqliteIntrospector, SqliteQueryCompiler } from 'kysely';
import type { CompiledQuery, DatabaseConnection, DatabaseIntrospector, Dialect, DialectAdapter, Driver, Kysely, QueryCompiler, QueryResult, TransactionSettings } from 'kysely';
import { CausewayError } from '../../lib/errors.ts';

export interface NodeSqliteDialectOptions {
  /** An open database; the dialect owns it from now on and closes it on `destroy`. */
  database: DatabaseSync;
  /** How long a write transaction waits for another connection's write lock. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** The busy_timeout (ms) SQLite itself applies to other statements. Default 5000 ms. */
  statementBusyTimeoutMs?: number;
}

/** SQLite's transactional DDL lets Kysely's Migrator run each migration in a (write-locked) transaction. */
class NodeSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

export class NodeSqliteDialect implements Dialect {
  readonly #options: NodeSqliteDialectOptions;

  constructor(options: NodeSqliteDialectOptions) {
    this.#options = options;
  }

  createDriver(): Driver {
    return new NodeSqliteDriver(this.#options);
  }

  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  createAdapter(): DialectAdapter {
    return new NodeSqliteAdapter();
  }

  // Kysely's own signature takes Kysely<any>.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}

/** SQLITE_BUSY, in its primary or any extended form. */
export function isSqliteBusy(err: unknown): boolean {
  return err !== null && typeof err === 'object' && 'errcode' in err && typeof err.errcode === 'number' && (err.errcode & 0xff) === 5;
}

/** node:sqlite binds null, numbers, bigints, strings and bytes; booleans become 0/1 as in SQLite itself. */
function bindable(value: unknown): unknown {
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (value === undefined) return null;
  return value;
}

class NodeSqliteConnection implements DatabaseConnection {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** Prepared statements are reused: Kysely compiles the same SQL text for the same query shape. */
  #prepare(sqlText: string): StatementSync {
    let stmt = this.#statements.get(sqlText);
    if (stmt === undefined) {
      stmt = this.#db.prepare(sqlText);
      if (this.#statements.size >= 256) {
        const oldest = this.#statements.keys().next().value;
        if (oldest !== undefined) this.#statements.delete(oldest);
      }
      this.#statements.set(sqlText, stmt);
    }
    return stmt;
  }

  executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    try {
      const stmt = this.#prepare(compiledQuery.sql);
      const params = compiledQuery.parameters.map(bindable) as Parameters<StatementSync['all']>;
      if (stmt.columns().length > 0) return Promise.resolve({ rows: stmt.all(...params) as R[] });
      const { changes, lastInsertRowid } = stmt.run(...params);
      return Promise.resolve({ rows: [], numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid) });
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  // An async generator because Kysely's interface asks for one; node:sqlite itself is synchronous.
  // eslint-disable-next-line @typescript-eslint/require-await
  async *streamQuery<R>(compiledQuery: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const stmt = this.#prepare(compiledQuery.sql);
    const params = compiledQuery.parameters.map(bindable) as Parameters<StatementSync['iterate']>;
    for (const row of stmt.iterate(...params)) yield { rows: [row as R] };
  }

  exec(sqlText: string): void {
    this.#db.exec(sqlText);
  }
}

class NodeSqliteDriver implements Driver {
  readonly #db: DatabaseSync;
  readonly #connection: NodeSqliteConnection;
  readonly #busyTimeoutMs: number;
  readonly #statementBusyTimeoutMs: number;

  constructor(options: NodeSqliteDialectOptions) {
    this.#db = options.database;
    this.#connection = new NodeSqliteConnection(options.database);
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.#statementBusyTimeoutMs = options.statementBusyTimeoutMs ?? 5000;
  }

  init(): Promise<void> {
    return Promise.resolve();
  }

  acquireConnection(): Promise<DatabaseConnection> {
    return Promise.resolve(this.#connection);
  }

  async beginTransaction(_connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    if (settings.accessMode === 'read only') {
      this.#connection.exec('BEGIN');
      return;
    }
    const deadline = Date.now() + this.#busyTimeoutMs;
    let wait = 1;
    this.#connection.exec('PRAGMA busy_timeout = 0');
    try {
      for (;;) {
        try {
          this.#connection.exec('BEGIN IMMEDIATE');
          return;
        } catch (err) {
          if (!isSqliteBusy(err)) throw err;
          if (Date.now() >= deadline) throw new CausewayError('STORE_BUSY', `the SQLite database stayed locked by another writer for ${this.#busyTimeoutMs} ms`, { cause: err, retryable: true });
        }
        await delay(wait);
        wait = Math.min(wait * 2, 50);
      }
    } finally {
      this.#connection.exec(`PRAGMA busy_timeout = ${this.#statementBusyTimeoutMs}`);
    }
  }

  commitTransaction(): Promise<void> {
    return run(() => {
      this.#connection.exec('COMMIT');
    });
  }

  rollbackTransaction(): Promise<void> {
    return run(() => {
      // SQLite may already have rolled back (e.g. after SQLITE_FULL); ROLLBACK would then fail.
      if (this.#db.isTransaction) this.#connection.exec('ROLLBACK');
    });
  }

  savepoint(_connection: DatabaseConnection, name: string): Promise<void> {
    return run(() => {
      this.#connection.exec(`SAVEPOINT ${quoteIdentifier(name)}`);
    });
  }

  rollbackToSavepoint(_connection: DatabaseConnection, name: string): Promise<void> {
    return run(() => {
      this.#connection.exec(`ROLLBACK TO ${quoteIdentifier(name)}`);
    });
  }

  releaseSavepoint(_connection: DatabaseConnection, name: string): Promise<void> {
    return run(() => {
      this.#connection.exec(`RELEASE ${quoteIdentifier(name)}`);
    });
  }

  releaseConnection(): Promise<void> {
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    return run(() => {
      if (this.#db.isOpen) this.#db.close();
    });
  }
}

/** Runs a synchronous step as a promise, a throw becoming a rejection. */
function run(step: () => void): Promise<void> {
  try {
    step();
    return Promise.resolve();
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
