/**
 * The Store, written once against Kysely and run on either database (see backend.ts for the little
 * that differs).
 *
 * Every write of a spec object, user, device or certificate revocation is one transaction that
 * writes the record, a `changes` row (the feed the config stream replays) and an `audit_events` row
 * (who, before, after). Versions are checked inside that transaction, which change-feed writers run
 * one at a time (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL), and the UPDATE also
 * names the version it read: a stale `expectedVersion` is a VERSION_CONFLICT, never a lost update
 * (CP-14).
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Insertable, Kysely, Selectable, SelectQueryBuilder, Transaction } from 'kysely';
import type { AccessEvent, KubeEvent } from '../../lib/audit/index.ts';
import type { Clock } from '../../lib/clock.ts';
import { CausewayError, UserError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Backend, RevisionSource } from './backend.ts';
import type { ApiTokensTable, AuditEventsTable, CertificatesTable, Database, DevicesTable, JoinTokensTable, ObjectsTable, OidcRecordsTable, SessionKillsTable, UsersTable } from './schema.ts';
import { asBool } from './schema.ts';
import { hashToken, newSecret, tokenId, tokenMatches } from './tokens.ts';
import { consoleSecretHash, newConsoleSecret } from './tokens.ts';
import type { ConsoleSessionsTable } from './schema.ts';
import type { ConsoleSessionRecord, NewConsoleSession } from './types.ts';
import { CERTIFICATE_KIND, DEVICE_KIND, RESERVED_KINDS, SESSION_KILL_KIND, TRUST_OVERRIDE_LEVELS, USER_KIND } from './types.ts';
import type {
  AccessEventQuery,
  KubeEventQuery,
  ActorOptions,
  ApiTokenRecord,
  ApiTokenScope,
  AppendResult,
  ApplyItem,
  AuditEvent,
  AuditEventQuery,
  CertificateRecord,
  Change,
  ChangeObject,
  DeleteObjectResult,
  DeviceMdmState,
  DevicePatch,
  DeviceRecord,
  DeviceTrustOverride,
  IssuedToken,
  JoinTokenKind,
  JoinTokenRecord,
  KillSessionResult,
  LoginFailureOptions,
  LoginFailureResult,
  NewApiToken,
  NewAuditEvent,
  NewCertificate,
  NewDevice,
  NewJoinToken,
  NewSessionKill,
  NewTrustOverride,
  NewUser,
  ObjectInput,
  ObjectMetadata,
  Page,
  PeerReportRecord,
  PostureRecord,
  ReportingPeerKind,
  PutObjectResult,
  RevokeCertificateOptions,
  SessionKillRecord,
  Snapshot,
  Store,
  StoredObject,
  UserCredentials,
  UserPatch,
  UserRecord,
  WriteOptions,
} from './types.ts';
import { MonotonicIds, canonicalJson, decodeCursor, encodeCursor, fromJson, fromJsonOrNull, isoTime, pageLimit, storable, storableString, toJson } from './values.ts';

const JOIN_TOKEN_KINDS: readonly string[] = ['access-tier', 'connector', 'kube-proxy'];
const API_TOKEN_SCOPES: readonly string[] = ['admin', 'viewer'];
const DEFAULT_JOIN_TTL_MS = 60 * 60 * 1000;
const MAX_JOIN_TTL_MS = 24 * 60 * 60 * 1000;
const LAST_USED_RESOLUTION_MS = 60 * 1000;
/** Rows per INSERT of access events: 10 parameters each stays far below both databases' limits. */
const EVENT_CHUNK = 500;
const NEVER = '9999-12-31T23:59:59.999Z';
const REPORTING_PEER_KINDS: readonly string[] = ['access-tier', 'connector'];
const DEFAULT_SESSION_KILL_TTL_MS = 10 * 60 * 1000;

export interface KyselyStoreOptions {
  backend: Backend;
  logger: Logger;
  clock: Clock;
}

/** One write transaction: its time, and helpers that append to the change feed and the audit log. */
interface Tx {
  trx: Transaction<Database>;
  at: string;
  /**
   * A change to a record the config stream carries: its `changes` row (a put of `after`, or a
   * delete when `after` is null) and its audit row. Returns the revision.
   */
  record(actor: string, action: string, kind: string, name: string, version: number, before: ChangeObject | null, after: ChangeObject | null): Promise<number>;
  audit(actor: string, action: string, kind: string, name: string, before: unknown, after: unknown): Promise<void>;
  /** The highest revision this transaction wrote. */
  revision: number | undefined;
}

interface Watcher {
  listener: (revision: number) => void;
  last: number;
}

export class KyselyStore implements Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly #backend: Backend;
  readonly #db: Kysely<Database>;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #watchers = new Set<Watcher>();
  readonly #ids = new MonotonicIds();
  #source: RevisionSource | undefined;
  #stopping: Promise<void> | undefined;
  #closed = false;

  constructor(options: KyselyStoreOptions) {
    this.#backend = options.backend;
    this.#db = options.backend.db;
    this.dialect = options.backend.dialect;
    this.#logger = options.logger;
    this.#clock = options.clock;
  }

  #now(): string {
    return new Date(this.#clock.now()).toISOString();
  }

  // --- transactions ------------------------------------------------------------------------------

  /** A write transaction with audit; `feed` also serialises it with other change-feed writers. */
  async #write<T>(feed: boolean, fn: (tx: Tx) => Promise<T>): Promise<T> {
    this.#assertOpen();
    let revision: number | undefined;
    const result = await this.#db.transaction().execute(async (trx) => {
      if (feed) await this.#backend.lockChangeFeed(trx);
      const at = this.#now();
      const tx: Tx = {
        trx,
        at,
        revision: undefined,
        record: async (actor, action, kind, name, version, before, after) => {
          const row = await trx
            .insertInto('changes')
            .values({ kind, name, op: after === null ? 'delete' : 'put', version, object: after === null ? null : toJson(after), at, actor: storableString(actor) })
            .returning('revision')
            .executeTakeFirstOrThrow();
          tx.revision = row.revision;
          await tx.audit(actor, action, kind, name, before, after);
          return row.revision;
        },
        audit: async (actor, action, kind, name, before, after) => {
          await trx
            .insertInto('audit_events')
            .values({ id: this.#ids.next(this.#clock.now()), at, actor: storableString(actor), action, kind, name, before: before === null || before === undefined ? null : toJson(before), after: after === null || after === undefined ? null : toJson(after) })
            .execute();
        },
      };
      const value = await fn(tx);
      if (tx.revision !== undefined) await this.#backend.announceInTransaction(trx, tx.revision);
      revision = tx.revision;
      return value;
    });
    if (revision !== undefined) this.#announce(revision);
    return result;
  }

  /** A change-feed write on behalf of `options.actor`, given the version it expects to change. */
  async #writeVersioned<T>(options: WriteOptions, fn: (tx: Tx, expected: number | undefined) => Promise<T>): Promise<T> {
    checkActor(options);
    const expected = checkExpectedVersion(options.expectedVersion);
    return await this.#write(true, (tx) => fn(tx, expected));
  }

  #assertOpen(): void {
    if (this.#closed) throw new CausewayError('STORE_CLOSED', 'the store was used after close(); this is a bug');
  }

  // --- spec objects ------------------------------------------------------------------------------

  async getObject(kind: string, name: string): Promise<StoredObject | undefined> {
    this.#assertOpen();
    const row = await this.#db.selectFrom('objects').selectAll().where('kind', '=', kind).where('name', '=', name).executeTakeFirst();
    return row === undefined ? undefined : objectFromRow(row);
  }

  async listObjects(kind?: string): Promise<StoredObject[]> {
    this.#assertOpen();
    let query = this.#db.selectFrom('objects').selectAll();
    if (kind !== undefined) query = query.where('kind', '=', kind);
    const rows = await query.orderBy('kind').orderBy('name').execute();
    return rows.map(objectFromRow);
  }

  async putObject(input: ObjectInput, options: WriteOptions): Promise<PutObjectResult> {
    return await this.#writeVersioned(options, (tx, expected) => this.#put(tx, input, expected, options.actor));
  }

  async applyObjects(items: ApplyItem[], options: ActorOptions): Promise<PutObjectResult[]> {
    checkActor(options);
    const checked = items.map((item) => ({ item, expected: checkExpectedVersion(item.expectedVersion) }));
    return await this.#write(true, async (tx) => {
      const results: PutObjectResult[] = [];
      for (const { item, expected } of checked) results.push(await this.#put(tx, item, expected, options.actor));
      return results;
    });
  }

  async #put(tx: Tx, input: ObjectInput, expected: number | undefined, actor: string): Promise<PutObjectResult> {
    const { kind, name } = checkObjectKey(input.kind, input.name);
    const metadata = jsonValue(input.metadata ?? {}, 'metadata') as ObjectMetadata;
    const spec = jsonValue(input.spec, 'spec');
    const row = await tx.trx.selectFrom('objects').selectAll().where('kind', '=', kind).where('name', '=', name).executeTakeFirst();
    checkVersion(`${kind} ${name}`, row?.version, expected);
    if (row !== undefined) {
      const before = objectFromRow(row);
      if (canonicalJson(before.metadata) === canonicalJson(metadata) && canonicalJson(before.spec) === canonicalJson(spec)) {
        return { object: before, result: 'unchanged', revision: undefined };
      }
      const after: StoredObject = { ...before, metadata, spec, version: row.version + 1, updatedAt: tx.at, updatedBy: actor };
      const updated = await tx.trx
        .updateTable('objects')
        .set({ metadata: toJson(metadata), spec: toJson(spec), version: after.version, updated_at: tx.at, updated_by: storableString(actor) })
        .where('kind', '=', kind)
        .where('name', '=', name)
        .where('version', '=', row.version)
        .executeTakeFirst();
      if (updated.numUpdatedRows !== 1n) throw versionConflict(`${kind} ${name}`, undefined, expected ?? row.version);
      const revision = await tx.record(actor, 'update', kind, name, after.version, before, after);
      return { object: after, result: 'changed', revision };
    }
    const object: StoredObject = { kind, name, metadata, spec, version: 1, createdAt: tx.at, createdBy: actor, updatedAt: tx.at, updatedBy: actor };
    await tx.trx
      .insertInto('objects')
      .values({ kind, name, metadata: toJson(metadata), spec: toJson(spec), version: 1, created_at: tx.at, created_by: storableString(actor), updated_at: tx.at, updated_by: storableString(actor) })
      .execute();
    const revision = await tx.record(actor, 'create', kind, name, 1, null, object);
    return { object, result: 'created', revision };
  }

  async deleteObject(kind: string, name: string, options: WriteOptions): Promise<DeleteObjectResult> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await tx.trx.selectFrom('objects').selectAll().where('kind', '=', kind).where('name', '=', name).executeTakeFirst();
      if (row === undefined) throw new UserError('NOT_FOUND', `${kind} ${name} does not exist`);
      checkVersion(`${kind} ${name}`, row.version, expected);
      const before = objectFromRow(row);
      await tx.trx.deleteFrom('objects').where('kind', '=', kind).where('name', '=', name).execute();
      const revision = await tx.record(options.actor, 'delete', kind, name, row.version, before, null);
      return { object: before, revision };
    });
  }

  // --- change feed -------------------------------------------------------------------------------

  async currentRevision(): Promise<number> {
    this.#assertOpen();
    return maxRevision(this.#db);
  }

  async changesSince(revision: number, limit = 1000): Promise<Change[]> {
    this.#assertOpen();
    if (!Number.isSafeInteger(revision) || revision < 0) throw new UserError('INVALID_ARGUMENT', 'revision must be a whole number of at least 0');
    if (!Number.isInteger(limit) || limit < 1) throw new UserError('INVALID_ARGUMENT', 'limit must be a whole number of at least 1');
    const rows = await this.#db
      .selectFrom('changes')
      .selectAll()
      .where('revision', '>', revision)
      .orderBy('revision')
      .limit(Math.min(limit, 10_000))
      .execute();
    return rows.map((row) => ({
      revision: row.revision,
      kind: row.kind,
      name: row.name,
      op: row.op,
      version: row.version,
      object: fromJsonOrNull<ChangeObject>(row.object),
      at: row.at,
      actor: row.actor,
    }));
  }

  async snapshot(): Promise<Snapshot> {
    this.#assertOpen();
    const now = this.#now();
    return this.#db
      .transaction()
      .setIsolationLevel('repeatable read')
      .setAccessMode('read only')
      .execute(async (trx) => {
        const revision = await maxRevision(trx);
        const objects = (await trx.selectFrom('objects').selectAll().orderBy('kind').orderBy('name').execute()).map(objectFromRow);
        const users = (await trx.selectFrom('users').selectAll().orderBy('id').execute()).map(userFromRow);
        const devices = (await trx.selectFrom('devices').selectAll().orderBy('id').execute()).map(deviceFromRow);
        const revoked = await trx.selectFrom('certificates').select('serial').where('revoked_at', 'is not', null).where('not_after', '>', now).orderBy('serial').execute();
        return { revision, objects, users, devices, revokedSerials: revoked.map((r) => r.serial) };
      });
  }

  watch(listener: (revision: number) => void): () => void {
    this.#assertOpen();
    const watcher: Watcher = { listener, last: -1 };
    this.#watchers.add(watcher);
    if (this.#source === undefined) {
      this.#source = this.#backend.listen(
        (revision) => this.#announce(revision),
        () => this.#poll(),
      );
    }
    void this.#poll();
    return () => {
      if (!this.#watchers.delete(watcher) || this.#watchers.size > 0 || this.#source === undefined) return;
      const source = this.#source;
      this.#source = undefined;
      this.#stopping = source.stop().catch((err: unknown) => this.#logger.warn({ err }, 'stopping the change watcher failed'));
    };
  }

  async #poll(): Promise<void> {
    if (this.#closed || this.#watchers.size === 0) return;
    try {
      this.#announce(await maxRevision(this.#db));
    } catch (err) {
      if (!this.#closed) this.#logger.warn({ err }, 'reading the current config revision failed; will retry');
    }
  }

  #announce(revision: number): void {
    for (const watcher of this.#watchers) {
      if (revision <= watcher.last) continue;
      watcher.last = revision;
      try {
        watcher.listener(revision);
      } catch (err) {
        this.#logger.error({ err }, 'a change watcher threw');
      }
    }
  }

  // --- users -------------------------------------------------------------------------------------

  async createUser(user: NewUser, options: ActorOptions): Promise<UserRecord> {
    checkActor(options);
    const name = requiredText(user.name, 'name');
    const id = user.id === undefined ? randomUUID() : requiredText(user.id, 'id');
    const groups = stringList(user.groups ?? [], 'groups');
    return await this.#write(true, async (tx) => {
      const clash = await tx.trx.selectFrom('users').select(['id', 'name']).where((eb) => eb.or([eb('id', '=', id), eb('name', '=', name)])).executeTakeFirst();
      if (clash !== undefined) throw new UserError('ALREADY_EXISTS', clash.name === name ? `a user named ${name} already exists` : `a user with id ${id} already exists`);
      const row: Selectable<UsersTable> = {
        id,
        name,
        email: optionalText(user.email, 'email'),
        groups: toJson(groups),
        disabled: user.disabled ?? false,
        password_hash: user.passwordHash ?? null,
        source: user.source === undefined ? 'local' : userSource(user.source),
        totp_secret: sealedSecret(user.totpSecret),
        failed_logins: 0,
        locked_until: null,
        last_login_at: null,
        version: 1,
        created_at: tx.at,
        created_by: storableString(options.actor),
        updated_at: tx.at,
        updated_by: storableString(options.actor),
      };
      await tx.trx.insertInto('users').values(row).execute();
      const record = userFromRow(row);
      await tx.record(options.actor, 'create', USER_KIND, id, 1, null, record);
      return record;
    });
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    this.#assertOpen();
    const row = await this.#db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : userFromRow(row);
  }

  async getUserByName(name: string): Promise<UserRecord | undefined> {
    return (await this.getUserCredentials(name))?.user;
  }

  async getUserCredentials(name: string): Promise<UserCredentials | undefined> {
    this.#assertOpen();
    const row = await this.#db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
    return row === undefined ? undefined : { user: userFromRow(row), passwordHash: row.password_hash, totpSecret: row.totp_secret, failedLogins: Number(row.failed_logins) };
  }

  async listUsers(): Promise<UserRecord[]> {
    this.#assertOpen();
    return (await this.#db.selectFrom('users').selectAll().orderBy('name').execute()).map(userFromRow);
  }

  async updateUser(id: string, patch: UserPatch, options: WriteOptions): Promise<UserRecord> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await userToChange(tx.trx, id, expected);
      const next: Selectable<UsersTable> = {
        ...row,
        name: patch.name === undefined ? row.name : requiredText(patch.name, 'name'),
        email: patch.email === undefined ? row.email : optionalText(patch.email, 'email'),
        groups: patch.groups === undefined ? row.groups : toJson(stringList(patch.groups, 'groups')),
        disabled: patch.disabled === undefined ? asBool(row.disabled) : patch.disabled,
        password_hash: patch.passwordHash === undefined ? row.password_hash : patch.passwordHash,
        source: patch.source === undefined ? row.source : userSource(patch.source),
        totp_secret: patch.totpSecret === undefined ? row.totp_secret : sealedSecret(patch.totpSecret),
      };
      const unchanged =
        next.name === row.name &&
        next.email === row.email &&
        canonicalJson(fromJson(next.groups)) === canonicalJson(fromJson(row.groups)) &&
        next.disabled === asBool(row.disabled) &&
        next.password_hash === row.password_hash &&
        next.source === row.source &&
        next.totp_secret === row.totp_secret;
      if (unchanged) return userFromRow(row);
      if (next.name !== row.name) {
        const clash = await tx.trx.selectFrom('users').select('id').where('name', '=', next.name).executeTakeFirst();
        if (clash !== undefined) throw new UserError('ALREADY_EXISTS', `a user named ${next.name} already exists`);
      }
      next.version = row.version + 1;
      next.updated_at = tx.at;
      next.updated_by = storableString(options.actor);
      // The login bookkeeping is left out: recordLoginFailure changes it without a version bump, so
      // writing back what this transaction read could undo a concurrent failure's count.
      const { id: _id, created_at: _ca, created_by: _cb, failed_logins: _fl, locked_until: _lu, last_login_at: _ll, ...changes } = next;
      const updated = await tx.trx.updateTable('users').set(changes).where('id', '=', id).where('version', '=', row.version).executeTakeFirst();
      if (updated.numUpdatedRows !== 1n) throw versionConflict(`user ${row.name}`, undefined, row.version);
      const before = userFromRow(row);
      const after = userFromRow(next);
      await tx.record(options.actor, 'update', USER_KIND, id, after.version, before, after);
      return after;
    });
  }

  async deleteUser(id: string, options: WriteOptions): Promise<UserRecord> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await userToChange(tx.trx, id, expected);
      const devices = await tx.trx.selectFrom('devices').selectAll().where('user_id', '=', id).orderBy('id').execute();
      for (const device of devices) {
        await tx.trx.deleteFrom('devices').where('id', '=', device.id).execute();
        await tx.record(options.actor, 'delete', DEVICE_KIND, device.id, device.version, deviceFromRow(device), null);
      }
      await tx.trx.deleteFrom('users').where('id', '=', id).execute();
      const before = userFromRow(row);
      await tx.record(options.actor, 'delete', USER_KIND, id, row.version, before, null);
      return before;
    });
  }

  async recordLoginFailure(id: string, options: LoginFailureOptions): Promise<LoginFailureResult> {
    this.#assertOpen();
    const at = isoTime(options.at, 'at');
    if (!Number.isSafeInteger(options.maxFailures) || options.maxFailures < 1) throw new UserError('INVALID_ARGUMENT', 'maxFailures must be a whole number of at least 1');
    if (!Number.isFinite(options.lockMs) || options.lockMs <= 0) throw new UserError('INVALID_ARGUMENT', 'lockMs must be a positive number of milliseconds');
    const until = new Date(Date.parse(at) + options.lockMs).toISOString();
    // One UPDATE reads and writes the count, so concurrent failures (on any replica) each count: the
    // database serialises the row's updates and each sees the count the previous one wrote.
    const lapsed = sql<boolean>`(locked_until is not null and locked_until <= ${at})`;
    const count = sql<number>`(case when ${lapsed} then 1 else failed_logins + 1 end)`;
    const row = await this.#db
      .updateTable('users')
      .set({
        failed_logins: count,
        locked_until: sql<string | null>`(case when ${count} >= ${options.maxFailures} then ${until} when ${lapsed} then null else locked_until end)`,
      })
      .where('id', '=', id)
      .returning(['failed_logins', 'locked_until'])
      .executeTakeFirst();
    if (row === undefined) throw new UserError('NOT_FOUND', `user ${id} does not exist`);
    return { failedLogins: Number(row.failed_logins), lockedUntil: row.locked_until };
  }

  async recordLoginSuccess(id: string, at: string): Promise<void> {
    this.#assertOpen();
    const when = isoTime(at, 'at');
    const result = await this.#db.updateTable('users').set({ failed_logins: 0, locked_until: null, last_login_at: when }).where('id', '=', id).executeTakeFirst();
    if (result.numUpdatedRows !== 1n) throw new UserError('NOT_FOUND', `user ${id} does not exist`);
  }

  async unlockUser(id: string, options: WriteOptions): Promise<UserRecord> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await userToChange(tx.trx, id, expected);
      if (Number(row.failed_logins) === 0 && row.locked_until === null) return userFromRow(row);
      const version = row.version + 1;
      const actor = storableString(options.actor);
      const updated = await tx.trx
        .updateTable('users')
        .set({ failed_logins: 0, locked_until: null, version, updated_at: tx.at, updated_by: actor })
        .where('id', '=', id)
        .where('version', '=', row.version)
        .executeTakeFirst();
      if (updated.numUpdatedRows !== 1n) throw versionConflict(`user ${row.name}`, undefined, row.version);
      const before = userFromRow(row);
      const after = userFromRow({ ...row, failed_logins: 0, locked_until: null, version, updated_at: tx.at, updated_by: actor });
      await tx.record(options.actor, 'unlock', USER_KIND, id, version, before, after);
      return after;
    });
  }

  // --- devices -----------------------------------------------------------------------------------

  async registerDevice(device: NewDevice, options: ActorOptions): Promise<DeviceRecord> {
    checkActor(options);
    const id = device.id === undefined ? randomUUID() : requiredText(device.id, 'id');
    return await this.#write(true, async (tx) => {
      const user = await tx.trx.selectFrom('users').select('id').where('id', '=', device.userId).executeTakeFirst();
      if (user === undefined) throw new UserError('NOT_FOUND', `user ${device.userId} does not exist`);
      const clash = await tx.trx.selectFrom('devices').select('id').where('id', '=', id).executeTakeFirst();
      if (clash !== undefined) throw new UserError('ALREADY_EXISTS', `a device with id ${id} already exists`);
      const row: Selectable<DevicesTable> = {
        id,
        user_id: device.userId,
        platform: requiredText(device.platform, 'platform'),
        os_version: optionalText(device.osVersion, 'osVersion'),
        serial: optionalText(device.serial, 'serial'),
        hostname: optionalText(device.hostname, 'hostname'),
        ownership: requiredText(device.ownership ?? 'other', 'ownership'),
        public_key: optionalText(device.publicKey, 'publicKey'),
        registered_at: tx.at,
        registered_by: storableString(options.actor),
        banned: false,
        last_seen: null,
        trust: device.trust === undefined || device.trust === null ? null : toJson(jsonValue(device.trust, 'trust')),
        version: 1,
        updated_at: tx.at,
        updated_by: storableString(options.actor),
        posture: null,
        posture_at: null,
        mdm: null,
        trust_overrides: null,
      };
      await tx.trx.insertInto('devices').values(row).execute();
      const record = deviceFromRow(row);
      await tx.record(options.actor, 'create', DEVICE_KIND, id, 1, null, record);
      return record;
    });
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    this.#assertOpen();
    const row = await this.#db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : deviceFromRow(row);
  }

  async listDevices(filter: { userId?: string } = {}): Promise<DeviceRecord[]> {
    this.#assertOpen();
    let query = this.#db.selectFrom('devices').selectAll();
    if (filter.userId !== undefined) query = query.where('user_id', '=', filter.userId);
    return (await query.orderBy('id').execute()).map(deviceFromRow);
  }

  async updateDevice(id: string, patch: DevicePatch, options: WriteOptions): Promise<DeviceRecord> {
    return await this.#updateDevice(id, patch, options, 'update');
  }

  async banDevice(id: string, options: WriteOptions): Promise<DeviceRecord> {
    return await this.#updateDevice(id, { banned: true }, options, 'ban');
  }

  async unbanDevice(id: string, options: WriteOptions): Promise<DeviceRecord> {
    return await this.#updateDevice(id, { banned: false }, options, 'unban');
  }

  async #updateDevice(id: string, patch: DevicePatch, options: WriteOptions, action: string): Promise<DeviceRecord> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await deviceToChange(tx.trx, id, expected);
      const set = {
        os_version: patch.osVersion === undefined ? row.os_version : optionalText(patch.osVersion, 'osVersion'),
        serial: patch.serial === undefined ? row.serial : optionalText(patch.serial, 'serial'),
        hostname: patch.hostname === undefined ? row.hostname : optionalText(patch.hostname, 'hostname'),
        ownership: patch.ownership === undefined ? row.ownership : requiredText(patch.ownership, 'ownership'),
        public_key: patch.publicKey === undefined ? row.public_key : optionalText(patch.publicKey, 'publicKey'),
        banned: patch.banned === undefined ? asBool(row.banned) : patch.banned,
        trust: patch.trust === undefined ? row.trust : patch.trust === null ? null : toJson(jsonValue(patch.trust, 'trust')),
      };
      const sameTrust = (set.trust === null ? null : canonicalJson(fromJson(set.trust))) === (row.trust === null ? null : canonicalJson(fromJson(row.trust)));
      const unchanged = set.os_version === row.os_version && set.serial === row.serial && set.hostname === row.hostname && set.ownership === row.ownership && set.public_key === row.public_key && set.banned === asBool(row.banned) && sameTrust;
      if (unchanged) return deviceFromRow(row);
      const version = row.version + 1;
      const updated = await tx.trx
        .updateTable('devices')
        .set({ ...set, version, updated_at: tx.at, updated_by: storableString(options.actor) })
        .where('id', '=', id)
        .where('version', '=', row.version)
        .executeTakeFirst();
      if (updated.numUpdatedRows !== 1n) throw versionConflict(`device ${id}`, undefined, row.version);
      const before = deviceFromRow(row);
      const after = deviceFromRow({ ...row, ...set, version, updated_at: tx.at, updated_by: storableString(options.actor) });
      await tx.record(options.actor, action, DEVICE_KIND, id, version, before, after);
      return after;
    });
  }

  async unregisterDevice(id: string, options: WriteOptions): Promise<DeviceRecord> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await deviceToChange(tx.trx, id, expected);
      await tx.trx.deleteFrom('devices').where('id', '=', id).execute();
      const before = deviceFromRow(row);
      await tx.record(options.actor, 'delete', DEVICE_KIND, id, row.version, before, null);
      return before;
    });
  }

  async touchDevice(id: string, at?: string): Promise<void> {
    this.#assertOpen();
    const when = at === undefined ? this.#now() : isoTime(at, 'at');
    const result = await this.#db.updateTable('devices').set({ last_seen: when }).where('id', '=', id).executeTakeFirst();
    if (result.numUpdatedRows !== 1n) throw new UserError('NOT_FOUND', `device ${id} does not exist`);
  }

  async recordPosture(id: string, posture: PostureRecord): Promise<void> {
    this.#assertOpen();
    if (posture === null || typeof posture !== 'object') throw new UserError('INVALID_ARGUMENT', 'a posture record is { factors, at }');
    const factors = posture.factors;
    if (factors === null || typeof factors !== 'object' || Array.isArray(factors)) throw new UserError('INVALID_ARGUMENT', 'posture factors must be an object');
    const at = isoTime(posture.at, 'at');
    const result = await this.#db.updateTable('devices').set({ posture: toJson(jsonValue(factors, 'factors')), posture_at: at }).where('id', '=', id).executeTakeFirst();
    if (result.numUpdatedRows !== 1n) throw new UserError('NOT_FOUND', `device ${id} does not exist`);
  }

  async recordMdmState(id: string, manager: string, state: DeviceMdmState | null): Promise<void> {
    this.#assertOpen();
    const name = requiredText(manager, 'manager');
    const value = state === null ? null : mdmState(state);
    // Read, change one manager's entry, write only if nobody wrote in between (compare-and-set on the
    // JSON): managers syncing at once never lose each other's states, on either database.
    for (let attempt = 0; attempt < 20; attempt++) {
      const row = await this.#db.selectFrom('devices').select('mdm').where('id', '=', id).executeTakeFirst();
      if (row === undefined) throw new UserError('NOT_FOUND', `device ${id} does not exist`);
      const current = row.mdm === null ? {} : fromJson<unknown>(row.mdm);
      const map: Record<string, unknown> = current !== null && typeof current === 'object' && !Array.isArray(current) ? { ...(current as Record<string, unknown>) } : {};
      if (value === null) {
        if (!Object.hasOwn(map, name)) return;
        delete map[name];
      } else {
        if (Object.hasOwn(map, name) && canonicalJson(map[name]) === canonicalJson(value)) return;
        map[name] = value;
      }
      let query = this.#db.updateTable('devices').set({ mdm: toJson(map) }).where('id', '=', id);
      query = row.mdm === null ? query.where('mdm', 'is', null) : query.where('mdm', '=', row.mdm);
      const result = await query.executeTakeFirst();
      if (result.numUpdatedRows === 1n) return;
    }
    throw new CausewayError('STORE_CONTENDED', `device ${id}'s device-manager state kept changing while it was written; try again`);
  }

  async setTrustOverride(id: string, override: NewTrustOverride, options: WriteOptions): Promise<DeviceRecord> {
    const checked = trustOverride(override);
    return await this.#changeDevice(id, options, 'trust-override', (row, tx) => {
      const current = overridesOf(row).filter((o) => !(o !== null && typeof o === 'object' && (o as { source?: unknown }).source === checked.source));
      const entry: DeviceTrustOverride = { ...checked, setBy: storableString(options.actor), setAt: tx.at };
      return { trust_overrides: toJson([...current, entry]) };
    });
  }

  async clearTrustOverride(id: string, source: string, options: WriteOptions): Promise<DeviceRecord> {
    const name = requiredText(source, 'source');
    return await this.#changeDevice(id, options, 'trust-override-clear', (row) => {
      const current = overridesOf(row);
      const kept = current.filter((o) => !(o !== null && typeof o === 'object' && (o as { source?: unknown }).source === name));
      return kept.length === current.length ? undefined : { trust_overrides: kept.length === 0 ? null : toJson(kept) };
    });
  }

  /** A versioned device write of some columns; `change` returns undefined when there is nothing to write. */
  async #changeDevice(
    id: string,
    options: WriteOptions,
    action: string,
    change: (row: Selectable<DevicesTable>, tx: Tx) => Partial<Pick<Selectable<DevicesTable>, 'trust_overrides'>> | undefined,
  ): Promise<DeviceRecord> {
    return await this.#writeVersioned(options, async (tx, expected) => {
      const row = await deviceToChange(tx.trx, id, expected);
      const set = change(row, tx);
      if (set === undefined) return deviceFromRow(row);
      const version = row.version + 1;
      const actor = storableString(options.actor);
      const updated = await tx.trx
        .updateTable('devices')
        .set({ ...set, version, updated_at: tx.at, updated_by: actor })
        .where('id', '=', id)
        .where('version', '=', row.version)
        .executeTakeFirst();
      if (updated.numUpdatedRows !== 1n) throw versionConflict(`device ${id}`, undefined, row.version);
      const before = deviceFromRow(row);
      const after = deviceFromRow({ ...row, ...set, version, updated_at: tx.at, updated_by: actor });
      await tx.record(options.actor, action, DEVICE_KIND, id, version, before, after);
      return after;
    });
  }

  async findDevicesBySerial(serial: string): Promise<DeviceRecord[]> {
    this.#assertOpen();
    const wanted = requiredText(serial, 'serial').toLowerCase();
    const rows = await this.#db
      .selectFrom('devices')
      .selectAll()
      .where(sql<string>`lower(serial)`, '=', wanted)
      .orderBy('id')
      .execute();
    return rows.map(deviceFromRow);
  }

  // --- API tokens --------------------------------------------------------------------------------

  async createApiToken(token: NewApiToken, options: ActorOptions): Promise<IssuedToken<ApiTokenRecord>> {
    checkActor(options);
    const name = requiredText(token.name, 'name');
    if (!API_TOKEN_SCOPES.includes(token.scope)) throw new UserError('INVALID_ARGUMENT', `scope must be one of ${API_TOKEN_SCOPES.join(', ')}`);
    const expiresAt = token.expiresAt === undefined || token.expiresAt === null ? null : isoTime(token.expiresAt, 'expiresAt');
    const secret = newSecret('cwat');
    return await this.#write(false, async (tx) => {
      const row: Selectable<ApiTokensTable> = { id: secret.id, name, scope: token.scope, token_hash: secret.hash, created_at: tx.at, created_by: storableString(options.actor), expires_at: expiresAt, revoked_at: null, last_used_at: null };
      await tx.trx.insertInto('api_tokens').values(row).execute();
      const record = apiTokenFromRow(row);
      await tx.audit(options.actor, 'create', 'ApiToken', record.id, null, record);
      return { token: secret.token, record };
    });
  }

  async listApiTokens(): Promise<ApiTokenRecord[]> {
    this.#assertOpen();
    return (await this.#db.selectFrom('api_tokens').selectAll().orderBy('created_at').orderBy('id').execute()).map(apiTokenFromRow);
  }

  async verifyApiToken(secret: string): Promise<ApiTokenRecord | undefined> {
    this.#assertOpen();
    const id = typeof secret === 'string' ? tokenId(secret, 'cwat') : undefined;
    const row = id === undefined ? undefined : await this.#db.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    // Compare against something even when there is no record, so timing says little about ids.
    const matches = tokenMatches(typeof secret === 'string' ? secret : '', row?.token_hash ?? hashToken('absent'));
    if (row === undefined || !matches) return undefined;
    const nowMs = this.#clock.now();
    const now = new Date(nowMs).toISOString();
    if (row.revoked_at !== null) return undefined;
    if (row.expires_at !== null && row.expires_at <= now) return undefined;
    const record = apiTokenFromRow(row);
    if (row.last_used_at === null || nowMs - Date.parse(row.last_used_at) >= LAST_USED_RESOLUTION_MS) {
      try {
        await this.#db.updateTable('api_tokens').set({ last_used_at: now }).where('id', '=', row.id).execute();
        record.lastUsedAt = now;
      } catch (err) {
        this.#logger.warn({ err, tokenId: row.id }, 'recording when an API token was last used failed');
      }
    }
    return record;
  }

  async revokeApiToken(id: string, options: ActorOptions): Promise<ApiTokenRecord> {
    checkActor(options);
    return await this.#write(false, async (tx) => {
      const row = await tx.trx.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
      if (row === undefined) throw new UserError('NOT_FOUND', `API token ${id} does not exist`);
      if (row.revoked_at !== null) return apiTokenFromRow(row);
      await tx.trx.updateTable('api_tokens').set({ revoked_at: tx.at }).where('id', '=', id).execute();
      const before = apiTokenFromRow(row);
      const after = { ...before, revokedAt: tx.at };
      await tx.audit(options.actor, 'revoke', 'ApiToken', id, before, after);
      return after;
    });
  }

  // --- console sessions --------------------------------------------------------------------------

  async createConsoleSession(session: NewConsoleSession): Promise<IssuedToken<ConsoleSessionRecord>> {
    this.#assertOpen();
    const userId = requiredText(session.userId, 'userId');
    if (typeof session.ttlMs !== 'number' || !Number.isFinite(session.ttlMs) || session.ttlMs <= 0) throw new UserError('INVALID_ARGUMENT', 'ttlMs must be a positive number of milliseconds');
    const nowMs = this.#clock.now();
    const now = new Date(nowMs).toISOString();
    const secret = newConsoleSecret();
    const row: Selectable<ConsoleSessionsTable> = { token_hash: secret.hash, user_id: userId, created_at: now, expires_at: new Date(nowMs + session.ttlMs).toISOString(), last_seen_at: now };
    await this.#db.insertInto('console_sessions').values(row).execute();
    return { token: secret.token, record: consoleSessionFromRow(row) };
  }

  async useConsoleSession(secret: string, options: { idleMs: number }): Promise<ConsoleSessionRecord | undefined> {
    this.#assertOpen();
    const hash = consoleSecretHash(secret);
    if (hash === undefined) return undefined;
    const row = await this.#db.selectFrom('console_sessions').selectAll().where('token_hash', '=', hash).executeTakeFirst();
    if (row === undefined) return undefined;
    const nowMs = this.#clock.now();
    const lastSeenMs = Date.parse(row.last_seen_at);
    if (Date.parse(row.expires_at) <= nowMs || !(lastSeenMs + options.idleMs > nowMs)) return undefined;
    if (nowMs - lastSeenMs >= LAST_USED_RESOLUTION_MS) {
      const now = new Date(nowMs).toISOString();
      await this.#db.updateTable('console_sessions').set({ last_seen_at: now }).where('token_hash', '=', hash).execute();
      row.last_seen_at = now;
    }
    return consoleSessionFromRow(row);
  }

  async deleteConsoleSession(secret: string): Promise<boolean> {
    this.#assertOpen();
    const hash = consoleSecretHash(secret);
    if (hash === undefined) return false;
    const result = await this.#db.deleteFrom('console_sessions').where('token_hash', '=', hash).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async deleteConsoleSessionsOfUser(userId: string): Promise<number> {
    this.#assertOpen();
    const result = await this.#db.deleteFrom('console_sessions').where('user_id', '=', requiredText(userId, 'userId')).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async pruneConsoleSessions(now: string, idleMs: number): Promise<number> {
    this.#assertOpen();
    const at = isoTime(now, 'now');
    const idleBefore = new Date(Date.parse(at) - idleMs).toISOString();
    const result = await this.#db.deleteFrom('console_sessions').where((eb) => eb.or([eb('expires_at', '<=', at), eb('last_seen_at', '<=', idleBefore)])).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  // --- join tokens -------------------------------------------------------------------------------

  async createJoinToken(token: NewJoinToken, options: ActorOptions): Promise<IssuedToken<JoinTokenRecord>> {
    checkActor(options);
    if (!JOIN_TOKEN_KINDS.includes(token.kind)) throw new UserError('INVALID_ARGUMENT', `kind must be one of ${JOIN_TOKEN_KINDS.join(', ')}`);
    const name = requiredText(token.name, 'name');
    const ttlMs = token.ttlMs ?? DEFAULT_JOIN_TTL_MS;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_JOIN_TTL_MS) throw new UserError('INVALID_ARGUMENT', 'a join token lives between 1 ms and 24 h (DT-06: join tokens are short-lived)');
    const secret = newSecret('cwjt');
    return await this.#write(false, async (tx) => {
      const expiresAt = new Date(Date.parse(tx.at) + ttlMs).toISOString();
      const row: Selectable<JoinTokensTable> = { id: secret.id, kind: token.kind, name, token_hash: secret.hash, created_at: tx.at, created_by: storableString(options.actor), expires_at: expiresAt, used_at: null };
      await tx.trx.insertInto('join_tokens').values(row).execute();
      const record = joinTokenFromRow(row);
      await tx.audit(options.actor, 'create', 'JoinToken', record.id, null, record);
      return { token: secret.token, record };
    });
  }

  async listJoinTokens(): Promise<JoinTokenRecord[]> {
    this.#assertOpen();
    return (await this.#db.selectFrom('join_tokens').selectAll().orderBy('created_at').orderBy('id').execute()).map(joinTokenFromRow);
  }

  async consumeJoinToken(secret: string, kind: JoinTokenKind): Promise<JoinTokenRecord> {
    const invalid = (): UserError => new UserError('JOIN_TOKEN_INVALID', 'the join token is not valid (mistyped, expired, already used or meant for another part); create a new one with `causeway join-token create`');
    const id = typeof secret === 'string' ? tokenId(secret, 'cwjt') : undefined;
    if (id === undefined) throw invalid();
    return await this.#write(false, async (tx) => {
      const row = await tx.trx.selectFrom('join_tokens').selectAll().where('id', '=', id).executeTakeFirst();
      const matches = tokenMatches(secret, row?.token_hash ?? hashToken('absent'));
      if (row === undefined || !matches || row.kind !== kind || row.used_at !== null || row.expires_at <= tx.at) throw invalid();
      // The condition on used_at makes the second of two concurrent uses change nothing.
      const used = await tx.trx.updateTable('join_tokens').set({ used_at: tx.at }).where('id', '=', id).where('used_at', 'is', null).executeTakeFirst();
      if (used.numUpdatedRows !== 1n) throw invalid();
      const before = joinTokenFromRow(row);
      const after = { ...before, usedAt: tx.at };
      await tx.audit(`${row.kind}:${row.name}`, 'use', 'JoinToken', id, before, after);
      return after;
    });
  }

  // --- certificates ------------------------------------------------------------------------------

  async recordCertificate(certificate: NewCertificate): Promise<CertificateRecord> {
    this.#assertOpen();
    const row: Selectable<CertificatesTable> = {
      serial: requiredText(certificate.serial, 'serial'),
      type: requiredText(certificate.type, 'type'),
      identity: storableString(certificate.identity),
      not_after: isoTime(certificate.notAfter, 'notAfter'),
      recorded_at: this.#now(),
      revoked_at: null,
      revoked_by: null,
      reason: null,
    };
    await this.#db.insertInto('certificates').values(row).onConflict((oc) => oc.column('serial').doNothing()).execute();
    return (await this.getCertificate(row.serial)) ?? certificateFromRow(row);
  }

  async getCertificate(serial: string): Promise<CertificateRecord | undefined> {
    this.#assertOpen();
    const row = await this.#db.selectFrom('certificates').selectAll().where('serial', '=', serial).executeTakeFirst();
    return row === undefined ? undefined : certificateFromRow(row);
  }

  async revokeCertificate(serial: string, options: RevokeCertificateOptions): Promise<CertificateRecord> {
    checkActor(options);
    const key = requiredText(serial, 'serial');
    const reason = options.reason === undefined ? null : storableString(options.reason);
    return await this.#write(true, async (tx) => {
      const row = await tx.trx.selectFrom('certificates').selectAll().where('serial', '=', key).executeTakeFirst();
      if (row !== undefined && row.revoked_at !== null) return certificateFromRow(row);
      const actor = storableString(options.actor);
      let next: Selectable<CertificatesTable>;
      if (row === undefined) {
        next = {
          serial: key,
          type: options.type ?? 'unknown',
          identity: storableString(options.identity ?? ''),
          not_after: options.notAfter === undefined ? NEVER : isoTime(options.notAfter, 'notAfter'),
          recorded_at: tx.at,
          revoked_at: tx.at,
          revoked_by: actor,
          reason,
        };
        await tx.trx.insertInto('certificates').values(next).execute();
      } else {
        next = { ...row, revoked_at: tx.at, revoked_by: actor, reason };
        await tx.trx.updateTable('certificates').set({ revoked_at: tx.at, revoked_by: actor, reason }).where('serial', '=', key).execute();
      }
      const after = certificateFromRow(next);
      await tx.record(options.actor, 'revoke', CERTIFICATE_KIND, key, 1, row === undefined ? null : certificateFromRow(row), after);
      return after;
    });
  }

  async listRevokedCertificates(): Promise<CertificateRecord[]> {
    this.#assertOpen();
    const rows = await this.#db.selectFrom('certificates').selectAll().where('revoked_at', 'is not', null).where('not_after', '>', this.#now()).orderBy('serial').execute();
    return rows.map(certificateFromRow);
  }

  // --- settings ----------------------------------------------------------------------------------

  async getSetting(key: string): Promise<string | undefined> {
    this.#assertOpen();
    return (await this.#db.selectFrom('kv').select('value').where('key', '=', key).executeTakeFirst())?.value;
  }

  async putSetting(key: string, value: string, options: ActorOptions): Promise<void> {
    checkActor(options);
    checkSetting(key, value);
    return await this.#write(false, async (tx) => {
      const existed = await tx.trx.selectFrom('kv').select('key').where('key', '=', key).executeTakeFirst();
      await tx.trx
        .insertInto('kv')
        .values({ key, value, updated_at: tx.at })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value, updated_at: tx.at }))
        .execute();
      // Values may be (encrypted) key material: the audit says that it changed, not what to.
      await tx.audit(options.actor, existed === undefined ? 'create' : 'update', 'Setting', key, null, null);
    });
  }

  async putSettingIfAbsent(key: string, value: string, options: ActorOptions): Promise<{ value: string; inserted: boolean }> {
    checkActor(options);
    checkSetting(key, value);
    return await this.#write(false, async (tx) => {
      const result = await tx.trx.insertInto('kv').values({ key, value, updated_at: tx.at }).onConflict((oc) => oc.column('key').doNothing()).executeTakeFirst();
      const inserted = result.numInsertedOrUpdatedRows === 1n;
      if (inserted) {
        await tx.audit(options.actor, 'create', 'Setting', key, null, null);
        return { value, inserted };
      }
      const stored = await tx.trx.selectFrom('kv').select('value').where('key', '=', key).executeTakeFirstOrThrow();
      return { value: stored.value, inserted };
    });
  }

  // --- events ------------------------------------------------------------------------------------

  async appendAccessEvents(events: AccessEvent[]): Promise<AppendResult> {
    this.#assertOpen();
    if (events.length === 0) return { inserted: 0, duplicates: 0 };
    const receivedAt = this.#now();
    const rows = events.map((event, i) => {
      if (event === null || typeof event !== 'object' || typeof event.id !== 'string' || event.id === '') {
        throw new UserError('INVALID_ARGUMENT', `access event ${i} has no id; events are stored once per id`);
      }
      const clean = storable(event) as AccessEvent;
      const ms = typeof event.time === 'string' ? Date.parse(event.time) : NaN;
      return {
        id: clean.id,
        received_at: receivedAt,
        time: Number.isFinite(ms) ? new Date(ms).toISOString() : receivedAt,
        decision: String(clean.decision),
        service: clean.service ?? null,
        user: clean.user ?? null,
        device: clean.device ?? null,
        access_tier: String(clean.accessTier ?? ''),
        reasons: toJson(Array.isArray(clean.reasons) ? clean.reasons : []),
        event: toJson(clean),
      };
    });
    return await this.#insertEventsOnce('access_events', rows);
  }

  /** Stores event rows once per id: chunked inserts in one transaction, an id already stored is skipped and counted as a duplicate. */
  async #insertEventsOnce<T extends 'access_events' | 'kube_events'>(table: T, rows: Insertable<Database[T]>[]): Promise<AppendResult> {
    const inserted = await this.#db.transaction().execute(async (trx) => {
      let count = 0;
      for (let i = 0; i < rows.length; i += EVENT_CHUNK) {
        const result = await trx
          .insertInto(table)
          .values(rows.slice(i, i + EVENT_CHUNK))
          .onConflict((oc) => oc.column('id').doNothing())
          .executeTakeFirst();
        count += Number(result.numInsertedOrUpdatedRows ?? 0n);
      }
      return count;
    });
    return { inserted, duplicates: rows.length - inserted };
  }

  async queryAccessEvents(query: AccessEventQuery = {}): Promise<Page<AccessEvent>> {
    this.#assertOpen();
    let q = this.#db.selectFrom('access_events').select(['id', 'time', 'event']);
    if (query.service !== undefined) q = q.where('service', '=', storableString(query.service));
    if (query.user !== undefined) q = q.where('user', '=', storableString(query.user));
    if (query.device !== undefined) q = q.where('device', '=', storableString(query.device));
    if (query.decision !== undefined) q = q.where('decision', '=', storableString(query.decision));
    if (query.reason !== undefined) {
      const reason = storableString(query.reason);
      // An element of the JSON array, exactly: not a substring of another reason.
      q = this.dialect === 'postgres'
        ? q.where(sql<boolean>`${sql.ref('reasons')}::jsonb @> jsonb_build_array(${reason}::text)`)
        : q.where(sql<boolean>`exists (select 1 from json_each(${sql.ref('reasons')}) where value = ${reason})`);
    }
    return await newestFirstPage(q, 'time', query, (r) => fromJson<AccessEvent>(r.event));
  }

  async appendKubeEvents(events: KubeEvent[]): Promise<AppendResult> {
    this.#assertOpen();
    if (events.length === 0) return { inserted: 0, duplicates: 0 };
    const receivedAt = this.#now();
    const rows = events.map((event, i) => {
      if (event === null || typeof event !== 'object' || typeof event.id !== 'string' || event.id === '') {
        throw new UserError('INVALID_ARGUMENT', `kube event ${i} has no id; events are stored once per id`);
      }
      const clean = storable(event) as KubeEvent;
      const ms = typeof event.time === 'string' ? Date.parse(event.time) : NaN;
      return {
        id: clean.id,
        received_at: receivedAt,
        time: Number.isFinite(ms) ? new Date(ms).toISOString() : receivedAt,
        type: String(clean.type),
        decision: String(clean.decision),
        cluster_name: String(clean.clusterName ?? ''),
        kube_proxy: String(clean.kubeProxy ?? ''),
        user: typeof clean.user === 'string' && clean.user !== '' ? clean.user : null,
        device: clean.device ?? null,
        namespace: clean.namespace ?? null,
        verb: typeof clean.verb === 'string' ? clean.verb : null,
        event: toJson(clean),
      };
    });
    return await this.#insertEventsOnce('kube_events', rows);
  }

  async queryKubeEvents(query: KubeEventQuery = {}): Promise<Page<KubeEvent>> {
    this.#assertOpen();
    let q = this.#db.selectFrom('kube_events').select(['id', 'time', 'event']);
    if (query.type !== undefined) q = q.where('type', '=', storableString(query.type));
    if (query.clusterName !== undefined) q = q.where('cluster_name', '=', storableString(query.clusterName));
    if (query.user !== undefined) q = q.where('user', '=', storableString(query.user));
    if (query.device !== undefined) q = q.where('device', '=', storableString(query.device));
    if (query.namespace !== undefined) q = q.where('namespace', '=', storableString(query.namespace));
    if (query.verb !== undefined) q = q.where('verb', '=', storableString(query.verb));
    if (query.decision !== undefined) q = q.where('decision', '=', storableString(query.decision));
    return await newestFirstPage(q, 'time', query, (r) => fromJson<KubeEvent>(r.event));
  }

  async queryAuditEvents(query: AuditEventQuery = {}): Promise<Page<AuditEvent>> {
    this.#assertOpen();
    let q = this.#db.selectFrom('audit_events').selectAll();
    if (query.kind !== undefined) q = q.where('kind', '=', storableString(query.kind));
    if (query.name !== undefined) q = q.where('name', '=', storableString(query.name));
    if (query.actor !== undefined) q = q.where('actor', '=', storableString(query.actor));
    if (query.action !== undefined) q = q.where('action', '=', storableString(query.action));
    return await newestFirstPage(q, 'at', query, auditFromRow);
  }

  async appendAuditEvent(event: NewAuditEvent): Promise<void> {
    this.#assertOpen();
    if (event === null || typeof event !== 'object') throw new UserError('INVALID_ARGUMENT', 'an audit event is an object');
    checkActor(event);
    if (typeof event.name !== 'string') throw new UserError('INVALID_ARGUMENT', 'name must be a string');
    const nowMs = this.#clock.now();
    await this.#db
      .insertInto('audit_events')
      .values({
        id: event.id === undefined ? this.#ids.next(nowMs) : requiredText(event.id, 'id'),
        at: event.at === undefined ? new Date(nowMs).toISOString() : isoTime(event.at, 'at'),
        actor: storableString(event.actor),
        action: requiredText(event.action, 'action'),
        kind: requiredText(event.kind, 'kind'),
        name: storableString(event.name),
        before: event.before === null || event.before === undefined ? null : toJson(jsonValue(event.before, 'before')),
        after: event.after === null || event.after === undefined ? null : toJson(jsonValue(event.after, 'after')),
      })
      .execute();
  }

  // --- OIDC provider records ---------------------------------------------------------------------

  async oidcUpsert(model: string, id: string, payload: Record<string, unknown>, expiresAt: string | null): Promise<void> {
    this.#assertOpen();
    const key = oidcKey(model, id);
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new UserError('INVALID_ARGUMENT', 'an OIDC record payload is an object');
    const text = toJson(jsonValue(payload, 'payload'));
    if (text.includes('PRIVATE KEY')) throw new CausewayError('PLAINTEXT_KEY_REFUSED', `refusing to store a PEM private key in the OIDC ${key.model} record: keys are stored encrypted (CP-16); this is a bug`);
    const indexed = (field: string): string | null => (typeof payload[field] === 'string' ? storableString(payload[field]) : null);
    const values = {
      payload: text,
      grant_id: indexed('grantId'),
      user_code: indexed('userCode'),
      uid: indexed('uid'),
      expires_at: expiresAt === null || expiresAt === undefined ? null : isoTime(expiresAt, 'expiresAt'),
      consumed_at: null,
    };
    await this.#db
      .insertInto('oidc_records')
      .values({ ...key, ...values })
      .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet(values))
      .execute();
  }

  async oidcFind(model: string, id: string): Promise<Record<string, unknown> | undefined> {
    this.#assertOpen();
    const key = oidcKey(model, id);
    return this.#oidcFindWhere(key.model, 'id', key.id);
  }

  async oidcFindByUserCode(model: string, userCode: string): Promise<Record<string, unknown> | undefined> {
    this.#assertOpen();
    const key = oidcKey(model, userCode);
    return this.#oidcFindWhere(key.model, 'user_code', key.id);
  }

  async oidcFindByUid(model: string, uid: string): Promise<Record<string, unknown> | undefined> {
    this.#assertOpen();
    const key = oidcKey(model, uid);
    return this.#oidcFindWhere(key.model, 'uid', key.id);
  }

  async #oidcFindWhere(model: string, column: 'id' | 'user_code' | 'uid', value: string): Promise<Record<string, unknown> | undefined> {
    const now = this.#now();
    const row = await this.#db
      .selectFrom('oidc_records')
      .selectAll()
      .where('model', '=', model)
      .where(column, '=', value)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .orderBy('id')
      .executeTakeFirst();
    return row === undefined ? undefined : oidcPayloadFromRow(row);
  }

  async oidcConsume(model: string, id: string): Promise<void> {
    this.#assertOpen();
    const key = oidcKey(model, id);
    await this.#db.updateTable('oidc_records').set({ consumed_at: this.#now() }).where('model', '=', key.model).where('id', '=', key.id).where('consumed_at', 'is', null).execute();
  }

  async oidcConsumeOnce(model: string, id: string): Promise<boolean> {
    this.#assertOpen();
    const key = oidcKey(model, id);
    const now = this.#now();
    // One UPDATE decides: the database serialises updates of the row, so only one caller sees it unconsumed.
    const result = await this.#db
      .updateTable('oidc_records')
      .set({ consumed_at: now })
      .where('model', '=', key.model)
      .where('id', '=', key.id)
      .where('consumed_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .executeTakeFirst();
    return result.numUpdatedRows === 1n;
  }

  async oidcDestroy(model: string, id: string): Promise<void> {
    this.#assertOpen();
    const key = oidcKey(model, id);
    await this.#db.deleteFrom('oidc_records').where('model', '=', key.model).where('id', '=', key.id).execute();
  }

  async oidcRevokeByGrantId(grantId: string): Promise<number> {
    this.#assertOpen();
    const grant = requiredText(grantId, 'grantId');
    const result = await this.#db.deleteFrom('oidc_records').where('grant_id', '=', grant).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async oidcPrune(now: string): Promise<number> {
    this.#assertOpen();
    const at = isoTime(now, 'now');
    const result = await this.#db.deleteFrom('oidc_records').where('expires_at', 'is not', null).where('expires_at', '<=', at).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  // --- live sessions and peers --------------------------------------------------------------------

  async putPeerReport(kind: ReportingPeerKind, name: string, report: unknown, at?: string): Promise<PeerReportRecord> {
    this.#assertOpen();
    if (!REPORTING_PEER_KINDS.includes(kind)) throw new UserError('INVALID_ARGUMENT', `kind must be ${REPORTING_PEER_KINDS.join(' or ')}`);
    const peer = requiredText(name, 'name');
    const reportedAt = at === undefined ? this.#now() : isoTime(at, 'at');
    const json = toJson(jsonValue(report, 'report'));
    await this.#db
      .insertInto('peer_reports')
      .values({ kind, name: peer, reported_at: reportedAt, report: json })
      .onConflict((oc) => oc.columns(['kind', 'name']).doUpdateSet({ reported_at: reportedAt, report: json }))
      .execute();
    return { kind, name: peer, reportedAt, report: fromJson(json) };
  }

  async listPeerReports(filter: { kind?: ReportingPeerKind; since?: string } = {}): Promise<PeerReportRecord[]> {
    this.#assertOpen();
    let q = this.#db.selectFrom('peer_reports').selectAll();
    if (filter.kind !== undefined) q = q.where('kind', '=', filter.kind);
    if (filter.since !== undefined) q = q.where('reported_at', '>=', isoTime(filter.since, 'since'));
    const rows = await q.orderBy('kind').orderBy('name').execute();
    return rows.map((row) => ({ kind: row.kind as ReportingPeerKind, name: row.name, reportedAt: row.reported_at, report: fromJson(row.report) }));
  }

  async killSession(kill: NewSessionKill, options: ActorOptions): Promise<KillSessionResult> {
    checkActor(options);
    if (kill === null || typeof kill !== 'object') throw new UserError('INVALID_ARGUMENT', 'a session kill is an object');
    const id = requiredText(kill.id, 'id');
    const ttlMs = kill.ttlMs ?? DEFAULT_SESSION_KILL_TTL_MS;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) throw new UserError('INVALID_ARGUMENT', 'ttlMs must be a whole number of milliseconds above 0');
    const session = kill.session === undefined || kill.session === null ? null : (storable(jsonValue(kill.session, 'session')) as Record<string, unknown>);
    return await this.#write(true, async (tx) => {
      const existing = await tx.trx.selectFrom('session_kills').selectAll().where('id', '=', id).executeTakeFirst();
      if (existing !== undefined && existing.expires_at > tx.at) return { kill: sessionKillFromRow(existing), created: false };
      const record: SessionKillRecord = { id, by: storableString(options.actor), at: tx.at, expiresAt: new Date(Date.parse(tx.at) + ttlMs).toISOString(), session };
      const row = { id, by: record.by, at: record.at, expires_at: record.expiresAt, session: session === null ? null : toJson(session) };
      if (existing === undefined) await tx.trx.insertInto('session_kills').values(row).execute();
      else await tx.trx.updateTable('session_kills').set(row).where('id', '=', id).execute();
      await tx.record(options.actor, 'disconnect', SESSION_KILL_KIND, id, 1, null, record);
      return { kill: record, created: true };
    });
  }

  async listSessionKills(): Promise<SessionKillRecord[]> {
    this.#assertOpen();
    const rows = await this.#db.selectFrom('session_kills').selectAll().where('expires_at', '>', this.#now()).orderBy('at').orderBy('id').execute();
    return rows.map(sessionKillFromRow);
  }

  async expireSessionKills(now?: string): Promise<number> {
    this.#assertOpen();
    const cutoff = now === undefined ? this.#now() : isoTime(now, 'now');
    // Most sweeps find nothing: look before taking the change-feed lock.
    const due = await this.#db.selectFrom('session_kills').select('id').where('expires_at', '<=', cutoff).limit(1).executeTakeFirst();
    if (due === undefined) return 0;
    return await this.#write(true, async (tx) => {
      const rows = await tx.trx.selectFrom('session_kills').selectAll().where('expires_at', '<=', cutoff).orderBy('id').execute();
      for (const row of rows) {
        await tx.trx.deleteFrom('session_kills').where('id', '=', row.id).execute();
        await tx.record('system', 'expire', SESSION_KILL_KIND, row.id, 1, sessionKillFromRow(row), null);
      }
      return rows.length;
    });
  }

  // --- lifecycle ---------------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watchers.clear();
    const source = this.#source;
    this.#source = undefined;
    await source?.stop();
    await this.#stopping;
    await this.#backend.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

// --- checks --------------------------------------------------------------------------------------

function checkActor(options: ActorOptions): void {
  if (options === undefined || typeof options.actor !== 'string' || options.actor === '') throw new UserError('INVALID_ARGUMENT', 'every change names its actor');
}

function checkExpectedVersion(expected: number | undefined): number | undefined {
  if (expected === undefined) return undefined;
  if (!Number.isSafeInteger(expected) || expected < 0) throw new UserError('INVALID_ARGUMENT', 'expectedVersion must be a whole number of at least 0');
  return expected;
}

function checkObjectKey(kind: unknown, name: unknown): { kind: string; name: string } {
  if (typeof kind !== 'string' || kind === '') throw new UserError('INVALID_ARGUMENT', 'an object needs a kind');
  if (RESERVED_KINDS.includes(kind)) throw new UserError('INVALID_ARGUMENT', `${kind} is not a spec kind; use the ${kind.toLowerCase()} methods`);
  if (typeof name !== 'string' || name === '') throw new UserError('INVALID_ARGUMENT', 'an object needs a name');
  return { kind: storableString(kind), name: storableString(name) };
}

/** expectedVersion: undefined = any; 0 = must not exist; n = must be at n. */
function checkVersion(what: string, current: number | undefined, expected: number | undefined): void {
  if (expected === undefined) return;
  if ((current ?? 0) !== expected) throw versionConflict(what, current, expected);
}

function versionConflict(what: string, current: number | undefined, expected: number): UserError {
  const now = current === undefined ? 'has changed' : current === 0 ? 'does not exist' : `is at version ${current}`;
  const detail = expected === 0 ? `${what} already exists` : `${what} ${now}, not version ${expected}`;
  return new UserError('VERSION_CONFLICT', `${detail}: someone changed it meanwhile; read it again and retry`);
}

function requiredText(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new UserError('INVALID_ARGUMENT', `${field} must be a non-empty string`);
  return storableString(value);
}

function optionalText(value: unknown, field: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new UserError('INVALID_ARGUMENT', `${field} must be a string`);
  return storableString(value);
}

function stringList(value: unknown, field: string): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new UserError('INVALID_ARGUMENT', `${field} must be a list of strings`);
  return value.map(storableString);
}

/** A JSON round-trip (Dates become strings, undefined goes) made storable. */
function jsonValue(value: unknown, field: string): unknown {
  const text = value === undefined ? undefined : JSON.stringify(value);
  if (text === undefined) throw new UserError('INVALID_ARGUMENT', `${field} must be a JSON value`);
  return storable(JSON.parse(text));
}

function checkSetting(key: string, value: string): void {
  requiredText(key, 'key');
  if (typeof value !== 'string') throw new UserError('INVALID_ARGUMENT', 'a setting is a string');
  if (value.includes('PRIVATE KEY')) {
    throw new CausewayError('PLAINTEXT_KEY_REFUSED', `refusing to store a PEM private key in setting ${key}: keys are stored encrypted (CP-16); this is a bug`);
  }
}

/** `local` or `idp:<name>`. */
function userSource(value: unknown): string {
  if (value === 'local' || (typeof value === 'string' && /^idp:[^\s]+$/.test(value))) return storableString(value);
  throw new UserError('INVALID_ARGUMENT', 'source must be local or idp:<IdentityProvider name>');
}

/** A TOTP secret as the caller sealed it; refuses anything that looks like a PEM key (CP-16). */
function sealedSecret(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value === '') throw new UserError('INVALID_ARGUMENT', 'totpSecret must be a non-empty (sealed) string or null');
  if (value.includes('PRIVATE KEY')) throw new CausewayError('PLAINTEXT_KEY_REFUSED', 'refusing to store a PEM private key as a TOTP secret (CP-16); this is a bug');
  return storableString(value);
}

/** A device manager's state as stored: managed, compliant (null: no verdict), score, at, source. */
function mdmState(state: DeviceMdmState): DeviceMdmState {
  if (state === null || typeof state !== 'object') throw new UserError('INVALID_ARGUMENT', 'a device-manager state is an object');
  if (typeof state.managed !== 'boolean') throw new UserError('INVALID_ARGUMENT', 'managed must be true or false');
  const compliant = state.compliant === undefined ? null : state.compliant;
  if (compliant !== null && typeof compliant !== 'boolean') throw new UserError('INVALID_ARGUMENT', 'compliant must be true, false or null');
  const out: DeviceMdmState = { managed: state.managed, compliant, at: isoTime(state.at, 'at'), source: requiredText(state.source, 'source') };
  if (state.score !== undefined) {
    if (typeof state.score !== 'number' || !Number.isFinite(state.score)) throw new UserError('INVALID_ARGUMENT', 'score must be a number');
    out.score = state.score;
  }
  return out;
}

const OVERRIDE_SOURCE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/;

function trustOverride(override: NewTrustOverride): Omit<DeviceTrustOverride, 'setBy' | 'setAt'> {
  if (override === null || typeof override !== 'object') throw new UserError('INVALID_ARGUMENT', 'a trust override is { source, maxLevel, reason, expiresAt? }');
  if (typeof override.source !== 'string' || !OVERRIDE_SOURCE.test(override.source)) {
    throw new UserError('INVALID_ARGUMENT', 'source must be 1 to 64 letters, digits or . _ : @ - (who sets the override, e.g. security-team)');
  }
  if (!TRUST_OVERRIDE_LEVELS.includes(override.maxLevel)) throw new UserError('INVALID_ARGUMENT', `maxLevel must be one of ${TRUST_OVERRIDE_LEVELS.join(', ')}`);
  if (typeof override.reason !== 'string' || override.reason.trim() === '' || override.reason.length > 500) throw new UserError('INVALID_ARGUMENT', 'reason must be a non-empty text of at most 500 characters');
  const out: Omit<DeviceTrustOverride, 'setBy' | 'setAt'> = { source: override.source, maxLevel: override.maxLevel, reason: storableString(override.reason) };
  if (override.expiresAt !== undefined && override.expiresAt !== null) out.expiresAt = isoTime(override.expiresAt, 'expiresAt');
  return out;
}

/** The stored overrides as a list (whatever they hold: trust scoring reads each defensively). */
function overridesOf(row: Pick<Selectable<DevicesTable>, 'trust_overrides'>): unknown[] {
  const value = row.trust_overrides === null ? [] : fromJson<unknown>(row.trust_overrides);
  return Array.isArray(value) ? value : [value];
}

function oidcKey(model: unknown, id: unknown): { model: string; id: string } {
  return { model: requiredText(model, 'model'), id: requiredText(id, 'id') };
}

/** The user a write is about to change, at the version it expects. */
async function userToChange(trx: Transaction<Database>, id: string, expected: number | undefined): Promise<Selectable<UsersTable>> {
  const row = await trx.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
  if (row === undefined) throw new UserError('NOT_FOUND', `user ${id} does not exist`);
  checkVersion(`user ${row.name}`, row.version, expected);
  return row;
}

/** The device a write is about to change, at the version it expects. */
async function deviceToChange(trx: Transaction<Database>, id: string, expected: number | undefined): Promise<Selectable<DevicesTable>> {
  const row = await trx.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
  if (row === undefined) throw new UserError('NOT_FOUND', `device ${id} does not exist`);
  checkVersion(`device ${id}`, row.version, expected);
  return row;
}

/**
 * One page of an event query, newest first by (`column`, id): the rows from `since` to before `until`, after the cursor
 * `after`, with the cursor to the next page.
 */
async function newestFirstPage<DB, TB extends keyof DB, C extends 'time' | 'at', R extends { id: string } & Record<C, string>, E>(
  base: SelectQueryBuilder<DB, TB, R>,
  column: C,
  query: { limit?: number; since?: string; until?: string; after?: string },
  toEvent: (row: R) => E,
): Promise<Page<E>> {
  const limit = pageLimit(query.limit);
  const ref = sql.ref(column);
  let q = base;
  if (query.since !== undefined) q = q.where(ref, '>=', isoTime(query.since, 'since'));
  if (query.until !== undefined) q = q.where(ref, '<', isoTime(query.until, 'until'));
  if (query.after !== undefined) {
    const c = decodeCursor(query.after);
    q = q.where((eb) => eb.or([eb(ref, '<', c.time), eb.and([eb(ref, '=', c.time), eb(sql.ref('id'), '<', c.id)])]));
  }
  const rows = await q.orderBy(ref, 'desc').orderBy(sql.ref('id'), 'desc').limit(limit + 1).execute();
  return pageOf(rows, limit, (r) => r[column], toEvent);
}

/** The first `limit` of `rows` (newest first, read one beyond the page) as a page, with the cursor to the next. */
function pageOf<R extends { id: string }, E>(rows: R[], limit: number, time: (row: R) => string, toEvent: (row: R) => E): Page<E> {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { events: page.map(toEvent), next: rows.length > limit && last !== undefined ? encodeCursor(time(last), last.id) : undefined };
}

async function maxRevision(db: Kysely<Database> | Transaction<Database>): Promise<number> {
  const row = await db
    .selectFrom('changes')
    .select((eb) => eb.fn.max('revision').as('revision'))
    .executeTakeFirst();
  return row?.revision === undefined || row.revision === null ? 0 : Number(row.revision);
}

// --- rows to records -----------------------------------------------------------------------------

function objectFromRow(row: Selectable<ObjectsTable>): StoredObject {
  return {
    kind: row.kind,
    name: row.name,
    metadata: fromJson<ObjectMetadata>(row.metadata),
    spec: fromJson(row.spec),
    version: row.version,
    createdAt: row.created_at,
    createdBy: row.created_by,
    updatedAt: row.updated_at,
    updatedBy: row.updated_by,
  };
}

function userFromRow(row: Selectable<UsersTable>): UserRecord {
  return {
    id: row.id,
    name: row.name,
    email: row.email,
    groups: fromJson<string[]>(row.groups),
    disabled: asBool(row.disabled),
    hasPassword: row.password_hash !== null,
    source: row.source,
    hasTotp: row.totp_secret !== null,
    lockedUntil: row.locked_until,
    lastLoginAt: row.last_login_at,
    version: row.version,
    createdAt: row.created_at,
    createdBy: row.created_by,
    updatedAt: row.updated_at,
    updatedBy: row.updated_by,
  };
}

function deviceFromRow(row: Selectable<DevicesTable>): DeviceRecord {
  return {
    id: row.id,
    userId: row.user_id,
    platform: row.platform,
    osVersion: row.os_version,
    serial: row.serial,
    hostname: row.hostname,
    ownership: row.ownership,
    publicKey: row.public_key,
    registeredAt: row.registered_at,
    registeredBy: row.registered_by,
    banned: asBool(row.banned),
    lastSeen: row.last_seen,
    trust: fromJsonOrNull<Record<string, unknown>>(row.trust),
    version: row.version,
    updatedAt: row.updated_at,
    updatedBy: row.updated_by,
    posture: fromJsonOrNull<Record<string, unknown>>(row.posture),
    postureAt: row.posture_at,
    mdm: row.mdm === null ? {} : fromJson<Record<string, DeviceMdmState>>(row.mdm),
    trustOverrides: overridesOf(row) as DeviceTrustOverride[],
  };
}

function consoleSessionFromRow(row: Selectable<ConsoleSessionsTable>): ConsoleSessionRecord {
  return { id: row.token_hash.slice(0, 16), userId: row.user_id, createdAt: row.created_at, expiresAt: row.expires_at, lastSeenAt: row.last_seen_at };
}

function apiTokenFromRow(row: Selectable<ApiTokensTable>): ApiTokenRecord {
  return {
    id: row.id,
    name: row.name,
    scope: row.scope as ApiTokenScope,
    createdAt: row.created_at,
    createdBy: row.created_by,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}

function joinTokenFromRow(row: Selectable<JoinTokensTable>): JoinTokenRecord {
  return {
    id: row.id,
    kind: row.kind as JoinTokenKind,
    name: row.name,
    createdAt: row.created_at,
    createdBy: row.created_by,
    expiresAt: row.expires_at,
    usedAt: row.used_at,
  };
}

function certificateFromRow(row: Selectable<CertificatesTable>): CertificateRecord {
  return {
    serial: row.serial,
    type: row.type,
    identity: row.identity,
    notAfter: row.not_after,
    recordedAt: row.recorded_at,
    revokedAt: row.revoked_at,
    revokedBy: row.revoked_by,
    reason: row.reason,
  };
}

function oidcPayloadFromRow(row: Selectable<OidcRecordsTable>): Record<string, unknown> {
  const payload = fromJson<Record<string, unknown>>(row.payload);
  if (row.consumed_at !== null) payload.consumed = Math.floor(Date.parse(row.consumed_at) / 1000);
  return payload;
}

function sessionKillFromRow(row: Selectable<SessionKillsTable>): SessionKillRecord {
  return { id: row.id, by: row.by, at: row.at, expiresAt: row.expires_at, session: fromJsonOrNull<Record<string, unknown>>(row.session) };
}

function auditFromRow(row: Selectable<AuditEventsTable>): AuditEvent {
  return {
    id: row.id,
    at: row.at,
    actor: row.actor,
    action: row.action,
    kind: row.kind,
    name: row.name,
    before: fromJsonOrNull(row.before),
    after: fromJsonOrNull(row.after),
  };
}
