/**
 * A `fetch` that trusts one CA (the control plane's, saved in the session) or, when none is given,
 * the system's roots: the shared trusting fetch (src/lib/net/trusting-fetch.ts) set for tokens.
 * openid-client takes it as its customFetch; the token-endpoint calls in this folder use it
 * directly. It never follows redirects, caps the answer at 1 MiB, gives up after a timeout and
 * presents the device certificate when given one. Plain http:// is refused: tokens only travel over
 * TLS. Failures come out as connectionError says (what to do about them).
 */
import { CausewayError, UserError, errorCode, errorMessage } from '../errors.ts';
import { createTrustingFetch as createSharedTrustingFetch } from '../net/trusting-fetch.ts';

export const MAX_ANSWER_BYTES = 1024 * 1024;
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface TrustingFetchOptions {
  /** PEM of the CA(s) to trust instead of the system roots. */
  caPem?: string;
  timeoutMs?: number;
  /** A TLS client certificate to present (the device certificate, for the token exchange). */
  clientCert?: ClientCertificate;
}

/** A client certificate and its private key (PEM). */
export interface ClientCertificate {
  certPem: string;
  keyPem: string;
}

export type FetchLike = (url: string | URL, init?: { method?: string; headers?: Record<string, string> | Headers; body?: unknown; signal?: AbortSignal | null; redirect?: string }) => Promise<Response>;

export function createTrustingFetch(options: TrustingFetchOptions = {}): FetchLike {
  const shared = createSharedTrustingFetch({
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    maxBodyBytes: MAX_ANSWER_BYTES,
    ...(options.caPem === undefined ? {} : { caPem: options.caPem }),
    ...(options.clientCert === undefined ? {} : { cert: options.clientCert.certPem, key: options.clientCert.keyPem }),
  });
  return async (input, init) => {
    try {
      return await shared(input, init);
    } catch (err) {
      // A body or URL this fetch cannot send is a programming error, not a connection failure.
      if (err instanceof TypeError) throw err;
      const where = String(input);
      throw connectionError(URL.canParse(where) ? new URL(where).origin : where, err);
    }
  };
}

/** A failed connection as an error that says what to do (unreachable, untrusted certificate, not TLS). */
export function connectionError(where: string, err: unknown): Error {
  if (err instanceof CausewayError) return err;
  const code = errorCode(err) ?? '';
  if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'ETIMEDOUT'].includes(code)) {
    return new CausewayError('SERVER_UNREACHABLE', `cannot reach ${where} (${code}); check the URL and your network`, { cause: err, retryable: true });
  }
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|UNABLE_TO_GET_ISSUER/.test(code)) {
    return new UserError('SERVER_UNTRUSTED', `${where} presented a certificate this machine does not trust (${code}); pass --ca-file with the control plane's CA certificate (or set CAUSEWAY_CA_FILE)`, { cause: err });
  }
  if (code === 'EPROTO' || code.startsWith('ERR_SSL')) {
    return new UserError('SERVER_TLS', `TLS with ${where} failed (${code}); is it a Causeway control plane, and does the URL start with https://?`, { cause: err });
  }
  if (code === 'ABORT_ERR') return err instanceof Error ? err : new Error(String(err));
  return new CausewayError('REQUEST_FAILED', `the request to ${where} failed: ${errorMessage(err)}`, { cause: err, retryable: true });
}
