/**
 * The HTML pages people see while logging in: our login form (interactions.ts) and the pages that
 * oidc-provider renders itself (errors, the logout confirmation, the device flow's code entry,
 * confirmation and success). One look, one stylesheet served from our own origin, and no inline
 * script or style anywhere, so the CSP can forbid both (CP-05, CP-08).
 *
 * Everything that did not come from this file is escaped with `escapeHtml` before it is put into a
 * page: client names, IdP display names, user names, error messages.
 *
 * ## Referrer policy `same-origin`, in a header and a <meta>
 *
 * With `no-referrer` (the control plane's default header) browsers send `Origin: null` on a form POST,
 * and the login form's CSRF check (the exact same-origin Origin, CP-06) refuses it. The <meta> in
 * every page wins over the header, so the pages work whatever header a server adds; other sites still
 * get no Referer.
 *
 * ## Why `form-action` allows `http://127.0.0.1:*`
 *
 * Chromium (and CSP Level 3) apply `form-action` to every redirect of a navigation that a form
 * submission started, not just to the form's own `action`. Our login form posts to
 * `/oidc/interaction/:uid/login` (same origin); that answers 303 to `/oidc/auth/:uid` (same origin),
 * which answers 303 to the client's redirect URI. For the CLI that is its loopback listener
 * `http://127.0.0.1:<port>/callback` (RFC 8252 §7.3), so with `form-action 'self'` alone Chromium
 * blocks the last hop and the login never completes (the same holds for the abort button and the
 * device flow's forms). The page therefore allows form submissions, and their redirects, to
 * `http://127.0.0.1` on any port: the only redirect URI any of our clients has outside our own
 * origin. That widens nothing an attacker can use: the pages run no script (`default-src 'none'`),
 * so no injected markup can build or submit a form, and a loopback listener is the user's own
 * machine. The org IdP is reached through a link (GET), which `form-action` does not govern.
 * interactions.test.ts checks both directions in a real Chromium: the redirect chain completes with
 * this policy, and is blocked with `form-action 'self'` alone.
 */

/** The path of our stylesheet (served by interactions.ts). */
export const STYLESHEET_PATH = '/oidc/assets/causeway.css';

export const PAGE_CSP = [
  "default-src 'none'",
  "style-src 'self'",
  "img-src 'self' data:",
  "form-action 'self' http://127.0.0.1:*",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/** Headers every HTML page we render carries. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': PAGE_CSP,
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // Not no-referrer: with it, browsers send `Origin: null` on the form POSTs, which the CSRF check
  // (an exact same-origin Origin, CP-06) must refuse. same-origin still sends nothing to other sites.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
  'cross-origin-opener-policy': 'same-origin',
};

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '`': '&#96;',
};

/** Text made safe for HTML element content and quoted attribute values. */
export function escapeHtml(value: string | number | boolean | null | undefined): string {
  return (value === undefined || value === null ? '' : String(value)).replace(/[&<>"'`]/g, (c) => ESCAPES[c] ?? c);
}

export interface PageOptions {
  title: string;
  /** Already-escaped HTML. */
  body: string;
}

/** A whole HTML document in our look. `title` is escaped here; `body` must already be. */
export function renderPage({ title, body }: PageOptions): string {
  const safeTitle = escapeHtml(title);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${safeTitle} · Causeway</title>
<link rel="stylesheet" href="${STYLESHEET_PATH}">
</head>
<body>
<main class="card">
<p class="brand">Causeway</p>
<h1>${safeTitle}</h1>
${body}
</main>
</body>
</html>
`;
}

/** The stylesheet at STYLESHEET_PATH. */
export const STYLESHEET = `:root {
  color-scheme: light dark;
  --bg: #f4f5f7;
  --card: #ffffff;
  --text: #1d2330;
  --muted: #5b6475;
  --border: #d5d9e0;
  --accent: #1f5fbf;
  --accent-text: #ffffff;
  --error-bg: #fdecec;
  --error-text: #8a1c1c;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171c;
    --card: #1d2129;
    --text: #e6e9ef;
    --muted: #9aa3b2;
    --border: #343a46;
    --accent: #5b8ef0;
    --accent-text: #0b0e13;
    --error-bg: #3a1d1f;
    --error-text: #ffb4b4;
  }
}
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; }
body {
  background: var(--bg);
  color: var(--text);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  display: flex;
  justify-content: center;
  padding: 8vh 16px;
}
.card {
  width: 100%;
  max-width: 380px;
  background: var(--card);
  border: 1px solid var(--border);
  border-radius: 10px;
  padding: 28px 28px 20px;
  box-shadow: 0 2px 10px rgba(0, 0, 0, 0.06);
}
.brand { margin: 0 0 4px; color: var(--muted); font-size: 13px; letter-spacing: 0.08em; text-transform: uppercase; }
h1 { margin: 0 0 16px; font-size: 22px; font-weight: 600; overflow-wrap: anywhere; }
p { margin: 0 0 14px; overflow-wrap: anywhere; }
.muted { color: var(--muted); font-size: 13px; }
.error { background: var(--error-bg); color: var(--error-text); border-radius: 6px; padding: 8px 12px; overflow-wrap: anywhere; }
form { margin: 0 0 12px; }
label { display: block; margin: 0 0 4px; font-size: 13px; font-weight: 600; }
input[type=text], input[type=password] {
  display: block;
  width: 100%;
  margin: 0 0 12px;
  padding: 9px 10px;
  font: inherit;
  color: var(--text);
  background: var(--bg);
  border: 1px solid var(--border);
  border-radius: 6px;
}
input:focus, button:focus, a.button:focus { outline: 2px solid var(--accent); outline-offset: 1px; }
input[name=user_code] { text-align: center; text-transform: uppercase; letter-spacing: 0.15em; }
button, a.button {
  display: block;
  width: 100%;
  margin: 0 0 10px;
  padding: 9px 12px;
  font: inherit;
  font-weight: 600;
  text-align: center;
  text-decoration: none;
  border-radius: 6px;
  cursor: pointer;
}
button.primary { background: var(--accent); color: var(--accent-text); border: 1px solid var(--accent); }
button.secondary, a.button {
  background: transparent;
  color: var(--text);
  border: 1px solid var(--border);
}
button.link { background: none; border: none; color: var(--muted); font-weight: 400; font-size: 13px; padding: 4px; }
.divider { display: flex; align-items: center; gap: 10px; color: var(--muted); font-size: 13px; margin: 6px 0 12px; }
.divider::before, .divider::after { content: ""; flex: 1; border-top: 1px solid var(--border); }
code.user-code { display: block; text-align: center; font-size: 26px; letter-spacing: 0.15em; margin: 0 0 14px; }
dl.details { margin: 0 0 14px; font-size: 13px; }
dl.details dt { font-weight: 600; }
dl.details dd { margin: 0 0 6px; overflow-wrap: anywhere; }
`;

/**
 * The minimum of oidc-provider's Koa context that the page functions touch (oidc-provider 9 has no
 * type declarations of its own).
 */
export interface PageContext {
  type: string;
  body: unknown;
  set(field: string, value: string): void;
  host?: string;
  oidc?: { client?: { clientId?: string; clientName?: string } | undefined } | undefined;
}

function sendProviderPage(ctx: PageContext, html: string): void {
  for (const [name, value] of Object.entries(PAGE_HEADERS)) ctx.set(name, value);
  ctx.type = 'html';
  ctx.body = html;
}

function clientDisplay(ctx: PageContext): string | undefined {
  const client = ctx.oidc?.client;
  const name = client?.clientName ?? client?.clientId;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** Drops the inline event handlers oidc-provider puts into its device flow form (our CSP forbids them anyway). */
function withoutInlineHandlers(form: string): string {
  return form.replace(/\s+on[a-z]+="[^"]*"/gi, '');
}

/** Known OAuth error codes, which are safe to show as they are; anything else shows a generic text. */
const ERROR_TEXT: Readonly<Record<string, string>> = {
  invalid_request: 'The request was not valid.',
  invalid_client: 'The application is not known to this server.',
  invalid_redirect_uri: 'The redirect address is not registered for this application.',
  invalid_scope: 'The application asked for a scope it may not have.',
  unauthorized_client: 'The application may not do this.',
  access_denied: 'Access was denied.',
  login_required: 'You need to log in.',
  invalid_grant: 'The grant is not valid or has expired.',
  server_error: 'Something went wrong on the server.',
  session_not_found: 'Your login session was not found; it may have expired. Start again from the application.',
};

/** oidc-provider's `renderError(ctx, out, error)`: the error code and description, escaped; never a stack. */
export function renderProviderError(ctx: PageContext, out: Record<string, unknown>, _error?: unknown): Promise<void> {
  const code = typeof out.error === 'string' ? out.error : 'server_error';
  const description = typeof out.error_description === 'string' ? out.error_description : (ERROR_TEXT[code] ?? 'The request could not be completed.');
  const body = `<p class="error">${escapeHtml(description)}</p>
<dl class="details"><dt>Error</dt><dd>${escapeHtml(code)}</dd></dl>
<p class="muted">Go back to the application and start again. If this keeps happening, tell your administrator.</p>`;
  sendProviderPage(ctx, renderPage({ title: 'Something went wrong', body }));
  return Promise.resolve();
}

/** `features.rpInitiatedLogout.logoutSource(ctx, form)`: confirm logging out. `form` is oidc-provider's (id op.logoutForm). */
export function logoutSource(ctx: PageContext, form: string): Promise<void> {
  const host = typeof ctx.host === 'string' && ctx.host !== '' ? ctx.host : 'this server';
  const body = `${form}
<p>Do you want to log out of ${escapeHtml(host)}?</p>
<button class="primary" type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Log out</button>
<button class="secondary" type="submit" form="op.logoutForm">Stay logged in</button>`;
  sendProviderPage(ctx, renderPage({ title: 'Log out', body }));
  return Promise.resolve();
}

/** `features.rpInitiatedLogout.postLogoutSuccessSource(ctx)`. */
export function postLogoutSuccessSource(ctx: PageContext): Promise<void> {
  sendProviderPage(ctx, renderPage({ title: 'Logged out', body: '<p>You are logged out. You can close this page.</p>' }));
  return Promise.resolve();
}

/** `features.deviceFlow.userCodeInputSource(ctx, form, out, err)`: enter the code the device shows. */
export function userCodeInputSource(ctx: PageContext, form: string, _out?: unknown, err?: unknown): Promise<void> {
  const e = err as { name?: unknown; userCode?: unknown } | undefined;
  let message: string;
  if (e !== undefined && e !== null && (e.userCode !== undefined || e.name === 'NoCodeError')) message = '<p class="error">That code is not valid. Check it and try again.</p>';
  else if (e !== undefined && e !== null && e.name === 'AbortedError') message = '<p class="error">The login was cancelled.</p>';
  else if (e !== undefined && e !== null) message = '<p class="error">The code could not be checked. Try again.</p>';
  else message = '<p>Enter the code shown on your device.</p>';
  const body = `${message}
${withoutInlineHandlers(form)}
<button class="primary" type="submit" form="op.deviceInputForm">Continue</button>`;
  sendProviderPage(ctx, renderPage({ title: 'Log in a device', body }));
  return Promise.resolve();
}

/** `features.deviceFlow.userCodeConfirmSource(ctx, form, client, deviceInfo, userCode)`. */
export function userCodeConfirmSource(ctx: PageContext, form: string, client: { clientId?: string; clientName?: string } | undefined, deviceInfo: unknown, userCode: string): Promise<void> {
  const name = client?.clientName ?? client?.clientId ?? clientDisplay(ctx) ?? 'an application';
  const info = (deviceInfo ?? {}) as { ip?: unknown; ua?: unknown };
  const details = [
    typeof info.ip === 'string' ? `<dt>Requested from</dt><dd>${escapeHtml(info.ip)}</dd>` : '',
    typeof info.ua === 'string' ? `<dt>Program</dt><dd>${escapeHtml(info.ua.slice(0, 200))}</dd>` : '',
  ].join('');
  const body = `<p>Log in <strong>${escapeHtml(name)}</strong> on a device. Continue only if your device shows this code:</p>
<code class="user-code">${escapeHtml(userCode)}</code>
${details === '' ? '' : `<dl class="details">${details}</dl>`}
${withoutInlineHandlers(form)}
<button class="primary" type="submit" form="op.deviceConfirmForm" autofocus>Continue</button>
<button class="link" type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Cancel: I did not start this</button>`;
  sendProviderPage(ctx, renderPage({ title: 'Confirm the device', body }));
  return Promise.resolve();
}

/** `features.deviceFlow.successSource(ctx)`. */
export function successSource(ctx: PageContext): Promise<void> {
  const name = clientDisplay(ctx);
  const body = `<p>The device is logged in${name === undefined ? '' : ` to <strong>${escapeHtml(name)}</strong>`}. You can close this page.</p>`;
  sendProviderPage(ctx, renderPage({ title: 'Device logged in', body }));
  return Promise.resolve();
}
