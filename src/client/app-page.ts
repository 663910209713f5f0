/**
 * The local app page (issue 7): served by the agent on http://127.0.0.1:PORT (loopback only, an ephemeral
 * port unless --app-port), showing the user, the device's trust level with its explanation, and the
 * catalog with Connect/Disconnect buttons. Plain DOM JavaScript, no framework.
 *
 * Who may drive it (LP-01, LP-02):
 * - A per-agent random secret (32 bytes). `causeway app` opens `http://127.0.0.1:PORT/#SECRET`. A URL
 *   fragment is never sent to a server, so the secret is in no request line, no log and no Referer. The
 *   page's script moves it into sessionStorage (scoped to this exact origin, port included, unlike a
 *   cookie, which every port of 127.0.0.1 would receive) and strips it from the address bar.
 * - Every /api request must carry the secret in `X-Causeway-App`. A custom header cannot be added by a
 *   form, an <img> or a cross-origin fetch without a CORS preflight, which this server never grants, so
 *   the header is also the CSRF token.
 * - Every request's Host must be exactly `127.0.0.1:PORT` or `localhost:PORT` (DNS rebinding: a page of
 *   evil.example resolving to 127.0.0.1 sends Host evil.example:PORT). A request with an Origin must come
 *   from one of those two origins; writes (POST) must carry such an Origin. `Sec-Fetch-Site: cross-site`
 *   is refused too.
 * - CSP `default-src 'none'` with scripts and styles from 'self' only (no inline code), frame-ancestors
 *   'none', Referrer-Policy no-referrer, nosniff, no-store.
 * The secret is compared in constant time. The HTML, script and stylesheet carry no data and are served
 * without the secret (after the Host check): the data comes from /api only.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CausewayError, UserError, errorCode } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { AgentAppPage, AgentBackend } from './agent.ts';
import { HttpError, readJsonObject } from './json-body.ts';

export const APP_SECRET_HEADER = 'x-causeway-app';
const MAX_BODY = 16 * 1024;

export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CSP,
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'no-store',
};

export interface AppPageOptions {
  backend: AgentBackend;
  logger: Logger;
  /** 0 (default) for an ephemeral port. Always on 127.0.0.1. */
  port?: number;
  /** Replaces the random secret (tests). */
  secret?: string;
}

export async function startAppPage(options: AppPageOptions): Promise<AgentAppPage> {
  const secret = options.secret ?? randomBytes(32).toString('base64url');
  const secretBytes = Buffer.from(secret);
  const logger = options.logger.child({ component: 'app-page' });
  const { backend } = options;
  let port = 0;

  const allowedHosts = (): Set<string> => new Set([`127.0.0.1:${port}`, `localhost:${port}`]);
  const allowedOrigins = (): Set<string> => new Set([`http://127.0.0.1:${port}`, `http://localhost:${port}`]);

  const refuse = (res: ServerResponse, status: number, code: string, message: string): void => {
    send(res, status, 'application/json', JSON.stringify({ error: { code, message } }));
  };

  const hasSecret = (req: IncomingMessage): boolean => {
    const given = req.headers[APP_SECRET_HEADER];
    if (typeof given !== 'string') return false;
    const bytes = Buffer.from(given);
    return bytes.length === secretBytes.length && timingSafeEqual(bytes, secretBytes);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const host = req.headers.host;
    if (host === undefined || !allowedHosts().has(host)) {
      logger.warn({ host: host?.slice(0, 100) }, 'app page: refused a request with a foreign Host (LP-02)');
      refuse(res, 421, 'HOST_REFUSED', 'this page answers only to 127.0.0.1 or localhost');
      return;
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedOrigins().has(origin)) {
      logger.warn({ origin: origin.slice(0, 100) }, 'app page: refused a request from another origin (LP-02)');
      refuse(res, 403, 'ORIGIN_REFUSED', 'requests from other sites are refused');
      return;
    }
    if (req.headers['sec-fetch-site'] === 'cross-site') {
      refuse(res, 403, 'ORIGIN_REFUSED', 'requests from other sites are refused');
      return;
    }
    const url = new URL(req.url ?? '/', `http://${host}`);
    if (method === 'GET' && (url.pathname === '/' || url.pathname === '/index.html')) {
      send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      return;
    }
    if (method === 'GET' && url.pathname === '/app.js') {
      send(res, 200, 'text/javascript; charset=utf-8', PAGE_JS);
      return;
    }
    if (method === 'GET' && url.pathname === '/app.css') {
      send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
      return;
    }
    if (!url.pathname.startsWith('/api/')) {
      refuse(res, 404, 'NOT_FOUND', 'no such page');
      return;
    }
    if (!hasSecret(req)) {
      refuse(res, 401, 'APP_SECRET_REQUIRED', 'open this page with causeway app');
      return;
    }
    if (method === 'POST' && origin === undefined) {
      refuse(res, 403, 'ORIGIN_REQUIRED', 'writes must come from the app page');
      return;
    }
    const route = `${method} ${url.pathname}`;
    if (route === 'GET /api/state') {
      const [status, services] = await Promise.all([
        backend.status(),
        backend.services().catch((err: unknown) => ({ error: { code: errorCode(err) ?? 'ERROR', message: err instanceof CausewayError ? err.message : 'the catalog could not be fetched' } })),
      ]);
      send(res, 200, 'application/json', JSON.stringify({ status, catalog: services }));
      return;
    }
    if (route === 'POST /api/connect' || route === 'POST /api/disconnect') {
      const body = await readJsonObject(req, MAX_BODY);
      const service = body.service;
      if (typeof service !== 'string' || service === '' || service.length > 253) {
        refuse(res, 400, 'BAD_REQUEST', 'service must be a service name');
        return;
      }
      try {
        const result = route === 'POST /api/connect' ? await backend.connect(service) : await backend.disconnect(service);
        send(res, 200, 'application/json', JSON.stringify(result));
      } catch (err) {
        refuse(res, err instanceof UserError ? 400 : 500, errorCode(err) ?? 'ERROR', err instanceof CausewayError ? err.message : 'internal error; see the agent log');
      }
      return;
    }
    refuse(res, 404, 'NOT_FOUND', `no route ${route}`);
  };

  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) refuse(res, err.status, err.code, err.message);
      else {
        logger.error({ err }, 'app page request failed');
        refuse(res, 500, 'INTERNAL', 'internal error; see the agent log');
      }
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 120_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      reject(
        errorCode(err) === 'EADDRINUSE'
          ? new UserError('PORT_IN_USE', `The app page's port ${options.port ?? 0} is already in use. Choose another with --app-port, or leave it out for a free one.`, { cause: err })
          : err,
      );
    });
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  return {
    port: () => port,
    url: () => `http://127.0.0.1:${port}/#${secret}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Causeway</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><h1>Causeway</h1><span id="who">…</span></header>
<main>
<p id="message" role="alert" hidden></p>
<section id="device-section">
<h2>This device</h2>
<p>Trust level: <strong id="trust-level">…</strong></p>
<p id="trust-explanation"></p>
<p id="trust-cert"></p>
</section>
<section>
<h2>Services</h2>
<p id="catalog-note" hidden></p>
<table id="catalog">
<thead><tr><th>Service</th><th>Type</th><th>Domain</th><th>Port</th><th>Access</th><th></th></tr></thead>
<tbody></tbody>
</table>
</section>
</main>
</body>
</html>
`;

const PAGE_CSS = `body { font-family: system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { display: flex; justify-content: space-between; align-items: baseline; padding: 12px 24px; background: #1d2330; color: #fff; }
header h1 { font-size: 20px; margin: 0; }
main { padding: 16px 24px; max-width: 980px; }
section { background: #fff; border-radius: 6px; padding: 12px 16px; margin-bottom: 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 16px; margin: 4px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e3e6eb; vertical-align: top; }
td.denied { color: #a4262c; }
td.allowed { color: #1e7b34; }
button { padding: 4px 12px; cursor: pointer; }
#message { padding: 8px 12px; border-radius: 4px; background: #fde7e9; color: #a4262c; }
#message.ok { background: #e6f4ea; color: #1e7b34; }
`;

/** The page's script: reads the secret from the fragment once, then drives /api with it. */
const PAGE_JS = `'use strict';
(function () {
  var KEY = 'causeway-app-secret';
  if (location.hash.length > 1) {
    sessionStorage.setItem(KEY, decodeURIComponent(location.hash.slice(1)));
    history.replaceState(null, '', location.pathname);
  }
  var secret = sessionStorage.getItem(KEY);

  function el(id) { return document.getElementById(id); }
  function say(text, ok) {
    var m = el('message');
    m.textContent = text;
    m.className = ok ? 'ok' : '';
    m.hidden = text === '';
  }
  function api(method, path, body) {
    var init = { method: method, headers: { 'X-Causeway-App': secret || '' }, credentials: 'omit', cache: 'no-store' };
    if (body !== undefined) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    return fetch(path, init).then(function (res) {
      return res.json().then(function (json) {
        if (!res.ok) throw new Error((json.error && json.error.message) || ('HTTP ' + res.status));
        return json;
      });
    });
  }
  function cell(row, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }
  function render(state) {
    var st = state.status;
    el('who').textContent = st.user ? (st.user.name + (st.user.email ? ' <' + st.user.email + '>' : '') + ' at ' + st.server) : 'not logged in: run causeway login';
    el('trust-level').textContent = st.device ? (st.device.trustLevel || 'not scored yet') : 'no device registered';
    el('trust-explanation').textContent = st.device && st.device.explanation ? st.device.explanation : '';
    el('trust-cert').textContent = st.trustCert ? 'Trust certificate valid until ' + st.trustCert.notAfter : 'No trust certificate';
    var body = document.querySelector('#catalog tbody');
    body.textContent = '';
    var catalog = state.catalog;
    var note = el('catalog-note');
    if (catalog.error) { note.hidden = false; note.textContent = 'The catalog could not be fetched: ' + catalog.error.message; return; }
    note.hidden = !catalog.catalogHidden;
    note.textContent = catalog.catalogHidden ? 'Your organisation hides the service catalog; connected and autorun services are shown.' : '';
    catalog.services.forEach(function (s) {
      var row = document.createElement('tr');
      row.dataset.service = s.name;
      cell(row, s.name + (s.description ? ' — ' + s.description : ''));
      cell(row, s.type);
      cell(row, s.domain + ':' + s.port);
      cell(row, String(s.connected ? s.localPort : s.client.listenPort));
      cell(row, s.access.allowed ? 'allowed' : 'denied: ' + (s.access.explanation || s.access.reasons.join(', ')), s.access.allowed ? 'allowed' : 'denied');
      var td = cell(row, '');
      var button = document.createElement('button');
      button.type = 'button';
      button.textContent = s.connected ? 'Disconnect' : 'Connect';
      button.dataset.action = s.connected ? 'disconnect' : 'connect';
      button.addEventListener('click', function () { act(button.dataset.action, s.name, button); });
      td.appendChild(button);
      body.appendChild(row);
    });
  }
  function load() {
    if (!secret) { say('Open this page with: causeway app', false); return Promise.resolve(); }
    return api('GET', '/api/state').then(render).catch(function (e) { say(e.message, false); });
  }
  function act(action, name, button) {
    button.disabled = true;
    api('POST', '/api/' + action, { service: name }).then(function (r) {
      if (action === 'connect') say('Connected ' + name + ' on 127.0.0.1:' + r.connection.port + (r.connection.kubeContext ? ' — kubectl --context ' + r.connection.kubeContext : '') + (r.warning ? ' (' + r.warning + ')' : ''), !r.warning);
      else say('Disconnected ' + name, true);
      return load();
    }).catch(function (e) { say(e.message, false); }).then(function () { button.disabled = false; });
  }
  document.addEventListener('DOMContentLoaded', function () {
    load();
    setInterval(load, 10000);
  });
})();
`;
