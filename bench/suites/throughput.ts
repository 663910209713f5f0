/**
 * Bulk throughput through each target, both directions, one connection at a time:
 * - upload: the client writes for a fixed time, half-closes, and the clock stops when the sink's
 *   byte count comes back, so everything still buffered in the relays is counted and timed;
 * - download: the source writes as fast as the connection takes; the client counts what arrives
 *   during a fixed window starting at the first byte.
 * Also reported: the relays' CPU seconds per GiB moved (all relay processes of the target summed),
 * which explains a throughput gap better than the rate alone on a shared machine.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { openStream } from '../client/open-stream.ts';
import { median, nowNs, sum } from '../stats.ts';
import type { Target } from '../targets/target.ts';
import type { Column, Metric, Suite, SuiteContext } from './suite.ts';
import { interleave } from './suite.ts';

const CHUNK = Buffer.alloc(128 * 1024, 0xa5);
const GIB = 1024 ** 3;

interface Sample {
  gbitPerSecond: number;
  bytes: number;
  relayCpuSeconds: number;
}

export const throughputSuite: Suite = {
  name: 'throughput',
  title: 'Bulk throughput',
  needs: ['stunnel', 'causeway'],
  async run(context: SuiteContext): Promise<Metric[]> {
    const { throughputRounds: rounds, throughputSeconds: seconds } = context.sizes;
    const metrics: Metric[] = [];
    for (const direction of ['download', 'upload'] as const) {
      context.log(`  ${direction}: ${rounds} round(s) × ${seconds} s per target`);
      const results = await interleave(context.targets, rounds, async (target) => {
        const sample = await measure(target, direction, seconds);
        context.log(`    ${target.name.padEnd(8)} ${sample.gbitPerSecond.toFixed(2)} Gbit/s`);
        await sleep(200);
        return sample;
      });
      const values: Partial<Record<Column, number>> = {};
      const perRound: Partial<Record<Column, number[]>> = {};
      const cpu: Partial<Record<Column, number>> = {};
      const notes: string[] = [];
      for (const [target, { results: samples, error }] of results) {
        if (error !== undefined) {
          notes.push(`${target.name}: ${error.message}`);
          continue;
        }
        values[target.name] = median(samples.map((s) => s.gbitPerSecond));
        perRound[target.name] = samples.map((s) => s.gbitPerSecond);
        if (target.relays.length > 0) cpu[target.name] = sum(samples.map((s) => s.relayCpuSeconds)) / (sum(samples.map((s) => s.bytes)) / GIB);
      }
      metrics.push({
        id: `throughput.${direction}`,
        title: `Bulk throughput, ${direction === 'download' ? 'backend → client' : 'client → backend'} (median of rounds)`,
        unit: 'Gbit/s',
        values,
        rounds: perRound,
        baseline: 'stunnel',
        goal: { kind: 'ratio-at-least', baseline: 'stunnel', value: 0.8 },
        digits: 2,
        ...(notes.length > 0 ? { notes } : {}),
      });
      metrics.push({
        id: `throughput.${direction}.relay-cpu`,
        title: `Relay CPU per GiB, ${direction} (all relay processes)`,
        unit: 'CPU s/GiB',
        values: cpu,
        baseline: 'stunnel',
        digits: 2,
      });
    }
    return metrics;
  },
};

async function measure(target: Target, direction: 'download' | 'upload', seconds: number): Promise<Sample> {
  const cpuBefore = relayCpu(target);
  const { bytes, elapsedNs } = direction === 'upload'
    ? await upload(target, seconds)
    : await download(target, seconds);
  // Let the relays finish the connection's teardown before reading their CPU time.
  await sleep(100);
  return { gbitPerSecond: (bytes * 8) / elapsedNs, bytes, relayCpuSeconds: relayCpu(target) - cpuBefore };
}

function relayCpu(target: Target): number {
  return sum(target.relays.map((r) => r.process.cpuSeconds()));
}

async function upload(target: Target, seconds: number): Promise<{ bytes: number; elapsedNs: number }> {
  const { socket, leftover } = await openStream(target.endpoint('sink'));
  const start = nowNs();
  const deadline = start + seconds * 1e9;
  let reply = leftover;
  const done = new Promise<number>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      if (reply.length >= 8) resolve(Number(reply.readBigUInt64BE(0)));
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`${target.name}: upload connection closed before the sink's count arrived`)));
  });
  done.catch(() => {}); // awaited below; a failure while writing is reported from there first
  socket.resume();
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    const pump = (): void => {
      while (nowNs() < deadline) {
        if (!socket.write(CHUNK)) return; // 'drain' calls pump again
      }
      socket.off('drain', pump);
      socket.end();
      resolve();
    };
    socket.on('drain', pump);
    pump();
  });
  const bytes = await done;
  const elapsedNs = nowNs() - start;
  socket.destroy();
  return { bytes, elapsedNs };
}

async function download(target: Target, seconds: number): Promise<{ bytes: number; elapsedNs: number }> {
  const { socket, leftover } = await openStream(target.endpoint('source'));
  let bytes = 0;
  let first = 0;
  let failure: Error | undefined;
  const started = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      if (first === 0) {
        first = nowNs();
        resolve();
      } else {
        bytes += chunk.length;
      }
    });
    socket.on('error', (err) => {
      failure = err;
      reject(err);
    });
    socket.on('close', () => {
      failure ??= new Error(`${target.name}: download connection closed early`);
      reject(failure);
    });
  });
  started.catch(() => {}); // a failure is reported through `failure`
  if (leftover.length > 0) first = nowNs();
  socket.resume();
  if (first === 0) await started;
  await sleep(seconds * 1000);
  const elapsedNs = nowNs() - first;
  const counted = bytes;
  if (failure !== undefined) throw failure;
  socket.removeAllListeners('close');
  socket.destroy();
  return { bytes: counted, elapsedNs };
}
