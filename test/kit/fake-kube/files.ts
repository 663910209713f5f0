/**
 * Each fake pod's filesystem: an in-memory tree of regular files and directories, shared by the
 * pod's containers, read and written by the fake runtime's `cat`, `ls`, `test` and `tar` (so
 * `kubectl cp` works both ways) and by tests through FakeKube.writeFile/readFile.
 */
import { posix } from 'node:path';

export interface FsNode {
  type: 'file' | 'dir';
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  data: Buffer;
}

/** Directories every pod starts with. */
const BASE_DIRS = ['/', '/tmp', '/root', '/etc', '/var', '/home', '/usr', '/bin'];

/** Normalises an absolute path (`/a/./b/../c/` → `/a/c`); relative paths are taken from cwd. */
export function normalizePath(path: string, cwd = '/'): string {
  const joined = path.startsWith('/') ? path : posix.join(cwd, path);
  const n = posix.normalize(joined);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

export class PodFilesystem {
  private readonly nodes = new Map<string, FsNode>();
  private readonly now: () => number;

  constructor(now: () => number = () => Date.now()) {
    this.now = now;
    for (const dir of BASE_DIRS) this.nodes.set(dir, this.node('dir', 0o755));
  }

  private node(type: 'file' | 'dir', mode: number, data = Buffer.alloc(0)): FsNode {
    return { type, mode, mtime: Math.floor(this.now() / 1000), data };
  }

  stat(path: string): FsNode | undefined {
    return this.nodes.get(normalizePath(path));
  }

  isDir(path: string): boolean {
    return this.stat(path)?.type === 'dir';
  }

  /** Creates a directory and its parents; fails (returns an error) when a file is in the way. */
  mkdirp(path: string, mode = 0o755): string | undefined {
    const p = normalizePath(path);
    const existing = this.nodes.get(p);
    if (existing !== undefined) return existing.type === 'dir' ? undefined : `${p}: Not a directory`;
    if (p !== '/') {
      const problem = this.mkdirp(posix.dirname(p));
      if (problem !== undefined) return problem;
    }
    this.nodes.set(p, this.node('dir', mode));
    return undefined;
  }

  /** Writes a file, creating its parent directories; returns an error message when it cannot. */
  writeFile(path: string, data: Buffer | string, options: { mode?: number; mtime?: number } = {}): string | undefined {
    const p = normalizePath(path);
    if (this.nodes.get(p)?.type === 'dir') return `${p}: Is a directory`;
    const problem = this.mkdirp(posix.dirname(p));
    if (problem !== undefined) return problem;
    const node = this.node('file', options.mode ?? 0o644, Buffer.from(data));
    if (options.mtime !== undefined) node.mtime = options.mtime;
    this.nodes.set(p, node);
    return undefined;
  }

  readFile(path: string): Buffer | undefined {
    const node = this.stat(path);
    return node?.type === 'file' ? node.data : undefined;
  }

  /** The direct children of a directory, sorted by name. */
  children(dir: string): string[] {
    const d = normalizePath(dir);
    const prefix = d === '/' ? '/' : `${d}/`;
    return [...this.nodes.keys()]
      .filter((p) => p !== d && p.startsWith(prefix) && !p.slice(prefix.length).includes('/'))
      .map((p) => p.slice(prefix.length))
      .sort();
  }

  /** The path and everything below it (depth first, parents before children). */
  walk(path: string): Array<{ path: string; node: FsNode }> {
    const p = normalizePath(path);
    const node = this.nodes.get(p);
    if (node === undefined) return [];
    const out = [{ path: p, node }];
    if (node.type === 'dir') for (const child of this.children(p)) out.push(...this.walk(p === '/' ? `/${child}` : `${p}/${child}`));
    return out;
  }
}

/** One filesystem per pod, created on first use, dropped when the pod is deleted. */
export class FilesystemStore {
  private readonly pods = new Map<string, PodFilesystem>();

  get(namespace: string, pod: string): PodFilesystem {
    const key = `${namespace}/${pod}`;
    let fs = this.pods.get(key);
    if (fs === undefined) {
      fs = new PodFilesystem();
      this.pods.set(key, fs);
    }
    return fs;
  }

  drop(namespace: string, pod: string): void {
    this.pods.delete(`${namespace}/${pod}`);
  }
}
