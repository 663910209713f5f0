/**
 * Fetching an issuer's discovery document and JWKS: the default `fetch` (the shared trusting fetch
 * over node:http(s), so a private issuer's CA can be trusted without touching the process's trust
 * store or environment), and a reader that caps the body and tells an unreachable issuer
 * (retryable) from a misconfigured one.
 */
import { CausewayError } from '../errors.ts';
import { createTrustingFetch } from '../net/trusting-fetch.ts';

/** Discovery documents and key sets are a few KiB; anything this large is not one. */
export const MAX_DOCUMENT_BYTES = 256 * 1024;

/**
 * A `fetch` for GET requests of JSON that trusts `caPem` instead of the system roots when given.
 * It never follows redirects and opens one connection per request (fetches are minutes apart); the
 * body is streamed so that fetchJson caps it (ISSUER_MISCONFIGURED, not a network failure).
 */
export function createIssuerFetch(options: { caPem?: string } = {}): typeof fetch {
  const base = createTrustingFetch({ allowHttp: true, ...(options.caPem === undefined ? {} : { caPem: options.caPem }) });
  return (input: string | URL | Request, init?: RequestInit): Promise<Response> => base(input, { method: 'GET', headers: { accept: 'application/json' }, signal: init?.signal ?? null });
}

export interface FetchedJson {
  body: unknown;
  /** Seconds from Cache-Control (`max-age`, or 0 for `no-store`/`no-cache`), when it says. */
  maxAgeSec: number | undefined;
}

export function cacheMaxAgeSec(cacheControl: string | null): number | undefined {
  if (cacheControl === null) return undefined;
  if (/(?:^|,)\s*no-(?:store|cache)\s*(?:,|$|=)/i.test(cacheControl)) return 0;
  const m = /(?:^|,)\s*max-age\s*=\s*"?(\d{1,10})"?\s*(?:,|$)/i.exec(cacheControl);
  return m === null ? undefined : Number(m[1]);
}

async function readCapped(res: Response, maxBytes: number): Promise<Buffer> {
  if (res.body === null) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  // Leaving the loop early cancels the stream, which closes the connection.
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength;
    if (total > maxBytes) throw new CausewayError('ISSUER_MISCONFIGURED', `the issuer's document is larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * GET `url` as JSON. Network failures, timeouts and non-2xx answers are ISSUER_UNREACHABLE
 * (retryable); an oversized or unparsable body is ISSUER_MISCONFIGURED.
 */
export async function fetchJson(fetchFn: typeof fetch, url: string, what: string, signal: AbortSignal): Promise<FetchedJson> {
  let res: Response;
  try {
    res = await fetchFn(url, { method: 'GET', headers: { accept: 'application/json' }, redirect: 'error', signal });
  } catch (err) {
    throw new CausewayError('ISSUER_UNREACHABLE', `could not fetch the issuer's ${what}`, { cause: err, retryable: true });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new CausewayError('ISSUER_UNREACHABLE', `the issuer's ${what} answered HTTP ${res.status}`, { retryable: true });
  }
  let bytes: Buffer;
  try {
    bytes = await readCapped(res, MAX_DOCUMENT_BYTES);
  } catch (err) {
    if (err instanceof CausewayError) throw err;
    throw new CausewayError('ISSUER_UNREACHABLE', `could not read the issuer's ${what}`, { cause: err, retryable: true });
  }
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new CausewayError('ISSUER_MISCONFIGURED', `the issuer's ${what} is not JSON`, { cause: err });
  }
  return { body, maxAgeSec: cacheMaxAgeSec(res.headers.get('cache-control')) };
}
