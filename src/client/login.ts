/**
 * `causeway login`: the three ways to get a session from Causeway's OIDC provider (identity
 * contract), all as the public native client `causeway-cli` through openid-client over a fetch
 * that trusts the given CA (or the system's):
 *
 * - browser: authorization code + PKCE (S256) + state + nonce, redirect to a loopback listener
 *   `http://127.0.0.1:PORT/callback` (RFC 8252 §7.3), the browser opened by an injected opener, or
 *   the URL printed for the user to open; gives up after 5 minutes;
 * - device code (RFC 8628): prints the code and the verification URL, then polls;
 * - password (built-in users, scripts): the contract's password grant. A TOTP code travels with
 *   the password when given; when the server answers `totp_required` without one, the login fails
 *   with a message that says to pass --totp-stdin (its second stdin line). One request per attempt
 *   keeps a script from burning lockout counts on a prompt nobody answers.
 *
 * Nothing here reads argv, the environment or files: identity-command.ts does.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { CausewayError, UserError, errorMessage } from '../lib/errors.ts';
import { systemClock } from '../lib/clock.ts';
import type { Clock } from '../lib/clock.ts';
import { SESSION_VERSION, applyTokenAnswer, createTrustingFetch } from '../lib/session/index.ts';
import type { FetchLike, Session } from '../lib/session/index.ts';

export const CLIENT_ID = 'causeway-cli';
export const LOGIN_SCOPES = 'openid email profile groups offline_access';
export const BROWSER_TIMEOUT_MS = 5 * 60_000;

export interface LoginTarget {
  /** The control plane's URL as the user gave it. */
  server: string;
  /** The CA to trust it by (PEM); the system roots when absent. */
  caPem?: string;
}

export interface LoginDeps {
  clock?: Clock;
  /** A line for the user (stderr, so stdout stays clean for scripts). */
  say: (line: string) => void;
  /** Replaces the trusting fetch (tests). */
  fetch?: FetchLike;
}

export interface BrowserLoginOptions {
  /** Opens the URL in the user's browser; absent (or --no-browser): the URL is printed instead. */
  openBrowser?: (url: string) => Promise<void>;
  timeoutMs?: number;
  /** Aborts the wait (Ctrl-C). */
  signal?: AbortSignal;
}

/** The server URL as an https origin; anything else is refused with what to type instead. */
export function normaliseServer(server: string): string {
  let url: URL;
  try {
    url = new URL(server);
  } catch (err) {
    throw new UserError('BAD_SERVER_URL', `"${server.slice(0, 200)}" is not a URL: give the control plane's URL, such as https://cp.example.com:8440`, { cause: err });
  }
  if (url.protocol !== 'https:') throw new UserError('BAD_SERVER_URL', `the control plane's URL must start with https:// (got ${url.protocol}//)`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new UserError('BAD_SERVER_URL', `give the control plane's URL without a path, query or credentials, such as ${url.origin}`);
  }
  return url.origin;
}

interface Discovered {
  config: oidc.Configuration;
  server: string;
  fetch: FetchLike;
}

async function discover(target: LoginTarget, deps: LoginDeps): Promise<Discovered> {
  const server = normaliseServer(target.server);
  const fetchFn = deps.fetch ?? createTrustingFetch(target.caPem === undefined ? {} : { caPem: target.caPem });
  let config: oidc.Configuration;
  try {
    config = await oidc.discovery(new URL(server), CLIENT_ID, undefined, oidc.None(), { [oidc.customFetch]: fetchFn });
  } catch (err) {
    throw discoveryError(server, err);
  }
  config[oidc.customFetch] = fetchFn;
  return { config, server, fetch: fetchFn };
}

function discoveryError(server: string, err: unknown): Error {
  if (err instanceof CausewayError) return err;
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof CausewayError) return cause;
  if (err instanceof oidc.ClientError && /issuer/.test(err.message)) {
    return new UserError('ISSUER_MISMATCH', `${server} names another issuer in its discovery document; log in with the control plane's public URL exactly (its --public-url)`, { cause: err });
  }
  return new UserError('DISCOVERY_FAILED', `${server} did not answer as a Causeway control plane (no OIDC discovery at ${server}/.well-known/openid-configuration: ${errorMessage(err)})`, { cause: err });
}

function newSession(d: Discovered, target: LoginTarget, tokens: oidc.TokenEndpointResponse, clock: Clock): Session {
  const meta = d.config.serverMetadata();
  if (meta.token_endpoint === undefined) throw new CausewayError('DISCOVERY_FAILED', `${d.server}'s discovery document has no token endpoint`);
  return applyTokenAnswer(
    {
      version: SESSION_VERSION,
      server: d.server,
      issuer: meta.issuer,
      clientId: CLIENT_ID,
      ...(target.caPem === undefined ? {} : { caPem: target.caPem }),
      tokenEndpoint: meta.token_endpoint,
      ...(meta.revocation_endpoint === undefined ? {} : { revocationEndpoint: meta.revocation_endpoint }),
      kubeTokens: {},
      loggedInAt: new Date(clock.now()).toISOString(),
    },
    tokens,
    clock.now(),
  );
}

/** An OAuth refusal from openid-client as a message that says what to do; other errors pass through. */
function grantError(err: unknown, what: string): Error {
  if (err instanceof oidc.ResponseBodyError) {
    const description = err.error_description ?? '';
    if (err.status === 429 || err.error === 'rate_limited') return new UserError('RATE_LIMITED', `too many login attempts; wait a minute and try again (${description || err.error})`, { cause: err });
    if (err.error === 'unsupported_grant_type' || err.error === 'unauthorized_client') return new UserError('LOGIN_UNSUPPORTED', `the server does not offer ${what} login (${err.error}); try another way to log in`, { cause: err });
    return new UserError('LOGIN_REFUSED', `login refused: ${description || err.error}`, { cause: err });
  }
  if (err instanceof oidc.AuthorizationResponseError) return new UserError('LOGIN_REFUSED', `login refused: ${err.error_description ?? err.error}`, { cause: err });
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof CausewayError) return cause;
  return err instanceof Error ? err : new Error(String(err));
}

export interface PasswordLogin {
  user: string;
  password: string;
  totp?: string;
}

export async function passwordLogin(target: LoginTarget, credentials: PasswordLogin, deps: LoginDeps): Promise<Session> {
  const d = await discover(target, deps);
  const params: Record<string, string> = { username: credentials.user, password: credentials.password, scope: LOGIN_SCOPES };
  if (credentials.totp !== undefined) params.totp = credentials.totp;
  let tokens: oidc.TokenEndpointResponse;
  try {
    tokens = await oidc.genericGrantRequest(d.config, 'password', params);
  } catch (err) {
    if (err instanceof oidc.ResponseBodyError && /totp_required/.test(err.error_description ?? '')) {
      throw new UserError('TOTP_REQUIRED', 'this user needs a TOTP code: pass --totp-stdin and put the code on the second line of standard input, after the password', { cause: err });
    }
    throw grantError(err, 'password');
  }
  return newSession(d, target, tokens, deps.clock ?? systemClock);
}

export interface DeviceLoginOptions {
  signal?: AbortSignal;
}

export async function deviceLogin(target: LoginTarget, deps: LoginDeps, options: DeviceLoginOptions = {}): Promise<Session> {
  const d = await discover(target, deps);
  let started: oidc.DeviceAuthorizationResponse;
  try {
    started = await oidc.initiateDeviceAuthorization(d.config, { scope: LOGIN_SCOPES });
  } catch (err) {
    throw grantError(err, 'device-code');
  }
  deps.say(`To log in, open ${started.verification_uri} in a browser and enter the code ${started.user_code}`);
  if (started.verification_uri_complete !== undefined) deps.say(`(or open ${started.verification_uri_complete})`);
  deps.say(`Waiting for you to finish (the code expires in ${Math.round(started.expires_in / 60)} minutes)...`);
  let tokens: oidc.TokenEndpointResponse;
  try {
    tokens = await oidc.pollDeviceAuthorizationGrant(d.config, started, undefined, options.signal === undefined ? {} : { signal: options.signal });
  } catch (err) {
    if (err instanceof oidc.ResponseBodyError && err.error === 'expired_token') throw new UserError('LOGIN_EXPIRED', 'the code expired before the login was finished; run causeway login --device-code again', { cause: err });
    if (err instanceof oidc.ResponseBodyError && err.error === 'access_denied') throw new UserError('LOGIN_REFUSED', 'the login was denied on the device page', { cause: err });
    throw grantError(err, 'device-code');
  }
  return newSession(d, target, tokens, deps.clock ?? systemClock);
}

const SUCCESS_PAGE = '<!doctype html><html><head><meta charset="utf-8"><title>Causeway</title></head><body><p>Logged in to Causeway. You can close this tab.</p></body></html>';
const FAILURE_PAGE = '<!doctype html><html><head><meta charset="utf-8"><title>Causeway</title></head><body><p>The login did not complete. Return to the terminal for details.</p></body></html>';

function page(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': "default-src 'none'", 'referrer-policy': 'no-referrer', connection: 'close' });
  res.end(html);
}

export async function browserLogin(target: LoginTarget, deps: LoginDeps, options: BrowserLoginOptions = {}): Promise<Session> {
  const d = await discover(target, deps);
  const verifier = oidc.randomPKCECodeVerifier();
  const challenge = await oidc.calculatePKCECodeChallenge(verifier);
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();

  let onCallback: (url: URL, res: ServerResponse) => void = () => undefined;
  const listener = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${(listener.address() as AddressInfo).port}`);
    if (req.method !== 'GET' || url.pathname !== '/callback') {
      res.writeHead(404, { connection: 'close' }).end();
      return;
    }
    onCallback(url, res);
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (listener.address() as AddressInfo).port;
  const redirectUri = `http://127.0.0.1:${port}/callback`;
  try {
    const authUrl = oidc.buildAuthorizationUrl(d.config, {
      redirect_uri: redirectUri,
      scope: LOGIN_SCOPES,
      response_type: 'code',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      // OIDC drops offline_access (no refresh token) unless consent is prompted for; Causeway's
      // provider shows no consent page for its own CLI, so this costs the user nothing.
      prompt: 'consent',
      state,
      nonce,
    });
    const timeoutMs = options.timeoutMs ?? BROWSER_TIMEOUT_MS;
    const callback = new Promise<URL>((resolve, reject) => {
      const timer = setTimeout(() => reject(new UserError('LOGIN_TIMEOUT', `no login within ${Math.round(timeoutMs / 60_000)} minutes; run causeway login again (or use --device-code on a machine without a browser)`)), timeoutMs);
      const aborted = (): void => {
        clearTimeout(timer);
        reject(new UserError('LOGIN_ABORTED', 'login aborted'));
      };
      options.signal?.addEventListener('abort', aborted, { once: true });
      onCallback = (url, res) => {
        // Only the answer to this request counts; anything else (a stray or forged hit) is turned away.
        if (url.searchParams.get('state') !== state) {
          page(res, 400, FAILURE_PAGE);
          return;
        }
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', aborted);
        onCallback = (_u, r) => page(r, 410, FAILURE_PAGE);
        if (url.searchParams.has('error')) page(res, 400, FAILURE_PAGE);
        else page(res, 200, SUCCESS_PAGE);
        resolve(url);
      };
    });
    callback.catch(() => undefined);
    let opened = false;
    if (options.openBrowser !== undefined) {
      try {
        await options.openBrowser(authUrl.href);
        opened = true;
      } catch {
        opened = false;
      }
    }
    deps.say(opened ? `Opened a browser to log in to ${d.server}. If it did not open, visit:` : `To log in to ${d.server}, open this URL in a browser on this machine:`);
    deps.say(authUrl.href);
    const url = await callback;
    let tokens: oidc.TokenEndpointResponse;
    try {
      tokens = await oidc.authorizationCodeGrant(d.config, url, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true }, { redirect_uri: redirectUri });
    } catch (err) {
      throw grantError(err, 'browser');
    }
    return newSession(d, target, tokens, deps.clock ?? systemClock);
  } finally {
    listener.closeAllConnections();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  }
}
