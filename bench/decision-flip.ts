/**
 * Decision-flip latency (DESIGN §7: a decision flip cuts every affected live stream on every access
 * tier within 1 s at p99): the time from an admin's API write to each live connection it no longer
 * allows being cut, across two access tiers.
 *
 *     npx node bench/decision-flip.ts                     # prints the figures
 *     npx node bench/decision-flip.ts --postgres URL      # two control-plane replicas on PostgreSQL,
 *                                                         # one access tier on each, writes on the first
 *
 * bench/run.ts can call `runDecisionFlipBench()`.
 *
 * Setup, as in production but on loopback: the control plane (createControlPlane with the config
 * stream, SQLite by default) runs in this process, which is also the client; each access tier runs
 * in its own process (this file with `--child`), following the control plane through a
 * RemoteConfigSource with the policy decider over the streamed principal state. A TCP service with
 * a fixed backend (a holding TCP server here) is published on both; the client opens N mutually
 * authenticated TLS connections per access tier with one user's trust certificate and waits until
 * the backend holds all of them.
 *
 * Each round makes one write through the admin HTTPS API that flips the decision — a policy edit
 * (the user's role removed from it), disabling the user, banning the device, switching the service
 * to another policy, deleting the service — and timestamps it just before the request is sent. The
 * sample of a connection is the time until the client sees its socket close. Then the write is
 * undone, the connections are opened again once the tiers allow them, and the next round runs.
 * Percentiles pool every connection of every round.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { stopChildren, waitFor } from './processes.ts';
import { percentile } from './stats.ts';

import type { AccessTier } from '../src/access-tier/index.ts';
import type { Store } from '../src/control-plane/store/index.ts';
import type { ControlPlane } from '../src/control-plane/server.ts';
import { CertificateAuthority, issueKeyAndCert, mtlsClientOptions } from '../src/lib/pki/index.ts';

export interface DecisionFlipOptions {
  /** Live connections per access tier and round. Default 100. */
  connectionsPerTier?: number;
  /** Flip rounds (each one of the flip kinds, in turn). Default 10. */
  rounds?: number;
  /** Two replicas on this PostgreSQL server (a fresh database is created and dropped). Default: one control plane on SQLite. */
  postgresUrl?: string;
  log?: (line: string) => void;
}

export type FlipKind = 'policy-edit' | 'user-disabled' | 'device-banned' | 'service-policy-switch' | 'service-removed';
const KINDS: readonly FlipKind[] = ['policy-edit', 'user-disabled', 'device-banned', 'service-policy-switch', 'service-removed'];

export interface DecisionFlipRound {
  kind: FlipKind;
  connections: number;
  /** Write sent → API answered, ms. */
  writeMs: number;
  firstCutMs: number;
  lastCutMs: number;
  /** Connections not cut within the round's deadline (10 s); they count as 10 s in the percentiles. */
  missed: number;
}

export interface DecisionFlipResult {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** All samples (ms), one per connection per round. */
  samples: number;
  tiers: number;
  connectionsPerTier: number;
  database: 'sqlite' | 'postgres';
  rounds: DecisionFlipRound[];
}

const DOMAIN = 'db.flip.bench.test';
const CUT_DEADLINE_MS = 10_000;

// --- the access tier child --------------------------------------------------------------------------

interface ChildConfig {
  name: string;
  controlPlaneUrl: string;
  tls: { certPem: string; keyPem: string; caPem: string };
}

async function runChild(configPath: string): Promise<void> {
  const config = JSON.parse(await readFile(configPath, 'utf8')) as ChildConfig;
  const { startAccessTier } = await import('../src/access-tier/index.ts');
  const { RemoteConfigSource, principalDirectory } = await import('../src/lib/config/index.ts');
  const { createPolicyDecider } = await import('../src/lib/policy/index.ts');
  const source = new RemoteConfigSource({ controlPlaneUrl: config.controlPlaneUrl, tls: () => config.tls });
  const events = { write: () => undefined, close: () => Promise.resolve() };
  const tier: AccessTier = await startAccessTier({
    name: config.name,
    config: source,
    tls: config.tls,
    events,
    listen: { host: '127.0.0.1', port: 0 },
    decider: createPolicyDecider({ directory: principalDirectory }),
    limits: { drainTimeoutMs: 200, maxConnectionsPerSource: 100_000 },
  });
  process.stdout.write(`ready ${tier.port()}\n`);
  process.on('SIGTERM', () => {
    void tier.close().then(() => source.close()).then(() => process.exit(0));
  });
}

// --- the benchmark ------------------------------------------------------------------------------------

interface Replica {
  store: Store;
  controlPlane: ControlPlane;
  url: string;
}

export async function runDecisionFlipBench(options: DecisionFlipOptions = {}): Promise<DecisionFlipResult> {
  const perTier = options.connectionsPerTier ?? 100;
  const roundCount = options.rounds ?? 10;
  const log = options.log ?? (() => undefined);
  const { openStore } = await import('../src/control-plane/store/index.ts');
  const { createControlPlane, issueServingCertificate } = await import('../src/control-plane/server.ts');
  const { configStreamPlugin } = await import('../src/control-plane/stream/index.ts');

  const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-flip-'));
  const cleanup: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true })];
  const children: ChildProcess[] = [];
  const clients = new Set<TLSSocket>();
  try {
    const ca = await CertificateAuthority.create({ commonName: 'causeway flip bench CA' });
    const serving = await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1', listenHost: '127.0.0.1' });

    // Databases: one SQLite file, or one PostgreSQL database shared by two replicas.
    const replicas: Replica[] = [];
    let database: 'sqlite' | 'postgres' = 'sqlite';
    const storeUrls: string[] = [];
    if (options.postgresUrl !== undefined) {
      database = 'postgres';
      const { default: pg } = await import('pg');
      const name = `causeway_flip_${randomBytes(5).toString('hex')}`;
      const admin = new pg.Client({ connectionString: options.postgresUrl });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      cleanup.push(async () => {
        const c = new pg.Client({ connectionString: options.postgresUrl });
        await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await c.end();
      });
      const url = new URL(options.postgresUrl);
      url.pathname = `/${name}`;
      storeUrls.push(url.toString(), url.toString());
    } else {
      storeUrls.push(`sqlite:${path.join(dir, 'causeway.db')}`);
    }
    for (const storeUrl of storeUrls) {
      const store = await openStore({ url: storeUrl });
      cleanup.push(() => store.close());
      const controlPlane = await createControlPlane({ store, ca, publicUrl: 'https://127.0.0.1:8440', plugins: [configStreamPlugin] });
      cleanup.push(() => controlPlane.close());
      const listener = await controlPlane.listen({ host: '127.0.0.1', port: 0, tls: serving });
      replicas.push({ store, controlPlane, url: listener.url });
    }
    const primary = replicas[0];
    const { token: adminToken } = await primary.store.createApiToken({ name: 'flip-bench', scope: 'admin' }, { actor: 'bench' });
    const { requestControlPlane } = await import('../src/lib/enroll/transport.ts');
    const api = async (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', p: string, body?: unknown): Promise<void> => {
      const r = await requestControlPlane({ baseUrl: primary.url, path: p, method, body, tls: { caPem: ca.certPem }, headers: { authorization: `Bearer ${adminToken}` } });
      if (r.status < 200 || r.status > 299) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
    };

    // The backend: holds every connection until the other side closes it.
    const held = new Set<Socket>();
    const backend: Server = createServer((socket) => {
      held.add(socket);
      socket.on('error', () => undefined);
      socket.once('close', () => held.delete(socket));
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    cleanup.push(async () => {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    });
    const backendPort = (backend.address() as AddressInfo).port;

    // Principals and specs.
    const alice = await primary.store.createUser({ name: 'alice', email: 'alice@example.com', groups: ['eng'] }, { actor: 'bench' });
    const laptop = await primary.store.registerDevice({ userId: alice.id, platform: 'linux', ownership: 'corporate-dedicated', trust: { level: 'High', reasons: [] } }, { actor: 'bench' });
    const doc = (kind: string, name: string, spec: unknown): Record<string, unknown> => ({ apiVersion: 'causeway/v1', kind, metadata: { name }, spec });
    const put = (d: Record<string, unknown>): Promise<void> => api('PUT', `/api/v1/objects/${String(d.kind).toLowerCase()}/${(d.metadata as { name: string }).name}`, d);
    const service = (policy: string): Record<string, unknown> => doc('Service', 'db', { type: 'tcp', cluster: 'flip', accessTier: '*', domain: DOMAIN, port: 5432, backend: { target: `127.0.0.1:${backendPort}` }, policy: { name: policy, mode: 'enforcing' } });
    for (const d of [
      doc('AccessTier', 'edge-1', { cluster: 'flip', address: '127.0.0.1:1' }),
      doc('AccessTier', 'edge-2', { cluster: 'flip', address: '127.0.0.1:2' }),
      doc('Role', 'eng', { users: { groups: ['eng'] } }),
      doc('Role', 'auditors', { users: { groups: ['audit'] } }),
      doc('Policy', 'p', { access: [{ roles: ['eng'], trustLevel: 'Low' }] }),
      doc('Policy', 'audit-only', { access: [{ roles: ['auditors'], trustLevel: 'Low' }] }),
      service('p'),
    ]) await put(d);

    // The access tiers, one process each, the second on the second replica when there is one.
    const self = realpathSync(import.meta.filename);
    const ports: number[] = [];
    for (const [i, name] of ['edge-1', 'edge-2'].entries()) {
      const cert = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name } });
      const configPath = path.join(dir, `${name}.json`);
      const config: ChildConfig = { name, controlPlaneUrl: replicas[Math.min(i, replicas.length - 1)].url, tls: { certPem: cert.certPem, keyPem: cert.keyPem, caPem: ca.certPem } };
      await writeFile(configPath, JSON.stringify(config), { mode: 0o600 });
      const child = spawn(process.execPath, [self, '--child', configPath], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(child);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          let out = '';
          child.stdout?.setEncoding('utf8');
          child.stdout?.on('data', (chunk: string) => {
            out += chunk;
            const m = /ready (\d+)/.exec(out);
            if (m !== null) resolve(Number(m[1]));
          });
          child.once('exit', (code) => reject(new Error(`access tier ${name} exited with ${code} before it was ready`)));
        }),
      );
    }
    log(`  access tiers on ${ports.join(', ')}; control plane${replicas.length > 1 ? ' replicas' : ''} ${replicas.map((r) => r.url).join(', ')} (${database})`);

    const trust = await issueKeyAndCert(ca, { type: 'trust', identity: { user: alice.id, device: laptop.id } });
    const tlsOptions = mtlsClientOptions({ caPem: ca.certPem, certPem: trust.certPem, keyPem: trust.keyPem, servername: DOMAIN, expectServerType: 'access-tier' });

    /** One connection; resolves once the backend holds it, or with undefined when the tier refused it. */
    const open = (port: number): Promise<TLSSocket | undefined> =>
      new Promise((resolve) => {
        const before = held.size;
        const socket = connect({ ...tlsOptions, host: '127.0.0.1', port });
        socket.setNoDelay(true);
        socket.on('error', () => undefined);
        let settled = false;
        const finish = (s: TLSSocket | undefined): void => {
          if (settled) return;
          settled = true;
          clearInterval(poll);
          resolve(s);
        };
        socket.once('close', () => finish(undefined));
        const poll = setInterval(() => {
          if (held.size > before) finish(socket);
        }, 2);
        socket.once('secureConnect', () => socket.resume());
      });

    /** N live connections per tier (retrying while the tiers still deny: a restore is on its way). */
    const openAll = async (): Promise<TLSSocket[]> => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const probe = await Promise.all(ports.map((p) => open(p)));
        if (probe.every((s) => s !== undefined)) {
          const sockets = probe;
          for (const port of ports) {
            for (let i = 1; i < perTier; i += 20) {
              const batch = await Promise.all(Array.from({ length: Math.min(20, perTier - i) }, () => open(port)));
              if (batch.some((s) => s === undefined)) throw new Error('a connection was refused while the decision allowed it');
              sockets.push(...(batch as TLSSocket[]));
            }
          }
          await waitFor(() => held.size >= sockets.length, 'the backend holds every connection');
          return sockets;
        }
        for (const s of probe) s?.destroy();
        if (Date.now() > deadline) throw new Error('the access tiers did not allow connections again within 20 s');
        await sleep(25);
      }
    };

    const flip = (kind: FlipKind): { apply: () => Promise<void>; undo: () => Promise<void> } => {
      switch (kind) {
        case 'policy-edit':
          return { apply: () => put(doc('Policy', 'p', { access: [{ roles: ['auditors'], trustLevel: 'Low' }] })), undo: () => put(doc('Policy', 'p', { access: [{ roles: ['eng'], trustLevel: 'Low' }] })) };
        case 'user-disabled':
          return { apply: () => api('PATCH', '/api/v1/users/alice', { disabled: true }), undo: () => api('PATCH', '/api/v1/users/alice', { disabled: false }) };
        case 'device-banned':
          return { apply: () => api('POST', `/api/v1/devices/${laptop.id}/ban`), undo: () => api('POST', `/api/v1/devices/${laptop.id}/unban`) };
        case 'service-policy-switch':
          return { apply: () => put(service('audit-only')), undo: () => put(service('p')) };
        case 'service-removed':
          return { apply: () => api('DELETE', '/api/v1/objects/service/db'), undo: () => put(service('p')) };
      }
    };

    const samples: number[] = [];
    const rounds: DecisionFlipRound[] = [];
    for (let round = 0; round < roundCount; round++) {
      const kind = KINDS[round % KINDS.length];
      const sockets = await openAll();
      for (const s of sockets) clients.add(s);
      const { apply, undo } = flip(kind);
      const cuts: number[] = [];
      const started = performance.now();
      const allCut = Promise.all(
        sockets.map(
          (s) =>
            new Promise<void>((resolve) => {
              const done = (): void => {
                cuts.push(performance.now() - started);
                clients.delete(s);
                resolve();
              };
              if (s.destroyed) done();
              else s.once('close', done);
            }),
        ),
      );
      await apply();
      const writeMs = performance.now() - started;
      const timedOut = await Promise.race([allCut.then(() => false), sleep(CUT_DEADLINE_MS).then(() => true)]);
      const missed = timedOut ? sockets.length - cuts.length : 0;
      for (let i = 0; i < missed; i++) cuts.push(CUT_DEADLINE_MS);
      for (const s of sockets) s.destroy();
      cuts.sort((a, b) => a - b);
      samples.push(...cuts);
      rounds.push({ kind, connections: sockets.length, writeMs, firstCutMs: cuts[0], lastCutMs: cuts[cuts.length - 1], missed });
      log(`  round ${round + 1} ${kind}: ${sockets.length} connections, write ${writeMs.toFixed(1)} ms, cut ${cuts[0].toFixed(1)}–${cuts[cuts.length - 1].toFixed(1)} ms${missed > 0 ? `, ${missed} NOT CUT` : ''}`);
      await undo();
    }
    samples.sort((a, b) => a - b);
    return {
      p50Ms: percentile(samples, 50),
      p99Ms: percentile(samples, 99),
      maxMs: samples[samples.length - 1],
      samples: samples.length,
      tiers: ports.length,
      connectionsPerTier: perTier,
      database,
      rounds,
    };
  } finally {
    for (const s of clients) s.destroy();
    await stopChildren(children);
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------------

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === import.meta.filename;
if (invokedDirectly) {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    await runChild(args[1]);
  } else {
    const pgIndex = args.indexOf('--postgres');
    const r = await runDecisionFlipBench({
      ...(pgIndex === -1 ? {} : { postgresUrl: args[pgIndex + 1] }),
      log: (line) => console.log(line),
    });
    console.log(`decision flip: ${r.tiers} access tiers × ${r.connectionsPerTier} live connections, ${r.rounds.length} rounds, ${r.samples} cuts (${r.database}, Node ${process.version})`);
    console.log(`  write → cut  p50 ${r.p50Ms.toFixed(1)} ms  p99 ${r.p99Ms.toFixed(1)} ms  max ${r.maxMs.toFixed(1)} ms`);
    console.log(`  goal: p99 ≤ 1000 ms — ${r.p99Ms <= 1000 ? 'met' : 'MISSED'}`);
  }
}
