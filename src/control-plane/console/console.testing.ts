/**
 * For the console's tests: a real control plane (HTTPS listener on 127.0.0.1, Causeway's own OIDC
 * provider and login page with a FakeDirectory of USERS, the console with a fake build of the app), a
 * SQLite store on a fake clock (session expiry), AdminBindings (alice admin, the auditors group —
 * vera — viewer, nora none), and logins through the real flow (test/kit/console.ts).
 */
import type { TestContext } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { consoleHeaders, consoleLogin } from '../../../test/kit/console.ts';
import type { ConsoleLogin } from '../../../test/kit/console.ts';
import { silentLogger } from '../../lib/log.ts';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { freePort } from '../../lib/tunnel/harness.testing.ts';
import { caFetch, FakeDirectory } from '../identity/identity.testing.ts';
import type { TestFetch, TestUser } from '../identity/identity.testing.ts';
import { createIdentity } from '../identity/index.ts';
import { secretBoxFromKey } from '../identity/secret-box.ts';
import { createControlPlane, issueServingCertificate } from '../server.ts';
import { FakeClock } from '../store/store.conformance.testing.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';

export const USERS: TestUser[] = [
  { name: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['eng'] },
  { name: 'vera', password: 'vera-password', email: 'vera@example.com', groups: ['auditors'] },
  { name: 'nora', password: 'nora-password', groups: [] },
];

export const INDEX_HTML = '<!DOCTYPE html><html><head><script type="module" src="/assets/app-1a2b3c.js"></script></head><body><div id="root"></div></body></html>';

export interface Harness {
  publicUrl: string;
  caPem: string;
  store: Store;
  clock: FakeClock;
  fetch: TestFetch;
  login(name: string, next?: string): Promise<ConsoleLogin>;
  /** A request with the console cookie; `headers` replace the defaults (cookie, Origin, CSRF, JSON). */
  call(login: ConsoleLogin | undefined, method: string, path: string, options?: { body?: string | object; headers?: Record<string, string | undefined> }): Promise<{ status: number; headers: Headers; body: string; json: () => Record<string, unknown> }>;
}

export interface HarnessOptions {
  /** Write the fake build of the app. Default true. */
  built?: boolean;
  /** Files of the build (path → text) instead of the default index.html, one asset and an icon. */
  files?: Record<string, string>;
  /** Login starts per source before 429. Default 1000. */
  loginBurst?: number;
}

/** The harness: see the file comment. Everything is closed and removed after the test. */
export async function startConsoleHarness(t: TestContext, options: HarnessOptions = {}): Promise<Harness> {
  const clock = new FakeClock(Date.now());
  const store = await openStore({ url: ':memory:', clock });
  t.after(() => store.close());
  for (const u of USERS) {
    await store.createUser({ name: u.name, email: u.email ?? null, groups: u.groups ?? [] }, { actor: 'test' });
  }
  await store.putObject({ kind: 'AdminBinding', name: 'admins', spec: { role: 'admin', users: ['alice'] } }, { actor: 'test' });
  await store.putObject({ kind: 'AdminBinding', name: 'auditors', spec: { role: 'viewer', groups: ['auditors'] } }, { actor: 'test' });
  await store.putObject({ kind: 'Role', name: 'eng', spec: { users: { groups: ['eng'] } } }, { actor: 'test' });

  const dir = await mkdtemp(join(tmpdir(), 'causeway-console-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const webDir = join(dir, 'web');
  if (options.built ?? true) {
    const files = options.files ?? { 'index.html': INDEX_HTML, 'assets/app-1a2b3c.js': 'console.log("app");\n', 'favicon.svg': '<svg xmlns="http://www.w3.org/2000/svg"/>' };
    for (const [path, text] of Object.entries(files)) {
      await mkdir(dirname(join(webDir, path)), { recursive: true });
      await writeFile(join(webDir, path), text);
    }
    await writeFile(join(dir, 'secret.txt'), 'outside the build');
  }

  const ca = await CertificateAuthority.create({ commonName: 'console test CA' });
  const port = await freePort();
  const publicUrl = `https://127.0.0.1:${port}`;
  const identity = await createIdentity({ store, secretBox: secretBoxFromKey(randomBytes(32)), publicUrl, directory: new FakeDirectory(store, USERS), logger: silentLogger(), resolveSecret: () => Promise.reject(new Error('no secrets here')) });
  const cp = await createControlPlane({ store, ca, publicUrl, identity, authFailures: { burst: 10_000 }, console: { dir: webDir, loginRateLimit: { burst: options.loginBurst ?? 1000 } } });
  t.after(() => cp.close());
  await cp.listen({ host: '127.0.0.1', port, tls: await issueServingCertificate(ca, { publicUrl }) });
  const fetch = caFetch(ca.certPem);

  return {
    publicUrl,
    caPem: ca.certPem,
    store,
    clock,
    fetch,
    login: (name, next) => consoleLogin(publicUrl, ca.certPem, name, USERS.find((u) => u.name === name)?.password ?? '', next === undefined ? {} : { next }),
    async call(login, method, path, o = {}) {
      const base: Record<string, string | undefined> = login === undefined ? { accept: 'application/json' } : consoleHeaders(login, publicUrl);
      const merged = { ...base, ...o.headers };
      if (o.body === undefined && o.headers?.['content-type'] === undefined) delete merged['content-type'];
      const headers = Object.fromEntries(Object.entries(merged).filter((e): e is [string, string] => e[1] !== undefined));
      const response = await fetch(`${publicUrl}${path}`, { method, headers, ...(o.body === undefined ? {} : { body: typeof o.body === 'string' ? o.body : JSON.stringify(o.body) }) });
      const body = await response.text();
      return { status: response.status, headers: response.headers, body, json: () => JSON.parse(body) as Record<string, unknown> };
    },
  };
}
