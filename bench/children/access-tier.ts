/**
 * The access tier in its own process, as on an edge machine: `startAccessTier` with the specs,
 * certificate and listen port from the JSON file named by argv[2] (written by targets/causeway.ts),
 * a static config source and the real JSON-lines access-event sink (every decision is written, as
 * in production). Announces its port to the benchmark.
 */
// The same V8 settings as src/main.ts applies in production.
import '../../src/v8-flags.ts';
import { readFileSync } from 'node:fs';
import { startAccessTier } from '../../src/access-tier/index.ts';
import { JsonLinesFileSink } from '../../src/lib/audit/index.ts';
import { StaticConfigSource } from '../../src/lib/config/index.ts';
import { createLogger } from '../../src/lib/log.ts';
import { serveParent } from './parent-channel.ts';
import { snapshotFromSpecs } from './specs.ts';

interface AccessTierConfig {
  name: string;
  port: number;
  tls: { certPem: string; keyPem: string; caPem: string };
  specs: string;
  eventsPath: string;
  logLevel: string;
  maxConnectionsPerSource: number;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as AccessTierConfig;
const logger = createLogger({ name: 'access-tier', level: config.logLevel });
const source = new StaticConfigSource(snapshotFromSpecs(config.specs));
const events = await JsonLinesFileSink.open({ path: config.eventsPath, logger });
const accessTier = await startAccessTier({
  name: config.name,
  listen: { host: '127.0.0.1', port: config.port },
  tls: config.tls,
  config: source,
  events,
  logger,
  // Every simulated user comes from 127.0.0.1 here; in production 10,000 streams come from many
  // addresses. The per-source cap (AT-11) would otherwise stop the idle-streams suite at 1,024.
  limits: { maxConnectionsPerSource: config.maxConnectionsPerSource },
});

serveParent({ port: accessTier.port() }, async () => {
  await accessTier.close();
  await events.close();
  await source.close();
});
