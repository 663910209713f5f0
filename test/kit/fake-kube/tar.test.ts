/**
 * The fake runtime's tar and pod filesystem: archives round-trip (long names through PAX), GNU
 * tar's member-name rules (leading `/` removed, `..` refused), and the exec commands over them.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import { runFakeCommand } from './exec.ts';
import type { ExecResult } from './exec.ts';
import { PodFilesystem } from './files.ts';
import { readTar, writeTar } from './tar.ts';

async function run(fs: PodFilesystem, command: string[], stdin?: Buffer): Promise<{ result: ExecResult; stdout: Buffer; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const sink = (into: Buffer[]): Writable =>
    new Writable({
      write(chunk: Buffer, _e, cb) {
        into.push(chunk);
        cb();
      },
    });
  const input = stdin === undefined ? null : new PassThrough();
  input?.end(stdin);
  const result = await runFakeCommand(command, { stdin: input, stdout: sink(out), stderr: sink(err), tty: false, signal: new AbortController().signal }, { namespace: 'default', pod: 'web-0', container: 'main', fs });
  return { result, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() };
}

void describe('tar archives', () => {
  void test('files and directories round-trip, including names too long for ustar', () => {
    const long = `${'deep/'.repeat(60)}file.txt`;
    const data = randomBytes(1500);
    const archive = writeTar([
      { name: 'dir', type: 'dir', mode: 0o755, mtime: 1_700_000_000, data: Buffer.alloc(0) },
      { name: 'dir/a.bin', type: 'file', mode: 0o600, mtime: 1_700_000_001, data },
      { name: long, type: 'file', mode: 0o644, mtime: 1_700_000_002, data: Buffer.from('x') },
    ]);
    assert.equal(archive.length % 512, 0);
    const parsed = readTar(archive);
    assert.equal(parsed.error, undefined);
    assert.deepEqual(parsed.entries.map((e) => [e.name, e.type, e.mode, e.mtime]), [
      ['dir/', 'dir', 0o755, 1_700_000_000],
      ['dir/a.bin', 'file', 0o600, 1_700_000_001],
      [long, 'file', 0o644, 1_700_000_002],
    ]);
    assert.ok(parsed.entries[1].data.equals(data));
  });

  void test('garbage and truncated archives are errors; an empty input is not an archive', () => {
    assert.match(readTar(Buffer.alloc(0)).error ?? '', /does not look like a tar archive/);
    assert.match(readTar(randomBytes(1024)).error ?? '', /does not look like a tar archive/);
    const whole = writeTar([{ name: 'f', type: 'file', mode: 0o644, mtime: 0, data: Buffer.alloc(2000, 1) }]);
    assert.match(readTar(whole.subarray(0, 1024)).error ?? '', /Unexpected EOF/);
  });
});

void describe('the fake runtime on the pod filesystem', () => {
  void test('tar cf - PATH archives a tree with the leading slash removed, as GNU tar does', async () => {
    const fs = new PodFilesystem();
    fs.writeFile('/srv/app/config.yaml', 'a: 1\n');
    fs.writeFile('/srv/app/data/blob', randomBytes(10));
    const { result, stdout, stderr } = await run(fs, ['tar', 'cf', '-', '/srv/app']);
    assert.deepEqual(result, { exitCode: 0 });
    assert.match(stderr, /Removing leading `\/' from member names/);
    assert.deepEqual(readTar(stdout).entries.map((e) => e.name), ['srv/app/', 'srv/app/config.yaml', 'srv/app/data/', 'srv/app/data/blob']);
    const missing = await run(fs, ['tar', 'cf', '-', '/nope']);
    assert.deepEqual(missing.result, { exitCode: 2 });
    assert.match(missing.stderr, /\/nope: Cannot stat: No such file or directory/);
  });

  void test('tar -xmf - -C DIR extracts under DIR and refuses members that climb out with ..', async () => {
    const fs = new PodFilesystem();
    const archive = writeTar([
      { name: 'report.txt', type: 'file', mode: 0o640, mtime: 0, data: Buffer.from('ok\n') },
      { name: '../../etc/passwd', type: 'file', mode: 0o644, mtime: 0, data: Buffer.from('pwned') },
      { name: '/abs/x', type: 'file', mode: 0o644, mtime: 0, data: Buffer.from('x') },
    ]);
    const { result, stderr } = await run(fs, ['tar', '--no-same-permissions', '--no-same-owner', '-xmf', '-', '-C', '/tmp'], archive);
    assert.deepEqual(result, { exitCode: 2 });
    assert.match(stderr, /Member name contains '\.\.'/);
    assert.equal(fs.readFile('/tmp/report.txt')?.toString(), 'ok\n');
    assert.equal(fs.readFile('/tmp/abs/x')?.toString(), 'x');
    assert.equal(fs.readFile('/etc/passwd'), undefined);
    const noDir = await run(fs, ['tar', '-xmf', '-', '-C', '/missing'], archive);
    assert.deepEqual(noDir.result, { exitCode: 2 });
    assert.match(noDir.stderr, /\/missing: Cannot open: No such file or directory/);
  });

  void test('test -d, cat FILE, ls and mkdir see the same files', async () => {
    const fs = new PodFilesystem();
    fs.writeFile('/data/x.txt', 'hello\n');
    assert.deepEqual((await run(fs, ['test', '-d', '/data'])).result, { exitCode: 0 });
    assert.deepEqual((await run(fs, ['test', '-d', '/data/x.txt'])).result, { exitCode: 1 });
    assert.equal((await run(fs, ['cat', '/data/x.txt'])).stdout.toString(), 'hello\n');
    assert.match((await run(fs, ['cat', '/data'])).stderr, /Is a directory/);
    assert.equal((await run(fs, ['ls', '/data'])).stdout.toString(), 'x.txt\n');
    assert.deepEqual((await run(fs, ['mkdir', '/a/b'])).result, { exitCode: 1 });
    assert.deepEqual((await run(fs, ['mkdir', '-p', '/a/b'])).result, { exitCode: 0 });
    assert.ok(fs.isDir('/a/b'));
  });
});
