/**
 * TOTP second factor (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1, 6 digits, 30-second steps, codes
 * accepted one step either side of now (clock drift between the phone and the server), 160-bit
 * secrets written in base32 (RFC 4648, no padding) as authenticator apps expect.
 *
 * Replay (a code used twice) is not decided here: matchTotp returns the time step a code belongs to,
 * and the directory refuses a step at or before the last one it accepted for that user.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { UserError } from '../../lib/errors.ts';

export const TOTP_DIGITS = 6;
export const TOTP_PERIOD_SECONDS = 30;
const SECRET_BYTES = 20;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32Encode(bytes: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** Decodes base32 (case, spaces, dashes and padding ignored). Throws TOTP_SECRET_INVALID on other characters. */
export function base32Decode(text: string): Buffer {
  const clean = text.toUpperCase().replace(/[\s=-]/g, '');
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const char of clean) {
    const index = BASE32.indexOf(char);
    if (index < 0) throw new UserError('TOTP_SECRET_INVALID', 'the TOTP secret is not base32 (letters A-Z and digits 2-7)');
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** A new random 160-bit secret, base32. */
export function newTotpSecret(): string {
  return base32Encode(randomBytes(SECRET_BYTES));
}

/** RFC 4226 HOTP: the `digits`-digit code of `key` for `counter`. */
export function hotp(key: Uint8Array, counter: number, digits: number = TOTP_DIGITS): string {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', key).update(message).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const binary = ((mac[offset] & 0x7f) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3];
  return String(binary % 10 ** digits).padStart(digits, '0');
}

/** The RFC 6238 time step of `nowMs`. */
export function totpStep(nowMs: number): number {
  return Math.floor(nowMs / 1000 / TOTP_PERIOD_SECONDS);
}

/** The current code of a base32 secret (for tests and tools). */
export function totpCode(secret: string, nowMs: number): string {
  return hotp(base32Decode(secret), totpStep(nowMs));
}

export interface TotpOptions {
  /** Steps accepted either side of now. Default 1. */
  window?: number;
}

/**
 * The time step that `code` is valid for, within `window` steps of `nowMs`, or undefined. Every
 * candidate step is computed and compared in constant time, so the time taken does not say which
 * one matched.
 */
export function matchTotp(secret: string, code: string, nowMs: number, options: TotpOptions = {}): number | undefined {
  const window = options.window ?? 1;
  if (!/^\d{6}$/.test(code)) return undefined;
  const key = base32Decode(secret);
  const now = totpStep(nowMs);
  const given = Buffer.from(code);
  let matched: number | undefined;
  for (let step = now - window; step <= now + window; step++) {
    if (step < 0) continue;
    if (timingSafeEqual(Buffer.from(hotp(key, step)), given) && matched === undefined) matched = step;
  }
  return matched;
}

export function verifyTotp(secret: string, code: string, nowMs: number, options: TotpOptions = {}): boolean {
  return matchTotp(secret, code, nowMs, options) !== undefined;
}

/** The `otpauth://` URI that authenticator apps read (usually from a QR code). */
export function totpUri({ secret, account, issuer }: { secret: string; account: string; issuer: string }): string {
  const label = `${encodeURIComponent(issuer)}:${encodeURIComponent(account)}`;
  const query = new URLSearchParams({ secret, issuer, algorithm: 'SHA1', digits: String(TOTP_DIGITS), period: String(TOTP_PERIOD_SECONDS) });
  return `otpauth://totp/${label}?${query.toString().replace(/\+/g, '%20')}`;
}
