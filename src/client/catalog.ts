/**
 * The service catalog as this user on this device sees it: `GET /api/v1/me/services?device=<id>` with the
 * login session (refreshed under the session lock when due), checked field by field, and turned into what
 * the local proxy (startClientProxy) needs. Logged-in users need no services.yaml any more.
 *
 * The catalog never carries a service's backend addresses (they are the private network's business):
 * what the local proxy needs is `proxy.mode` (chain or tcp) and, for `httpConnect` services, the allow
 * patterns it may CONNECT to. proxyInputFor builds a ServiceSpec from that; in TCP mode its
 * `backend.target` is the service's own domain:port (the access tier dials the real target), which only
 * narrows the names the TCP listener accepts in an HTTP Host header (LP-02).
 */
import { CausewayError, UserError } from '../lib/errors.ts';
import { canonicalHostname } from '../lib/net/target.ts';
import { connectionError, notLoggedIn } from '../lib/session/index.ts';
import type { FetchLike, Session } from '../lib/session/index.ts';
import type { ServiceSpec } from '../lib/spec/index.ts';
import type { CatalogAllowPattern, CatalogEntry } from '../lib/catalog.ts';

export type { CatalogAccess, CatalogAllowPattern, CatalogEntry, CatalogServiceType } from '../lib/catalog.ts';

/**
 * What fetchCatalog needs. A DeviceContext (src/client/device.ts) fits: `session` gives a fresh session,
 * `fetchFor` a fetch trusting its CA, `files.readState()` this machine's device at that server.
 */
export interface CatalogContext {
  session: () => Promise<Session>;
  fetchFor: (caPem: string | undefined) => FetchLike;
  files: { readState: () => Promise<{ id: string; server: string } | undefined> };
}

const MAX_TEXT = 600;
const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,252}$/;

/** The catalog for this user and device, in the server's order (by name). */
export async function fetchCatalog(ctx: CatalogContext): Promise<CatalogEntry[]> {
  const session = await ctx.session();
  const state = await ctx.files.readState();
  if (state === undefined || state.server !== session.server) {
    throw new UserError('DEVICE_NOT_REGISTERED', `This machine has no device registered at ${session.server}. Run \`causeway login\` to register it, then retry.`);
  }
  const url = `${session.server}/api/v1/me/services?device=${encodeURIComponent(state.id)}`;
  const res = await ctx
    .fetchFor(session.caPem)(url, { method: 'GET', headers: { accept: 'application/json', authorization: `Bearer ${session.accessToken}` }, redirect: 'manual' })
    .catch((err: unknown) => {
      throw connectionError(session.server, err);
    });
  const text = await res.text();
  if (res.status === 401) throw notLoggedIn(session.server);
  const json = parseJson(text);
  if (res.status === 404) {
    throw new UserError('DEVICE_NOT_REGISTERED', `${session.server} does not know this machine's device (unregistered?). Run \`causeway login\` to register it again.`);
  }
  if (res.status !== 200) {
    const error = isRecord(json) && isRecord(json.error) ? json.error : {};
    const code = typeof error.code === 'string' ? printable(error.code, 80) : `HTTP_${res.status}`;
    const message = typeof error.message === 'string' ? printable(error.message) : `HTTP ${res.status}`;
    if (res.status === 403) throw new UserError(code, `The service catalog was refused: ${message}`);
    throw new CausewayError(code, `Fetching the service catalog failed (HTTP ${res.status}): ${message}`, { retryable: res.status >= 500 });
  }
  return parseCatalog(json);
}

/** Checks a catalog answer ({ services: [...] }); anything malformed is an error naming the entry. */
export function parseCatalog(json: unknown): CatalogEntry[] {
  if (!isRecord(json) || !Array.isArray(json.services)) throw badAnswer('it has no services list');
  return json.services.map((raw, index) => parseEntry(raw, index));
}

/** What startClientProxy needs for this entry: a ServiceSpec and the access tier address to dial (the first listed). */
export function proxyInputFor(entry: CatalogEntry): { service: ServiceSpec; accessTierAddress: string } {
  const tier = entry.accessTiers[0];
  if (tier === undefined) {
    throw new UserError('NO_ACCESS_TIER', `Service "${entry.name}" has no access tier to reach it through. Ask your administrator to add one to its cluster.`);
  }
  const backend: ServiceSpec['spec']['backend'] =
    entry.proxy.mode === 'tcp'
      ? { target: `${entry.domain}:${entry.port}` }
      : entry.type === 'tcp'
        ? { httpConnect: true, allowPatterns: (entry.proxy.allowPatterns ?? []).map((p) => ({ ...p })) }
        : {};
  const service: ServiceSpec = {
    apiVersion: 'causeway/v1',
    kind: 'Service',
    metadata: { name: entry.name, ...(entry.description === undefined ? {} : { description: entry.description }), ...(entry.link === undefined ? {} : { link: entry.link }) },
    spec: {
      type: entry.type,
      cluster: 'catalog',
      accessTier: tier.name,
      domain: entry.domain,
      port: entry.port,
      showInCatalog: true,
      autorun: entry.autorun,
      backend,
      client: { ...entry.client },
      ...(entry.kubernetes === null ? {} : { kubernetes: { ...entry.kubernetes } }),
    },
  };
  return { service, accessTierAddress: tier.address };
}

/** The entry named `name`; UNKNOWN_SERVICE listing the known names otherwise. */
export function findEntry<T extends CatalogEntry>(entries: T[], name: string): T {
  const entry = entries.find((e) => e.name === name);
  if (entry !== undefined) return entry;
  const known = entries.map((e) => e.name).sort();
  throw new UserError(
    'UNKNOWN_SERVICE',
    `No service named "${printable(name, 80)}" in your catalog. ${known.length === 0 ? 'It lists no services.' : `Known services: ${known.join(', ')}.`}`,
  );
}

// --- parsing --------------------------------------------------------------------------------------

function parseEntry(raw: unknown, index: number): CatalogEntry {
  const where = `services[${index}]`;
  if (!isRecord(raw)) throw badAnswer(`${where} is not an object`);
  const name = str(raw.name, `${where}.name`);
  const at = `service "${printable(name, 80)}"`;
  const type = raw.type;
  if (type !== 'kubernetes' && type !== 'tcp') throw badAnswer(`${at}: type is not kubernetes or tcp`);
  const client = isRecord(raw.client) ? raw.client : undefined;
  if (client === undefined) throw badAnswer(`${at}: client is missing`);
  const tiers = Array.isArray(raw.accessTiers) ? raw.accessTiers : undefined;
  if (tiers === undefined) throw badAnswer(`${at}: accessTiers is missing`);
  const access = isRecord(raw.access) ? raw.access : undefined;
  if (access === undefined) throw badAnswer(`${at}: access is missing`);
  const proxy = isRecord(raw.proxy) ? raw.proxy : undefined;
  const mode = proxy?.mode === 'tcp' ? 'tcp' : 'chain';
  let kubernetes: CatalogEntry['kubernetes'] = null;
  if (raw.kubernetes !== null && raw.kubernetes !== undefined) {
    if (!isRecord(raw.kubernetes)) throw badAnswer(`${at}: kubernetes is not an object`);
    const k = raw.kubernetes;
    const clusterName = str(k.clusterName, `${at}: kubernetes.clusterName`);
    // The spec's rule, checked again: the name becomes kubeconfig entry names and an argument of the exec plugin.
    if (!CLUSTER_NAME.test(clusterName)) throw badAnswer(`${at}: kubernetes.clusterName is not a kubeconfig cluster name`);
    kubernetes = {
      clusterName,
      caPublicKey: str(k.caPublicKey, `${at}: kubernetes.caPublicKey`, 64 * 1024),
      authentication: k.authentication === 'cluster' ? 'cluster' : 'oidc',
    };
  }
  if (type === 'kubernetes' && kubernetes === null) throw badAnswer(`${at}: a kubernetes service without its kubernetes settings`);
  const entry: CatalogEntry = {
    name,
    type,
    domain: domainOf(raw.domain, `${at}: domain`),
    port: portOf(raw.port, `${at}: port`),
    autorun: raw.autorun === true,
    client: { listenPort: portOf(client.listenPort, `${at}: client.listenPort`), allowUserOverride: client.allowUserOverride === true },
    accessTiers: tiers.map((t, i) => {
      if (!isRecord(t)) throw badAnswer(`${at}: accessTiers[${i}] is not an object`);
      return { name: str(t.name, `${at}: accessTiers[${i}].name`), address: str(t.address, `${at}: accessTiers[${i}].address`) };
    }),
    kubernetes,
    proxy: {
      mode,
      ...(proxy !== undefined && Array.isArray(proxy.allowPatterns) ? { allowPatterns: proxy.allowPatterns.map((p, i) => allowPatternOf(p, `${at}: proxy.allowPatterns[${i}]`)) } : {}),
    },
    access: {
      allowed: access.allowed === true,
      mode: typeof access.mode === 'string' ? printable(access.mode, 40) : 'enforcing',
      reasons: strings(access.reasons),
      explanation: typeof access.explanation === 'string' ? printable(access.explanation) : '',
      hints: strings(access.hints),
    },
  };
  if (typeof raw.description === 'string') entry.description = printable(raw.description);
  if (typeof raw.link === 'string') entry.link = printable(raw.link);
  return entry;
}

function allowPatternOf(raw: unknown, where: string): CatalogAllowPattern {
  if (!isRecord(raw) || !Array.isArray(raw.ports)) throw badAnswer(`${where} is not an allow pattern`);
  const ports = raw.ports.map((p) => {
    if (typeof p === 'number' || typeof p === 'string') return p;
    throw badAnswer(`${where}.ports holds something that is not a port`);
  });
  return {
    ...(Array.isArray(raw.hostnames) ? { hostnames: strings(raw.hostnames) } : {}),
    ...(Array.isArray(raw.cidrs) ? { cidrs: strings(raw.cidrs) } : {}),
    ports,
  };
}

function badAnswer(what: string): CausewayError {
  return new CausewayError('CATALOG_INVALID', `The control plane's service catalog is malformed (${what}). Is the control plane up to date?`);
}

function str(value: unknown, where: string, max = 1024): string {
  if (typeof value !== 'string' || value === '' || value.length > max) throw badAnswer(`${where} is not a string`);
  return value;
}

/** A DNS name, as the spec requires: it becomes the kubeconfig's server URL, so no `/`, `@` or port may ride along. */
function domainOf(value: unknown, where: string): string {
  const domain = str(value, where, 253);
  if (canonicalHostname(domain) === undefined || !/^[A-Za-z0-9.-]+$/.test(domain)) throw badAnswer(`${where} is not a DNS name`);
  return domain;
}

function portOf(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) throw badAnswer(`${where} is not a port`);
  return value;
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string').map((v) => printable(v, 200)) : [];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** Server text as printed to a terminal: no control characters (escape sequences), bounded. */
function printable(value: string, max = MAX_TEXT): string {
  return value.slice(0, max).replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?');
}
