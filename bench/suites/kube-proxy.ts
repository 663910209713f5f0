/**
 * The kube proxy's added latency (issue 6): bench/kube-proxy.ts runs the fake Kubernetes API and
 * `startKubeProxy` in their own processes and times, in the same run, a kept-alive `get` of one pod
 * (p50, p99) and a 5 MB pod list, straight to the fake API (`direct`) and through the proxy
 * (`causeway`). The rows carry both columns; "added" rows are the difference.
 */
import type { KubeProxyBenchOptions, KubeProxyBenchResult } from '../kube-proxy.ts';
import type { Metric, Suite, SuiteContext } from './suite.ts';
import { SuiteSkipped } from './suite.ts';

export const kubeProxySuite: Suite = {
  name: 'kube-proxy',
  // direct = the fake API, sent the proxy's own token and Impersonate-* by the client; causeway = through startKubeProxy with an ES256 ID token.
  title: 'Kube proxy: added latency of a kept-alive get and a 5 MB list (direct = the fake API itself)',
  needs: [],
  async run(context: SuiteContext): Promise<Metric[]> {
    let runKubeProxyBench: (options: KubeProxyBenchOptions) => Promise<KubeProxyBenchResult>;
    try {
      ({ runKubeProxyBench } = await import('../kube-proxy.ts'));
    } catch (err) {
      throw new SuiteSkipped(`bench/kube-proxy.ts cannot be loaded in this tree (${err instanceof Error ? err.message : String(err)})`);
    }
    const quick = context.sizes.policyDecisions < 100_000;
    const r = await runKubeProxyBench({ ...(quick ? { getsPerRound: 300, listsPerRound: 4, rounds: 2 } : {}), log: (line) => context.log(`  ${line}`) });
    context.log(`    get added p50 ${r.getAddedP50Ms.toFixed(2)} ms, p99 ${r.getAddedP99Ms.toFixed(2)} ms; ${(r.listBytes / 1e6).toFixed(1)} MB list added ${r.listAddedMedianMs.toFixed(1)} ms`);
    const details = { ...r };
    return [
      { id: 'kube-proxy.get-p50', title: `Kept-alive get of one pod, p50 (${r.gets} requests per path)`, unit: 'ms', values: { direct: r.getDirectP50Ms, causeway: r.getProxyP50Ms }, baseline: 'direct', digits: 2, details },
      { id: 'kube-proxy.get-p99', title: 'Kept-alive get of one pod, p99', unit: 'ms', values: { direct: r.getDirectP99Ms, causeway: r.getProxyP99Ms }, baseline: 'direct', digits: 2, details },
      { id: 'kube-proxy.get-added-p50', title: 'Kube proxy added latency, get p50', unit: 'ms', values: { causeway: r.getAddedP50Ms }, digits: 2, details },
      { id: 'kube-proxy.get-added-p99', title: 'Kube proxy added latency, get p99', unit: 'ms', values: { causeway: r.getAddedP99Ms }, digits: 2, details },
      { id: 'kube-proxy.list-5mb', title: `${(r.listBytes / 1e6).toFixed(1)} MB pod list, time to the last byte (median of ${r.lists})`, unit: 'ms', values: { direct: r.listDirectMedianMs, causeway: r.listProxyMedianMs }, baseline: 'direct', digits: 1, details },
      { id: 'kube-proxy.list-added', title: 'Kube proxy added latency, 5 MB list (median)', unit: 'ms', values: { causeway: r.listAddedMedianMs }, digits: 1, details },
    ];
  },
};
