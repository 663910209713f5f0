/**
 * The real command runner and file reader, for the entry point to pass to collectPosture.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import type { CommandRunner, PostureFiles } from './types.ts';

/** At most this much output is kept from a command. */
const MAX_OUTPUT = 4 * 1024 * 1024;

export interface CommandRunnerOptions {
  /** The environment for commands; LC_ALL=C and LANG=C are added so outputs parse the same everywhere. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Runs programs without a shell; never throws (a command that cannot start or times out has code null). */
export function createCommandRunner(options: CommandRunnerOptions = {}): CommandRunner {
  const env = options.env === undefined ? undefined : { ...options.env, LC_ALL: 'C', LANG: 'C' };
  return (cmd, args, { timeoutMs }) =>
    new Promise((resolve) => {
      try {
        execFile(cmd, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, encoding: 'utf8', windowsHide: true, env }, (error, stdout, stderr) => {
          if (error === null) {
            resolve({ code: 0, stdout, stderr });
            return;
          }
          const code = typeof error.code === 'number' && !error.killed ? error.code : null;
          resolve({ code, stdout: stdout ?? '', stderr: stderr === '' ? error.message : stderr });
        });
      } catch (err) {
        resolve({ code: null, stdout: '', stderr: err instanceof Error ? err.message : String(err) });
      }
    });
}

export function createPostureFiles(): PostureFiles {
  return {
    async readText(path, maxBytes = 1024 * 1024) {
      let handle: fs.FileHandle | undefined;
      try {
        handle = await fs.open(path, 'r');
        const buffer = Buffer.alloc(maxBytes);
        const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
        return buffer.subarray(0, bytesRead).toString('utf8');
      } catch {
        return undefined;
      } finally {
        await handle?.close().catch(() => undefined);
      }
    },
    async exists(path) {
      try {
        await fs.stat(path);
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        return code === 'ENOENT' || code === 'ENOTDIR' ? false : undefined;
      }
    },
    async list(path) {
      try {
        return await fs.readdir(path);
      } catch {
        return undefined;
      }
    },
  };
}
