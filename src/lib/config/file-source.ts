import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { errorCode, errorMessage, UserError } from '../errors.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import { coalesce } from '../tasks.ts';
import { formatProblems, parseSpecDocuments, validateReferences } from '../spec/index.ts';
import type { SpecProblem } from '../spec/index.ts';
import { snapshotFromObjects } from './snapshot.ts';
import type { ConfigSnapshot, ConfigSource } from './snapshot.ts';
import { SnapshotSubscribers } from './subscribers.ts';

export interface FileConfigSourceOptions {
  /** A multi-document spec YAML file, the format `causeway apply -f` takes. */
  path: string;
  logger?: Logger;
  /** Quiet time after the last change event before reloading. Default 100 ms. */
  debounceMs?: number;
  /** The slow poll that catches what file events miss (network filesystems, symlink swaps). Default 5000 ms; 0 turns it off. */
  pollIntervalMs?: number;
  /** Watch the file's directory for changes. Default true. */
  watch?: boolean;
  /** Reads the file; a seam for tests. Default: fs.readFile as UTF-8. */
  readFile?: (path: string) => Promise<string>;
}

type LoadOutcome = { ok: true; snapshot: ConfigSnapshot } | { ok: false; error: UserError };

/**
 * Configuration from a spec file, for running an access tier or connector without a control plane
 * (and for tests). The file is validated as a whole (parse and references); a file with any problem
 * never replaces the last good snapshot, and every problem is logged. Changes are picked up by a
 * watch on the directory (filtered to the file's name, so an editor's or `mv`'s atomic rename
 * works; Kubernetes ConfigMap volumes swap a `..data` symlink, which counts too), debounced, and
 * by a slow poll as a fallback. Only entry points construct this: it reads files.
 *
 * `ready()` resolves with the first snapshot, or rejects with a UserError (code `config-missing`,
 * `config-unreadable` or `config-invalid`, listing every problem) when the first read fails.
 */
export class FileConfigSource implements ConfigSource {
  readonly #path: string;
  readonly #logger: Logger;
  readonly #debounceMs: number;
  readonly #read: (path: string) => Promise<string>;
  readonly #subscribers = new SnapshotSubscribers();
  readonly #first: Promise<ConfigSnapshot>;
  #current: ConfigSnapshot | undefined;
  #lastText: string | undefined;
  #lastFailure: string | undefined;
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  /** One read at a time; a change meanwhile asks for exactly one more (../tasks.ts). */
  readonly #load = coalesce(async () => {
    await this.#first.catch(() => undefined);
    await this.#loadOnce();
  }, () => this.#closed);
  #closed = false;

  constructor(opts: FileConfigSourceOptions) {
    this.#path = path.resolve(opts.path);
    this.#logger = opts.logger ?? silentLogger();
    this.#debounceMs = opts.debounceMs ?? 100;
    this.#read = opts.readFile ?? ((file) => readFile(file, 'utf8'));
    this.#first = this.#loadOnce().then((outcome) => {
      if (!outcome.ok) throw outcome.error;
      return outcome.snapshot;
    });
    // Handled here so an unobserved failure is not an unhandled rejection; ready() still rejects.
    this.#first.catch(() => undefined);
    if (opts.watch ?? true) this.#startWatching();
    const pollIntervalMs = opts.pollIntervalMs ?? 5000;
    if (pollIntervalMs > 0) {
      this.#poll = setInterval(() => this.#schedule(0), pollIntervalMs);
      this.#poll.unref();
    }
  }

  current(): ConfigSnapshot | undefined {
    return this.#current;
  }

  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void {
    return this.#subscribers.subscribe(listener);
  }

  ready(): Promise<ConfigSnapshot> {
    return this.#current !== undefined ? Promise.resolve(this.#current) : this.#first;
  }

  /** Reads the file now (also what a change event or the poll triggers); resolves when done. */
  reload(): Promise<void> {
    return this.#load.run();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
    this.#subscribers.clear();
    await this.#first.catch(() => undefined);
    await this.#load.settled();
  }

  #startWatching(): void {
    const dir = path.dirname(this.#path);
    const base = path.basename(this.#path);
    try {
      this.#watcher = watch(dir, { persistent: false }, (_event, filename) => {
        const name = filename === null ? null : String(filename);
        if (name === null || name === base || name === '..data') this.#schedule(this.#debounceMs);
      });
      this.#watcher.on('error', (err) => {
        this.#logger.warn({ err, path: this.#path }, 'watching the configuration file failed; relying on polling');
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch (err) {
      this.#logger.warn({ err, path: this.#path }, 'cannot watch the configuration file; relying on polling');
    }
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.reload().catch((err: unknown) => this.#logger.error({ err, path: this.#path }, 'reloading the configuration failed'));
    }, delayMs);
    this.#debounce.unref();
  }

  async #loadOnce(): Promise<LoadOutcome> {
    let text: string;
    try {
      text = await this.#read(this.#path);
    } catch (err) {
      this.#lastText = undefined;
      const missing = errorCode(err) === 'ENOENT';
      const error = new UserError(
        missing ? 'config-missing' : 'config-unreadable',
        missing
          ? `The configuration file ${this.#path} does not exist; create it or give the path of an existing spec file.`
          : `The configuration file ${this.#path} cannot be read (${errorMessage(err)}); check its permissions.`,
        { cause: err, retryable: true },
      );
      this.#failed(error, []);
      return { ok: false, error };
    }
    if (this.#closed && this.#current !== undefined) return { ok: true, snapshot: this.#current };
    if (text === this.#lastText && this.#current !== undefined) return { ok: true, snapshot: this.#current };
    const unchangedFailure = text === this.#lastText;
    this.#lastText = text;

    const parsed = parseSpecDocuments(text);
    const problems: SpecProblem[] = parsed.ok ? validateReferences(parsed.objects) : parsed.problems;
    if (!parsed.ok || problems.length > 0) {
      const error = new UserError(
        'config-invalid',
        `The configuration file ${this.#path} has ${problems.length === 1 ? 'a problem' : `${problems.length} problems`}; fix ${problems.length === 1 ? 'it' : 'them'} and save the file again:\n${formatProblems(problems)}`,
      );
      if (!unchangedFailure) this.#failed(error, problems);
      return { ok: false, error };
    }

    const snapshot = snapshotFromObjects(parsed.objects);
    this.#lastFailure = undefined;
    if (this.#current?.version === snapshot.version) return { ok: true, snapshot: this.#current };
    const previous = this.#current?.version;
    this.#current = snapshot;
    this.#logger.info(
      { path: this.#path, version: snapshot.version, previous, services: snapshot.services.length, policies: snapshot.policies.length, roles: snapshot.roles.length },
      'configuration loaded',
    );
    this.#subscribers.notify(snapshot, (err) => this.#logger.error({ err, version: snapshot.version }, 'a configuration listener failed'));
    return { ok: true, snapshot };
  }

  /** Logs a failed load once per distinct failure; the last good snapshot stays current. */
  #failed(error: UserError, problems: SpecProblem[]): void {
    if (this.#lastFailure === error.message) return;
    this.#lastFailure = error.message;
    const kept = this.#current === undefined ? 'no configuration loaded yet' : `keeping version ${this.#current.version}`;
    if (problems.length > 0) {
      this.#logger.error({ path: this.#path, problems: formatProblems(problems).split('\n') }, `configuration file has ${problems.length} problem(s); ${kept}`);
    } else {
      this.#logger.error({ path: this.#path, code: error.code, err: error.cause }, `${error.message} (${kept})`);
    }
  }
}
