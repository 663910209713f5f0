/** `causeway server` with the OIDC provider: discovery on the public listener, the identity flags, resolveSecret. */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { createLogger } from '../lib/log.ts';
import { hashPassword } from './identity/passwords.ts';
import { resolveSecret, startServer } from './command.ts';
import type { ServerFlags } from './command.ts';

const logger = createLogger({ name: 'command-identity-test', level: 'warn', destination: { write: () => undefined } });

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'causeway-server-identity-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function get(url: string, caPem: string, options: { method?: string; body?: string; bearer?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
    if (options.body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const req = httpsRequest(url, { method: options.method ?? 'GET', ca: caPem, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

void describe('causeway server as an OIDC provider', () => {
  void test('serves discovery with the public URL as issuer, and the provider survives a restart on the same data directory', async (t) => {
    const dir = join(await tempDir(t), 'data');
    const flags: ServerFlags = { dataDir: dir, listen: '127.0.0.1:0', metricsListen: 'off', publicUrl: 'https://localhost:8440', logLevel: 'warn', idTokenAlg: 'ES256', kubeTokenTtl: 300 };
    for (let start = 0; start < 2; start++) {
      const server = await startServer(flags, { env: {}, print: () => undefined }, logger);
      try {
        const caPem = await readFile(join(dir, 'ca.crt'), 'utf8');
        const discovery = await get(`https://localhost:${server.listener.port}/.well-known/openid-configuration`, caPem);
        assert.equal(discovery.status, 200);
        assert.ok(discovery.body.includes('"issuer":"https://localhost:8440"'));
        const jwks = await get(`https://localhost:${server.listener.port}/oidc/jwks`, caPem);
        assert.equal((JSON.parse(jwks.body) as { keys: unknown[] }).keys.length, 2);
        const base = `https://localhost:${server.listener.port}`;
        const refused = await get(`${base}/oidc/token`, caPem, { method: 'POST', body: 'grant_type=password&client_id=causeway-cli&username=nobody&password=b' });
        assert.equal(refused.status, 400);
        assert.equal((JSON.parse(refused.body) as { error_description: string }).error_description, 'invalid user name or password');
        // A built-in user logs in with the password grant, and the access token opens the admin API.
        if (start === 0) await server.store.createUser({ name: 'erin', groups: ['ops'], passwordHash: await hashPassword('erin-password-1') }, { actor: 'system' });
        const login = await get(`${base}/oidc/token`, caPem, { method: 'POST', body: 'grant_type=password&client_id=causeway-cli&username=erin&password=erin-password-1&scope=openid%20groups' });
        assert.equal(login.status, 200, login.body);
        const tokens = JSON.parse(login.body) as { access_token: string; id_token: string };
        assert.equal(decodeProtectedHeader(tokens.id_token).alg, 'ES256');
        const whoami = await get(`${base}/api/v1/whoami`, caPem, { bearer: tokens.access_token });
        assert.equal(whoami.status, 200, whoami.body);
        assert.equal((JSON.parse(whoami.body) as { scope: string }).scope, 'none');
      } finally {
        await server.close();
      }
    }
  });

  void test('resolveSecret reads the environment and files that only this user could have written (CN-09)', async (t) => {
    const dir = await tempDir(t);
    await chmod(dir, 0o700);
    assert.equal(await resolveSecret({ env: 'IDP_SECRET' }, { IDP_SECRET: 's3cret' }), 's3cret');
    await assert.rejects(resolveSecret({ env: 'IDP_SECRET' }, {}), { code: 'SECRET_MISSING' });
    const file = join(dir, 'secret');
    await writeFile(file, 'from-a-file\n', { mode: 0o600 });
    assert.equal(await resolveSecret({ file }, {}), 'from-a-file');
    await chmod(file, 0o666);
    await assert.rejects(resolveSecret({ file }, {}), { code: 'SECRET_FILE_UNSAFE' });
    await assert.rejects(resolveSecret({ env: 'A', file }, {}), { code: 'SECRET_REF_INVALID' });
    await assert.rejects(resolveSecret({ file: join(dir, 'missing') }, {}), { code: 'SECRET_FILE_UNREADABLE' });
  });
});
