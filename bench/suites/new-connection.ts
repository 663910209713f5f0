/**
 * New-connection time: connect to the target's entry, (for Causeway) CONNECT and wait for 200, send
 * one small HTTP request with `Connection: close`, read the whole answer. The clock runs from just
 * before the TCP connect to the last byte of the answer, on the client, one connection at a time.
 * That is what kubectl pays per connection (it opens two or three per command with proxy-url).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CLOSING_REQUEST, HttpExchange } from '../client/http-exchange.ts';
import { openStream } from '../client/open-stream.ts';
import { nowNs, percentile } from '../stats.ts';
import type { Target } from '../targets/target.ts';
import { latencyMetrics } from './latency-metrics.ts';
import type { Metric, Suite, SuiteContext } from './suite.ts';
import { interleave } from './suite.ts';

const WARM_UP = 20;

export const newConnectionSuite: Suite = {
  name: 'new-connection',
  title: 'New-connection setup time',
  needs: ['stunnel', 'causeway'],
  async run(context: SuiteContext): Promise<Metric[]> {
    const { newConnectionRounds: rounds, newConnectionsPerRound: perRound } = context.sizes;
    context.log(`  ${rounds} round(s) × ${perRound} connections per target (after ${WARM_UP} warm-up connections)`);
    for (const target of context.targets) {
      try {
        for (let i = 0; i < WARM_UP; i++) await oneConnection(target);
      } catch {
        // reported by the measured rounds below
      }
    }
    const results = await interleave(context.targets, rounds, async (target) => {
      const samples: number[] = [];
      for (let i = 0; i < perRound; i++) samples.push(await oneConnection(target));
      context.log(`    ${target.name.padEnd(8)} p50 ${(percentile(samples, 50) / 1e6).toFixed(2)} ms`);
      await sleep(100);
      return samples;
    });
    return latencyMetrics(results, {
      id: 'new-connection',
      title: 'New connection + one request',
      unit: 'ms',
      scale: 1e-6,
      digits: 2,
      goals: { p50: 1.0 },
    });
  },
};

async function oneConnection(target: Target): Promise<number> {
  const start = nowNs();
  const { socket, leftover } = await openStream(target.endpoint('http'));
  try {
    const status = await new HttpExchange(socket, leftover).send(CLOSING_REQUEST);
    const elapsed = nowNs() - start;
    if (status !== 200) throw new Error(`${target.name}: backend answered ${status}`);
    return elapsed;
  } finally {
    socket.destroy();
  }
}
