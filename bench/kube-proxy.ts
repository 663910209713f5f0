/**
 * The kube proxy's added latency (issue 6): a kept-alive `get` of one pod (p50, p99) and a 5 MB pod
 * list (time to the last byte), through `startKubeProxy` against the fake Kubernetes API, and the
 * same requests straight to the fake API in the same run.
 *
 *     npx node bench/kube-proxy.ts [--quick]     # prints the figures
 *
 * bench/run.ts calls `runKubeProxyBench()` (suite `kube-proxy`).
 *
 * Three processes, so that no two of them share an event loop: the fake API (impersonation mode: it
 * trusts only the proxy's token and requires Impersonate-User, as kube-apiserver behind the proxy),
 * the kube proxy (with its own test OIDC issuer, which signs the caller's ES256 ID token once), and
 * this process as the client. The direct client sends what the proxy would (the proxy's token and
 * Impersonate-User/Group), so both paths reach the same handler. Each path has one kept-alive TLS
 * connection; rounds alternate between the paths. "Added" is the proxied figure minus the direct
 * one (percentiles of each path, subtracted).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:https';
import { fileURLToPath } from 'node:url';
import { stopChildren } from './processes.ts';
import { median, nowNs, percentile } from './stats.ts';

const PROXY_TOKEN = 'bench-kube-proxy-sa-token-0123456789';
const BIG_PODS = 2000;
const SELF = fileURLToPath(import.meta.url);

export interface KubeProxyBenchOptions {
  /** Kept-alive gets per round and path (after a warm-up of a fifth as many). Default 1000. */
  getsPerRound?: number;
  /** 5 MB lists per round and path. Default 10. */
  listsPerRound?: number;
  /** Rounds per path, alternating. Default 3. */
  rounds?: number;
  log?: (line: string) => void;
}

export interface KubeProxyBenchResult {
  getDirectP50Ms: number;
  getDirectP99Ms: number;
  getProxyP50Ms: number;
  getProxyP99Ms: number;
  getAddedP50Ms: number;
  getAddedP99Ms: number;
  listBytes: number;
  listDirectMedianMs: number;
  listProxyMedianMs: number;
  listAddedMedianMs: number;
  gets: number;
  lists: number;
}

interface Endpoint {
  url: string;
  caPem: string;
  headers: Record<string, string | string[]>;
  agent: Agent;
}

function get(e: Endpoint, path: string): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(`${e.url}${path}`, { ca: e.caPem, agent: e.agent, headers: e.headers }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Times n sequential requests; fails on any non-200 (a refused request is not a latency sample). */
async function timed(e: Endpoint, path: string, n: number): Promise<{ ms: number[]; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = nowNs();
    const r = await get(e, path);
    ms.push((nowNs() - t0) / 1e6);
    if (r.status !== 200) throw new Error(`GET ${path} at ${e.url} answered ${r.status}`);
    bytes = r.bytes;
  }
  return { ms, bytes };
}

function childMessage<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m as T));
    child.once('exit', (code) => reject(new Error(`the bench child exited (${code ?? 'signal'}) before it was ready`)));
  });
}

function startChild(role: string, input: unknown): ChildProcess {
  return spawn(process.execPath, [...process.execArgv, SELF, '--child', role, JSON.stringify(input)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

export async function runKubeProxyBench(options: KubeProxyBenchOptions = {}): Promise<KubeProxyBenchResult> {
  const log = options.log ?? (() => undefined);
  const getsPerRound = options.getsPerRound ?? 1000;
  const listsPerRound = options.listsPerRound ?? 10;
  const rounds = options.rounds ?? 3;
  const children: ChildProcess[] = [];
  const agents: Agent[] = [];
  try {
    const fake = startChild('fake', {});
    children.push(fake);
    const api = await childMessage<{ url: string; caPem: string }>(fake);
    const proxyChild = startChild('proxy', api);
    children.push(proxyChild);
    const kp = await childMessage<{ url: string; caPem: string; token: string }>(proxyChild);
    const agent = (): Agent => {
      const a = new Agent({ keepAlive: true, maxSockets: 1 });
      agents.push(a);
      return a;
    };
    const direct: Endpoint = { url: api.url, caPem: api.caPem, agent: agent(), headers: { authorization: `Bearer ${PROXY_TOKEN}`, 'impersonate-user': 'ada@example.com', 'impersonate-group': ['eng', 'system:authenticated'] } };
    const proxied: Endpoint = { url: kp.url, caPem: kp.caPem, agent: agent(), headers: { authorization: `Bearer ${kp.token}` } };
    const one = '/api/v1/namespaces/default/pods/web-0';
    const list = '/api/v1/namespaces/big/pods';

    const getMs = { direct: [] as number[], proxy: [] as number[] };
    const listMs = { direct: [] as number[], proxy: [] as number[] };
    let listBytes = 0;
    for (const e of [direct, proxied]) {
      await timed(e, one, Math.ceil(getsPerRound / 5));
      await timed(e, list, 2);
    }
    for (let round = 0; round < rounds; round++) {
      // Alternate which path goes first, so a drift in the machine's load falls on both.
      const order: Array<['direct' | 'proxy', Endpoint]> = round % 2 === 0 ? [['direct', direct], ['proxy', proxied]] : [['proxy', proxied], ['direct', direct]];
      for (const [name, e] of order) {
        getMs[name].push(...(await timed(e, one, getsPerRound)).ms);
        const l = await timed(e, list, listsPerRound);
        listMs[name].push(...l.ms);
        listBytes = l.bytes;
      }
      log(`round ${round + 1}/${rounds}: get p50 direct ${percentile(getMs.direct, 50).toFixed(2)} ms, proxied ${percentile(getMs.proxy, 50).toFixed(2)} ms; list median direct ${median(listMs.direct).toFixed(1)} ms, proxied ${median(listMs.proxy).toFixed(1)} ms`);
    }
    const r = {
      getDirectP50Ms: percentile(getMs.direct, 50),
      getDirectP99Ms: percentile(getMs.direct, 99),
      getProxyP50Ms: percentile(getMs.proxy, 50),
      getProxyP99Ms: percentile(getMs.proxy, 99),
      listBytes,
      listDirectMedianMs: median(listMs.direct),
      listProxyMedianMs: median(listMs.proxy),
      gets: getMs.proxy.length,
      lists: listMs.proxy.length,
    };
    return { ...r, getAddedP50Ms: r.getProxyP50Ms - r.getDirectP50Ms, getAddedP99Ms: r.getProxyP99Ms - r.getDirectP99Ms, listAddedMedianMs: r.listProxyMedianMs - r.listDirectMedianMs };
  } finally {
    for (const a of agents) a.destroy();
    await stopChildren(children);
  }
}

/** A child: the fake API or the kube proxy; tells the parent where it listens, then runs until killed. */
async function child(role: string, input: string): Promise<void> {
  if (role === 'fake') {
    const { startFakeKube } = await import('../test/kit/fake-kube/index.ts');
    const kube = await startFakeKube({ impersonation: { proxyToken: PROXY_TOKEN }, bigPods: BIG_PODS });
    process.send?.({ url: kube.url, caPem: kube.caPem });
    return;
  }
  const api = JSON.parse(input) as { url: string; caPem: string };
  const { startKubeProxy, createServingCa, issueServingCert } = await import('../src/kube-proxy/index.ts');
  const { idTokenClaims, startTestIssuer } = await import('../src/lib/oidc/test-issuer.testing.ts');
  const issuer = await startTestIssuer();
  await issuer.addKey('ES256');
  const ca = await createServingCa({ clusterName: 'bench' });
  const serving = await issueServingCert(ca, { hosts: ['127.0.0.1'] });
  const proxy = await startKubeProxy({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { ...serving, caPem: ca.certPem },
    issuer: issuer.issuer,
    audience: 'kubernetes:bench',
    allowInsecureIssuer: true,
    backend: { url: api.url, caPem: api.caPem, token: () => PROXY_TOKEN },
    clusterName: 'bench',
    events: { write: () => undefined },
  });
  const token = await issuer.sign(idTokenClaims(issuer.issuer, 'kubernetes:bench', Date.now(), { exp: Math.floor(Date.now() / 1000) + 3600 }));
  process.send?.({ url: proxy.url, caPem: ca.certPem, token });
}

if (process.argv[1] === SELF) {
  const at = process.argv.indexOf('--child');
  if (at >= 0) {
    await child(process.argv[at + 1] ?? '', process.argv[at + 2] ?? '{}');
    // Runs until the parent stops it; a parent that went away takes the child with it.
    process.on('disconnect', () => process.exit(0));
  } else {
    const quick = process.argv.includes('--quick');
    const r = await runKubeProxyBench({ ...(quick ? { getsPerRound: 300, listsPerRound: 4, rounds: 2 } : {}), log: (line) => console.log(`  ${line}`) });
    console.log(JSON.stringify(r, null, 2));
    process.exit(0);
  }
}
