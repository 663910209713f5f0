/**
 * Full mTLS handshakes per second: the access tier against nginx with `ssl_verify_client on`.
 * A load generator in its own process keeps a fixed number of handshakes in flight, never resumes
 * a session, and after each handshake sends one small request and waits for the first byte of the
 * answer (in TLS 1.3 that is what proves the server checked and accepted the client certificate).
 * Also reported: the server's CPU time per handshake, which does not depend on how fast the load
 * generator is on a shared 2-core machine.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchProcess } from '../processes.ts';
import { median } from '../stats.ts';
import type { HandshakeServer } from '../targets/handshake-server.ts';
import type { Column, Metric, Suite, SuiteContext } from './suite.ts';
import { interleave } from './suite.ts';

const LOAD_GENERATOR = fileURLToPath(new URL('../children/handshake-load.ts', import.meta.url));

interface Sample {
  perSecond: number;
  serverCpuMicros: number;
  /** The load generator's own CPU per handshake: when it nears 1e6 / rate, the client is the bottleneck. */
  clientCpuMicros: number;
  failures: number;
}

export const handshakeRateSuite: Suite = {
  name: 'handshake-rate',
  title: 'Full mTLS handshake rate',
  needs: ['nginx', 'causeway'],
  async run(context: SuiteContext): Promise<Metric[]> {
    const { handshakeRounds: rounds, handshakeSeconds: seconds, handshakeConcurrency: concurrency } = context.sizes;
    const servers = context.handshakeServers;
    if (servers.length === 0) return [];
    context.log(`  ${rounds} round(s) × ${seconds} s per server, ${concurrency} handshakes in flight`);
    const load = context.group.startNode('handshake-load', LOAD_GENERATOR, [], join(context.dir, 'handshake-load.log'));
    await load.waitForMessage('ready', 15_000);
    try {
      const results = await interleave(servers, rounds, async (server) => {
        const sample = await measure(load, server, seconds, concurrency);
        context.log(`    ${server.column.padEnd(8)} ${sample.perSecond.toFixed(0)} handshakes/s, CPU per handshake: server ${sample.serverCpuMicros.toFixed(0)} µs, load generator ${sample.clientCpuMicros.toFixed(0)} µs${sample.failures > 0 ? `, ${sample.failures} failed` : ''}`);
        await sleep(200);
        return sample;
      });
      const rate: Partial<Record<Column, number>> = {};
      const rateRounds: Partial<Record<Column, number[]>> = {};
      const cpu: Partial<Record<Column, number>> = {};
      const clientCpu: Partial<Record<Column, number>> = {};
      const notes: string[] = [];
      for (const [server, { results: samples, error }] of results) {
        if (error !== undefined) {
          notes.push(`${server.column}: ${error.message}`);
          continue;
        }
        rate[server.column] = median(samples.map((s) => s.perSecond));
        rateRounds[server.column] = samples.map((s) => s.perSecond);
        cpu[server.column] = median(samples.map((s) => s.serverCpuMicros));
        clientCpu[server.column] = median(samples.map((s) => s.clientCpuMicros));
      }
      return [
        {
          id: 'handshake-rate',
          title: 'Full mTLS handshakes per second (median of rounds)',
          unit: 'handshakes/s',
          values: rate,
          rounds: rateRounds,
          baseline: 'nginx',
          goal: { kind: 'ratio-at-least', baseline: 'nginx', value: 1.0 },
          digits: 0,
          ...(notes.length > 0 ? { notes } : {}),
          details: {
            concurrency,
            loadGeneratorCpuMicrosPerHandshake: clientCpu,
            servers: servers.map((s) => ({ column: s.column, description: s.description })),
          },
        },
        {
          id: 'handshake-rate.server-cpu',
          title: 'Server CPU per full mTLS handshake',
          unit: 'µs',
          values: cpu,
          baseline: 'nginx',
          // The same claim as the rate, without the load generator's own limits on a 2-core machine.
          goal: { kind: 'ratio-at-most', baseline: 'nginx', value: 1.0 },
          digits: 0,
        },
      ];
    } finally {
      await load.stop();
    }
  },
};

async function measure(
  load: BenchProcess,
  server: HandshakeServer,
  seconds: number,
  concurrency: number,
): Promise<Sample> {
  const cpuBefore = server.process.cpuSeconds();
  const reply = await load.request({
    type: 'run',
    host: server.host,
    port: server.port,
    servername: server.servername,
    caPem: server.caPem,
    certPem: server.certPem,
    keyPem: server.keyPem,
    request: server.request.toString('latin1'),
    seconds,
    concurrency,
  }, (seconds + 30) * 1000);
  const cpu = server.process.cpuSeconds() - cpuBefore;
  const completed = Number(reply['completed']);
  const failures = Number(reply['failed']);
  if (completed === 0) throw new Error(`no handshake completed with ${server.column} (${typeof reply['lastError'] === 'string' ? reply['lastError'] : 'no error reported'})`);
  if (failures > completed / 100) throw new Error(`${failures} of ${completed + failures} handshakes with ${server.column} failed (last: ${typeof reply['lastError'] === 'string' ? reply['lastError'] : '?'})`);
  return {
    perSecond: completed / Number(reply['seconds']),
    serverCpuMicros: (cpu * 1e6) / completed,
    clientCpuMicros: Number(reply['cpuMicros']) / completed,
    failures,
  };
}
