/**
 * The schema, as migrations defined in code and run by Kysely's Migrator every time a store opens.
 * Both databases get the same tables; `types()` holds the few column types that differ (see
 * schema.ts). Migrations are append-only: never edit one that has shipped, add the next.
 *
 * Concurrent openers (several `causeway server` replicas, two processes on one SQLite file) are safe:
 * PostgreSQL runs the migrations under Kysely's advisory lock, SQLite inside a `BEGIN IMMEDIATE`
 * transaction, so exactly one opener migrates and the others then see nothing left to do.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { Migrator } from 'kysely/migration';
import type { Migration, MigrationProvider } from 'kysely/migration';
import { CausewayError, errorMessage } from '../../lib/errors.ts';

export type StoreDialect = 'sqlite' | 'postgres';

export const MIGRATION_TABLE = 'causeway_migration';
export const MIGRATION_LOCK_TABLE = 'causeway_migration_lock';

function types(dialect: StoreDialect) {
  const pg = dialect === 'postgres';
  return {
    text: pg ? sql`text collate "C"` : sql`text`,
    json: pg ? sql`jsonb` : sql`text`,
  };
}

// Kysely's migrations take an untyped Kysely: the schema they build is not the one they start with.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDb = Kysely<any>;

function initialSchema(dialect: StoreDialect): Migration {
  const { text, json } = types(dialect);
  return {
    async up(db: AnyDb): Promise<void> {
      await db.schema
        .createTable('objects')
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('metadata', json, (c) => c.notNull())
        .addColumn('spec', json, (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('created_by', text, (c) => c.notNull())
        .addColumn('updated_at', text, (c) => c.notNull())
        .addColumn('updated_by', text, (c) => c.notNull())
        .addPrimaryKeyConstraint('objects_pk', ['kind', 'name'])
        .execute();

      let changes = db.schema.createTable('changes');
      changes = dialect === 'postgres'
        ? changes.addColumn('revision', 'bigserial', (c) => c.primaryKey())
        : changes.addColumn('revision', 'integer', (c) => c.primaryKey().autoIncrement());
      await changes
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('op', text, (c) => c.notNull().check(sql`op in ('put', 'delete')`))
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('object', json)
        .addColumn('at', text, (c) => c.notNull())
        .addColumn('actor', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('changes_kind_name').on('changes').columns(['kind', 'name', 'revision']).execute();

      await db.schema
        .createTable('users')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('name', text, (c) => c.notNull().unique())
        .addColumn('email', text)
        .addColumn('groups', json, (c) => c.notNull())
        .addColumn('disabled', 'boolean', (c) => c.notNull())
        .addColumn('password_hash', text)
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('created_by', text, (c) => c.notNull())
        .addColumn('updated_at', text, (c) => c.notNull())
        .addColumn('updated_by', text, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('devices')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('user_id', text, (c) => c.notNull().references('users.id'))
        .addColumn('platform', text, (c) => c.notNull())
        .addColumn('os_version', text)
        .addColumn('serial', text)
        .addColumn('hostname', text)
        .addColumn('ownership', text, (c) => c.notNull())
        .addColumn('public_key', text)
        .addColumn('registered_at', text, (c) => c.notNull())
        .addColumn('registered_by', text, (c) => c.notNull())
        .addColumn('banned', 'boolean', (c) => c.notNull())
        .addColumn('last_seen', text)
        .addColumn('trust', json)
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('updated_at', text, (c) => c.notNull())
        .addColumn('updated_by', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('devices_user').on('devices').column('user_id').execute();

      await db.schema
        .createTable('api_tokens')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('scope', text, (c) => c.notNull().check(sql`scope in ('admin', 'viewer')`))
        .addColumn('token_hash', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('created_by', text, (c) => c.notNull())
        .addColumn('expires_at', text)
        .addColumn('revoked_at', text)
        .addColumn('last_used_at', text)
        .execute();

      await db.schema
        .createTable('join_tokens')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('token_hash', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('created_by', text, (c) => c.notNull())
        .addColumn('expires_at', text, (c) => c.notNull())
        .addColumn('used_at', text)
        .execute();

      await db.schema
        .createTable('access_events')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('received_at', text, (c) => c.notNull())
        .addColumn('time', text, (c) => c.notNull())
        .addColumn('decision', text, (c) => c.notNull())
        .addColumn('service', text)
        .addColumn('user', text)
        .addColumn('device', text)
        .addColumn('access_tier', text, (c) => c.notNull())
        .addColumn('reasons', json, (c) => c.notNull())
        .addColumn('event', json, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('access_events_time').on('access_events').columns(['time', 'id']).execute();
      await db.schema.createIndex('access_events_service').on('access_events').columns(['service', 'time']).execute();
      await db.schema.createIndex('access_events_user').on('access_events').columns(['user', 'time']).execute();
      await db.schema.createIndex('access_events_device').on('access_events').columns(['device', 'time']).execute();

      await db.schema
        .createTable('audit_events')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('at', text, (c) => c.notNull())
        .addColumn('actor', text, (c) => c.notNull())
        .addColumn('action', text, (c) => c.notNull())
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('before', json)
        .addColumn('after', json)
        .execute();
      await db.schema.createIndex('audit_events_at').on('audit_events').columns(['at', 'id']).execute();
      await db.schema.createIndex('audit_events_object').on('audit_events').columns(['kind', 'name', 'at']).execute();

      await db.schema
        .createTable('certificates')
        .addColumn('serial', text, (c) => c.primaryKey())
        .addColumn('type', text, (c) => c.notNull())
        .addColumn('identity', text, (c) => c.notNull())
        .addColumn('not_after', text, (c) => c.notNull())
        .addColumn('recorded_at', text, (c) => c.notNull())
        .addColumn('revoked_at', text)
        .addColumn('revoked_by', text)
        .addColumn('reason', text)
        .execute();
      await db.schema.createIndex('certificates_revoked').on('certificates').columns(['revoked_at', 'not_after']).execute();

      await db.schema
        .createTable('kv')
        .addColumn('key', text, (c) => c.primaryKey())
        .addColumn('value', text, (c) => c.notNull())
        .addColumn('updated_at', text, (c) => c.notNull())
        .execute();
    },
  };
}

/**
 * Identity (issue 4): the built-in directory's columns on users (where a user comes from, a sealed
 * TOTP secret, the failed-login count and lock, the last login) and the OIDC provider's records.
 * SQLite adds one column per ALTER TABLE, so each is its own statement.
 */
function identity(dialect: StoreDialect): Migration {
  const { text } = types(dialect);
  return {
    async up(db: AnyDb): Promise<void> {
      await db.schema.alterTable('users').addColumn('source', text, (c) => c.notNull().defaultTo('local')).execute();
      await db.schema.alterTable('users').addColumn('totp_secret', text).execute();
      await db.schema.alterTable('users').addColumn('failed_logins', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable('users').addColumn('locked_until', text).execute();
      await db.schema.alterTable('users').addColumn('last_login_at', text).execute();

      // The payload is JSON as text in both databases: oidc-provider reads back what it wrote.
      await db.schema
        .createTable('oidc_records')
        .addColumn('model', text, (c) => c.notNull())
        .addColumn('id', text, (c) => c.notNull())
        .addColumn('payload', text, (c) => c.notNull())
        .addColumn('grant_id', text)
        .addColumn('user_code', text)
        .addColumn('uid', text)
        .addColumn('expires_at', text)
        .addColumn('consumed_at', text)
        .addPrimaryKeyConstraint('oidc_records_pk', ['model', 'id'])
        .execute();
      await db.schema.createIndex('oidc_records_grant').on('oidc_records').column('grant_id').execute();
      await db.schema.createIndex('oidc_records_user_code').on('oidc_records').columns(['model', 'user_code']).execute();
      await db.schema.createIndex('oidc_records_uid').on('oidc_records').columns(['model', 'uid']).execute();
      await db.schema.createIndex('oidc_records_expires').on('oidc_records').column('expires_at').execute();
    },
  };
}

/**
 * Device trust (issue 5): the last verified posture report and when it arrived, each device manager's
 * state of the device, and the trust overrides (all JSON); serials are looked up case-insensitively.
 */
function deviceTrust(dialect: StoreDialect): Migration {
  const { text, json } = types(dialect);
  return {
    async up(db: AnyDb): Promise<void> {
      await db.schema.alterTable('devices').addColumn('posture', json).execute();
      await db.schema.alterTable('devices').addColumn('posture_at', text).execute();
      await db.schema.alterTable('devices').addColumn('mdm', json).execute();
      await db.schema.alterTable('devices').addColumn('trust_overrides', json).execute();
      await db.schema.createIndex('devices_serial').on('devices').expression(sql`lower(serial)`).execute();
    },
  };
}

/**
 * Live sessions (issue 8): the latest report of each access tier and connector, and the pending
 * orders to cut a session (SessionKill, streamed to access tiers until they expire).
 */
function liveSessions(dialect: StoreDialect): Migration {
  const { text, json } = types(dialect);
  return {
    async up(db: AnyDb): Promise<void> {
      await db.schema
        .createTable('peer_reports')
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('reported_at', text, (c) => c.notNull())
        .addColumn('report', json, (c) => c.notNull())
        .addPrimaryKeyConstraint('peer_reports_pk', ['kind', 'name'])
        .execute();
      await db.schema
        .createTable('session_kills')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('by', text, (c) => c.notNull())
        .addColumn('at', text, (c) => c.notNull())
        .addColumn('expires_at', text, (c) => c.notNull())
        .addColumn('session', json)
        .execute();
      await db.schema.createIndex('session_kills_expires').on('session_kills').column('expires_at').execute();
    },
  };
}

/** The web console's login sessions (issue 8): keyed by the SHA-256 of the cookie's secret. */
function consoleSessions(dialect: StoreDialect): Migration {
  const { text } = types(dialect);
  return {
    async up(db: AnyDb): Promise<void> {
      await db.schema
        .createTable('console_sessions')
        .addColumn('token_hash', text, (c) => c.primaryKey())
        .addColumn('user_id', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('expires_at', text, (c) => c.notNull())
        .addColumn('last_seen_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('console_sessions_user').on('console_sessions').column('user_id').execute();
      await db.schema.createIndex('console_sessions_expires').on('console_sessions').column('expires_at').execute();
    },
  };
}

/**
 * Kube audit events (issue 6): one row per kube proxy request or exec/attach/port-forward session,
 * stored once per id like access events, the whole event as JSON and the filtered fields as columns.
 */
function kubeEvents(dialect: StoreDialect): Migration {
  const { text, json } = types(dialect);
  return {
    async up(db: AnyDb): Promise<void> {
      await db.schema
        .createTable('kube_events')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('received_at', text, (c) => c.notNull())
        .addColumn('time', text, (c) => c.notNull())
        .addColumn('type', text, (c) => c.notNull())
        .addColumn('decision', text, (c) => c.notNull())
        .addColumn('cluster_name', text, (c) => c.notNull())
        .addColumn('kube_proxy', text, (c) => c.notNull())
        .addColumn('user', text)
        .addColumn('device', text)
        .addColumn('namespace', text)
        .addColumn('verb', text)
        .addColumn('event', json, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('kube_events_time').on('kube_events').columns(['time', 'id']).execute();
      await db.schema.createIndex('kube_events_user').on('kube_events').columns(['user', 'time']).execute();
      await db.schema.createIndex('kube_events_cluster').on('kube_events').columns(['cluster_name', 'time']).execute();
    },
  };
}

/** Every migration, by name; names sort in the order they run. */
export function migrations(dialect: StoreDialect): Record<string, Migration> {
  return {
    '0001-initial-schema': initialSchema(dialect),
    '0002-identity': identity(dialect),
    '0003-device-trust': deviceTrust(dialect),
    '0005-live-sessions': liveSessions(dialect),
    '0006-console-sessions': consoleSessions(dialect),
    '0007-kube-events': kubeEvents(dialect),
  };
}

/** Brings the schema up to date; fails with STORE_MIGRATION_FAILED naming the migration. */
export async function migrateToLatest(db: AnyDb, dialect: StoreDialect): Promise<void> {
  const provider: MigrationProvider = { getMigrations: () => Promise.resolve(migrations(dialect)) };
  const migrator = new Migrator({ db, provider, migrationTableName: MIGRATION_TABLE, migrationLockTableName: MIGRATION_LOCK_TABLE });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new CausewayError('STORE_MIGRATION_FAILED', `migrating the ${dialect} database failed${failed === undefined ? '' : ` at ${failed}`}: ${errorMessage(error)}`, { cause: error });
  }
}
