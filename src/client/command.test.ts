import { test, describe, before } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { Command } from 'commander';
import { CertificateAuthority, issueKeyAndCert, mtlsServerOptions } from '../lib/pki/index.ts';
import { formatConnectResponse } from '../lib/net/connect-request.ts';
import { parseSpecDocuments } from '../lib/spec/index.ts';
import type { SpecObject } from '../lib/spec/index.ts';
import { errorCode } from '../lib/errors.ts';
import { chooseListenPort, describePortHolder, registerProxyCommand, resolveProxyTarget, startLine, trustFromFiles } from './command.ts';
import type { ClientProxy } from './proxy.ts';

const DOMAIN = 'mykube.corp.example.com';

let ca: CertificateAuthority;
let accessTierKeys: { certPem: string; keyPem: string; caPem: string };
let trustA: { certPem: string; keyPem: string; caPem: string; serial: string };
let trustB: { certPem: string; keyPem: string; caPem: string; serial: string };

before(async () => {
  ca = await CertificateAuthority.create();
  accessTierKeys = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
  trustA = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
  trustB = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
});

function catalogYaml(opts: { accessTierAddress: string; listenPort: number; allowUserOverride: boolean; accessTier?: string }): string {
  return `
apiVersion: causeway/v1
kind: AccessTier
metadata: {name: other-edge}
spec: {cluster: other-cluster, address: "127.0.0.1:1"}
---
apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: global-edge, address: "${opts.accessTierAddress}"}
---
apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-2}
spec: {cluster: global-edge, address: "127.0.0.1:2"}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: prod-k8s}
spec:
  type: kubernetes
  cluster: global-edge
  accessTier: "${opts.accessTier ?? 'edge-1'}"
  domain: ${DOMAIN}
  port: 443
  backend: {dnsOverride: "kube-proxy.causeway.svc.cluster.local:8443"}
  client: {listenPort: ${opts.listenPort}, allowUserOverride: ${opts.allowUserOverride}}
  kubernetes: {clusterName: prod, caPublicKey: ${JSON.stringify(ca.certPem)}}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: orders-db}
spec:
  type: tcp
  cluster: global-edge
  accessTier: edge-2
  domain: orders-db.corp.example.com
  port: 5432
  backend: {target: "orders.db.internal:5432"}
  client: {listenPort: 15432}
`;
}

function parseCatalog(yaml: string): SpecObject[] {
  const parsed = parseSpecDocuments(yaml);
  if (!parsed.ok) throw new Error(`fixture catalog is invalid: ${JSON.stringify(parsed.problems)}`);
  return parsed.objects;
}

async function tempHome(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'causeway-proxy-cmd-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function writeTrust(dir: string, keys: { certPem: string; keyPem: string; caPem: string }): Promise<void> {
  // Written beside and renamed into place, as a login would, so a reader never sees half a file.
  for (const [name, text] of [['trust.crt', keys.certPem], ['trust.key', keys.keyPem], ['ca.crt', keys.caPem]] as const) {
    await fs.writeFile(path.join(dir, `${name}.tmp`), text, { mode: 0o600 });
    await fs.rename(path.join(dir, `${name}.tmp`), path.join(dir, name));
  }
}

async function freePort(): Promise<number> {
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  probe.close();
  await once(probe, 'close');
  return port;
}

/** A minimal access tier: answers any CONNECT with 200 and echoes; records the client certificate serials. */
async function startEchoAccessTier(t: TestContext): Promise<{ address: string; serials: string[] }> {
  const serials: string[] = [];
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer(mtlsServerOptions(accessTierKeys), (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    serials.push(socket.getPeerX509Certificate()?.serialNumber ?? '');
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      socket.write(formatConnectResponse(200));
      if (head.length > end + 4) socket.write(head.slice(end + 4), 'latin1');
      socket.pipe(socket);
    };
    socket.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  });
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, serials };
}

/** Runs `causeway proxy ARGS` with the given home; resolves with the started proxy and the printed lines. */
async function runCommand(t: TestContext, home: string, args: string[]): Promise<{ proxy: ClientProxy; lines: string[] }> {
  const lines: string[] = [];
  let started: ClientProxy | undefined;
  const program = new Command('causeway').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerProxyCommand(program, {
    env: { CAUSEWAY_HOME: home },
    print: (line) => lines.push(line),
    onStarted: (proxy) => {
      started = proxy;
      t.after(() => proxy.close());
    },
  });
  await program.parseAsync(['proxy', ...args, '--log-level', 'silent'], { from: 'user' });
  assert.ok(started !== undefined, 'the command did not start a proxy');
  return { proxy: started, lines };
}

async function tunnelEcho(port: number, text: string): Promise<string> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.write(`CONNECT ${DOMAIN}:443 HTTP/1.1\r\nHost: ${DOMAIN}:443\r\n\r\n${text}`);
  let got = '';
  const expected = `HTTP/1.1 200 Connection established\r\n\r\n${text}`;
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    got += chunk.toString('latin1');
    if (got.length >= expected.length) break;
  }
  socket.destroy();
  return got;
}

void describe('causeway proxy', () => {
  void test('starts the proxy from the catalog and trust files under CAUSEWAY_HOME and prints what to run', async (t) => {
    const home = await tempHome(t);
    const tier = await startEchoAccessTier(t);
    const port = await freePort();
    await fs.writeFile(path.join(home, 'services.yaml'), catalogYaml({ accessTierAddress: tier.address, listenPort: port, allowUserOverride: false }));
    await writeTrust(home, trustA);
    const { proxy, lines } = await runCommand(t, home, ['prod-k8s']);
    assert.equal(proxy.port(), port);
    assert.deepEqual(lines, [`Proxying prod-k8s on 127.0.0.1:${port} — try: https_proxy=http://127.0.0.1:${port} kubectl get pods`]);
    assert.equal(await tunnelEcho(port, 'hello'), 'HTTP/1.1 200 Connection established\r\n\r\nhello');
    assert.deepEqual(tier.serials, [trustA.serial]);
  });

  void test('a trust certificate renewed on disk is used for the next connection without a restart', async (t) => {
    const home = await tempHome(t);
    const tier = await startEchoAccessTier(t);
    await fs.writeFile(path.join(home, 'services.yaml'), catalogYaml({ accessTierAddress: tier.address, listenPort: 8081, allowUserOverride: true }));
    await writeTrust(home, trustA);
    const { proxy } = await runCommand(t, home, ['prod-k8s', '--port', '0']);
    await tunnelEcho(proxy.port(), 'a');
    await writeTrust(home, trustB);
    await tunnelEcho(proxy.port(), 'b');
    assert.deepEqual(tier.serials, [trustA.serial, trustB.serial]);
  });

  void test('--config, --cert, --key and --ca point at files elsewhere', async (t) => {
    const home = await tempHome(t);
    const elsewhere = await tempHome(t);
    const tier = await startEchoAccessTier(t);
    const catalog = path.join(elsewhere, 'catalog.yaml');
    await fs.writeFile(catalog, catalogYaml({ accessTierAddress: tier.address, listenPort: 8081, allowUserOverride: true }));
    await writeTrust(elsewhere, trustB);
    const { proxy } = await runCommand(t, home, [
      'prod-k8s', '--port', '0', '--config', catalog,
      '--cert', path.join(elsewhere, 'trust.crt'), '--key', path.join(elsewhere, 'trust.key'), '--ca', path.join(elsewhere, 'ca.crt'),
    ]);
    assert.equal(await tunnelEcho(proxy.port(), 'x'), 'HTTP/1.1 200 Connection established\r\n\r\nx');
    assert.deepEqual(tier.serials, [trustB.serial]);
  });

  void test('a port already in use is PORT_IN_USE naming the port and, where it can tell, the process', async (t) => {
    const home = await tempHome(t);
    const holder = net.createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    t.after(() => holder.close());
    const { port } = holder.address() as net.AddressInfo;
    await fs.writeFile(path.join(home, 'services.yaml'), catalogYaml({ accessTierAddress: '127.0.0.1:9', listenPort: port, allowUserOverride: true }));
    await writeTrust(home, trustA);
    await assert.rejects(runCommand(t, home, ['prod-k8s']), (err: unknown) => {
      assert.equal(errorCode(err), 'PORT_IN_USE');
      const message = (err as Error).message;
      assert.ok(message.includes(String(port)), message);
      if (process.platform === 'linux') assert.ok(message.includes(`pid ${process.pid}`), message);
      assert.match(message, /--port/);
      return true;
    });
  });

  void test('--port is refused when the service does not allow overriding its port', async (t) => {
    const home = await tempHome(t);
    await fs.writeFile(path.join(home, 'services.yaml'), catalogYaml({ accessTierAddress: '127.0.0.1:9', listenPort: 8081, allowUserOverride: false }));
    await writeTrust(home, trustA);
    await assert.rejects(runCommand(t, home, ['prod-k8s', '--port', '9999']), (err: unknown) => errorCode(err) === 'PORT_OVERRIDE_NOT_ALLOWED');
  });

  void test('a missing catalog, an invalid catalog and missing trust files are user errors that say what to do', async (t) => {
    const home = await tempHome(t);
    await assert.rejects(runCommand(t, home, ['prod-k8s']), (err: unknown) => errorCode(err) === 'CATALOG_NOT_FOUND' && /--config/.test((err as Error).message));
    await fs.writeFile(path.join(home, 'services.yaml'), 'apiVersion: causeway/v1\nkind: Service\nmetadata: {name: x}\nspec: {type: tcp, port: 99999}\n');
    await assert.rejects(runCommand(t, home, ['x']), (err: unknown) => errorCode(err) === 'CATALOG_INVALID' && /spec\.port/.test((err as Error).message));
    await fs.writeFile(path.join(home, 'services.yaml'), catalogYaml({ accessTierAddress: '127.0.0.1:9', listenPort: 8081, allowUserOverride: false }));
    await assert.rejects(runCommand(t, home, ['prod-k8s']), (err: unknown) => errorCode(err) === 'TRUST_FILE_MISSING' && (err as Error).message.includes(path.join(home, 'trust.crt')));
  });

  void test('--port must be a port number', async (t) => {
    const home = await tempHome(t);
    await assert.rejects(runCommand(t, home, ['prod-k8s', '--port', '80a']), (err: unknown) => errorCode(err) === 'commander.invalidArgument');
  });
});

void describe('proxy command helpers', () => {
  void test('resolveProxyTarget uses the named access tier, or for "*" the first of the service\'s cluster', () => {
    const named = resolveProxyTarget(parseCatalog(catalogYaml({ accessTierAddress: 'edge.example.com:8443', listenPort: 8081, allowUserOverride: false })), 'prod-k8s');
    assert.equal(named.accessTierAddress, 'edge.example.com:8443');
    const any = resolveProxyTarget(parseCatalog(catalogYaml({ accessTierAddress: 'edge.example.com:8443', listenPort: 8081, allowUserOverride: false, accessTier: '*' })), 'prod-k8s');
    assert.equal(any.accessTierAddress, 'edge.example.com:8443');
    assert.equal(resolveProxyTarget(parseCatalog(catalogYaml({ accessTierAddress: 'e:1', listenPort: 1, allowUserOverride: false })), 'orders-db').accessTierAddress, '127.0.0.1:2');
  });

  void test('resolveProxyTarget names the known services when the service is unknown, and the missing access tier', () => {
    const objects = parseCatalog(catalogYaml({ accessTierAddress: 'e:1', listenPort: 1, allowUserOverride: false, accessTier: 'edge-9' }));
    assert.throws(() => resolveProxyTarget(objects, 'staging-k8s'), (err: unknown) => errorCode(err) === 'UNKNOWN_SERVICE' && /orders-db, prod-k8s/.test((err as Error).message));
    assert.throws(() => resolveProxyTarget(objects, 'prod-k8s'), (err: unknown) => errorCode(err) === 'NO_ACCESS_TIER' && /edge-9/.test((err as Error).message));
  });

  void test('chooseListenPort keeps the service port unless overriding is allowed', () => {
    const [locked, open] = [false, true].map((allow) => resolveProxyTarget(parseCatalog(catalogYaml({ accessTierAddress: 'e:1', listenPort: 8081, allowUserOverride: allow })), 'prod-k8s').service);
    assert.ok(locked !== undefined && open !== undefined);
    assert.equal(chooseListenPort(locked, undefined), 8081);
    assert.equal(chooseListenPort(locked, 8081), 8081);
    assert.throws(() => chooseListenPort(locked, 9000), (err: unknown) => errorCode(err) === 'PORT_OVERRIDE_NOT_ALLOWED');
    assert.equal(chooseListenPort(open, 9000), 9000);
  });

  void test('startLine tells kubectl users what to run and tcp users where to point their client', () => {
    const objects = parseCatalog(catalogYaml({ accessTierAddress: 'e:1', listenPort: 8081, allowUserOverride: false }));
    const kube = resolveProxyTarget(objects, 'prod-k8s').service;
    const db = resolveProxyTarget(objects, 'orders-db').service;
    assert.equal(startLine(kube, 8081), 'Proxying prod-k8s on 127.0.0.1:8081 — try: https_proxy=http://127.0.0.1:8081 kubectl get pods');
    assert.equal(startLine(db, 15432), 'Proxying orders-db on 127.0.0.1:15432 — point your client at 127.0.0.1:15432');
  });

  void test('trustFromFiles re-reads only when a file changes', async (t) => {
    const dir = await tempHome(t);
    await writeTrust(dir, trustA);
    const get = trustFromFiles({ certPath: path.join(dir, 'trust.crt'), keyPath: path.join(dir, 'trust.key'), caPath: path.join(dir, 'ca.crt') });
    const first = get();
    assert.equal(first.certPem, trustA.certPem);
    assert.equal(get(), first);
    await writeTrust(dir, trustB);
    assert.equal(get().certPem, trustB.certPem);
    await fs.rm(path.join(dir, 'trust.key'));
    assert.throws(() => get(), (err: unknown) => errorCode(err) === 'TRUST_FILE_MISSING');
  });

  void test('describePortHolder names this process for a port it listens on', async (t) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const { port } = server.address() as net.AddressInfo;
    const holder = describePortHolder(port);
    if (process.platform === 'linux') assert.match(holder ?? '', new RegExp(`\\(pid ${process.pid}\\)`));
    else assert.ok(holder === undefined || holder.includes(String(process.pid)));
  });
});
