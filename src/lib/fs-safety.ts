/**
 * Refusing files another user could have written (THREATS CN-09). A key, certificate, spec file,
 * event log or data directory that someone else can replace or edit is theirs, not ours: a swapped
 * CA or spec file changes who is trusted and what is allowed. So a path is refused when the file
 * itself, or any directory above it, is owned by another user (root is fine) or is writable by group
 * or others. Directories above the file may be world-writable with the sticky bit (like /tmp): there
 * nobody can rename or replace the entries we own. The path is checked as written and as resolved
 * through symlinks. Nothing is checked where there are no user ids (Windows).
 *
 * The entry points (the commands) call this before they read a file; a path that does not exist yet
 * is checked from its nearest existing directory up, and a missing file is left for the reader to
 * report.
 */
import { realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { UserError, errorCode } from './errors.ts';

const STICKY = 0o1000;
const GROUP_OR_OTHER_WRITE = 0o022;

export interface PathSafetyOptions {
  /** The user who must own what is not root's; default the current process's user. */
  uid?: number;
}

/** Why `target` could have been written by another user, or undefined when it is ours alone. Never throws. */
export async function unsafePathProblem(target: string, options: PathSafetyOptions = {}): Promise<string | undefined> {
  const uid = options.uid ?? (typeof process.getuid === 'function' ? process.getuid() : undefined);
  if (uid === undefined) return undefined;
  const absolute = path.resolve(target);
  const own = await statOrUndefined(absolute);
  if (own !== undefined) {
    const problem = modeProblem(absolute, own, uid, false);
    if (problem !== undefined) return problem;
  }
  const chains = [path.dirname(absolute)];
  const real = await realpath(absolute).catch(() => undefined);
  if (real !== undefined && real !== absolute) {
    const resolved = await statOrUndefined(real);
    if (resolved !== undefined) {
      const problem = modeProblem(real, resolved, uid, false);
      if (problem !== undefined) return problem;
    }
    chains.push(path.dirname(real));
  }
  for (const start of chains) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      const st = await statOrUndefined(dir);
      if (st !== undefined) {
        const problem = modeProblem(dir, st, uid, true);
        if (problem !== undefined) return problem;
      }
      if (path.dirname(dir) === dir) break;
    }
  }
  return undefined;
}

/** Throws a UserError naming the flag and the path when `target` is not ours alone (see unsafePathProblem). */
export async function assertSafePath(target: string, what: string, code: string, options: PathSafetyOptions = {}): Promise<void> {
  const problem = await unsafePathProblem(target, options);
  if (problem !== undefined) {
    throw new UserError(code, `refusing ${what} ${target}: ${problem}. Another user could change it; make it and every directory above it yours (or root's) and not writable by group or others (chmod go-w)`);
  }
}

function modeProblem(p: string, st: Stats, uid: number, ancestor: boolean): string | undefined {
  if (st.uid !== uid && st.uid !== 0) return `${p} is owned by another user (uid ${st.uid})`;
  if ((st.mode & GROUP_OR_OTHER_WRITE) !== 0 && !(ancestor && st.isDirectory() && (st.mode & STICKY) !== 0)) {
    return `${p} is writable by ${(st.mode & 0o002) !== 0 ? 'every user' : 'its group'} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  }
  return undefined;
}

async function statOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await stat(p);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
    // Unreadable metadata (EACCES): say nothing here; reading the file will fail with its own message.
    return undefined;
  }
}
