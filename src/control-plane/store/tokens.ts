/**
 * Token secrets: `<prefix>_<id>_<secret>`. The id (public, 16 hex digits) finds the record; only the
 * SHA-256 of the whole token is stored, and it is compared in constant time. The prefix makes leaked
 * tokens easy for secret scanners to spot and tells API tokens from join tokens at a glance.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export type TokenPrefix = 'cwat' | 'cwjt';

export interface NewSecret {
  id: string;
  token: string;
  hash: string;
}

export function newSecret(prefix: TokenPrefix): NewSecret {
  const id = randomBytes(8).toString('hex');
  const token = `${prefix}_${id}_${randomBytes(32).toString('base64url')}`;
  return { id, token, hash: hashToken(token) };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

const SHAPE = /^(cwat|cwjt)_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;

/** The record id inside a token of this prefix, or undefined for anything else. */
export function tokenId(token: string, prefix: TokenPrefix): string | undefined {
  const match = SHAPE.exec(token);
  return match !== null && match[1] === prefix ? match[2] : undefined;
}

/** Constant-time: does this token hash to the stored hash? */
export function tokenMatches(token: string, storedHash: string): boolean {
  const a = Buffer.from(hashToken(token), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Console session secrets (the cookie value): `cwcs_` and 256 random bits; found by their SHA-256. */
export const CONSOLE_SECRET_PREFIX = 'cwcs_';
const CONSOLE_SHAPE = /^cwcs_[A-Za-z0-9_-]{43}$/;

export function newConsoleSecret(): { token: string; hash: string } {
  const token = `${CONSOLE_SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashToken(token) };
}

/** The stored hash of a console secret, or undefined when it does not have the shape of one. */
export function consoleSecretHash(secret: unknown): string | undefined {
  return typeof secret === 'string' && CONSOLE_SHAPE.test(secret) ? hashToken(secret) : undefined;
}
