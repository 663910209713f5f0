/**
 * The provider's signing keys: one RSA-2048 key (RS256, what kube-apiserver expects) and one EC P-256
 * key (ES256) in use at any time, both always published in the JWKS. Each key goes through stages:
 *
 *   next      published for `publishAheadMs` (default 1 h) before it signs, so verifiers that cache the
 *             JWKS already know it when the first token signed with it arrives
 *   current   signs (one per algorithm)
 *   retired   published for `retireAfterMs` (default 24 h, longer than any token lives) after it stopped
 *             signing, so tokens it signed still verify; then it is gone (OP-08)
 *
 * A new key is made `rotateEveryMs` (default 30 days) after the current one started signing. The keys
 * live in one store setting, each private key sealed by the SecretBox (CP-16: the database holds no
 * `PRIVATE KEY` and no private JWK member in the clear). Every replica checks the setting on a timer:
 * it adopts what another replica wrote, and the first to see a transition due writes it. Two replicas
 * making a `next` key at the same moment is harmless: the last write wins, and the loser adopts it at its
 * next check, long before either key signs (checkEveryMs ≪ publishAheadMs).
 */
import { createPrivateKey, generateKeyPair } from 'node:crypto';
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { UserError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import type { Store } from '../store/index.ts';
import type { SecretBox } from './secret-box.ts';

export const SIGNING_KEYS_SETTING_KEY = 'identity.signing-keys';
export const SIGNING_ALGORITHMS = ['RS256', 'ES256'] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];
export type KeyStage = 'next' | 'current' | 'retired';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
export const DEFAULT_PUBLISH_AHEAD_MS = HOUR;
export const DEFAULT_RETIRE_AFTER_MS = DAY;
export const DEFAULT_ROTATE_EVERY_MS = 30 * DAY;
export const DEFAULT_CHECK_EVERY_MS = 60_000;

/** A public JWK as published (no private members). */
export interface PublicJwk {
  kty: string;
  kid: string;
  alg: SigningAlgorithm;
  use: 'sig';
  n?: string;
  e?: string;
  crv?: string;
  x?: string;
  y?: string;
}

interface StoredKey {
  kid: string;
  alg: SigningAlgorithm;
  stage: KeyStage;
  createdAt: number;
  /** When it started (or starts) signing. */
  activatesAt: number;
  /** When it stopped signing; null until retired. */
  retiredAt: number | null;
  publicJwk: PublicJwk;
  /** The private JWK, JSON, sealed with context `signing-key:<kid>`. */
  sealedPrivate: string;
}

interface StoredKeys {
  format: 1;
  keys: StoredKey[];
}

export interface SigningKey {
  kid: string;
  alg: SigningAlgorithm;
  stage: KeyStage;
  activatesAt: number;
  retiredAt: number | null;
  publicJwk: PublicJwk;
}

export interface ActiveSigningKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: KeyObject;
}

export interface SigningKeysOptions {
  store: Pick<Store, 'getSetting' | 'putSetting'>;
  secretBox: SecretBox;
  clock?: Clock;
  logger?: Logger;
  publishAheadMs?: number;
  retireAfterMs?: number;
  rotateEveryMs?: number;
  /** How often the setting is reloaded and transitions are checked. Default one minute. */
  checkEveryMs?: number;
}

export interface SigningKeys {
  /** Every published key, current ones first (id order otherwise). */
  list(): SigningKey[];
  /** The key that signs with `alg` now. */
  current(alg: SigningAlgorithm): ActiveSigningKey;
  /** The JWKS for oidc-provider: private JWKs; only current keys may sign (the others carry key_ops ['verify']). */
  providerJwks(): { keys: Array<Record<string, unknown>> };
  /** The public JWKS. */
  publicJwks(): { keys: PublicJwk[] };
  /** Reloads the setting and applies due transitions; true when the key set changed. */
  check(): Promise<boolean>;
  /** Called after the key set changed (by this replica or another). */
  onChange(listener: () => void): () => void;
  close(): void;
}

/** Loads the keys (making the first ones on the installation's first start) and starts the timer. */
export async function loadSigningKeys(options: SigningKeysOptions): Promise<SigningKeys> {
  const clock = options.clock ?? systemClock;
  const logger = (options.logger ?? silentLogger()).child({ component: 'signing-keys' });
  const publishAheadMs = options.publishAheadMs ?? DEFAULT_PUBLISH_AHEAD_MS;
  const retireAfterMs = options.retireAfterMs ?? DEFAULT_RETIRE_AFTER_MS;
  const rotateEveryMs = options.rotateEveryMs ?? DEFAULT_ROTATE_EVERY_MS;
  if (!(rotateEveryMs > publishAheadMs)) throw new UserError('SIGNING_KEYS_OPTIONS', 'rotateEveryMs must be longer than publishAheadMs');
  const { store, secretBox } = options;
  const listeners = new Set<() => void>();
  const privateKeys = new Map<string, KeyObject>();
  let state: StoredKeys = { format: 1, keys: [] };
  let storedText: string | undefined;
  let checking: Promise<boolean> | undefined;

  const adopt = (text: string): void => {
    const parsed = parseStored(text);
    for (const key of parsed.keys) {
      if (!privateKeys.has(key.kid)) privateKeys.set(key.kid, openPrivate(secretBox, key));
    }
    for (const kid of privateKeys.keys()) if (!parsed.keys.some((k) => k.kid === kid)) privateKeys.delete(kid);
    state = parsed;
    storedText = text;
  };

  const makeKey = async (alg: SigningAlgorithm, stage: KeyStage, now: number, activatesAt: number): Promise<StoredKey> => {
    const privateKey = await newKey(alg);
    const jwk = privateKey.export({ format: 'jwk' });
    const kid = await calculateJwkThumbprint(jwk, 'sha256');
    const publicJwk = publicPart(jwk, kid, alg);
    const sealedPrivate = secretBox.seal(JSON.stringify({ ...jwk, kid, alg, use: 'sig' }), `signing-key:${kid}`);
    privateKeys.set(kid, privateKey);
    return { kid, alg, stage, createdAt: now, activatesAt, retiredAt: null, publicJwk, sealedPrivate };
  };

  /** The transitions due at `now`, applied to a copy; undefined when nothing is due. */
  const transitions = async (from: StoredKeys, now: number): Promise<StoredKeys | undefined> => {
    let keys = from.keys.map((k) => ({ ...k }));
    let changed = false;
    for (const alg of SIGNING_ALGORITHMS) {
      const of = keys.filter((k) => k.alg === alg);
      const current = of.find((k) => k.stage === 'current');
      const next = of.find((k) => k.stage === 'next');
      if (current === undefined && next === undefined) {
        // No key at all (first start, or a new algorithm): one that signs at once, as no token exists to verify.
        keys.push(await makeKey(alg, 'current', now, now));
        changed = true;
        continue;
      }
      if (next !== undefined && now >= next.activatesAt) {
        if (current !== undefined) {
          current.stage = 'retired';
          current.retiredAt = now;
        }
        next.stage = 'current';
        changed = true;
        logger.info({ kid: next.kid, alg }, 'a new signing key signs from now on; the previous one stays published until it retires');
      } else if (next === undefined && current !== undefined && now >= current.activatesAt + rotateEveryMs - publishAheadMs) {
        keys.push(await makeKey(alg, 'next', now, now + publishAheadMs));
        changed = true;
        logger.info({ alg, activatesAt: new Date(now + publishAheadMs).toISOString() }, 'published the next signing key ahead of its use');
      }
    }
    const kept = keys.filter((k) => !(k.stage === 'retired' && k.retiredAt !== null && now >= k.retiredAt + retireAfterMs));
    if (kept.length !== keys.length) {
      changed = true;
      keys = kept;
    }
    return changed ? { format: 1, keys } : undefined;
  };

  const doCheck = async (): Promise<boolean> => {
    const before = storedText;
    const text = await store.getSetting(SIGNING_KEYS_SETTING_KEY);
    if (text !== undefined && text !== storedText) adopt(text);
    const next = await transitions(state, clock.now());
    if (next !== undefined) {
      // Another replica may have written since we read: adopt theirs and decide again next time.
      const latest = await store.getSetting(SIGNING_KEYS_SETTING_KEY);
      if (latest !== text && latest !== undefined) {
        adopt(latest);
      } else {
        const value = JSON.stringify(next);
        await store.putSetting(SIGNING_KEYS_SETTING_KEY, value, { actor: 'system' });
        adopt(value);
      }
    }
    const changed = storedText !== before;
    if (changed) {
      for (const listener of listeners) {
        try {
          listener();
        } catch (err) {
          logger.error({ err }, 'a signing-key change listener failed');
        }
      }
    }
    return changed;
  };

  const check = (): Promise<boolean> => {
    checking ??= doCheck().finally(() => {
      checking = undefined;
    });
    return checking;
  };

  await check();
  const timer = setInterval(() => {
    check().catch((err: unknown) => logger.error({ err }, 'checking the signing keys failed; will retry'));
  }, options.checkEveryMs ?? DEFAULT_CHECK_EVERY_MS);
  timer.unref();

  const ordered = (): StoredKey[] => {
    const rank: Record<KeyStage, number> = { current: 0, next: 1, retired: 2 };
    return [...state.keys].sort((a, b) => rank[a.stage] - rank[b.stage] || (a.kid < b.kid ? -1 : 1));
  };

  return {
    list() {
      return ordered().map((k) => ({ kid: k.kid, alg: k.alg, stage: k.stage, activatesAt: k.activatesAt, retiredAt: k.retiredAt, publicJwk: { ...k.publicJwk } }));
    },
    current(alg) {
      const key = state.keys.find((k) => k.alg === alg && k.stage === 'current');
      const privateKey = key === undefined ? undefined : privateKeys.get(key.kid);
      if (key === undefined || privateKey === undefined) throw new UserError('SIGNING_KEY_MISSING', `no current ${alg} signing key`);
      return { kid: key.kid, alg, privateKey };
    },
    providerJwks() {
      return {
        keys: ordered().map((k) => {
          const jwk = JSON.parse(secretBox.open(k.sealedPrivate, `signing-key:${k.kid}`)) as Record<string, unknown>;
          return k.stage === 'current' ? jwk : { ...jwk, key_ops: ['verify'] };
        }),
      };
    },
    publicJwks() {
      return { keys: ordered().map((k) => ({ ...k.publicJwk })) };
    },
    check,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      clearInterval(timer);
      listeners.clear();
    },
  };
}

function newKey(alg: SigningAlgorithm): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, _publicKey: KeyObject, privateKey: KeyObject): void => (err === null ? resolve(privateKey) : reject(err));
    if (alg === 'RS256') generateKeyPair('rsa', { modulusLength: 2048 }, done);
    else generateKeyPair('ec', { namedCurve: 'P-256' }, done);
  });
}

function publicPart(jwk: JsonWebKey, kid: string, alg: SigningAlgorithm): PublicJwk {
  if (jwk.kty === 'RSA') return { kty: 'RSA', kid, alg, use: 'sig', n: String(jwk.n), e: String(jwk.e) };
  return { kty: 'EC', kid, alg, use: 'sig', crv: String(jwk.crv), x: String(jwk.x), y: String(jwk.y) };
}

function openPrivate(secretBox: SecretBox, key: StoredKey): KeyObject {
  const jwk = JSON.parse(secretBox.open(key.sealedPrivate, `signing-key:${key.kid}`)) as JsonWebKey;
  return createPrivateKey({ key: jwk, format: 'jwk' });
}

function parseStored(text: string): StoredKeys {
  let value: Partial<StoredKeys>;
  try {
    value = JSON.parse(text) as Partial<StoredKeys>;
  } catch (err) {
    throw new UserError('SIGNING_KEYS_STORED_INVALID', 'the signing keys in the database cannot be read; restore the database from a backup', { cause: err });
  }
  if (value.format !== 1 || !Array.isArray(value.keys)) throw new UserError('SIGNING_KEYS_STORED_INVALID', 'the signing keys in the database are not in a known format; restore the database from a backup');
  return value as StoredKeys;
}
