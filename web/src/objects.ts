/** Spec objects through /api/v1/objects, and the records the console shows beside them. */
import { api } from './api.ts';
import type { SpecDocument } from './ui.tsx';

export async function listObjects(kind: string, signal?: AbortSignal): Promise<SpecDocument[]> {
  const answer = await api<{ items: SpecDocument[] }>('GET', `/objects?kind=${encodeURIComponent(kind)}`, signal === undefined ? {} : { signal });
  return answer.items.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}

export async function getObject(kind: string, name: string, signal?: AbortSignal): Promise<SpecDocument> {
  return api<SpecDocument>('GET', `/objects/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`, signal === undefined ? {} : { signal });
}

/** Creates (`version` undefined: only if it does not exist) or replaces (at `version`) one object. */
export async function putObject(doc: SpecDocument, version: number | undefined): Promise<SpecDocument> {
  const path = `/objects/${encodeURIComponent(doc.kind)}/${encodeURIComponent(doc.metadata.name)}`;
  const answer = await api<{ object: SpecDocument }>('PUT', path, version === undefined ? { body: doc, ifNoneMatch: true } : { body: doc, ifMatch: version });
  return answer.object;
}

export async function deleteObject(kind: string, name: string, version: number | undefined): Promise<void> {
  await api('DELETE', `/objects/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`, version === undefined ? {} : { ifMatch: version });
}

export interface UserRecord {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
  disabled: boolean;
  source?: string;
  hasPassword?: boolean;
  hasTotp?: boolean;
  lockedUntil?: string | null;
  lastLoginAt?: string | null;
  lastSeen?: string | null;
  version: number;
}

export interface FactorResult {
  type: string;
  profile: string;
  met: boolean;
  effect: string;
  observed: string | number | boolean | null;
  required: string;
  reason?: string;
  remedy?: string;
}

export interface DeviceTrust {
  level?: string;
  profile?: string;
  profiles?: string[];
  factors?: FactorResult[];
  reasons?: string[];
  explanation?: string;
  stale?: boolean;
  scoredAt?: string;
  staleAt?: string;
  mdmPresent?: boolean;
  mdmCompliant?: boolean;
}

export interface DeviceRecord {
  id: string;
  userId: string;
  platform: string;
  osVersion?: string | null;
  serial?: string | null;
  hostname?: string | null;
  ownership?: string;
  registeredAt?: string;
  banned: boolean;
  lastSeen?: string | null;
  trust?: DeviceTrust | null;
  postureAt?: string | null;
  mdm?: Record<string, { managed?: boolean; compliant?: boolean; score?: number; at?: string; source?: string }>;
  trustOverrides?: Array<{ source?: string; maxLevel?: string; reason?: string; setBy?: string; setAt?: string; expiresAt?: string }>;
  version: number;
}

export async function listUsers(signal?: AbortSignal): Promise<UserRecord[]> {
  const answer = await api<{ items: UserRecord[] }>('GET', '/users', signal === undefined ? {} : { signal });
  return answer.items.sort((a, b) => a.name.localeCompare(b.name));
}

export async function listDevices(signal?: AbortSignal): Promise<DeviceRecord[]> {
  const answer = await api<{ items: DeviceRecord[] }>('GET', '/devices', signal === undefined ? {} : { signal });
  return answer.items;
}

/** Items from an answer that may be `{items}` or a named list (`{sessions}`, `{peers}`). */
export function itemsOf<T>(answer: unknown, key: string): T[] {
  if (Array.isArray(answer)) return answer as T[];
  if (answer !== null && typeof answer === 'object') {
    const record = answer as Record<string, unknown>;
    if (Array.isArray(record.items)) return record.items as T[];
    if (Array.isArray(record[key])) return record[key] as T[];
  }
  return [];
}
