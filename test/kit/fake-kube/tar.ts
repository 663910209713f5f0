/**
 * A small tar (POSIX ustar, with PAX `x` records and GNU `L` long names read and PAX written for
 * paths ustar cannot hold) for the fake runtime's `tar`, which `kubectl cp` drives in both
 * directions. Regular files and directories only; anything else is reported as skipped.
 */

export interface TarEntry {
  /** The member name as stored (no leading `./` added or removed). */
  name: string;
  type: 'file' | 'dir';
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  data: Buffer;
}

export interface TarParse {
  entries: TarEntry[];
  /** Members of other types (symlinks, devices, ...), by name. */
  skipped: string[];
  /** Set when the archive is malformed; the entries before the problem are still returned. */
  error?: string;
}

const BLOCK = 512;

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function checksum(header: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i];
  return sum;
}

function header(name: string, prefix: string, typeflag: string, size: number, mode: number, mtime: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(Math.max(0, Math.floor(mtime)), 12), 136, 'ascii');
  h.write(typeflag, 156, 'ascii');
  h.write('ustar\u000000', 257, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  h.write(octal(checksum(h), 7) + ' ', 148, 'ascii');
  return h;
}

function padded(data: Buffer): Buffer[] {
  const rest = data.length % BLOCK;
  return rest === 0 ? [data] : [data, Buffer.alloc(BLOCK - rest)];
}

/** Splits a name into ustar's prefix (≤155 bytes) and name (≤100 bytes), or undefined when it cannot. */
function splitUstar(name: string): { prefix: string; name: string } | undefined {
  if (Buffer.byteLength(name) <= 100) return { prefix: '', name };
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const p = name.slice(0, i);
    const n = name.slice(i + 1);
    if (Buffer.byteLength(p) <= 155 && Buffer.byteLength(n) <= 100 && n !== '') return { prefix: p, name: n };
  }
  return undefined;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

/** Writes a complete archive (with the two zero blocks at the end). */
export function writeTar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const name = e.type === 'dir' && !e.name.endsWith('/') ? `${e.name}/` : e.name;
    const size = e.type === 'dir' ? 0 : e.data.length;
    const typeflag = e.type === 'dir' ? '5' : '0';
    let split = splitUstar(name);
    if (split === undefined) {
      const pax = Buffer.from(paxRecord('path', name));
      parts.push(header('PaxHeaders/member', '', 'x', pax.length, 0o644, e.mtime), ...padded(pax));
      split = { prefix: '', name: name.slice(0, 100) };
    }
    parts.push(header(split.name, split.prefix, typeflag, size, e.mode, e.mtime));
    if (size > 0) parts.push(...padded(e.data));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

function field(block: Buffer, offset: number, length: number): string {
  const raw = block.subarray(offset, offset + length);
  const nul = raw.indexOf(0);
  return (nul < 0 ? raw : raw.subarray(0, nul)).toString('utf8');
}

function number(block: Buffer, offset: number, length: number): number {
  if ((block[offset] & 0x80) !== 0) {
    // GNU base-256 for big values.
    let n = 0;
    for (let i = offset + 1; i < offset + length; i++) n = n * 256 + block[i];
    return n;
  }
  const text = field(block, offset, length).trim();
  return text === '' ? 0 : parseInt(text, 8);
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    const length = space < 0 ? NaN : Number(data.subarray(offset, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= 0 || offset + length > data.length) break;
    const body = data.subarray(space + 1, offset + length).toString('utf8').replace(/\n$/, '');
    const eq = body.indexOf('=');
    if (eq > 0) out[body.slice(0, eq)] = body.slice(eq + 1);
    offset += length;
  }
  return out;
}

/** Reads an archive; stops at the end-of-archive zero block or at the end of the data. */
export function readTar(archive: Buffer): TarParse {
  const entries: TarEntry[] = [];
  const skipped: string[] = [];
  let offset = 0;
  let longName: string | undefined;
  let pax: Record<string, string> = {};
  while (offset + BLOCK <= archive.length) {
    const block = archive.subarray(offset, offset + BLOCK);
    if (block.every((b) => b === 0)) return { entries, skipped };
    if (number(block, 148, 8) !== checksum(block)) return { entries, skipped, error: 'This does not look like a tar archive' };
    const size = number(block, 124, 12);
    const typeflag = String.fromCharCode(block[156] || 0x30);
    const dataStart = offset + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > archive.length) return { entries, skipped, error: 'Unexpected EOF in archive' };
    const data = archive.subarray(dataStart, dataEnd);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (typeflag === 'x') {
      pax = { ...pax, ...parsePax(data) };
      continue;
    }
    if (typeflag === 'g') continue;
    if (typeflag === 'L') {
      longName = field(data, 0, data.length);
      continue;
    }
    const prefix = field(block, 345, 155);
    const stored = field(block, 0, 100);
    const name = pax.path ?? longName ?? (prefix === '' ? stored : `${prefix}/${stored}`);
    pax = {};
    longName = undefined;
    const mode = number(block, 100, 8);
    const mtime = number(block, 136, 12);
    if (typeflag === '0' || typeflag === '\0' || typeflag === '7') entries.push({ name, type: 'file', mode, mtime, data: Buffer.from(data) });
    else if (typeflag === '5') entries.push({ name, type: 'dir', mode, mtime, data: Buffer.alloc(0) });
    else skipped.push(name);
  }
  if (archive.length === 0) return { entries, skipped, error: 'This does not look like a tar archive' };
  // No end-of-archive blocks: complete members are still good, as GNU tar treats them.
  return offset === archive.length ? { entries, skipped } : { entries, skipped, error: 'Unexpected EOF in archive' };
}
