/**
 * The login session: the file (modes, atomic replace, CN-09 refusals), the cross-process lock, silent
 * refresh and kube tokens against an oidc-provider instance shaped like Causeway's (test-provider).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SessionStore, causewayHome, freshSession, jwtPayload, kubeToken, revokeSession, tokenRequest, createTrustingFetch, MIN_VALIDITY_MS } from './index.ts';
import type { ClientCertificate, FetchLike, Session } from './index.ts';
import { CertificateAuthority, issueKeyAndCert } from '../pki/index.ts';
import { startTestProvider } from './test-provider.testing.ts';
import type { TestProvider } from './test-provider.testing.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
let dir: string;
let idp: TestProvider;
let homes = 0;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'causeway-session-'));
  await chmod(dir, 0o700);
  idp = await startTestProvider({ users: [
    { id: 'u-alice', name: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['eng'] },
    { id: 'u-bob', name: 'bob', password: 'bob-password', email: 'bob@example.com', groups: [] },
  ] });
});

after(async () => {
  await idp.close();
  await rm(dir, { recursive: true, force: true });
});

function newHome(): string {
  homes += 1;
  return path.join(dir, `home-${homes}`);
}

/** A session from the password grant, as `causeway login --user` makes it. */
async function login(user = 'alice'): Promise<Session> {
  const fetchFn = createTrustingFetch({ caPem: idp.caPem });
  const json = await tokenRequest(fetchFn, `${idp.issuer}/oidc/token`, { grant_type: 'password', client_id: 'causeway-cli', username: user, password: `${user}-password`, scope: 'openid email profile groups offline_access' });
  const claims = jwtPayload(json.id_token as string);
  return {
    version: 1,
    server: idp.issuer,
    issuer: idp.issuer,
    clientId: 'causeway-cli',
    caPem: idp.caPem,
    tokenEndpoint: `${idp.issuer}/oidc/token`,
    revocationEndpoint: `${idp.issuer}/oidc/token/revocation`,
    accessToken: json.access_token as string,
    accessTokenExpiresAt: Date.now() + (json.expires_in as number) * 1000,
    refreshToken: json.refresh_token as string,
    user: { id: claims.sub as string, name: claims.preferred_username as string, groups: claims.groups as string[] },
    kubeTokens: {},
    loggedInAt: new Date().toISOString(),
  };
}

void describe('the session file', () => {
  void test('is written 0600 in a 0700 directory, atomically, and read back', async () => {
    const store = new SessionStore({ home: newHome() });
    assert.equal(await store.read(), undefined);
    const session = await login();
    await store.write(session);
    assert.equal((await stat(store.file)).mode & 0o777, 0o600);
    assert.equal((await stat(store.home)).mode & 0o777, 0o700);
    assert.deepEqual(await store.read(), session);
    await store.write({ ...session, accessToken: 'second' });
    assert.deepEqual(await readdir(store.home), ['session.json'], 'no temp files are left behind');
    assert.equal((await store.read())?.accessToken, 'second');
    assert.equal(await store.remove(), true);
    assert.equal(await store.remove(), false);
  });

  void test('CN-09 a session file others can write is refused', async () => {
    const store = new SessionStore({ home: newHome() });
    await store.write(await login());
    await chmod(store.file, 0o666);
    await assert.rejects(store.read(), { code: 'SESSION_UNSAFE' });
    await chmod(store.file, 0o600);
    await chmod(store.home, 0o770);
    await assert.rejects(store.read(), { code: 'SESSION_UNSAFE' });
    await assert.rejects(store.write(await login()), { code: 'SESSION_UNSAFE' });
  });

  void test('a damaged session file is reported with what to do', async () => {
    const store = new SessionStore({ home: newHome() });
    await mkdir(store.home, { mode: 0o700 });
    await writeFile(store.file, '{"version":1,"server":"x"}', { mode: 0o600 });
    await assert.rejects(store.read(), (err: Error & { code?: string }) => err.code === 'SESSION_INVALID' && /causeway login/.test(err.message));
  });

  void test('CAUSEWAY_HOME wins over ~/.config/causeway', () => {
    assert.equal(causewayHome({ CAUSEWAY_HOME: '/x/y' }, '/home/u'), '/x/y');
    assert.equal(causewayHome({}, '/home/u'), '/home/u/.config/causeway');
  });
});

void describe('the session lock', () => {
  void test('serialises holders within a process', async () => {
    const store = new SessionStore({ home: newHome() });
    const order: string[] = [];
    await Promise.all(
      ['a', 'b', 'c'].map((name) =>
        store.withLock(async () => {
          order.push(`${name}+`);
          await new Promise((r) => setTimeout(r, 20));
          order.push(`${name}-`);
        }),
      ),
    );
    for (let i = 0; i < order.length; i += 2) assert.equal(order[i].slice(0, 1), order[i + 1].slice(0, 1), `no interleaving: ${order.join(' ')}`);
    await assert.rejects(stat(store.lockFile), { code: 'ENOENT' });
  });

  void test('a lock left by a process that died is broken', async () => {
    const store = new SessionStore({ home: newHome() });
    await mkdir(store.home, { mode: 0o700 });
    // A pid far above pid_max is never alive.
    await writeFile(store.lockFile, `99999999 deadbeef ${Date.now()}\n`, { mode: 0o600 });
    assert.equal(await store.withLock(() => Promise.resolve('got it')), 'got it');
  });

  void test('a lock held by a live process is waited for, and the wait gives up with what to do', async () => {
    const store = new SessionStore({ home: newHome(), lockTimeoutMs: 200 });
    await mkdir(store.home, { mode: 0o700 });
    await writeFile(store.lockFile, `${process.pid} cafe ${Date.now()}\n`, { mode: 0o600 });
    await assert.rejects(store.withLock(() => Promise.resolve()), (err: Error & { code?: string }) => err.code === 'SESSION_LOCKED' && err.message.includes(store.lockFile));
  });
});

void describe('silent refresh', () => {
  void test('a session with more than a minute left is used as it is', async () => {
    const store = new SessionStore({ home: newHome() });
    const session = await login();
    await store.write(session);
    const before = idp.counts.refresh;
    assert.equal((await freshSession(store)).accessToken, session.accessToken);
    assert.equal(idp.counts.refresh, before);
  });

  void test('a session with less than a minute left is refreshed, the refresh token rotated and the file updated', async () => {
    const store = new SessionStore({ home: newHome() });
    const session = await login();
    await store.write({ ...session, accessTokenExpiresAt: Date.now() + MIN_VALIDITY_MS - 1000 });
    const before = idp.counts.refresh;
    const fresh = await freshSession(store);
    assert.equal(idp.counts.refresh, before + 1);
    assert.notEqual(fresh.accessToken, session.accessToken);
    assert.notEqual(fresh.refreshToken, session.refreshToken);
    assert.ok(fresh.accessTokenExpiresAt > Date.now() + 30 * 60_000);
    assert.deepEqual(await store.read(), fresh);
    assert.equal(fresh.user.name, 'alice');
  });

  void test('reusing a consumed refresh token revokes the whole grant (why refreshes need the lock)', async () => {
    const session = await login();
    const fetchFn = createTrustingFetch({ caPem: idp.caPem });
    const refresh = (token: string): Promise<Record<string, unknown>> => tokenRequest(fetchFn, session.tokenEndpoint, { grant_type: 'refresh_token', client_id: 'causeway-cli', refresh_token: token });
    const first = await refresh(session.refreshToken!);
    await assert.rejects(refresh(session.refreshToken!), { error: 'invalid_grant' });
    await assert.rejects(refresh(first.refresh_token as string), { error: 'invalid_grant' });
  });

  void test('5 concurrent processes refreshing one session leave a working session (one refresh, no reuse)', async () => {
    const home = newHome();
    const store = new SessionStore({ home });
    await store.write({ ...(await login()), accessTokenExpiresAt: Date.now() });
    const startFile = path.join(dir, `start-${homes}`);
    const before = { refresh: idp.counts.refresh, reuse: idp.counts.refreshReuse };
    const children = Array.from({ length: 5 }, () => {
      const child = spawn(process.execPath, [path.join(here, 'refresh-child.testing.ts'), home, startFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      return new Promise<{ code: number | null; out: string; err: string }>((resolve) => child.on('close', (code) => resolve({ code, out: out.trim(), err })));
    });
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(startFile, 'go');
    const results = await Promise.all(children);
    for (const r of results) assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.equal(new Set(results.map((r) => r.out)).size, 1, 'every process got the same fresh access token');
    assert.equal(idp.counts.refresh - before.refresh, 1);
    assert.equal(idp.counts.refreshReuse - before.reuse, 0);
    // The session still works: the next refresh succeeds.
    const current = (await store.read())!;
    await store.write({ ...current, accessTokenExpiresAt: Date.now() });
    const again = await freshSession(store);
    assert.notEqual(again.accessToken, current.accessToken);
  });

  void test('a refused refresh says to log in again, naming the server', async () => {
    const store = new SessionStore({ home: newHome() });
    await store.write({ ...(await login()), accessTokenExpiresAt: Date.now(), refreshToken: 'not-a-refresh-token' });
    await assert.rejects(freshSession(store), (err: Error & { code?: string }) => err.code === 'NOT_LOGGED_IN' && err.message === `not logged in to ${idp.issuer} (or the session expired): run causeway login ${idp.issuer}`);
  });

  void test('no session says to log in', async () => {
    await assert.rejects(freshSession(new SessionStore({ home: newHome() })), { code: 'NOT_LOGGED_IN' });
  });
});

void describe('kube tokens', () => {
  void test('come from the token exchange for audience kubernetes:<cluster> and are cached', async () => {
    const store = new SessionStore({ home: newHome() });
    await store.write(await login());
    const before = idp.counts.exchange;
    const first = await kubeToken(store, 'prod');
    assert.equal(first.cached, false);
    const claims = jwtPayload(first.token);
    assert.equal(claims.aud, 'kubernetes:prod');
    assert.equal(claims.iss, idp.issuer);
    assert.equal(claims.email, 'alice@example.com');
    const second = await kubeToken(store, 'prod');
    assert.equal(second.cached, true);
    assert.equal(second.token, first.token);
    assert.equal(idp.counts.exchange, before + 1);
  });

  void test('a kube token with less than a minute left is replaced, refreshing the access token first when needed', async () => {
    const store = new SessionStore({ home: newHome() });
    const session = await login();
    await store.write({ ...session, accessTokenExpiresAt: Date.now() + 1000, kubeTokens: { prod: { token: 'old', expiresAt: Date.now() + 30_000 } } });
    const before = { refresh: idp.counts.refresh, exchange: idp.counts.exchange };
    const fresh = await kubeToken(store, 'prod');
    assert.notEqual(fresh.token, 'old');
    assert.equal(idp.counts.refresh, before.refresh + 1);
    assert.equal(idp.counts.exchange, before.exchange + 1);
    assert.equal((await store.read())?.kubeTokens.prod?.token, fresh.token);
  });

  void test('5 concurrent kube-credential processes make one token exchange and get the same token', async () => {
    const home = newHome();
    const store = new SessionStore({ home });
    await store.write({ ...(await login()), accessTokenExpiresAt: Date.now() });
    const startFile = path.join(dir, `start-kube-${homes}`);
    const before = { refresh: idp.counts.refresh, exchange: idp.counts.exchange, reuse: idp.counts.refreshReuse };
    const children = Array.from({ length: 5 }, () => {
      const child = spawn(process.execPath, [path.join(here, 'refresh-child.testing.ts'), home, startFile, 'prod'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      return new Promise<{ code: number | null; out: string }>((resolve) => child.on('close', (code) => resolve({ code, out: out.trim() })));
    });
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(startFile, 'go');
    const results = await Promise.all(children);
    for (const r of results) assert.equal(r.code, 0, r.out);
    assert.equal(new Set(results.map((r) => r.out)).size, 1);
    assert.deepEqual({ refresh: idp.counts.refresh - before.refresh, exchange: idp.counts.exchange - before.exchange, reuse: idp.counts.refreshReuse - before.reuse }, { refresh: 1, exchange: 1, reuse: 0 });
  });

  void test('a cluster no Kubernetes service has is refused with what to check', async () => {
    const store = new SessionStore({ home: newHome() });
    await store.write(await login());
    await assert.rejects(kubeToken(store, 'staging'), (err: Error & { code?: string }) => err.code === 'UNKNOWN_CLUSTER' && /--cluster/.test(err.message));
  });

  void test('the token exchange presents this machine\'s device certificate for the session\'s server, asked only when a new token is needed', async () => {
    const store = new SessionStore({ home: newHome() });
    await store.write(await login());
    const device = await issueKeyAndCert(await CertificateAuthority.create(), { type: 'device', identity: { device: 'dev-1' } });
    const asked: string[] = [];
    const presented: Array<ClientCertificate | undefined> = [];
    const deps = {
      deviceCredentials: (server: string): Promise<ClientCertificate | undefined> => {
        asked.push(server);
        return Promise.resolve({ certPem: device.certPem, keyPem: device.keyPem });
      },
      fetchFor: (caPem: string | undefined, clientCert?: ClientCertificate): FetchLike => {
        presented.push(clientCert);
        return createTrustingFetch({ ...(caPem === undefined ? {} : { caPem }), ...(clientCert === undefined ? {} : { clientCert }) });
      },
    };
    const first = await kubeToken(store, 'prod', deps);
    assert.equal(first.cached, false);
    assert.deepEqual(asked, [idp.issuer]);
    assert.deepEqual(presented, [{ certPem: device.certPem, keyPem: device.keyPem }]);
    const second = await kubeToken(store, 'prod', deps);
    assert.equal(second.cached, true);
    assert.equal(asked.length, 1);
    assert.ok(Object.hasOwn((await store.read())?.kubeTokens ?? {}, 'prod'));
  });

  void test('a token exchange refused over the device certificate says why, not "log in again", and refreshes nothing', async () => {
    const store = new SessionStore({ home: newHome() });
    const session = await login();
    await store.write(session);
    let calls = 0;
    const refusing: FetchLike = () => {
      calls += 1;
      return Promise.resolve(new Response(JSON.stringify({ error: 'invalid_grant', error_description: 'device_refused: this device is banned; ask an admin' }), { status: 400, headers: { 'content-type': 'application/json' } }));
    };
    await assert.rejects(
      kubeToken(store, 'prod', { deviceCredentials: () => Promise.resolve({ certPem: 'c', keyPem: 'k' }), fetchFor: () => refusing }),
      (err: Error & { code?: string }) => err.code === 'DEVICE_REFUSED' && /banned; ask an admin/.test(err.message) && err.message.includes(idp.issuer),
    );
    assert.equal(calls, 1);
    assert.equal((await store.read())?.refreshToken, session.refreshToken);
  });

  void test('a disabled user gets no kube token and is told to log in again', async () => {
    const store = new SessionStore({ home: newHome() });
    await store.write(await login('bob'));
    idp.users.get('bob')!.disabled = true;
    try {
      await assert.rejects(kubeToken(store, 'prod'), { code: 'NOT_LOGGED_IN' });
    } finally {
      idp.users.get('bob')!.disabled = false;
    }
  });
});

void describe('revocation', () => {
  void test('revoking the refresh token ends the session at the server', async () => {
    const session = await login();
    assert.equal(await revokeSession(session), true);
    const store = new SessionStore({ home: newHome() });
    await store.write({ ...session, accessTokenExpiresAt: Date.now() });
    await assert.rejects(freshSession(store), { code: 'NOT_LOGGED_IN' });
    assert.ok((await readFile(store.file, 'utf8')).includes(session.accessToken), 'the file is left for logout to delete');
  });
});
