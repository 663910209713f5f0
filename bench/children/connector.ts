/**
 * The connector in its own process, as inside a private network: `startConnector` dials the access
 * tier named in the JSON file given as argv[2] (written by targets/causeway.ts) and serves the
 * tunnel; it reaches the benchmark's backend on loopback.
 */
// The same V8 settings as src/main.ts applies in production.
import '../../src/v8-flags.ts';
import { readFileSync } from 'node:fs';
import { startConnector } from '../../src/connector/index.ts';
import { StaticConfigSource } from '../../src/lib/config/index.ts';
import { createLogger } from '../../src/lib/log.ts';
import { serveParent } from './parent-channel.ts';
import { snapshotFromSpecs } from './specs.ts';

interface ConnectorConfig {
  name: string;
  accessTier: { name: string; address: string };
  tls: { certPem: string; keyPem: string; caPem: string };
  specs: string;
  logLevel: string;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ConnectorConfig;
const source = new StaticConfigSource(snapshotFromSpecs(config.specs));
const connector = await startConnector({
  name: config.name,
  accessTiers: [config.accessTier],
  tls: config.tls,
  config: source,
  logger: createLogger({ name: 'connector', level: config.logLevel }),
});

serveParent({}, async () => {
  await connector.close();
  await source.close();
});
