/**
 * From the store's records to the config stream's wire items (src/lib/config/wire.ts): spec
 * documents as `causeway get -o yaml` shows them, and principal state cut down to what decisions
 * need. Nothing else a record holds (password hashes, device public keys, hostnames, posture detail,
 * other kinds' specs, which may hold secrets) ever reaches a peer.
 */
import { isStreamedSpecKind, DEVICE_CHANGE_KIND, REVOKED_CERTIFICATE_CHANGE_KIND, SESSION_KILL_CHANGE_KIND, USER_CHANGE_KIND } from '../../lib/config/wire.ts';
import type { WireChange, WireDevice, WireUser } from '../../lib/config/wire.ts';
import { API_VERSION } from '../../lib/spec/index.ts';
import { CERTIFICATE_KIND, DEVICE_KIND, SESSION_KILL_KIND, USER_KIND } from '../store/index.ts';
import type { CertificateRecord, Change, DeviceRecord, SessionKillRecord, StoredObject, UserRecord } from '../store/index.ts';

/** A stored object as its spec document. Only the metadata fields specs define are carried. */
export function specDocument(object: Pick<StoredObject, 'kind' | 'name' | 'metadata' | 'spec'>): Record<string, unknown> {
  const metadata: Record<string, unknown> = { name: object.name };
  for (const key of ['description', 'link'] as const) {
    const value = object.metadata?.[key];
    if (typeof value === 'string') metadata[key] = value;
  }
  return { apiVersion: API_VERSION, kind: object.kind, metadata, spec: object.spec };
}

export function wireUser(user: UserRecord): WireUser {
  return { id: user.id, name: user.name, email: user.email, groups: [...user.groups], disabled: user.disabled };
}

/**
 * The trust verdict is read from the device's `trust` record, as trust scoring writes it:
 * `level` (High, Medium, Low, AlwaysDeny), `reasons` (the unmet factors; `unmet` is read too) and
 * `mdmPresent` (or `mdm.present`). A device without a verdict has an unknown level, which denies.
 */
export function wireDevice(device: DeviceRecord): WireDevice {
  const trust = device.trust ?? {};
  const level = typeof trust.level === 'string' ? trust.level : typeof trust.trustLevel === 'string' ? trust.trustLevel : null;
  const reasonsValue = Array.isArray(trust.reasons) ? trust.reasons : Array.isArray(trust.unmet) ? trust.unmet : [];
  const reasons = (reasonsValue as unknown[]).filter((r): r is string => typeof r === 'string').slice(0, 64).map((r) => r.slice(0, 256));
  const mdm = trust.mdm;
  const mdmPresent = trust.mdmPresent === true || (mdm !== null && typeof mdm === 'object' && (mdm as Record<string, unknown>).present === true);
  return {
    id: device.id,
    user: device.userId,
    ownership: device.ownership,
    platform: device.platform,
    serial: device.serial,
    known: true,
    mdmPresent,
    banned: device.banned,
    trustLevel: level,
    trustReasons: reasons,
  };
}

/** A change-feed entry as a wire change; undefined for kinds peers never see. */
export function wireChange(change: Change): WireChange | undefined {
  if (isStreamedSpecKind(change.kind)) {
    if (change.op === 'delete' || change.object === null) return { kind: change.kind, name: change.name, op: 'delete' };
    return { kind: change.kind, name: change.name, op: 'put', object: specDocument(change.object as StoredObject) };
  }
  if (change.kind === USER_KIND) {
    if (change.op === 'delete' || change.object === null) return { kind: USER_CHANGE_KIND, name: change.name, op: 'delete' };
    return { kind: USER_CHANGE_KIND, name: change.name, op: 'put', object: wireUser(change.object as UserRecord) };
  }
  if (change.kind === DEVICE_KIND) {
    if (change.op === 'delete' || change.object === null) return { kind: DEVICE_CHANGE_KIND, name: change.name, op: 'delete' };
    return { kind: DEVICE_CHANGE_KIND, name: change.name, op: 'put', object: wireDevice(change.object as DeviceRecord) };
  }
  if (change.kind === CERTIFICATE_KIND) {
    const record = change.object as CertificateRecord | null;
    const revoked = change.op === 'put' && record !== null && record.revokedAt !== null;
    return { kind: REVOKED_CERTIFICATE_CHANGE_KIND, name: change.name, op: revoked ? 'put' : 'delete' };
  }
  if (change.kind === SESSION_KILL_KIND) {
    if (change.op === 'delete' || change.object === null) return { kind: SESSION_KILL_CHANGE_KIND, name: change.name, op: 'delete' };
    // Who and when only: what the session was stays in the audit log.
    const kill = change.object as SessionKillRecord;
    return { kind: SESSION_KILL_CHANGE_KIND, name: change.name, op: 'put', object: { by: kill.by, at: kill.at } };
  }
  return undefined;
}
