/**
 * ID-token verification for one issuer and audience (the kube proxy's authenticator).
 *
 * verify() refuses as much as it can before spending anything (token.ts: size, structure, alg
 * allow-list, forbidden header parameters, kid charset, iss/aud/exp/nbf/iat), then picks the key by
 * kid and alg from the issuer's cached JWKS (issuer-keys.ts: discovery, caching, rate-limited
 * refetch), and only then checks the signature with jose's jwtVerify, pinned to that one algorithm
 * and key. Every failure is a CausewayError with a stable code; none carries the token.
 */
import { errors as joseErrors, jwtVerify } from 'jose';
import { CausewayError, UserError } from '../errors.ts';
import { systemClock } from '../clock.ts';
import type { Clock } from '../clock.ts';
import { createIssuerFetch } from './fetch.ts';
import { IssuerKeys, urlProblem } from './issuer-keys.ts';
import type { IssuerFetchEvent } from './issuer-keys.ts';
import { TOKEN_ALGORITHMS, precheckToken, tokenError } from './token.ts';
import type { TokenAlgorithm, TokenPolicy } from './token.ts';

export interface TokenVerifierOptions {
  /** The issuer URL exactly as tokens carry it in `iss` (no normalisation, OP-09). */
  issuer: string;
  /** This verifier's audience (client id); a token must name one of these in `aud` (OP-05). */
  audience: string | string[];
  /** Default ['RS256', 'ES256']. */
  algorithms?: TokenAlgorithm[];
  /** Allowed clock skew for exp, nbf and iat, in seconds; default 30, at most 300. */
  clockToleranceSec?: number;
  /** The JWKS URL; default: the discovery document's jwks_uri. */
  jwksUri?: string;
  /** Default: node:http(s) trusting `caPem` when given, else the system roots. */
  fetch?: typeof fetch;
  clock?: Clock;
  /** An unknown kid causes at most one JWKS refetch per interval (OP-08); default 30 s, at least 1 s. */
  minRefetchIntervalMs?: number;
  /** Default 8 KiB. */
  maxTokenBytes?: number;
  /** CA certificates (PEM) to trust for the issuer's TLS instead of the system roots; only with the default fetch. */
  caPem?: string;
  /** Allow http:// issuer and JWKS URLs on loopback addresses; for tests only. */
  allowInsecureHttp?: boolean;
  /** Timeout for one discovery-plus-JWKS load; default 10 s. */
  fetchTimeoutMs?: number;
  /** Observe fetches and signature checks (metrics, tests). Must not throw; what it throws is ignored. */
  onEvent?: (event: TokenVerifierEvent) => void;
}

export type TokenVerifierEvent = IssuerFetchEvent | { type: 'signature'; alg: TokenAlgorithm; kid: string | undefined };

export interface VerifiedToken {
  subject: string;
  issuer: string;
  audience: string[];
  expiresAt: Date;
  issuedAt?: Date;
  /** Every claim of the verified payload. */
  claims: Record<string, unknown>;
}

export interface TokenVerifier {
  /** The token's identity when it is valid now; else a CausewayError with a TOKEN_* or ISSUER_* code. */
  verify(token: string): Promise<VerifiedToken>;
  /** Aborts fetches in flight; later and pending verifications fail with VERIFIER_CLOSED. */
  close(): void;
  [Symbol.dispose](): void;
}

export const DEFAULT_ALGORITHMS: readonly TokenAlgorithm[] = ['RS256', 'ES256'];
export const DEFAULT_CLOCK_TOLERANCE_SEC = 30;
export const DEFAULT_MIN_REFETCH_INTERVAL_MS = 30_000;
export const DEFAULT_MAX_TOKEN_BYTES = 8 * 1024;
export const DEFAULT_FETCH_TIMEOUT_MS = 10_000;

function configError(message: string): UserError {
  return new UserError('OIDC_CONFIG_INVALID', `token verifier: ${message}`);
}

function intInRange(value: number | undefined, fallback: number, min: number, max: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < min || v > max) throw configError(`${name} must be an integer from ${min} to ${max}`);
  return v;
}

interface Settings {
  policy: TokenPolicy;
  keys: IssuerKeysOptions;
}
type IssuerKeysOptions = ConstructorParameters<typeof IssuerKeys>[0];

/** Checks the options and applies defaults in one place; every problem is a UserError. */
function settingsFrom(opts: TokenVerifierOptions, closed: AbortSignal): Settings {
  const allowInsecureHttp = opts.allowInsecureHttp === true;
  if (typeof opts.issuer !== 'string') throw configError('issuer is required');
  const issuerProblem = urlProblem(opts.issuer, allowInsecureHttp) ?? (/[?#]/.test(opts.issuer) ? 'must not have a query or fragment' : undefined);
  if (issuerProblem !== undefined) throw configError(`the issuer ${issuerProblem}`);
  if (opts.jwksUri !== undefined) {
    const problem = urlProblem(opts.jwksUri, allowInsecureHttp);
    if (problem !== undefined) throw configError(`jwksUri ${problem}`);
  }
  const audiences = typeof opts.audience === 'string' ? [opts.audience] : opts.audience;
  if (!Array.isArray(audiences) || audiences.length === 0 || !audiences.every((a) => typeof a === 'string' && a.length > 0)) {
    throw configError('audience must be a non-empty string or a non-empty list of them');
  }
  const algorithms = opts.algorithms ?? DEFAULT_ALGORITHMS;
  if (algorithms.length === 0 || !algorithms.every((a) => TOKEN_ALGORITHMS.includes(a))) {
    throw configError(`algorithms must be a non-empty list of ${TOKEN_ALGORITHMS.join(', ')}`);
  }
  if (opts.caPem !== undefined && opts.fetch !== undefined) throw configError('caPem applies to the default fetch only; give one or the other');
  const minRefetchIntervalMs = intInRange(opts.minRefetchIntervalMs, DEFAULT_MIN_REFETCH_INTERVAL_MS, 1000, 3_600_000, 'minRefetchIntervalMs');
  const onEvent = opts.onEvent;
  return {
    policy: {
      issuer: opts.issuer,
      audiences: new Set(audiences),
      algorithms: new Set(algorithms),
      clockToleranceSec: intInRange(opts.clockToleranceSec, DEFAULT_CLOCK_TOLERANCE_SEC, 0, 300, 'clockToleranceSec'),
      maxTokenBytes: intInRange(opts.maxTokenBytes, DEFAULT_MAX_TOKEN_BYTES, 256, 1024 * 1024, 'maxTokenBytes'),
    },
    keys: {
      issuer: opts.issuer,
      jwksUri: opts.jwksUri,
      fetch: opts.fetch ?? createIssuerFetch({ caPem: opts.caPem }),
      clock: opts.clock ?? systemClock,
      minRefetchIntervalMs,
      fetchTimeoutMs: intInRange(opts.fetchTimeoutMs, DEFAULT_FETCH_TIMEOUT_MS, 1, 600_000, 'fetchTimeoutMs'),
      allowInsecureHttp,
      closed,
      onFetch: (event) => notify(onEvent, event),
    },
  };
}

function notify(onEvent: ((event: TokenVerifierEvent) => void) | undefined, event: TokenVerifierEvent): void {
  if (onEvent === undefined) return;
  try {
    onEvent(event);
  } catch {
    // An observer's bug must not change a verification's outcome.
  }
}

/** jose's verdict as our code; jose re-checks the claims we checked, so these rarely differ. */
function fromJose(err: unknown): CausewayError {
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return tokenError('TOKEN_SIGNATURE_INVALID', 'the token signature is not valid');
  if (err instanceof joseErrors.JWTExpired) return tokenError('TOKEN_EXPIRED', 'the token has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return tokenError('TOKEN_ISSUER_MISMATCH', 'the token issuer does not match');
    if (err.claim === 'aud') return tokenError('TOKEN_AUDIENCE_MISMATCH', 'the token is not meant for this audience');
    if (err.claim === 'nbf' || err.claim === 'iat') return tokenError('TOKEN_NOT_YET_VALID', 'the token is not valid yet');
    if (err.claim === 'exp' && err.reason === 'missing') return tokenError('TOKEN_NO_EXPIRY', 'the token has no exp');
  }
  return tokenError('TOKEN_MALFORMED', 'the token could not be verified');
}

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const closer = new AbortController();
  const { policy, keys: keysOptions } = settingsFrom(opts, closer.signal);
  const { clock } = keysOptions;
  const issuerKeys = new IssuerKeys(keysOptions);
  const audiences = [...policy.audiences];
  const closedError = (): CausewayError => new CausewayError('VERIFIER_CLOSED', 'the token verifier is closed');

  async function verifyOpen(token: string): Promise<VerifiedToken> {
    const { alg, kid } = precheckToken(token, policy, clock.now() / 1000);

    let selection = (await issuerKeys.current()).select(kid, alg);
    if ('none' in selection && selection.none === 'unknown') {
      const refetched = await issuerKeys.refetchForUnknownKey();
      if (refetched !== undefined) selection = refetched.select(kid, alg);
    }
    if ('none' in selection) {
      throw tokenError('TOKEN_UNKNOWN_KEY', selection.none === 'ambiguous' ? `the issuer publishes several ${alg} keys that could have signed this token` : `the issuer publishes no ${alg} key with this kid`);
    }
    let key: Awaited<typeof selection.key>;
    try {
      key = await selection.key;
    } catch (err) {
      throw new CausewayError('ISSUER_MISCONFIGURED', `the issuer's ${alg} key for this kid cannot be imported`, { cause: err });
    }

    notify(opts.onEvent, { type: 'signature', alg, kid });
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: [alg],
        issuer: policy.issuer,
        audience: audiences,
        clockTolerance: policy.clockToleranceSec,
        currentDate: new Date(clock.now()),
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      throw fromJose(err);
    }
    const aud = payload['aud'];
    const iat = payload['iat'];
    return {
      subject: payload['sub'] as string,
      issuer: policy.issuer,
      audience: typeof aud === 'string' ? [aud] : [...(aud as string[])],
      expiresAt: new Date((payload['exp'] as number) * 1000),
      ...(typeof iat === 'number' ? { issuedAt: new Date(iat * 1000) } : {}),
      claims: payload,
    };
  }

  const verifier: TokenVerifier = {
    async verify(token: string): Promise<VerifiedToken> {
      if (closer.signal.aborted) throw closedError();
      try {
        return await verifyOpen(token);
      } catch (err) {
        if (closer.signal.aborted) throw closedError();
        if (err instanceof CausewayError) throw err;
        // Nothing else should reach here; if something does, it is still a refusal with a stable code.
        throw new CausewayError('TOKEN_MALFORMED', 'the token could not be verified', { cause: err });
      }
    },
    close(): void {
      closer.abort(closedError());
    },
    [Symbol.dispose](): void {
      verifier.close();
    },
  };
  return verifier;
}
