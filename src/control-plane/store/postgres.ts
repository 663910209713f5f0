/**
 * PostgreSQL, for several `causeway server` replicas on one database.
 *
 * - Writers to the change feed take one transaction-scoped advisory lock first, so revisions commit
 *   in number order (see Backend.lockChangeFeed) and a stale `expectedVersion` is always seen.
 * - The writing transaction calls pg_notify('causeway_changes', revision); PostgreSQL delivers it on
 *   commit to every replica LISTENing on a dedicated connection. That connection is re-opened with
 *   backoff when it drops, and a poll of the highest revision runs beside it: every 2 s while it
 *   listens, every 250 ms while it does not, and once right after it reconnects, since notifications
 *   sent meanwhile are lost.
 * - The pool's type parsers return json/jsonb as text (parsed by the store, as for SQLite) and int8
 *   as a number.
 */
import pg from 'pg';
import type { CustomTypesConfig } from 'pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { UserError, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Backend, RevisionSource } from './backend.ts';
import { migrateToLatest } from './migrations.ts';
import type { Database } from './schema.ts';

export const CHANGES_CHANNEL = 'causeway_changes';
/** The advisory lock that serialises change-feed writers (an arbitrary constant: "cwayfeed"). */
const FEED_LOCK = 0x6377617966656564n;

const INT8 = 20;
const JSON_OID = 114;
const JSONB_OID = 3802;

const typeParsers: CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8) return (value: string) => Number(value);
    if (oid === JSON_OID || oid === JSONB_OID) return (value: string) => value;
    return pg.types.getTypeParser(oid, format) as (value: string) => unknown;
  }) as CustomTypesConfig['getTypeParser'],
};

export interface PostgresBackendOptions {
  url: string;
  logger: Logger;
  /** Pool size. Default 10. */
  maxConnections?: number;
  /** Poll interval while the LISTEN connection is up. Default 2000 ms. */
  pollIntervalMs?: number;
  /** Poll interval while it is down. Default 250 ms. */
  fallbackPollIntervalMs?: number;
}

export async function openPostgresBackend(options: PostgresBackendOptions): Promise<Backend> {
  const { url, logger } = options;
  const pool = new pg.Pool({ connectionString: url, max: options.maxConnections ?? 10, types: typeParsers, application_name: 'causeway-store' });
  // An idle client whose server connection drops emits 'error' on the pool; unhandled, it would end the process.
  pool.on('error', (err) => logger.warn({ err }, 'a pooled PostgreSQL connection failed; it will be replaced'));
  // A checked-out client has no pool listener: when its server connection dies (a restart, a
  // terminated backend), pg emits 'error' on the client itself, which would otherwise end the process.
  // The query in flight fails on its own, and the pool drops the client when it comes back.
  pool.on('connect', (client) => {
    client.on('error', (err) => logger.warn({ err }, 'a PostgreSQL connection in use failed; its transaction is rolled back'));
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    await sql`select 1`.execute(db);
  } catch (err) {
    await db.destroy();
    throw new UserError('STORE_OPEN_FAILED', `cannot connect to PostgreSQL at ${redactUrl(url)}: ${errorMessage(err)}; check --database and that the server is up`, { cause: err, retryable: true });
  }
  try {
    await migrateToLatest(db, 'postgres');
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return {
    dialect: 'postgres',
    db,
    async lockChangeFeed(trx) {
      await sql`select pg_advisory_xact_lock(${sql.lit(FEED_LOCK)})`.execute(trx);
    },
    async announceInTransaction(trx, revision) {
      await sql`select pg_notify(${CHANGES_CHANNEL}, ${String(revision)})`.execute(trx);
    },
    listen(onRevision, poll) {
      return new Listener({ url, logger, onRevision, poll, pollIntervalMs: options.pollIntervalMs ?? 2000, fallbackPollIntervalMs: options.fallbackPollIntervalMs ?? 250 });
    },
    close: () => db.destroy(),
  };
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'the given URL';
  }
}

interface ListenerOptions {
  url: string;
  logger: Logger;
  onRevision: (revision: number) => void;
  poll: () => Promise<void>;
  pollIntervalMs: number;
  fallbackPollIntervalMs: number;
}

class Listener implements RevisionSource {
  readonly #o: ListenerOptions;
  #client: pg.Client | undefined;
  #listening = false;
  #stopped = false;
  #backoffMs = 100;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #polling = false;

  constructor(options: ListenerOptions) {
    this.#o = options;
    this.#connect();
    this.#schedulePoll();
  }

  #connect(): void {
    if (this.#stopped) return;
    const client = new pg.Client({ connectionString: this.#o.url, application_name: 'causeway-listen' });
    this.#client = client;
    client.on('notification', (message) => {
      if (message.channel !== CHANGES_CHANNEL) return;
      const revision = Number(message.payload);
      if (Number.isSafeInteger(revision)) this.#o.onRevision(revision);
    });
    client.on('error', (err) => this.#lost(client, err));
    client.on('end', () => this.#lost(client, undefined));
    void (async () => {
      try {
        await client.connect();
        await client.query(`LISTEN ${CHANGES_CHANNEL}`);
        if (this.#client !== client) return;
        this.#listening = true;
        this.#backoffMs = 100;
        this.#pollNow();
      } catch (err) {
        this.#lost(client, err);
      }
    })();
  }

  #lost(client: pg.Client, err: unknown): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    this.#listening = false;
    client.removeAllListeners('notification');
    client.on('error', () => {});
    client.end().catch(() => {});
    if (this.#stopped) return;
    this.#o.logger.warn({ err, retryInMs: this.#backoffMs }, 'lost the PostgreSQL LISTEN connection for config changes; polling until it is back');
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, this.#backoffMs);
    this.#reconnectTimer.unref();
    this.#backoffMs = Math.min(this.#backoffMs * 2, 5000);
  }

  #schedulePoll(): void {
    if (this.#stopped) return;
    const interval = this.#listening ? this.#o.pollIntervalMs : this.#o.fallbackPollIntervalMs;
    this.#pollTimer = setTimeout(() => {
      this.#pollNow();
      this.#schedulePoll();
    }, interval);
    this.#pollTimer.unref();
  }

  #pollNow(): void {
    if (this.#polling || this.#stopped) return;
    this.#polling = true;
    void this.#o.poll().finally(() => {
      this.#polling = false;
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    if (this.#pollTimer !== undefined) clearTimeout(this.#pollTimer);
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) {
      client.on('error', () => {});
      await client.end().catch(() => {});
    }
  }
}
