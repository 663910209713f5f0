import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { CausewayError, UserError, errorCode, errorMessage } from '../errors.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import type { AccessEvent, AccessEventSink } from './event.ts';

export interface JsonLinesFileSinkOptions {
  /** The file to append to; created with mode 0600 when missing. */
  path: string;
  logger?: Logger;
  /** How long an event may wait in memory before it is written. Default 100 ms. */
  flushIntervalMs?: number;
  /** Write at once when this many bytes are waiting. Default 256 KiB. */
  batchBytes?: number;
}

/**
 * Access events as JSON lines, appended to one file. Events are batched in memory and written by one
 * writer at a time (one `write` per batch, so a line is never interleaved); `close()` writes everything
 * still buffered, syncs the file to disk and closes it. A failed write keeps its batch and is retried
 * on the next flush, so an I/O hiccup loses nothing.
 */
export class JsonLinesFileSink implements AccessEventSink {
  readonly path: string;
  #file: FileHandle;
  #logger: Logger;
  #flushIntervalMs: number;
  #batchBytes: number;
  #pending: string[] = [];
  #pendingBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #closed = false;
  #written = 0;
  #failedWrites = 0;

  private constructor(path: string, file: FileHandle, options: JsonLinesFileSinkOptions) {
    this.path = path;
    this.#file = file;
    this.#logger = options.logger ?? silentLogger();
    this.#flushIntervalMs = options.flushIntervalMs ?? 100;
    this.#batchBytes = options.batchBytes ?? 256 * 1024;
  }

  /** Opens (or creates) the file for appending. Fails with a UserError that names the path. */
  static async open(options: JsonLinesFileSinkOptions): Promise<JsonLinesFileSink> {
    let file: FileHandle;
    try {
      file = await open(options.path, 'a', 0o600);
    } catch (err) {
      throw new UserError('audit-file-unwritable', `cannot open the access event file ${options.path} for appending (${errorCode(err) ?? errorMessage(err)}); choose a writable path with --events`, { cause: err });
    }
    return new JsonLinesFileSink(options.path, file, options);
  }

  write(event: AccessEvent): void {
    if (this.#closed) throw new CausewayError('audit-sink-closed', 'access event written after the sink was closed; this is a bug');
    const line = `${JSON.stringify(event)}\n`;
    this.#pending.push(line);
    this.#pendingBytes += line.length;
    if (this.#pendingBytes >= this.#batchBytes) this.#flushSoon(0);
    else this.#flushSoon(this.#flushIntervalMs);
  }

  /** Events written to the file so far, and write attempts that failed (and were retried). */
  stats(): { written: number; pending: number; failedWrites: number } {
    return { written: this.#written, pending: this.#pending.length, failedWrites: this.#failedWrites };
  }

  /** Writes everything buffered now. */
  async flush(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
    if (this.#pending.length === 0) return;
    this.#flushing = this.#writeBatch();
    try {
      await this.#flushing;
    } finally {
      this.#flushing = undefined;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    // Three attempts: a transient error should not lose the tail of the log.
    let lastError: unknown;
    for (let attempt = 0; attempt < 3 && (this.#pending.length > 0 || this.#flushing !== undefined); attempt++) {
      try {
        await this.flush();
        lastError = undefined;
      } catch (err) {
        lastError = err;
      }
    }
    try {
      await this.#file.datasync();
    } finally {
      await this.#file.close();
    }
    if (lastError !== undefined || this.#pending.length > 0) {
      throw new CausewayError('audit-write-failed', `could not write ${this.#pending.length} access events to ${this.path}: ${errorMessage(lastError)}`, { cause: lastError });
    }
  }

  #flushSoon(delayMs: number): void {
    if (this.#timer !== undefined) {
      if (delayMs > 0) return;
      clearTimeout(this.#timer);
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch((err: unknown) => {
        this.#failedWrites++;
        this.#logger.error({ err, path: this.path }, 'writing access events failed; will retry');
        if (!this.#closed) this.#flushSoon(Math.max(this.#flushIntervalMs, 1000));
      });
    }, delayMs);
  }

  async #writeBatch(): Promise<void> {
    const lines = this.#pending;
    const bytes = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    const buffer = Buffer.from(lines.join(''), 'utf8');
    try {
      let offset = 0;
      while (offset < buffer.length) {
        const { bytesWritten } = await this.#file.write(buffer, offset, buffer.length - offset);
        offset += bytesWritten;
      }
      this.#written += lines.length;
    } catch (err) {
      // Keep the batch, in order, ahead of anything written meanwhile. A partial write may leave a
      // torn line before the retried copy; readers skip lines that do not parse.
      this.#pending = lines.concat(this.#pending);
      this.#pendingBytes += bytes;
      throw err;
    }
  }
}
