/**
 * The admin CLI's client on the login session (`causeway login`) when no API token is given,
 * against an oidc-provider instance that also answers GET /api/v1/whoami like the control plane.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SessionStore, createTrustingFetch, jwtPayload, tokenRequest } from '../lib/session/index.ts';
import type { Session } from '../lib/session/index.ts';
import { startTestProvider } from '../lib/session/test-provider.testing.ts';
import type { TestProvider } from '../lib/session/test-provider.testing.ts';
import { ApiClient } from './client.ts';
import type { AdminIo } from './client.ts';

let dir: string;
let idp: TestProvider;
let homes = 0;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'causeway-admin-session-'));
  await chmod(dir, 0o700);
  idp = await startTestProvider();
});

after(async () => {
  await idp.close();
  await rm(dir, { recursive: true, force: true });
});

async function loggedIn(patch: Partial<Session> = {}): Promise<string> {
  homes += 1;
  const home = path.join(dir, `home-${homes}`);
  const json = await tokenRequest(createTrustingFetch({ caPem: idp.caPem }), `${idp.issuer}/oidc/token`, { grant_type: 'password', client_id: 'causeway-cli', username: 'alice', password: 'alice-password', scope: 'openid email profile groups offline_access' });
  const claims = jwtPayload(json.id_token as string);
  await new SessionStore({ home }).write({
    version: 1,
    server: idp.issuer,
    issuer: idp.issuer,
    clientId: 'causeway-cli',
    caPem: idp.caPem,
    tokenEndpoint: `${idp.issuer}/oidc/token`,
    accessToken: json.access_token as string,
    accessTokenExpiresAt: Date.now() + 3600_000,
    refreshToken: json.refresh_token as string,
    user: { id: claims.sub as string, name: 'alice', groups: [] },
    kubeTokens: {},
    loggedInAt: new Date().toISOString(),
    ...patch,
  });
  return home;
}

function io(env: NodeJS.ProcessEnv): AdminIo {
  return { env, out: () => undefined, err: () => undefined, readFile: (p) => readFile(p, 'utf8'), readStdin: () => Promise.resolve(''), now: () => Date.now(), homedir: () => path.join(dir, 'no-home') };
}

void describe('the admin CLI on the login session', () => {
  void test('with no API token it uses the session: its server, its CA and its access token', async () => {
    const home = await loggedIn();
    const client = await ApiClient.connect({}, io({ CAUSEWAY_HOME: home }));
    assert.equal(client.credential, 'session');
    assert.equal(client.baseUrl.origin, idp.issuer);
    const me = await client.call<{ user: { name: string } }>('GET', '/api/v1/whoami');
    assert.equal(me.user.name, 'alice');
  });

  void test('an access token with less than a minute left is refreshed first', async () => {
    const home = await loggedIn({ accessTokenExpiresAt: Date.now() + 10_000 });
    const before = idp.counts.refresh;
    const client = await ApiClient.connect({ server: idp.issuer }, io({ CAUSEWAY_HOME: home }));
    await client.call('GET', '/api/v1/whoami');
    assert.equal(idp.counts.refresh, before + 1);
  });

  void test('CAUSEWAY_TOKEN wins over the session', async () => {
    const home = await loggedIn();
    const caFile = path.join(dir, 'ca.crt');
    await writeFile(caFile, idp.caPem);
    const client = await ApiClient.connect({}, io({ CAUSEWAY_HOME: home, CAUSEWAY_TOKEN: 'cwat_x', CAUSEWAY_SERVER: idp.issuer, CAUSEWAY_CA_FILE: caFile }));
    assert.equal(client.credential, 'token');
    await assert.rejects(client.call('GET', '/api/v1/whoami'), (err: Error & { status?: number }) => err.status === 401 && /API token/.test(err.message));
  });

  void test('the session is never sent to another server than its own', async () => {
    const home = await loggedIn();
    await assert.rejects(ApiClient.connect({ server: 'https://other.example.com' }, io({ CAUSEWAY_HOME: home })), (err: Error & { code?: string }) => err.code === 'NO_TOKEN' && /causeway login https:\/\/other\.example\.com/.test(err.message));
  });

  void test('a session the server refuses says to log in again', async () => {
    const home = await loggedIn({ accessToken: 'revoked' });
    const client = await ApiClient.connect({}, io({ CAUSEWAY_HOME: home }));
    await assert.rejects(client.call('GET', '/api/v1/whoami'), (err: Error & { status?: number }) => err.status === 401 && err.message.includes(`causeway login ${idp.issuer}`));
  });

  void test('with neither a token nor a session the hint names causeway login and CAUSEWAY_TOKEN', async () => {
    homes += 1;
    await assert.rejects(ApiClient.connect({ server: idp.issuer }, io({ CAUSEWAY_HOME: path.join(dir, `home-${homes}`) })), (err: Error & { code?: string }) => err.code === 'NO_TOKEN' && /causeway login/.test(err.message) && /CAUSEWAY_TOKEN/.test(err.message));
  });
});
