/**
 * The fake container runtime behind exec: a handful of deterministic commands that read and write
 * through ExecStreams, and the pod's in-memory filesystem (files.ts) for `cat FILE`, `ls`, `test`,
 * `mkdir` and `tar` (what `kubectl cp` runs). The streams are transport-neutral: the WebSocket
 * channel protocols and SPDY/3.1 each map their channels onto them and report the result.
 */
import { posix } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { PodFilesystem } from './files.ts';
import { normalizePath } from './files.ts';
import { readTar, writeTar } from './tar.ts';
import type { TarEntry } from './tar.ts';

export interface ExecStreams {
  /** The client's stdin; null when the exec asked for none. Ends when the client closes it. */
  stdin: Readable | null;
  stdout: Writable | null;
  stderr: Writable | null;
  tty: boolean;
  /** Aborted when the client goes away; long commands stop. */
  signal: AbortSignal;
}

export interface ExecTarget {
  namespace: string;
  pod: string;
  container: string;
  /** The pod's filesystem. */
  fs: PodFilesystem;
}

/** How a command ended: an exit code, or an error that kept it from running at all. */
export type ExecResult = { exitCode: number } | { error: string };

type Command = (args: string[], io: ExecStreams, target: ExecTarget) => Promise<ExecResult>;

function write(stream: Writable | null, text: string, tty: boolean): void {
  if (stream === null || stream.destroyed) return;
  // A terminal turns \n into \r\n (onlcr), so kubectl -t output looks like a real one.
  stream.write(tty ? text.replace(/\r?\n/g, '\r\n') : text);
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/** Copies stdin to stdout (with backpressure) until stdin ends or the client goes away. */
function copyUntilEnd(stdin: Readable, io: ExecStreams): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      io.signal.removeEventListener('abort', done);
      resolve();
    };
    stdin.on('data', (chunk: Buffer) => {
      if (io.stdout !== null && !io.stdout.destroyed && !io.stdout.write(chunk)) {
        stdin.pause();
        io.stdout.once('drain', () => stdin.resume());
      }
    });
    stdin.once('end', done);
    stdin.once('close', done);
    io.signal.addEventListener('abort', done, { once: true });
  });
}

function readAll(stdin: Readable | null, signal: AbortSignal): Promise<Buffer> {
  if (stdin === null) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const done = (): void => {
      signal.removeEventListener('abort', done);
      resolve(Buffer.concat(chunks));
    };
    stdin.on('data', (c: Buffer) => chunks.push(c));
    stdin.once('end', done);
    stdin.once('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

interface TarArgs {
  mode: 'c' | 'x' | 't' | undefined;
  file: string | undefined;
  dir: string;
  paths: string[];
  error?: string;
}

/** Parses GNU tar's arguments as kubectl cp uses them: `cf - PATH`, `-xmf - -C DIR`, `--no-same-owner`. */
function parseTarArgs(args: string[]): TarArgs {
  const out: TarArgs = { mode: undefined, file: undefined, dir: '/', paths: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith('--')) {
      if (a.startsWith('--directory=')) out.dir = a.slice('--directory='.length);
      else if (!['--no-same-permissions', '--no-same-owner', '--touch', '--verbose'].includes(a)) return { ...out, error: `unrecognized option '${a}'` };
      continue;
    }
    if (a === '-C') {
      out.dir = args[++i] ?? '';
      continue;
    }
    // A bundle of short options: the first argument may omit its dash (old style: `cf`).
    if (a.startsWith('-') || (i === 0 && out.mode === undefined)) {
      for (const letter of a.replace(/^-/, '')) {
        if (letter === 'c' || letter === 'x' || letter === 't') {
          if (out.mode !== undefined && out.mode !== letter) return { ...out, error: "You may not specify more than one '-Acdtrux', '--delete' or  '--test-label' option" };
          out.mode = letter;
        } else if (letter === 'f') out.file = args[++i];
        else if (letter === 'C') out.dir = args[++i] ?? '';
        else if (!'mvpo'.includes(letter)) return { ...out, error: `invalid option -- '${letter}'` };
      }
      continue;
    }
    out.paths.push(a);
  }
  return out;
}

/** `tar cf - PATH...`, `tar xf - [-C DIR]` and `tar tf -`, on the pod's filesystem; the archive is stdin/stdout. */
async function tar(args: string[], io: ExecStreams, target: ExecTarget): Promise<ExecResult> {
  const parsed = parseTarArgs(args);
  const fail = (message: string, code = 2): ExecResult => {
    write(io.stderr, `tar: ${message}\n`, false);
    return { exitCode: code };
  };
  if (parsed.error !== undefined) return fail(`${parsed.error}\nTry 'tar --help' or 'tar --usage' for more information.`, 2);
  if (parsed.mode === undefined) return fail("You must specify one of the '-Acdtrux', '--delete' or '--test-label' options");
  if (parsed.file !== '-') return fail(`the fake runtime's tar only reads and writes the archive on stdin/stdout (f -), not ${parsed.file ?? 'a tape'}`);
  const fs = target.fs;
  if (!fs.isDir(parsed.dir)) return fail(`${parsed.dir}: Cannot open: No such file or directory\ntar: Error is not recoverable: exiting now`);
  let failed = false;

  if (parsed.mode === 'c') {
    if (parsed.paths.length === 0) return fail('Cowardly refusing to create an empty archive');
    const entries: TarEntry[] = [];
    let warned = false;
    for (const given of parsed.paths) {
      const found = fs.walk(normalizePath(given, parsed.dir));
      if (found.length === 0) {
        write(io.stderr, `tar: ${given}: Cannot stat: No such file or directory\n`, false);
        failed = true;
        continue;
      }
      let member = given.replace(/\/+$/, '');
      if (member.startsWith('/')) {
        if (!warned) write(io.stderr, "tar: Removing leading `/' from member names\n", false);
        warned = true;
        member = member.replace(/^\/+/, '');
      }
      const root = found[0].path;
      for (const { path, node } of found) {
        const rel = path === root ? '' : path.slice(root === '/' ? 1 : root.length + 1);
        const name = member === '' ? rel : rel === '' ? member : `${member}/${rel}`;
        if (name === '') continue;
        entries.push({ name, type: node.type, mode: node.mode, mtime: node.mtime, data: node.data });
      }
    }
    if (io.stdout !== null && !io.stdout.destroyed) io.stdout.write(writeTar(entries));
    if (failed) write(io.stderr, 'tar: Exiting with failure status due to previous errors\n', false);
    return { exitCode: failed ? 2 : 0 };
  }

  const archive = readTar(await readAll(io.stdin, io.signal));
  if (parsed.mode === 't') {
    write(io.stdout, archive.entries.map((e) => `${e.name}\n`).join(''), io.tty);
  } else {
    let warned = false;
    for (const entry of archive.entries) {
      let name = entry.name;
      if (name.startsWith('/')) {
        if (!warned) write(io.stderr, "tar: Removing leading `/' from member names\n", false);
        warned = true;
        name = name.replace(/^\/+/, '');
      }
      if (name.split('/').includes('..')) {
        write(io.stderr, `tar: ${entry.name}: Member name contains '..'\n`, false);
        failed = true;
        continue;
      }
      const dest = normalizePath(name, normalizePath(parsed.dir));
      // -m: extracted files get the current time, as kubectl cp asks.
      const problem = entry.type === 'dir' ? fs.mkdirp(dest, entry.mode) : fs.writeFile(dest, entry.data, { mode: entry.mode });
      if (problem !== undefined) {
        write(io.stderr, `tar: ${entry.name}: Cannot open: ${problem}\n`, false);
        failed = true;
      }
    }
    for (const name of archive.skipped) write(io.stderr, `tar: ${name}: the fake runtime extracts only files and directories\n`, false);
  }
  if (archive.error !== undefined) {
    write(io.stderr, `tar: ${archive.error}\ntar: Exiting with failure status due to previous errors\n`, false);
    return { exitCode: 2 };
  }
  if (failed) write(io.stderr, 'tar: Exiting with failure status due to previous errors\n', false);
  return { exitCode: failed ? 2 : 0 };
}

const commands: Record<string, Command> = {
  echo: (args, io) => {
    const noNewline = args[0] === '-n';
    const words = noNewline ? args.slice(1) : args;
    write(io.stdout, words.join(' ') + (noNewline ? '' : '\n'), io.tty);
    return Promise.resolve({ exitCode: 0 });
  },
  true: () => Promise.resolve({ exitCode: 0 }),
  false: () => Promise.resolve({ exitCode: 1 }),
  hostname: (_args, io, target) => {
    write(io.stdout, `${target.pod}\n`, io.tty);
    return Promise.resolve({ exitCode: 0 });
  },
  env: (_args, io, target) => {
    const vars = [
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      `HOSTNAME=${target.pod}`,
      ...(io.tty ? ['TERM=xterm'] : []),
      'KUBERNETES_SERVICE_HOST=10.96.0.1',
      'KUBERNETES_SERVICE_PORT=443',
      'KUBERNETES_PORT=tcp://10.96.0.1:443',
      'HOME=/root',
    ];
    write(io.stdout, vars.map((v) => `${v}\n`).join(''), io.tty);
    return Promise.resolve({ exitCode: 0 });
  },
  /** seq N: the numbers 1..N, one a line (bulk output). */
  seq: (args, io) => {
    const n = Number(args[0]);
    if (!Number.isInteger(n) || n < 0) {
      write(io.stderr, `seq: invalid argument: '${args[0] ?? ''}'\n`, io.tty);
      return Promise.resolve({ exitCode: 1 });
    }
    const lines: string[] = [];
    for (let i = 1; i <= n; i++) lines.push(String(i));
    if (n > 0) write(io.stdout, `${lines.join('\n')}\n`, io.tty);
    return Promise.resolve({ exitCode: 0 });
  },
  /** sleep N: waits N seconds, or until the client goes away. */
  sleep: async (args, io) => {
    const seconds = Number(args[0]);
    if (!Number.isFinite(seconds) || seconds < 0) {
      write(io.stderr, `sleep: invalid time interval '${args[0] ?? ''}'\n`, io.tty);
      return { exitCode: 1 };
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, seconds * 1000))), aborted(io.signal)]);
    clearTimeout(timer);
    return { exitCode: 0 };
  },
  /** cat: stdin to stdout until stdin ends; with file arguments, the files. */
  cat: async (args, io, target) => {
    if (args.length > 0) {
      let code = 0;
      for (const a of args) {
        const node = target.fs.stat(a);
        if (node === undefined) {
          write(io.stderr, `cat: ${a}: No such file or directory\n`, io.tty);
          code = 1;
        } else if (node.type === 'dir') {
          write(io.stderr, `cat: ${a}: Is a directory\n`, io.tty);
          code = 1;
        } else if (io.stdout !== null && !io.stdout.destroyed) {
          io.stdout.write(node.data);
        }
      }
      return { exitCode: code };
    }
    const stdin = io.stdin;
    if (stdin === null) return { exitCode: 0 };
    await copyUntilEnd(stdin, io);
    return { exitCode: 0 };
  },
  /** ls [PATH...]: names, one a line. */
  ls: (args, io, target) => {
    let code = 0;
    for (const a of args.length === 0 ? ['/'] : args) {
      const node = target.fs.stat(a);
      if (node === undefined) {
        write(io.stderr, `ls: cannot access '${a}': No such file or directory\n`, io.tty);
        code = 2;
      } else {
        write(io.stdout, node.type === 'dir' ? target.fs.children(a).map((c) => `${c}\n`).join('') : `${a}\n`, io.tty);
      }
    }
    return Promise.resolve({ exitCode: code });
  },
  /** test -d|-f|-e PATH (kubectl cp asks `test -d DEST` first). */
  test: (args, _io, target) => {
    const [op, path] = args;
    if (path === undefined) return Promise.resolve({ exitCode: op === undefined || op === '' ? 1 : 0 });
    const node = target.fs.stat(path);
    const ok = op === '-d' ? node?.type === 'dir' : op === '-f' ? node?.type === 'file' : op === '-e' ? node !== undefined : false;
    return Promise.resolve({ exitCode: ok ? 0 : 1 });
  },
  /** mkdir [-p] DIR... */
  mkdir: (args, io, target) => {
    const parents = args.includes('-p');
    let code = 0;
    for (const dir of args.filter((a) => !a.startsWith('-'))) {
      const exists = target.fs.stat(dir) !== undefined;
      const parentOk = target.fs.isDir(posix.dirname(normalizePath(dir)));
      if ((exists && !parents) || (!parents && !parentOk)) {
        write(io.stderr, `mkdir: cannot create directory '${dir}': ${exists ? 'File exists' : 'No such file or directory'}\n`, io.tty);
        code = 1;
        continue;
      }
      const problem = target.fs.mkdirp(dir);
      if (problem !== undefined) {
        write(io.stderr, `mkdir: cannot create directory '${dir}': Not a directory\n`, io.tty);
        code = 1;
      }
    }
    return Promise.resolve({ exitCode: code });
  },
  tar: (args, io, target) => tar(args, io, target),
  sh: (args, io, target) => shell(args, io, target, 'sh'),
  bash: (args, io, target) => shell(args, io, target, 'bash'),
};

/** Splits a command line on blanks, honouring single and double quotes. */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) words.push(m[1]?.replace(/\\(.)/g, '$1') ?? m[2] ?? m[3]);
  return words;
}

/** `sh -c SCRIPT`: runs `;`- or newline-separated fake commands; `exit N` ends with N. */
async function shell(args: string[], io: ExecStreams, target: ExecTarget, name: string): Promise<ExecResult> {
  if (args[0] !== '-c' || args.length < 2) {
    write(io.stderr, `${name}: only '${name} -c SCRIPT' is supported by the fake runtime\n`, io.tty);
    return { exitCode: 2 };
  }
  let last: ExecResult = { exitCode: 0 };
  for (const statement of args[1].split(/[;\n]/)) {
    const words = splitWords(statement);
    if (words.length === 0) continue;
    if (words[0] === 'exit') {
      const code = words[1] === undefined ? ('exitCode' in last ? last.exitCode : 1) : Number(words[1]);
      return { exitCode: Number.isInteger(code) ? code & 0xff : 2 };
    }
    const command = commands[words[0]];
    if (command === undefined) {
      write(io.stderr, `${name}: ${words[0]}: not found\n`, io.tty);
      last = { exitCode: 127 };
      continue;
    }
    last = await command(words.slice(1), io, target);
    if ('error' in last) return last;
  }
  return last;
}

export const fakeCommands: readonly string[] = Object.keys(commands);

/** Runs a fake command; an unknown one fails to start, as a missing binary does in a real runtime. */
export async function runFakeCommand(command: string[], io: ExecStreams, target: ExecTarget): Promise<ExecResult> {
  const [name, ...args] = command;
  const run = name === undefined ? undefined : commands[name];
  if (run === undefined) {
    return { error: `failed to exec in container: OCI runtime exec failed: exec failed: unable to start container process: exec: "${name ?? ''}": executable file not found in $PATH: unknown` };
  }
  const result = await run(args, io, target);
  // A command that never read stdin leaves it flowing into the void, as a real pipe would.
  io.stdin?.resume();
  return result;
}

/**
 * What `attach` connects to: the container's main process, which in the fake echoes its stdin to
 * stdout (like `cat`) and ends when stdin ends; without stdin it runs until the client goes away.
 */
export async function runAttach(io: ExecStreams): Promise<ExecResult> {
  if (io.stdin !== null) await copyUntilEnd(io.stdin, io);
  else await aborted(io.signal);
  return { exitCode: 0 };
}

/** The Status a kubelet reports on the error channel when the command has finished. */
export function resultStatus(command: string[], result: ExecResult): Record<string, unknown> {
  if ('error' in result) {
    return { metadata: {}, status: 'Failure', message: `Internal error occurred: error executing command in container: ${result.error}`, reason: 'InternalError', details: { causes: [{ message: result.error }] }, code: 500 };
  }
  if (result.exitCode === 0) return { metadata: {}, status: 'Success' };
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${result.exitCode}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(result.exitCode) }] },
  };
}
