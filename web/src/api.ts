/**
 * The console's only door to the server: same-origin fetches to /api/v1 and /console, carried by the
 * console session cookie (HttpOnly, so this code never sees it). Every write sends the session's CSRF
 * token in `X-CSRF-Token` and a JSON body with `Content-Type: application/json`; the server refuses a
 * write without both (CP-06). A 401 means the session ended: the browser goes to the login page and
 * comes back to where it was.
 */

export interface ConsoleUser {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
}

export interface ConsoleSession {
  user: ConsoleUser;
  role: 'admin' | 'viewer' | null;
  kinds: string[] | null;
  csrfToken: string;
}

/** A validation problem from a 422 SPEC_INVALID answer: `path` names the field (`spec.users.groups[0]`). */
export interface Problem {
  path: string;
  message: string;
  document?: number;
  kind?: string;
  name?: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problems: Problem[];
  readonly details: Record<string, unknown>;

  constructor(status: number, code: string, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.problems = Array.isArray(details.problems) ? (details.problems as Problem[]) : [];
  }
}

let csrfToken = '';

export function setCsrfToken(token: string): void {
  csrfToken = token;
}

/** Where the login flow starts, coming back to the page the browser is on. */
export function loginUrl(): string {
  const next = `${window.location.pathname}${window.location.search}`;
  return `/console/login?next=${encodeURIComponent(next.startsWith('/') && !next.startsWith('//') ? next : '/')}`;
}

export function goToLogin(): void {
  window.location.assign(loginUrl());
}

/** The session, or null when there is none (the caller sends the browser to the login page). */
export async function loadSession(): Promise<ConsoleSession | null> {
  const response = await fetch('/console/session', { headers: { accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' });
  if (response.status === 401) return null;
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as ConsoleSession;
}

export async function logout(): Promise<void> {
  await fetch('/console/logout', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'x-csrf-token': csrfToken, 'content-type': 'application/json' },
    body: '{}',
  });
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface RequestOptions {
  body?: unknown;
  ifMatch?: number;
  ifNoneMatch?: boolean;
  signal?: AbortSignal;
}

/** Calls `/api/v1${path}`; throws ApiError with the server's code, message and problems. */
export async function api<T>(method: Method, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = csrfToken;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (options.ifMatch !== undefined) headers['if-match'] = `"${options.ifMatch}"`;
  if (options.ifNoneMatch === true) headers['if-none-match'] = '*';
  const init: RequestInit = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (options.body !== undefined) init.body = JSON.stringify(options.body);
  if (options.signal !== undefined) init.signal = options.signal;
  const response = await fetch(`/api/v1${path}`, init);
  if (response.status === 401) {
    goToLogin();
    throw new ApiError(401, 'UNAUTHENTICATED', 'your console session has ended; log in again');
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

async function errorOf(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string; details?: Record<string, unknown> } };
    if (body.error !== undefined) {
      return new ApiError(response.status, body.error.code ?? 'ERROR', body.error.message ?? `the server answered ${response.status}`, body.error.details ?? {});
    }
  } catch {
    // Not JSON: fall through to a generic message.
  }
  return new ApiError(response.status, 'HTTP_' + String(response.status), `the server answered ${response.status} ${response.statusText}`);
}

export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** A query string from the defined, non-empty values. */
export function query(values: Record<string, string | undefined>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) if (value !== undefined && value !== '') params.set(key, value);
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
