/**
 * Canonical JSON (RFC 8785, JCS, for the values JSON.parse gives): object keys sorted by UTF-16
 * code units, no whitespace, strings and numbers as ECMAScript's JSON.stringify writes them. Signed
 * data is serialized this way, and a verifier accepts a payload only if it already is in this form,
 * so the bytes the signature covers are exactly the value that is checked: no whitespace, key order,
 * duplicate key or number spelling can differ between what was signed and what is read.
 */

/** Deeper values are refused (a posture report is three levels deep). */
export const MAX_CANONICAL_DEPTH = 16;

/** Throws a TypeError for what JSON cannot carry exactly: non-finite numbers, undefined, functions, deep nesting. */
export function canonicalJson(value: unknown): string {
  return write(value, 0);
}

function write(value: unknown, depth: number): string {
  if (depth > MAX_CANONICAL_DEPTH) throw new TypeError('nested too deeply for canonical JSON');
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('canonical JSON has no NaN or Infinity');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item: unknown) => write(item, depth + 1)).join(',')}]`;
  if (typeof value === 'object') {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) throw new TypeError('canonical JSON takes plain objects only');
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record).sort();
    const parts: string[] = [];
    for (const key of keys) {
      if (record[key] === undefined) continue;
      parts.push(`${JSON.stringify(key)}:${write(record[key], depth + 1)}`);
    }
    return `{${parts.join(',')}}`;
  }
  throw new TypeError(`canonical JSON cannot carry a ${typeof value}`);
}
