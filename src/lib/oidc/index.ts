/** OIDC ID-token verification (issuer discovery, cached JWKS, the KP-03 checks) and claim mapping for Kubernetes. */
export { createTokenVerifier, DEFAULT_ALGORITHMS, DEFAULT_CLOCK_TOLERANCE_SEC, DEFAULT_MIN_REFETCH_INTERVAL_MS, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_FETCH_TIMEOUT_MS } from './verify.ts';
export type { TokenVerifier, TokenVerifierOptions, TokenVerifierEvent, VerifiedToken } from './verify.ts';
export type { TokenAlgorithm, TokenErrorCode } from './token.ts';
export { TOKEN_ALGORITHMS } from './token.ts';
export { mapClaims, AUTHENTICATED_GROUP } from './claims.ts';
export type { ClaimMapping, MappedIdentity } from './claims.ts';
export { createIssuerFetch } from './fetch.ts';
