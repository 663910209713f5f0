/** Tests of the test kit's own helpers: the certificate factory, the ZIP reader and the kubectl kit. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import { parse } from 'yaml';
import { makeClientCert, makeServerCert, makeTestCa } from './certs.ts';
import { DEFAULT_TEST_TOKEN, kubectlBinaries, repoRoot, runKubectl, spawnKubectl, writeKubeconfig } from './kubectl.ts';
import { listZip, readZipEntry } from './zip.ts';
import { startFakeKube } from './fake-kube/index.ts';

void describe('certs', () => {
  void test('a server certificate names its hosts and chains to the test CA', async () => {
    const ca = await makeTestCa();
    const issued = await makeServerCert(ca, { dnsNames: ['kube.demo.causeway.test'], ipAddresses: ['127.0.0.1'] });
    const cert = new X509Certificate(issued.certPem);
    const caCert = new X509Certificate(issued.caPem);
    assert.ok(cert.verify(caCert.publicKey));
    assert.ok(cert.checkIssued(caCert));
    assert.equal(cert.checkHost('kube.demo.causeway.test'), 'kube.demo.causeway.test');
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(cert.checkHost('other.causeway.test'), undefined);
    const v6 = new X509Certificate((await makeServerCert(ca, { ipAddresses: ['::1', '::ffff:10.0.0.1'] })).certPem);
    assert.equal(v6.subjectAltName, 'IP Address:0:0:0:0:0:0:0:1, IP Address:0:0:0:0:0:FFFF:A00:1');
    assert.equal(caCert.ca, true);
    assert.equal(cert.ca, false);
  });

  void test('TLS with the issued certificates works both ways (server auth and client auth)', async (t) => {
    const ca = await makeTestCa();
    const server = await makeServerCert(ca, { dnsNames: ['localhost'] });
    const client = await makeClientCert(ca, { commonName: 'alice', organizations: ['eng'] });
    const https = createServer({ cert: server.certPem, key: server.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.end(`${String(peer.subject.CN)}/${String(peer.subject.O)}`);
    });
    await new Promise<void>((r) => https.listen(0, '127.0.0.1', r));
    t.after(() => new Promise<void>((r) => https.close(() => r())));
    const port = (https.address() as AddressInfo).port;
    const body = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: ca.certPem, cert: client.certPem, key: client.keyPem }, () => {
        socket.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      });
      let data = '';
      socket.on('data', (d: Buffer) => (data += d.toString()));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
    assert.match(body, /alice\/eng$/);
  });
});

/** Builds a ZIP archive in memory: one stored and one deflated entry, plus a directory. */
function buildZip(files: Array<{ name: string; data: Buffer; deflate: boolean }>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const body = f.deflate ? deflateRawSync(f.data) : f.data;
    const name = Buffer.from(f.name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(f.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc32(f.data), 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(f.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(f.deflate ? 8 : 0, 10);
    central.writeUInt32LE(crc32(f.data), 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(f.data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, body);
    centrals.push(central, name);
    offset += 30 + name.length + body.length;
  }
  const dir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(dir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, dir, end]);
}

void describe('zip reader', () => {
  void test('lists entries and extracts stored and deflated ones, checking the CRC', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'zip-test-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const big = Buffer.from('kubectl '.repeat(10_000));
    const path = join(dir, 'a.zip');
    await writeFile(path, buildZip([{ name: 'tools/', data: Buffer.alloc(0), deflate: false }, { name: 'tools/readme', data: Buffer.from('hello'), deflate: false }, { name: 'tools/kubectl', data: big, deflate: true }]));
    const entries = await listZip(path);
    assert.deepEqual(entries.map((e) => e.name), ['tools/', 'tools/readme', 'tools/kubectl']);
    assert.equal((await readZipEntry(path, entries[1])).toString(), 'hello');
    assert.ok((await readZipEntry(path, entries[2])).equals(big));
    await assert.rejects(readZipEntry(path, { ...entries[2], crc32: entries[2].crc32 ^ 1 }), /CRC mismatch/);
    await writeFile(join(dir, 'b.zip'), 'not a zip at all');
    await assert.rejects(listZip(join(dir, 'b.zip')), /no end of central directory/);
  });
});

void describe('kubectl kit', () => {
  void test('kubectlBinaries finds the extracted kubectl 1.35, executable and reused from the cache', async () => {
    const binaries = await kubectlBinaries();
    const layer = binaries.find((b) => b.version.startsWith('1.35.'));
    assert.ok(layer !== undefined, JSON.stringify(binaries));
    assert.equal(layer.path, join(repoRoot, '.cache', 'kubectl', layer.version, 'kubectl'));
    assert.equal((await stat(layer.path)).mode & 0o777, 0o755);
    assert.deepEqual(await kubectlBinaries(), binaries);
    const marker = JSON.parse(await readFile(join(repoRoot, '.cache', 'kubectl', layer.version, 'source.json'), 'utf8')) as { version: string };
    assert.equal(marker.version, layer.version);
  });

  void test('writeKubeconfig writes one cluster, user and context, with the CA, proxy and namespace', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'kubeconfig-test-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const path = writeKubeconfig(dir, { server: 'https://kube.demo.causeway.test:443', caPem: 'PEM', proxyUrl: 'http://127.0.0.1:8081', namespace: 'team-a' });
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const config = parse(await readFile(path, 'utf8')) as {
      clusters: Array<{ cluster: Record<string, string> }>;
      users: Array<{ user: Record<string, string> }>;
      contexts: Array<{ context: Record<string, string> }>;
      'current-context': string;
    };
    assert.deepEqual(config.clusters[0].cluster, { server: 'https://kube.demo.causeway.test:443', 'certificate-authority-data': Buffer.from('PEM').toString('base64'), 'proxy-url': 'http://127.0.0.1:8081' });
    assert.deepEqual(config.users[0].user, { token: DEFAULT_TEST_TOKEN });
    assert.deepEqual(config.contexts[0].context, { cluster: 'test', user: 'test', namespace: 'team-a' });
    assert.equal(config['current-context'], 'test');
    const withExec = parse(await readFile(writeKubeconfig(dir, { server: 'https://x', caPem: 'PEM', exec: { command: 'causeway', args: ['kube-credential'] } }), 'utf8')) as { users: Array<{ user: Record<string, unknown> }> };
    assert.equal(withExec.users[0].user.token, undefined);
    assert.equal((withExec.users[0].user.exec as { command: string }).command, 'causeway');
  });

  void test("runKubectl never sees the developer's KUBECONFIG or HOME", async (t) => {
    const [bin] = await kubectlBinaries();
    const dir = await mkdtemp(join(tmpdir(), 'kubeconfig-leak-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const leaked = writeKubeconfig(dir, { server: 'https://leaked.example:6443', caPem: 'PEM', fileName: 'leaked' });
    const saved = process.env.KUBECONFIG;
    process.env.KUBECONFIG = leaked;
    t.after(() => {
      if (saved === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = saved;
    });
    const r = await runKubectl(bin.path, ['config', 'view', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /leaked\.example/);
    const own = await runKubectl(bin.path, ['config', 'view', '-o', 'json'], { kubeconfig: leaked });
    assert.match(own.stdout, /leaked\.example/);
  });

  void test('runKubectl kills a command that outlives its timeout, and spawnKubectl reads lines until close', async (t) => {
    const [bin] = await kubectlBinaries();
    const kube = await startFakeKube({ pods: 1 });
    const dir = await mkdtemp(join(tmpdir(), 'kubectl-timeout-'));
    t.after(async () => {
      await kube.close();
      await rm(dir, { recursive: true, force: true });
    });
    const kubeconfig = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem });
    const r = await runKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig, timeoutMs: 2000 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.match(r.stdout, /web-0/);

    const proc = await spawnKubectl(bin.path, ['get', 'pods', '-w', '--output-watch-events'], { kubeconfig });
    t.after(() => proc.close());
    assert.match(await proc.waitForLine(/web-0/), /ADDED\s+web-0/);
    await proc.close();
    const exit = await proc.exited;
    assert.ok(exit.signal === 'SIGTERM' || exit.code !== null);
    await assert.rejects(proc.waitForLine('never printed', { timeoutMs: 1000 }), /exited/);
  });
});
