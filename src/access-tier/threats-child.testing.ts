/**
 * An access tier in its own process, for the attack tests in threats.test.ts (THREATS AT-12, CN-05):
 * what an attacker makes it spend (memory, CPU) is measured in the victim alone, and "the process
 * survives" means something. Reads one JSON argument (its certificate and the spec objects, already
 * parsed), starts the access tier on 127.0.0.1 port 0, sends `{ port }`, and answers each IPC message
 * `stats` with its memory, CPU time, stats() and the access events written so far.
 *
 *     node threats-child.testing.ts '{"tls":{…},"objects":[…],"limits":{…}}'
 */
import { MemoryEventSink } from '../lib/audit/index.ts';
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import type { SpecObject } from '../lib/spec/index.ts';
import { startAccessTier } from './access-tier.ts';
import type { AccessTierLimits } from './context.ts';

interface ChildInput {
  tls: { certPem: string; keyPem: string; caPem: string };
  objects: SpecObject[];
  limits?: Partial<AccessTierLimits>;
}

const input = JSON.parse(process.argv[2] ?? '{}') as ChildInput;
const config = new StaticConfigSource(snapshotFromObjects(input.objects));
const events = new MemoryEventSink();
const at = await startAccessTier({ name: 'edge-1', config, tls: input.tls, events, listen: { host: '127.0.0.1', port: 0 }, ...(input.limits !== undefined ? { limits: input.limits } : {}) });

process.on('message', (message: unknown) => {
  if (message === 'stats') {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const m = process.memoryUsage();
    const cpu = process.cpuUsage();
    process.send?.({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, cpuMs: (cpu.user + cpu.system) / 1000, stats: at.stats(), events: events.events });
  }
});
process.on('disconnect', () => {
  at.destroy();
  void config.close();
  process.exit(0);
});
process.send?.({ port: at.port() });
