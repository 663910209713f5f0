/**
 * `causeway user` password, TOTP and unlock commands against the API routes they call (users and
 * credentials, behind the real API-token auth hook) on a plain-HTTP Fastify over an in-memory store.
 * The commands themselves speak HTTP only; the control-plane imports are this test's alone.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Command } from 'commander';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { credentialRoutes } from '../control-plane/api/credentials.ts';
import { installErrorHandling } from '../control-plane/api/errors.ts';
import { errorSchema } from '../control-plane/api/schemas.ts';
import { userRoutes } from '../control-plane/api/users.ts';
import { apiTokenAuthenticator, authHook, FailureLimiter } from '../control-plane/auth.ts';
import { createDirectory } from '../control-plane/identity/directory.ts';
import { loadOrCreateSecretBox } from '../control-plane/identity/secret-box.ts';
import type { SecretBox } from '../control-plane/identity/secret-box.ts';
import { totpCode } from '../control-plane/identity/totp.ts';
import { openStore } from '../control-plane/store/index.ts';
import type { Store } from '../control-plane/store/index.ts';
import { registerAdminCommands } from './index.ts';

const PASSWORD = 'a perfectly long password';

let store: Store;
let box: SecretBox;
let app: FastifyInstance;
let env: NodeJS.ProcessEnv;

before(async () => {
  store = await openStore({ url: ':memory:' });
  box = await loadOrCreateSecretBox(store, { passphrase: 'test passphrase' });
  const token = (await store.createApiToken({ name: 'admin', scope: 'admin' }, { actor: 'test' })).token;
  app = Fastify({ logger: false });
  installErrorHandling(app);
  app.addSchema(errorSchema);
  const hook = authHook({ authenticators: [apiTokenAuthenticator(store)], limiter: new FailureLimiter() });
  await app.register((api, _options, registered) => {
    api.addHook('onRequest', hook);
    userRoutes(api, { store });
    credentialRoutes(api, { store, secretBox: box });
    registered();
  }, { prefix: '/api/v1' });
  await app.listen({ host: '127.0.0.1', port: 0 });
  env = { CAUSEWAY_SERVER: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, CAUSEWAY_TOKEN: token, CAUSEWAY_HOME: '/nonexistent-causeway-home' };
});
after(async () => {
  await app.close();
  await store.close();
});

interface Run {
  out: string[];
  err: string[];
  error: (Error & { code?: string }) | undefined;
}

async function run(args: string[], stdin = ''): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerAdminCommands(program, { env, out: (line) => out.push(line), err: (line) => err.push(line), readStdin: () => Promise.resolve(stdin) });
  try {
    await program.parseAsync(['node', 'causeway', ...args]);
    return { out, err, error: undefined };
  } catch (error) {
    return { out, err, error: error as Error & { code?: string } };
  }
}

async function ok(args: string[], stdin = ''): Promise<string[]> {
  const result = await run(args, stdin);
  assert.equal(result.error, undefined, `causeway ${args.join(' ')}: ${result.error?.message ?? ''}\n${result.err.join('\n')}`);
  return result.out;
}

async function logsIn(name: string, password: string, totp?: string): Promise<boolean> {
  const directory = createDirectory({ store, secretBox: box });
  return (await directory.authenticate({ name, password, ...(totp === undefined ? {} : { totp }), source: '10.0.0.1' })).ok;
}

void describe('causeway user: passwords, TOTP, unlock', () => {
  void test('user add --password-stdin creates the user with the password from stdin, its newline dropped', async () => {
    assert.deepEqual(await ok(['user', 'add', 'dana', '--groups', 'eng,ops', '--password-stdin'], `${PASSWORD}\n`), ['user/dana created with a password']);
    assert.equal(await logsIn('dana', PASSWORD), true);
    assert.deepEqual((await store.getUserByName('dana'))?.groups, ['eng', 'ops']);
  });

  void test('user add with a password that is too short creates nothing and says the limit', async () => {
    const result = await run(['user', 'add', 'shorty', '--password-stdin'], 'short\n');
    assert.equal(result.error?.code, 'PASSWORD_TOO_SHORT');
    assert.match(result.error?.message ?? '', /at least 12/);
    assert.equal(await store.getUserByName('shorty'), undefined);
  });

  void test('user password sets from stdin only, refuses several lines, and --remove removes it', async () => {
    await ok(['user', 'add', 'eve']);
    assert.equal((await run(['user', 'password', 'eve'])).error?.code, 'PASSWORD_SOURCE');
    assert.equal((await run(['user', 'password', 'eve', '--password-stdin'], '')).error?.code, 'PASSWORD_MISSING');
    assert.equal((await run(['user', 'password', 'eve', '--password-stdin'], `${PASSWORD}\nsecond line\n`)).error?.code, 'PASSWORD_INVALID');
    assert.deepEqual(await ok(['user', 'password', 'eve', '--password-stdin'], `${PASSWORD}\r\n`), ['user/eve password set']);
    assert.equal(await logsIn('eve', PASSWORD), true);
    assert.deepEqual(await ok(['user', 'password', 'eve', '--remove']), ['user/eve password removed']);
    assert.equal(await logsIn('eve', PASSWORD), false);
    assert.equal((await run(['user', 'password', 'nobody', '--password-stdin'], PASSWORD)).error?.code, 'NOT_FOUND');
  });

  void test('user totp enable prints the secret and otpauth URI once, and its codes log in; disable removes it', async () => {
    await ok(['user', 'add', 'finn', '--password-stdin'], PASSWORD);
    const out = await ok(['user', 'totp', 'enable', 'finn']);
    assert.match(out[0] ?? '', /not shown again/);
    const secret = /^secret: ([A-Z2-7]{32})$/.exec(out[1] ?? '')?.[1];
    assert.ok(secret !== undefined, out.join('\n'));
    assert.match(out[2] ?? '', /^uri: +otpauth:\/\/totp\/Causeway:finn\?secret=/);
    assert.equal(await logsIn('finn', PASSWORD), false);
    assert.equal(await logsIn('finn', PASSWORD, totpCode(secret, Date.now())), true);
    const listed = await ok(['user', 'list']);
    assert.match(listed.find((l) => l.startsWith('finn')) ?? '', /active\s+password\+totp/);
    assert.deepEqual(await ok(['user', 'totp', 'disable', 'finn']), ['user/finn TOTP disabled']);
    assert.equal(await logsIn('finn', PASSWORD), true);
  });

  void test('user unlock lifts a lock that user list shows', async () => {
    await ok(['user', 'add', 'gus', '--password-stdin'], PASSWORD);
    const user = await store.getUserByName('gus');
    assert.ok(user !== undefined);
    await store.recordLoginFailure(user.id, { at: new Date().toISOString(), maxFailures: 1, lockMs: 3_600_000 });
    assert.match((await ok(['user', 'list'])).find((l) => l.startsWith('gus')) ?? '', /locked\s+password/);
    assert.equal(await logsIn('gus', PASSWORD), false);
    assert.deepEqual(await ok(['user', 'unlock', 'gus']), ['user/gus unlocked']);
    assert.equal(await logsIn('gus', PASSWORD), true);
  });

  void test('an IdP user gets no password: the server\'s refusal is shown', async () => {
    await store.createUser({ name: 'ivy', source: 'idp:corp' }, { actor: 'test' });
    const result = await run(['user', 'password', 'ivy', '--password-stdin'], PASSWORD);
    assert.equal(result.error?.code, 'USER_NOT_LOCAL');
    assert.match(result.error?.message ?? '', /idp:corp/);
    assert.match((await ok(['user', 'list'])).find((l) => l.startsWith('ivy')) ?? '', /active\s+idp:corp/);
  });
});
