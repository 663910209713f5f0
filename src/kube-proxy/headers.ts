/**
 * Header hygiene at the kube proxy (KP-01, KP-04, KP-12). Works on Node's rawHeaders (every header
 * as sent, in order, with its original casing and repetitions), never on the merged object, so no
 * casing or repetition slips past.
 *
 * Towards the API server, dropped from what the client sent:
 * - every identity header: `Authorization`, `Proxy-Authorization`, `Impersonate-*`, `X-Remote-*`
 *   (the request-header authenticator's), in any casing and repetition;
 * - hop-by-hop headers (RFC 9110 §7.6.1) and every header the client names in `Connection`;
 * - `Host` (set from the backend URL), `Expect` (Node answers 100-continue itself), and
 *   `X-Forwarded-*`/`Forwarded` (the proxy adds nothing the API server would trust).
 * Then the proxy's own headers are appended: its credential, Impersonate-User, one Impersonate-Group
 * per group, Impersonate-Extra-* (key percent-encoded as Kubernetes requires). These come last and
 * are never subject to the client's `Connection` list. `assertImpersonating` is the final check
 * before anything is sent: exactly one Impersonate-User, never empty.
 *
 * Towards the client, dropped from what the API server answered: hop-by-hop headers, any header
 * whose value contains the proxy's credential, and a `Location` that is not a path on this server
 * (a redirect is passed on, never followed, and never points the client elsewhere).
 */
import { CausewayError } from '../lib/errors.ts';

/** RFC 9110 §7.6.1 plus the legacy ones. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);

const CLIENT_DROPPED = new Set(['authorization', 'proxy-authorization', 'host', 'expect', 'forwarded', 'content-length']);

export const IMPERSONATE_USER = 'Impersonate-User';
export const IMPERSONATE_GROUP = 'Impersonate-Group';
export const IMPERSONATE_EXTRA_PREFIX = 'Impersonate-Extra-';
export const DEVICE_EXTRA_KEY = 'causeway.dev/device';

/** Pairs [name, value] from Node's rawHeaders. */
export function headerPairs(rawHeaders: readonly string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) pairs.push([rawHeaders[i], rawHeaders[i + 1]]);
  return pairs;
}

/** Every value of `name` (case-insensitive), in order. */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const lower = name.toLowerCase();
  return headerPairs(rawHeaders).filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

/** The comma-separated tokens of every `Connection` header, lower-cased. */
export function connectionTokens(rawHeaders: readonly string[]): Set<string> {
  const tokens = new Set<string>();
  for (const value of headerValues(rawHeaders, 'connection')) for (const t of value.split(',')) if (t.trim() !== '') tokens.add(t.trim().toLowerCase());
  return tokens;
}

export function isIdentityHeader(lowerName: string): boolean {
  return lowerName === 'authorization' || lowerName === 'proxy-authorization' || lowerName.startsWith('impersonate-') || lowerName.startsWith('x-remote-');
}

/**
 * The client's headers minus everything listed above, as [name, value] pairs in their order.
 * `keepContentLength`: pass Content-Length on (a plain request with a body; Node would otherwise chunk it).
 */
export function cleanClientHeaders(rawHeaders: readonly string[], opts: { keepContentLength?: boolean } = {}): Array<[string, string]> {
  const named = connectionTokens(rawHeaders);
  const out: Array<[string, string]> = [];
  for (const [name, value] of headerPairs(rawHeaders)) {
    const lower = name.toLowerCase();
    if (isIdentityHeader(lower) || HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    if (lower === 'content-length' && opts.keepContentLength === true) {
      out.push([name, value]);
      continue;
    }
    if (CLIENT_DROPPED.has(lower) || lower.startsWith('x-forwarded-')) continue;
    out.push([name, value]);
  }
  return out;
}

/** Kubernetes' encoding of an Impersonate-Extra key in a header name (url.PathEscape, as client-go does). */
export function encodeExtraKey(key: string): string {
  return encodeURIComponent(key).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export interface Impersonation {
  user: string;
  groups: readonly string[];
  /** Extra key → values. */
  extra?: Readonly<Record<string, readonly string[]>>;
}

/** The proxy's own headers, appended after the client's cleaned ones. */
export function impersonationHeaders(who: Impersonation, backendToken: string | undefined): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (backendToken !== undefined && backendToken !== '') out.push(['Authorization', `Bearer ${backendToken}`]);
  out.push([IMPERSONATE_USER, who.user]);
  for (const group of who.groups) out.push([IMPERSONATE_GROUP, group]);
  for (const [key, values] of Object.entries(who.extra ?? {})) for (const v of values) out.push([`${IMPERSONATE_EXTRA_PREFIX}${encodeExtraKey(key)}`, v]);
  return out;
}

/**
 * The last check before a request leaves: exactly one non-empty Impersonate-User, every
 * Impersonate-* header one of ours. A request that fails it is never sent as the proxy's account.
 */
export function assertImpersonating(headers: ReadonlyArray<readonly [string, string]>, who: Impersonation): void {
  const users = headers.filter(([n]) => n.toLowerCase() === 'impersonate-user');
  if (users.length !== 1 || users[0][1] === '' || users[0][1] !== who.user) {
    throw new CausewayError('KUBE_NO_IMPERSONATION', 'refusing to send a request without exactly one Impersonate-User (it would act as the kube proxy itself)');
  }
  const groups = headers.filter(([n]) => n.toLowerCase() === 'impersonate-group').map(([, v]) => v);
  if (groups.length !== who.groups.length || groups.some((g, i) => g !== who.groups[i])) {
    throw new CausewayError('KUBE_NO_IMPERSONATION', 'refusing to send a request whose Impersonate-Group headers are not exactly the caller\'s groups');
  }
  for (const [name, value] of headers) {
    if (/[\r\n\0]/.test(value)) throw new CausewayError('KUBE_BAD_HEADER', `refusing to send header ${name} with a control character`);
  }
}

/** The headers of a response for the client: hop-by-hop removed, the proxy's credential never echoed, foreign Location dropped. */
export function cleanBackendHeaders(rawHeaders: readonly string[], secrets: readonly string[], opts: { keepUpgrade?: boolean } = {}): Array<[string, string]> {
  const named = connectionTokens(rawHeaders);
  const out: Array<[string, string]> = [];
  for (const [name, value] of headerPairs(rawHeaders)) {
    const lower = name.toLowerCase();
    if (opts.keepUpgrade === true && (lower === 'upgrade' || lower === 'connection')) {
      out.push([name, value]);
      continue;
    }
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    if (secrets.some((s) => s.length > 0 && (value.includes(s) || name.includes(s)))) continue;
    if (lower === 'location' && !isLocalPath(value)) continue;
    out.push([name, value]);
  }
  return out;
}

/** A path on this same server (`/…`, not `//host/…` nor `/\host`). */
export function isLocalPath(location: string): boolean {
  return location.startsWith('/') && !location.startsWith('//') && !location.startsWith('/\\');
}
