/**
 * `causeway login | logout | whoami | kube-credential` against an oidc-provider instance shaped like
 * Causeway's (src/lib/session/test-provider.testing.ts), through commander as main.ts runs them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { SessionStore, jwtPayload } from '../lib/session/index.ts';
import type { Session } from '../lib/session/index.ts';
import { TestBrowser, approveDevice, startTestProvider } from '../lib/session/test-provider.testing.ts';
import type { TestProvider } from '../lib/session/test-provider.testing.ts';
import { registerIdentityCommands } from './identity-command.ts';
import type { IdentityIo } from './identity-command.ts';
import { normaliseServer } from './login.ts';

let dir: string;
let idp: TestProvider;
let caFile: string;
let homes = 0;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'causeway-identity-cli-'));
  await chmod(dir, 0o700);
  idp = await startTestProvider({
    users: [
      { id: 'u-alice', name: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['eng', 'platform'] },
      { id: 'u-tina', name: 'tina', password: 'tina-password', email: 'tina@example.com', groups: [], totp: '123456' },
    ],
  });
  caFile = path.join(dir, 'ca.crt');
  await writeFile(caFile, idp.caPem, { mode: 0o600 });
});

after(async () => {
  await idp.close();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  out: string[];
  err: string[];
  error: (Error & { code?: string }) | undefined;
  exitCode: number | undefined;
}

function newHome(): string {
  homes += 1;
  return path.join(dir, `home-${homes}`);
}

async function run(home: string, args: string[], options: { stdin?: string; io?: Partial<IdentityIo>; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const result: Run = { out: [], err: [], error: undefined, exitCode: undefined };
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => result.out.push(s), writeErr: (s) => result.err.push(s) });
  registerIdentityCommands(program, {
    env: { CAUSEWAY_HOME: home, ...options.env },
    homedir: () => path.join(dir, 'no-home'),
    out: (line) => result.out.push(line),
    err: (line) => result.err.push(line),
    readStdin: () => Promise.resolve(options.stdin ?? ''),
    openBrowser: undefined,
    setExitCode: (code) => {
      result.exitCode = code;
    },
    ...options.io,
  });
  try {
    await program.parseAsync(['node', 'causeway', ...args]);
  } catch (error) {
    result.error = error as Error & { code?: string };
  }
  return result;
}

async function passwordLogin(home: string, user = 'alice'): Promise<Session> {
  const r = await run(home, ['login', idp.issuer, '--ca-file', caFile, '--user', user, '--password-stdin'], { stdin: `${user}-password\n` });
  assert.equal(r.error, undefined, r.error?.message);
  const session = await new SessionStore({ home }).read();
  assert.ok(session !== undefined);
  return session;
}

void describe('causeway login', () => {
  void test('--user NAME --password-stdin logs in and keeps the session, with the CA, in a file only the user can read', async () => {
    const home = newHome();
    const r = await run(home, ['login', idp.issuer, '--ca-file', caFile, '--user', 'alice', '--password-stdin'], { stdin: 'alice-password\n' });
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(r.err.join('\n'), /Logged in to https:\/\/127\.0\.0\.1:\d+ as alice \(groups: eng, platform\)/);
    const store = new SessionStore({ home });
    const session = (await store.read())!;
    assert.equal(session.server, idp.issuer);
    assert.equal(session.issuer, idp.issuer);
    assert.equal(session.caPem, idp.caPem);
    assert.deepEqual(session.user, { id: 'u-alice', name: 'alice', email: 'alice@example.com', groups: ['eng', 'platform'] });
    assert.ok(session.refreshToken !== undefined && session.refreshToken !== '');
    assert.equal((await stat(store.file)).mode & 0o777, 0o600);
    assert.equal(r.out.length, 0, 'nothing on stdout');
  });

  void test('CAUSEWAY_CA_FILE is used when --ca-file is not given; without either the system roots refuse a private CA', async () => {
    const viaEnv = await run(newHome(), ['login', idp.issuer, '--user', 'alice', '--password-stdin'], { stdin: 'alice-password\n', env: { CAUSEWAY_CA_FILE: caFile } });
    assert.equal(viaEnv.error, undefined, viaEnv.error?.message);
    const untrusted = await run(newHome(), ['login', idp.issuer, '--user', 'alice', '--password-stdin'], { stdin: 'alice-password\n' });
    assert.equal(untrusted.error?.code, 'SERVER_UNTRUSTED');
    assert.match(untrusted.error?.message ?? '', /--ca-file/);
  });

  void test('a wrong password is refused without a session', async () => {
    const home = newHome();
    const r = await run(home, ['login', idp.issuer, '--ca-file', caFile, '--user', 'alice', '--password-stdin'], { stdin: 'wrong\n' });
    assert.equal(r.error?.code, 'LOGIN_REFUSED');
    assert.match(r.error?.message ?? '', /invalid user name or password/);
    assert.equal(await new SessionStore({ home }).read(), undefined);
  });

  void test('a user with TOTP is told to pass --totp-stdin, and logs in with the code on the second stdin line', async () => {
    const home = newHome();
    const without = await run(home, ['login', idp.issuer, '--ca-file', caFile, '--user', 'tina', '--password-stdin'], { stdin: 'tina-password\n' });
    assert.equal(without.error?.code, 'TOTP_REQUIRED');
    assert.match(without.error?.message ?? '', /--totp-stdin/);
    const withCode = await run(home, ['login', idp.issuer, '--ca-file', caFile, '--user', 'tina', '--password-stdin', '--totp-stdin'], { stdin: 'tina-password\n123456\n' });
    assert.equal(withCode.error, undefined, withCode.error?.message);
    assert.equal((await new SessionStore({ home }).read())?.user.name, 'tina');
  });

  void test('flags that do not go together are refused before anything is sent', async () => {
    const home = newHome();
    assert.equal((await run(home, ['login', idp.issuer, '--user', 'alice'])).error?.code, 'BAD_FLAGS');
    assert.equal((await run(home, ['login', idp.issuer, '--password-stdin'])).error?.code, 'BAD_FLAGS');
    assert.equal((await run(home, ['login', idp.issuer, '--device-code', '--user', 'a', '--password-stdin'])).error?.code, 'BAD_FLAGS');
    assert.equal((await run(home, ['login', 'http://127.0.0.1:1', '--user', 'a', '--password-stdin'], { stdin: 'x\n' })).error?.code, 'BAD_SERVER_URL');
    assert.equal((await run(home, ['login'])).error?.code, 'NO_SERVER');
  });

  void test('server URLs are https origins; a path, query or credentials are refused', () => {
    assert.equal(normaliseServer('https://cp.example.com:8440/'), 'https://cp.example.com:8440');
    for (const bad of ['http://cp.example.com', 'https://cp.example.com/oidc', 'https://u:p@cp.example.com', 'https://cp.example.com/?x=1', 'cp.example.com']) {
      assert.throws(() => normaliseServer(bad), { code: 'BAD_SERVER_URL' }, bad);
    }
  });

  void test('the browser flow (PKCE S256, state, nonce, loopback 127.0.0.1 redirect) ends in a session', async () => {
    const home = newHome();
    let opened: URL | undefined;
    let landed: { url: URL; status: number; body: string } | undefined;
    const r = await run(home, ['login', idp.issuer, '--ca-file', caFile], {
      io: {
        openBrowser: async (url) => {
          opened = new URL(url);
          // The "browser" finishes in the background, as a real one would.
          void new TestBrowser(idp.caPem).go(url).then((page) => (landed = page));
          await Promise.resolve();
        },
      },
    });
    assert.equal(r.error, undefined, r.error?.message);
    assert.ok(opened !== undefined);
    assert.equal(opened.searchParams.get('code_challenge_method'), 'S256');
    assert.match(opened.searchParams.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    assert.ok((opened.searchParams.get('state') ?? '').length >= 32);
    assert.ok((opened.searchParams.get('nonce') ?? '').length >= 32);
    assert.equal(opened.searchParams.get('client_id'), 'causeway-cli');
    assert.equal((await new SessionStore({ home }).read())?.user.name, 'alice');
    for (let i = 0; landed === undefined && i < 100; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(landed?.status, 200);
    assert.match(landed?.body ?? '', /Logged in to Causeway/);
  });

  void test('OP-04 LP-01 --no-browser prints the URL instead; the loopback listener is on 127.0.0.1 and turns away a callback with another state', async () => {
    const home = newHome();
    let opens = 0;
    const pending = run(home, ['login', idp.issuer, '--ca-file', caFile, '--no-browser'], {
      io: {
        openBrowser: () => {
          opens += 1;
          return Promise.resolve();
        },
        err: (line) => {
          if (!line.startsWith('https://')) return;
          const auth = new URL(line);
          const callback = new URL(auth.searchParams.get('redirect_uri')!);
          assert.equal(callback.hostname, '127.0.0.1');
          // A forged callback first (another state): refused, and the login goes on.
          callback.search = new URLSearchParams({ code: 'forged', state: 'not-the-state' }).toString();
          const forged = httpRequest(callback, (res) => {
            res.resume();
            assert.equal(res.statusCode, 400);
            void new TestBrowser(idp.caPem).go(line);
          });
          forged.end();
        },
      },
    });
    const r = await pending;
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(opens, 0);
    assert.equal((await new SessionStore({ home }).read())?.user.name, 'alice');
  });

  void test('--device-code prints the code and the URL, and finishes when the code is approved', async () => {
    const home = newHome();
    const lines: string[] = [];
    const r = await run(home, ['login', idp.issuer, '--ca-file', caFile, '--device-code'], {
      io: {
        err: (line) => {
          lines.push(line);
          const m = /enter the code (\S+)$/.exec(line);
          if (m !== null) void approveDevice(idp.issuer, idp.caPem, m[1]);
        },
      },
    });
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(lines[0], new RegExp(`^To log in, open ${idp.issuer}/oidc/device in a browser and enter the code [A-Z]{4}-[A-Z]{4}$`));
    assert.equal((await new SessionStore({ home }).read())?.user.name, 'alice');
  });
});

void describe('causeway whoami', () => {
  void test('CP-11 prints user, groups, admin scope, device and token expiry, never a token; -o json prints the server answer', async () => {
    const home = newHome();
    const session = await passwordLogin(home);
    const table = await run(home, ['whoami']);
    assert.equal(table.error, undefined, table.error?.message);
    const text = table.out.join('\n');
    assert.match(text, /^server: +https:\/\/127\.0\.0\.1:\d+$/m);
    assert.match(text, /^user: +alice <alice@example\.com>$/m);
    assert.match(text, /^groups: +eng, platform$/m);
    assert.match(text, /^admin: +none$/m);
    assert.match(text, /^device: +none$/m);
    assert.match(text, /^expires: +\d{4}-\d\d-\d\dT/m);
    const json = await run(home, ['whoami', '-o', 'json']);
    const parsed = JSON.parse(json.out.join('\n')) as { server: string; user: { name: string }; scope: string; device: null };
    assert.equal(parsed.server, idp.issuer);
    assert.equal(parsed.user.name, 'alice');
    assert.equal(parsed.device, null);
    for (const secret of [session.accessToken, session.refreshToken!]) {
      assert.ok(!table.out.join('\n').includes(secret) && !json.out.join('\n').includes(secret));
    }
  });

  void test('shows the session\'s device and its trust level when the server names one', async () => {
    const home = newHome();
    await passwordLogin(home);
    idp.whoamiDevice = { id: 'dev-1', platform: 'linux', hostname: 'laptop\u001b[31m', trust: { level: 'Medium', reasons: ['diskEncryption unmet'] } };
    try {
      const text = (await run(home, ['whoami'])).out.join('\n');
      assert.match(text, /^device: +dev-1 \(laptop\?\[31m, linux\)$/m);
      assert.match(text, /^trust: +Medium \(diskEncryption unmet\)$/m);
    } finally {
      idp.whoamiDevice = null;
    }
  });

  void test('without a session it says to log in', async () => {
    const r = await run(newHome(), ['whoami']);
    assert.equal(r.error?.code, 'NOT_LOGGED_IN');
  });
});

void describe('causeway kube-credential', () => {
  void test('prints an ExecCredential with an ID token for kubernetes:<cluster>, from the cache on the next call', async () => {
    const home = newHome();
    await passwordLogin(home);
    const before = idp.counts.exchange;
    const first = await run(home, ['kube-credential', '--cluster', 'prod']);
    assert.equal(first.exitCode, undefined, first.err.join('\n'));
    const credential = JSON.parse(first.out.join('')) as { apiVersion: string; kind: string; status: { token: string; expirationTimestamp: string } };
    assert.equal(credential.apiVersion, 'client.authentication.k8s.io/v1');
    assert.equal(credential.kind, 'ExecCredential');
    assert.match(credential.status.expirationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const claims = jwtPayload(credential.status.token);
    assert.equal(claims.aud, 'kubernetes:prod');
    assert.ok(Math.abs(Date.parse(credential.status.expirationTimestamp) - (claims.exp as number) * 1000) < 1000);
    const second = await run(home, ['kube-credential', '--cluster', 'prod']);
    assert.equal((JSON.parse(second.out.join('')) as typeof credential).status.token, credential.status.token);
    assert.equal(idp.counts.exchange, before + 1);
  });

  void test('without a session it fails with the one line kubectl shows', async () => {
    const home = newHome();
    const none = await run(home, ['kube-credential', '--cluster', 'prod']);
    assert.equal(none.exitCode, 1);
    assert.deepEqual(none.err, ['causeway: not logged in: run causeway login <control plane URL>']);
    assert.deepEqual(none.out, []);
    const session = await passwordLogin(home);
    await new SessionStore({ home }).write({ ...session, accessTokenExpiresAt: 0, refreshToken: 'revoked' });
    const expired = await run(home, ['kube-credential', '--cluster', 'prod']);
    assert.equal(expired.exitCode, 1);
    assert.deepEqual(expired.err, [`causeway: not logged in to ${idp.issuer} (or the session expired): run causeway login ${idp.issuer}`]);
  });
});

void describe('causeway logout', () => {
  void test('revokes the session at the server and deletes it; the next kube-credential fails', async () => {
    const home = newHome();
    const session = await passwordLogin(home);
    const before = idp.counts.revocation;
    const r = await run(home, ['logout']);
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(r.err.join('\n'), /^Logged out: the session was revoked at https:/);
    assert.equal(idp.counts.revocation, before + 1);
    await assert.rejects(readFile(path.join(home, 'session.json')), { code: 'ENOENT' });
    // The refresh token is dead at the server too.
    const store = new SessionStore({ home });
    await store.write({ ...session, accessTokenExpiresAt: 0 });
    assert.equal((await run(home, ['kube-credential', '--cluster', 'prod'])).exitCode, 1);
    await store.remove();
    const next = await run(home, ['kube-credential', '--cluster', 'prod']);
    assert.equal(next.exitCode, 1);
    assert.match(next.err[0], /^causeway: not logged in/);
    assert.match((await run(home, ['logout'])).err.join('\n'), /^Not logged in\.$/);
  });

  void test('works offline, saying the server was not reached', async () => {
    const home = newHome();
    const session = await passwordLogin(home);
    await new SessionStore({ home }).write({ ...session, revocationEndpoint: 'https://127.0.0.1:1/oidc/token/revocation' });
    const r = await run(home, ['logout']);
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(r.err.join('\n'), /was not reached .*only deleted here/);
    assert.equal(await new SessionStore({ home }).read(), undefined);
  });
});
