/**
 * The files the commands keep on disk: existence checks, writes with a fixed mode, and the CA key
 * passphrase file. Used by the entry-point modules only (`causeway server`, `causeway ca`, the
 * quickstart's data directory): reading and writing files is theirs alone, so this stays out of
 * src/lib, which is free of process state and of the file system.
 */
import { randomBytes } from 'node:crypto';
import { chmod, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { UserError, errorCode } from './lib/errors.ts';

/** Where every command looks for the CA key passphrase when no file names one. */
export const PASSPHRASE_ENV = 'CAUSEWAY_CA_PASSPHRASE';

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Writes a new file only if nothing is there yet, with the given mode whatever the umask. */
export async function writeNew(path: string, data: string, mode: number): Promise<void> {
  await writeFile(path, data, { flag: 'wx', mode });
  await chmod(path, mode);
}

/** Replaces a file atomically (temp file, then rename), with the given mode from the start. */
export async function writeReplacing(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeNew(tmp, data, mode);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Reads a passphrase file; one trailing newline is not part of the passphrase. */
export async function readPassphraseFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UserError('CA_PASSPHRASE_FILE', `Cannot read the CA passphrase file ${path}: ${errorCode(err) ?? 'error'}. Check the path and its permissions.`, { cause: err });
  }
  return text.replace(/\r?\n$/, '');
}

/** Generates a passphrase into a new file at `path` (mode 0600, never replacing one) and returns it. */
export async function writeNewPassphrase(path: string): Promise<string> {
  const passphrase = randomBytes(32).toString('base64url');
  await writeNew(path, `${passphrase}\n`, 0o600);
  return passphrase;
}
