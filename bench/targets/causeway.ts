/**
 * The Causeway chain as a target, every part in its own Node process as in production:
 *
 *   client ─CONNECT─> client proxy ══mTLS (trust cert, SNI = service domain)══> access tier
 *                                                                    ⇑ HTTP/2 stream per connection
 *   backend <─TCP── connector ══mTLS (connector cert), dialled out, one long-lived tunnel══╝
 *
 * Certificates come from Causeway's own PKI (a fresh CA per run); configuration is a set of specs
 * (YAML, parsed and checked as `causeway apply` would) loaded into a static config source in each
 * part. The service is a `tcp` service with `httpConnect: true` whose allow pattern is the backend's
 * three loopback ports, so one client proxy carries every suite's traffic, and every connection is
 * a CHAIN-mode CONNECT exactly like kubectl's.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLOSING_REQUEST, HttpExchange } from '../client/http-exchange.ts';
import { openStream } from '../client/open-stream.ts';
import { freePort } from '../ports.ts';
import type { BenchProcess, ProcessGroup } from '../processes.ts';
import type { HandshakeServer } from './handshake-server.ts';
import type { Backend, BackendService, Endpoint, Relay, Target } from './target.ts';
import { BACKEND_SERVICES } from './target.ts';

/** The chain cannot be measured in this tree (a part is missing); the run goes on without it. */
export class TargetUnavailable extends Error {
  override readonly name = 'TargetUnavailable';
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CHILDREN = fileURLToPath(new URL('../children/', import.meta.url));
/** The parts the chain needs, by the file that exports each start function. */
const REQUIRED = ['src/client/proxy.ts', 'src/access-tier/index.ts', 'src/connector/index.ts', 'src/lib/pki/index.ts', 'src/lib/config/index.ts', 'src/lib/spec/index.ts', 'src/lib/audit/index.ts'];

const NAMES = {
  cluster: 'bench',
  accessTier: 'bench-edge',
  connector: 'bench-connector',
  service: 'bench-backend',
  domain: 'backend.bench.causeway.test',
  user: 'bench-user',
  device: 'bench-device',
};
/** Production-like logging: warnings and errors only, no per-connection lines (as stunnel's `debug = warning`). */
const LOG_LEVEL = 'warn';

export interface CausewayChain {
  target: Target;
  /** The access tier, for the handshake-rate suite. */
  handshakeServer: HandshakeServer;
}

export async function startCausewayTarget(options: {
  backend: Backend;
  group: ProcessGroup;
  dir: string;
  log: (line: string) => void;
  /** How many client proxies to start (see clientProxiesFor in run.ts); suites use the first unless they spread load. */
  clientProxies: number;
}): Promise<CausewayChain> {
  const missing = REQUIRED.filter((f) => !existsSync(join(ROOT, f)));
  if (missing.length > 0) throw new TargetUnavailable(`not in this tree yet: ${missing.join(', ')}`);
  const { backend, group, dir } = options;

  // Imported only now, so a tree without the PKI still runs the baselines.
  const { CertificateAuthority, issueKeyAndCert } = await import('../../src/lib/pki/index.ts');
  const ca = await CertificateAuthority.create({ commonName: 'Causeway bench CA', lifetimeDays: 2 });
  const [edge, connector, trust] = await Promise.all([
    issueKeyAndCert(ca, { type: 'access-tier', identity: { name: NAMES.accessTier } }),
    issueKeyAndCert(ca, { type: 'connector', identity: { name: NAMES.connector } }),
    issueKeyAndCert(ca, { type: 'trust', identity: { user: NAMES.user, device: NAMES.device } }),
  ]);

  const accessTierPort = await freePort();
  const accessTierAddress = `127.0.0.1:${accessTierPort}`;
  const specs = benchSpecs(accessTierAddress, backend);
  writeFileSync(join(dir, 'specs.yaml'), specs);
  const { snapshotFromSpecs } = await import('../children/specs.ts');
  snapshotFromSpecs(specs); // fail here, with the problems listed, rather than in three children

  const startPart = async (role: string, config: Record<string, unknown>, instance = ''): Promise<{ relay: Relay; ready: Record<string, unknown> }> => {
    const name = `${role}${instance}`;
    const configFile = join(dir, `${name}.json`);
    writeFileSync(configFile, JSON.stringify(config), { mode: 0o600 });
    const process: BenchProcess = group.startNode(name, join(CHILDREN, `${role}.ts`), [configFile], join(dir, `${name}.log`));
    const ready = await process.waitForMessage('ready', 30_000);
    return { relay: { role, process }, ready };
  };

  const tier = await startPart('access-tier', {
    name: NAMES.accessTier,
    port: accessTierPort,
    tls: { certPem: edge.certPem, keyPem: edge.keyPem, caPem: ca.certPem },
    specs,
    eventsPath: join(dir, 'access-events.jsonl'),
    logLevel: LOG_LEVEL,
    maxConnectionsPerSource: 65_536,
  });
  const conn = await startPart('connector', {
    name: NAMES.connector,
    accessTier: { name: NAMES.accessTier, address: accessTierAddress },
    tls: { certPem: connector.certPem, keyPem: connector.keyPem, caPem: ca.certPem },
    specs,
    logLevel: LOG_LEVEL,
  });
  const proxies: Array<{ relay: Relay; port: number }> = [];
  for (let i = 0; i < Math.max(1, options.clientProxies); i++) {
    const proxy = await startPart('client-proxy', {
      specs,
      serviceName: NAMES.service,
      accessTierAddress,
      trust: { certPem: trust.certPem, keyPem: trust.keyPem, caPem: ca.certPem },
      logLevel: LOG_LEVEL,
    }, i === 0 ? '' : `-${i + 1}`);
    proxies.push({ relay: proxy.relay, port: Number(proxy.ready['port']) });
  }
  if (proxies.length > 1) options.log(`  causeway: ${proxies.length} client proxies (the open-file limit does not let one hold every idle stream)`);

  const entry = (port: number, service: BackendService): Endpoint => ({
    host: '127.0.0.1',
    port,
    connectAuthority: `127.0.0.1:${backend.ports[service]}`,
  });
  const endpoint = (service: BackendService): Endpoint => entry(proxies[0].port, service);
  await waitForChain(endpoint('http'), [tier.relay, conn.relay, ...proxies.map((p) => p.relay)]);

  const relays = [...proxies.map((p) => p.relay), tier.relay, conn.relay];
  return {
    target: {
      name: 'causeway',
      description: 'client → client proxy (CONNECT) ═mTLS═> access tier ⇐mTLS + HTTP/2 tunnel═ connector → backend (three Node processes, TLS 1.3, ECDSA P-256 from our CA)',
      relays,
      endpoint,
      entryPoints: (service) => proxies.map((p) => entry(p.port, service)),
      async close() {
        for (const r of relays) await r.process.stop();
      },
    },
    handshakeServer: {
      column: 'causeway',
      description: 'the access tier (one Node process), trust certificate as client certificate, SNI = the service domain',
      host: '127.0.0.1',
      port: accessTierPort,
      servername: NAMES.domain,
      caPem: ca.certPem,
      certPem: trust.certPem,
      keyPem: trust.keyPem,
      // A target outside the service: the access tier answers at once (421) without dialling anything,
      // so the figure is the handshake plus the smallest possible answer, like nginx's `return 421`.
      request: Buffer.from(`CONNECT outside.bench.causeway.test:443 HTTP/1.1\r\nHost: outside.bench.causeway.test:443\r\n\r\n`),
      process: tier.relay.process,
    },
  };
}

/**
 * The specs of the benchmark's installation: one access tier, one connector allowed to reach
 * loopback only, one tcp service whose clients may CONNECT to the backend's three ports.
 */
function benchSpecs(accessTierAddress: string, backend: Backend): string {
  const ports = BACKEND_SERVICES.map((s) => backend.ports[s]).join(', ');
  return `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: ${NAMES.accessTier}}
spec: {cluster: ${NAMES.cluster}, address: "${accessTierAddress}"}
---
apiVersion: causeway/v1
kind: Connector
metadata: {name: ${NAMES.connector}}
spec: {cluster: ${NAMES.cluster}, allowedCidrs: [127.0.0.0/8], allowedDomains: []}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: ${NAMES.service}, description: "The benchmark's backend: sink, source, HTTP"}
spec:
  type: tcp
  cluster: ${NAMES.cluster}
  accessTier: ${NAMES.accessTier}
  connector: ${NAMES.connector}
  domain: ${NAMES.domain}
  port: 443
  backend:
    httpConnect: true
    allowPatterns: [{cidrs: [127.0.0.1/32], ports: [${ports}]}]
`;
}

/** The connector dials out in the background: wait until a request gets through the whole chain. */
async function waitForChain(endpoint: Endpoint, relays: Relay[]): Promise<void> {
  const deadline = Date.now() + 20_000;
  let last: unknown;
  while (Date.now() < deadline) {
    for (const r of relays) {
      if (!r.process.alive) throw new Error(`${r.role} exited while the chain was starting${r.process.tail()}`);
    }
    try {
      const { socket, leftover } = await openStream(endpoint, 5_000);
      try {
        const status = await new HttpExchange(socket, leftover).send(CLOSING_REQUEST);
        if (status === 200) return;
        last = new Error(`backend answered ${status}`);
      } finally {
        socket.destroy();
      }
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`the chain did not carry a request within 20 s: ${last instanceof Error ? last.message : String(last)}${relays.map((r) => r.process.tail(5)).join('')}`);
}
