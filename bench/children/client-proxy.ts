/**
 * The client proxy in its own process, as on a user's machine: `startClientProxy` with the service
 * (from the specs), the access tier's address and the trust material from the JSON file named by
 * argv[2] (written by targets/causeway.ts). Announces its port to the benchmark.
 */
// The same V8 settings as src/main.ts applies in production.
import '../../src/v8-flags.ts';
import { readFileSync } from 'node:fs';
import { startClientProxy } from '../../src/client/proxy.ts';
import { createLogger } from '../../src/lib/log.ts';
import { serveParent } from './parent-channel.ts';
import { snapshotFromSpecs } from './specs.ts';

interface ClientProxyConfig {
  specs: string;
  serviceName: string;
  accessTierAddress: string;
  trust: { certPem: string; keyPem: string; caPem: string };
  logLevel: string;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ClientProxyConfig;
const service = snapshotFromSpecs(config.specs).services.find((s) => s.metadata.name === config.serviceName);
if (service === undefined) throw new Error(`no Service ${config.serviceName} in the benchmark's specs`);
const proxy = await startClientProxy({
  service,
  accessTierAddress: config.accessTierAddress,
  trust: config.trust,
  hosts: ['127.0.0.1'],
  port: 0,
  logger: createLogger({ name: 'client-proxy', level: config.logLevel }),
});

serveParent({ port: proxy.port() }, () => proxy.close(), {
  stats: () => Promise.resolve({ ...proxy.stats() }),
});
