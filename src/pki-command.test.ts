import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { errorCode } from './lib/errors.ts';
import { checkPeerCertificate } from './lib/pki/index.ts';
import { initCaDir, loadCaDir, parseLifetime, registerCaCommands } from './pki-command.ts';

/** Runs `causeway <args>` against a fresh program; returns what it printed. */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const lines: string[] = [];
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
  registerCaCommands(program, { out: (line) => lines.push(line), env });
  await program.parseAsync(args, { from: 'user' });
  return lines;
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.equal(errorCode(err), code, err instanceof Error ? err.message : String(err));
    return true;
  });
}

void describe('causeway ca', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'causeway-ca-cli-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  void test('init writes the certificate, the encrypted key (0600) and a generated passphrase (0600), and says where', async () => {
    const dir = join(root, 'generated');
    const lines = await cli(['ca', 'init', '--data-dir', dir]);
    assert.equal(await mode(join(dir, 'ca.key')), 0o600);
    assert.equal(await mode(join(dir, 'ca-passphrase')), 0o600);
    assert.equal(await mode(dir), 0o700);
    assert.match(await readFile(join(dir, 'ca.key'), 'utf8'), /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    assert.ok(new X509Certificate(await readFile(join(dir, 'ca.crt'))).ca);
    assert.ok(lines.some((l) => l.includes(join(dir, 'ca-passphrase'))), lines.join('\n'));
    const passphrase = (await readFile(join(dir, 'ca-passphrase'), 'utf8')).trim();
    assert.ok(passphrase.length >= 40);
    assert.ok(!lines.join('\n').includes(passphrase), 'the passphrase itself is never printed');
    const loaded = await loadCaDir(dir, undefined, { env: {} });
    assert.equal(loaded.certPem, await readFile(join(dir, 'ca.crt'), 'utf8'));
  });

  void test('init refuses to overwrite an existing CA', async () => {
    const dir = join(root, 'once');
    await cli(['ca', 'init', '--data-dir', dir]);
    const before = await readFile(join(dir, 'ca.key'), 'utf8');
    await rejectsWithCode(cli(['ca', 'init', '--data-dir', dir]), 'CA_EXISTS');
    await rejectsWithCode(initCaDir(dir), 'CA_EXISTS');
    assert.equal(await readFile(join(dir, 'ca.key'), 'utf8'), before);
  });

  void test('init takes the passphrase from --passphrase-file, else from CAUSEWAY_CA_PASSPHRASE, and then writes none', async () => {
    const fromFile = join(root, 'from-file');
    const passFile = join(root, 'pass.txt');
    await writeFile(passFile, 'file secret\n');
    const lines = await cli(['ca', 'init', '--data-dir', fromFile, '--passphrase-file', passFile], { CAUSEWAY_CA_PASSPHRASE: 'env secret' });
    await assert.rejects(stat(join(fromFile, 'ca-passphrase')));
    assert.ok(!lines.some((l) => l.includes('passphrase:')));
    await loadCaDir(fromFile, 'file secret', { env: {} });

    const fromEnv = join(root, 'from-env');
    await cli(['ca', 'init', '--data-dir', fromEnv], { CAUSEWAY_CA_PASSPHRASE: 'env secret' });
    await assert.rejects(stat(join(fromEnv, 'ca-passphrase')));
    await loadCaDir(fromEnv, undefined, { env: { CAUSEWAY_CA_PASSPHRASE: 'env secret' } });
    await rejectsWithCode(loadCaDir(fromEnv, undefined, { env: {} }), 'CA_PASSPHRASE_MISSING');
    await rejectsWithCode(loadCaDir(fromEnv, 'not it', { env: {} }), 'CA_KEY_DECRYPT_FAILED');
  });

  void test('init refuses an empty passphrase', async () => {
    const passFile = join(root, 'empty.txt');
    await writeFile(passFile, '\n');
    await rejectsWithCode(cli(['ca', 'init', '--data-dir', join(root, 'empty'), '--passphrase-file', passFile]), 'CA_PASSPHRASE_EMPTY');
  });

  void test('issue writes a trust certificate, its key (0600) and the CA certificate, and prints the paths', async () => {
    const dir = join(root, 'issuer');
    const out = join(root, 'out');
    await cli(['ca', 'init', '--data-dir', dir]);
    const lines = await cli(['ca', 'issue', 'trust', '--user', 'alice', '--device', 'laptop-1', '--lifetime', '5m', '--data-dir', dir, '--out', out]);
    const certPath = join(out, 'alice-laptop-1.crt');
    const keyPath = join(out, 'alice-laptop-1.key');
    for (const p of [certPath, keyPath, join(out, 'ca.crt')]) assert.ok(lines.some((l) => l.includes(p)), `prints ${p}`);
    assert.equal(await mode(keyPath), 0o600);
    const cert = new X509Certificate(await readFile(certPath));
    const caCert = new X509Certificate(await readFile(join(out, 'ca.crt')));
    assert.ok(cert.checkPrivateKey(createPrivateKey(await readFile(keyPath, 'utf8'))));
    const check = checkPeerCertificate(cert, 'trust', { trustedCas: [caCert] });
    assert.ok(check.ok);
    assert.equal(check.identity.user, 'alice');
    assert.equal(check.identity.device, 'laptop-1');
    assert.equal(cert.validToDate.getTime() - cert.validFromDate.getTime(), 10 * 60_000, '5 minutes backdated plus 5 minutes of lifetime');
  });

  void test('issue writes a server certificate with DNS and IP names, and replaces an older one in place', async () => {
    const dir = join(root, 'issuer2');
    const out = join(root, 'out2');
    await cli(['ca', 'init', '--data-dir', dir]);
    const args = ['ca', 'issue', 'kube-proxy', '--name', 'kp-1', '--dns', 'kube.example.com,kp.internal', '--ip', '127.0.0.1,::1', '--lifetime', '365d', '--data-dir', dir, '--out', out];
    await cli(args);
    const first = await readFile(join(out, 'kp-1.crt'), 'utf8');
    await cli(args);
    const cert = new X509Certificate(await readFile(join(out, 'kp-1.crt')));
    assert.notEqual(cert.toString(), first);
    assert.equal(cert.subjectAltName, 'DNS:kube.example.com, DNS:kp.internal, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, URI:causeway://kube-proxy/kp-1');
    assert.ok(checkPeerCertificate(cert, 'kube-proxy').ok);
    assert.equal(await mode(join(out, 'kp-1.key')), 0o600);
  });

  void test('issue refuses unknown types, wrong identity flags, bad lifetimes, a missing CA and the name "ca"', async () => {
    const dir = join(root, 'issuer3');
    const out = join(root, 'out3');
    await cli(['ca', 'init', '--data-dir', dir]);
    const base = ['--data-dir', dir, '--out', out];
    await rejectsWithCode(cli(['ca', 'issue', 'admin', '--name', 'x', ...base]), 'CERT_BAD_TYPE');
    await rejectsWithCode(cli(['ca', 'issue', 'trust', '--user', 'alice', ...base]), 'CERT_BAD_IDENTITY');
    await rejectsWithCode(cli(['ca', 'issue', 'connector', '--user', 'alice', ...base]), 'CERT_BAD_IDENTITY');
    await rejectsWithCode(cli(['ca', 'issue', 'device', '--device', '../etc', ...base]), 'CERT_BAD_IDENTITY');
    await rejectsWithCode(cli(['ca', 'issue', 'trust', '--user', 'a', '--device', 'b', '--lifetime', '2d', ...base]), 'CERT_LIFETIME_OUT_OF_RANGE');
    await rejectsWithCode(cli(['ca', 'issue', 'trust', '--user', 'a', '--device', 'b', '--lifetime', 'soon', ...base]), 'BAD_DURATION');
    await rejectsWithCode(cli(['ca', 'issue', 'connector', '--name', 'ca', ...base]), 'CERT_BAD_NAME');
    await rejectsWithCode(cli(['ca', 'issue', 'connector', '--name', 'dc1', '--data-dir', join(root, 'nothing'), '--out', out], { CAUSEWAY_CA_PASSPHRASE: 'x' }), 'CA_NOT_FOUND');
    await assert.rejects(stat(join(out, 'dc1.crt')));
  });

  void test('parseLifetime reads seconds, minutes, hours and days', () => {
    assert.equal(parseLifetime('90s'), 90_000);
    assert.equal(parseLifetime('5m'), 300_000);
    assert.equal(parseLifetime('8h'), 8 * 3_600_000);
    assert.equal(parseLifetime('365d'), 365 * 86_400_000);
    for (const bad of ['', '8', 'h', '-1h', '1.5h', '8 hours', '1e3s']) assert.throws(() => parseLifetime(bad), (err: unknown) => errorCode(err) === 'BAD_DURATION');
  });
});
