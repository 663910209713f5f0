/**
 * What `causeway access-tier` and `causeway connector` do with `--control-plane URL --join-token T
 * --ca-pin sha256:… --data-dir DIR`: enroll once, keep the identity under DIR, renew it, and follow
 * the config stream with the last good snapshot persisted under DIR.
 *
 *     DIR/ca.pem          the installation's CA (pinned at enrollment)
 *     DIR/identity.json   { kind, name, certPem, keyPem }, mode 0600, replaced atomically on renewal
 *     DIR/config.json     the last good configuration (RemoteConfigSource's persisted snapshot), 0600
 *
 * On a restart the stored identity is used and the join token (single use, probably spent) is
 * ignored; a stored identity that has expired needs a new join token. The files come in through
 * PeerFiles, which the entry point makes (nodePeerFiles), so this module reads nothing by itself.
 */
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { RemoteConfigSource } from '../config/remote-source.ts';
import type { RemoteConfigSourceOptions } from '../config/remote-source.ts';
import { UserError, errorMessage } from '../errors.ts';
import { silentLogger } from '../log.ts';
import type { Logger } from '../log.ts';
import { credentialsFrom, enroll } from './enroll.ts';
import type { PeerCredentials } from './enroll.ts';
import { startRenewal } from './renew.ts';
import type { Renewal } from './renew.ts';
import type { ControlPlaneFetch, PeerTlsMaterial } from './transport.ts';
import type { EnrollKind } from './wire.ts';

/** Small files in the part's data directory, by name. */
export interface PeerFiles {
  read(name: string): Promise<string | undefined>;
  /** Replaces the file atomically (write, sync, rename) with this mode. */
  write(name: string, text: string, mode: number): Promise<void>;
}

export function nodePeerFiles(dir: string): PeerFiles {
  let made: Promise<unknown> | undefined;
  return {
    async read(name) {
      try {
        return await readFile(path.join(dir, name), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new UserError('DATA_DIR_UNREADABLE', `cannot read ${path.join(dir, name)} (${errorMessage(err)}); check --data-dir and its permissions`, { cause: err });
      }
    },
    async write(name, text, mode) {
      made ??= mkdir(dir, { recursive: true, mode: 0o700 });
      await made;
      const file = path.join(dir, name);
      const temp = `${file}.tmp-${process.pid}`;
      const handle = await open(temp, 'w', mode);
      try {
        await handle.writeFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
    },
  };
}

export interface JoinOptions {
  kind: EnrollKind;
  controlPlaneUrl: string;
  /** Needed only when DIR holds no usable identity. */
  joinToken?: string;
  caPin?: string;
  files: PeerFiles;
  logger?: Logger;
  clock?: Clock;
  fetch?: ControlPlaneFetch;
  /** Passed to the RemoteConfigSource (timeouts, backoff) for tests. */
  config?: Partial<Omit<RemoteConfigSourceOptions, 'controlPlaneUrl' | 'tls' | 'persist' | 'loadPersisted'>>;
  /** Passed to the renewal (retry delays, renewAt) for tests. */
  renewal?: { renewAt?: number; retry?: { initialMs?: number; maxMs?: number } };
}

export interface JoinedPeer {
  readonly kind: EnrollKind;
  /** The name the control plane gave this part (its AccessTier or Connector spec's name). */
  readonly name: string;
  /** The credentials in use now. */
  credentials(): PeerCredentials;
  /** The TLS material in use now: the same object until a renewal replaces it. */
  tls(): PeerTlsMaterial & { certPem: string; keyPem: string };
  /** Called after each renewal, once the new identity is on disk. Returns the unsubscribe function. */
  onRenewed(listener: (tls: PeerTlsMaterial & { certPem: string; keyPem: string }) => void): () => void;
  readonly config: RemoteConfigSource;
  readonly renewal: Renewal;
  /** Whether this start enrolled (true) or reused the stored identity (false). */
  readonly enrolled: boolean;
  close(): Promise<void>;
}

const IDENTITY = 'identity.json';
const CA = 'ca.pem';
const CONFIG = 'config.json';

/** Loads the stored identity, or undefined when there is none; a broken one is a UserError. */
export async function loadIdentity(files: PeerFiles, kind: EnrollKind): Promise<PeerCredentials | undefined> {
  const [text, caPem] = await Promise.all([files.read(IDENTITY), files.read(CA)]);
  if (text === undefined || caPem === undefined) return undefined;
  let stored: { kind?: unknown; certPem?: unknown; keyPem?: unknown };
  try {
    stored = JSON.parse(text) as typeof stored;
  } catch (err) {
    throw new UserError('IDENTITY_INVALID', `the stored identity (${IDENTITY}) cannot be read; remove it and enroll again with a new join token`, { cause: err });
  }
  if (stored.kind !== kind) throw new UserError('IDENTITY_WRONG_KIND', `the data directory holds the identity of a ${String(stored.kind)}, not of a ${kind}; use another --data-dir`);
  if (typeof stored.certPem !== 'string' || typeof stored.keyPem !== 'string') throw new UserError('IDENTITY_INVALID', `the stored identity (${IDENTITY}) is incomplete; remove it and enroll again with a new join token`);
  return credentialsFrom({ certPem: stored.certPem, keyPem: stored.keyPem, caPem }, kind);
}

async function storeIdentity(files: PeerFiles, credentials: PeerCredentials): Promise<void> {
  await files.write(CA, credentials.caPem, 0o644);
  await files.write(IDENTITY, `${JSON.stringify({ kind: credentials.kind, name: credentials.name, serial: credentials.serial, notAfter: credentials.notAfter.toISOString(), certPem: credentials.certPem, keyPem: credentials.keyPem }, null, 2)}\n`, 0o600);
}

export async function joinControlPlane(options: JoinOptions): Promise<JoinedPeer> {
  const logger = (options.logger ?? silentLogger()).child({ component: 'join' });
  const clock = options.clock ?? systemClock;
  let credentials = await loadIdentity(options.files, options.kind);
  let enrolled = false;
  if (credentials !== undefined && credentials.notAfter.getTime() <= clock.now()) {
    if (options.joinToken === undefined) {
      throw new UserError('CERT_EXPIRED', `the stored ${options.kind} certificate expired at ${credentials.notAfter.toISOString()} (it was not renewed in time); create a new join token with \`causeway join-token create ${options.kind} ${credentials.name}\` and pass it with --join-token and --ca-pin`);
    }
    logger.warn({ name: credentials.name, expired: credentials.notAfter.toISOString() }, 'the stored certificate expired; enrolling again with the join token');
    credentials = undefined;
  }
  if (credentials === undefined) {
    if (options.joinToken === undefined || options.caPin === undefined) {
      throw new UserError('NOT_ENROLLED', `this ${options.kind} has not joined the control plane yet: pass --join-token and --ca-pin from \`causeway join-token create ${options.kind} NAME\``);
    }
    credentials = await enroll({ controlPlaneUrl: options.controlPlaneUrl, joinToken: options.joinToken, kind: options.kind, caPin: options.caPin, ...(options.fetch === undefined ? {} : { fetch: options.fetch }) });
    await storeIdentity(options.files, credentials);
    enrolled = true;
    logger.info({ kind: credentials.kind, name: credentials.name, serial: credentials.serial, notAfter: credentials.notAfter.toISOString() }, 'enrolled with the control plane');
  } else {
    logger.info({ kind: credentials.kind, name: credentials.name, serial: credentials.serial, notAfter: credentials.notAfter.toISOString() }, options.joinToken === undefined ? 'using the stored identity' : 'using the stored identity; the join token is not needed again');
  }

  const toTls = (c: PeerCredentials): PeerTlsMaterial & { certPem: string; keyPem: string } => ({ caPem: c.caPem, certPem: c.certPem, keyPem: c.keyPem });
  let current = credentials;
  let tls = toTls(current);
  const listeners = new Set<(t: PeerTlsMaterial & { certPem: string; keyPem: string }) => void>();

  const config = new RemoteConfigSource({
    ...options.config,
    controlPlaneUrl: options.controlPlaneUrl,
    tls: () => tls,
    logger,
    clock,
    persist: (text) => options.files.write(CONFIG, text, 0o600),
    loadPersisted: () => options.files.read(CONFIG),
  });
  const renewal = startRenewal({
    controlPlaneUrl: options.controlPlaneUrl,
    current: () => current,
    onRenewed: async (renewed) => {
      await storeIdentity(options.files, renewed);
      current = renewed;
      tls = toTls(renewed);
      for (const listener of [...listeners]) {
        try {
          listener(tls);
        } catch (err) {
          logger.error({ err }, 'a renewal listener failed');
        }
      }
    },
    logger,
    clock,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    ...(options.renewal?.renewAt === undefined ? {} : { renewAt: options.renewal.renewAt }),
    ...(options.renewal?.retry === undefined ? {} : { retry: options.renewal.retry }),
  });

  return {
    kind: options.kind,
    name: credentials.name,
    credentials: () => current,
    tls: () => tls,
    onRenewed(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    config,
    renewal,
    enrolled,
    async close() {
      await renewal.close();
      await config.close();
      listeners.clear();
    },
  };
}
