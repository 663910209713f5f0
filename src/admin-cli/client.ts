/**
 * The admin CLI's HTTP client: where the server is, which token to send, which CA to trust, and
 * turning API errors into messages that say what to do. It speaks only the HTTP API; nothing here
 * imports the control plane.
 *
 *   server  --server URL, else CAUSEWAY_SERVER, else the login session's server
 *   token   --token-file FILE, else CAUSEWAY_TOKEN, else the login session's access token (`causeway
 *           login`; refreshed silently when it has less than a minute left)
 *   trust   --ca-file FILE, else CAUSEWAY_CA_FILE, else the CA the login session trusted the server
 *           by, else the system's CAs (a server with a public certificate)
 *
 * An API token always wins over the login session. The session is used only for its own server: a
 * --server or CAUSEWAY_SERVER naming another one with no API token is an error, never a token sent
 * to a server it was not issued for.
 */
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import os from 'node:os';
import { CausewayError, UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { SessionStore, causewayHome, freshSession } from '../lib/session/index.ts';

export interface ConnectionFlags {
  server?: string;
  tokenFile?: string;
  caFile?: string;
}

export interface AdminIo {
  env: NodeJS.ProcessEnv;
  /** A line of normal output (stdout). */
  out: (line: string) => void;
  /** A line of diagnostics (stderr). */
  err: (line: string) => void;
  readFile: (path: string) => Promise<string>;
  readStdin: () => Promise<string>;
  /** For relative times (`--since 1h`). */
  now: () => number;
  /** Where `$CAUSEWAY_HOME` defaults from (~/.config/causeway); default os.homedir. */
  homedir?: () => string;
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

export interface ApiErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

/** An API answer that is not a success, with the server's code and details. */
export class ApiCallError extends UserError {
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(status: number, code: string, message: string, details?: Record<string, unknown>) {
    super(code, message);
    this.name = 'ApiCallError';
    this.status = status;
    this.details = details;
  }
}

const TIMEOUT_MS = 30_000;
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

const TOKEN_HINT = 'run causeway login URL, or set CAUSEWAY_TOKEN to an API token (the server wrote one to DATA/admin-token on first start), or pass --token-file FILE';
const SERVER_HINT = 'set CAUSEWAY_SERVER to the control plane\'s URL (such as https://cp.example.com:8440), or pass --server URL';
const CA_HINT = 'pass --ca-file with the server\'s CA certificate (it writes DATA/ca.crt), or set CAUSEWAY_CA_FILE';

export class ApiClient {
  readonly baseUrl: URL;
  readonly #token: string;
  readonly #caPem: string | undefined;
  /** Whether the bearer is an API token or the login session's access token (for hints). */
  readonly credential: 'token' | 'session';

  private constructor(baseUrl: URL, token: string, caPem: string | undefined, credential: 'token' | 'session') {
    this.baseUrl = baseUrl;
    this.#token = token;
    this.#caPem = caPem;
    this.credential = credential;
  }

  static async connect(flags: ConnectionFlags, io: AdminIo): Promise<ApiClient> {
    const server = flags.server ?? nonEmpty(io.env.CAUSEWAY_SERVER);
    let token: string | undefined;
    if (flags.tokenFile !== undefined) token = (await readText(io, flags.tokenFile, 'token file')).trim();
    else token = nonEmpty(io.env.CAUSEWAY_TOKEN)?.trim();
    const caFile = flags.caFile ?? nonEmpty(io.env.CAUSEWAY_CA_FILE);
    const caPem = caFile === undefined ? undefined : await readText(io, caFile, 'CA file');
    if (token === undefined && flags.tokenFile === undefined) {
      const fromSession = await ApiClient.#fromSession(server, caPem, io);
      if (fromSession !== undefined) return fromSession;
    }
    if (server === undefined) throw new UserError('NO_SERVER', `Which control plane? ${SERVER_HINT}.`);
    const url = parseServer(server);
    if (token === undefined || token === '') throw new UserError('NO_TOKEN', `No API token: ${TOKEN_HINT}.`);
    if (/[\r\n\s]/.test(token)) throw new UserError('BAD_TOKEN', `The API token contains whitespace; ${TOKEN_HINT}.`);
    return new ApiClient(url, token, caPem, 'token');
  }

  /** A client on the login session, when there is one for this server; undefined when there is none at all. */
  static async #fromSession(server: string | undefined, caPem: string | undefined, io: AdminIo): Promise<ApiClient | undefined> {
    const store = new SessionStore({ home: causewayHome(io.env, (io.homedir ?? os.homedir)()) });
    const existing = await store.read();
    if (existing === undefined) return undefined;
    if (server !== undefined && parseServer(server).origin !== new URL(existing.server).origin) {
      throw new UserError('NO_TOKEN', `No API token for ${parseServer(server).origin}, and the login session is for ${existing.server}: run causeway login ${parseServer(server).origin}, or set CAUSEWAY_TOKEN (or pass --token-file FILE).`);
    }
    const session = await freshSession(store, { clock: { now: io.now } });
    return new ApiClient(new URL(session.server), session.accessToken, caPem ?? session.caPem, 'session');
  }

  /** A JSON (or YAML text) request; any non-2xx answer is thrown as ApiCallError. */
  async call<T>(method: string, path: string, options: { json?: unknown; yaml?: string; headers?: Record<string, string> } = {}): Promise<T> {
    const response = await this.request(method, path, options);
    if (response.status >= 200 && response.status < 300) return response.body as T;
    throw this.#error(response);
  }

  request(method: string, path: string, options: { json?: unknown; yaml?: string; headers?: Record<string, string> } = {}): Promise<ApiResponse> {
    const target = new URL(path, this.baseUrl);
    const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${this.#token}`, ...options.headers };
    let payload: Buffer | undefined;
    if (options.json !== undefined) {
      payload = Buffer.from(JSON.stringify(options.json), 'utf8');
      headers['content-type'] = 'application/json';
    } else if (options.yaml !== undefined) {
      payload = Buffer.from(options.yaml, 'utf8');
      headers['content-type'] = 'application/yaml';
    }
    if (payload !== undefined) headers['content-length'] = String(payload.length);
    return new Promise<ApiResponse>((resolve, reject) => {
      const onResponse = (res: IncomingMessage): void => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new CausewayError('RESPONSE_TOO_LARGE', 'the server sent more than 64 MiB'));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          if ((res.headers['content-type'] ?? '').includes('json') && text !== '') {
            try {
              body = JSON.parse(text);
            } catch {
              body = text;
            }
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on('error', reject);
      };
      const common = { method, headers, timeout: TIMEOUT_MS, agent: false as const };
      const req = target.protocol === 'https:'
        ? httpsRequest(target, { ...common, minVersion: 'TLSv1.2', ...(this.#caPem === undefined ? {} : { ca: this.#caPem }) }, onResponse)
        : httpRequest(target, common, onResponse);
      req.on('timeout', () => req.destroy(new CausewayError('TIMEOUT', `no answer from ${this.baseUrl.origin} within ${TIMEOUT_MS / 1000} s`, { retryable: true })));
      req.on('error', (err) => reject(this.#connectionError(err)));
      req.end(payload);
    });
  }

  #connectionError(err: unknown): Error {
    if (err instanceof CausewayError) return err;
    const code = errorCode(err) ?? '';
    const where = this.baseUrl.origin;
    if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET'].includes(code)) {
      return new UserError('SERVER_UNREACHABLE', `Cannot reach the control plane at ${where} (${code}). Is \`causeway server\` running there? Check --server or CAUSEWAY_SERVER.`, { cause: err });
    }
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|UNABLE_TO_GET_ISSUER/.test(code)) {
      return new UserError('SERVER_UNTRUSTED', `The control plane at ${where} presented a certificate this machine does not trust (${code}): ${CA_HINT}. If you did, check that the URL's host is one the server's certificate names (--public-url).`, { cause: err });
    }
    if (code === 'EPROTO' || code.startsWith('ERR_SSL')) {
      return new UserError('SERVER_TLS', `TLS with ${where} failed (${code}). Is it a Causeway server, and does the URL start with https://?`, { cause: err });
    }
    return new CausewayError('REQUEST_FAILED', `The request to ${where} failed: ${errorMessage(err)}`, { cause: err, retryable: true });
  }

  #error(response: ApiResponse): Error {
    const error = apiError(response.body);
    const code = error?.code ?? `HTTP_${response.status}`;
    const message = error?.message ?? (typeof response.body === 'string' && response.body !== '' ? response.body.slice(0, 300) : `the server answered ${response.status}`);
    switch (response.status) {
      case 401:
        if (this.credential === 'session') return new ApiCallError(401, code, `The server refused the login session (${message}). Run causeway login ${this.baseUrl.origin}, or set CAUSEWAY_TOKEN to an API token.`, error?.details);
        return new ApiCallError(401, code, `The server refused the API token (${message}). ${capitalise(TOKEN_HINT)}.`, error?.details);
      case 403:
        if (this.credential === 'session') return new ApiCallError(403, code, `${capitalise(message)}. Your user needs an AdminBinding that grants this (causeway whoami shows your admin scope), or use an API token with the admin scope.`, error?.details);
        return new ApiCallError(403, code, `${capitalise(message)}. Use a token with the admin scope.`, error?.details);
      case 429:
        return new ApiCallError(429, code, `${capitalise(message)}.`, error?.details);
      default:
        if (response.status >= 500) return new CausewayError(code, `The server failed: ${message}`, { retryable: response.status === 503 });
        return new ApiCallError(response.status, code, capitalise(message), error?.details);
    }
  }
}

export function apiError(body: unknown): ApiErrorBody | undefined {
  if (body === null || typeof body !== 'object' || !('error' in body)) return undefined;
  const error = body.error;
  if (error === null || typeof error !== 'object') return undefined;
  const { code, message, details } = error as Record<string, unknown>;
  if (typeof code !== 'string' || typeof message !== 'string') return undefined;
  return { code, message, ...(details !== null && typeof details === 'object' ? { details: details as Record<string, unknown> } : {}) };
}

async function readText(io: AdminIo, path: string, what: string): Promise<string> {
  try {
    return await io.readFile(path);
  } catch (err) {
    throw new UserError('FILE_UNREADABLE', `Cannot read the ${what} ${path}: ${errorCode(err) ?? errorMessage(err)}.`, { cause: err });
  }
}

function parseServer(server: string): URL {
  let url: URL;
  try {
    url = new URL(server);
  } catch (err) {
    throw new UserError('BAD_SERVER_URL', `"${server.slice(0, 200)}" is not a URL: ${SERVER_HINT}.`, { cause: err });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UserError('BAD_SERVER_URL', `the server URL must start with https:// (${SERVER_HINT})`);
  return url;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function capitalise(text: string): string {
  return text === '' ? text : text[0].toUpperCase() + text.slice(1);
}
