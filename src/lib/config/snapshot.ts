/**
 * What the access tier and connector decide with: one immutable snapshot of the configuration,
 * swapped as a whole when a new version arrives (a consumer keeps one reference and never sees a
 * half-applied change). Where snapshots come from (a file, the control plane's config stream, a
 * test) is a ConfigSource.
 */
import { createHash } from 'node:crypto';
import type { DeviceState, UserState } from '../policy/types.ts';
import type { AccessTierSpec, ConnectorSpec, PolicySpec, RoleSpec, ServiceSpec, SpecObject } from '../spec/index.ts';

export interface ConfigSnapshot {
  /** Identifies the content: equal versions mean equal configuration. */
  version: string;
  services: ServiceSpec[];
  accessTiers: AccessTierSpec[];
  connectors: ConnectorSpec[];
  policies: PolicySpec[];
  roles: RoleSpec[];
  /** Serial numbers (lower-case hex) of revoked certificates. */
  revokedSerials: string[];
  /**
   * The control plane's change-feed revision this snapshot reflects (config stream only; a file or
   * a test has none).
   */
  revision?: number;
  /**
   * Principal state for decisions, streamed by the control plane to access tiers (never to
   * connectors). Undefined when the source carries none (a spec file): deciders then fall back to
   * checking the certificate alone. See `principalDirectory` in remote-source.ts.
   */
  users?: UserState[];
  devices?: DeviceState[];
  /**
   * Ids of live sessions an admin ordered cut (the config stream's SessionKill, src/lib/config/wire.ts);
   * the access tier holding one cuts it. Undefined or empty: none.
   */
  sessionKills?: string[];
}

export interface ConfigSource {
  /** The last good snapshot, or undefined before the first one. */
  current(): ConfigSnapshot | undefined;
  /** Called with every new snapshot (not with the current one); returns the unsubscribe function. */
  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void;
  /** The first snapshot; rejects with a UserError when there cannot be one (see each implementation). */
  ready(): Promise<ConfigSnapshot>;
  close(): Promise<void>;
}

/**
 * Builds a frozen snapshot. Each list is sorted by name, so the order of documents does not matter;
 * `version` defaults to the first 16 hex characters of the SHA-256 of the canonical content. The
 * given objects are copied, never frozen in place.
 */
export function snapshotFromObjects(objects: SpecObject[], extra: { revokedSerials?: string[]; version?: string } = {}): ConfigSnapshot {
  const byName = <T extends { metadata: { name: string } }>(list: T[]): T[] => list.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  const copies = structuredClone(objects);
  const content = {
    services: byName(copies.filter((o): o is ServiceSpec => o.kind === 'Service')),
    accessTiers: byName(copies.filter((o): o is AccessTierSpec => o.kind === 'AccessTier')),
    connectors: byName(copies.filter((o): o is ConnectorSpec => o.kind === 'Connector')),
    policies: byName(copies.filter((o): o is PolicySpec => o.kind === 'Policy')),
    roles: byName(copies.filter((o): o is RoleSpec => o.kind === 'Role')),
    revokedSerials: [...new Set((extra.revokedSerials ?? []).map((s) => s.toLowerCase()))].sort(),
  };
  const version = extra.version ?? createHash('sha256').update(canonicalJson(content)).digest('hex').slice(0, 16);
  return deepFreeze({ version, ...content });
}

/** Freezes a value and everything reachable from it; returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}

/** JSON with object keys sorted at every level, so equal content always hashes the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((k) => record[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
