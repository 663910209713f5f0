/**
 * A connector in its own process, for the attack tests in threats.test.ts (THREATS AT-12, CN-05):
 * what an attacker makes it spend (memory, CPU) is measured in the victim alone, and "the process
 * survives" means something. Reads one JSON argument, starts the connector, and answers each IPC
 * message `stats` with its memory, CPU time and status.
 *
 *     node threats-child.testing.ts '{"tls":{…},"accessTiers":[{"name":"edge-1","address":"127.0.0.1:1"}],"cidrs":["127.0.0.0/8"]}'
 */
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import { specs } from '../lib/tunnel/harness.testing.ts';
import type { AccessTierEndpoint } from './link.ts';
import { startConnector } from './connector.ts';

interface ChildInput {
  tls: { certPem: string; keyPem: string; caPem: string };
  accessTiers: AccessTierEndpoint[];
  cidrs: string[];
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
}

const input = JSON.parse(process.argv[2] ?? '{}') as ChildInput;
const config = new StaticConfigSource(snapshotFromObjects([...input.accessTiers.map((t) => specs.accessTier(t.name, 'c1', t.address)), specs.connector('dc1', 'c1', { cidrs: input.cidrs })]));
const connector = await startConnector({
  name: 'dc1',
  config,
  tls: input.tls,
  accessTiers: input.accessTiers,
  drainTimeoutMs: 200,
  tunnel: {
    backoff: { firstMs: 20, baseMs: 20, capMs: 200 },
    ...(input.keepaliveIntervalMs !== undefined ? { keepaliveIntervalMs: input.keepaliveIntervalMs } : {}),
    ...(input.keepaliveTimeoutMs !== undefined ? { keepaliveTimeoutMs: input.keepaliveTimeoutMs } : {}),
  },
});

process.on('message', (message: unknown) => {
  if (message === 'stats') {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const m = process.memoryUsage();
    const cpu = process.cpuUsage();
    process.send?.({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, cpuMs: (cpu.user + cpu.system) / 1000, status: connector.status() });
  }
});
process.on('disconnect', () => {
  connector.destroy();
  void config.close();
  process.exit(0);
});
process.send?.({ ready: true });
