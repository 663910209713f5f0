/**
 * Where a console login may send the browser afterwards (`/console/login?next=…`, CP-07): only a path
 * of this server. Anything else, and anything that a browser could read as another host, becomes `/`:
 *
 *   //evil.example, /\evil.example   scheme-relative (browsers treat `\` as `/`)
 *   https://trusted@evil, http:…     absolute URLs, whoever they seem to name
 *   /%09/evil, "/\t/evil", CR, LF    control characters (the URL parser drops tabs and newlines, so
 *                                    "/\t/evil" would become "//evil")
 *   /console/…                       the login routes themselves (no loops)
 */

const BASE = 'https://causeway.invalid';
const MAX_NEXT = 2048;

export function safeNext(value: unknown): string {
  if (typeof value !== 'string' || value === '' || value.length > MAX_NEXT) return '/';
  if (!value.startsWith('/') || value.startsWith('//')) return '/';
  // Backslashes anywhere, and every control character (also DEL), raw or percent-encoded.
  if ([...value].some((c) => c === '\\' || c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f) || /%(?:0[0-9a-f]|1[0-9a-f]|7f|5c)/i.test(value)) return '/';
  let url: URL;
  try {
    url = new URL(value, BASE);
  } catch {
    return '/';
  }
  if (url.origin !== BASE) return '/';
  const path = `${url.pathname}${url.search}${url.hash}`;
  if (!path.startsWith('/') || path.startsWith('//')) return '/';
  if (url.pathname === '/console' || url.pathname.startsWith('/console/')) return '/';
  return path;
}
