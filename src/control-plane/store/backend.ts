import type { Kysely, Transaction } from 'kysely';
import type { StoreDialect } from './migrations.ts';
import type { Database } from './schema.ts';

/** Started by the store while someone watches; stopped when the last watcher leaves or on close. */
export interface RevisionSource {
  stop(): Promise<void>;
}

/**
 * What differs between the two databases beyond SQL, which Kysely handles: how writers to the
 * change feed are serialised, and how other instances learn that the feed grew.
 */
export interface Backend {
  readonly dialect: StoreDialect;
  readonly db: Kysely<Database>;
  /**
   * First statement of every transaction that appends to the change feed. It makes those
   * transactions run one at a time, so revisions commit in the order they are numbered and a reader
   * that has seen revision n has seen every revision below n (a sequence alone does not promise
   * that: a lower number can commit after a higher one). SQLite needs nothing: BEGIN IMMEDIATE
   * already holds the database's one write lock.
   */
  lockChangeFeed(trx: Transaction<Database>): Promise<void>;
  /** Last statement of such a transaction: tells other instances (PostgreSQL: NOTIFY, sent on commit). */
  announceInTransaction(trx: Transaction<Database>, revision: number): Promise<void>;
  /** Delivers revisions written by other instances: `onRevision` with a known revision, `poll` to look. */
  listen(onRevision: (revision: number) => void, poll: () => Promise<void>): RevisionSource;
  close(): Promise<void>;
}
