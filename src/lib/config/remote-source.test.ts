import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { CertificateAuthority, issueKeyAndCert, mtlsServerOptions } from '../pki/index.ts';
import { createPolicyDecider } from '../policy/index.ts';
import { RemoteConfigSource, principalDirectory } from './remote-source.ts';
import type { RemoteConfigSourceOptions } from './remote-source.ts';
import type { ConfigSnapshot } from './snapshot.ts';
import { decodeRecord, encodeRecord } from './wire.ts';
import type { StreamRecord, WireDevice, WireSnapshot, WireUser } from './wire.ts';

// The client side of the config stream against a scripted HTTPS server speaking the wire format;
// the real server is tested with this client in src/control-plane/stream/stream.test.ts.

interface Connection {
  since: string | null;
  serial: string | undefined;
  res: ServerResponse;
  send(record: StreamRecord): void;
}

class FakeControlPlane {
  readonly connections: Connection[] = [];
  handler: (c: Connection) => void = () => undefined;
  #server: Server;
  #port = 0;
  #waiters: Array<() => void> = [];

  constructor(tls: { certPem: string; keyPem: string; caPem: string }) {
    this.#server = createServer({ ...mtlsServerOptions(tls), rejectUnauthorized: false }, (req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'https://x');
      const socket = req.socket as TLSSocket;
      const c: Connection = {
        since: url.searchParams.get('since'),
        serial: socket.getPeerX509Certificate()?.serialNumber,
        res,
        send: (record) => res.write(encodeRecord(record)),
      };
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      this.connections.push(c);
      this.handler(c);
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}`;
  }

  async listen(port = this.#port): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(port, '127.0.0.1', resolve));
    this.#port = (this.#server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Ends every open response (the peer sees the stream end). */
  dropAll(): void {
    for (const c of this.connections) c.res.destroy();
  }

  async waitForConnections(n: number, timeoutMs = 5000): Promise<Connection> {
    const deadline = Date.now() + timeoutMs;
    while (this.connections.length < n) {
      if (Date.now() > deadline) throw new Error(`only ${this.connections.length} connections, wanted ${n}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.connections[n - 1];
  }
}

const specs = {
  tier: { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-1' }, spec: { cluster: 'c1', address: 'edge:8443' } },
  role: { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'eng' }, spec: { users: { groups: ['eng'] } } },
  policy: (roles: string[]) => ({ apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { access: [{ roles, trustLevel: 'Low' }] } }),
  service: (port = 5432) => ({ apiVersion: 'causeway/v1', kind: 'Service', metadata: { name: 'db' }, spec: { type: 'tcp', cluster: 'c1', accessTier: 'edge-1', domain: 'db.example.com', port, backend: { target: 'db.internal:5432' }, policy: { name: 'p' } } }),
};

const alice: WireUser = { id: 'u-alice', name: 'alice', email: 'Alice@example.com', groups: ['eng'], disabled: false };
const laptop: WireDevice = { id: 'd-1', user: 'u-alice', ownership: 'corporate-dedicated', platform: 'linux', serial: 'SN1', known: true, mdmPresent: true, banned: false, trustLevel: 'High', trustReasons: [] };

function wireSnapshot(extra: Partial<WireSnapshot> = {}): WireSnapshot {
  return { services: [specs.service()], accessTiers: [specs.tier], connectors: [], policies: [specs.policy(['eng'])], roles: [specs.role], users: [alice], devices: [laptop], revokedSerials: [], ...extra };
}

function nextSnapshot(source: RemoteConfigSource, timeoutMs = 5000): Promise<ConfigSnapshot> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no new snapshot within ${timeoutMs} ms`));
    }, timeoutMs);
    const unsubscribe = source.subscribe((s) => {
      clearTimeout(timer);
      unsubscribe();
      resolve(s);
    });
  });
}

async function eventually(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

void describe('RemoteConfigSource', () => {
  let ca: CertificateAuthority;
  let peer: { certPem: string; keyPem: string; caPem: string };
  let fake: FakeControlPlane;
  const sources: RemoteConfigSource[] = [];

  const start = (o: Partial<RemoteConfigSourceOptions> = {}): RemoteConfigSource => {
    const source = new RemoteConfigSource({ controlPlaneUrl: fake.url, tls: () => peer, backoff: { initialMs: 20, maxMs: 100 }, random: () => 1, ...o });
    sources.push(source);
    return source;
  };

  before(async () => {
    ca = await CertificateAuthority.create();
    const server = await issueKeyAndCert(ca, { type: 'control-plane', identity: { name: 'control-plane' }, ipAddresses: ['127.0.0.1'] });
    peer = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
    fake = new FakeControlPlane({ certPem: server.certPem, keyPem: server.keyPem, caPem: ca.certPem });
    await fake.listen();
  });
  after(async () => {
    for (const s of sources) await s.close();
    await fake.stop();
  });

  void test('applies a snapshot, then deltas, each as a new frozen snapshot with principal state for decisions', async () => {
    fake.handler = (c) => c.send({ type: 'snapshot', revision: 10, snapshot: wireSnapshot() });
    const source = start();
    const first = await source.ready();
    const conn = fake.connections.at(-1) as Connection;
    assert.equal(conn.since, null, 'a peer without state asks for a snapshot');
    assert.deepEqual([first.version, first.revision], ['rev-10', 10]);
    assert.deepEqual(first.services.map((s) => s.metadata.name), ['db']);
    assert.deepEqual(first.users, [{ id: 'u-alice', email: 'Alice@example.com', groups: ['eng'], disabled: false }]);
    assert.equal(first.devices?.[0].trustLevel, 'High');
    assert.ok(Object.isFrozen(first) && Object.isFrozen(first.services) && Object.isFrozen(first.users?.[0]));

    const next = nextSnapshot(source);
    conn.send({ type: 'delta', revision: 12, changes: [{ kind: 'Service', name: 'db', op: 'put', object: specs.service(6000) }, { kind: 'User', name: 'u-alice', op: 'put', object: { ...alice, disabled: true } }, { kind: 'RevokedCertificate', name: 'ABCD', op: 'put' }] });
    const second = await next;
    assert.deepEqual([second.version, second.revision, second.services[0].spec.port, second.users?.[0].disabled, second.revokedSerials], ['rev-12', 12, 6000, true, ['abcd']]);
    assert.equal(second.roles, first.roles, 'unchanged kinds keep their (frozen) lists');

    const decider = createPolicyDecider({ directory: principalDirectory });
    const decision = decider.decide({ service: second.services[0], identity: { type: 'trust', user: 'u-alice', device: 'd-1', serial: '01', notBefore: new Date(0), notAfter: new Date(Date.now() + 60_000), fingerprint256: '' }, target: { kind: 'dns', host: 'db.internal', port: 5432 }, snapshot: second });
    assert.deepEqual([decision.allow, decision.reasons[0]], [false, 'user-disabled']);
    assert.deepEqual(source.status().connected, true);
    await source.close();
  });

  void test('ignores records older than what it applied; a reset snapshot is taken anyway', async () => {
    fake.handler = (c) => c.send({ type: 'snapshot', revision: 20, snapshot: wireSnapshot() });
    const source = start();
    await source.ready();
    const conn = fake.connections.at(-1) as Connection;
    let announced = 0;
    source.subscribe(() => announced++);
    conn.send({ type: 'delta', revision: 19, changes: [{ kind: 'Service', name: 'db', op: 'delete' }] });
    conn.send({ type: 'delta', revision: 20, changes: [{ kind: 'Service', name: 'db', op: 'delete' }] });
    conn.send({ type: 'snapshot', revision: 15, snapshot: wireSnapshot({ services: [] }) });
    const next = nextSnapshot(source);
    conn.send({ type: 'delta', revision: 21, changes: [{ kind: 'Policy', name: 'p', op: 'put', object: specs.policy(['eng', 'eng']) }] });
    const applied = await next;
    assert.equal(applied.revision, 21);
    assert.equal(applied.services.length, 1, 'the older records changed nothing');
    assert.equal(announced, 1);
    const reset = nextSnapshot(source);
    conn.send({ type: 'snapshot', revision: 3, reset: true, snapshot: wireSnapshot({ services: [] }) });
    const after = await reset;
    assert.deepEqual([after.revision, after.services.length], [3, 0]);
    await source.close();
  });

  void test('resumes from the last revision after a disconnect, with the certificate the getter gives then', async () => {
    let revision = 30;
    fake.handler = (c) => {
      if (c.since === null) c.send({ type: 'snapshot', revision, snapshot: wireSnapshot() });
      else c.send({ type: 'delta', revision: ++revision, changes: [{ kind: 'Service', name: 'db', op: 'put', object: specs.service(7000 + revision) }] });
    };
    let material = peer;
    const source = start({ tls: () => material });
    await source.ready();
    const before = fake.connections.length;
    const renewed = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
    material = renewed;
    const next = nextSnapshot(source);
    fake.dropAll();
    const resumed = await next;
    const conn = await fake.waitForConnections(before + 1);
    assert.equal(conn.since, '30');
    assert.equal(conn.serial, renewed.serial, 'the renewed certificate was used');
    assert.deepEqual([resumed.revision, resumed.services[0].spec.port], [31, 7031]);
    await source.close();
  });

  void test('a stream silent for longer than the idle timeout is dropped and resumed', async () => {
    fake.handler = (c) => {
      if (c.since === null) c.send({ type: 'snapshot', revision: 40, snapshot: wireSnapshot() });
    };
    const before = fake.connections.length;
    const source = start({ idleTimeoutMs: 150 });
    await source.ready();
    const again = await fake.waitForConnections(before + 2);
    assert.equal(again.since, '40');
    await source.close();
  });

  void test('malformed specs and principals are left out (fail closed); unknown kinds and record types are skipped', async () => {
    fake.handler = (c) => c.send({ type: 'snapshot', revision: 50, snapshot: wireSnapshot({ services: [specs.service(), { ...specs.service(), metadata: { name: 'bad' }, spec: { port: 'x' } }] }) });
    const source = start();
    const first = await source.ready();
    assert.deepEqual(first.services.map((s) => s.metadata.name), ['db']);
    const conn = fake.connections.at(-1) as Connection;
    const next = nextSnapshot(source);
    conn.res.write('{"type":"future-record","revision":51}\n');
    conn.send({ type: 'delta', revision: 52, changes: [{ kind: 'Gadget', name: 'g', op: 'put', object: {} }, { kind: 'Device', name: 'd-1', op: 'put', object: { id: 'd-1' } }, { kind: 'Role', name: 'eng', op: 'put', object: { ...specs.role, metadata: { name: 'other' } } }] });
    const second = await next;
    assert.deepEqual([second.revision, second.devices?.length, second.roles.length], [52, 0, 0]);
    assert.equal(source.status().connected, true, 'skipped records do not drop the stream');
    await source.close();
  });

  void test('a line that is not a record drops the stream; the peer reconnects and resumes', async () => {
    fake.handler = (c) => {
      if (c.since === null) {
        c.send({ type: 'snapshot', revision: 60, snapshot: wireSnapshot() });
        c.res.write('{not json\n');
      } else c.send({ type: 'heartbeat', revision: 60 });
    };
    const before = fake.connections.length;
    const source = start();
    await source.ready();
    const again = await fake.waitForConnections(before + 2);
    assert.equal(again.since, '60');
    await source.close();
  });

  void test('a peer restarted while the control plane is down serves its persisted snapshot, says it is stale, and resumes from it', async () => {
    let stored: string | undefined;
    fake.handler = (c) => c.send({ type: 'snapshot', revision: 70, snapshot: wireSnapshot() });
    const writer = start({ persist: (text) => ((stored = text), Promise.resolve()), persistIntervalMs: 0 });
    await writer.ready();
    await eventually(() => stored !== undefined, 'the snapshot was persisted');
    await writer.close();
    assert.equal(decodeRecord((stored as string).trim()).ok, true);

    await fake.stop();
    const restarted = start({ loadPersisted: () => Promise.resolve(stored), initialWaitMs: 2000 });
    const served = await restarted.ready();
    assert.deepEqual([served.revision, served.services[0].metadata.name, served.users?.[0].id], [70, 'db', 'u-alice']);
    const down = restarted.status();
    assert.deepEqual([down.connected, down.stale, down.source, down.revision], [false, true, 'persisted', 70]);
    assert.ok(down.unreachableSince !== undefined && down.lastError !== undefined);

    const before = fake.connections.length;
    fake.handler = (c) => c.send({ type: 'heartbeat', revision: 70 });
    await fake.listen();
    const conn = await fake.waitForConnections(before + 1);
    assert.equal(conn.since, '70');
    await eventually(() => restarted.status().connected, 'connected again');
    assert.deepEqual([restarted.status().stale, restarted.status().source], [false, 'control-plane']);
    await restarted.close();
  });

  void test('ready() waits for the control plane when nothing is persisted, and close() rejects it', async () => {
    const source = new RemoteConfigSource({ controlPlaneUrl: 'https://127.0.0.1:1', tls: () => peer, backoff: { initialMs: 10, maxMs: 20 } });
    const ready = source.ready();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(source.current(), undefined);
    assert.equal(source.status().stale, true);
    await source.close();
    await assert.rejects(ready, { code: 'config-closed' });
  });

  void test('a delta before any snapshot drops the stream and the peer asks for a snapshot', async () => {
    let connects = 0;
    fake.handler = (c) => {
      connects++;
      if (connects === 1) c.send({ type: 'delta', revision: 80, changes: [] });
      else c.send({ type: 'snapshot', revision: 81, snapshot: wireSnapshot() });
    };
    const source = start();
    const first = await source.ready();
    assert.equal(first.revision, 81);
    assert.equal(connects, 2);
    assert.equal(fake.connections.at(-1)?.since, null);
    await source.close();
  });
});
