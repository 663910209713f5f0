/**
 * One per control-plane process: follows the store's change feed (its `watch`, which also hears
 * other replicas on the same database) and keeps, in memory, what peers are sent:
 *
 * - the current wire state (spec documents of the streamed kinds, users, devices, revoked serials)
 *   at `revision`, from which a snapshot record is rendered once per revision and audience;
 * - the recent wire changes, in revision order, covering every change after `horizon`, so a peer
 *   that comes back with `since >= horizon` gets only what it missed, even after this process
 *   restarted (the buffer is primed from the store at start).
 *
 * Everything a stream is sent is decided synchronously against that memory, so a peer attaching
 * while changes arrive can neither miss one nor get one twice. Subscribers are called in commit
 * order with one delta per batch the feed delivered.
 */
import { encodeRecord, receivesPrincipals, DEVICE_CHANGE_KIND, REVOKED_CERTIFICATE_CHANGE_KIND, SESSION_KILL_CHANGE_KIND, STREAMED_SPEC_KINDS, USER_CHANGE_KIND } from '../../lib/config/wire.ts';
import type { StreamAudience, StreamedSpecKind, WireChange, WireDevice, WireSnapshot, WireUser } from '../../lib/config/wire.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { coalesce } from '../../lib/tasks.ts';
import { CERTIFICATE_KIND } from '../store/index.ts';
import type { CertificateRecord, Store } from '../store/index.ts';
import { specDocument, wireChange, wireDevice, wireUser } from './translate.ts';

export interface HubOptions {
  store: Store;
  logger: Logger;
  clock: Clock;
  /** How many recent changes are kept for resuming peers. Default 2000. */
  retainChanges?: number;
  /** Changes read from the store per query while catching up. Default 1000. */
  pageSize?: number;
}

interface Entry {
  revision: number;
  change: WireChange;
}

export interface HubSubscriber {
  readonly audience: StreamAudience;
  /** A batch of changes committed up to `revision` (already filtered for the audience; may be empty). */
  delta(revision: number, line: string): void;
  /** A certificate serial (upper-case hex) was revoked. */
  revoked(serial: string): void;
}

export type Catchup = { kind: 'snapshot'; line: string } | { kind: 'delta'; line: string } | { kind: 'current'; revision: number };

export class ConfigHub {
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #retain: number;
  readonly #pageSize: number;
  readonly #specs = new Map<StreamedSpecKind, Map<string, unknown>>(STREAMED_SPEC_KINDS.map((k) => [k, new Map()]));
  readonly #users = new Map<string, WireUser>();
  readonly #devices = new Map<string, WireDevice>();
  /** Serial → notAfter (ISO) of revoked certificates. */
  readonly #revoked = new Map<string, string>();
  /** Ids of live sessions with a pending SessionKill (access tiers cut them). */
  readonly #kills = new Set<string>();
  readonly #subscribers = new Set<HubSubscriber>();
  readonly #rendered = new Map<boolean, { revision: number; line: string }>();
  #entries: Entry[] = [];
  #horizon = 0;
  #revision = 0;
  #unwatch: (() => void) | undefined;
  /** One pass of the feed at a time; calls meanwhile share it and ask for one more (lib/tasks.ts). */
  readonly #pull = coalesce(async () => {
    try {
      await this.#pullOnce();
    } catch (err) {
      if (!this.#closed) this.#logger.warn({ err }, 'reading the change feed for the config stream failed; will retry on the next change');
    }
  }, () => this.#closed);
  #closed = false;

  constructor(options: HubOptions) {
    this.#store = options.store;
    this.#logger = options.logger;
    this.#clock = options.clock;
    this.#retain = options.retainChanges ?? 2000;
    this.#pageSize = options.pageSize ?? 1000;
  }

  get revision(): number {
    return this.#revision;
  }

  /** Loads the state and the recent changes, then follows the feed. */
  async start(): Promise<void> {
    const snapshot = await this.#store.snapshot();
    for (const object of snapshot.objects) {
      const map = this.#specs.get(object.kind as StreamedSpecKind);
      map?.set(object.name, specDocument(object));
    }
    for (const user of snapshot.users) this.#users.set(user.id, wireUser(user));
    for (const device of snapshot.devices) this.#devices.set(device.id, wireDevice(device));
    const revoked = await this.#store.listRevokedCertificates();
    for (const c of revoked) this.#revoked.set(c.serial, c.notAfter);
    for (const serial of snapshot.revokedSerials) if (!this.#revoked.has(serial)) this.#revoked.set(serial, '9999-12-31T23:59:59.999Z');
    // Read after the snapshot: a kill committed in between is in both, which is harmless (a set).
    for (const kill of await this.#store.listSessionKills()) this.#kills.add(kill.id);
    this.#revision = snapshot.revision;
    // Every change in (horizon, revision] is primed, so peers resume across restarts.
    const prime = Math.min(this.#retain, this.#pageSize);
    this.#horizon = Math.max(0, snapshot.revision - prime);
    const recent = snapshot.revision === 0 || prime === 0 ? [] : await this.#store.changesSince(this.#horizon, prime);
    for (const change of recent) {
      if (change.revision > snapshot.revision) break;
      const wire = wireChange(change);
      if (wire !== undefined) this.#entries.push({ revision: change.revision, change: wire });
    }
    this.#unwatch = this.#store.watch(() => {
      void this.pull();
    });
  }

  /** Reads the feed until it has everything the store has committed; concurrent calls share one pass. */
  pull(): Promise<void> {
    return this.#pull.run();
  }

  async #pullOnce(): Promise<void> {
    for (;;) {
      const changes = await this.#store.changesSince(this.#revision, this.#pageSize);
      if (this.#closed || changes.length === 0) return;
      const batch: Entry[] = [];
      const revokedNow: string[] = [];
      for (const change of changes) {
        if (change.revision <= this.#revision) continue;
        const wire = wireChange(change);
        if (wire === undefined) continue;
        batch.push({ revision: change.revision, change: wire });
        this.#apply(wire);
        if (change.kind === CERTIFICATE_KIND && wire.op === 'put') {
          const record = change.object as CertificateRecord | null;
          this.#revoked.set(change.name, record?.notAfter ?? '9999-12-31T23:59:59.999Z');
          revokedNow.push(change.name);
        }
      }
      const last = changes[changes.length - 1].revision;
      if (last <= this.#revision) return;
      this.#revision = last;
      this.#entries.push(...batch);
      if (this.#entries.length > this.#retain) {
        const dropped = this.#entries.splice(0, this.#entries.length - this.#retain);
        this.#horizon = dropped[dropped.length - 1].revision;
      }
      this.#broadcast(last, batch, revokedNow);
      if (changes.length < this.#pageSize) return;
    }
  }

  #apply(change: WireChange): void {
    const specs = this.#specs.get(change.kind as StreamedSpecKind);
    if (specs !== undefined) {
      if (change.op === 'put') specs.set(change.name, change.object);
      else specs.delete(change.name);
    } else if (change.kind === USER_CHANGE_KIND) {
      if (change.op === 'put') this.#users.set(change.name, change.object as WireUser);
      else this.#users.delete(change.name);
    } else if (change.kind === DEVICE_CHANGE_KIND) {
      if (change.op === 'put') this.#devices.set(change.name, change.object as WireDevice);
      else this.#devices.delete(change.name);
    } else if (change.kind === REVOKED_CERTIFICATE_CHANGE_KIND && change.op === 'delete') {
      this.#revoked.delete(change.name);
    } else if (change.kind === SESSION_KILL_CHANGE_KIND) {
      if (change.op === 'put') this.#kills.add(change.name);
      else this.#kills.delete(change.name);
    }
  }

  #broadcast(revision: number, batch: Entry[], revoked: string[]): void {
    const lines = new Map<boolean, string>();
    const lineFor = (principals: boolean): string => {
      let line = lines.get(principals);
      if (line === undefined) {
        line = deltaLine(revision, batch, principals);
        lines.set(principals, line);
      }
      return line;
    };
    for (const subscriber of [...this.#subscribers]) {
      try {
        subscriber.delta(revision, lineFor(receivesPrincipals(subscriber.audience)));
        for (const serial of revoked) subscriber.revoked(serial);
      } catch (err) {
        this.#logger.error({ err }, 'a config stream subscriber failed');
      }
    }
  }

  /**
   * What a peer resuming after `since` is sent first, and from then on the subscriber is called
   * with every later batch. Synchronous, so nothing falls between the two.
   */
  attach(subscriber: HubSubscriber, since: number | undefined): Catchup {
    this.#subscribers.add(subscriber);
    const principals = receivesPrincipals(subscriber.audience);
    if (since !== undefined && since === this.#revision) return { kind: 'current', revision: since };
    if (since !== undefined && since > 0 && since >= this.#horizon && since < this.#revision) {
      return { kind: 'delta', line: deltaLine(this.#revision, this.#entries.filter((e) => e.revision > since), principals) };
    }
    return { kind: 'snapshot', line: this.#snapshotLine(principals, since !== undefined && since > this.#revision) };
  }

  detach(subscriber: HubSubscriber): void {
    this.#subscribers.delete(subscriber);
  }

  /** Whether a serial (any case) is revoked, as far as this hub has seen. */
  isRevoked(serial: string): boolean {
    return this.#revoked.has(serial) || this.#revoked.has(serial.toUpperCase()) || this.#revoked.has(serial.toLowerCase());
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  subscribers(): HubSubscriber[] {
    return [...this.#subscribers];
  }

  #snapshotLine(principals: boolean, reset: boolean): string {
    const cached = this.#rendered.get(principals);
    let line: string;
    if (cached !== undefined && cached.revision === this.#revision) {
      line = cached.line;
    } else {
      const now = new Date(this.#clock.now()).toISOString();
      const byName = (kind: StreamedSpecKind): unknown[] => [...(this.#specs.get(kind) ?? new Map<string, unknown>()).entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, doc]) => doc);
      const snapshot: WireSnapshot = {
        services: byName('Service'),
        accessTiers: byName('AccessTier'),
        connectors: byName('Connector'),
        policies: byName('Policy'),
        roles: byName('Role'),
        revokedSerials: [...this.#revoked.entries()].filter(([, notAfter]) => notAfter > now).map(([serial]) => serial).sort(),
      };
      if (principals) {
        snapshot.users = [...this.#users.values()];
        snapshot.devices = [...this.#devices.values()];
        if (this.#kills.size > 0) snapshot.sessionKills = [...this.#kills].sort();
      }
      line = encodeRecord({ type: 'snapshot', revision: this.#revision, snapshot });
      this.#rendered.set(principals, { revision: this.#revision, line });
    }
    if (!reset) return line;
    // The peer is ahead of this database (restored or replaced): tell it to take this state anyway.
    return line.replace(/^\{"type":"snapshot",/, '{"type":"snapshot","reset":true,');
  }

  close(): void {
    this.#closed = true;
    this.#unwatch?.();
    this.#unwatch = undefined;
    this.#subscribers.clear();
  }
}

function deltaLine(revision: number, entries: Entry[], principals: boolean): string {
  const changes: WireChange[] = [];
  for (const e of entries) {
    if (!principals && (e.change.kind === USER_CHANGE_KIND || e.change.kind === DEVICE_CHANGE_KIND || e.change.kind === SESSION_KILL_CHANGE_KIND)) continue;
    changes.push(e.change);
  }
  return encodeRecord({ type: 'delta', revision, changes });
}
