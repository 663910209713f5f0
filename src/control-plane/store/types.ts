/**
 * The control plane's store: what it keeps and the one interface both databases implement.
 *
 * Every timestamp is an ISO 8601 UTC string with milliseconds. Every mutable record has a `version`
 * that starts at 1 and grows by one per change; a write that names an `expectedVersion` other than
 * the current one fails with `VERSION_CONFLICT` (the API answers 409). Secrets are never stored:
 * token secrets are kept as SHA-256 hashes, password hashes are only handed to `getUserCredentials`,
 * and no other method returns a hash.
 */
import type { AccessDecision, AccessEvent, KubeEvent, KubeEventType } from '../../lib/audit/index.ts';

export type { AccessDecision, AccessEvent };

/** Change-feed kinds for the records that are not spec objects. `putObject` refuses them. */
export const USER_KIND = 'User';
export const DEVICE_KIND = 'Device';
export const CERTIFICATE_KIND = 'Certificate';
/** An admin's order to cut one live session (killSession); carried to access tiers by the config stream. */
export const SESSION_KILL_KIND = 'SessionKill';
export const RESERVED_KINDS: readonly string[] = [USER_KIND, DEVICE_KIND, CERTIFICATE_KIND, SESSION_KILL_KIND];

/** Who made a change: `user:<name>`, `token:<id>`, `system`… Recorded as given. */
export interface WriteOptions {
  actor: string;
  /** undefined: write whatever is there; 0: the record must not exist yet; n: it must be at version n. */
  expectedVersion?: number;
}

export interface ActorOptions {
  actor: string;
}

// --- spec objects (DESIGN §4) -------------------------------------------------------------------

/** `metadata` of a spec document without its name (description, link, …). */
export type ObjectMetadata = Record<string, unknown>;

export interface ObjectInput {
  kind: string;
  name: string;
  spec: unknown;
  metadata?: ObjectMetadata;
}

export interface StoredObject {
  kind: string;
  name: string;
  metadata: ObjectMetadata;
  spec: unknown;
  version: number;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
  updatedBy: string;
}

export type PutOutcome = 'created' | 'changed' | 'unchanged';

export interface PutObjectResult {
  object: StoredObject;
  /** `unchanged`: the same metadata and spec were already stored; nothing was written. */
  result: PutOutcome;
  /** The change-feed revision of this write; undefined when nothing was written. */
  revision: number | undefined;
}

export interface DeleteObjectResult {
  /** The object as it was before the delete. */
  object: StoredObject;
  revision: number;
}

export type ApplyItem = ObjectInput & { expectedVersion?: number };

// --- change feed ---------------------------------------------------------------------------------

export type ChangeObject = StoredObject | UserRecord | DeviceRecord | CertificateRecord | SessionKillRecord;

export interface Change {
  /** Strictly increasing, in commit order; gaps are possible (a rolled-back write). */
  revision: number;
  kind: string;
  name: string;
  op: 'put' | 'delete';
  /** The record's version after a put, or the version deleted. */
  version: number;
  /** The whole record after a put; null for a delete. */
  object: ChangeObject | null;
  at: string;
  actor: string;
}

export interface Snapshot {
  /** Every change up to this revision is reflected, and none after it. */
  revision: number;
  objects: StoredObject[];
  users: UserRecord[];
  devices: DeviceRecord[];
  /** Serials of revoked certificates that have not expired yet. */
  revokedSerials: string[];
}

// --- users and devices ---------------------------------------------------------------------------

export interface UserRecord {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
  disabled: boolean;
  /** Whether the user has a built-in password; the hash itself only comes from getUserCredentials. */
  hasPassword: boolean;
  /** `local` (the built-in directory) or `idp:<name>` (created at first login through that IdentityProvider). */
  source: string;
  /** Whether the user has a TOTP second factor; the (sealed) secret only comes from getUserCredentials. */
  hasTotp: boolean;
  /**
   * Until when logins are refused after repeated failures (null: not locked). Set by recordLoginFailure
   * without a version bump or change record, so the copy in a snapshot or change may be older.
   */
  lockedUntil: string | null;
  /** Set by recordLoginSuccess, without a version bump or change record. */
  lastLoginAt: string | null;
  version: number;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
  updatedBy: string;
}

export interface NewUser {
  /** Default: a random UUID. */
  id?: string;
  name: string;
  email?: string | null;
  groups?: string[];
  disabled?: boolean;
  /** A password hash made by the caller (never a password). */
  passwordHash?: string | null;
  /** `local` (default) or `idp:<name>`. */
  source?: string;
  /** A TOTP secret sealed by the caller (SecretBox), never the plain secret. */
  totpSecret?: string | null;
}

export interface UserPatch {
  name?: string;
  email?: string | null;
  groups?: string[];
  disabled?: boolean;
  passwordHash?: string | null;
  source?: string;
  totpSecret?: string | null;
}

export interface UserCredentials {
  user: UserRecord;
  passwordHash: string | null;
  /** As the caller sealed it. */
  totpSecret: string | null;
  failedLogins: number;
}

export interface LoginFailureOptions {
  /** When the failure happened (ISO). */
  at: string;
  /** The failure count at which the account locks. */
  maxFailures: number;
  /** How long a lock lasts, from `at`. */
  lockMs: number;
}

export interface LoginFailureResult {
  failedLogins: number;
  lockedUntil: string | null;
}

export interface DeviceRecord {
  id: string;
  userId: string;
  platform: string;
  osVersion: string | null;
  serial: string | null;
  hostname: string | null;
  ownership: string;
  /** The device's public key (PEM); public, kept to check posture signatures. */
  publicKey: string | null;
  registeredAt: string;
  registeredBy: string;
  banned: boolean;
  /** Updated by touchDevice without a version bump or change record. */
  lastSeen: string | null;
  /** What trust scoring last decided (level, factors…), as the trust module shapes it. */
  trust: Record<string, unknown> | null;
  version: number;
  updatedAt: string;
  updatedBy: string;
  /**
   * The factor values of the last verified posture report (not secret), as stored: read them
   * defensively (DT-07). Set by recordPosture without a version bump or change record.
   */
  posture: Record<string, unknown> | null;
  /** Server time of the last verified posture report; null: never. */
  postureAt: string | null;
  /** Per device manager (its name): what it last said. Set by recordMdmState without a version bump. */
  mdm: Record<string, DeviceMdmState>;
  /** Caps on the trust level, one per source (admin writes, versioned and audited). */
  trustOverrides: DeviceTrustOverride[];
}

/** What one device manager last said about a device. */
export interface DeviceMdmState {
  managed: boolean;
  /** null: the manager gives no verdict. */
  compliant: boolean | null;
  /** 0–100 when the manager has a score. */
  score?: number;
  /** When the manager said it (ISO). */
  at: string;
  /** `<type>:<DeviceManager name>`. */
  source: string;
}

export type TrustOverrideLevel = 'High' | 'Medium' | 'Low' | 'AlwaysDeny';
export const TRUST_OVERRIDE_LEVELS: readonly TrustOverrideLevel[] = ['High', 'Medium', 'Low', 'AlwaysDeny'];

/** A cap on a device's trust level set by an admin or an integration (`source`); the strictest wins. */
export interface DeviceTrustOverride {
  /** Who caps it, e.g. `security-team`, `siem`, `crowdstrike`: one override per source. */
  source: string;
  maxLevel: TrustOverrideLevel;
  /** Shown to people, e.g. "incident 4711: laptop reported stolen". */
  reason: string;
  /** The actor that set it. */
  setBy: string;
  setAt: string;
  /** When it stops applying (ISO); absent or null: until cleared. */
  expiresAt?: string | null;
}

export interface NewTrustOverride {
  source: string;
  maxLevel: TrustOverrideLevel;
  reason: string;
  expiresAt?: string | null;
}

export interface PostureRecord {
  /** The verified reported factor values (FactorValues). */
  factors: Record<string, unknown>;
  /** Server time of the report (ISO). */
  at: string;
}

export interface NewDevice {
  /** Default: a random UUID. */
  id?: string;
  userId: string;
  platform: string;
  osVersion?: string | null;
  serial?: string | null;
  hostname?: string | null;
  /** Default `other`. */
  ownership?: string;
  publicKey?: string | null;
  trust?: Record<string, unknown> | null;
}

export interface DevicePatch {
  osVersion?: string | null;
  serial?: string | null;
  hostname?: string | null;
  ownership?: string;
  publicKey?: string | null;
  banned?: boolean;
  trust?: Record<string, unknown> | null;
}

// --- tokens --------------------------------------------------------------------------------------

export type ApiTokenScope = 'admin' | 'viewer';

export interface ApiTokenRecord {
  id: string;
  name: string;
  scope: ApiTokenScope;
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
  /** Updated at most once a minute. */
  lastUsedAt: string | null;
}

export interface NewApiToken {
  name: string;
  scope: ApiTokenScope;
  /** ISO time, or null/undefined for a token that does not expire. */
  expiresAt?: string | null;
}

export type JoinTokenKind = 'access-tier' | 'connector' | 'kube-proxy';

export interface JoinTokenRecord {
  id: string;
  kind: JoinTokenKind;
  name: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string;
  usedAt: string | null;
}

export interface NewJoinToken {
  kind: JoinTokenKind;
  /** The name the joining part will have (AccessTier or Connector metadata.name). */
  name: string;
  /** Default one hour. */
  ttlMs?: number;
}

/** A new token: the secret is shown once, here, and never stored. */
export interface IssuedToken<R> {
  token: string;
  record: R;
}

/**
 * A web console login (control-plane/console): the browser holds the secret (`cwcs_…`, 256 random
 * bits) in a cookie; only its SHA-256 is stored.
 */
export interface ConsoleSessionRecord {
  /** Public: the first 16 hex digits of the secret's hash, for logs and audit. */
  id: string;
  userId: string;
  createdAt: string;
  /** The absolute end, however active the session is. */
  expiresAt: string;
  /** The last use, to the minute (the idle end is this plus the caller's idle time). */
  lastSeenAt: string;
}

export interface NewConsoleSession {
  userId: string;
  /** Absolute lifetime from now. */
  ttlMs: number;
}

// --- certificates --------------------------------------------------------------------------------

export interface CertificateRecord {
  serial: string;
  type: string;
  /** The identity URI (causeway://device/<id>, …). */
  identity: string;
  notAfter: string;
  recordedAt: string;
  revokedAt: string | null;
  revokedBy: string | null;
  reason: string | null;
}

export interface NewCertificate {
  serial: string;
  type: string;
  identity: string;
  notAfter: string;
}

export interface RevokeCertificateOptions extends ActorOptions {
  reason?: string;
  /** For a serial the store has not recorded: what it is (default type `unknown`, no identity). */
  type?: string;
  identity?: string;
  notAfter?: string;
}

// --- events --------------------------------------------------------------------------------------

export interface AppendResult {
  inserted: number;
  /** Events whose id was already stored (a re-shipped batch), or repeated within the batch. */
  duplicates: number;
}

export interface KubeEventQuery {
  type?: KubeEventType;
  clusterName?: string;
  user?: string;
  device?: string;
  namespace?: string;
  verb?: string;
  decision?: 'allow' | 'deny';
  /** Inclusive lower bound on the event time (ISO). */
  since?: string;
  /** Exclusive upper bound on the event time (ISO). */
  until?: string;
  /** Default 100, at most 1000. */
  limit?: number;
  /** The `next` cursor of the previous page. */
  after?: string;
}

export interface AccessEventQuery {
  service?: string;
  user?: string;
  device?: string;
  decision?: AccessDecision;
  /** Only events whose `reasons` include exactly this code. */
  reason?: string;
  /** Inclusive lower bound on the event time (ISO). */
  since?: string;
  /** Exclusive upper bound on the event time (ISO). */
  until?: string;
  /** Default 100, at most 1000. */
  limit?: number;
  /** The `next` cursor of the previous page. */
  after?: string;
}

export interface Page<T> {
  /** Newest first. */
  events: T[];
  /** Pass as `after` for the next (older) page; undefined on the last page. */
  next: string | undefined;
}

export interface AuditEvent {
  id: string;
  at: string;
  actor: string;
  /** create, update, delete, revoke, use, … */
  action: string;
  kind: string;
  name: string;
  before: unknown;
  after: unknown;
}

/** An audit event written by a caller (logins, logouts, token exchanges…) rather than by a store write. */
export interface NewAuditEvent {
  /** Default: a new time-ordered id. */
  id?: string;
  /** Default: now. */
  at?: string;
  actor: string;
  action: string;
  kind: string;
  name: string;
  before?: unknown;
  after?: unknown;
}

export interface AuditEventQuery {
  kind?: string;
  name?: string;
  actor?: string;
  action?: string;
  since?: string;
  until?: string;
  limit?: number;
  after?: string;
}

// --- live sessions and peers (issue 8) ------------------------------------------------------------

export type ReportingPeerKind = 'access-tier' | 'connector';

/** The latest report of one access tier or connector (src/lib/live/wire.ts), as received. */
export interface PeerReportRecord {
  kind: ReportingPeerKind;
  name: string;
  /** Server time of the report (ISO). */
  reportedAt: string;
  report: unknown;
}

/** An admin's order to cut a live session, kept (and streamed) until `expiresAt`. */
export interface SessionKillRecord {
  /** The session (connection) id. */
  id: string;
  /** The actor who ordered it. */
  by: string;
  at: string;
  expiresAt: string;
  /** What the session was, as the control plane last knew it (user, device, service, accessTier…), for the audit. */
  session: Record<string, unknown> | null;
}

export interface NewSessionKill {
  id: string;
  session?: Record<string, unknown> | null;
  /** Default 10 minutes. */
  ttlMs?: number;
}

export interface KillSessionResult {
  kill: SessionKillRecord;
  /** false: a kill of this session was already pending; nothing was written. */
  created: boolean;
}

// --- the store -----------------------------------------------------------------------------------

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';

  getObject(kind: string, name: string): Promise<StoredObject | undefined>;
  /** Ordered by kind, then name (bytewise). */
  listObjects(kind?: string): Promise<StoredObject[]>;
  putObject(input: ObjectInput, options: WriteOptions): Promise<PutObjectResult>;
  deleteObject(kind: string, name: string, options: WriteOptions): Promise<DeleteObjectResult>;
  /** Puts every item in one transaction: all are written or, on any error, none. */
  applyObjects(items: ApplyItem[], options: ActorOptions): Promise<PutObjectResult[]>;

  currentRevision(): Promise<number>;
  /** Changes with a revision greater than `revision`, oldest first. Default limit 1000. */
  changesSince(revision: number, limit?: number): Promise<Change[]>;
  snapshot(): Promise<Snapshot>;
  /**
   * Calls `listener` soon with the current revision, then whenever it grows (from this store or
   * another on the same database); calls may be coalesced. Returns the function that stops it.
   */
  watch(listener: (revision: number) => void): () => void;

  createUser(user: NewUser, options: ActorOptions): Promise<UserRecord>;
  getUser(id: string): Promise<UserRecord | undefined>;
  getUserByName(name: string): Promise<UserRecord | undefined>;
  /** For the built-in login only: the one method that returns a password hash. */
  getUserCredentials(name: string): Promise<UserCredentials | undefined>;
  listUsers(): Promise<UserRecord[]>;
  updateUser(id: string, patch: UserPatch, options: WriteOptions): Promise<UserRecord>;
  /** Deletes the user and their devices. */
  deleteUser(id: string, options: WriteOptions): Promise<UserRecord>;
  /**
   * Counts a failed login, atomically (concurrent failures are each counted). When the count reaches
   * `maxFailures`, the user is locked until `at + lockMs`; each further failure while locked restarts
   * the lock from its `at`. A failure after a lock has run out starts counting again from 1. No version
   * bump, change record or audit event (the caller audits the login).
   */
  recordLoginFailure(id: string, options: LoginFailureOptions): Promise<LoginFailureResult>;
  /** Resets the failure count and lock and records the login time; no version bump, change or audit event. */
  recordLoginSuccess(id: string, at: string): Promise<void>;
  /**
   * An administrator lifts a lock: resets the failure count and lock, as a versioned write with a
   * change record and the audit event `unlock`. A user neither locked nor with failures writes nothing.
   */
  unlockUser(id: string, options: WriteOptions): Promise<UserRecord>;

  registerDevice(device: NewDevice, options: ActorOptions): Promise<DeviceRecord>;
  getDevice(id: string): Promise<DeviceRecord | undefined>;
  listDevices(filter?: { userId?: string }): Promise<DeviceRecord[]>;
  /** A patch that changes nothing writes nothing (no version bump, change or audit event). */
  updateDevice(id: string, patch: DevicePatch, options: WriteOptions): Promise<DeviceRecord>;
  banDevice(id: string, options: WriteOptions): Promise<DeviceRecord>;
  unbanDevice(id: string, options: WriteOptions): Promise<DeviceRecord>;
  unregisterDevice(id: string, options: WriteOptions): Promise<DeviceRecord>;
  /** Records when the device was last seen; no version bump, change or audit event. */
  touchDevice(id: string, at?: string): Promise<void>;
  /** Stores a verified posture report's factor values and its server time; no version bump, change or audit event. */
  recordPosture(id: string, posture: PostureRecord): Promise<void>;
  /**
   * Stores what device manager `manager` says about the device (null: it no longer knows it), without
   * losing a concurrent write of another manager; no version bump, change or audit event.
   */
  recordMdmState(id: string, manager: string, state: DeviceMdmState | null): Promise<void>;
  /** Sets (replaces) the override of `override.source`: an admin write (version bump, change, audit `trust-override`). */
  setTrustOverride(id: string, override: NewTrustOverride, options: WriteOptions): Promise<DeviceRecord>;
  /** Removes the override of `source`; none there writes nothing. Audit `trust-override-clear`. */
  clearTrustOverride(id: string, source: string, options: WriteOptions): Promise<DeviceRecord>;
  /** The devices whose serial matches, ignoring case (device managers spell serials their own way). */
  findDevicesBySerial(serial: string): Promise<DeviceRecord[]>;

  createApiToken(token: NewApiToken, options: ActorOptions): Promise<IssuedToken<ApiTokenRecord>>;
  listApiTokens(): Promise<ApiTokenRecord[]>;
  /** The token's record if the secret is valid, unrevoked and unexpired; otherwise undefined. */
  verifyApiToken(secret: string): Promise<ApiTokenRecord | undefined>;
  revokeApiToken(id: string, options: ActorOptions): Promise<ApiTokenRecord>;

  /** A new console session for the user; the secret (the cookie value) is returned once. */
  createConsoleSession(session: NewConsoleSession): Promise<IssuedToken<ConsoleSessionRecord>>;
  /**
   * The session of this secret when it has not reached its absolute end and was used within `idleMs`;
   * this use is recorded (to the minute). Unknown, malformed, expired or idle: undefined, whichever.
   */
  useConsoleSession(secret: string, options: { idleMs: number }): Promise<ConsoleSessionRecord | undefined>;
  /** Ends the session of this secret (logout); false when there was none. */
  deleteConsoleSession(secret: string): Promise<boolean>;
  /** Ends every console session of a user; returns how many. */
  deleteConsoleSessionsOfUser(userId: string): Promise<number>;
  /** Deletes the sessions past their absolute end at `now`, or idle longer than `idleMs`; returns how many. */
  pruneConsoleSessions(now: string, idleMs: number): Promise<number>;

  createJoinToken(token: NewJoinToken, options: ActorOptions): Promise<IssuedToken<JoinTokenRecord>>;
  listJoinTokens(): Promise<JoinTokenRecord[]>;
  /** Marks the token used, atomically. Unknown, used, expired or of another kind: JOIN_TOKEN_INVALID, whichever it was. */
  consumeJoinToken(secret: string, kind: JoinTokenKind): Promise<JoinTokenRecord>;

  recordCertificate(certificate: NewCertificate): Promise<CertificateRecord>;
  getCertificate(serial: string): Promise<CertificateRecord | undefined>;
  revokeCertificate(serial: string, options: RevokeCertificateOptions): Promise<CertificateRecord>;
  /** Revoked certificates that have not expired yet. */
  listRevokedCertificates(): Promise<CertificateRecord[]>;

  getSetting(key: string): Promise<string | undefined>;
  /** Refuses a value containing `PRIVATE KEY` (CP-16: keys are stored encrypted, never as PEM). */
  putSetting(key: string, value: string, options: ActorOptions): Promise<void>;
  /** Stores the value unless the key exists; returns what is stored. For replicas racing on first start. */
  putSettingIfAbsent(key: string, value: string, options: ActorOptions): Promise<{ value: string; inserted: boolean }>;

  appendAccessEvents(events: AccessEvent[]): Promise<AppendResult>;
  queryAccessEvents(query?: AccessEventQuery): Promise<Page<AccessEvent>>;
  /** Kube proxy events (kube-event.ts), stored once per id like access events. */
  appendKubeEvents(events: KubeEvent[]): Promise<AppendResult>;
  queryKubeEvents(query?: KubeEventQuery): Promise<Page<KubeEvent>>;
  queryAuditEvents(query?: AuditEventQuery): Promise<Page<AuditEvent>>;
  /** Appends one audit event (logins, logouts, token exchanges…); `id` and `at` are made when missing. */
  appendAuditEvent(event: NewAuditEvent): Promise<void>;

  /**
   * oidc-provider's records (its adapter's storage), by model name and id. Upsert replaces the whole
   * record (payload, expiry, consumption) and indexes the payload's `grantId`, `userCode` and `uid`
   * when they are strings. `expiresAt` null: never expires. Refuses a payload containing `PRIVATE KEY`
   * (CP-16). No version, change record or audit event: these are the provider's working state.
   */
  oidcUpsert(model: string, id: string, payload: Record<string, unknown>, expiresAt: string | null): Promise<void>;
  /** The payload, or undefined when absent or expired; a consumed record has `consumed` (epoch seconds). */
  oidcFind(model: string, id: string): Promise<Record<string, unknown> | undefined>;
  oidcFindByUserCode(model: string, userCode: string): Promise<Record<string, unknown> | undefined>;
  oidcFindByUid(model: string, uid: string): Promise<Record<string, unknown> | undefined>;
  /** Marks the record consumed (the first consumption's time is kept). */
  oidcConsume(model: string, id: string): Promise<void>;
  /**
   * Consumes the record atomically: true only for the first caller; false when it is unknown,
   * expired or consumed already (single-use values such as posture nonces, across replicas).
   */
  oidcConsumeOnce(model: string, id: string): Promise<boolean>;
  oidcDestroy(model: string, id: string): Promise<void>;
  /** Deletes every record (of any model) of the grant; returns how many. */
  oidcRevokeByGrantId(grantId: string): Promise<number>;
  /** Deletes the records expired at `now`; returns how many. */
  oidcPrune(now: string): Promise<number>;

  /** Replaces the peer's latest report; no version, change record or audit event (working state). */
  putPeerReport(kind: ReportingPeerKind, name: string, report: unknown, at?: string): Promise<PeerReportRecord>;
  /** Latest reports, by kind then name; `since`: only those received at or after it (ISO). */
  listPeerReports(filter?: { kind?: ReportingPeerKind; since?: string }): Promise<PeerReportRecord[]>;
  /**
   * Orders a live session cut: a `SessionKill` change (put) that the config stream carries to every
   * access tier, and the audit event `disconnect`. A kill already pending for the id is returned as it is.
   */
  killSession(kill: NewSessionKill, options: ActorOptions): Promise<KillSessionResult>;
  /** Kills not yet expired, oldest first. */
  listSessionKills(): Promise<SessionKillRecord[]>;
  /** Deletes kills expired at `now` (default: the clock), each with a delete change and the audit event `expire`; returns how many. */
  expireSessionKills(now?: string): Promise<number>;

  /** Stops watchers and closes the database connections. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
