/**
 * The login session on disk: `$CAUSEWAY_HOME/session.json` (default `~/.config/causeway`).
 *
 * The directory is made 0700 and the file written 0600, atomically (a temp file in the same
 * directory, then rename), so a reader never sees half a session. A session file or directory that
 * another user could write is refused (CN-09, src/lib/fs-safety.ts): whoever can edit it chooses the
 * server, the CA and the tokens the next command sends.
 *
 * A cross-process lock (an O_EXCL lock file beside it) serialises every read-modify-write that talks
 * to the server: kubectl runs exec plugins in parallel, and two processes spending the same rotating
 * refresh token would trip the provider's reuse detection and revoke the whole session. A lock whose
 * holder has died (its pid is gone) or that is older than `staleLockMs` is broken.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CausewayError, UserError, errorCode, errorMessage } from '../errors.ts';
import { unsafePathProblem } from '../fs-safety.ts';

export const SESSION_VERSION = 1;

export interface KubeToken {
  /** The ID token (JWT) for audience `kubernetes:<cluster>`. */
  token: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

export interface SessionUser {
  /** The `sub` claim (user id). */
  id: string;
  /** preferred_username (the user name). */
  name: string;
  email?: string;
  groups: string[];
}

export interface Session {
  version: typeof SESSION_VERSION;
  /** The control plane's URL (an origin) the user logged in to. */
  server: string;
  /** The OIDC issuer (discovery's `issuer`). */
  issuer: string;
  clientId: string;
  /** The CA the server was trusted by at login (PEM); absent when the system roots were used. */
  caPem?: string;
  tokenEndpoint: string;
  revocationEndpoint?: string;
  accessToken: string;
  /** Epoch milliseconds. */
  accessTokenExpiresAt: number;
  refreshToken?: string;
  user: SessionUser;
  /** Per cluster name. */
  kubeTokens: Record<string, KubeToken>;
  /** ISO time of the login. */
  loggedInAt: string;
}

export interface SessionStoreOptions {
  /** The directory ($CAUSEWAY_HOME). */
  home: string;
  /** A lock older than this is broken even when its holder seems alive; default 30 s. */
  staleLockMs?: number;
  /** How long to wait for the lock before giving up; default 60 s. */
  lockTimeoutMs?: number;
  /** Skip the CN-09 ownership checks (tests on odd file systems only). */
  skipSafetyCheck?: boolean;
}

/** `$CAUSEWAY_HOME`, else `~/.config/causeway`. */
export function causewayHome(env: NodeJS.ProcessEnv, homedir: string): string {
  const home = env.CAUSEWAY_HOME;
  return home !== undefined && home !== '' ? path.resolve(home) : path.join(homedir, '.config', 'causeway');
}

function invalid(file: string, why: string): UserError {
  return new UserError('SESSION_INVALID', `the session file ${file} is damaged (${why}); run causeway logout, then causeway login again`);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** Checks the shape of a parsed session; returns it typed or throws SESSION_INVALID. */
export function parseSession(text: string, file: string): Session {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid(file, 'not JSON');
  }
  if (raw === null || typeof raw !== 'object') throw invalid(file, 'not an object');
  const s = raw as Record<string, unknown>;
  if (s.version !== SESSION_VERSION) throw invalid(file, `unknown version ${String(s.version)}`);
  for (const key of ['server', 'issuer', 'clientId', 'tokenEndpoint', 'accessToken', 'loggedInAt'] as const) {
    if (typeof s[key] !== 'string') throw invalid(file, `no ${key}`);
  }
  if (typeof s.accessTokenExpiresAt !== 'number') throw invalid(file, 'no accessTokenExpiresAt');
  for (const key of ['caPem', 'revocationEndpoint', 'refreshToken'] as const) {
    if (s[key] !== undefined && typeof s[key] !== 'string') throw invalid(file, `${key} is not a string`);
  }
  const user = s.user as Record<string, unknown> | undefined;
  if (user === undefined || user === null || typeof user !== 'object' || typeof user.id !== 'string' || typeof user.name !== 'string' || !isStringArray(user.groups)) {
    throw invalid(file, 'no user');
  }
  if (user.email !== undefined && typeof user.email !== 'string') throw invalid(file, 'user.email is not a string');
  const kube = s.kubeTokens;
  if (kube === null || typeof kube !== 'object' || Array.isArray(kube)) throw invalid(file, 'no kubeTokens');
  for (const value of Object.values(kube as Record<string, unknown>)) {
    const t = value as Record<string, unknown> | null;
    if (t === null || typeof t !== 'object' || typeof t.token !== 'string' || typeof t.expiresAt !== 'number') throw invalid(file, 'a kube token is malformed');
  }
  return s as unknown as Session;
}

export class SessionStore {
  readonly home: string;
  readonly file: string;
  readonly lockFile: string;
  readonly #staleLockMs: number;
  readonly #lockTimeoutMs: number;
  readonly #skipSafety: boolean;

  constructor(options: SessionStoreOptions) {
    this.home = options.home;
    this.file = path.join(options.home, 'session.json');
    this.lockFile = path.join(options.home, 'session.lock');
    this.#staleLockMs = options.staleLockMs ?? 30_000;
    this.#lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
    this.#skipSafety = options.skipSafetyCheck === true;
  }

  async #assertSafe(target: string): Promise<void> {
    if (this.#skipSafety) return;
    const problem = await unsafePathProblem(target);
    if (problem !== undefined) {
      throw new UserError('SESSION_UNSAFE', `refusing the session at ${target}: ${problem}. Another user could change it; make it and every directory above it yours and not writable by group or others (chmod go-w), or set CAUSEWAY_HOME to a directory of your own`);
    }
  }

  /** The session, or undefined when there is none. */
  async read(): Promise<Session | undefined> {
    await this.#assertSafe(this.file);
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
      throw new UserError('SESSION_UNREADABLE', `cannot read the session file ${this.file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    }
    return parseSession(text, this.file);
  }

  async #ensureHome(): Promise<void> {
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    const st = await stat(this.home);
    // A directory we just made may have lost bits to the umask only; one that existed keeps its mode,
    // unless group or others could write it, which assertSafe refuses below.
    if ((st.mode & 0o077) !== 0 && (st.mode & 0o022) === 0 && typeof process.getuid === 'function' && st.uid === process.getuid()) {
      await chmod(this.home, 0o700);
    }
    await this.#assertSafe(this.home);
  }

  /** Replaces the session atomically (0600). */
  async write(session: Session): Promise<void> {
    await this.#ensureHome();
    const tmp = path.join(this.home, `.session.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await writeFile(tmp, `${JSON.stringify(session, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
      await rename(tmp, this.file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new UserError('SESSION_UNWRITABLE', `cannot write the session file ${this.file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    }
  }

  /** Deletes the session; true when there was one. */
  async remove(): Promise<boolean> {
    try {
      await unlink(this.file);
      return true;
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return false;
      throw new UserError('SESSION_UNWRITABLE', `cannot delete the session file ${this.file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    }
  }

  /** Runs `fn` holding the cross-process session lock. */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    await this.#ensureHome();
    const release = await this.#acquire();
    try {
      return await fn();
    } finally {
      await release();
    }
  }

  async #acquire(): Promise<() => Promise<void>> {
    // Real time, not the injected clock: this is how long we actually wait.
    const deadline = Date.now() + this.#lockTimeoutMs;
    const token = `${process.pid} ${randomBytes(8).toString('hex')}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(this.lockFile, 'wx', 0o600);
        try {
          await handle.writeFile(`${token} ${Date.now()}\n`);
        } finally {
          await handle.close();
        }
        return async () => {
          // Only remove the lock if it is still ours (a holder that overran staleLockMs may have lost it).
          const now = await readFile(this.lockFile, 'utf8').catch(() => '');
          if (now.startsWith(`${token} `)) await unlink(this.lockFile).catch(() => undefined);
        };
      } catch (err) {
        if (errorCode(err) !== 'EEXIST') {
          throw new UserError('SESSION_UNWRITABLE', `cannot create the session lock ${this.lockFile}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
        }
      }
      await this.#breakIfStale();
      if (Date.now() > deadline) {
        throw new CausewayError('SESSION_LOCKED', `another causeway process has held ${this.lockFile} for over ${Math.round(this.#lockTimeoutMs / 1000)} s; if none is running, delete that file`, { retryable: true });
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(10 + attempt * 5, 100)));
    }
  }

  async #breakIfStale(): Promise<void> {
    let text: string;
    let mtimeMs: number;
    try {
      text = await readFile(this.lockFile, 'utf8');
      mtimeMs = (await stat(this.lockFile)).mtimeMs;
    } catch {
      return; // gone already
    }
    const [pidText] = text.split(' ');
    const pid = Number(pidText);
    let dead = false;
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
      } catch (err) {
        dead = errorCode(err) === 'ESRCH';
      }
    } else if (text === '' && Date.now() - mtimeMs < 1000) {
      return; // being written right now
    } else {
      dead = true;
    }
    if (!dead && Date.now() - mtimeMs < this.#staleLockMs) return;
    // Move it aside under a unique name first, so two processes breaking the same stale lock cannot
    // remove a fresh lock that a third took in between.
    const aside = `${this.lockFile}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
    try {
      await rename(this.lockFile, aside);
    } catch {
      return;
    }
    const moved = await readFile(aside, 'utf8').catch(() => '');
    await unlink(aside).catch(() => undefined);
    if (moved !== text) {
      // We moved a lock someone took after we looked: that holder goes on believing it holds the lock.
      // Put it back when nobody has taken the name meanwhile.
      await writeFile(this.lockFile, moved, { flag: 'wx', mode: 0o600 }).catch(() => undefined);
    }
  }
}
