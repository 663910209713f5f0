/**
 * A minimal browser stand-in for login flows in unit tests: one request at a time over node:http(s)
 * (trusting given CAs), a cookie jar that honours each cookie's host and path (so cookies scoped to
 * one path, like oidc-provider's interaction cookie, are sent only where a browser would send them),
 * redirects followed by hand, and HTML forms submitted by name. No script runs; the real-browser
 * tests use Chromium (browser.ts).
 */
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface ClientResponse {
  url: string;
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  /** The absolute redirect target of a 3xx answer. */
  location?: string;
}

interface Cookie {
  name: string;
  value: string;
  host: string;
  path: string;
}

export interface FollowOptions {
  method?: 'GET' | 'POST';
  form?: Record<string, string>;
  headers?: Record<string, string>;
  /** Stop before requesting a redirect target for which this is true (e.g. a loopback callback). */
  stopAt?: (url: URL) => boolean;
  maxRedirects?: number;
}

export class CookieClient {
  readonly #ca: string[];
  readonly #cookies: Cookie[] = [];

  constructor(options: { caPems?: string[] } = {}) {
    this.#ca = options.caPems ?? [];
  }

  /** The cookies a request to `url` would carry. */
  cookiesFor(url: string): Record<string, string> {
    const u = new URL(url);
    const out: Record<string, string> = {};
    for (const c of this.#cookies) {
      if (c.host !== u.host) continue;
      if (!(u.pathname === c.path || u.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))) continue;
      out[c.name] = c.value;
    }
    return out;
  }

  /** One request; cookies are stored and sent, redirects are not followed. */
  request(url: string, options: { method?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}): Promise<ClientResponse> {
    const u = new URL(url);
    const body = options.form === undefined ? undefined : new URLSearchParams(options.form).toString();
    const cookie = Object.entries(this.cookiesFor(url))
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');
    const headers: Record<string, string> = { accept: 'text/html,application/json', ...(options.headers ?? {}) };
    if (cookie !== '') headers.cookie = cookie;
    if (body !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    const method = options.method ?? (body === undefined ? 'GET' : 'POST');
    return new Promise<ClientResponse>((resolve, reject) => {
      const onResponse = (res: IncomingMessage): void => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          this.#store(u, res.headers['set-cookie'] ?? []);
          const status = res.statusCode ?? 0;
          const location = typeof res.headers.location === 'string' ? new URL(res.headers.location, u).href : undefined;
          resolve({ url: u.href, status, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), ...(location === undefined ? {} : { location }) });
        });
      };
      const req =
        u.protocol === 'https:'
          ? httpsRequest(u, { method, headers, agent: false, ...(this.#ca.length > 0 ? { ca: this.#ca } : {}) }, onResponse)
          : httpRequest(u, { method, headers, agent: false }, onResponse);
      req.on('error', reject);
      req.end(body);
    });
  }

  /** A request and then its redirects (GET after 301/302/303), until an answer that is not a redirect or `stopAt` says stop. */
  async follow(url: string, options: FollowOptions = {}): Promise<ClientResponse> {
    let response = await this.request(url, { ...(options.method === undefined ? {} : { method: options.method }), ...(options.form === undefined ? {} : { form: options.form }), ...(options.headers === undefined ? {} : { headers: options.headers }) });
    for (let i = 0; i < (options.maxRedirects ?? 20); i++) {
      if (response.status < 300 || response.status > 399 || response.location === undefined) return response;
      if (options.stopAt?.(new URL(response.location)) === true) return response;
      response = await this.request(response.location);
    }
    throw new Error(`too many redirects, last at ${response.url}`);
  }

  /**
   * Submits the first POST form of `page` (its hidden inputs plus `fields`) and follows the answer.
   * The form's action is resolved against the page's URL.
   */
  async submitForm(page: ClientResponse, fields: Record<string, string>, options: Omit<FollowOptions, 'method' | 'form'> = {}): Promise<ClientResponse> {
    const form = /<form\b[^>]*\bmethod="post"[^>]*>([\s\S]*?)<\/form>/i.exec(page.body);
    if (form === null) throw new Error(`no POST form on ${page.url} (HTTP ${page.status}): ${page.body.slice(0, 300)}`);
    const action = /\baction="([^"]*)"/i.exec(form[0])?.[1] ?? page.url;
    const values: Record<string, string> = {};
    for (const input of form[1]?.matchAll(/<input\b[^>]*>/gi) ?? []) {
      const name = /\bname="([^"]*)"/i.exec(input[0])?.[1];
      const type = /\btype="([^"]*)"/i.exec(input[0])?.[1];
      const value = /\bvalue="([^"]*)"/i.exec(input[0])?.[1];
      if (name !== undefined && type === 'hidden' && value !== undefined) values[name] = decodeEntities(value);
    }
    return this.follow(new URL(decodeEntities(action), page.url).href, { ...options, method: 'POST', form: { ...values, ...fields } });
  }

  #store(url: URL, setCookies: string[]): void {
    for (const header of setCookies) {
      const [pair, ...attributes] = header.split(';');
      const eq = pair?.indexOf('=') ?? -1;
      if (pair === undefined || eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = false;
      for (const attribute of attributes) {
        const [k, v = ''] = attribute.split('=');
        const key = k?.trim().toLowerCase();
        if (key === 'path' && v.trim().startsWith('/')) path = v.trim();
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const index = this.#cookies.findIndex((c) => c.name === name && c.host === url.host && c.path === path);
      if (index !== -1) this.#cookies.splice(index, 1);
      if (!expired) this.#cookies.push({ name, value, host: url.host, path });
    }
  }
}

function decodeEntities(text: string): string {
  return text
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}
