/**
 * Posture flip latency (issue 5: a trust level change cuts the live connections whose policy now
 * requires more, target ≤ 1 s at p99 after the control plane learns of the change): the time from
 * a device's posture report (firewall off, signed with the device key, as `causeway device report`
 * sends it) to each of that device's live connections being cut, across two access tiers.
 *
 *     npx node bench/posture-flip.ts               # prints the figures
 *
 * bench/run.ts calls `runPostureFlipBench()` (suite `posture-flip`).
 *
 * Setup, as in production but on loopback: the real control plane (`causeway server`'s startServer:
 * SQLite, its CA, the OIDC provider, the trust engine) runs in this process, which is also the
 * client; each access tier runs in its own process (bench/decision-flip.ts `--child`), following the
 * control plane's config stream with the policy decider. A TCP service is published on both, behind a
 * policy that needs trust Medium; a TrustProfile gives an unmet firewall the effect Low. Devices are
 * registered by `causeway login` (the client commands, run in this process, with the posture
 * collector replaced so the benchmark chooses the factors), which also fetches their trust
 * certificates.
 *
 * Each flip: open N connections per access tier with one device's trust certificate, ask for a
 * posture nonce, sign a report with the firewall off, then timestamp just before the report is
 * sent. A sample is the time until the client sees one connection close. The figure thus includes
 * the control plane verifying the report, rescoring the device and writing the new level, the config
 * stream and the access tier's cut. A report with the firewall on restores the device before the
 * next flip. The devices take turns (the control plane gives each device 30 nonces in a row, then one
 * every 10 s). Percentiles pool every connection of every flip.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.ts';
import { stopChildren, waitFor } from './processes.ts';
import { percentile } from './stats.ts';

export interface PostureFlipOptions {
  /** Live connections per access tier and flip. Default 20. */
  connectionsPerTier?: number;
  /** Flips (firewall off, each undone before the next). Default 50. */
  flips?: number;
  log?: (line: string) => void;
}

export interface PostureFlipRound {
  device: number;
  connections: number;
  /** Report sent → the control plane answered (verified, rescored, stored), ms. */
  answerMs: number;
  firstCutMs: number;
  lastCutMs: number;
  /** Connections not cut within the flip's deadline (10 s); they count as 10 s in the percentiles. */
  missed: number;
}

export interface PostureFlipResult {
  /** Report sent → connection cut. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The control plane's answer → connection cut (negative when the cut came first). */
  afterAnswerP50Ms: number;
  afterAnswerP99Ms: number;
  /** Report sent → the control plane answered. */
  answerP50Ms: number;
  answerP99Ms: number;
  samples: number;
  flips: number;
  devices: number;
  tiers: number;
  connectionsPerTier: number;
  rounds: PostureFlipRound[];
}

const DOMAIN = 'db.posture.bench.test';
const CUT_DEADLINE_MS = 10_000;
const PASSWORD = 'posture bench password 1';
/** Each device may have 30 nonces in a row; a flip takes two reports and the login one. */
const FLIPS_PER_DEVICE = 12;

export async function runPostureFlipBench(options: PostureFlipOptions = {}): Promise<PostureFlipResult> {
  const perTier = options.connectionsPerTier ?? 20;
  const flipCount = options.flips ?? 50;
  const log = options.log ?? (() => undefined);
  const { startServer } = await import('../src/control-plane/command.ts');
  const { loadOrCreateCa } = await import('../src/control-plane/ca-store.ts');
  const { issueKeyAndCert, mtlsClientOptions } = await import('../src/lib/pki/index.ts');
  const { silentLogger } = await import('../src/lib/log.ts');
  const { SessionStore, createTrustingFetch, freshSession } = await import('../src/lib/session/index.ts');
  const { signPostureReport } = await import('../src/lib/posture/index.ts');
  const { Command } = await import('commander');
  const { registerIdentityCommands } = await import('../src/client/identity-command.ts');

  const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-posture-flip-'));
  await chmod(dir, 0o700);
  const cleanup: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true })];
  const children: ChildProcess[] = [];
  const clients = new Set<TLSSocket>();
  try {
    // The control plane, as `causeway server` runs it.
    const port = await freePort();
    const publicUrl = `https://localhost:${port}`;
    const dataDir = path.join(dir, 'data');
    const server = await startServer({ dataDir, listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl, logLevel: 'silent' }, { env: {}, print: () => undefined }, silentLogger());
    cleanup.push(() => server.close());
    const caPem = await readFile(path.join(dataDir, 'ca.crt'), 'utf8');
    const adminToken = (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim();
    const adminFetch = createTrustingFetch({ caPem });
    const api = async (method: string, p: string, body?: unknown): Promise<unknown> => {
      const headers: Record<string, string> = { authorization: `Bearer ${adminToken}`, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await adminFetch(`${publicUrl}${p}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      const text = await res.text();
      if (res.status < 200 || res.status > 299) throw new Error(`${method} ${p}: ${res.status} ${text}`);
      return text === '' ? undefined : (JSON.parse(text) as unknown);
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

    const doc = (kind: string, name: string, spec: unknown): Record<string, unknown> => ({ apiVersion: 'causeway/v1', kind, metadata: { name }, spec });
    for (const d of [
      doc('AccessTier', 'edge-1', { cluster: 'flip', address: '127.0.0.1:1' }),
      doc('AccessTier', 'edge-2', { cluster: 'flip', address: '127.0.0.1:2' }),
      doc('Role', 'eng', { users: { groups: ['eng'] } }),
      doc('Policy', 'p', { access: [{ roles: ['eng'], trustLevel: 'Medium' }] }),
      doc('TrustProfile', 'laptops', { staleAfter: '1h', factors: [{ type: 'firewall', effect: 'Low' }] }),
      doc('Service', 'db', { type: 'tcp', cluster: 'flip', accessTier: '*', domain: DOMAIN, port: 5432, backend: { target: `127.0.0.1:${backendPort}` }, policy: { name: 'p', mode: 'enforcing' } }),
    ]) await api('PUT', `/api/v1/objects/${String(d.kind).toLowerCase()}/${(d.metadata as { name: string }).name}`, d);
    await api('POST', '/api/v1/users', { name: 'alice', email: 'alice@example.com', groups: ['eng'] });
    await api('PUT', '/api/v1/users/alice/password', { password: PASSWORD });

    // Devices, registered by `causeway login` (each in its own CAUSEWAY_HOME) with the firewall on.
    const deviceCount = Math.max(1, Math.ceil(flipCount / FLIPS_PER_DEVICE));
    interface BenchDevice {
      home: string;
      id: string;
      keyPem: string;
      tls: ReturnType<typeof mtlsClientOptions>;
    }
    const devices: BenchDevice[] = [];
    for (let i = 0; i < deviceCount; i++) {
      const home = path.join(dir, `home-${i}`);
      await mkdir(home, { recursive: true, mode: 0o700 });
      const said: string[] = [];
      const env = { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: path.join(dir, 'no-client-config.yaml') };
      const program = new Command('causeway').exitOverride().configureOutput({ writeOut: () => undefined, writeErr: (s) => said.push(s) });
      registerIdentityCommands(program, {
        env,
        homedir: () => path.join(dir, 'no-home'),
        out: (line) => said.push(line),
        err: (line) => said.push(line),
        readStdin: () => Promise.resolve(`${PASSWORD}\n`),
        openBrowser: undefined,
        setExitCode: () => undefined,
        device: { env, platform: 'linux', hostname: () => `bench-${i}`, collect: () => Promise.resolve({ factors: { firewall: true }, problems: [] }) },
      });
      await program.parseAsync(['node', 'causeway', 'login', publicUrl, '--ca-file', path.join(dataDir, 'ca.crt'), '--user', 'alice', '--password-stdin']);
      const id = (JSON.parse(await readFile(path.join(home, 'device.json'), 'utf8')) as { id: string }).id;
      const [certPem, keyPem] = await Promise.all([readFile(path.join(home, 'trust.crt'), 'utf8'), readFile(path.join(home, 'trust.key'), 'utf8')]).catch(() => {
        throw new Error(`device ${i} got no trust certificate at login: ${said.join(' ')}`);
      });
      devices.push({ home, id, keyPem: await readFile(path.join(home, 'device.key'), 'utf8'), tls: mtlsClientOptions({ caPem, certPem, keyPem, servername: DOMAIN, expectServerType: 'access-tier' }) });
    }

    // The access tiers, one process each (decision-flip.ts's child), certificates from the installation's CA.
    const passphrase = (await readFile(path.join(dataDir, 'ca-passphrase'), 'utf8')).trim();
    const { ca } = await loadOrCreateCa(server.store, { passphrase });
    const child = realpathSync(path.join(path.dirname(import.meta.filename), 'decision-flip.ts'));
    const ports: number[] = [];
    for (const name of ['edge-1', 'edge-2']) {
      const cert = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name } });
      const configPath = path.join(dir, `${name}.json`);
      await writeFile(configPath, JSON.stringify({ name, controlPlaneUrl: publicUrl, tls: { certPem: cert.certPem, keyPem: cert.keyPem, caPem } }), { mode: 0o600 });
      const proc = spawn(process.execPath, [child, '--child', configPath], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(proc);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          let out = '';
          proc.stdout?.setEncoding('utf8');
          proc.stdout?.on('data', (chunk: string) => {
            out += chunk;
            const m = /ready (\d+)/.exec(out);
            if (m !== null) resolve(Number(m[1]));
          });
          proc.once('exit', (code) => reject(new Error(`access tier ${name} exited with ${code} before it was ready`)));
        }),
      );
    }
    log(`  access tiers on ${ports.join(', ')}; control plane ${publicUrl}; ${devices.length} devices`);

    // The posture route, as the client calls it: session bearer token, nonce, signed report.
    const userCall = async (device: BenchDevice, p: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> => {
      const session = await freshSession(new SessionStore({ home: device.home }));
      const res = await createTrustingFetch({ caPem })(`${publicUrl}/api/v1/me/devices/${device.id}${p}`, { method: 'POST', headers: { authorization: `Bearer ${session.accessToken}`, 'content-type': 'application/json' }, body });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const signedReport = async (device: BenchDevice, firewall: boolean): Promise<string> => {
      const issued = await userCall(device, '/posture/nonce', '{}');
      if (issued.status !== 200) throw new Error(`posture nonce: ${issued.status} ${JSON.stringify(issued.json)}`);
      return signPostureReport({ deviceId: device.id, nonce: String(issued.json.nonce), timestamp: Date.now(), factors: { firewall } }, device.keyPem);
    };
    const send = async (device: BenchDevice, body: string, level: string): Promise<void> => {
      const r = await userCall(device, '/posture', body);
      const got = (r.json.trust as { level?: string } | undefined)?.level;
      if (r.status !== 200 || got !== level) throw new Error(`posture report: ${r.status}, level ${String(got)} (wanted ${level}) ${JSON.stringify(r.json).slice(0, 300)}`);
    };

    /** One connection; resolves once the backend holds it, or with undefined when the tier refused it. */
    const open = (device: BenchDevice, p: number): Promise<TLSSocket | undefined> =>
      new Promise((resolve) => {
        const before = held.size;
        const socket = connect({ ...device.tls, host: '127.0.0.1', port: p });
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

    /** N live connections per tier for the device (retrying while the tiers still deny: a restore is on its way). */
    const openAll = async (device: BenchDevice): Promise<TLSSocket[]> => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const probe = await Promise.all(ports.map((p) => open(device, p)));
        if (probe.every((s) => s !== undefined)) {
          const sockets = probe;
          for (const p of ports) {
            for (let i = 1; i < perTier; i += 20) {
              const batch = await Promise.all(Array.from({ length: Math.min(20, perTier - i) }, () => open(device, p)));
              if (batch.some((s) => s === undefined)) throw new Error('a connection was refused while the device was trusted');
              sockets.push(...(batch as TLSSocket[]));
            }
          }
          await waitFor(() => held.size >= sockets.length, 'the backend holds every connection');
          return sockets;
        }
        for (const s of probe) s?.destroy();
        if (Date.now() > deadline) throw new Error('the access tiers did not allow the device again within 20 s');
        await sleep(25);
      }
    };

    const samples: number[] = [];
    const afterAnswer: number[] = [];
    const answers: number[] = [];
    const rounds: PostureFlipRound[] = [];
    for (let flip = 0; flip < flipCount; flip++) {
      const index = flip % devices.length;
      const device = devices[index];
      const sockets = await openAll(device);
      for (const s of sockets) clients.add(s);
      const off = await signedReport(device, false);
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
      await send(device, off, 'Low');
      const answerMs = performance.now() - started;
      const timedOut = await Promise.race([allCut.then(() => false), sleep(CUT_DEADLINE_MS).then(() => true)]);
      const missed = timedOut ? sockets.length - cuts.length : 0;
      for (let i = 0; i < missed; i++) cuts.push(CUT_DEADLINE_MS);
      for (const s of sockets) s.destroy();
      cuts.sort((a, b) => a - b);
      samples.push(...cuts);
      afterAnswer.push(...cuts.map((c) => c - answerMs));
      answers.push(answerMs);
      rounds.push({ device: index, connections: sockets.length, answerMs, firstCutMs: cuts[0], lastCutMs: cuts[cuts.length - 1], missed });
      log(`  flip ${flip + 1} device ${index}: ${sockets.length} connections, answered ${answerMs.toFixed(1)} ms, cut ${cuts[0].toFixed(1)}–${cuts[cuts.length - 1].toFixed(1)} ms${missed > 0 ? `, ${missed} NOT CUT` : ''}`);
      await send(device, await signedReport(device, true), 'High');
    }
    samples.sort((a, b) => a - b);
    afterAnswer.sort((a, b) => a - b);
    answers.sort((a, b) => a - b);
    return {
      p50Ms: percentile(samples, 50),
      p99Ms: percentile(samples, 99),
      maxMs: samples[samples.length - 1],
      afterAnswerP50Ms: percentile(afterAnswer, 50),
      afterAnswerP99Ms: percentile(afterAnswer, 99),
      answerP50Ms: percentile(answers, 50),
      answerP99Ms: percentile(answers, 99),
      samples: samples.length,
      flips: rounds.length,
      devices: devices.length,
      tiers: ports.length,
      connectionsPerTier: perTier,
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
  const r = await runPostureFlipBench({ log: (line) => console.log(line) });
  console.log(`posture flip: ${r.tiers} access tiers × ${r.connectionsPerTier} live connections, ${r.flips} flips over ${r.devices} devices, ${r.samples} cuts (Node ${process.version})`);
  console.log(`  report sent → cut      p50 ${r.p50Ms.toFixed(1)} ms  p99 ${r.p99Ms.toFixed(1)} ms  max ${r.maxMs.toFixed(1)} ms`);
  console.log(`  report answered → cut  p50 ${r.afterAnswerP50Ms.toFixed(1)} ms  p99 ${r.afterAnswerP99Ms.toFixed(1)} ms`);
  console.log(`  report sent → answered p50 ${r.answerP50Ms.toFixed(1)} ms  p99 ${r.answerP99Ms.toFixed(1)} ms`);
  console.log(`  goal: p99 ≤ 1000 ms — ${r.p99Ms <= 1000 ? 'met' : 'MISSED'}`);
}
