/**
 * The cheap half of ID-token verification: everything that can be decided from the token's bytes
 * alone, before any network fetch or signature check (KP-03). A token is refused here when it is
 * too large, not exactly three canonical base64url segments, names an algorithm outside the
 * allow-list (so `none` and every `HS*` are refused before a key is even looked up, and RS256→HS256
 * confusion cannot happen), carries a header that would let the token choose its own key or
 * semantics (`jwk`, `jku`, `x5u`, `x5c`, `crit`, `b64`, `zip`), has a `kid` outside [A-Za-z0-9._-],
 * or claims that do not fit this issuer and audience at this time.
 *
 * Nothing from the token is echoed in an error message: tokens are secrets and claim values are
 * attacker-controlled text that would otherwise reach logs.
 */
import { CausewayError } from '../errors.ts';

/** Signature algorithms a verifier can allow. Symmetric (`HS*`) and `none` are not representable. */
export type TokenAlgorithm = 'RS256' | 'ES256' | 'PS256' | 'EdDSA';
export const TOKEN_ALGORITHMS: readonly TokenAlgorithm[] = ['RS256', 'ES256', 'PS256', 'EdDSA'];

export type TokenErrorCode =
  | 'TOKEN_MALFORMED'
  | 'TOKEN_ALG_NOT_ALLOWED'
  | 'TOKEN_HEADER_FORBIDDEN'
  | 'TOKEN_ISSUER_MISMATCH'
  | 'TOKEN_AUDIENCE_MISMATCH'
  | 'TOKEN_EXPIRED'
  | 'TOKEN_NOT_YET_VALID'
  | 'TOKEN_NO_EXPIRY'
  | 'TOKEN_UNKNOWN_KEY'
  | 'TOKEN_SIGNATURE_INVALID';

export function tokenError(code: TokenErrorCode, message: string): CausewayError {
  return new CausewayError(code, message);
}

/** Header parameters that let a token pick its key, its key's location, or change how it is processed. */
export const FORBIDDEN_HEADER_PARAMS: readonly string[] = ['jwk', 'jku', 'x5u', 'x5c', 'crit', 'b64', 'zip'];

/** A `kid` we accept: short and made of characters that cannot form a path, a query or markup. */
export const KID_RE = /^[A-Za-z0-9._-]{1,128}$/;

const SEGMENT_RE = /^[A-Za-z0-9_-]*$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface TokenPolicy {
  issuer: string;
  audiences: ReadonlySet<string>;
  algorithms: ReadonlySet<TokenAlgorithm>;
  clockToleranceSec: number;
  maxTokenBytes: number;
}

export interface PrecheckedToken {
  alg: TokenAlgorithm;
  kid: string | undefined;
}

/** Canonical unpadded base64url only, so one token has exactly one spelling. */
function decodeSegment(segment: string): Buffer | undefined {
  if (!SEGMENT_RE.test(segment) || segment.length % 4 === 1) return undefined;
  const bytes = Buffer.from(segment, 'base64url');
  return bytes.toString('base64url') === segment ? bytes : undefined;
}

function decodeJsonObject(segment: string): Record<string, unknown> | undefined {
  const bytes = decodeSegment(segment);
  if (bytes === undefined || bytes.length === 0) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  return value as Record<string, unknown>;
}

function isAllowedTyp(typ: unknown): boolean {
  if (typ === undefined) return true;
  if (typeof typ !== 'string') return false;
  const t = typ.toLowerCase();
  return t === 'jwt' || t === 'application/jwt';
}

/**
 * Every check that needs no key: structure, header and claims, at `nowSec`. Throws a CausewayError
 * with a TOKEN_* code; returns what key selection needs.
 */
export function precheckToken(token: unknown, policy: TokenPolicy, nowSec: number): PrecheckedToken {
  if (typeof token !== 'string' || token.length === 0) throw tokenError('TOKEN_MALFORMED', 'the token is empty or not a string');
  // Every accepted character is ASCII, so a length over the byte budget is over it in bytes too.
  if (token.length > policy.maxTokenBytes) throw tokenError('TOKEN_MALFORMED', `the token is larger than ${policy.maxTokenBytes} bytes`);
  const segments = token.split('.');
  if (segments.length !== 3) throw tokenError('TOKEN_MALFORMED', 'the token is not a compact JWS of three segments');
  const [headerSegment, payloadSegment, signatureSegment] = segments as [string, string, string];

  const header = decodeJsonObject(headerSegment);
  if (header === undefined) throw tokenError('TOKEN_MALFORMED', 'the token header is not a base64url JSON object');
  const alg = header['alg'];
  if (typeof alg !== 'string') throw tokenError('TOKEN_MALFORMED', 'the token header has no alg');
  if (!policy.algorithms.has(alg as TokenAlgorithm)) throw tokenError('TOKEN_ALG_NOT_ALLOWED', `the token algorithm is not one of ${[...policy.algorithms].join(', ')}`);
  for (const name of FORBIDDEN_HEADER_PARAMS) {
    if (Object.hasOwn(header, name)) throw tokenError('TOKEN_HEADER_FORBIDDEN', `the token header carries "${name}", which is refused`);
  }
  if (!isAllowedTyp(header['typ'])) throw tokenError('TOKEN_HEADER_FORBIDDEN', 'the token header typ is not JWT');
  const kid = header['kid'];
  if (kid !== undefined && (typeof kid !== 'string' || !KID_RE.test(kid))) {
    throw tokenError('TOKEN_HEADER_FORBIDDEN', 'the token kid is not 1 to 128 characters of [A-Za-z0-9._-]');
  }

  const payload = decodeJsonObject(payloadSegment);
  if (payload === undefined) throw tokenError('TOKEN_MALFORMED', 'the token payload is not a base64url JSON object');
  const signature = decodeSegment(signatureSegment);
  if (signature === undefined || signature.length === 0) throw tokenError('TOKEN_MALFORMED', 'the token signature is missing or not canonical base64url');
  if (alg === 'ES256' && signature.length !== 64) throw tokenError('TOKEN_MALFORMED', 'an ES256 signature is 64 bytes');

  checkClaims(payload, policy, nowSec);
  return { alg: alg as TokenAlgorithm, kid };
}

function optionalNumericDate(payload: Record<string, unknown>, name: string): number | undefined {
  const value = payload[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw tokenError('TOKEN_MALFORMED', `the token claim ${name} is not a number`);
  return value;
}

/** Issuer, audience and time claims; the order of checks is the order of the codes in the battery. */
export function checkClaims(payload: Record<string, unknown>, policy: TokenPolicy, nowSec: number): void {
  // Byte-for-byte (OP-09): no normalisation of trailing slashes or case; an array is refused.
  if (payload['iss'] !== policy.issuer) throw tokenError('TOKEN_ISSUER_MISMATCH', `the token was not issued by ${policy.issuer}`);

  const aud = payload['aud'];
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string') ? (aud) : undefined;
  if (auds === undefined || !auds.some((a) => policy.audiences.has(a))) throw tokenError('TOKEN_AUDIENCE_MISMATCH', 'the token is not meant for this audience');

  const sub = payload['sub'];
  if (typeof sub !== 'string' || sub.length === 0) throw tokenError('TOKEN_MALFORMED', 'the token has no sub');

  if (payload['exp'] === undefined) throw tokenError('TOKEN_NO_EXPIRY', 'the token has no exp');
  const exp = optionalNumericDate(payload, 'exp') as number;
  const nbf = optionalNumericDate(payload, 'nbf');
  const iat = optionalNumericDate(payload, 'iat');
  const skew = policy.clockToleranceSec;
  if (exp <= nowSec - skew) throw tokenError('TOKEN_EXPIRED', 'the token has expired');
  if (nbf !== undefined && nbf > nowSec + skew) throw tokenError('TOKEN_NOT_YET_VALID', 'the token is not valid yet (nbf)');
  if (iat !== undefined && iat > nowSec + skew) throw tokenError('TOKEN_NOT_YET_VALID', 'the token was issued in the future (iat)');
}
