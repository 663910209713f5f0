/**
 * The child processes of one benchmark run: every relay (stunnel, nginx, the Causeway parts) and
 * the backend run outside the benchmark's own process, so the CPU split on a 2-core machine looks
 * like production. Each child writes its output to a log file in the run's work directory; the
 * last lines are shown when a child dies early. Children are stopped by their own pid only.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ChildMessage {
  type: string;
  id?: number;
  [key: string]: unknown;
}

export interface StartOptions {
  /** Short name for logs and errors, e.g. `stunnel-entry`. */
  name: string;
  command: string;
  args: string[];
  logFile: string;
  /** Open an IPC channel (Node children only). */
  ipc?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Memory of one process (and its descendants), as the kernel sees it. */
export interface MemorySample {
  rssBytes: number;
  /** Only for Node children that answer the `memory` IPC request. */
  heapUsedBytes?: number;
  externalBytes?: number;
}

export class BenchProcess {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (m: ChildMessage) => void; reject: (e: Error) => void }>();
  private readonly messageWaiters: Array<{ type: string; resolve: (m: ChildMessage) => void }> = [];

  constructor(options: StartOptions) {
    this.name = options.name;
    this.logFile = options.logFile;
    const fd = openSync(options.logFile, 'a');
    try {
      this.child = spawn(options.command, options.args, {
        stdio: options.ipc === true ? ['ignore', fd, fd, 'ipc'] : ['ignore', fd, fd],
        env: options.env ?? process.env,
        cwd: options.cwd,
        serialization: 'json',
      });
    } finally {
      closeSync(fd);
    }
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        const err = new Error(`${this.name} exited (${code ?? signal ?? 'unknown'})${this.tail()}`);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        resolve({ code, signal });
      });
    });
    this.child.once('error', (err) => {
      const e = new Error(`${this.name} could not start: ${err.message}`);
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
    this.child.on('message', (raw: unknown) => {
      const message = raw as ChildMessage;
      if (typeof message.id === 'number') {
        const p = this.pending.get(message.id);
        if (p !== undefined) {
          this.pending.delete(message.id);
          if (message.type === 'error') p.reject(new Error(`${this.name}: ${String(message['message'])}`));
          else p.resolve(message);
          return;
        }
      }
      const i = this.messageWaiters.findIndex((w) => w.type === message.type);
      if (i >= 0) this.messageWaiters.splice(i, 1)[0].resolve(message);
    });
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error(`${this.name} has no pid (did not start)`);
    return pid;
  }

  get alive(): boolean {
    return this.exitInfo === undefined && this.child.pid !== undefined;
  }

  /** Waits for an unsolicited message of this type (e.g. `ready`), failing if the child exits first. */
  async waitForMessage(type: string, timeoutMs: number): Promise<ChildMessage> {
    const message = new Promise<ChildMessage>((resolve) => this.messageWaiters.push({ type, resolve }));
    return this.race(message, timeoutMs, `waiting for "${type}"`);
  }

  /** Sends a request over IPC and waits for the reply with the same id. */
  async request(message: ChildMessage, timeoutMs = 30_000): Promise<ChildMessage> {
    const id = this.nextId++;
    const reply = new Promise<ChildMessage>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.child.send({ ...message, id });
    return this.race(reply, timeoutMs, `waiting for the reply to "${message.type}"`);
  }

  /** Resolves once something listens on the port (read from /proc/net/tcp), failing if the child exits. */
  async waitForListening(port: number, timeoutMs = 15_000): Promise<void> {
    const listening = (async () => {
      while (!isListening(port)) {
        if (!this.alive) return;
        await sleep(20);
      }
    })();
    await this.race(listening, timeoutMs, `waiting for it to listen on port ${port}`);
    if (!this.alive) throw new Error(`${this.name} exited before listening on ${port}${this.tail()}`);
  }

  /** User + system CPU seconds of this process and all its descendants (threads included). */
  cpuSeconds(): number {
    return processTree(this.pid).reduce((sum, pid) => sum + cpuTicks(pid), 0) / CLOCK_TICKS;
  }

  /** Resident memory of this process and its descendants; Node children add heap figures over IPC. */
  async memory(options: { gc: boolean } = { gc: false }): Promise<MemorySample> {
    if (this.child.channel !== undefined && this.child.channel !== null) {
      const reply = await this.request({ type: 'memory', gc: options.gc });
      return { rssBytes: Number(reply['rss']), heapUsedBytes: Number(reply['heapUsed']), externalBytes: Number(reply['external']) };
    }
    return { rssBytes: processTree(this.pid).reduce((sum, pid) => sum + rssBytes(pid), 0) };
  }

  /** SIGTERM, then SIGKILL if the child is still there after `graceMs`. */
  async stop(graceMs = 3_000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const done = await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done && this.alive) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** The last lines of the child's log, for error messages. */
  tail(lines = 15): string {
    try {
      const text = readFileSync(this.logFile, 'utf8').trimEnd();
      if (text === '') return '';
      return `\n--- last lines of ${this.logFile} ---\n${text.split('\n').slice(-lines).join('\n')}`;
    } catch {
      return '';
    }
  }

  private async race<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
    const timeout = new AbortController();
    try {
      return await Promise.race([
        promise,
        this.exited.then(() => {
          throw new Error(`${this.name} exited while ${what}${this.tail()}`);
        }),
        sleep(timeoutMs, undefined, { signal: timeout.signal }).then(() => {
          throw new Error(`${this.name}: timed out after ${timeoutMs} ms ${what}${this.tail()}`);
        }),
      ]);
    } finally {
      timeout.abort();
    }
  }
}

/** Every child of one run; `stopAll` stops them in reverse start order. */
export class ProcessGroup {
  private readonly processes: BenchProcess[] = [];

  start(options: StartOptions): BenchProcess {
    const p = new BenchProcess(options);
    this.processes.push(p);
    // A failed spawn is reported through `exited`/`race`; keep it from being an unhandled error.
    p.child.on('error', () => {});
    return p;
  }

  /** A Node child running one of the bench's TypeScript entry points, with IPC and `--expose-gc`. */
  startNode(name: string, script: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): BenchProcess {
    return this.start({
      name,
      command: process.execPath,
      args: ['--expose-gc', '--disable-warning=ExperimentalWarning', script, ...args],
      logFile,
      ipc: true,
      env: env ?? process.env,
    });
  }

  async stopAll(): Promise<void> {
    const all = this.processes.splice(0).reverse();
    await Promise.all(all.map((p) => p.stop().catch(() => {})));
  }
}

const CLOCK_TICKS = 100; // USER_HZ on Linux; /proc/<pid>/stat counts CPU time in these

function isListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // fields[1] = local address "0100007F:1F90", fields[3] = state, 0A = LISTEN
      if (fields[3] === '0A' && fields[1]?.endsWith(`:${hex}`) === true) return true;
    }
  }
  return false;
}

function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const dir = `/proc/${out[i]}/task`;
    if (!existsSync(dir)) continue;
    for (const tid of safeReaddir(dir)) {
      try {
        const children = readFileSync(`${dir}/${tid}/children`, 'utf8').trim();
        if (children !== '') out.push(...children.split(/\s+/).map(Number));
      } catch {
        // thread or process gone
      }
    }
  }
  return out;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
  } catch {
    return 0;
  }
}

function rssBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? 0 : Number(match[1]) * 1024;
  } catch {
    return 0;
  }
}

/** Polls `check` every 5 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(5);
  }
}

/** SIGTERM to every child still running, SIGKILL after 3 s; resolves when all have exited. */
export async function stopChildren(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) {
            resolve();
            return;
          }
          const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
}
