/**
 * How the admin CLI prints: human tables by default, `-o json` and `-o yaml` for scripts. Text from
 * the server (names, descriptions, SNI, user agents in events) is made printable before it reaches
 * a terminal, so no escape sequence in the data can move the cursor or recolour the screen.
 */
import { InvalidArgumentError } from 'commander';
import { stringify } from 'yaml';
import { UserError } from '../lib/errors.ts';

export type OutputFormat = 'table' | 'json' | 'yaml';

export function parseOutputFormat(value: string): OutputFormat {
  if (value === 'table' || value === 'json' || value === 'yaml') return value;
  throw new InvalidArgumentError('must be table, json or yaml');
}

/** Control characters (C0, C1, DEL) and line/paragraph separators shown as \uXXXX. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function cell(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-';
  if (Array.isArray(value)) return value.length === 0 ? '-' : printable(value.map((v) => String(v)).join(','));
  if (typeof value === 'object') return printable(JSON.stringify(value));
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return printable(String(value));
  return '-';
}

/** Columns padded to the widest cell; the last column is not padded. */
export function table(headers: string[], rows: unknown[][]): string[] {
  const cells = rows.map((row) => row.map(cell));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((row) => (row[i] ?? '').length)));
  const line = (row: string[]): string => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(headers), ...cells.map(line)];
}

export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

/** YAML documents separated by `---`, as `causeway apply -f` reads them. */
export function toYamlDocuments(documents: unknown[]): string {
  return documents.map((d) => stringify(d, { lineWidth: 0 })).join('---\n').replace(/\n$/, '');
}

/** "2026-03-01T12:00:00.000Z" → "2026-03-01 12:00:00Z"; short enough for a table. */
export function shortTime(iso: unknown): string {
  if (typeof iso !== 'string') return '-';
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$/.exec(iso);
  return match === null ? iso : `${match[1]} ${match[2]}Z`;
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: an ISO time, or a duration ago (`15m`, `1h`, `7d`). */
export function parseTimeFlag(value: string, now: number): string {
  const relative = /^([0-9]{1,6})([smhd])$/.exec(value.trim());
  if (relative !== null) return new Date(now - Number(relative[1]) * UNIT_MS[relative[2]]).toISOString();
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw new UserError('BAD_ARGUMENT', `"${printable(value.slice(0, 64))}" is not a time: give an ISO time (2026-01-01T00:00:00Z) or a duration ago (15m, 1h, 7d).`);
  return new Date(ms).toISOString();
}
