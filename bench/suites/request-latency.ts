/**
 * Kept-alive small-request latency: one connection per target (through CONNECT for Causeway), a
 * warm-up, then requests one after another; each is timed on the client from write to the last
 * byte of the answer. Percentiles are over the samples of all rounds pooled.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpExchange, KEEP_ALIVE_REQUEST } from '../client/http-exchange.ts';
import { openStream } from '../client/open-stream.ts';
import { nowNs, percentile } from '../stats.ts';
import type { Target } from '../targets/target.ts';
import { latencyMetrics } from './latency-metrics.ts';
import type { Metric, Suite, SuiteContext } from './suite.ts';
import { interleave } from './suite.ts';

const WARM_UP = 200;

export const requestLatencySuite: Suite = {
  name: 'request-latency',
  title: 'Kept-alive small-request latency',
  needs: ['stunnel', 'causeway'],
  async run(context: SuiteContext): Promise<Metric[]> {
    const { requestRounds: rounds, requestsPerRound: perRound } = context.sizes;
    context.log(`  ${rounds} round(s) × ${perRound} requests per target on one kept-alive connection each (after ${WARM_UP} warm-up requests)`);
    const results = await interleave(context.targets, rounds, async (target) => {
      const samples = await keptAlive(target, perRound);
      context.log(`    ${target.name.padEnd(8)} p50 ${(percentile(samples, 50) / 1e3).toFixed(0)} µs`);
      await sleep(100);
      return samples;
    });
    return latencyMetrics(results, {
      id: 'request-latency',
      title: 'Kept-alive small request',
      unit: 'µs',
      scale: 1e-3,
      digits: 0,
      goals: { p50: 1.5 },
    });
  },
};

async function keptAlive(target: Target, count: number): Promise<number[]> {
  const { socket, leftover } = await openStream(target.endpoint('http'));
  try {
    const exchange = new HttpExchange(socket, leftover);
    for (let i = 0; i < WARM_UP; i++) await exchange.send(KEEP_ALIVE_REQUEST);
    const samples = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      const start = nowNs();
      const status = await exchange.send(KEEP_ALIVE_REQUEST);
      samples[i] = nowNs() - start;
      if (status !== 200) throw new Error(`${target.name}: backend answered ${status}`);
    }
    return samples;
  } finally {
    socket.destroy();
  }
}
