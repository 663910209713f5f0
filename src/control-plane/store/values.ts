/**
 * Value conversions shared by both databases: JSON in and out, times, cursors, and the one rule for
 * strings that PostgreSQL cannot hold.
 */
import { randomBytes } from 'node:crypto';
import { UserError } from '../../lib/errors.ts';

/**
 * PostgreSQL text and JSONB cannot hold U+0000 or unpaired surrogates, and a batch of access events
 * with a hostile SNI must never be refused (its spool would retry it forever). So on both databases,
 * before storing, NUL becomes U+2400 (SYMBOL FOR NULL) and lone surrogates become U+FFFD: the same
 * data reads back from either.
 */
export function storableString(value: string): string {
  // eslint-disable-next-line no-control-regex
  const noNul = value.includes('\u0000') ? value.replace(/\u0000/g, '\u2400') : value;
  return noNul.isWellFormed() ? noNul : noNul.toWellFormed();
}

/** A deep copy with every string (and key) made storable; drops undefined like JSON does. */
export function storable(value: unknown): unknown {
  if (typeof value === 'string') return storableString(value);
  if (Array.isArray(value)) return value.map((v) => storable(v === undefined ? null : v));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[storableString(k)] = storable(v);
    return out;
  }
  return value;
}

/** JSON with object keys sorted, so equal values give equal text (JSONB reorders keys). */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** The text to store in a JSON column: storable, canonical. */
export function toJson(value: unknown): string {
  return canonicalJson(storable(value));
}

export function fromJson<T>(text: string): T {
  return JSON.parse(text) as T;
}

export function fromJsonOrNull<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

/** A caller-given time as the one stored format; a bad value is a UserError naming the field. */
export function isoTime(value: string, field: string): string {
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw new UserError('INVALID_ARGUMENT', `${field} must be an ISO 8601 time, such as 2026-01-01T00:00:00Z`);
  return new Date(ms).toISOString();
}

/** An opaque page cursor over (time, id). */
export function encodeCursor(time: string, id: string): string {
  return Buffer.from(JSON.stringify([time, id]), 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): { time: string; id: string } {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(parsed) && parsed.length === 2 && typeof parsed[0] === 'string' && typeof parsed[1] === 'string') return { time: parsed[0], id: parsed[1] };
  } catch {
    // fall through
  }
  throw new UserError('INVALID_CURSOR', 'the page cursor is not one this server returned; start again without it');
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  if (!Number.isInteger(limit) || limit < 1) throw new UserError('INVALID_ARGUMENT', 'limit must be a whole number of at least 1');
  return Math.min(limit, 1000);
}

/**
 * UUID v7 ids that also sort in the order this process made them: within one millisecond, the 12
 * bits after the version count up (RFC 9562 §6.2, method 1), so audit events written in one
 * millisecond still page newest first in the order they happened.
 */
export class MonotonicIds {
  #lastMs = -1;
  #counter = 0;

  next(nowMs: number): string {
    let ms = Math.max(0, Math.floor(nowMs));
    if (ms <= this.#lastMs) {
      ms = this.#lastMs;
      this.#counter++;
      if (this.#counter > 0xfff) {
        ms++;
        this.#counter = 0;
      }
    } else {
      this.#counter = 0;
    }
    this.#lastMs = ms;
    const bytes = randomBytes(16);
    let rest = ms;
    for (let i = 5; i >= 0; i--) {
      bytes[i] = rest % 256;
      rest = Math.floor(rest / 256);
    }
    bytes[6] = 0x70 | (this.#counter >> 8);
    bytes[7] = this.#counter & 0xff;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = bytes.toString('hex');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
}
