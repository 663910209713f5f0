/**
 * Configuration from the control plane's config stream (wire.ts): what `causeway access-tier` and
 * `causeway connector` run on once they have enrolled.
 *
 * - One long-lived HTTPS request with the peer's certificate (read through a getter on every
 *   connect, so a renewed certificate is used from the next connection on).
 * - Each snapshot or delta that changes something becomes one new immutable ConfigSnapshot, swapped
 *   in as a whole and announced to subscribers synchronously, in the same tick the record arrived.
 *   Records at or below the revision already applied are ignored (a lagging replica never rolls a
 *   peer back), except a snapshot marked `reset`.
 * - A dropped stream, a refused connection or a stream silent for three heartbeats is reconnected
 *   with exponential backoff and full jitter, resuming from the last revision applied: the server
 *   sends only the deltas missed, or a snapshot.
 * - The last good state is handed to `persist` (at most once per `persistIntervalMs`, and on close)
 *   and read back through `loadPersisted` at start: a peer restarted while the control plane is
 *   down serves what it last knew (and resumes from it) instead of nothing. `status()` says so, for
 *   health endpoints.
 *
 * Spec objects are validated again here with the spec schemas; one that does not validate is left
 * out (and logged), which only ever removes access (fail closed).
 */
import type { IncomingMessage } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { CausewayError, errorMessage } from '../errors.ts';
import { describeErrorBody, openControlPlaneRequest } from '../enroll/transport.ts';
import type { PeerTlsMaterial } from '../enroll/transport.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import { directoryFromState } from '../policy/directory.ts';
import type { DeviceState, PrincipalDirectory, UserState } from '../policy/types.ts';
import { specSchemas } from '../spec/index.ts';
import type { SpecObject } from '../spec/index.ts';
import { deepFreeze } from './snapshot.ts';
import type { ConfigSnapshot, ConfigSource } from './snapshot.ts';
import { FirstSnapshotWaiters, SnapshotSubscribers } from './subscribers.ts';
import {
  CONFIG_STREAM_PATH, DEVICE_CHANGE_KIND, HEARTBEAT_INTERVAL_MS, MAX_RECORD_BYTES, REVOKED_CERTIFICATE_CHANGE_KIND, SESSION_KILL_CHANGE_KIND, STREAMED_SPEC_KINDS, USER_CHANGE_KIND,
  decodeRecord, deviceState, encodeRecord, isStreamedSpecKind, userState, wireDeviceSchema, wireUserSchema,
} from './wire.ts';
import type { StreamedSpecKind, WireChange, WireDevice, WireSnapshot, WireUser } from './wire.ts';

export interface RemoteConfigSourceOptions {
  /** https://host:port of the control plane (any replica). */
  controlPlaneUrl: string;
  /** The peer's current TLS material; called on every connect. */
  tls: () => PeerTlsMaterial;
  logger?: Logger;
  clock?: Clock;
  /** Stores the last good state (an opaque text); the entry point writes it to a file. */
  persist?: (text: string) => Promise<void>;
  /** Reads what `persist` stored, or undefined when there is nothing. */
  loadPersisted?: () => Promise<string | undefined>;
  /** How long ready() waits for the control plane before serving the persisted state. Default 5 s. */
  initialWaitMs?: number;
  /** A stream silent this long is dropped and reconnected. Default three heartbeats and a bit (35 s). */
  idleTimeoutMs?: number;
  /** Connect and response-head timeout. Default 10 s. */
  connectTimeoutMs?: number;
  /** Reconnect delays: exponential from initialMs to maxMs, full jitter. Default 250 ms to 30 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Persist at most this often. Default 1 s. */
  persistIntervalMs?: number;
  /** Jitter seam for tests. Default Math.random. */
  random?: () => number;
}

export interface RemoteConfigStatus {
  /** A stream is open and has delivered a record. */
  connected: boolean;
  /** The revision applied (the resume point); undefined before any state. */
  revision: number | undefined;
  /** The version of the snapshot being enforced. */
  version: string | undefined;
  /** Epoch ms of the last record from the control plane (any replica); undefined before the first. */
  lastContact: number | undefined;
  /** Epoch ms since when no stream has been up; undefined while connected. */
  unreachableSince: number | undefined;
  /** Serving a snapshot without a live stream: the control plane is unreachable. */
  stale: boolean;
  /** Where the snapshot being served came from. */
  source: 'none' | 'persisted' | 'control-plane';
  /** The last connection failure, for health output. */
  lastError: string | undefined;
}

/**
 * The PrincipalDirectory of a snapshot that carries principal state, for createPolicyDecider's
 * `directory` option; undefined for a snapshot without (a spec file), so the decider falls back to
 * checking the certificate.
 */
export function principalDirectory(snapshot: ConfigSnapshot): PrincipalDirectory | undefined {
  if (snapshot.users === undefined) return undefined;
  return directoryFromState({ users: snapshot.users, devices: snapshot.devices ?? [] });
}

// --- the state a stream builds ------------------------------------------------------------------

type LoadOutcome = { changed: boolean };

/**
 * The decoded state behind the snapshots: maps by kind and name, the wire forms kept for
 * persistence, and the sorted lists of each kind cached until that kind changes.
 */
class StreamState {
  readonly specs = new Map<StreamedSpecKind, Map<string, { wire: unknown; spec: SpecObject }>>();
  readonly users = new Map<string, { wire: WireUser; state: UserState }>();
  readonly devices = new Map<string, { wire: WireDevice; state: DeviceState }>();
  readonly revoked = new Set<string>();
  /** Live session ids with a pending SessionKill. */
  readonly kills = new Set<string>();
  principals = false;
  readonly #lists = new Map<string, unknown[]>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
    for (const kind of STREAMED_SPEC_KINDS) this.specs.set(kind, new Map());
  }

  load(snapshot: WireSnapshot): void {
    for (const map of this.specs.values()) map.clear();
    this.users.clear();
    this.devices.clear();
    this.revoked.clear();
    this.kills.clear();
    this.#lists.clear();
    const lists: Record<StreamedSpecKind, unknown[]> = { Service: snapshot.services, AccessTier: snapshot.accessTiers, Connector: snapshot.connectors, Policy: snapshot.policies, Role: snapshot.roles };
    for (const kind of STREAMED_SPEC_KINDS) {
      for (const doc of lists[kind]) {
        const name = nameOf(doc);
        if (name !== undefined) this.#putSpec(kind, name, doc);
      }
    }
    this.principals = snapshot.users !== undefined;
    for (const user of snapshot.users ?? []) this.users.set(user.id, { wire: user, state: deepFreeze(userState(user)) });
    for (const device of snapshot.devices ?? []) this.devices.set(device.id, { wire: device, state: deepFreeze(deviceState(device)) });
    for (const serial of snapshot.revokedSerials) this.revoked.add(serial.toLowerCase());
    for (const id of snapshot.sessionKills ?? []) this.kills.add(id);
  }

  /** Applies changes in order; whether anything changed. */
  apply(changes: WireChange[]): LoadOutcome {
    let changed = false;
    for (const change of changes) {
      if (isStreamedSpecKind(change.kind)) {
        const map = this.specs.get(change.kind);
        if (map === undefined) continue;
        this.#lists.delete(change.kind);
        if (change.op === 'delete') changed = map.delete(change.name) || changed;
        else {
          if (nameOf(change.object) !== change.name) {
            this.#logger.warn({ kind: change.kind, name: change.name }, 'a config change names another object than it carries; left out');
            changed = map.delete(change.name) || changed;
            continue;
          }
          this.#putSpec(change.kind, change.name, change.object);
          changed = true;
        }
      } else if (change.kind === USER_CHANGE_KIND) {
        if (!this.principals) continue;
        this.#lists.delete('users');
        if (change.op === 'delete') changed = this.users.delete(change.name) || changed;
        else {
          const parsed = wireUserSchema.safeParse(change.object);
          if (!parsed.success || parsed.data.id !== change.name) {
            this.#logger.warn({ user: change.name }, 'a streamed user is malformed; left out (denied)');
            changed = this.users.delete(change.name) || changed;
            continue;
          }
          this.users.set(change.name, { wire: parsed.data, state: deepFreeze(userState(parsed.data)) });
          changed = true;
        }
      } else if (change.kind === DEVICE_CHANGE_KIND) {
        if (!this.principals) continue;
        this.#lists.delete('devices');
        if (change.op === 'delete') changed = this.devices.delete(change.name) || changed;
        else {
          const parsed = wireDeviceSchema.safeParse(change.object);
          if (!parsed.success || parsed.data.id !== change.name) {
            this.#logger.warn({ device: change.name }, 'a streamed device is malformed; left out (denied)');
            changed = this.devices.delete(change.name) || changed;
            continue;
          }
          this.devices.set(change.name, { wire: parsed.data, state: deepFreeze(deviceState(parsed.data)) });
          changed = true;
        }
      } else if (change.kind === REVOKED_CERTIFICATE_CHANGE_KIND) {
        const serial = change.name.toLowerCase();
        if (!/^[0-9a-f]{1,128}$/.test(serial)) continue;
        this.#lists.delete('revoked');
        if (change.op === 'put') {
          if (!this.revoked.has(serial)) {
            this.revoked.add(serial);
            changed = true;
          }
        } else changed = this.revoked.delete(serial) || changed;
      } else if (change.kind === SESSION_KILL_CHANGE_KIND) {
        this.#lists.delete('kills');
        if (change.op === 'put') {
          if (!this.kills.has(change.name)) {
            this.kills.add(change.name);
            changed = true;
          }
        } else changed = this.kills.delete(change.name) || changed;
      }
      // Other kinds: a newer server's; ignored.
    }
    return { changed };
  }

  snapshot(version: string, revision: number): ConfigSnapshot {
    const snapshot: ConfigSnapshot = {
      version,
      revision,
      services: this.#specList('Service') as ConfigSnapshot['services'],
      accessTiers: this.#specList('AccessTier') as ConfigSnapshot['accessTiers'],
      connectors: this.#specList('Connector') as ConfigSnapshot['connectors'],
      policies: this.#specList('Policy') as ConfigSnapshot['policies'],
      roles: this.#specList('Role') as ConfigSnapshot['roles'],
      revokedSerials: this.#cached('revoked', () => [...this.revoked].sort()) as string[],
    };
    if (this.kills.size > 0) snapshot.sessionKills = this.#cached('kills', () => [...this.kills].sort()) as string[];
    if (this.principals) {
      snapshot.users = this.#cached('users', () => [...this.users.values()].map((u) => u.state)) as UserState[];
      snapshot.devices = this.#cached('devices', () => [...this.devices.values()].map((d) => d.state)) as DeviceState[];
    }
    // The lists and their items are frozen already; freezing the top finishes it without a deep walk.
    return Object.freeze(snapshot);
  }

  wire(): WireSnapshot {
    const specs = (kind: StreamedSpecKind): unknown[] => [...(this.specs.get(kind)?.values() ?? [])].map((s) => s.wire);
    const wire: WireSnapshot = { services: specs('Service'), accessTiers: specs('AccessTier'), connectors: specs('Connector'), policies: specs('Policy'), roles: specs('Role'), revokedSerials: [...this.revoked].sort() };
    if (this.kills.size > 0) wire.sessionKills = [...this.kills].sort();
    if (this.principals) {
      wire.users = [...this.users.values()].map((u) => u.wire);
      wire.devices = [...this.devices.values()].map((d) => d.wire);
    }
    return wire;
  }

  #putSpec(kind: StreamedSpecKind, name: string, doc: unknown): void {
    const map = this.specs.get(kind);
    if (map === undefined) return;
    const parsed = specSchemas[kind].safeParse(doc);
    if (!parsed.success) {
      this.#logger.warn({ kind, name, problems: parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`) }, 'a streamed spec does not validate; left out (fail closed)');
      map.delete(name);
      return;
    }
    map.set(name, { wire: doc, spec: deepFreeze(parsed.data) });
  }

  #specList(kind: StreamedSpecKind): unknown[] {
    return this.#cached(kind, () => {
      const entries = [...(this.specs.get(kind)?.entries() ?? [])];
      entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return entries.map(([, s]) => s.spec);
    });
  }

  #cached(key: string, build: () => unknown[]): unknown[] {
    let list = this.#lists.get(key);
    if (list === undefined) {
      list = Object.freeze(build()) as unknown[];
      this.#lists.set(key, list);
    }
    return list;
  }
}

function nameOf(doc: unknown): string | undefined {
  if (doc === null || typeof doc !== 'object') return undefined;
  const metadata = (doc as Record<string, unknown>).metadata;
  if (metadata === null || typeof metadata !== 'object') return undefined;
  const name = (metadata as Record<string, unknown>).name;
  return typeof name === 'string' ? name : undefined;
}

function versionOf(revision: number): string {
  return `rev-${revision}`;
}

// --- the source ------------------------------------------------------------------------------------

export class RemoteConfigSource implements ConfigSource {
  readonly #o: RemoteConfigSourceOptions;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #state: StreamState;
  readonly #subscribers = new SnapshotSubscribers();
  readonly #waiters = new FirstSnapshotWaiters();
  readonly #stop = new AbortController();
  #hasState = false;
  #revision: number | undefined;
  #current: ConfigSnapshot | undefined;
  #pending: ConfigSnapshot | undefined;
  #source: RemoteConfigStatus['source'] = 'none';
  #connected = false;
  #lastContact: number | undefined;
  #unreachableSince: number;
  #lastError: string | undefined;
  #abortStream: (() => void) | undefined;
  #dirty = false;
  #lastPersist = 0;
  #persistTimer: NodeJS.Timeout | undefined;
  #persisting: Promise<void> | undefined;
  #closed = false;
  readonly #running: Promise<void>;

  constructor(options: RemoteConfigSourceOptions) {
    this.#o = options;
    this.#logger = (options.logger ?? silentLogger()).child({ component: 'config-stream' });
    this.#clock = options.clock ?? systemClock;
    this.#state = new StreamState(this.#logger);
    this.#unreachableSince = this.#clock.now();
    this.#running = this.#run().catch((err: unknown) => this.#logger.error({ err }, 'the config stream loop failed; this is a bug'));
  }

  current(): ConfigSnapshot | undefined {
    return this.#current;
  }

  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void {
    return this.#subscribers.subscribe(listener);
  }

  ready(): Promise<ConfigSnapshot> {
    return this.#waiters.wait(this.#current, this.#closed);
  }

  status(): RemoteConfigStatus {
    const now = this.#clock.now();
    const idle = this.#o.idleTimeoutMs ?? 3 * HEARTBEAT_INTERVAL_MS + 5_000;
    const live = this.#connected && this.#lastContact !== undefined && now - this.#lastContact <= idle;
    return {
      connected: this.#connected,
      revision: this.#revision,
      version: this.#current?.version,
      lastContact: this.#lastContact,
      unreachableSince: this.#connected ? undefined : this.#unreachableSince,
      stale: !live,
      source: this.#source,
      lastError: this.#lastError,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop.abort();
    this.#abortStream?.();
    this.#waiters.rejectClosed();
    await this.#running;
    clearTimeout(this.#persistTimer);
    await this.#persisting;
    if (this.#dirty) await this.#persistNow();
    this.#subscribers.clear();
  }

  async #run(): Promise<void> {
    await this.#loadPersisted();
    const initialWaitMs = this.#o.initialWaitMs ?? 5_000;
    let fallback: NodeJS.Timeout | undefined;
    if (this.#hasState) {
      fallback = setTimeout(() => this.#usePersisted('the control plane did not answer in time'), initialWaitMs);
      fallback.unref();
    }
    const initialMs = this.#o.backoff?.initialMs ?? 250;
    const maxMs = this.#o.backoff?.maxMs ?? 30_000;
    const random = this.#o.random ?? Math.random;
    let attempt = 0;
    try {
      while (!this.#closed) {
        const gotRecords = await this.#connectOnce();
        if (this.#closed) break;
        if (gotRecords) attempt = 0;
        // A peer with persisted state that cannot reach the control plane serves that state now.
        this.#usePersisted('the control plane is unreachable');
        const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
        attempt++;
        const wait = Math.max(10, Math.round(random() * ceiling));
        try {
          await delay(wait, undefined, { signal: this.#stop.signal });
        } catch {
          break;
        }
      }
    } finally {
      clearTimeout(fallback);
    }
  }

  async #loadPersisted(): Promise<void> {
    if (this.#o.loadPersisted === undefined) return;
    let text: string | undefined;
    try {
      text = await this.#o.loadPersisted();
    } catch (err) {
      this.#logger.warn({ err }, 'the persisted configuration cannot be read; waiting for the control plane');
      return;
    }
    if (text === undefined || text === '') return;
    const decoded = decodeRecord(text.trim());
    if (!decoded.ok || decoded.record?.type !== 'snapshot') {
      this.#logger.warn({ problem: decoded.ok ? 'not a snapshot' : decoded.message }, 'the persisted configuration is unusable; waiting for the control plane');
      return;
    }
    this.#state.load(decoded.record.snapshot);
    this.#hasState = true;
    this.#revision = decoded.record.revision;
    this.#pending = this.#state.snapshot(versionOf(decoded.record.revision), decoded.record.revision);
    this.#logger.info({ revision: this.#revision }, 'loaded the last good configuration; resuming the config stream from it');
  }

  /** Serves the persisted state when nothing newer has been announced yet. */
  #usePersisted(why: string): void {
    if (this.#current !== undefined || this.#pending === undefined || this.#closed) return;
    this.#logger.warn({ revision: this.#revision, why }, 'serving the last good configuration; the control plane is unreachable');
    this.#source = 'persisted';
    this.#announce(this.#pending);
  }

  /** One connection: resolves when it ends; whether any record arrived on it. */
  async #connectOnce(): Promise<boolean> {
    const since = this.#hasState && this.#revision !== undefined ? `?since=${this.#revision}` : '';
    let response: IncomingMessage;
    let abort: () => void;
    try {
      ({ response, abort } = await openControlPlaneRequest({
        baseUrl: this.#o.controlPlaneUrl,
        path: `${CONFIG_STREAM_PATH}${since}`,
        method: 'GET',
        tls: this.#o.tls(),
        timeoutMs: this.#o.connectTimeoutMs ?? 10_000,
        signal: this.#stop.signal,
        headers: { accept: 'application/x-ndjson' },
      }));
    } catch (err) {
      this.#failed(err);
      return false;
    }
    if (this.#closed) {
      abort();
      return false;
    }
    this.#abortStream = abort;
    if (response.statusCode !== 200) {
      const body = await readSmallBody(response).catch(() => '');
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        parsed = undefined;
      }
      this.#failed(new CausewayError(response.statusCode === 401 ? 'CONFIG_STREAM_REFUSED' : 'CONFIG_STREAM_FAILED', `the control plane refused the config stream with ${response.statusCode ?? 0} (${describeErrorBody(parsed)})`, { retryable: true }));
      return false;
    }
    return await this.#read(response, abort);
  }

  #read(response: IncomingMessage, abort: () => void): Promise<boolean> {
    const idleMs = this.#o.idleTimeoutMs ?? 3 * HEARTBEAT_INTERVAL_MS + 5_000;
    return new Promise((resolve) => {
      let got = false;
      let parts: Buffer[] = [];
      let partBytes = 0;
      let ended = false;
      let idle: NodeJS.Timeout | undefined;
      const finish = (err: unknown): void => {
        if (ended) return;
        ended = true;
        clearTimeout(idle);
        this.#abortStream = undefined;
        abort();
        if (this.#connected) this.#unreachableSince = this.#clock.now();
        this.#connected = false;
        if (err !== undefined) this.#failed(err);
        resolve(got);
      };
      const armIdle = (): void => {
        clearTimeout(idle);
        idle = setTimeout(() => finish(new CausewayError('CONFIG_STREAM_SILENT', `the config stream was silent for ${idleMs} ms`, { retryable: true })), idleMs);
        idle.unref();
      };
      armIdle();
      response.on('data', (chunk: Buffer) => {
        if (ended) return;
        armIdle();
        let start = 0;
        for (;;) {
          const newline = chunk.indexOf(0x0a, start);
          if (newline === -1) break;
          const piece = chunk.subarray(start, newline);
          const line = partBytes === 0 ? piece.toString('utf8') : Buffer.concat([...parts, piece]).toString('utf8');
          parts = [];
          partBytes = 0;
          start = newline + 1;
          if (line.trim() === '') continue;
          const problem = this.#onLine(line);
          if (problem !== undefined) {
            finish(problem);
            return;
          }
          got = true;
          if (ended) return;
        }
        if (start < chunk.length) {
          parts.push(chunk.subarray(start));
          partBytes += chunk.length - start;
          if (partBytes > MAX_RECORD_BYTES) finish(new CausewayError('CONFIG_STREAM_RECORD_TOO_LARGE', `a config stream record is larger than ${MAX_RECORD_BYTES} bytes`, { retryable: true }));
        }
      });
      response.once('end', () => finish(new CausewayError('CONFIG_STREAM_ENDED', 'the control plane ended the config stream', { retryable: true })));
      response.once('error', (err) => finish(err));
      response.once('close', () => finish(new CausewayError('CONFIG_STREAM_ENDED', 'the config stream connection closed', { retryable: true })));
    });
  }

  /** Handles one record; a returned error drops the stream. */
  #onLine(line: string): Error | undefined {
    const decoded = decodeRecord(line);
    if (!decoded.ok) return new CausewayError('CONFIG_STREAM_PROTOCOL', decoded.message, { retryable: true });
    const now = this.#clock.now();
    this.#lastContact = now;
    if (!this.#connected) {
      this.#connected = true;
      this.#lastError = undefined;
      this.#logger.info({ revision: this.#revision }, 'config stream connected');
    }
    const record = decoded.record;
    if (record === undefined) return undefined;
    switch (record.type) {
      case 'heartbeat':
        // The server has nothing newer than what it sent: a peer resumed at its revision is up to date.
        if (this.#hasState && this.#revision !== undefined && record.revision <= this.#revision) {
          this.#source = 'control-plane';
          if (this.#current === undefined && this.#pending !== undefined) this.#announce(this.#pending);
        }
        return undefined;
      case 'error':
        this.#lastError = `${record.code}: ${record.message}`;
        this.#logger.warn({ code: record.code, detail: record.message }, 'the control plane ended the config stream');
        return undefined;
      case 'snapshot': {
        if (this.#revision !== undefined && this.#hasState && record.revision < this.#revision && record.reset !== true) {
          this.#logger.warn({ revision: record.revision, have: this.#revision }, 'ignored an older snapshot');
          return undefined;
        }
        this.#state.load(record.snapshot);
        this.#hasState = true;
        this.#revision = record.revision;
        this.#source = 'control-plane';
        // A reset may bring other content under a revision seen before: make the version differ.
        const version = record.reset === true ? `${versionOf(record.revision)}-reset-${this.#clock.now()}` : versionOf(record.revision);
        this.#announce(this.#state.snapshot(version, record.revision));
        return undefined;
      }
      case 'delta': {
        if (!this.#hasState || this.#revision === undefined) return new CausewayError('CONFIG_STREAM_PROTOCOL', 'a delta arrived before any snapshot', { retryable: true });
        if (record.revision <= this.#revision) return undefined;
        const { changed } = this.#state.apply(record.changes);
        this.#revision = record.revision;
        this.#source = 'control-plane';
        if (changed || this.#current === undefined) this.#announce(this.#state.snapshot(versionOf(record.revision), record.revision));
        else {
          // Nothing this peer uses changed; the resume point moved, and the persisted state follows.
          this.#dirty = true;
          this.#schedulePersist();
        }
        return undefined;
      }
    }
  }

  #announce(snapshot: ConfigSnapshot): void {
    this.#pending = undefined;
    const same = this.#current?.version === snapshot.version;
    this.#current = snapshot;
    if (this.#source === 'control-plane') {
      this.#dirty = true;
      this.#schedulePersist();
    }
    this.#waiters.resolve(snapshot);
    if (same) return;
    this.#subscribers.notify(snapshot, (err) => this.#logger.error({ err }, 'a configuration listener failed'));
  }

  #failed(err: unknown): void {
    if (this.#closed) return;
    const message = errorMessage(err);
    if (this.#lastError !== message) this.#logger.warn({ err: message, revision: this.#revision }, 'config stream down; retrying');
    this.#lastError = message;
  }

  #schedulePersist(): void {
    if (this.#o.persist === undefined || this.#persistTimer !== undefined || this.#closed) return;
    const interval = this.#o.persistIntervalMs ?? 1_000;
    const wait = Math.max(0, this.#lastPersist + interval - this.#clock.now());
    this.#persistTimer = setTimeout(() => {
      this.#persistTimer = undefined;
      void this.#persistNow();
    }, wait);
    this.#persistTimer.unref();
  }

  async #persistNow(): Promise<void> {
    if (this.#o.persist === undefined || !this.#hasState || this.#revision === undefined) return;
    while (this.#persisting !== undefined) await this.#persisting;
    if (!this.#dirty) return;
    this.#dirty = false;
    this.#lastPersist = this.#clock.now();
    const text = encodeRecord({ type: 'snapshot', revision: this.#revision, snapshot: this.#state.wire() });
    this.#persisting = this.#o
      .persist(text)
      .catch((err: unknown) => {
        this.#dirty = true;
        this.#logger.error({ err }, 'could not persist the last good configuration; will retry');
        this.#schedulePersist();
      })
      .finally(() => {
        this.#persisting = undefined;
      });
    await this.#persisting;
  }
}

async function readSmallBody(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response) {
    size += (chunk as Buffer).length;
    if (size > 64 * 1024) break;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
