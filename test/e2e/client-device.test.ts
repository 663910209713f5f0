/**
 * The client's device trust against a real control plane (`causeway server`'s startServer: OIDC
 * provider, built-in directory, trust engine, trust certificates of 5 minutes): `causeway login`
 * registers this machine and gets a trust certificate, a second login reuses the device, a device the
 * server forgot is registered again, `causeway device report` moves the trust level with the factors
 * reported, `whoami` and `device show` show it, the proxy's renewal replaces the certificate at 2/3
 * of its lifetime (and logs a refusal), and key files others could write or read are refused (CN-09).
 *
 * The commands run through commander exactly as main.ts wires them; only the posture collectors are
 * replaced, so each report carries the factors the test chooses.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { createLogger, silentLogger } from '../../src/lib/log.ts';
import { systemClock } from '../../src/lib/clock.ts';
import type { FactorValues } from '../../src/lib/trust/index.ts';
import { startServer } from '../../src/control-plane/command.ts';
import type { RunningServer } from '../../src/control-plane/command.ts';
import { registerAdminCommands } from '../../src/admin-cli/index.ts';
import { registerIdentityCommands } from '../../src/client/identity-command.ts';
import { defaultDeviceIo, deviceContext, registerDeviceCommands } from '../../src/client/device-command.ts';
import type { DeviceIo } from '../../src/client/device-command.ts';
import { trustFromFiles } from '../../src/client/command.ts';
import { renewalTime, startTrustRenewal } from '../../src/client/trust-renewal.ts';
import type { Timers } from '../../src/client/trust-renewal.ts';
import { freePort } from '../kit/ports.ts';

const PASSWORD = 'correct horse battery staple';
const GOOD: FactorValues = { diskEncryption: true, firewall: true, osVersion: '24.04', osDistribution: 'ubuntu' };

let dir: string;
let dataDir: string;
let publicUrl: string;
let caFile: string;
let adminToken: string;
let server: RunningServer | undefined;
let factors: FactorValues = GOOD;

interface Run {
  out: string[];
  err: string[];
  error: (Error & { code?: string }) | undefined;
}

function deviceIo(home: string, result: Run): DeviceIo {
  return {
    ...defaultDeviceIo,
    env: { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: join(dir, 'client.yaml') },
    homedir: () => join(dir, 'no-home'),
    out: (line) => result.out.push(line),
    err: (line) => result.err.push(line),
    platform: 'linux',
    hostname: () => 'laptop-1',
    collect: () => Promise.resolve({ factors: structuredClone(factors), problems: [] }),
  };
}

/** The client commands, wired as main.ts wires them, in this process. */
async function run(home: string, args: string[], stdin = ''): Promise<Run> {
  const result: Run = { out: [], err: [], error: undefined };
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => result.out.push(s), writeErr: (s) => result.err.push(s) });
  const io = deviceIo(home, result);
  registerIdentityCommands(program, {
    env: io.env,
    homedir: io.homedir,
    out: io.out,
    err: io.err,
    readStdin: () => Promise.resolve(stdin),
    openBrowser: undefined,
    setExitCode: () => undefined,
    device: { platform: io.platform, hostname: io.hostname, ...(io.collect === undefined ? {} : { collect: io.collect }) },
  });
  registerDeviceCommands(program, io);
  try {
    await program.parseAsync(['node', 'causeway', ...args]);
  } catch (error) {
    result.error = error as Error & { code?: string };
  }
  return result;
}

async function admin(args: string[], stdin = ''): Promise<string[]> {
  const out: string[] = [];
  const program = new Command('causeway').exitOverride();
  registerAdminCommands(program, {
    env: { CAUSEWAY_SERVER: publicUrl, CAUSEWAY_TOKEN: adminToken, CAUSEWAY_CA_FILE: caFile },
    out: (line) => out.push(line),
    err: (line) => out.push(line),
    readStdin: () => Promise.resolve(stdin),
  });
  await program.parseAsync(['node', 'causeway', ...args]);
  return out;
}

async function login(home: string, extra: string[] = []): Promise<Run> {
  const r = await run(home, ['login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin', ...extra], `${PASSWORD}\n`);
  assert.equal(r.error, undefined, `${r.error?.message}\n${r.err.join('\n')}`);
  return r;
}

async function deviceJson(home: string): Promise<{ id: string; server: string }> {
  return JSON.parse(await readFile(join(home, 'device.json'), 'utf8')) as { id: string; server: string };
}

function identityUris(certPem: string): string[] {
  return (new X509Certificate(certPem).subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:')).map((n) => n.slice(4));
}

async function mode(file: string): Promise<number> {
  return (await stat(file)).mode & 0o777;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'causeway-e2e-client-device-'));
  await chmod(dir, 0o700);
  dataDir = join(dir, 'data');
  const port = await freePort();
  publicUrl = `https://localhost:${port}`;
  server = await startServer({ dataDir, listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl, logLevel: 'silent', trustCertLifetime: 5 }, { env: {}, print: () => undefined }, silentLogger());
  caFile = join(dataDir, 'ca.crt');
  adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  await admin(['user', 'add', 'alice', '--groups', 'eng', '--email', 'alice@example.com', '--password-stdin'], `${PASSWORD}\n`);
  const profile = join(dir, 'profile.yaml');
  await writeFile(
    profile,
    `apiVersion: causeway/v1
kind: TrustProfile
metadata: {name: laptops}
spec:
  appliesTo: {platforms: [linux]}
  staleAfter: 15m
  factors:
    - {type: diskEncryption, effect: Medium}
    - {type: firewall, effect: AlwaysDeny}
`,
  );
  await admin(['apply', '-f', profile]);
  await writeFile(join(dir, 'client.yaml'), 'deviceOwnership: corporate-dedicated\n', { mode: 0o600 });
});

after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

void describe('causeway login registers this device and gets a trust certificate', () => {
  const home = (): string => join(dir, 'home-1');
  let firstId: string;

  void test('the first login registers the device (key made here, 0600) and gets a trust certificate naming (user, device)', async () => {
    factors = GOOD;
    const r = await login(home());
    const state = await deviceJson(home());
    firstId = state.id;
    assert.equal(state.server, publicUrl);
    assert.match(r.err.join('\n'), new RegExp(`Registered this device as ${state.id}`));
    assert.match(r.err.join('\n'), /Trust level: High/);
    assert.match(r.err.join('\n'), /Trust certificate valid until \d{4}-/);
    for (const name of ['device.key', 'device.crt', 'device.json', 'trust.key', 'trust.crt', 'session.json']) assert.equal(await mode(join(home(), name)), 0o600, name);
    assert.equal(await mode(home()), 0o700);

    assert.ok(server !== undefined);
    const user = await server.store.getUserByName('alice');
    assert.ok(user !== undefined);
    const device = await server.store.getDevice(state.id);
    assert.ok(device !== undefined);
    assert.equal(device.userId, user.id);
    assert.equal(device.hostname, 'laptop-1');
    assert.equal(device.ownership, 'corporate-dedicated', 'from the managed client config');
    // The server holds the public half of the key made here.
    const publicHere = createPublicKey(await readFile(join(home(), 'device.key'), 'utf8')).export({ type: 'spki', format: 'pem' }).toString();
    assert.equal(device.publicKey?.trim(), publicHere.trim());

    const trustCert = await readFile(join(home(), 'trust.crt'), 'utf8');
    const uris = identityUris(trustCert);
    assert.ok(uris.includes(`causeway://user/${user.id}`), uris.join(' '));
    assert.ok(uris.includes(`causeway://device/${state.id}`), uris.join(' '));
    const cert = new X509Certificate(trustCert);
    assert.ok(Date.parse(cert.validTo) - Date.now() <= 5 * 60_000, 'a 5-minute certificate (the server option)');
    assert.ok(new X509Certificate(trustCert).checkIssued(new X509Certificate(await readFile(join(home(), 'ca.crt'), 'utf8'))), 'ca.crt is the issuer, for causeway proxy');
  });

  void test('a second login reuses the device and its key', async () => {
    const keyBefore = await readFile(join(home(), 'device.key'), 'utf8');
    const r = await login(home());
    assert.equal((await deviceJson(home())).id, firstId);
    assert.match(r.err.join('\n'), new RegExp(`This device is ${firstId}`));
    assert.equal(await readFile(join(home(), 'device.key'), 'utf8'), keyBefore);
    assert.ok(server !== undefined);
    const user = await server.store.getUserByName('alice');
    assert.equal((await server.store.listDevices({ userId: user?.id ?? '' })).length, 1);
  });

  void test('--ownership is told to the server at registration and a bad value is refused', async () => {
    const other = join(dir, 'home-ownership');
    const bad = await run(other, ['login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin', '--ownership', 'mine'], `${PASSWORD}\n`);
    assert.equal(bad.error?.code, 'BAD_FLAGS');
    await login(other, ['--ownership', 'employee-owned']);
    assert.ok(server !== undefined);
    assert.equal((await server.store.getDevice((await deviceJson(other)).id))?.ownership, 'employee-owned');
  });

  void test('whoami shows the device, its trust level and the trust certificate expiry', async () => {
    const r = await run(home(), ['whoami']);
    assert.equal(r.error, undefined, r.error?.message);
    const text = r.out.join('\n');
    assert.match(text, new RegExp(`^device: +${firstId} \\(laptop-1, linux\\)$`, 'm'));
    assert.match(text, /^trust: +High/m);
    assert.match(text, /^trust cert: +valid until \d{4}-/m);
  });

  void test('device report moves the trust level with the factors reported, and explains what to fix', async () => {
    factors = { ...GOOD, diskEncryption: false };
    let r = await run(home(), ['device', 'report']);
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(r.out.join('\n'), /Trust level: Medium/);
    assert.match(r.out.join('\n'), /diskEncryption/);

    factors = { ...GOOD, firewall: false };
    r = await run(home(), ['device', 'report']);
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(r.out.join('\n'), /Trust level: AlwaysDeny/);
    assert.match(r.out.join('\n'), /firewall/);
    assert.match(r.err.join('\n'), /not renewed at AlwaysDeny/);

    const show = await run(home(), ['device', 'show']);
    assert.equal(show.error, undefined, show.error?.message);
    assert.match(show.out.join('\n'), new RegExp(`^device: +${firstId}$`, 'm'));
    assert.match(show.out.join('\n'), /Trust level: AlwaysDeny/);

    factors = GOOD;
    r = await run(home(), ['device', 'report']);
    assert.match(r.out.join('\n'), /Trust level: High/);
  });

  void test('a login at AlwaysDeny stands, saying why no trust certificate was issued', async () => {
    factors = { ...GOOD, firewall: false };
    try {
      const r = await login(home());
      assert.match(r.err.join('\n'), /Logged in to/);
      assert.match(r.err.join('\n'), /No trust certificate: .*AlwaysDeny.*\(always-deny\)/);
    } finally {
      factors = GOOD;
      await run(home(), ['device', 'report']);
    }
  });

  void test('the proxy renewal replaces a 5-minute trust certificate at 2/3 of its lifetime, and the proxy\'s files pick it up', async () => {
    const scheduled: Array<{ fn: () => void; ms: number }> = [];
    const timers: Timers = { setTimeout: (fn, ms) => scheduled.push({ fn, ms }), clearTimeout: () => undefined };
    const result: Run = { out: [], err: [], error: undefined };
    const lines: string[] = [];
    const logger = createLogger({ name: 'test', level: 'info', destination: new Writable({ write: (chunk: Buffer, _e, cb) => { lines.push(chunk.toString()); cb(); } }) });
    const trust = trustFromFiles({ certPath: join(home(), 'trust.crt'), keyPath: join(home(), 'trust.key'), caPath: join(home(), 'ca.crt') });
    const before = trust();
    const ctx = deviceContext(deviceIo(home(), result));
    const held = await ctx.files.readTrust();
    assert.ok(held !== undefined);
    const renewal = await startTrustRenewal({ ctx, clock: systemClock, logger, timers });
    try {
      assert.equal(renewal.nextAt(), renewalTime(held));
      // 5 minutes from issuance (notBefore is backdated for clock skew): renewed 3 min 20 s after issuance.
      assert.equal(held.notAfter - held.issuedAt, 5 * 60_000);
      assert.equal(renewalTime(held) - held.issuedAt, 200_000);
      assert.equal(scheduled.length, 1);
      assert.ok(scheduled[0].ms > 0 && scheduled[0].ms <= 200_000, `the timer is set for the renewal time (${scheduled[0].ms} ms)`);
      const outcome = await renewal.renewNow();
      assert.equal(outcome?.ok, true, JSON.stringify(outcome));
      const after = trust();
      assert.notEqual(after.certPem, before.certPem, 'a new certificate for the next connection');
      assert.ok(new X509Certificate(after.certPem).checkPrivateKey(createPrivateKey(after.keyPem)));
      assert.match(lines.join(''), /trust certificate renewed/);

      factors = { ...GOOD, firewall: false };
      assert.equal((await run(home(), ['device', 'report'])).error, undefined);
      const refused = await renewal.renewNow();
      assert.equal(refused?.ok, false);
      assert.match(lines.join(''), /"reason":"always-deny".*not renewed/);
      assert.equal(trust().certPem, after.certPem, 'a refusal leaves the certificate in place');
    } finally {
      renewal.close();
      factors = GOOD;
      await run(home(), ['device', 'report']);
    }
  });

  void test('a device the server no longer knows is registered again at the next login', async () => {
    assert.ok(server !== undefined);
    await server.store.unregisterDevice(firstId, { actor: 'test' });
    const r = await login(home());
    const state = await deviceJson(home());
    assert.notEqual(state.id, firstId);
    assert.match(r.err.join('\n'), new RegExp(`Registered this device as ${state.id}`));
    assert.ok(identityUris(await readFile(join(home(), 'trust.crt'), 'utf8')).includes(`causeway://device/${state.id}`));
  });

  void test('CN-09: a device key others can read, or device files others can write, are refused', async () => {
    const key = join(home(), 'device.key');
    await chmod(key, 0o640);
    let r = await run(home(), ['device', 'report']);
    assert.equal(r.error?.code, 'DEVICE_FILE_UNSAFE', r.error?.message);
    await chmod(key, 0o600);
    const state = join(home(), 'device.json');
    await chmod(state, 0o620);
    r = await run(home(), ['device', 'show']);
    assert.equal(r.error?.code, 'DEVICE_FILE_UNSAFE', r.error?.message);
    await chmod(state, 0o600);
    await chmod(home(), 0o770);
    r = await run(home(), ['device', 'report']);
    assert.ok(r.error !== undefined && /UNSAFE/.test(r.error.code ?? ''), r.error?.message);
    await chmod(home(), 0o700);
    r = await run(home(), ['device', 'report']);
    assert.equal(r.error, undefined, r.error?.message);
  });
});

