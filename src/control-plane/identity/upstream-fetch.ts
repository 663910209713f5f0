/**
 * The `fetch` that openid-client uses to talk to an organisation's IdP (discovery, JWKS, token and
 * userinfo requests): the shared trusting fetch (src/lib/net/trusting-fetch.ts) with one connection
 * per request and, when the IdentityProvider spec gives `caPem`, trust in exactly those CA
 * certificates instead of the system roots (nothing is added to the process's trust store or
 * environment). Redirects are returned, never followed; answers larger than `maxBodyBytes` are
 * refused (ANSWER_TOO_LARGE). Plain http:// is allowed: an http:// issuer is already one that
 * openid-client was told to accept (allowInsecureRequests).
 */
import { createTrustingFetch } from '../../lib/net/trusting-fetch.ts';

/** What openid-client passes to a custom fetch (its CustomFetch type, restated so this file stands alone). */
export interface UpstreamFetchOptions {
  method: string;
  headers: Record<string, string>;
  body?: ArrayBuffer | null | ReadableStream | string | Uint8Array | undefined | URLSearchParams;
  redirect?: 'manual';
  signal?: AbortSignal;
}

export type UpstreamFetch = (url: string, options: UpstreamFetchOptions) => Promise<Response>;

/** Discovery documents, key sets and token answers are a few KiB. */
export const MAX_UPSTREAM_BODY_BYTES = 1024 * 1024;

export function createUpstreamFetch(options: { caPem?: string; maxBodyBytes?: number } = {}): UpstreamFetch {
  return createTrustingFetch({
    allowHttp: true,
    maxBodyBytes: options.maxBodyBytes ?? MAX_UPSTREAM_BODY_BYTES,
    ...(options.caPem === undefined ? {} : { caPem: options.caPem }),
  });
}
