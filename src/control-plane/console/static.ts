/**
 * The web console's single-page app, built by `npm run build:web` into `dist/web` (WEB-UI's web/):
 *
 *   GET /assets/*   the built files (content-hashed names): cached for a year, immutable
 *   GET /<file>     other files at the top of the build (favicon…): cached for an hour
 *   GET /, and any other GET a browser navigates to (Accept: text/html) outside /api, /oidc,
 *   /.well-known and /console: index.html, never cached, so the app routes on the client
 *
 * Every answer carries CONSOLE_HEADERS: a CSP without 'unsafe-inline' (CP-05), no framing (CP-08), no
 * sniffing, and Referrer-Policy same-origin (with no-referrer, browsers send `Origin: null` on the
 * app's own POSTs, which the CSRF check must refuse). Without a build, `/` says how to make one.
 *
 * Files are looked up only inside the build directory: the path is decoded once, `..`, backslashes
 * and NUL refused, and the real path (symlinks resolved) must stay inside.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONSOLE_CSP,
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
};

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.txt': 'text/plain; charset=utf-8',
};

/** Paths that belong to the API and login, never to the app. */
const NOT_APP = [/^\/api(?:\/|$)/, /^\/oidc(?:\/|$)/, /^\/\.well-known(?:\/|$)/, /^\/console(?:\/|$)/, /^\/healthz$/, /^\/readyz$/, /^\/metrics$/];

const NOT_BUILT = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Causeway</title></head>
<body>
<h1>The Causeway web console is not built</h1>
<p>This server runs from a source checkout without the built console. Build it with <code>npm run build:web</code> and restart the server. The API at <code>/api/v1</code> works without it.</p>
</body>
</html>
`;

export interface ConsoleStaticOptions {
  /** The build directory (holds index.html and assets/). */
  dir: string;
}

export async function consoleStaticRoutes(app: FastifyInstance, options: ConsoleStaticOptions): Promise<void> {
  let root: string | undefined;
  try {
    root = await realpath(options.dir);
  } catch {
    root = undefined;
  }

  const sendIndex = async (reply: FastifyReply): Promise<FastifyReply> => {
    void reply.headers(CONSOLE_HEADERS).header('cache-control', 'no-store');
    const index = root === undefined ? undefined : await readFile(join(root, 'index.html')).catch(() => undefined);
    if (index === undefined) return reply.code(503).type('text/html; charset=utf-8').send(NOT_BUILT);
    return reply.code(200).type('text/html; charset=utf-8').send(index);
  };

  /** The real path of a file of the build for this URL path, or undefined. */
  const fileFor = async (urlPath: string): Promise<string | undefined> => {
    if (root === undefined) return undefined;
    let decoded: string;
    try {
      decoded = decodeURIComponent(urlPath);
    } catch {
      return undefined;
    }
    if (decoded.includes('\0') || decoded.includes('\\') || decoded.split('/').some((segment) => segment === '..' || segment === '.')) return undefined;
    const candidate = join(root, ...decoded.split('/').filter((s) => s !== ''));
    try {
      const real = await realpath(candidate);
      if (!real.startsWith(`${root}${sep}`)) return undefined;
      const info = await stat(real);
      return info.isFile() ? real : undefined;
    } catch {
      return undefined;
    }
  };

  const sendFile = async (reply: FastifyReply, file: string, immutable: boolean): Promise<FastifyReply> => {
    const body = await readFile(file);
    return reply
      .headers(CONSOLE_HEADERS)
      .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'public, max-age=3600')
      .type(TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream')
      .send(body);
  };

  app.get('/', { config: { access: 'public' }, schema: { hide: true } }, (_request, reply) => sendIndex(reply));

  app.get('/*', { config: { access: 'public' }, schema: { hide: true } }, async (request: FastifyRequest, reply) => {
    const path = request.url.split('?')[0] ?? '/';
    if (NOT_APP.some((pattern) => pattern.test(path))) return reply.callNotFound();
    if (path === '/index.html') return sendIndex(reply);
    const file = await fileFor(path);
    if (file !== undefined) return sendFile(reply, file, path.startsWith('/assets/'));
    if (path.startsWith('/assets/')) return reply.callNotFound();
    const accept = request.headers.accept ?? '';
    if (accept.includes('text/html')) return sendIndex(reply);
    return reply.callNotFound();
  });
}
