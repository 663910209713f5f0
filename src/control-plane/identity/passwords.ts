/**
 * Password hashes for the built-in user directory: scrypt (node:crypto) with N = 2^15, r = 8, p = 1
 * (32 MiB and roughly 50-100 ms per hash), a 16-byte random salt and a 32-byte key, written in a
 * self-describing form so the cost can be raised later without breaking stored hashes:
 *
 *   scrypt$<log2 N>$<r>$<p>$<salt base64>$<key base64>
 *
 * Passwords are normalised to Unicode NFC before hashing, so the same password typed on systems that
 * compose characters differently still matches. Comparison is constant-time.
 */
import { randomBytes, scrypt as scryptCallback, timingSafeEqual } from 'node:crypto';
import type { ScryptOptions } from 'node:crypto';
import { UserError } from '../../lib/errors.ts';

export const MIN_PASSWORD_LENGTH = 12;
export const MAX_PASSWORD_LENGTH = 1024;

const LOG_N = 15;
const R = 8;
const P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** The most a stored hash may ask for (2^20 × 8 × 128 bytes = 1 GiB would be too much; 2^17 is 128 MiB). */
const MAX_LOG_N = 17;

function scrypt(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(password, salt, keyLength, options, (err, key) => {
      if (err !== null) reject(err);
      else resolve(key);
    });
  });
}

/** scrypt needs 128 × N × r bytes; allow that plus headroom (Node's default maxmem is exactly 32 MiB). */
function costOptions(logN: number, r: number, p: number): ScryptOptions {
  const N = 2 ** logN;
  return { N, r, p, maxmem: 128 * N * r * 2 };
}

function characters(password: string): number {
  let count = 0;
  for (const _ of password) count += 1;
  return count;
}

/** Throws PASSWORD_TOO_SHORT / PASSWORD_TOO_LONG for a password that may not be set. */
export function checkPasswordPolicy(password: string): void {
  const length = characters(password.normalize('NFC'));
  if (length < MIN_PASSWORD_LENGTH) throw new UserError('PASSWORD_TOO_SHORT', `the password has ${length} characters; use at least ${MIN_PASSWORD_LENGTH} (a passphrase of several words is easiest to remember)`);
  if (length > MAX_PASSWORD_LENGTH) throw new UserError('PASSWORD_TOO_LONG', `the password has ${length} characters; use at most ${MAX_PASSWORD_LENGTH}`);
}

/** A new hash of `password` (after checkPasswordPolicy), in the self-describing format above. */
export async function hashPassword(password: string): Promise<string> {
  checkPasswordPolicy(password);
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(password.normalize('NFC'), salt, KEY_BYTES, costOptions(LOG_N, R, P));
  return `scrypt$${LOG_N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface ParsedHash {
  logN: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function parseHash(hash: string): ParsedHash | undefined {
  const match = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/.exec(hash);
  if (match === null) return undefined;
  const [logN, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (logN < 10 || logN > MAX_LOG_N || r < 1 || r > 32 || p < 1 || p > 4) return undefined;
  const salt = Buffer.from(match[4], 'base64');
  const key = Buffer.from(match[5], 'base64');
  // Exactly the bytes written (no lenient base64), and the full key: a shortened key would still match
  // the same-length prefix of scrypt's output.
  if (salt.toString('base64') !== match[4] || key.toString('base64') !== match[5]) return undefined;
  if (salt.length < SALT_BYTES || key.length !== KEY_BYTES) return undefined;
  return { logN, r, p, salt, key };
}

/** Whether `hash` is in a form verifyPassword understands (for checks before storing one). */
export function isPasswordHash(hash: string): boolean {
  return parseHash(hash) !== undefined;
}

/**
 * Whether `password` matches `hash`. A hash in an unknown form never matches (false, no throw). Does
 * the full scrypt work for any password length up to MAX_PASSWORD_LENGTH; longer ones are refused
 * after the same work on a truncated copy, so the time does not tell them apart.
 */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const parsed = parseHash(hash);
  if (parsed === undefined) return false;
  const normalized = password.normalize('NFC');
  const tooLong = normalized.length > MAX_PASSWORD_LENGTH * 2;
  const candidate = await scrypt(tooLong ? normalized.slice(0, MAX_PASSWORD_LENGTH * 2) : normalized, parsed.salt, parsed.key.length, costOptions(parsed.logN, parsed.r, parsed.p));
  return timingSafeEqual(candidate, parsed.key) && !tooLong;
}

let dummy: Promise<string> | undefined;

/**
 * A hash of a random password, made once: the directory verifies against it when there is no real
 * hash to check (unknown, disabled or IdP user), so those answers take as long as a wrong password.
 */
export function dummyPasswordHash(): Promise<string> {
  dummy ??= hashPassword(randomBytes(24).toString('base64'));
  return dummy;
}
