/**
 * The tables as Kysely sees them. One schema for both databases; the few differences live in
 * migrations.ts:
 * - JSON is TEXT in SQLite and JSONB in PostgreSQL; both come back as the JSON text (the pg pool's
 *   type parser leaves json/jsonb unparsed), so one code path parses it.
 * - Timestamps are ISO 8601 UTC text with milliseconds (`Date#toISOString`) in both: one fixed
 *   format, so text order is time order and values round-trip exactly.
 * - Text is `COLLATE "C"` in PostgreSQL, so ordering (names, ids, cursors) is bytewise as in SQLite.
 * - Booleans are BOOLEAN in PostgreSQL and 0/1 in SQLite (`asBool` reads either).
 * - `changes.revision` is BIGSERIAL in PostgreSQL and INTEGER PRIMARY KEY AUTOINCREMENT in SQLite; the
 *   pg pool parses int8 as a number (exact up to 2^53).
 */
import type { Generated } from 'kysely';

export interface ObjectsTable {
  kind: string;
  name: string;
  metadata: string;
  spec: string;
  version: number;
  created_at: string;
  created_by: string;
  updated_at: string;
  updated_by: string;
}

export interface ChangesTable {
  revision: Generated<number>;
  kind: string;
  name: string;
  op: 'put' | 'delete';
  version: number;
  object: string | null;
  at: string;
  actor: string;
}

export interface UsersTable {
  id: string;
  name: string;
  email: string | null;
  groups: string;
  disabled: boolean | number;
  password_hash: string | null;
  /** `local` or `idp:<name>`. */
  source: string;
  /** Sealed by the caller's SecretBox; never returned but by getUserCredentials. */
  totp_secret: string | null;
  failed_logins: number;
  locked_until: string | null;
  last_login_at: string | null;
  version: number;
  created_at: string;
  created_by: string;
  updated_at: string;
  updated_by: string;
}

export interface DevicesTable {
  id: string;
  user_id: string;
  platform: string;
  os_version: string | null;
  serial: string | null;
  hostname: string | null;
  ownership: string;
  public_key: string | null;
  registered_at: string;
  registered_by: string;
  banned: boolean | number;
  last_seen: string | null;
  trust: string | null;
  version: number;
  updated_at: string;
  updated_by: string;
  /** JSON: the last verified reported factor values. */
  posture: string | null;
  /** Server time of that report. */
  posture_at: string | null;
  /** JSON: `{ [manager]: DeviceMdmState }`. */
  mdm: string | null;
  /** JSON: `DeviceTrustOverride[]`. */
  trust_overrides: string | null;
}

export interface ApiTokensTable {
  id: string;
  name: string;
  scope: string;
  token_hash: string;
  created_at: string;
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface JoinTokensTable {
  id: string;
  kind: string;
  name: string;
  token_hash: string;
  created_at: string;
  created_by: string;
  expires_at: string;
  used_at: string | null;
}

export interface AccessEventsTable {
  id: string;
  received_at: string;
  time: string;
  decision: string;
  service: string | null;
  user: string | null;
  device: string | null;
  access_tier: string;
  reasons: string;
  event: string;
}

export interface KubeEventsTable {
  id: string;
  received_at: string;
  time: string;
  type: string;
  decision: string;
  cluster_name: string;
  kube_proxy: string;
  user: string | null;
  device: string | null;
  namespace: string | null;
  verb: string | null;
  event: string;
}

export interface AuditEventsTable {
  id: string;
  at: string;
  actor: string;
  action: string;
  kind: string;
  name: string;
  before: string | null;
  after: string | null;
}

export interface CertificatesTable {
  serial: string;
  type: string;
  identity: string;
  not_after: string;
  recorded_at: string;
  revoked_at: string | null;
  revoked_by: string | null;
  reason: string | null;
}

/** oidc-provider's records (sessions, grants, codes, tokens…), keyed by its model name and id. */
export interface OidcRecordsTable {
  model: string;
  id: string;
  /** JSON text. */
  payload: string;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  /** null: never expires. */
  expires_at: string | null;
  consumed_at: string | null;
}

export interface PeerReportsTable {
  kind: string;
  name: string;
  reported_at: string;
  /** JSON. */
  report: string;
}

export interface SessionKillsTable {
  id: string;
  by: string;
  at: string;
  expires_at: string;
  /** JSON or null. */
  session: string | null;
}

/** Web console logins (console/): the secret's SHA-256, never the secret. */
export interface ConsoleSessionsTable {
  token_hash: string;
  user_id: string;
  created_at: string;
  expires_at: string;
  last_seen_at: string;
}

export interface KvTable {
  key: string;
  value: string;
  updated_at: string;
}

export interface Database {
  objects: ObjectsTable;
  changes: ChangesTable;
  users: UsersTable;
  devices: DevicesTable;
  api_tokens: ApiTokensTable;
  join_tokens: JoinTokensTable;
  access_events: AccessEventsTable;
  kube_events: KubeEventsTable;
  audit_events: AuditEventsTable;
  certificates: CertificatesTable;
  kv: KvTable;
  oidc_records: OidcRecordsTable;
  console_sessions: ConsoleSessionsTable;
  peer_reports: PeerReportsTable;
  session_kills: SessionKillsTable;
}

export function asBool(value: boolean | number): boolean {
  return value === true || value === 1;
}
