/**
 * The SecretBox seals the control plane's secrets that must live in the store (signing keys, TOTP
 * secrets, the provider's cookie keys) with AES-256-GCM under a key derived from the CA passphrase,
 * so the database, its dumps and its backups hold none of them in the clear (CP-16). Every replica
 * has the same passphrase, and the scrypt salt is a setting, so every replica derives the same key.
 *
 * `context` is bound as additional authenticated data: a value sealed for one purpose (say, the TOTP
 * secret of one user) does not open as another (the TOTP secret of another user, or a signing key).
 *
 * Sealed form: `sb1.<iv base64url>.<ciphertext and tag base64url>`.
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt } from 'node:crypto';
import { UserError } from '../../lib/errors.ts';
import type { Store } from '../store/index.ts';

export const SECRET_BOX_SETTING_KEY = 'identity.secret-box';

const PREFIX = 'sb1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const CHECK_CONTEXT = 'secret-box:check';
const CHECK_TEXT = 'causeway secret box';
/** scrypt cost: 2^15 × 8 × 128 bytes = 32 MiB, about 100 ms once per start. */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

export interface SecretBox {
  seal(plaintext: string, context: string): string;
  /** Throws SECRET_BOX_OPEN_FAILED when the value was tampered with, sealed for another context or under another key. */
  open(sealed: string, context: string): string;
}

interface StoredBoxSetting {
  format: 1;
  /** base64url */
  salt: string;
  /** CHECK_TEXT sealed under the derived key: a replica with another passphrase learns so at start. */
  check: string;
}

export interface SecretBoxOptions {
  passphrase: string;
  /** Recorded as who created the salt. Default `system`. */
  actor?: string;
}

/** The installation's SecretBox: the salt is created on first use and shared through the store. */
export async function loadOrCreateSecretBox(store: Pick<Store, 'getSetting' | 'putSettingIfAbsent'>, options: SecretBoxOptions): Promise<SecretBox> {
  if (options.passphrase === '') throw new UserError('SECRET_BOX_PASSPHRASE_EMPTY', 'the CA passphrase is empty: give the server a passphrase (it also seals the identity secrets)');
  let text = await store.getSetting(SECRET_BOX_SETTING_KEY);
  if (text === undefined) {
    const salt = randomBytes(16);
    const box = secretBoxFromKey(await deriveKey(options.passphrase, salt));
    const value: StoredBoxSetting = { format: 1, salt: salt.toString('base64url'), check: box.seal(CHECK_TEXT, CHECK_CONTEXT) };
    const stored = await store.putSettingIfAbsent(SECRET_BOX_SETTING_KEY, JSON.stringify(value), { actor: options.actor ?? 'system' });
    if (stored.inserted) return box;
    // Another replica created it first: use theirs.
    text = stored.value;
  }
  const value = parseSetting(text);
  const box = secretBoxFromKey(await deriveKey(options.passphrase, Buffer.from(value.salt, 'base64url')));
  try {
    if (box.open(value.check, CHECK_CONTEXT) !== CHECK_TEXT) throw new Error('check text differs');
  } catch (err) {
    throw new UserError('SECRET_BOX_PASSPHRASE_WRONG', 'the identity secrets in the database were sealed with another CA passphrase: give every replica the same passphrase (--ca-passphrase-file or CAUSEWAY_CA_PASSPHRASE)', { cause: err });
  }
  return box;
}

/** A SecretBox over a raw 32-byte key (tests, and loadOrCreateSecretBox once the key is derived). */
export function secretBoxFromKey(key: Buffer): SecretBox {
  if (key.length !== 32) throw new TypeError('a SecretBox key is 32 bytes');
  const secret = Buffer.from(key);
  return {
    seal(plaintext, context) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', secret, iv);
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
      return `${PREFIX}.${iv.toString('base64url')}.${body.toString('base64url')}`;
    },
    open(sealed, context) {
      const parts = sealed.split('.');
      if (parts.length !== 3 || parts[0] !== PREFIX || !/^[A-Za-z0-9_-]+$/.test(parts[1]) || !/^[A-Za-z0-9_-]+$/.test(parts[2])) {
        throw new UserError('SECRET_BOX_OPEN_FAILED', 'a sealed secret in the database is not in a known format; restore the database from a backup');
      }
      const iv = Buffer.from(parts[1], 'base64url');
      const body = Buffer.from(parts[2], 'base64url');
      if (iv.length !== IV_BYTES || body.length < TAG_BYTES) throw new UserError('SECRET_BOX_OPEN_FAILED', 'a sealed secret in the database is truncated; restore the database from a backup');
      try {
        const decipher = createDecipheriv('aes-256-gcm', secret, iv);
        decipher.setAAD(Buffer.from(context, 'utf8'));
        decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
        return Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]).toString('utf8');
      } catch (err) {
        throw new UserError('SECRET_BOX_OPEN_FAILED', 'a sealed secret does not open: it was changed, sealed for something else, or sealed with another CA passphrase', { cause: err });
      }
    },
  };
}

function parseSetting(text: string): StoredBoxSetting {
  let value: Partial<StoredBoxSetting>;
  try {
    value = JSON.parse(text) as Partial<StoredBoxSetting>;
  } catch (err) {
    throw new UserError('SECRET_BOX_STORED_INVALID', 'the secret box setting in the database cannot be read; restore the database from a backup', { cause: err });
  }
  if (value.format !== 1 || typeof value.salt !== 'string' || typeof value.check !== 'string') {
    throw new UserError('SECRET_BOX_STORED_INVALID', 'the secret box setting in the database is not in a known format; restore the database from a backup');
  }
  return value as StoredBoxSetting;
}

function deriveKey(passphrase: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(passphrase, salt, 32, SCRYPT, (err, key) => (err === null ? resolve(key) : reject(err)));
  });
}
