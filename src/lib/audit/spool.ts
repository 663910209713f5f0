/**
 * Access events that survive the control plane being down, and the access tier being killed
 * every event is appended to a local spool first, and a shipper sends the spool to the
 * control plane in batches, in order, forgetting a batch only after the control plane stored it.
 *
 * On disk (all in one directory the entry point owns):
 *
 *     events-000000000001.jsonl   append-only segments, one JSON event per line; a new segment at
 *     events-000000000002.jsonl   every start (so a line torn by a crash is never appended to) and
 *     cursor                      when one grows past segmentBytes;
 *                                 {"segment":2,"offset":8192}: everything before it is stored by the
 *                                 control plane. Replaced atomically (write, sync, rename).
 *
 * An event counts as acknowledged once `flush()` (or the flush timer, every flushIntervalMs) has
 * written it to its segment and synced it. The shipper reads complete lines after the cursor, sends
 * them, and moves the cursor past them only after a 2xx; segments wholly behind the cursor are
 * deleted. A crash between the send and the cursor write sends that batch again on the next start:
 * the control plane stores events once per id, so it reports duplicates and stores nothing twice.
 * While the control plane is down the shipper retries with exponential backoff and full jitter.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { CausewayError, errorMessage } from '../errors.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import type { AccessEventSink, AuditEvent } from './event.ts';
import { MAX_BATCH_BYTES, MAX_BATCH_EVENTS } from './wire.ts';
import type { EventBatchResult } from './wire.ts';

/** An open segment: appends and syncs. */
export interface SpoolSegmentWriter {
  append(data: Buffer): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** The file operations the spool needs, inside its directory (names only, never paths). A seam for crash tests. */
export interface SpoolFiles {
  list(): Promise<string[]>;
  openAppend(name: string): Promise<SpoolSegmentWriter>;
  /** Up to `length` bytes from `offset` (fewer at the end of the file). */
  read(name: string, offset: number, length: number): Promise<Buffer>;
  /** The whole small file, or undefined when it does not exist. */
  readText(name: string): Promise<string | undefined>;
  /** Replaces the file atomically and durably. */
  writeAtomic(name: string, text: string): Promise<void>;
  /** The size in bytes; 0 when the file does not exist. */
  size(name: string): Promise<number>;
  remove(name: string): Promise<void>;
}

/** SpoolFiles over a directory (created 0700 when missing; files 0600). */
export function nodeSpoolFiles(dir: string): SpoolFiles {
  let made: Promise<unknown> | undefined;
  const ensure = (): Promise<unknown> => (made ??= mkdir(dir, { recursive: true, mode: 0o700 }));
  const at = (name: string): string => {
    if (name.includes('/') || name.includes('\\') || name.startsWith('.')) throw new CausewayError('SPOOL_BAD_NAME', `not a spool file name: ${name}`);
    return path.join(dir, name);
  };
  return {
    async list() {
      await ensure();
      return readdir(dir);
    },
    async openAppend(name) {
      await ensure();
      const handle: FileHandle = await open(at(name), 'a', 0o600);
      return {
        async append(data) {
          let offset = 0;
          while (offset < data.length) offset += (await handle.write(data, offset, data.length - offset)).bytesWritten;
        },
        sync: () => handle.datasync(),
        close: () => handle.close(),
      };
    },
    async read(name, offset, length) {
      const handle = await open(at(name), 'r');
      try {
        const buffer = Buffer.alloc(length);
        const { bytesRead } = await handle.read(buffer, 0, length, offset);
        return buffer.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
    },
    async readText(name) {
      try {
        return await readFile(at(name), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },
    async writeAtomic(name, text) {
      await ensure();
      const temp = at(`${name}.tmp`.replace(/^\./, ''));
      const handle = await open(temp, 'w', 0o600);
      try {
        await handle.writeFile(text);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      await rename(temp, at(name));
      // The rename is durable once the directory is.
      try {
        const fd = openSync(dir, 'r');
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      } catch {
        // Some filesystems do not sync directories; the rename is still atomic.
      }
    },
    async size(name) {
      try {
        return (await stat(at(name))).size;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
        throw err;
      }
    },
    async remove(name) {
      try {
        await unlink(at(name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    },
  };
}

/** Sends one batch; resolves on a 2xx with what the control plane did; rejects otherwise (see shipper.ts). */
export type EventBatchSender = (events: AuditEvent[]) => Promise<EventBatchResult>;

export interface SpoolingEventSinkOptions {
  files: SpoolFiles;
  send: EventBatchSender;
  logger?: Logger;
  /** How long an event may wait in memory before it is written and synced. Default 50 ms. */
  flushIntervalMs?: number;
  /** Sync each write to disk (power loss); a process crash loses nothing either way. Default true. */
  sync?: boolean;
  /** Start a new segment past this size. Default 4 MiB. */
  segmentBytes?: number;
  /** Largest batch. Defaults: 500 events, 512 KiB (the server takes 1000 and 1 MiB). */
  batchEvents?: number;
  batchBytes?: number;
  /** Retry delays while the control plane is down: exponential, full jitter. Default 500 ms to 30 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** With nothing to send, look again after this long even without a new write. Default 1 s. */
  idlePollMs?: number;
  /** close(): how long to keep shipping what is left before leaving it for the next start. Default 2 s. */
  closeShipTimeoutMs?: number;
  random?: () => number;
}

export interface SpoolStats {
  /** Events written to the spool by this instance. */
  spooled: number;
  /** Events the control plane confirmed (inserted or already there) since start. */
  shipped: number;
  duplicates: number;
  rejected: number;
  /** Events in memory, not yet on disk. */
  unflushed: number;
  /** Spool bytes not yet confirmed. */
  backlogBytes: number;
  lastShipAt: number | undefined;
  lastError: string | undefined;
}

interface Cursor {
  segment: number;
  offset: number;
}

const SEGMENT_RE = /^events-(\d{12})\.jsonl$/;
const CURSOR = 'cursor';

function segmentName(n: number): string {
  return `events-${String(n).padStart(12, '0')}.jsonl`;
}

export class SpoolingEventSink implements AccessEventSink {
  readonly #o: SpoolingEventSinkOptions;
  readonly #files: SpoolFiles;
  readonly #logger: Logger;
  readonly #stop = new AbortController();
  #segments: number[];
  #active: number;
  #activeSize = 0;
  #writer: SpoolSegmentWriter | undefined;
  #pending: string[] = [];
  #flushTimer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #cursor: Cursor;
  #wake: (() => void) | undefined;
  #closed = false;
  #destroyed = false;
  #shipping: Promise<void> | undefined;
  #lastFlushError: unknown;
  readonly #stats: SpoolStats = { spooled: 0, shipped: 0, duplicates: 0, rejected: 0, unflushed: 0, backlogBytes: 0, lastShipAt: undefined, lastError: undefined };

  private constructor(options: SpoolingEventSinkOptions, segments: number[], cursor: Cursor) {
    this.#o = options;
    this.#files = options.files;
    this.#logger = (options.logger ?? silentLogger()).child({ component: 'event-spool' });
    this.#segments = segments;
    this.#active = segments.length === 0 ? Math.max(1, cursor.segment) : segments[segments.length - 1];
    this.#cursor = cursor;
  }

  /**
   * Opens the spool: finds the segments and the cursor, drops what is already shipped, starts a new
   * segment and the shipper. What an earlier run left unshipped is shipped first.
   */
  static async open(options: SpoolingEventSinkOptions): Promise<SpoolingEventSink> {
    const names = await options.files.list();
    const found = names.map((n) => SEGMENT_RE.exec(n)).filter((m): m is RegExpExecArray => m !== null).map((m) => Number(m[1])).sort((a, b) => a - b);
    let cursor: Cursor | undefined;
    const text = await options.files.readText(CURSOR);
    if (text !== undefined) {
      try {
        const parsed = JSON.parse(text) as Partial<Cursor>;
        if (Number.isSafeInteger(parsed.segment) && Number.isSafeInteger(parsed.offset) && (parsed.offset as number) >= 0) cursor = { segment: parsed.segment as number, offset: parsed.offset as number };
      } catch {
        // A torn cursor sends the oldest segment again: duplicates, which the control plane ignores.
      }
    }
    for (const n of found) if (cursor !== undefined && n < cursor.segment) await options.files.remove(segmentName(n));
    const kept = found.filter((n) => cursor === undefined || n >= cursor.segment);
    // A fresh segment for this run, numbered past everything: never append after a line a crash may have torn.
    const fresh = Math.max(0, cursor?.segment ?? 0, ...found) + 1;
    if (kept.length === 0) cursor = { segment: fresh, offset: 0 };
    else if (cursor === undefined || cursor.segment !== kept[0]) cursor = { segment: kept[0], offset: 0 };
    const sink = new SpoolingEventSink(options, [...kept, fresh], cursor);
    sink.#active = fresh;
    let backlog = 0;
    for (const n of kept) backlog += await options.files.size(segmentName(n));
    sink.#stats.backlogBytes = Math.max(0, backlog - (kept.length > 0 ? cursor.offset : 0));
    sink.#writer = await options.files.openAppend(segmentName(fresh));
    sink.#shipping = sink.#shipLoop().catch((err: unknown) => sink.#logger.error({ err }, 'the event shipper stopped; this is a bug'));
    return sink;
  }

  write(event: AuditEvent): void {
    if (this.#closed) throw new CausewayError('audit-sink-closed', 'access event written after the sink was closed; this is a bug');
    this.#pending.push(`${JSON.stringify(event)}\n`);
    this.#stats.unflushed = this.#pending.length;
    if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = undefined;
        this.flush().catch((err: unknown) => {
          this.#logger.error({ err }, 'writing access events to the spool failed; will retry');
          this.#scheduleRetryFlush();
        });
      }, this.#o.flushIntervalMs ?? 50);
    }
  }

  /** Writes (and syncs) every event written so far; after it resolves they are acknowledged. */
  async flush(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing.catch(() => undefined);
    if (this.#pending.length === 0 || this.#destroyed) return;
    this.#flushing = this.#writePending();
    try {
      await this.#flushing;
    } finally {
      this.#flushing = undefined;
    }
  }

  stats(): SpoolStats {
    return { ...this.#stats, unflushed: this.#pending.length };
  }

  /** Flushes, ships what it can for up to closeShipTimeoutMs, and stops; the rest waits on disk for the next start. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#flushTimer);
    let flushError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.flush();
        flushError = undefined;
        break;
      } catch (err) {
        flushError = err;
      }
    }
    const deadline = Date.now() + (this.#o.closeShipTimeoutMs ?? 2_000);
    while (this.#stats.backlogBytes > 0 && this.#stats.lastError === undefined && Date.now() < deadline) {
      this.#wake?.();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    this.#stop.abort();
    await this.#shipping;
    await this.#writer?.close();
    if (flushError !== undefined) throw new CausewayError('audit-write-failed', `could not write ${this.#pending.length} access events to the spool: ${errorMessage(flushError)}`, { cause: flushError });
  }

  /** Stops at once without writing what is in memory: what a crash does (tests). */
  destroy(): void {
    this.#closed = true;
    this.#destroyed = true;
    clearTimeout(this.#flushTimer);
    this.#stop.abort();
    void this.#writer?.close().catch(() => undefined);
  }

  #scheduleRetryFlush(): void {
    if (this.#flushTimer !== undefined || this.#destroyed) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.flush().catch((err: unknown) => {
        if (errorMessage(err) !== errorMessage(this.#lastFlushError)) this.#logger.error({ err }, 'writing access events to the spool failed; will retry');
        this.#lastFlushError = err;
        this.#scheduleRetryFlush();
      });
    }, 1_000);
  }

  async #writePending(): Promise<void> {
    const lines = this.#pending;
    this.#pending = [];
    const data = Buffer.from(lines.join(''), 'utf8');
    try {
      if (this.#activeSize >= (this.#o.segmentBytes ?? 4 * 1024 * 1024)) await this.#rotate();
      const writer = this.#writer as SpoolSegmentWriter;
      await writer.append(data);
      if (this.#o.sync ?? true) await writer.sync();
    } catch (err) {
      // Keep them, in order, ahead of anything written meanwhile; a torn line is skipped by the reader.
      this.#pending = lines.concat(this.#pending);
      throw err;
    }
    this.#activeSize += data.length;
    this.#stats.spooled += lines.length;
    this.#stats.backlogBytes += data.length;
    this.#wake?.();
  }

  async #rotate(): Promise<void> {
    const next = this.#active + 1;
    const writer = await this.#files.openAppend(segmentName(next));
    await this.#writer?.close();
    this.#writer = writer;
    this.#active = next;
    this.#activeSize = 0;
    this.#segments.push(next);
  }

  async #shipLoop(): Promise<void> {
    const initialMs = this.#o.backoff?.initialMs ?? 500;
    const maxMs = this.#o.backoff?.maxMs ?? 30_000;
    const random = this.#o.random ?? Math.random;
    let attempt = 0;
    while (!this.#stop.signal.aborted) {
      let batch: Batch;
      try {
        batch = await this.#readBatch();
      } catch (err) {
        this.#logger.error({ err }, 'reading the event spool failed; will retry');
        await this.#sleep(1_000, false);
        continue;
      }
      if (batch.events.length === 0) {
        if (batch.next !== undefined) {
          await this.#advanceOrRetry(batch.next, batch.bytes);
          continue;
        }
        await this.#sleep(this.#o.idlePollMs ?? 1_000, true);
        continue;
      }
      let result: EventBatchResult;
      try {
        result = await this.#o.send(batch.events);
      } catch (err) {
        this.#stats.lastError = errorMessage(err);
        if (attempt === 0) this.#logger.warn({ err: this.#stats.lastError, backlogBytes: this.#stats.backlogBytes }, 'shipping access events failed; keeping them in the spool and retrying');
        const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
        attempt++;
        await this.#sleep(Math.max(20, Math.round(random() * ceiling)), false);
        continue;
      }
      if (attempt > 0) this.#logger.info({ attempts: attempt }, 'shipping access events again');
      attempt = 0;
      this.#stats.lastError = undefined;
      this.#stats.lastShipAt = Date.now();
      this.#stats.shipped += result.inserted + result.duplicates;
      this.#stats.duplicates += result.duplicates;
      this.#stats.rejected += result.rejected;
      if (result.rejected > 0) this.#logger.error({ rejected: result.rejected, problems: result.problems?.slice(0, 5) }, 'the control plane rejected access events; they are dropped from the spool');
      await this.#advanceOrRetry(batch.end, batch.bytes);
    }
  }

  /** A cursor that cannot be written leaves the batch to be sent again (a duplicate, harmless). */
  async #advanceOrRetry(to: Cursor, bytes: number): Promise<void> {
    try {
      await this.#advance(to, bytes);
    } catch (err) {
      this.#logger.error({ err }, 'could not record shipped access events in the spool cursor; they will be sent again');
      await this.#sleep(1_000, false);
    }
  }

  /** Moves the cursor (durably), then deletes segments wholly behind it. */
  async #advance(to: Cursor, bytes: number): Promise<void> {
    await this.#files.writeAtomic(CURSOR, JSON.stringify(to));
    this.#cursor = to;
    this.#stats.backlogBytes = Math.max(0, this.#stats.backlogBytes - bytes);
    const behind = this.#segments.filter((n) => n < to.segment);
    for (const n of behind) {
      try {
        await this.#files.remove(segmentName(n));
        this.#segments = this.#segments.filter((s) => s !== n);
      } catch (err) {
        this.#logger.warn({ err, segment: segmentName(n) }, 'could not delete a shipped spool segment');
      }
    }
  }

  async #readBatch(): Promise<Batch> {
    const maxEvents = Math.min(this.#o.batchEvents ?? 500, MAX_BATCH_EVENTS);
    const maxBytes = Math.min(this.#o.batchBytes ?? 512 * 1024, MAX_BATCH_BYTES - 16 * 1024);
    const { segment, offset } = this.#cursor;
    const chunk = await this.#files.read(segmentName(segment), offset, maxBytes);
    const lastNewline = chunk.lastIndexOf(0x0a);
    const isActive = segment >= this.#active;
    if (lastNewline === -1) {
      // Nothing complete here. A finished segment is done (a remainder is a line torn by a crash).
      if (!isActive && chunk.length < maxBytes) {
        if (chunk.length > 0) this.#logger.warn({ segment: segmentName(segment), bytes: chunk.length }, 'skipped a torn line at the end of a spool segment');
        const next = this.#segments.find((n) => n > segment) ?? this.#active;
        return { events: [], end: this.#cursor, bytes: 0, skipped: 0, next: { segment: next, offset: 0 } };
      }
      if (chunk.length >= maxBytes) {
        // One line larger than a batch can carry: skip it rather than block everything behind it.
        const end = await this.#lineEnd(segment, offset + chunk.length);
        this.#logger.error({ segment: segmentName(segment), offset }, 'skipped an access event too large to ship');
        return { events: [], end: this.#cursor, bytes: 0, skipped: 1, next: end === undefined ? undefined : { segment, offset: end } };
      }
      return { events: [], end: this.#cursor, bytes: 0, skipped: 0, next: undefined };
    }
    const events: AuditEvent[] = [];
    let consumed = 0;
    let skipped = 0;
    let start = 0;
    while (start <= lastNewline && events.length < maxEvents) {
      const newline = chunk.indexOf(0x0a, start);
      const line = chunk.subarray(start, newline).toString('utf8');
      start = newline + 1;
      consumed = start;
      if (line.trim() === '') continue;
      try {
        events.push(JSON.parse(line) as AuditEvent);
      } catch {
        skipped++;
        this.#logger.warn({ segment: segmentName(segment) }, 'skipped a spool line that is not JSON (torn by a crash)');
      }
    }
    return { events, end: { segment, offset: offset + consumed }, bytes: consumed, skipped, next: events.length === 0 && consumed > 0 ? { segment, offset: offset + consumed } : undefined };
  }

  /** The offset just past the next newline at or after `from`, or undefined when there is none yet. */
  async #lineEnd(segment: number, from: number): Promise<number | undefined> {
    let at = from;
    for (;;) {
      const chunk = await this.#files.read(segmentName(segment), at, 64 * 1024);
      if (chunk.length === 0) return undefined;
      const newline = chunk.indexOf(0x0a);
      if (newline !== -1) return at + newline + 1;
      at += chunk.length;
    }
  }

  /** Waits `ms`; a new write ends a `wakeable` wait early (an idle shipper), never a backoff. close() ends both. */
  async #sleep(ms: number, wakeable: boolean): Promise<void> {
    const signal = this.#stop.signal;
    if (signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      if (wakeable) this.#wake = done;
    });
  }
}

interface Batch {
  events: AuditEvent[];
  /** The cursor after these events. */
  end: Cursor;
  bytes: number;
  skipped: number;
  /** With no events: where the cursor should move without sending anything. */
  next: Cursor | undefined;
}
