/**
 * The control plane's store: spec objects, users, devices, tokens, certificates, settings, the change
 * feed the config stream replays, and the access and audit event logs — one interface over SQLite
 * (embedded default) and PostgreSQL (several replicas), with migrations that run on open.
 *
 *     const store = await openStore({ url: 'sqlite:/var/lib/causeway/causeway.db' });
 *     const store = await openStore({ url: 'postgres://causeway@db/causeway' });
 *
 * See types.ts for the contract and store.conformance.testing.ts for what both databases are held to.
 */
import { systemClock } from '../../lib/clock.ts';
import type { Clock } from '../../lib/clock.ts';
import { UserError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/log.ts';
import type { Logger } from '../../lib/log.ts';
import type { Backend } from './backend.ts';
import { openPostgresBackend } from './postgres.ts';
import { openSqliteBackend } from './sqlite.ts';
import { KyselyStore } from './store.ts';
import type { Store } from './types.ts';

export * from './types.ts';
export { redactUrl } from './postgres.ts';

export interface OpenStoreOptions {
  /**
   * `sqlite:/path/to/causeway.db` (also `sqlite:relative.db`, `sqlite:///abs.db`), `:memory:` (or
   * `sqlite::memory:`) for a private in-memory database, or `postgres://…` / `postgresql://…`.
   */
  url: string;
  logger?: Logger;
  clock?: Clock;
  /** How often other instances' changes are looked for while someone watches. Default: SQLite 250 ms; PostgreSQL 2000 ms beside LISTEN. */
  pollIntervalMs?: number;
  /** PostgreSQL pool size. Default 10. */
  maxConnections?: number;
}

export type StoreLocation = { dialect: 'sqlite'; path: string } | { dialect: 'postgres'; url: string };

/** Where a store URL points; a URL of no known form is a UserError that shows the forms. */
export function parseStoreUrl(url: string): StoreLocation {
  if (url === ':memory:' || url === 'sqlite::memory:') return { dialect: 'sqlite', path: ':memory:' };
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return { dialect: 'postgres', url };
  if (url.startsWith('sqlite:')) {
    let file = url.slice('sqlite:'.length);
    if (file.startsWith('//')) file = file.slice(2);
    if (file !== '') return { dialect: 'sqlite', path: file };
  }
  throw new UserError('STORE_URL_INVALID', 'the database must be sqlite:/path/to/causeway.db, :memory: or postgres://user@host:5432/database');
}

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const logger = options.logger ?? silentLogger();
  const location = parseStoreUrl(options.url);
  let backend: Backend;
  if (location.dialect === 'sqlite') {
    backend = await openSqliteBackend({ path: location.path, pollIntervalMs: options.pollIntervalMs });
  } else {
    backend = await openPostgresBackend({ url: location.url, logger, maxConnections: options.maxConnections, pollIntervalMs: options.pollIntervalMs });
  }
  return new KyselyStore({ backend, logger, clock: options.clock ?? systemClock });
}
