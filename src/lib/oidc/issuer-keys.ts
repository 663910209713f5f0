/**
 * One issuer's signing keys: discovery (`{issuer}/.well-known/openid-configuration`, whose `issuer`
 * must equal ours byte for byte, OP-09) and the JWKS it names, both cached for the Cache-Control
 * max-age within bounds.
 *
 * Fetches are bounded three ways (OP-08): concurrent callers share the one fetch in flight; a token
 * whose `kid` is unknown causes a refetch only when none started within `minRefetchIntervalMs`; and
 * after a failed fetch nothing is fetched again for a short backoff. A refresh replaces the whole
 * key set, so a key the issuer no longer lists stops working at the next refresh. When a refresh
 * fails, the last good set is used for up to STALE_IF_ERROR_MS past its expiry (it can only be
 * behind on removals, and the issuer being down must not log every user out at once).
 */
import { CausewayError, errorCode } from '../errors.ts';
import type { Clock } from '../clock.ts';
import { fetchJson } from './fetch.ts';
import { KeySet } from './key-set.ts';

export const JWKS_DEFAULT_TTL_MS = 5 * 60_000;
export const JWKS_MAX_TTL_MS = 60 * 60_000;
export const DISCOVERY_DEFAULT_TTL_MS = 60 * 60_000;
export const DISCOVERY_MAX_TTL_MS = 24 * 60 * 60_000;
export const STALE_IF_ERROR_MS = 60 * 60_000;
export const MAX_FAILURE_BACKOFF_MS = 5_000;

export type IssuerFetchEvent = { type: 'fetch'; resource: 'discovery' | 'jwks'; url: string; ok: boolean; code?: string };

export interface IssuerKeysOptions {
  issuer: string;
  /** A fixed JWKS URL; discovery is skipped when given. */
  jwksUri: string | undefined;
  fetch: typeof fetch;
  clock: Clock;
  minRefetchIntervalMs: number;
  fetchTimeoutMs: number;
  allowInsecureHttp: boolean;
  /** Aborted when the verifier closes. */
  closed: AbortSignal;
  onFetch: (event: IssuerFetchEvent) => void;
}

function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/** Why `value` cannot be an issuer or JWKS URL, or undefined when it can. */
export function urlProblem(value: string, allowInsecureHttp: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'is not a URL';
  }
  if (url.username !== '' || url.password !== '') return 'must not carry a user name or password';
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && allowInsecureHttp) return isLoopbackHost(url.hostname) ? undefined : 'may use http only on a loopback address';
  return 'must use https';
}

function misconfigured(message: string): CausewayError {
  return new CausewayError('ISSUER_MISCONFIGURED', message);
}

function ttlMs(maxAgeSec: number | undefined, defaultMs: number, minMs: number, maxMs: number): number {
  const wanted = maxAgeSec === undefined ? defaultMs : maxAgeSec * 1000;
  return Math.min(maxMs, Math.max(minMs, wanted));
}

export class IssuerKeys {
  readonly #o: IssuerKeysOptions;
  readonly #discoveryUrl: string;
  readonly #failureBackoffMs: number;
  #jwksUri: string | undefined;
  #discoveryExpiresAt = 0;
  #keys: KeySet | undefined;
  #keysExpireAt = 0;
  #lastAttemptAt = -Infinity;
  #lastError: CausewayError | undefined;
  #inflight: Promise<KeySet> | undefined;

  constructor(options: IssuerKeysOptions) {
    this.#o = options;
    this.#jwksUri = options.jwksUri;
    this.#discoveryExpiresAt = options.jwksUri === undefined ? 0 : Infinity;
    // OIDC Discovery §4: drop one terminating slash before appending; the comparison stays exact.
    this.#discoveryUrl = `${options.issuer.endsWith('/') ? options.issuer.slice(0, -1) : options.issuer}/.well-known/openid-configuration`;
    this.#failureBackoffMs = Math.min(MAX_FAILURE_BACKOFF_MS, options.minRefetchIntervalMs);
  }

  /** The key set to verify with: the cached one while fresh, else a refresh (or a recent stale set if it fails). */
  async current(): Promise<KeySet> {
    const now = this.#o.clock.now();
    const keys = this.#keys;
    if (keys !== undefined && now < this.#keysExpireAt) return keys;
    if (this.#inflight === undefined && this.#lastError !== undefined && now - this.#lastAttemptAt < this.#failureBackoffMs) {
      if (keys !== undefined && now < this.#keysExpireAt + STALE_IF_ERROR_MS) return keys;
      const last = this.#lastError;
      throw new CausewayError(last.code, `${last.message} (not retried for a few seconds)`, { cause: last, retryable: last.retryable });
    }
    try {
      return await this.#refresh();
    } catch (err) {
      if (keys !== undefined && !this.#o.closed.aborted && this.#o.clock.now() < this.#keysExpireAt + STALE_IF_ERROR_MS) return keys;
      throw err;
    }
  }

  /**
   * After a token named a key the current set lacks: the refetch in flight, or a new one when none
   * started within minRefetchIntervalMs (the backoff after a failure), else undefined (OP-08).
   */
  async refetchForUnknownKey(): Promise<KeySet | undefined> {
    if (this.#inflight !== undefined) return this.#inflight;
    const gap = this.#lastError === undefined ? this.#o.minRefetchIntervalMs : this.#failureBackoffMs;
    if (this.#o.clock.now() - this.#lastAttemptAt < gap) return undefined;
    return this.#refresh();
  }

  #refresh(): Promise<KeySet> {
    if (this.#inflight !== undefined) return this.#inflight;
    this.#lastAttemptAt = this.#o.clock.now();
    const attempt = this.#load().then(
      (keys) => {
        this.#lastError = undefined;
        return keys;
      },
      (err: unknown) => {
        const error = err instanceof CausewayError ? err : new CausewayError('ISSUER_UNREACHABLE', 'could not load the issuer keys', { cause: err, retryable: true });
        this.#lastError = error;
        throw error;
      },
    );
    this.#inflight = attempt.finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #load(): Promise<KeySet> {
    const signal = AbortSignal.any([this.#o.closed, AbortSignal.timeout(this.#o.fetchTimeoutMs)]);
    const jwksUri = await this.#currentJwksUri(signal);
    const { value: keys, maxAgeSec } = await this.#get('jwks', jwksUri, signal, (doc) => KeySet.parse(doc) ?? 'is not a JWKS of at most 100 keys');
    this.#keys = keys;
    this.#keysExpireAt = this.#o.clock.now() + ttlMs(maxAgeSec, JWKS_DEFAULT_TTL_MS, this.#o.minRefetchIntervalMs, JWKS_MAX_TTL_MS);
    return keys;
  }

  async #currentJwksUri(signal: AbortSignal): Promise<string> {
    const known = this.#jwksUri;
    if (known !== undefined && this.#o.clock.now() < this.#discoveryExpiresAt) return known;
    let fetched: { value: { jwksUri: string }; maxAgeSec: number | undefined };
    try {
      fetched = await this.#get('discovery', this.#discoveryUrl, signal, (doc) => this.#readDiscovery(doc));
    } catch (err) {
      // An unreachable discovery endpoint does not make the JWKS we already know wrong.
      if (known !== undefined && errorCode(err) === 'ISSUER_UNREACHABLE' && !this.#o.closed.aborted) return known;
      throw err;
    }
    const { jwksUri } = fetched.value;
    this.#jwksUri = jwksUri;
    this.#discoveryExpiresAt = this.#o.clock.now() + ttlMs(fetched.maxAgeSec, DISCOVERY_DEFAULT_TTL_MS, this.#o.minRefetchIntervalMs, DISCOVERY_MAX_TTL_MS);
    return jwksUri;
  }

  /** The discovery document's jwks_uri, or what is wrong with the document. */
  #readDiscovery(doc: unknown): { jwksUri: string } | string {
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return 'is not a JSON object';
    const { issuer, jwks_uri: jwksUri } = doc as Record<string, unknown>;
    // OP-09: byte for byte, no trailing-slash or case normalisation.
    if (issuer !== this.#o.issuer) return `names issuer ${JSON.stringify(issuer)?.slice(0, 200)}, not ${this.#o.issuer}`;
    if (typeof jwksUri !== 'string') return 'has no jwks_uri';
    const problem = urlProblem(jwksUri, this.#o.allowInsecureHttp);
    return problem === undefined ? { jwksUri } : `has a jwks_uri that ${problem}`;
  }

  /** GET and read one document; `read` returns the value or what is wrong with the document. */
  async #get<T extends object>(resource: 'discovery' | 'jwks', url: string, signal: AbortSignal, read: (doc: unknown) => T | string): Promise<{ value: T; maxAgeSec: number | undefined }> {
    const what = resource === 'jwks' ? 'JWKS' : 'discovery document';
    try {
      const { body, maxAgeSec } = await fetchJson(this.#o.fetch, url, what, signal);
      const value = read(body);
      if (typeof value === 'string') throw misconfigured(`the issuer's ${what} at ${url} ${value}`);
      this.#o.onFetch({ type: 'fetch', resource, url, ok: true });
      return { value, maxAgeSec };
    } catch (err) {
      this.#o.onFetch({ type: 'fetch', resource, url, ok: false, code: errorCode(err) ?? 'ISSUER_UNREACHABLE' });
      throw err;
    }
  }
}
