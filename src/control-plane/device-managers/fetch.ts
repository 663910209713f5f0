/**
 * The `fetch` adapters use by default: node:http(s), so a device manager on a private CA is trusted
 * through `caPem` alone (the process's trust store and environment stay untouched). Connections are
 * kept alive per adapter (a sync reads many pages); redirects are never followed (the caller sees
 * the 3xx); TLS 1.2 at least.
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';

export interface MdmFetch {
  fetch: typeof fetch;
  /** Closes the kept-alive connections. */
  close: () => void;
}

export function createMdmFetch(options: { caPem?: string } = {}): MdmFetch {
  const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 8, minVersion: 'TLSv1.2', ...(options.caPem === undefined ? {} : { ca: options.caPem }) });
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 8 });
  const fetchFn = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : input);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return Promise.reject(new TypeError(`unsupported protocol ${url.protocol}`));
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((value, key) => {
      headers[key] = value;
    });
    const body = init?.body;
    if (body !== undefined && body !== null && typeof body !== 'string') return Promise.reject(new TypeError('createMdmFetch sends string bodies only'));
    if (typeof body === 'string') headers['content-length'] = String(Buffer.byteLength(body));
    const signal = init?.signal ?? undefined;
    return new Promise<Response>((resolve, reject) => {
      const onResponse = (res: IncomingMessage): void => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 599) {
          res.destroy();
          reject(new Error(`unexpected HTTP status ${status}`));
          return;
        }
        const responseHeaders = new Headers();
        for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
          try {
            responseHeaders.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
          } catch {
            // A header a Headers object cannot hold is one we do not read.
          }
        }
        const stream = status === 204 || status === 304 ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
        resolve(new Response(stream, { status, headers: responseHeaders }));
      };
      const common = { method: init?.method ?? 'GET', headers, signal };
      const req = url.protocol === 'https:' ? httpsRequest(url, { ...common, agent: httpsAgent }, onResponse) : httpRequest(url, { ...common, agent: httpAgent }, onResponse);
      req.on('error', reject);
      req.end(body ?? undefined);
    });
  };
  return {
    fetch: fetchFn,
    close(): void {
      httpsAgent.destroy();
      httpAgent.destroy();
    },
  };
}
