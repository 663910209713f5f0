/**
 * Live, allowed connections, indexed by what a decision flip names: a service, a user, a device, a
 * certificate serial, a connector. A config change re-checks every live connection; the control
 * plane's revocations cut precisely through `cut(filter)` without scanning everything.
 */
import type { PeerIdentity } from '../lib/pki/index.ts';
import type { Target } from '../lib/net/target.ts';

export interface LiveConnection {
  readonly id: string;
  readonly service: string;
  readonly sni: string;
  readonly identity: PeerIdentity;
  /** The checked CONNECT target (CHAIN) or the fixed backend (TCP). */
  readonly target: Target;
  readonly connector: string | undefined;
  readonly source: string;
  readonly startedAt: number;
  /** Ends the connection now; its access event records `reason` as the close reason. */
  cut(reason: string): void;
  /** Bytes relayed so far: from the client (up) and to it (down), the CONNECT exchange left out. */
  bytes(): { up: number; down: number };
}

export interface ConnectionFilter {
  service?: string;
  user?: string;
  device?: string;
  serial?: string;
  connector?: string;
}

type IndexKey = keyof ConnectionFilter;

function keysOf(c: LiveConnection): Array<[IndexKey, string | undefined]> {
  return [
    ['service', c.service],
    ['user', c.identity.user],
    ['device', c.identity.device],
    ['serial', c.identity.serial],
    ['connector', c.connector],
  ];
}

export class ConnectionRegistry {
  readonly #all = new Map<string, LiveConnection>();
  readonly #listeners = new Set<() => void>();
  readonly #index: Record<IndexKey, Map<string, Set<LiveConnection>>> = {
    service: new Map(),
    user: new Map(),
    device: new Map(),
    serial: new Map(),
    connector: new Map(),
  };

  get size(): number {
    return this.#all.size;
  }

  /** Called after every add and remove (the live-session reporter); returns the function that stops it. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(): void {
    for (const listener of this.#listeners) listener();
  }

  add(c: LiveConnection): void {
    this.#all.set(c.id, c);
    this.#changed();
    for (const [key, value] of keysOf(c)) {
      if (value === undefined) continue;
      let set = this.#index[key].get(value);
      if (set === undefined) this.#index[key].set(value, (set = new Set()));
      set.add(c);
    }
  }

  remove(c: LiveConnection): void {
    if (!this.#all.delete(c.id)) return;
    this.#changed();
    for (const [key, value] of keysOf(c)) {
      if (value === undefined) continue;
      const set = this.#index[key].get(value);
      set?.delete(c);
      if (set?.size === 0) this.#index[key].delete(value);
    }
  }

  get(id: string): LiveConnection | undefined {
    return this.#all.get(id);
  }

  all(): LiveConnection[] {
    return [...this.#all.values()];
  }

  /** Connections matching every field given; an empty filter matches nothing (never "cut everything" by accident). */
  find(filter: ConnectionFilter): LiveConnection[] {
    const entries = (Object.entries(filter) as Array<[IndexKey, string | undefined]>).filter(([, v]) => v !== undefined) as Array<[IndexKey, string]>;
    if (entries.length === 0) return [];
    // Start from the smallest index set, then check the rest.
    let smallest: Set<LiveConnection> | undefined;
    for (const [key, value] of entries) {
      const set = this.#index[key].get(value);
      if (set === undefined) return [];
      if (smallest === undefined || set.size < smallest.size) smallest = set;
    }
    const result: LiveConnection[] = [];
    for (const c of smallest ?? []) {
      const keys = new Map(keysOf(c));
      if (entries.every(([key, value]) => keys.get(key) === value)) result.push(c);
    }
    return result;
  }

  /** Cuts every connection matching the filter; returns how many. */
  cut(filter: ConnectionFilter, reason: string): number {
    const matched = this.find(filter);
    for (const c of matched) c.cut(reason);
    return matched.length;
  }
}
