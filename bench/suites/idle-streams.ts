/**
 * Idle streams on one connector tunnel: open N connections through the whole chain (client →
 * client proxy → access tier → one HTTP/2 stream each on the connector's tunnel → backend sink),
 * keep them all open and idle, and read each Causeway process's memory before and after (both
 * after a full GC). The delta divided by N is the cost of one idle stream in that process.
 * The goal (≤ 10 KiB) is for the connector, whose cost per stream is the tunnel's; the access tier
 * also holds each user's TLS connection, and the client proxy sits on the user's machine: both are
 * reported for information.
 */
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStream } from '../client/open-stream.ts';
import type { MemorySample } from '../processes.ts';
import { nowNs } from '../stats.ts';
import type { Target } from '../targets/target.ts';
import type { Metric, Suite, SuiteContext } from './suite.ts';

const OPENING_IN_FLIGHT = 200;
const KIB = 1024;

export const idleStreamsSuite: Suite = {
  name: 'idle-streams',
  title: 'Concurrent idle streams on one tunnel',
  needs: ['causeway'],
  async run(context: SuiteContext): Promise<Metric[]> {
    const target = context.targets.find((t) => t.name === 'causeway');
    if (target === undefined) return [];
    const count = context.sizes.idleStreams;
    context.log(`  opening ${count} idle streams through the chain (${OPENING_IN_FLIGHT} opening at a time)`);

    // Warm up code paths and pools so the "before" reading is not a cold process.
    await closeAll(await openMany(target, 200, context));
    await sleep(500);
    const before = await readMemory(target);
    const backendBefore = Number((await context.backend.process.request({ type: 'connections' }))['open']);

    const start = nowNs();
    const sockets = await openMany(target, count, context);
    const openSeconds = (nowNs() - start) / 1e9;
    try {
      await sleep(1000);
      const backendOpen = Number((await context.backend.process.request({ type: 'connections' }))['open']) - backendBefore;
      const alive = sockets.filter((s) => !s.destroyed).length;
      const after = await readMemory(target);
      context.log(`    ${alive} of ${count} streams open after 1 s, ${backendOpen} reached the backend; opened at ${(count / openSeconds).toFixed(0)}/s`);
      if (alive < count) throw new Error(`only ${alive} of ${count} idle streams stayed open`);

      const metrics: Metric[] = [];
      const processesPerRole = new Map<string, number>();
      for (const relay of target.relays) processesPerRole.set(relay.role, (processesPerRole.get(relay.role) ?? 0) + 1);
      for (const [role, processes] of processesPerRole) {
        const b = before.get(role)!;
        const a = after.get(role)!;
        const rssPerStream = (a.rssBytes - b.rssBytes) / count / KIB;
        const heapPerStream = a.heapUsedBytes !== undefined && b.heapUsedBytes !== undefined ? (a.heapUsedBytes - b.heapUsedBytes) / count / KIB : undefined;
        context.log(`    ${role.padEnd(13)} RSS ${(b.rssBytes / 2 ** 20).toFixed(1)} → ${(a.rssBytes / 2 ** 20).toFixed(1)} MiB: ${rssPerStream.toFixed(2)} KiB per stream${heapPerStream !== undefined ? ` (JS heap ${heapPerStream.toFixed(2)} KiB)` : ''}`);
        metrics.push({
          id: `idle-streams.${role}.rss`,
          title: `Memory per idle stream, ${role}${processes > 1 ? `, ${processes} processes` : ''} (RSS delta / ${count.toLocaleString('en-US')})`,
          unit: 'KiB',
          values: { causeway: rssPerStream },
          ...(role === 'connector' ? { goal: { kind: 'at-most', value: 10 } as const } : {}),
          digits: 2,
          details: {
            streams: count,
            processes,
            rssBeforeBytes: b.rssBytes,
            rssAfterBytes: a.rssBytes,
            heapUsedBeforeBytes: b.heapUsedBytes,
            heapUsedAfterBytes: a.heapUsedBytes,
            heapPerStreamKiB: heapPerStream,
          },
        });
      }
      metrics.push({
        id: 'idle-streams.open-rate',
        title: `Opening ${count.toLocaleString('en-US')} idle streams (${OPENING_IN_FLIGHT} at a time)`,
        unit: 'streams/s',
        values: { causeway: count / openSeconds },
        digits: 0,
        details: { backendConnections: backendOpen },
      });
      return metrics;
    } finally {
      const closeStart = nowNs();
      const left = await closeAll(sockets);
      context.log(`    closed them all in ${((nowNs() - closeStart) / 1e9).toFixed(1)} s${left > 0 ? `; ${left} did not close within 30 s` : ''}`);
    }
  },
};

/** Memory by role, summed over the processes that share a role (several client proxies). */
async function readMemory(target: Target): Promise<Map<string, MemorySample>> {
  const out = new Map<string, MemorySample>();
  for (const relay of target.relays) {
    const m = await relay.process.memory({ gc: true });
    const sum = out.get(relay.role);
    out.set(relay.role, sum === undefined ? m : {
      rssBytes: sum.rssBytes + m.rssBytes,
      heapUsedBytes: (sum.heapUsedBytes ?? 0) + (m.heapUsedBytes ?? 0),
      externalBytes: (sum.externalBytes ?? 0) + (m.externalBytes ?? 0),
    });
  }
  return out;
}

async function openMany(target: Target, count: number, context: SuiteContext): Promise<Socket[]> {
  const sockets: Socket[] = [];
  const endpoints = target.entryPoints?.('sink') ?? [target.endpoint('sink')];
  let next = 0;
  let failure: Error | undefined;
  const opener = async (): Promise<void> => {
    while (next < count && failure === undefined) {
      const endpoint = endpoints[next++ % endpoints.length];
      try {
        const { socket } = await openStream(endpoint, 60_000);
        socket.on('error', () => {}); // a stream that dies shows up as destroyed in the count
        sockets.push(socket);
        if (count >= 5000 && sockets.length % 2500 === 0) context.log(`    ${sockets.length} open`);
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPENING_IN_FLIGHT, count) }, opener));
  if (failure !== undefined) {
    await closeAll(sockets);
    throw new Error(`opening idle stream ${sockets.length + 1} of ${count} failed: ${failure.message}`);
  }
  return sockets;
}

/** Half-closes every socket (the sink answers and closes) and waits up to 30 s; returns how many did not close. */
async function closeAll(sockets: Socket[]): Promise<number> {
  const closed = sockets.map((s) => (s.destroyed ? Promise.resolve() : new Promise<void>((resolve) => s.once('close', () => resolve()))));
  for (const s of sockets) {
    s.resume();
    s.end();
  }
  const timer = new AbortController();
  const timeout = sleep(30_000, 'timeout' as const, { signal: timer.signal }).catch(() => 'done' as const);
  const result = await Promise.race([Promise.all(closed).then(() => 'done' as const), timeout]);
  timer.abort();
  if (result === 'done') return 0;
  const left = sockets.filter((s) => !s.destroyed).length;
  for (const s of sockets) s.destroy();
  return left;
}
