/**
 * The whole data path in the test process, for end-to-end tests with the real kubectl:
 *
 *   kubectl ──CONNECT──> client proxy ══mTLS══> access tier <══tunnel══ connector ──> fake Kubernetes API
 *
 * One CA (ours) for the access tier, connector and trust certificates; another (the cluster's) for
 * the fake API's serving certificate, which names the service domain, as a real API server or kube
 * proxy would. Configuration is a StaticConfigSource fed the same spec objects `causeway apply` takes.
 * Every listener is on 127.0.0.1, port 0 on first start; a part restarted comes back on the port it
 * had, so the specs (and kubectl's proxy settings) stay true. Access events are kept in memory.
 *
 * Register `t.after(() => chain.close())` (or `after`) right after startChain().
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAccessTier } from '../../src/access-tier/index.ts';
import type { AccessTier, AccessTierLimits } from '../../src/access-tier/index.ts';
import { startClientProxy } from '../../src/client/proxy.ts';
import type { ClientProxy, TrustMaterial } from '../../src/client/proxy.ts';
import { startConnector } from '../../src/connector/index.ts';
import type { Connector } from '../../src/connector/index.ts';
import { MemoryEventSink } from '../../src/lib/audit/index.ts';
import type { AccessEvent, AccessEventSink } from '../../src/lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../../src/lib/config/index.ts';
import { silentLogger } from '../../src/lib/log.ts';
import type { Logger } from '../../src/lib/log.ts';
import { CertificateAuthority, issueKeyAndCert } from '../../src/lib/pki/index.ts';
import type { CertIdentity, CertType } from '../../src/lib/pki/index.ts';
import { parseSpecDocuments } from '../../src/lib/spec/index.ts';
import type { ServiceSpec, SpecObject } from '../../src/lib/spec/index.ts';
import { makeServerCert, makeTestCa } from './certs.ts';
import type { IssuedCert } from './certs.ts';
import { startFakeKube } from './fake-kube/index.ts';
import type { FakeKube, FakeKubeOptions } from './fake-kube/index.ts';
import { DEFAULT_TEST_TOKEN, writeKubeconfig } from './kubectl.ts';

export const CHAIN_NAMES = {
  cluster: 'e2e',
  accessTier: 'edge-1',
  connector: 'dc1',
  service: 'e2e-k8s',
  user: 'alice',
  device: 'laptop-1',
} as const;

export interface ChainOptions {
  /** The service domain (kubectl's server name and the SNI); default kube.e2e.causeway.test. */
  domain?: string;
  /** Passed to the fake API (e.g. bigPods); its TLS material, host and port are the chain's. */
  kube?: Omit<FakeKubeOptions, 'certPem' | 'keyPem' | 'caPem' | 'host' | 'port' | 'dnsNames'>;
  /** Overrides for the access tier's limits; the chain already shortens the drain so restarts are quick. */
  accessTierLimits?: Partial<AccessTierLimits>;
  logger?: Logger;
}

/** How kubectl reaches the service: through HTTPS_PROXY, or with proxy-url in its kubeconfig. */
export type ProxyStyle = 'https-proxy' | 'proxy-url';

export interface KubectlSetup {
  kubeconfig: string;
  env: Record<string, string>;
}

export interface Chain {
  readonly domain: string;
  /** https://DOMAIN: kubectl's server. */
  readonly serverUrl: string;
  readonly ca: CertificateAuthority;
  /** The CA kubectl trusts for the API server (the fake's, not ours). */
  readonly kubeCaPem: string;
  /** The demo user's trust material, as the client proxy uses it. */
  readonly trust: TrustMaterial;
  readonly config: StaticConfigSource;
  readonly service: ServiceSpec;
  /** Every access event any access tier of the chain wrote. */
  readonly events: MemoryEventSink;
  /** The parts as they are now (after restarts, the new instances). */
  readonly kube: FakeKube;
  readonly accessTier: AccessTier;
  readonly connector: Connector | undefined;
  readonly proxy: ClientProxy;
  readonly accessTierAddress: string;
  /** http://127.0.0.1:PORT of the client proxy. */
  readonly proxyUrl: string;
  /** A kubeconfig (in a directory the chain removes on close) and environment for kubectl. */
  kubectlSetup(style: ProxyStyle, proxyUrl?: string): KubectlSetup;
  /** Issues a certificate from the chain's CA. */
  issue(type: CertType, identity: CertIdentity): Promise<{ certPem: string; keyPem: string; caPem: string }>;
  /** Starts another client proxy for the service with other trust material; closed with the chain. */
  startProxy(trust: TrustMaterial): Promise<ClientProxy>;
  /** Kills the connector at once (destroy: tunnels and streams cut, no goodbye). */
  killConnector(): void;
  /** Starts a connector again (a new instance, same name and certificate). */
  startConnector(): Promise<Connector>;
  /** Resolves once the access tier holds a tunnel from the connector; rejects after timeoutMs. */
  waitForTunnel(timeoutMs?: number): Promise<void>;
  /** Stops the fake API (every connection to it ends). */
  stopKube(): Promise<void>;
  /** Starts the fake API again on its port, with the same certificate (its pods start afresh). */
  startKube(): Promise<FakeKube>;
  /** Closes the access tier and starts a new one on the same port. */
  restartAccessTier(): Promise<AccessTier>;
  /** Access events written after `mark` (an index into events.events). */
  eventsSince(mark: number): AccessEvent[];
  close(): Promise<void>;
}

const FAST_CLOSE_MS = 300;

/** Keeps the sink open across access tier restarts: each access tier gets a view whose close does nothing. */
function borrowed(sink: AccessEventSink): AccessEventSink {
  return { write: (event) => sink.write(event), close: () => Promise.resolve() };
}

function specs(domain: string, kubeCaPem: string, accessTierAddress: string, kubeAddress: string): SpecObject[] {
  const n = CHAIN_NAMES;
  const text = [
    { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: n.accessTier }, spec: { cluster: n.cluster, address: accessTierAddress } },
    { apiVersion: 'causeway/v1', kind: 'Connector', metadata: { name: n.connector }, spec: { cluster: n.cluster, allowedCidrs: ['127.0.0.0/8'] } },
    {
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name: n.service },
      spec: {
        type: 'kubernetes',
        cluster: n.cluster,
        accessTier: n.accessTier,
        connector: n.connector,
        domain,
        port: 443,
        backend: { dnsOverride: kubeAddress },
        kubernetes: { clusterName: 'e2e', caPublicKey: kubeCaPem },
      },
    },
  ]
    .map((o) => JSON.stringify(o))
    .join('\n---\n');
  const parsed = parseSpecDocuments(text, 'chain');
  if (!parsed.ok) throw new Error(`chain specs are invalid: ${JSON.stringify(parsed.problems)}`);
  return parsed.objects;
}

export async function startChain(opts: ChainOptions = {}): Promise<Chain> {
  const domain = opts.domain ?? 'kube.e2e.causeway.test';
  const logger = opts.logger ?? silentLogger();
  const n = CHAIN_NAMES;
  const toClose: Array<() => Promise<void>> = [];
  const closeAll = async (): Promise<void> => {
    for (const close of toClose.splice(0).reverse()) await close().catch(() => undefined);
  };

  try {
    const dir = await mkdtemp(join(tmpdir(), 'causeway-chain-'));
    toClose.push(() => rm(dir, { recursive: true, force: true }));

    const ca = await CertificateAuthority.create({ commonName: 'causeway e2e CA' });
    const issue = async (type: CertType, identity: CertIdentity): Promise<{ certPem: string; keyPem: string; caPem: string }> => {
      const issued = await issueKeyAndCert(ca, { type, identity });
      return { certPem: issued.certPem, keyPem: issued.keyPem, caPem: issued.caPem };
    };
    const kubeCa = await makeTestCa({ commonName: 'e2e cluster CA' });
    const [edgeCert, connectorCert, trustCert, kubeCert] = await Promise.all([
      issue('access-tier', { name: n.accessTier }),
      issue('connector', { name: n.connector }),
      issue('trust', { user: n.user, device: n.device }),
      makeServerCert(kubeCa, { dnsNames: [domain, 'localhost'], ipAddresses: ['127.0.0.1'] }),
    ]);
    const trust: TrustMaterial = { certPem: trustCert.certPem, keyPem: trustCert.keyPem, caPem: ca.certPem };

    let kubePort = 0;
    let kube: FakeKube | undefined;
    const launchKube = async (material: IssuedCert): Promise<FakeKube> => {
      const started = await startFakeKube({
        bearerToken: DEFAULT_TEST_TOKEN,
        ...opts.kube,
        host: '127.0.0.1',
        port: kubePort,
        certPem: material.certPem,
        keyPem: material.keyPem,
        caPem: material.caPem,
        logger: logger.child({ part: 'fake-kube' }),
      });
      kubePort = started.port;
      return started;
    };
    kube = await launchKube(kubeCert);
    toClose.push(() => kube?.close() ?? Promise.resolve());

    const events = new MemoryEventSink();
    // Provisional address until the access tier has bound its port; replaced before the connector starts.
    const config = new StaticConfigSource(snapshotFromObjects(specs(domain, kubeCa.certPem, '127.0.0.1:1', `127.0.0.1:${kubePort}`)));
    toClose.push(() => config.close());

    let accessTierPort = 0;
    let accessTier: AccessTier | undefined;
    const launchAccessTier = async (): Promise<AccessTier> => {
      const started = await startAccessTier({
        name: n.accessTier,
        listen: { host: '127.0.0.1', port: accessTierPort },
        tls: { certPem: edgeCert.certPem, keyPem: edgeCert.keyPem, caPem: ca.certPem },
        config,
        events: borrowed(events),
        logger: logger.child({ part: 'access-tier' }),
        limits: { drainTimeoutMs: FAST_CLOSE_MS, ...opts.accessTierLimits },
      });
      accessTierPort = started.port();
      return started;
    };
    accessTier = await launchAccessTier();
    toClose.push(() => accessTier?.close() ?? Promise.resolve());
    const accessTierAddress = `127.0.0.1:${accessTierPort}`;
    config.update(snapshotFromObjects(specs(domain, kubeCa.certPem, accessTierAddress, `127.0.0.1:${kubePort}`)));
    const service = config.current()!.services[0];

    const proxies: ClientProxy[] = [];
    toClose.push(async () => {
      for (const p of proxies.splice(0)) await p.close();
    });
    const launchProxy = async (material: TrustMaterial): Promise<ClientProxy> => {
      const proxy = await startClientProxy({ service, accessTierAddress, trust: material, hosts: ['127.0.0.1'], port: 0, logger: logger.child({ part: 'client-proxy' }), closeGraceMs: FAST_CLOSE_MS });
      proxies.push(proxy);
      return proxy;
    };
    const proxy = await launchProxy(trust);

    let connector: Connector | undefined;
    const launchConnector = async (): Promise<Connector> => {
      connector = await startConnector({
        name: n.connector,
        tls: { certPem: connectorCert.certPem, keyPem: connectorCert.keyPem, caPem: ca.certPem },
        config,
        logger: logger.child({ part: 'connector' }),
        drainTimeoutMs: FAST_CLOSE_MS,
      });
      return connector;
    };
    await launchConnector();
    toClose.push(() => connector?.close() ?? Promise.resolve());

    const waitForTunnel = async (timeoutMs = 10_000): Promise<void> => {
      const deadline = Date.now() + timeoutMs;
      while (!(accessTier?.stats().tunnels.some((t) => t.connector === n.connector) ?? false)) {
        if (Date.now() > deadline) throw new Error(`no tunnel from connector ${n.connector} within ${timeoutMs} ms; connector: ${JSON.stringify(connector?.status())}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await waitForTunnel();

    let kubeconfigs = 0;
    const kubeDir = join(dir, 'kubeconfigs');
    await mkdir(kubeDir, { recursive: true });
    const proxyUrl = `http://127.0.0.1:${proxy.port()}`;

    const chain: Chain = {
      domain,
      serverUrl: `https://${domain}`,
      ca,
      kubeCaPem: kubeCa.certPem,
      trust,
      config,
      service,
      events,
      get kube() {
        if (kube === undefined) throw new Error('the fake API is stopped');
        return kube;
      },
      get accessTier() {
        if (accessTier === undefined) throw new Error('the access tier is stopped');
        return accessTier;
      },
      get connector() {
        return connector;
      },
      proxy,
      accessTierAddress,
      proxyUrl,
      kubectlSetup: (style, url = proxyUrl): KubectlSetup => {
        kubeconfigs++;
        const fileName = `kubeconfig-${kubeconfigs}`;
        if (style === 'proxy-url') return { kubeconfig: writeKubeconfig(kubeDir, { server: `https://${domain}`, caPem: kubeCa.certPem, proxyUrl: url, fileName }), env: {} };
        return { kubeconfig: writeKubeconfig(kubeDir, { server: `https://${domain}`, caPem: kubeCa.certPem, fileName }), env: { HTTPS_PROXY: url } };
      },
      issue,
      startProxy: launchProxy,
      killConnector: () => {
        connector?.destroy();
        connector = undefined;
      },
      startConnector: launchConnector,
      waitForTunnel,
      stopKube: async () => {
        const stopping = kube;
        kube = undefined;
        await stopping?.close();
      },
      startKube: async () => {
        kube = await launchKube(kubeCert);
        return kube;
      },
      restartAccessTier: async () => {
        const old = accessTier;
        accessTier = undefined;
        await old?.close();
        accessTier = await launchAccessTier();
        return accessTier;
      },
      eventsSince: (mark) => events.events.slice(mark),
      close: closeAll,
    };
    return chain;
  } catch (err) {
    await closeAll();
    throw err;
  }
}
