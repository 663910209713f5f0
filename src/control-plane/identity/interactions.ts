/**
 * The login page of Causeway's OIDC provider (oidc-provider "interactions"): when a login is needed,
 * the provider sends the browser to `/oidc/interaction/<uid>`, where the person either types a
 * built-in user's name, password and TOTP code, or picks one of the org's identity providers (a link
 * to `/oidc/upstream/<name>/start?uid=<uid>`, upstream.ts).
 *
 *   GET  /oidc/interaction/:uid         the login page
 *   POST /oidc/interaction/:uid/login   the form (application/x-www-form-urlencoded, at most 16 KiB)
 *   POST /oidc/interaction/:uid/abort   cancel: the application gets `access_denied`
 *   GET  /oidc/assets/causeway.css      the stylesheet of every page (pages.ts)
 *
 * CSRF (CP-06): both POSTs need an `Origin` header equal to this server's origin (the issuer's);
 * a missing or foreign one is refused with 403 before anything is read or checked. The provider's
 * interaction cookie (SameSite=Lax, bound to this uid's path) must come along too.
 *
 * Failed logins re-render the form with one terse message: 401 (wrong credentials, TOTP needed or
 * wrong), 423 (account locked), 429 with Retry-After (too many failures from this address). The
 * directory does the counting, locking and audit (directory.ts). Every page carries PAGE_HEADERS.
 *
 * Consent is given automatically for first-party clients by the provider's `loadExistingGrant`, so a
 * consent prompt should never arrive here; if one does, it is finished with a grant of what was asked
 * for first-party clients only, and refused for any other.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type Provider from 'oidc-provider';
import type { InteractionResults } from 'oidc-provider';
import { errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Directory, LoginResult } from './directory.ts';
import { escapeHtml, PAGE_HEADERS, renderPage, STYLESHEET, STYLESHEET_PATH } from './pages.ts';

export interface UpstreamList {
  list(): Promise<Array<{ name: string; displayName: string }>>;
}

export interface InteractionDeps {
  provider: Provider;
  directory: Directory;
  upstreams: UpstreamList;
  logger: Logger;
  /** Clients whose consent may be given without asking (should a consent prompt arrive). Default `causeway-cli`. */
  firstPartyClients?: readonly string[];
}

export const FORM_BODY_LIMIT = 16 * 1024;
const FORM_TYPE = 'application/x-www-form-urlencoded';
const MAX_FIELD = 4096;

const STATUS_BY_FAILURE: Readonly<Record<string, number>> = {
  'invalid-credentials': 401,
  'totp-required': 401,
  'totp-invalid': 401,
  locked: 423,
  'rate-limited': 429,
};

type FormBody = Record<string, string>;

function parseForm(text: string): FormBody {
  const out: FormBody = {};
  for (const [key, value] of new URLSearchParams(text)) {
    if (!(key in out)) out[key] = value.slice(0, MAX_FIELD);
  }
  return out;
}

function sendPage(reply: FastifyReply, status: number, title: string, body: string): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(renderPage({ title, body }));
}

function sendMessage(reply: FastifyReply, status: number, title: string, message: string): FastifyReply {
  return sendPage(reply, status, title, `<p class="error">${escapeHtml(message)}</p>
<p class="muted">Go back to the application and start the login again.</p>`);
}

interface LoginView {
  uid: string;
  clientName: string;
  name: string;
  error?: string;
  askTotp: boolean;
  upstreams: Array<{ name: string; displayName: string }>;
}

function loginBody(view: LoginView): string {
  const uid = encodeURIComponent(view.uid);
  const error = view.error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(view.error)}</p>\n`;
  const idps = view.upstreams.map((u) => `<a class="button" href="/oidc/upstream/${escapeHtml(encodeURIComponent(u.name))}/start?uid=${escapeHtml(uid)}">Log in with ${escapeHtml(u.displayName)}</a>`).join('\n');
  const divider = view.upstreams.length > 0 ? '\n<p class="divider">or with a Causeway account</p>\n' : '';
  return `<p>to continue to <strong>${escapeHtml(view.clientName)}</strong></p>
${error}${idps}${divider}<form method="post" action="/oidc/interaction/${escapeHtml(uid)}/login" autocomplete="on">
<label for="name">User name</label>
<input type="text" id="name" name="name" value="${escapeHtml(view.name)}" autocomplete="username" autocapitalize="none" spellcheck="false" maxlength="256" required${view.name === '' ? ' autofocus' : ''}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" maxlength="1024" required${view.name !== '' && !view.askTotp ? ' autofocus' : ''}>
<label for="totp">TOTP code${view.askTotp ? '' : ' (if you have one)'}</label>
<input type="text" id="totp" name="totp" inputmode="numeric" pattern="[0-9 ]*" maxlength="8" autocomplete="one-time-code"${view.askTotp ? ' required autofocus' : ''}>
<button class="primary" type="submit">Log in</button>
</form>
<form method="post" action="/oidc/interaction/${escapeHtml(uid)}/abort">
<button class="link" type="submit">Cancel</button>
</form>`;
}

export async function interactionRoutes(app: FastifyInstance, deps: InteractionDeps): Promise<void> {
  const { provider, directory, upstreams, logger } = deps;
  const firstParty = new Set(deps.firstPartyClients ?? ['causeway-cli']);
  const origin = new URL(provider.issuer).origin;

  async function listUpstreams(): Promise<Array<{ name: string; displayName: string }>> {
    try {
      return await upstreams.list();
    } catch (err) {
      logger.error({ err: errorMessage(err) }, 'the identity providers could not be listed; the login page shows none');
      return [];
    }
  }

  async function clientName(clientId: unknown): Promise<string> {
    if (typeof clientId !== 'string') return 'an application';
    try {
      const client = await provider.Client.find(clientId);
      return client?.clientName ?? clientId;
    } catch {
      return clientId;
    }
  }

  /** The interaction of this browser for `uid`, or undefined (expired, unknown, or another uid's cookie). */
  async function details(request: FastifyRequest<{ Params: { uid: string } }>, reply: FastifyReply): Promise<Awaited<ReturnType<Provider['interactionDetails']>> | undefined> {
    try {
      const found = await provider.interactionDetails(request.raw, reply.raw);
      return found.uid === request.params.uid ? found : undefined;
    } catch {
      return undefined;
    }
  }

  function expired(reply: FastifyReply): FastifyReply {
    return sendMessage(reply, 400, 'Login expired', 'This login has expired or was started in another browser.');
  }

  function sameOrigin(request: FastifyRequest): boolean {
    const given = request.headers.origin;
    return typeof given === 'string' && given === origin;
  }

  async function finish(request: FastifyRequest, reply: FastifyReply, result: InteractionResults): Promise<void> {
    void reply.hijack();
    try {
      await provider.interactionFinished(request.raw, reply.raw, result, { mergeWithLastSubmission: false });
    } catch (err) {
      logger.error({ err: errorMessage(err) }, 'the login could not be finished');
      if (!reply.raw.headersSent) {
        reply.raw.writeHead(400, { ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8' });
        reply.raw.end(renderPage({ title: 'Login expired', body: '<p class="error">This login has expired or was started in another browser.</p>' }));
      } else {
        reply.raw.end();
      }
    }
  }

  /** A consent prompt (normally given by loadExistingGrant): granted as asked for first-party clients only. */
  async function consent(request: FastifyRequest, reply: FastifyReply, interaction: NonNullable<Awaited<ReturnType<typeof details>>>): Promise<void> {
    const clientId = typeof interaction.params.client_id === 'string' ? interaction.params.client_id : '';
    const accountId = interaction.session?.accountId;
    if (!firstParty.has(clientId) || accountId === undefined) {
      await finish(request, reply, { error: 'access_denied', error_description: 'this application is not allowed to sign you in here' });
      return;
    }
    const grant = interaction.grantId === undefined ? new provider.Grant({ accountId, clientId }) : ((await provider.Grant.find(interaction.grantId)) ?? new provider.Grant({ accountId, clientId }));
    const missing = interaction.prompt.details as { missingOIDCScope?: unknown; missingOIDCClaims?: unknown; missingResourceScopes?: unknown };
    if (Array.isArray(missing.missingOIDCScope)) grant.addOIDCScope((missing.missingOIDCScope as unknown[]).filter((s): s is string => typeof s === 'string'));
    if (Array.isArray(missing.missingOIDCClaims)) grant.addOIDCClaims((missing.missingOIDCClaims as unknown[]).filter((s): s is string => typeof s === 'string'));
    if (missing.missingResourceScopes !== null && typeof missing.missingResourceScopes === 'object') {
      for (const [resource, scopes] of Object.entries(missing.missingResourceScopes as Record<string, unknown>)) {
        if (Array.isArray(scopes)) grant.addResourceScope(resource, scopes.filter((s): s is string => typeof s === 'string').join(' '));
      }
    }
    const grantId = await grant.save();
    await finish(request, reply, { consent: { grantId } });
  }

  await app.register((scope, _options, registered) => {
    scope.addContentTypeParser(FORM_TYPE, { parseAs: 'string', bodyLimit: FORM_BODY_LIMIT }, (_request, body, done) => {
      done(null, parseForm(typeof body === 'string' ? body : body.toString('utf8')));
    });

    scope.setErrorHandler((err: { statusCode?: number; code?: string }, request, reply) => {
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      if (status === 500) request.log.error({ err: errorMessage(err) }, 'login page error');
      const message = status === 413 ? 'The form is too large.' : status === 415 ? 'The form must be sent as application/x-www-form-urlencoded.' : status === 500 ? 'Something went wrong on the server.' : 'The request was not valid.';
      return sendMessage(reply, status, 'Login failed', message);
    });

    scope.get(STYLESHEET_PATH, { config: { access: 'public' } }, (_request, reply) => {
      void reply.header('cache-control', 'public, max-age=3600').header('x-content-type-options', 'nosniff').type('text/css; charset=utf-8').send(STYLESHEET);
    });

    scope.get<{ Params: { uid: string } }>('/oidc/interaction/:uid', { config: { access: 'public' } }, async (request, reply) => {
      const interaction = await details(request, reply);
      if (interaction === undefined) return expired(reply);
      if (interaction.prompt.name === 'consent') {
        await consent(request, reply, interaction);
        return reply;
      }
      if (interaction.prompt.name !== 'login') return sendMessage(reply, 400, 'Login failed', 'This login step is not supported.');
      const hint = typeof interaction.params.login_hint === 'string' ? interaction.params.login_hint.slice(0, 256) : '';
      const body = loginBody({ uid: interaction.uid, clientName: await clientName(interaction.params.client_id), name: hint, askTotp: false, upstreams: await listUpstreams() });
      return sendPage(reply, 200, 'Log in', body);
    });

    scope.post<{ Params: { uid: string }; Body: FormBody }>('/oidc/interaction/:uid/login', { config: { access: 'public' }, bodyLimit: FORM_BODY_LIMIT }, async (request, reply) => {
      if (!sameOrigin(request)) return sendMessage(reply, 403, 'Login refused', 'This form must be sent from this server’s own login page.');
      if (request.headers['content-type']?.split(';')[0]?.trim().toLowerCase() !== FORM_TYPE) return sendMessage(reply, 415, 'Login failed', 'The form must be sent as application/x-www-form-urlencoded.');
      const interaction = await details(request, reply);
      if (interaction === undefined) return expired(reply);
      if (interaction.prompt.name !== 'login') return sendMessage(reply, 400, 'Login failed', 'This login step is not supported.');
      const form = request.body;
      const name = (form.name ?? '').trim();
      const result: LoginResult = await directory.authenticate({ name, password: form.password ?? '', totp: form.totp ?? '', source: request.ip });
      if (result.ok) {
        await finish(request, reply, { login: { accountId: result.user.id } });
        return reply;
      }
      if (result.retryAfterSeconds !== undefined) void reply.header('retry-after', String(result.retryAfterSeconds));
      const body = loginBody({ uid: interaction.uid, clientName: await clientName(interaction.params.client_id), name, error: result.message, askTotp: result.code === 'totp-required' || result.code === 'totp-invalid', upstreams: await listUpstreams() });
      return sendPage(reply, STATUS_BY_FAILURE[result.code] ?? 401, 'Log in', body);
    });

    scope.post<{ Params: { uid: string } }>('/oidc/interaction/:uid/abort', { config: { access: 'public' }, bodyLimit: FORM_BODY_LIMIT }, async (request, reply) => {
      if (!sameOrigin(request)) return sendMessage(reply, 403, 'Refused', 'This form must be sent from this server’s own login page.');
      const interaction = await details(request, reply);
      if (interaction === undefined) return expired(reply);
      await finish(request, reply, { error: 'access_denied', error_description: 'the user cancelled the login' });
      return reply;
    });
    registered();
  });
}
