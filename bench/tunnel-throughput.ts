/**
 * Bulk throughput through the data path, each part in its own process as in production:
 *
 *   this process (client, TLS 1.3 + trust cert + CONNECT) ══> access tier <══ tunnel ══ connector ──> backend
 *
 * The backend speaks a two-command protocol: "U n\n" then n bytes (it answers "ok\n" once it read
 * them all: upload), or "D n\n" (it sends n bytes: download). For scale the same transfers are timed
 * straight to the backend over plain TCP, and through the access tier alone (a service it dials
 * directly, one TLS hop). Not a test: prints Gbit/s.
 *
 *   node bench/tunnel-throughput.ts [--mb 512] [--runs 3] [--only connector]
 *
 * BENCH_PROF=DIR writes CPU profiles of the parts; BENCH_NODE_ARGS passes Node flags to them.
 */
import '../src/v8-flags.ts';
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { startAccessTier } from '../src/access-tier/index.ts';
import { startConnector } from '../src/connector/index.ts';
import { MemoryEventSink } from '../src/lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../src/lib/config/index.ts';
import type { SpecObject } from '../src/lib/spec/index.ts';
import { chainConnect, makeTestPki, specs } from '../src/lib/tunnel/harness.testing.ts';
import type { KeyAndCert } from '../src/lib/tunnel/harness.testing.ts';

interface Setup {
  caPem: string;
  accessTier: KeyAndCert;
  connector: KeyAndCert;
  objects: SpecObject[];
}

const role = process.argv[2];
if (role === 'backend') runBackend();
else if (role === 'access-tier') await runAccessTier(process.argv[3] ?? '');
else if (role === 'connector') await runConnector(process.argv[3] ?? '', process.argv[4] ?? '');
else await main();

// ---------------------------------------------------------------------------------------------
// Children

function runBackend(): void {
  const chunk = Buffer.alloc(1024 * 1024, 0x5a);
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => undefined);
    let head = '';
    const onHead = (data: Buffer): void => {
      head += data.toString('latin1');
      const nl = head.indexOf('\n');
      if (nl === -1) return;
      socket.off('data', onHead);
      const [command, size] = head.slice(0, nl).split(' ');
      let remaining = Number(size);
      const rest = Buffer.from(head.slice(nl + 1), 'latin1');
      if (command === 'U') {
        remaining -= rest.length;
        const onData = (d: Buffer): void => {
          remaining -= d.length;
          if (remaining <= 0) {
            socket.off('data', onData);
            socket.end('ok\n');
          }
        };
        socket.on('data', onData);
        if (remaining <= 0) socket.end('ok\n');
      } else {
        const pump = (): void => {
          while (remaining > 0) {
            const n = Math.min(remaining, chunk.length);
            remaining -= n;
            if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
              socket.once('drain', pump);
              return;
            }
          }
          socket.end();
        };
        pump();
      }
    };
    socket.on('data', onHead);
  });
  server.listen(0, '127.0.0.1', () => process.send?.({ port: (server.address() as AddressInfo).port }));
  answerCpu();
  process.on('disconnect', () => process.exit(0));
}

async function runAccessTier(setupPath: string): Promise<void> {
  const setup = JSON.parse(await readFile(setupPath, 'utf8')) as Setup;
  const config = new StaticConfigSource(snapshotFromObjects(setup.objects));
  const at = await startAccessTier({ name: 'edge-1', config, tls: setup.accessTier, events: new MemoryEventSink(), listen: { host: '127.0.0.1', port: 0 } });
  process.send?.({ port: at.port() });
  answerCpu();
  process.on('disconnect', () => process.exit(0));
}

async function runConnector(setupPath: string, accessTierAddress: string): Promise<void> {
  const setup = JSON.parse(await readFile(setupPath, 'utf8')) as Setup;
  const config = new StaticConfigSource(snapshotFromObjects(setup.objects));
  const connector = await startConnector({ name: 'dc1', config, tls: setup.connector, accessTiers: [{ name: 'edge-1', address: accessTierAddress }] });
  const waitUp = (): void => {
    if (connector.status().state === 'up') process.send?.({ up: true });
    else setTimeout(waitUp, 20);
  };
  waitUp();
  answerCpu();
  process.on('disconnect', () => process.exit(0));
}

/** Answers { cpu } with this process's CPU time (user + system, µs) when asked. */
function answerCpu(): void {
  process.on('message', (m: { cpu?: boolean }) => {
    if (m.cpu === true) {
      const u = process.cpuUsage();
      process.send?.({ cpu: u.user + u.system });
    }
  });
}

function cpuOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    const onMessage = (m: { cpu?: number }): void => {
      if (typeof m.cpu !== 'number') return;
      child.off('message', onMessage);
      resolve(m.cpu);
    };
    child.on('message', onMessage);
    child.send({ cpu: true });
  });
}

// ---------------------------------------------------------------------------------------------
// The client and the measurement

function start(args: string[]): Promise<{ child: ChildProcess; message: Record<string, unknown> }> {
  // BENCH_PROF=DIR writes a CPU profile of each part there (on exit).
  const prof = process.env['BENCH_PROF'];
  const execArgv = prof === undefined || prof === '' ? [] : ['--cpu-prof', `--cpu-prof-dir=${prof}`, `--cpu-prof-name=${args[0] ?? 'part'}.cpuprofile`];
  // BENCH_NODE_ARGS="--flag …" passes V8/Node flags to the access tier and connector processes.
  if (args[0] !== 'backend') execArgv.push(...(process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== ''));
  const child = fork(new URL(import.meta.url).pathname, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  return new Promise((resolve, reject) => {
    child.once('message', (message) => resolve({ child, message: message as Record<string, unknown> }));
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${String(code)}`)));
  });
}

/** Uploads `bytes` and waits for the backend's "ok": seconds. */
function upload(socket: Duplex, bytes: number, chunkSize: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(chunkSize, 0xa5);
    const started = performance.now();
    socket.once('error', reject);
    socket.on('data', () => undefined);
    socket.once('end', () => resolve((performance.now() - started) / 1000));
    socket.write(`U ${bytes}\n`);
    let remaining = bytes;
    const pump = (): void => {
      while (remaining > 0) {
        const n = Math.min(remaining, chunk.length);
        remaining -= n;
        if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
}

/** Asks for `bytes` and reads them: seconds. */
function download(socket: Duplex, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0;
    const started = performance.now();
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      received += d.length;
    });
    socket.once('end', () => {
      if (received !== bytes) reject(new Error(`received ${received} of ${bytes} bytes`));
      else resolve((performance.now() - started) / 1000);
    });
    socket.write(`D ${bytes}\n`);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mb: { type: 'string', default: '512' }, runs: { type: 'string', default: '3' }, chunk: { type: 'string', default: '262144' }, only: { type: 'string' } } });
  const bytes = Number(values.mb) * 1024 * 1024;
  const runs = Number(values.runs);
  const chunkSize = Number(values.chunk);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-bench-'));
  const children: ChildProcess[] = [];
  try {
    const pki = await makeTestPki();
    const backend = await start(['backend']);
    children.push(backend.child);
    const backendPort = Number(backend.message['port']);
    const setup: Setup = {
      caPem: pki.caPem,
      accessTier: await pki.issue('access-tier', { name: 'edge-1' }),
      connector: await pki.issue('connector', { name: 'dc1' }),
      objects: [
        specs.accessTier('edge-1', 'c1', '127.0.0.1:8443'),
        specs.connector('dc1', 'c1', { cidrs: ['127.0.0.0/8'] }),
        specs.service('chain', 'c1', { type: 'tcp', domain: 'chain.example.com', port: 5432, connector: 'dc1', backend: { target: `127.0.0.1:${backendPort}` } }),
        specs.service('direct', 'c1', { type: 'tcp', domain: 'direct.example.com', port: 5432, backend: { target: `127.0.0.1:${backendPort}` } }),
      ],
    };
    const setupPath = path.join(dir, 'setup.json');
    await writeFile(setupPath, JSON.stringify(setup), { mode: 0o600 });
    const at = await start(['access-tier', setupPath]);
    children.push(at.child);
    const atPort = Number(at.message['port']);
    const cn = await start(['connector', setupPath, `127.0.0.1:${atPort}`]);
    children.push(cn.child);
    const trust = await pki.issue('trust', { user: 'bench', device: 'bench' });

    const paths: Array<[string, () => Promise<Duplex>]> = [
      ['plain TCP to the backend', async () => {
        const s = net.connect({ host: '127.0.0.1', port: backendPort, noDelay: true });
        await new Promise((r) => s.once('connect', r));
        return s;
      }],
      ['access tier only (1 TLS hop, direct dial)', () => tlsPath('direct.example.com')],
      ['access tier + connector (TLS + HTTP/2 tunnel)', () => tlsPath('chain.example.com')],
    ];
    async function tlsPath(sni: string): Promise<Duplex> {
      const r = await chainConnect({ port: atPort, caPem: pki.caPem, servername: sni, cert: trust });
      if (r.kind !== 'established') throw new Error(`could not connect: ${JSON.stringify(r.kind === 'failed' ? r : r.status)}`);
      r.socket.resume();
      return r.socket;
    }

    console.log(`${values.mb} MiB per transfer, best of ${runs}, client writes ${chunkSize}-byte chunks; ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`);
    const parts: Array<[string, ChildProcess | undefined]> = [['client', undefined], ['access tier', at.child], ['connector', cn.child], ['backend', backend.child]];
    const cpuNow = (): Promise<number[]> => Promise.all(parts.map(([, c]) => (c === undefined ? Promise.resolve(process.cpuUsage().user + process.cpuUsage().system) : cpuOf(c))));
    for (const [name, open] of paths) {
      if (values.only !== undefined && !name.includes(values.only)) continue;
      let bestUp = Infinity;
      let bestDown = Infinity;
      const cpuBefore = await cpuNow();
      for (let i = 0; i < runs; i++) {
        bestUp = Math.min(bestUp, await upload(await open(), bytes, chunkSize));
        bestDown = Math.min(bestDown, await download(await open(), bytes));
      }
      const cpuAfter = await cpuNow();
      const gbit = (s: number): string => ((bytes * 8) / s / 1e9).toFixed(2);
      const gib = (bytes * runs * 2) / 2 ** 30;
      const cpu = parts.map(([part], i) => `${part} ${(((cpuAfter[i] ?? 0) - (cpuBefore[i] ?? 0)) / 1e6 / gib).toFixed(2)}`).join(', ');
      console.log(`${name.padEnd(48)} upload ${gbit(bestUp).padStart(6)} Gbit/s   download ${gbit(bestDown).padStart(6)} Gbit/s   CPU s/GiB: ${cpu}`);
    }
  } finally {
    // Disconnecting lets each child exit on its own (and write its profile when asked to).
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(undefined) : (c.once('exit', r), c.disconnect())))));
    await rm(dir, { recursive: true, force: true });
  }
}
