/**
 * The client's login session, shared by the client commands (src/client) and the admin CLI
 * (src/admin-cli): the session file, its cross-process lock, silent refresh and kube tokens.
 */
export { SessionStore, causewayHome, parseSession, SESSION_VERSION } from './store.ts';
export type { KubeToken, Session, SessionStoreOptions, SessionUser } from './store.ts';
export {
  ACCESS_TOKEN_TYPE,
  DEVICE_REFUSED,
  ID_TOKEN_TYPE,
  MIN_VALIDITY_MS,
  OAuthError,
  TOKEN_EXCHANGE_GRANT,
  applyTokenAnswer,
  freshSession,
  jwtPayload,
  kubeToken,
  notLoggedIn,
  revokeSession,
  tokenRequest,
  userFromClaims,
} from './tokens.ts';
export type { KubeTokenResult, SessionDeps } from './tokens.ts';
export { createTrustingFetch, connectionError } from './http.ts';
export type { ClientCertificate, FetchLike, TrustingFetchOptions } from './http.ts';
