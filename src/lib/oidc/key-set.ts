/**
 * An issuer's published keys (a parsed JWKS), immutable once built: a refresh builds a new KeySet
 * and swaps it in, so a key the issuer stopped publishing is gone after the next refresh (OP-08).
 *
 * A key is only ever used for an algorithm its type fits (RSA ≥ 2048 bits for RS256/PS256, EC P-256
 * for ES256, OKP Ed25519/Ed448 for EdDSA), and only when its own `alg`, `use` and `key_ops`, when
 * present, allow signature verification with that algorithm. Keys carrying private material are
 * never imported. Imports are memoised per key and algorithm.
 */
import { importJWK } from 'jose';
import type { CryptoKey, JWK } from 'jose';
import type { TokenAlgorithm } from './token.ts';

/** More keys than any issuer publishes; a larger set is refused as misconfigured. */
export const MAX_JWKS_KEYS = 100;

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

interface Entry {
  kid: string | undefined;
  jwk: JWK;
  imports: Map<TokenAlgorithm, Promise<CryptoKey>>;
}

function rsaModulusBits(n: unknown): number {
  if (typeof n !== 'string') return 0;
  const bytes = Buffer.from(n, 'base64url');
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  if (i === bytes.length) return 0;
  return (bytes.length - i) * 8 - (Math.clz32(bytes[i]) - 24);
}

/** Whether this public JWK may verify signatures made with `alg`. */
export function keyFits(jwk: JWK, alg: TokenAlgorithm): boolean {
  if (jwk.alg !== undefined && jwk.alg !== alg) return false;
  if (jwk.use !== undefined && jwk.use !== 'sig') return false;
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return false;
  switch (alg) {
    case 'RS256':
    case 'PS256':
      return jwk.kty === 'RSA' && typeof jwk.e === 'string' && rsaModulusBits(jwk.n) >= 2048;
    case 'ES256':
      return jwk.kty === 'EC' && jwk.crv === 'P-256' && typeof jwk.x === 'string' && typeof jwk.y === 'string';
    case 'EdDSA':
      return jwk.kty === 'OKP' && (jwk.crv === 'Ed25519' || jwk.crv === 'Ed448') && typeof jwk.x === 'string';
  }
}

/** Only the members that define a public key: `key_ops`, `use` and `alg` were checked by keyFits. */
function publicMembers(jwk: JWK): JWK & { kty: 'RSA' | 'EC' | 'OKP' } {
  const { kty, crv, x, y, n, e } = jwk;
  return { kty: kty as 'RSA' | 'EC' | 'OKP', crv, x, y, n, e };
}

export type KeySelection = { key: Promise<CryptoKey> } | { none: 'unknown' | 'ambiguous' };

export class KeySet {
  readonly size: number;
  readonly #entries: Entry[];

  /** Builds a set from a JWKS document; undefined when the document is not a key set. */
  static parse(document: unknown): KeySet | undefined {
    if (document === null || typeof document !== 'object' || Array.isArray(document)) return undefined;
    const keys = (document as Record<string, unknown>)['keys'];
    if (!Array.isArray(keys) || keys.length > MAX_JWKS_KEYS) return undefined;
    const entries: Entry[] = [];
    for (const key of keys as unknown[]) {
      if (key === null || typeof key !== 'object' || Array.isArray(key)) continue;
      const jwk = key as JWK;
      if (typeof jwk.kty !== 'string' || PRIVATE_MEMBERS.some((m) => Object.hasOwn(jwk, m))) continue;
      if (jwk.kid !== undefined && typeof jwk.kid !== 'string') continue;
      entries.push({ kid: jwk.kid, jwk, imports: new Map() });
    }
    return new KeySet(entries);
  }

  private constructor(entries: Entry[]) {
    this.#entries = entries;
    this.size = entries.length;
  }

  /**
   * The key for a token's `kid` and `alg`. Without a `kid`, the issuer must publish exactly one key
   * that fits `alg`; a `kid` that matches several fitting keys is ambiguous and refused rather than
   * tried one by one (a token must not buy several signature checks).
   */
  select(kid: string | undefined, alg: TokenAlgorithm): KeySelection {
    const candidates = this.#entries.filter((e) => (kid === undefined || e.kid === kid) && keyFits(e.jwk, alg));
    if (candidates.length === 0) return { none: 'unknown' };
    if (candidates.length > 1) return { none: 'ambiguous' };
    const entry = candidates[0];
    let key = entry.imports.get(alg);
    if (key === undefined) {
      key = importJWK(publicMembers(entry.jwk), alg, { extractable: false });
      // A failed import is remembered like a successful one: the same bytes fail the same way.
      key.catch(() => undefined);
      entry.imports.set(alg, key);
    }
    return { key };
  }
}
