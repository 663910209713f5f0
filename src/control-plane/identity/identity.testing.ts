/**
 * For the identity tests: a control plane with the OIDC provider on a real HTTPS listener (port chosen
 * up front, so the issuer is the URL clients use), a store with users, a Directory stand-in behind the
 * real login page, the log lines, and a `fetch` over node:https that trusts exactly our CA
 * (openid-client's customFetch).
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Writable } from 'node:stream';
import type { ClientResponse, CookieClient } from '../../../test/kit/cookie-client.ts';
import type { Clock } from '../../lib/clock.ts';
import { createLogger } from '../../lib/log.ts';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { freePort } from '../../lib/tunnel/harness.testing.ts';
import { createControlPlane, issueServingCertificate } from '../server.ts';
import type { ControlPlane, ControlPlaneOptions, Listener } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store, UserRecord } from '../store/index.ts';
import type { LoginAttempt, LoginResult, PasswordDirectory } from './grants.ts';
import { createIdentity } from './index.ts';
import type { Identity, IdentityOptions } from './index.ts';
import { secretBoxFromKey } from './secret-box.ts';
import type { SecretBox } from './secret-box.ts';

export type TestFetch = (url: string | URL, init?: { method?: string; headers?: Record<string, string> | Headers | [string, string][]; body?: unknown; signal?: AbortSignal | null; redirect?: string }) => Promise<Response>;

/** A fetch over node:https trusting `caPem` only; never follows redirects. */
export function caFetch(caPem: string): TestFetch {
  return (input, init = {}) => {
    const url = new URL(input instanceof URL ? input.href : input);
    const headers = Object.fromEntries(new Headers(init.headers as ConstructorParameters<typeof Headers>[0]).entries());
    let body: Buffer | undefined;
    if (typeof init.body === 'string') body = Buffer.from(init.body);
    else if (init.body instanceof URLSearchParams) body = Buffer.from(init.body.toString());
    else if (init.body instanceof Uint8Array) body = Buffer.from(init.body);
    if (body !== undefined) headers['content-length'] = String(body.length);
    return new Promise<Response>((resolve, reject) => {
      const req = httpsRequest(url, { method: init.method ?? 'GET', headers, ca: caPem, agent: false }, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const responseHeaders = new Headers();
          for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) responseHeaders.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
          const status = res.statusCode ?? 0;
          resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: responseHeaders }));
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  };
}

export interface TestUser {
  name: string;
  password: string;
  email?: string;
  groups?: string[];
  totp?: string;
  disabled?: boolean;
}

/** A Directory stand-in: names and passwords in memory, records in the store. */
export class FakeDirectory implements PasswordDirectory {
  readonly attempts: LoginAttempt[] = [];
  /** Sources answered `rate-limited`. */
  readonly limitedSources = new Set<string>();
  readonly #users: Map<string, TestUser>;
  readonly #store: Store;

  constructor(store: Store, users: TestUser[]) {
    this.#store = store;
    this.#users = new Map(users.map((u) => [u.name, u]));
  }

  async authenticate(attempt: LoginAttempt): Promise<LoginResult> {
    this.attempts.push(attempt);
    if (this.limitedSources.has(attempt.source)) return { ok: false, code: 'rate-limited', message: 'too many login attempts from this address', retryAfterSeconds: 30 };
    const known = this.#users.get(attempt.name);
    const user = await this.#store.getUserByName(attempt.name);
    if (known === undefined || user === undefined || user.disabled || known.password !== attempt.password) return { ok: false, code: 'invalid-credentials', message: 'invalid user name or password' };
    if (known.name === 'locked') return { ok: false, code: 'locked', message: 'account locked; try again in 15 minutes' };
    if (known.totp !== undefined && attempt.totp === undefined) return { ok: false, code: 'totp-required', message: 'a TOTP code is required' };
    if (known.totp !== undefined && attempt.totp !== known.totp) return { ok: false, code: 'totp-invalid', message: 'invalid user name or password' };
    return { ok: true, user };
  }
}

export interface IdentityHarness {
  publicUrl: string;
  caPem: string;
  /** The control plane's CA (for device certificates in tests). */
  ca: CertificateAuthority;
  store: Store;
  secretBox: SecretBox;
  identity: Identity;
  controlPlane: ControlPlane;
  listener: Listener;
  directory: FakeDirectory;
  users: Record<string, UserRecord>;
  /** Every JSON log line so far. */
  logs: string[];
  fetch: TestFetch;
  close(): Promise<void>;
}

export const TEST_USERS: TestUser[] = [
  { name: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['eng', 'platform'] },
  { name: 'bob', password: 'bob-password', email: 'bob@example.com', groups: ['eng'] },
  { name: 'carol', password: 'carol-password', totp: '123456', groups: [] },
  { name: 'locked', password: 'locked-password' },
  { name: 'dave', password: 'dave-password', email: 'dave@example.com', groups: ['ops'] },
];

export interface HarnessOptions extends Partial<Omit<IdentityOptions, 'store' | 'secretBox' | 'publicUrl' | 'directory' | 'resolveSecret'>> {
  clock?: Clock;
  /** Kubernetes services to create: cluster names. Default ['prod']. */
  clusters?: string[];
  controlPlane?: Partial<ControlPlaneOptions>;
  /** The store's URL. Default a new in-memory SQLite database. */
  storeUrl?: string;
  /** Replicas on one database share it. Default a new random key. */
  secretBox?: SecretBox;
  /** Create the test users and services. Default true (false for a second replica). */
  seed?: boolean;
}

export async function startIdentityHarness(options: HarnessOptions = {}): Promise<IdentityHarness> {
  const logs: string[] = [];
  const logger = createLogger({
    name: 'identity-test',
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs.push(chunk.toString('utf8'));
        done();
      },
    }),
  });
  const store = await openStore({ url: options.storeUrl ?? ':memory:' });
  const ca = await CertificateAuthority.create();
  const secretBox = options.secretBox ?? secretBoxFromKey(randomBytes(32));
  const users: Record<string, UserRecord> = {};
  const seed = options.seed ?? true;
  for (const u of TEST_USERS) {
    const existing = seed ? undefined : await store.getUserByName(u.name);
    users[u.name] = existing ?? (await store.createUser({ name: u.name, email: u.email ?? null, groups: u.groups ?? [], disabled: u.disabled ?? false }, { actor: 'system' }));
  }
  for (const cluster of seed ? (options.clusters ?? ['prod']) : []) {
    await store.putObject({ kind: 'Service', name: `${cluster}-k8s`, spec: { type: 'kubernetes', cluster: 'edge', accessTier: '*', domain: `${cluster}.k8s.example.com`, port: 443, kubernetes: { clusterName: cluster, caPublicKey: 'x' } } }, { actor: 'system' });
  }
  const directory = new FakeDirectory(store, TEST_USERS);
  const port = await freePort();
  const publicUrl = `https://127.0.0.1:${port}`;
  const { clusters: _clusters, controlPlane: cpOptions, storeUrl: _storeUrl, secretBox: _secretBox, seed: _seed, ...identityOptions } = options;
  const identity = await createIdentity({
    store,
    secretBox,
    publicUrl,
    directory,
    logger,
    resolveSecret: () => Promise.reject(new Error('no secrets in this test')),
    ...identityOptions,
  });
  const controlPlane = await createControlPlane({ store, ca, publicUrl, logger, identity, ...cpOptions });
  const listener = await controlPlane.listen({ host: '127.0.0.1', port, tls: await issueServingCertificate(ca, { publicUrl }) });
  return {
    publicUrl,
    caPem: ca.certPem,
    ca,
    store,
    secretBox,
    identity,
    controlPlane,
    listener,
    directory,
    users,
    logs,
    fetch: caFetch(ca.certPem),
    async close() {
      await controlPlane.close();
      await store.close();
    },
  };
}

/** Fills in and submits our login page (interactions.ts) as `user`, following redirects until `stopAt`. */
export async function submitLogin(h: IdentityHarness, browser: CookieClient, page: ClientResponse, user: { name: string; password: string; totp?: string }, stopAt?: (url: URL) => boolean): Promise<ClientResponse> {
  if (!page.url.includes('/oidc/interaction/')) throw new Error(`expected our login page, got HTTP ${page.status} at ${page.url}: ${page.body.slice(0, 300)}`);
  const fields: Record<string, string> = { name: user.name, password: user.password, ...(user.totp === undefined ? {} : { totp: user.totp }) };
  return browser.submitForm(page, fields, { headers: { origin: h.publicUrl }, ...(stopAt === undefined ? {} : { stopAt }) });
}
