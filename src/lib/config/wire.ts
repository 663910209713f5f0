/**
 * The config stream: how the control plane tells access tiers, connectors and kube proxies what to
 * enforce (DESIGN §3 "Access tier ⇄ control plane"). This file is the contract; both ends import it.
 *
 *     GET /api/v1/config/stream?since=<revision>          (HTTPS, the peer's client certificate)
 *     200 Content-Type: application/x-ndjson               one JSON record per line, for as long as
 *                                                          both sides live:
 *
 *     {"type":"snapshot","revision":41,"snapshot":{…}}     the whole state at revision 41
 *     {"type":"delta","revision":42,"changes":[…]}         what changed up to revision 42
 *     {"type":"heartbeat","revision":42,"at":"…"}          every ~10 s, so both ends notice a dead stream
 *     {"type":"error","code":"cert-revoked","message":"…"} the control plane ends the stream (then closes it)
 *
 * Revisions are the store's change-feed revisions: shared by every control-plane replica on one
 * database, strictly increasing, with gaps. A peer resumes with `since=<the last revision it
 * applied>`; the server then sends only the delta records it missed (when its change log reaches
 * back that far), or a snapshot. `since` ahead of everything the database holds (a restored or
 * replaced database) gets a snapshot with `"reset":true`, the only record a peer applies although
 * its revision is not newer than what it has; every other record with a revision at or below the
 * peer's is ignored (a lagging replica never rolls a peer back).
 *
 * A delta's changes apply in order: each puts or deletes one item by kind and name —
 * spec objects (Service, AccessTier, Connector, Policy, Role: the spec document, as
 * `causeway get -o yaml` shows it), `User` (by id), `Device` (by id) and `RevokedCertificate`
 * (by serial; put = revoked, delete = no longer listed because it expired), and `SessionKill` (by
 * live session id: put = an admin ordered that session cut, with `{ by, at }`; delete = the order
 * expired, 10 minutes later). Kinds a peer does not know are ignored, so servers can add kinds (a
 * peer older than SessionKill simply does not cut on a console disconnect). Connectors receive no
 * users, devices or session kills (the snapshot omits those lists and deltas skip them): they decide
 * nothing about people or sessions.
 *
 * A SessionKill is state, not an event: the snapshot carries the pending ones (`sessionKills`), so an
 * access tier that reconnects within the 10 minutes still learns of it. The access tier holding that
 * session destroys it and records its access event with closeReason `disconnected-by-admin`; every
 * other access tier finds no such session and does nothing.
 *
 * Principal state is exactly what decisions need (lib/policy/types.ts) and nothing else: no
 * password hashes, public keys, hostnames or posture detail beyond the trust verdict.
 *
 * Failures before the stream starts are the API's JSON errors, `{ "error": { code, message } }`,
 * with 400 (bad `since`), 401 (`PEER_CERT_REFUSED`: no or unacceptable certificate — wrong type,
 * another CA, expired, revoked) or 503 (shutting down).
 */
import { z } from 'zod';
import { DEVICE_OWNERSHIP, DEVICE_PLATFORMS } from '../spec/index.ts';
import type { AccessTierSpec, ConnectorSpec, PolicySpec, RoleSpec, ServiceSpec, SpecKind } from '../spec/index.ts';
import type { DeviceState, DeviceTrustLevel, Ownership, Platform, UserState } from '../policy/types.ts';

export const CONFIG_STREAM_PATH = '/api/v1/config/stream';
export const CONFIG_STREAM_CONTENT_TYPE = 'application/x-ndjson';
/** How often the server sends a heartbeat when nothing else was sent. */
export const HEARTBEAT_INTERVAL_MS = 10_000;
/** Record sizes the client accepts (a snapshot of 10,000 users and devices is a few MiB). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

/** The spec kinds the stream carries; other kinds (trust profiles, device managers…) never leave the control plane. */
export const STREAMED_SPEC_KINDS = ['Service', 'AccessTier', 'Connector', 'Policy', 'Role'] as const satisfies readonly SpecKind[];
export type StreamedSpecKind = (typeof STREAMED_SPEC_KINDS)[number];

export const USER_CHANGE_KIND = 'User';
export const DEVICE_CHANGE_KIND = 'Device';
export const REVOKED_CERTIFICATE_CHANGE_KIND = 'RevokedCertificate';
export const SESSION_KILL_CHANGE_KIND = 'SessionKill';

/** Which peers may hold a config stream, and what they receive. */
export type StreamAudience = 'access-tier' | 'connector' | 'kube-proxy';
export const STREAM_AUDIENCES: readonly StreamAudience[] = ['access-tier', 'connector', 'kube-proxy'];

/** Whether an audience receives users and devices. */
export function receivesPrincipals(audience: StreamAudience): boolean {
  return audience !== 'connector';
}

// --- principal state -----------------------------------------------------------------------------

export interface WireUser {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
  disabled: boolean;
}

export interface WireDevice {
  id: string;
  /** The owning user's id. */
  user: string;
  ownership: string | null;
  platform: string | null;
  serial: string | null;
  /** Registered with the control plane; every device the control plane streams is. */
  known: boolean;
  mdmPresent: boolean;
  banned: boolean;
  /** High, Medium, Low or AlwaysDeny as trust scoring decided; null (or anything else) is unknown and denies. */
  trustLevel: string | null;
  /** The unmet factors behind the level. */
  trustReasons: string[];
}

const text = z.string().max(1024);
const id = z.string().min(1).max(256);

export const wireUserSchema = z.object({
  id,
  name: text,
  email: text.nullable(),
  groups: z.array(text).max(10_000),
  disabled: z.boolean(),
});

export const wireDeviceSchema = z.object({
  id,
  user: id,
  ownership: text.nullable(),
  platform: text.nullable(),
  serial: text.nullable(),
  known: z.boolean(),
  mdmPresent: z.boolean(),
  banned: z.boolean(),
  trustLevel: text.nullable(),
  trustReasons: z.array(text).max(256),
});

// --- records -------------------------------------------------------------------------------------

export interface WireSnapshot {
  services: unknown[];
  accessTiers: unknown[];
  connectors: unknown[];
  policies: unknown[];
  roles: unknown[];
  /** Omitted for connectors. */
  users?: WireUser[];
  devices?: WireDevice[];
  revokedSerials: string[];
  /** Ids of live sessions an admin ordered cut (pending SessionKill orders); omitted for connectors and by older servers. */
  sessionKills?: string[];
}

export interface WireChange {
  /** A streamed spec kind, User, Device or RevokedCertificate; others are ignored by the peer. */
  kind: string;
  /** Spec object name, user or device id, or certificate serial. */
  name: string;
  op: 'put' | 'delete';
  /** With `put`: the spec document, WireUser, WireDevice or `{ by, at }` (SessionKill); absent for RevokedCertificate. */
  object?: unknown;
}

export interface SnapshotRecord {
  type: 'snapshot';
  revision: number;
  /** The peer's `since` was ahead of the database: apply this although its revision is not newer. */
  reset?: boolean;
  snapshot: WireSnapshot;
}

export interface DeltaRecord {
  type: 'delta';
  /** The revision the peer is at once the changes are applied (at least the last change's). */
  revision: number;
  changes: WireChange[];
}

export interface HeartbeatRecord {
  type: 'heartbeat';
  revision: number;
  /** The server's time, ISO 8601. */
  at?: string;
}

export interface ErrorRecord {
  type: 'error';
  code: string;
  message: string;
}

export type StreamRecord = SnapshotRecord | DeltaRecord | HeartbeatRecord | ErrorRecord;

const revision = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const specList = z.array(z.unknown()).max(1_000_000);

export const wireSnapshotSchema = z.object({
  services: specList,
  accessTiers: specList,
  connectors: specList,
  policies: specList,
  roles: specList,
  users: z.array(wireUserSchema).max(10_000_000).optional(),
  devices: z.array(wireDeviceSchema).max(10_000_000).optional(),
  revokedSerials: z.array(z.string().regex(/^[0-9A-Fa-f]{1,128}$/)).max(10_000_000),
  sessionKills: z.array(z.string().min(1).max(256)).max(1_000_000).optional(),
});

export const wireChangeSchema = z.object({
  kind: z.string().min(1).max(64),
  name: z.string().min(1).max(256),
  op: z.enum(['put', 'delete']),
  object: z.unknown().optional(),
});

export const snapshotRecordSchema = z.object({ type: z.literal('snapshot'), revision, reset: z.boolean().optional(), snapshot: wireSnapshotSchema });
export const deltaRecordSchema = z.object({ type: z.literal('delta'), revision, changes: z.array(wireChangeSchema).max(1_000_000) });
export const heartbeatRecordSchema = z.object({ type: z.literal('heartbeat'), revision, at: z.string().max(64).optional() });
export const errorRecordSchema = z.object({ type: z.literal('error'), code: z.string().max(128), message: z.string().max(4096) });

export const streamRecordSchema = z.discriminatedUnion('type', [snapshotRecordSchema, deltaRecordSchema, heartbeatRecordSchema, errorRecordSchema]);

export type DecodedRecord = { ok: true; record: StreamRecord } | { ok: true; record: undefined; type: string } | { ok: false; message: string };

/**
 * Reads one line of the stream. A record of a type this version does not know is skipped
 * (`record: undefined`), so servers can add types; a record that is not JSON, or a known type with
 * bad fields, is an error (the client drops the stream and reconnects).
 */
export function decodeRecord(line: string): DecodedRecord {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, message: 'a config stream record is not JSON' };
  }
  const type: unknown = value !== null && typeof value === 'object' && 'type' in value ? value.type : undefined;
  if (typeof type !== 'string') return { ok: false, message: 'a config stream record has no type' };
  if (type !== 'snapshot' && type !== 'delta' && type !== 'heartbeat' && type !== 'error') return { ok: true, record: undefined, type: type.slice(0, 64) };
  const parsed = streamRecordSchema.safeParse(value);
  if (!parsed.success) return { ok: false, message: `a config stream ${type} record is malformed: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}` };
  return { ok: true, record: parsed.data };
}

/** One record as one line. */
export function encodeRecord(record: StreamRecord): string {
  return `${JSON.stringify(record)}\n`;
}

// --- from the wire to what deciders read -----------------------------------------------------------

const TRUST_LEVELS: readonly string[] = ['High', 'Medium', 'Low', 'AlwaysDeny'];

export function userState(user: WireUser): UserState {
  const state: UserState = { id: user.id, groups: [...user.groups], disabled: user.disabled };
  if (user.email !== null) state.email = user.email;
  return state;
}

/**
 * A device as the policy evaluator reads it. An ownership or platform this version does not know
 * is left out (matches no role that names ownership or platforms); a trust level that is not one of
 * the four is passed through as it is, and the evaluator denies it as `trust-unknown` (DT-07).
 */
export function deviceState(device: WireDevice): DeviceState {
  const state: DeviceState = {
    id: device.id,
    known: device.known,
    mdmPresent: device.mdmPresent,
    banned: device.banned,
    trustLevel: (device.trustLevel !== null && TRUST_LEVELS.includes(device.trustLevel) ? device.trustLevel : 'unknown') as DeviceTrustLevel,
    trustReasons: [...device.trustReasons],
  };
  if (device.ownership !== null && (DEVICE_OWNERSHIP as readonly string[]).includes(device.ownership)) state.ownership = device.ownership as Ownership;
  if (device.platform !== null && (DEVICE_PLATFORMS as readonly string[]).includes(device.platform)) state.platform = device.platform as Platform;
  if (device.serial !== null) state.serialNumber = device.serial;
  return state;
}

/** The spec object types of the streamed kinds, by kind. */
export interface StreamedSpecs {
  Service: ServiceSpec;
  AccessTier: AccessTierSpec;
  Connector: ConnectorSpec;
  Policy: PolicySpec;
  Role: RoleSpec;
}

export function isStreamedSpecKind(kind: string): kind is StreamedSpecKind {
  return (STREAMED_SPEC_KINDS as readonly string[]).includes(kind);
}
