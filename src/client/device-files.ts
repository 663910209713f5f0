/**
 * This machine's device identity and trust certificate, under `$CAUSEWAY_HOME`:
 *
 *   device.key   ECDSA P-256 private key (PKCS#8 PEM), 0600, made once on this machine and never sent
 *   device.crt   the device certificate the control plane issued for it
 *   device.json  { id, server }: which device this is, at which control plane
 *   trust.key    the current trust certificate's key (0600), fresh for every certificate
 *   trust.crt    the trust certificate (user, device), what `causeway proxy` presents
 *   ca.crt       the installation's CA (what `causeway proxy` checks access tiers by)
 *
 * Every file is written atomically (a temp file in the same directory, then rename), 0600, in a 0700
 * directory. device.key is created with link(2) so two processes racing to create it cannot both win:
 * the loser reads the winner's key. A file or directory that another user could write is refused
 * (CN-09), and so is a key that others can read.
 */
import { X509Certificate, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { unsafePathProblem } from '../lib/fs-safety.ts';
import { BACKDATE_MS, generateKeyPair } from '../lib/pki/index.ts';

export interface DeviceState {
  id: string;
  /** The control plane (an origin) the device is registered at. */
  server: string;
}

export interface KeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

export interface TrustFiles {
  certPem: string;
  keyPem: string;
  /** notBefore / notAfter of the certificate, epoch ms. */
  notBefore: number;
  notAfter: number;
  /** When it was issued: notBefore is backdated by the CA (BACKDATE_MS) for clock skew, so lifetimes count from here. */
  issuedAt: number;
}

export interface DeviceFilesOptions {
  home: string;
  /** Skip the CN-09 checks (tests on odd file systems only). */
  skipSafetyCheck?: boolean;
}

export const DEVICE_FILES = {
  key: 'device.key',
  cert: 'device.crt',
  state: 'device.json',
  trustKey: 'trust.key',
  trustCert: 'trust.crt',
  ca: 'ca.crt',
} as const;

export class DeviceFiles {
  readonly home: string;
  readonly #skipSafety: boolean;

  constructor(options: DeviceFilesOptions) {
    this.home = options.home;
    this.#skipSafety = options.skipSafetyCheck === true;
  }

  path(name: keyof typeof DEVICE_FILES): string {
    return path.join(this.home, DEVICE_FILES[name]);
  }

  async #assertSafe(file: string, secret: boolean): Promise<void> {
    if (this.#skipSafety) return;
    const problem = await unsafePathProblem(file);
    if (problem !== undefined) {
      throw new UserError('DEVICE_FILE_UNSAFE', `refusing ${file}: ${problem}. Another user could change it; make it and every directory above it yours and not writable by group or others (chmod go-w), or set CAUSEWAY_HOME to a directory of your own`);
    }
    if (!secret || typeof process.getuid !== 'function') return;
    const st = await stat(file).catch(() => undefined);
    if (st !== undefined && (st.mode & 0o077) !== 0) {
      throw new UserError('DEVICE_FILE_UNSAFE', `refusing the key ${file}: other users can read it (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); run chmod 600 ${file} if nobody else has copied it, else remove it and log in again`);
    }
  }

  async #read(file: string, secret = false): Promise<string | undefined> {
    await this.#assertSafe(file, secret);
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
      throw new UserError('DEVICE_FILE_UNREADABLE', `cannot read ${file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    }
  }

  async #ensureHome(): Promise<void> {
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    const st = await stat(this.home);
    if ((st.mode & 0o077) !== 0 && (st.mode & 0o022) === 0 && typeof process.getuid === 'function' && st.uid === process.getuid()) await chmod(this.home, 0o700);
    await this.#assertSafe(this.home, false);
  }

  #tmp(name: string): string {
    return path.join(this.home, `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  }

  async #write(file: string, text: string): Promise<void> {
    const tmp = this.#tmp(path.basename(file));
    try {
      await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new UserError('DEVICE_FILE_UNWRITABLE', `cannot write ${file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    }
  }

  /** device.json, or undefined when this machine has no device yet. */
  async readState(): Promise<DeviceState | undefined> {
    const file = this.path('state');
    const text = await this.#read(file);
    if (text === undefined) return undefined;
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      raw = undefined;
    }
    const s = raw as Record<string, unknown> | undefined;
    if (s === undefined || s === null || typeof s !== 'object' || typeof s.id !== 'string' || typeof s.server !== 'string') {
      // Damaged: the device is registered again at the next login.
      return undefined;
    }
    return { id: s.id, server: s.server };
  }

  /** The device key, made once; later calls (and other processes) get the same key. */
  async ensureKey(): Promise<KeyPair> {
    await this.#ensureHome();
    const file = this.path('key');
    const existing = await this.#read(file, true);
    if (existing !== undefined) return keyPairOf(existing, file);
    const fresh = await generateKeyPair();
    const tmp = this.#tmp(DEVICE_FILES.key);
    try {
      await writeFile(tmp, fresh.privateKeyPem, { mode: 0o600, flag: 'wx' });
      try {
        await link(tmp, file);
      } catch (err) {
        if (errorCode(err) !== 'EEXIST') throw err;
        // Another process made it first: use theirs.
        const theirs = await this.#read(file, true);
        if (theirs === undefined) throw err;
        return keyPairOf(theirs, file);
      }
    } catch (err) {
      if (err instanceof UserError) throw err;
      throw new UserError('DEVICE_FILE_UNWRITABLE', `cannot create the device key ${file}: ${errorCode(err) ?? errorMessage(err)}`, { cause: err });
    } finally {
      await rm(tmp, { force: true });
    }
    return fresh;
  }

  /** The device key when there is one (never creates it). */
  async readKey(): Promise<KeyPair | undefined> {
    const file = this.path('key');
    const text = await this.#read(file, true);
    return text === undefined ? undefined : keyPairOf(text, file);
  }

  async readDeviceCert(): Promise<string | undefined> {
    return this.#read(this.path('cert'));
  }

  /** Records a registration: the device certificate, the CA, then device.json (last, so it only names a complete device). */
  async writeRegistration(state: DeviceState, certPem: string, caPem: string | undefined): Promise<void> {
    await this.#ensureHome();
    await this.#write(this.path('cert'), certPem);
    if (caPem !== undefined) await this.#write(this.path('ca'), caPem);
    await this.#write(this.path('state'), `${JSON.stringify(state, null, 2)}\n`);
  }

  /** Forgets the device registration (device.json, device.crt) and the trust certificate; the key stays. */
  async forgetRegistration(): Promise<void> {
    for (const name of ['state', 'cert', 'trustCert', 'trustKey'] as const) await rm(this.path(name), { force: true });
  }

  /** The trust certificate and its key, when both are there and belong together. */
  async readTrust(): Promise<TrustFiles | undefined> {
    const certPem = await this.#read(this.path('trustCert'));
    const keyPem = await this.#read(this.path('trustKey'), true);
    if (certPem === undefined || keyPem === undefined) return undefined;
    try {
      const cert = new X509Certificate(certPem);
      if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return undefined;
      const notBefore = Date.parse(cert.validFrom);
      const notAfter = Date.parse(cert.validTo);
      return { certPem, keyPem, notBefore, notAfter, issuedAt: Math.min(notAfter, notBefore + BACKDATE_MS) };
    } catch {
      return undefined;
    }
  }

  /**
   * Replaces the trust certificate: the key, then the certificate, then the CA, each atomically. A
   * reader between the two renames sees a key and a certificate that do not match; `causeway proxy`
   * checks that and keeps the pair it had until both are new.
   */
  async writeTrust(keyPem: string, certPem: string, caPem: string | undefined): Promise<void> {
    await this.#ensureHome();
    await this.#write(this.path('trustKey'), keyPem);
    await this.#write(this.path('trustCert'), certPem);
    if (caPem !== undefined) await this.#write(this.path('ca'), caPem);
  }
}

function keyPairOf(privateKeyPem: string, file: string): KeyPair {
  try {
    const key = createPrivateKey(privateKeyPem);
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('not an ECDSA P-256 key');
    return { privateKeyPem, publicKeyPem: createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString() };
  } catch (err) {
    throw new UserError('DEVICE_KEY_INVALID', `${file} is not a usable device key (${errorMessage(err)}); remove it, and device.json beside it, then log in again to register this machine anew`, { cause: err });
  }
}
