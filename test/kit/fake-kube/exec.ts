/**
 * The fake container runtime behind exec: a handful of deterministic commands that read and write
 * through ExecStreams. The streams are transport-neutral (the WebSocket channel protocol today,
 * SPDY later), so a transport only has to map its channels onto them and report the result.
 */
import type { Readable, Writable } from 'node:stream';

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
  /** cat: stdin to stdout until stdin ends. With file arguments: no such file. */
  cat: async (args, io) => {
    if (args.length > 0) {
      write(io.stderr, args.map((a) => `cat: ${a}: No such file or directory\n`).join(''), io.tty);
      return { exitCode: 1 };
    }
    const stdin = io.stdin;
    if (stdin === null) return { exitCode: 0 };
    await new Promise<void>((resolve) => {
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
    return { exitCode: 0 };
  },
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
