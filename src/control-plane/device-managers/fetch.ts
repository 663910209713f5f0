/**
 * The `fetch` adapters use by default: the shared trusting fetch (src/lib/net/trusting-fetch.ts),
 * so a device manager on a private CA is trusted through `caPem` alone (the process's trust store
 * and environment stay untouched). Connections are kept alive per adapter (a sync reads many pages);
 * redirects are never followed (the caller sees the 3xx); TLS 1.2 at least. The body is streamed:
 * requestJson caps it with the adapter's own limit.
 */
import { createTrustingFetch } from '../../lib/net/trusting-fetch.ts';

export interface MdmFetch {
  fetch: typeof fetch;
  /** Closes the kept-alive connections. */
  close: () => void;
}

export function createMdmFetch(options: { caPem?: string } = {}): MdmFetch {
  const trusting = createTrustingFetch({ allowHttp: true, keepAlive: true, ...(options.caPem === undefined ? {} : { caPem: options.caPem }) });
  return { fetch: trusting, close: () => trusting.close() };
}
