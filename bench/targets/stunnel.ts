/**
 * The stunnel baseline: the same shape as Causeway's chain, with stunnel in every relay role.
 *
 *   client ─TCP─> stunnel "entry" ══mTLS══> stunnel "middle" ══mTLS══> stunnel "exit" ─TCP─> backend
 *                 (client proxy's role)      (access tier's role)       (connector's role)
 *
 * Two TLS 1.3 hops, both mutually authenticated (verifyChain, which implies requireCert, plus
 * checkHost on the server name), ECDSA P-256 certificates, three stunnel processes. stunnel cannot
 * terminate and re-originate TLS in one service, so the middle process runs two services joined by
 * a Unix socket: TLS in → Unix socket → TLS out, all inside that one process.
 * Every new client connection costs two TLS handshakes here (stunnel's client side resumes TLS
 * sessions by default, as an operator would run it); in Causeway the connector's tunnel is long-lived,
 * so a new connection costs one handshake plus an HTTP/2 stream.
 *
 * With `hops: 1` the same code starts the classic pair instead (entry → exit, one TLS hop, two
 * processes): not the baseline, but the setup behind the "stunnel pair" figures people quote, shown
 * beside it so the choice of reading is visible in every report.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BaselinePki } from '../certs.ts';
import { freePort } from '../ports.ts';
import type { ProcessGroup } from '../processes.ts';
import type { Backend, BackendService, Endpoint, Relay, Target } from './target.ts';
import { BACKEND_SERVICES } from './target.ts';

const MIDDLE = 'middle.stunnel.bench.test';
const EXIT = 'exit.stunnel.bench.test';
const ENTRY = 'entry.stunnel.bench.test';

export async function startStunnelTarget(options: {
  stunnelPath: string;
  version: string;
  backend: Backend;
  pki: BaselinePki;
  group: ProcessGroup;
  dir: string;
  /** 2: entry → middle → exit (the baseline); 1: entry → exit, the classic pair (context only). */
  hops: 1 | 2;
}): Promise<Target> {
  const { backend, pki, group, dir, hops } = options;
  const entryCert = pki.leaf(ENTRY);
  const middleCert = pki.leaf(MIDDLE);
  const exitCert = pki.leaf(EXIT);
  const prefix = hops === 2 ? 'stunnel' : 'stunnel-1hop';

  const ports = new Map<BackendService, { entry: number; middle: number; exit: number; unix: string }>();
  for (const service of BACKEND_SERVICES) {
    ports.set(service, { entry: await freePort(), middle: await freePort(), exit: await freePort(), unix: join(dir, `${prefix}-${service}.sock`) });
  }

  const global = ['foreground = yes', 'pid =', 'syslog = no', 'debug = warning', ''];
  const tls = (peer: string | undefined): string[] => [
    `CAfile = ${pki.caFile}`,
    'verifyChain = yes',
    ...(peer === undefined ? ['requireCert = yes'] : [`checkHost = ${peer}`]),
    'sslVersionMin = TLSv1.3',
  ];

  const entry: string[] = [...global];
  const middle: string[] = [...global];
  const exit: string[] = [...global];
  for (const [service, p] of ports) {
    const entryNext = hops === 2 ? { port: p.middle, peer: MIDDLE } : { port: p.exit, peer: EXIT };
    entry.push(`[${service}]`, 'client = yes', `accept = 127.0.0.1:${p.entry}`, `connect = 127.0.0.1:${entryNext.port}`,
      `cert = ${entryCert.certFile}`, `key = ${entryCert.keyFile}`, ...tls(entryNext.peer),
      'socket = l:TCP_NODELAY=1', 'socket = r:TCP_NODELAY=1', '');
    middle.push(`[${service}-in]`, `accept = 127.0.0.1:${p.middle}`, `connect = ${p.unix}`,
      `cert = ${middleCert.certFile}`, `key = ${middleCert.keyFile}`, ...tls(undefined),
      'socket = l:TCP_NODELAY=1', '');
    middle.push(`[${service}-out]`, 'client = yes', `accept = ${p.unix}`, `connect = 127.0.0.1:${p.exit}`,
      `cert = ${middleCert.certFile}`, `key = ${middleCert.keyFile}`, ...tls(EXIT),
      'socket = r:TCP_NODELAY=1', '');
    exit.push(`[${service}]`, `accept = 127.0.0.1:${p.exit}`, `connect = ${backend.host}:${backend.ports[service]}`,
      `cert = ${exitCert.certFile}`, `key = ${exitCert.keyFile}`, ...tls(undefined),
      'socket = l:TCP_NODELAY=1', 'socket = r:TCP_NODELAY=1', '');
  }

  const relays: Relay[] = [];
  const start = (role: string, lines: string[]): Relay => {
    const name = `${prefix}-${role}`;
    const conf = join(dir, `${name}.conf`);
    writeFileSync(conf, lines.join('\n'));
    const process = group.start({ name, command: options.stunnelPath, args: [conf], logFile: join(dir, `${name}.log`) });
    const relay = { role: name, process };
    relays.push(relay);
    return relay;
  };
  // Start from the backend side so each hop's next hop already listens.
  const exitRelay = start('exit', exit);
  const middleRelay = hops === 2 ? start('middle', middle) : undefined;
  const entryRelay = start('entry', entry);
  for (const p of ports.values()) {
    await exitRelay.process.waitForListening(p.exit);
    if (middleRelay !== undefined) await middleRelay.process.waitForListening(p.middle);
    await entryRelay.process.waitForListening(p.entry);
  }

  return {
    name: hops === 2 ? 'stunnel' : 'stunnel-1hop',
    description: hops === 2
      ? `client → stunnel entry ═mTLS═> stunnel middle ═mTLS═> stunnel exit → backend (${options.version}, three processes, TLS 1.3, ECDSA P-256); the baseline`
      : `client → stunnel entry ═mTLS═> stunnel exit → backend (${options.version}, the classic two-process pair with one TLS hop); context only`,
    relays: [...relays].reverse(),
    endpoint(service: BackendService): Endpoint {
      return { host: '127.0.0.1', port: ports.get(service)!.entry };
    },
    async close() {
      await Promise.all(relays.map((r) => r.process.stop()));
    },
  };
}
