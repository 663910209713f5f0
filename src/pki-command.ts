/**
 * `causeway ca init` and `causeway ca issue`: a CA on disk for operators before the control plane
 * exists, and for the quickstart. An entry-point module: it reads files and the environment.
 *
 * Layout of a CA directory:
 *   ca.crt          the CA certificate (0644)
 *   ca.key          the CA key, encrypted PKCS#8 (0600)
 *   ca-passphrase   the passphrase, only when neither --passphrase-file nor CAUSEWAY_CA_PASSPHRASE gave one (0600)
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { PASSPHRASE_ENV, exists, readPassphraseFile, writeNew, writeNewPassphrase, writeReplacing } from './cli-files.ts';
import { UserError, errorCode } from './lib/errors.ts';
import { CERT_TYPES, CertificateAuthority, isCertType, issueKeyAndCert } from './lib/pki/index.ts';
import type { CertIdentity, CertType } from './lib/pki/index.ts';

export { PASSPHRASE_ENV, readPassphraseFile };
const CA_CERT = 'ca.crt';
const CA_KEY = 'ca.key';
const CA_PASSPHRASE = 'ca-passphrase';

export interface CaDirOptions {
  /** The passphrase itself; otherwise CAUSEWAY_CA_PASSPHRASE, then DIR/ca-passphrase. */
  passphrase?: string;
  /** Environment to read CAUSEWAY_CA_PASSPHRASE from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface InitCaResult {
  ca: CertificateAuthority;
  certPath: string;
  keyPath: string;
  /** Set when the passphrase was generated and written beside the key. */
  generatedPassphrasePath?: string;
}

/** Creates a CA in `dir` (see the module comment), refusing to replace an existing one. */
export async function initCaDirWithDetails(dir: string, opts: CaDirOptions = {}): Promise<InitCaResult> {
  const env = opts.env ?? process.env;
  const certPath = join(dir, CA_CERT);
  const keyPath = join(dir, CA_KEY);
  const passphrasePath = join(dir, CA_PASSPHRASE);
  if ((await exists(certPath)) || (await exists(keyPath))) {
    throw new UserError('CA_EXISTS', `A CA already exists in ${dir}. Refusing to replace it: every certificate it issued would stop working. Remove ${CA_CERT} and ${CA_KEY} first if you really mean to.`);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let passphrase = opts.passphrase ?? env[PASSPHRASE_ENV];
  let generatedPassphrasePath: string | undefined;
  if (passphrase === undefined && (await exists(passphrasePath))) passphrase = await readPassphraseFile(passphrasePath);
  if (passphrase === undefined) {
    passphrase = await writeNewPassphrase(passphrasePath);
    generatedPassphrasePath = passphrasePath;
  }

  const ca = await CertificateAuthority.create();
  const stored = ca.exportEncrypted(passphrase);
  await writeNew(keyPath, stored.encryptedKeyPem, 0o600);
  try {
    await writeNew(certPath, stored.certPem, 0o644);
  } catch (err) {
    await rm(keyPath, { force: true });
    throw err;
  }
  return generatedPassphrasePath === undefined ? { ca, certPath, keyPath } : { ca, certPath, keyPath, generatedPassphrasePath };
}

/** Creates a CA in `dir`; the passphrase comes from opts, CAUSEWAY_CA_PASSPHRASE, DIR/ca-passphrase, or is generated there. */
export async function initCaDir(dir: string, opts: { passphrase?: string } = {}): Promise<CertificateAuthority> {
  return (await initCaDirWithDetails(dir, opts)).ca;
}

/** Loads the CA in `dir`; the passphrase comes from the argument, CAUSEWAY_CA_PASSPHRASE, or DIR/ca-passphrase. */
export async function loadCaDir(dir: string, passphrase?: string, opts: { env?: NodeJS.ProcessEnv } = {}): Promise<CertificateAuthority> {
  const env = opts.env ?? process.env;
  const certPath = join(dir, CA_CERT);
  const keyPath = join(dir, CA_KEY);
  let pass = passphrase ?? env[PASSPHRASE_ENV];
  if (pass === undefined) {
    const passphrasePath = join(dir, CA_PASSPHRASE);
    if (!(await exists(passphrasePath))) {
      throw new UserError('CA_PASSPHRASE_MISSING', `No passphrase for the CA in ${dir}: pass --passphrase-file, set ${PASSPHRASE_ENV}, or put it in ${passphrasePath}.`);
    }
    pass = await readPassphraseFile(passphrasePath);
  }
  let certPem: string;
  let encryptedKeyPem: string;
  try {
    [certPem, encryptedKeyPem] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') throw new UserError('CA_NOT_FOUND', `No CA in ${dir}: run \`causeway ca init --data-dir ${dir}\` first.`, { cause: err });
    throw new UserError('CA_UNREADABLE', `Cannot read the CA in ${dir}: ${errorCode(err) ?? 'error'}. Check the permissions of ${CA_CERT} and ${CA_KEY}.`, { cause: err });
  }
  return CertificateAuthority.load({ certPem, encryptedKeyPem }, pass);
}

const DURATION_UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "5m", "8h", "365d" → milliseconds. */
export function parseLifetime(text: string): number {
  const m = /^(\d{1,6})([smhd])$/.exec(text.trim());
  if (m === null) throw new UserError('BAD_DURATION', `"${text}" is not a lifetime: use a number and a unit, like 5m, 8h, 24h or 365d.`);
  return Number(m[1]) * (DURATION_UNITS[m[2]]);
}

function splitList(value: string | undefined): string[] {
  return value === undefined ? [] : value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

interface IssueFlags {
  name?: string;
  user?: string;
  device?: string;
  dns?: string;
  ip?: string;
  lifetime?: string;
  dataDir: string;
  out: string;
  passphraseFile?: string;
}

function identityFromFlags(type: CertType, flags: IssueFlags): { identity: CertIdentity; base: string } {
  const { name, user, device } = flags;
  if (type === 'trust') {
    if (user === undefined || device === undefined || name !== undefined) throw new UserError('CERT_BAD_IDENTITY', 'A trust certificate needs --user and --device (and no --name).');
    return { identity: { user, device }, base: `${user}-${device}` };
  }
  if (type === 'device') {
    if (device === undefined || user !== undefined || name !== undefined) throw new UserError('CERT_BAD_IDENTITY', 'A device certificate needs --device (and no --user or --name).');
    return { identity: { device }, base: device };
  }
  if (name === undefined || user !== undefined || device !== undefined) throw new UserError('CERT_BAD_IDENTITY', `A ${type} certificate needs --name (and no --user or --device).`);
  return { identity: { name }, base: name };
}

export interface CaCommandIo {
  /** Where human output goes (default stdout). */
  out?: (line: string) => void;
  /** Environment for CAUSEWAY_CA_PASSPHRASE (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Adds `ca init` and `ca issue` to the program. */
export function registerCaCommands(program: Command, io: CaCommandIo = {}): void {
  const out = io.out ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const env = io.env ?? process.env;
  const ca = program.command('ca').description('Manage a certificate authority on disk (before the control plane exists, and for the quickstart)');

  ca.command('init')
    .description('Create a CA: DIR/ca.crt and DIR/ca.key (encrypted)')
    .requiredOption('--data-dir <dir>', 'directory for the CA files')
    .option('--passphrase-file <file>', `file holding the key passphrase (else ${PASSPHRASE_ENV}, else one is generated into DIR/${CA_PASSPHRASE})`)
    .action(async (flags: { dataDir: string; passphraseFile?: string }) => {
      const dir = resolve(flags.dataDir);
      const passphrase = flags.passphraseFile === undefined ? undefined : await readPassphraseFile(flags.passphraseFile);
      const result = await initCaDirWithDetails(dir, { ...(passphrase === undefined ? {} : { passphrase }), env });
      out(`CA certificate: ${result.certPath}`);
      out(`CA key (encrypted): ${result.keyPath}`);
      if (result.generatedPassphrasePath !== undefined) {
        out(`CA key passphrase: generated into ${result.generatedPassphrasePath} (mode 0600). Keep it apart from backups of ca.key.`);
      }
      out(`Fingerprint (SHA-256): ${result.ca.certificate.fingerprint256}`);
    });

  ca.command('issue')
    .description(`Issue a certificate and key. TYPE is one of: ${CERT_TYPES.join(', ')}`)
    .argument('<type>', 'certificate type')
    .option('--name <name>', 'name of the access tier, connector, kube proxy or control plane')
    .option('--user <id>', 'user id (trust certificates)')
    .option('--device <id>', 'device id (trust and device certificates)')
    .option('--dns <names>', 'comma-separated DNS names to add (server certificates)')
    .option('--ip <addresses>', 'comma-separated IP addresses to add (server certificates)')
    .option('--lifetime <duration>', 'lifetime like 5m, 8h, 24h or 365d (default per type)')
    .requiredOption('--data-dir <dir>', 'the CA directory')
    .requiredOption('--out <dir>', 'where to write NAME.crt, NAME.key and ca.crt')
    .option('--passphrase-file <file>', `file holding the CA key passphrase (else ${PASSPHRASE_ENV}, else DIR/${CA_PASSPHRASE})`)
    .action(async (type: string, flags: IssueFlags) => {
      if (!isCertType(type)) throw new UserError('CERT_BAD_TYPE', `Unknown certificate type "${type}": use one of ${CERT_TYPES.join(', ')}.`);
      const { identity, base } = identityFromFlags(type, flags);
      if (base === 'ca') throw new UserError('CERT_BAD_NAME', 'The name "ca" would collide with ca.crt and ca.key: choose another name.');
      const lifetimeMs = flags.lifetime === undefined ? undefined : parseLifetime(flags.lifetime);
      const passphrase = flags.passphraseFile === undefined ? undefined : await readPassphraseFile(flags.passphraseFile);
      const authority = await loadCaDir(resolve(flags.dataDir), passphrase, { env });
      const issued = await issueKeyAndCert(authority, {
        type,
        identity,
        dnsNames: splitList(flags.dns),
        ipAddresses: splitList(flags.ip),
        ...(lifetimeMs === undefined ? {} : { lifetimeMs }),
      });
      const outDir = resolve(flags.out);
      await mkdir(outDir, { recursive: true, mode: 0o700 });
      const certPath = join(outDir, `${base}.crt`);
      const keyPath = join(outDir, `${base}.key`);
      const caPath = join(outDir, CA_CERT);
      await writeReplacing(keyPath, issued.keyPem, 0o600);
      await writeReplacing(certPath, issued.certPem, 0o644);
      await writeReplacing(caPath, issued.caPem, 0o644);
      out(`Certificate: ${certPath}`);
      out(`Key: ${keyPath}`);
      out(`CA certificate: ${caPath}`);
      out(`Serial ${issued.serial}, valid until ${issued.notAfter.toISOString()}`);
    });
}
