/**
 * `causeway connector`: runs a connector in the foreground (DESIGN.md §5).
 *
 *   causeway connector --name dc1 --config specs.yaml --cert dc1.crt --key dc1.key --ca ca.crt [--log-level info]
 *
 * This is an entry point: it reads files. The spec file is watched and reloaded on change: the
 * connector follows its own Connector spec (cluster, allow-list) and dials every AccessTier of that
 * cluster. Logs are JSON on stdout. SIGTERM or SIGINT drains streams (up to 10 s) and exits.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import type { DestinationStream } from 'pino';
import { FileConfigSource } from '../lib/config/index.ts';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { closeOnSignals } from '../lib/lifecycle.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { createLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import { startConnector } from './connector.ts';
import type { Connector } from './connector.ts';

/** What the command touches outside itself; tests replace it. */
export interface ConnectorCommandIo {
  logDestination: DestinationStream;
  /** Called once the connector runs; the default closes everything on SIGTERM/SIGINT. */
  onStarted: (parts: Closable[], connector: Connector, logger: Logger) => void;
}

const defaultIo: ConnectorCommandIo = {
  logDestination: process.stdout,
  onStarted: (parts, _connector, logger) => closeOnSignals(parts, logger),
};

export interface ConnectorFlags {
  name: string;
  config: string;
  cert: string;
  key: string;
  ca: string;
  logLevel: string;
}

export function registerConnectorCommand(program: Command, io: Partial<ConnectorCommandIo> = {}): Command {
  const deps: ConnectorCommandIo = { ...defaultIo, ...io };
  return program
    .command('connector')
    .description('Run a connector: dials out to the access tiers of its cluster and reaches backends they ask for, within its allow-list')
    .requiredOption('--name <name>', 'this connector\'s name (its Connector spec and certificate carry it)')
    .requiredOption('--config <file>', 'spec YAML with the Connector and AccessTier documents; reloaded when it changes')
    .requiredOption('--cert <file>', 'this connector\'s certificate (PEM)')
    .requiredOption('--key <file>', 'its private key (PEM)')
    .requiredOption('--ca <file>', 'the Causeway CA certificate (PEM)')
    .option('--log-level <level>', 'log level for the JSON logs on stdout (debug, info, warn, error)', 'info')
    .action(async (flags: ConnectorFlags) => {
      await runConnector(flags, deps);
    });
}

export async function runConnector(flags: ConnectorFlags, io: ConnectorCommandIo): Promise<Connector> {
  const [certPem, keyPem, caPem] = await Promise.all([readPem(flags.cert, '--cert'), readPem(flags.key, '--key'), readPem(flags.ca, '--ca')]);
  const logger = createLogger({ name: 'causeway-connector', level: flags.logLevel, destination: io.logDestination });
  const config = new FileConfigSource({ path: flags.config, logger: logger.child({ part: 'config' }) });
  const started: Closable[] = [config];
  try {
    await config.ready();
    const connector = await startConnector({ name: flags.name, config, tls: { certPem, keyPem, caPem }, logger });
    started.push(connector);
    const status = connector.status();
    if (status.problem !== undefined) logger.warn({ problem: status.problem }, 'the connector has nothing to do yet');
    logger.info({ config: path.resolve(flags.config), accessTiers: status.tunnels.map((t) => `${t.accessTier} ${t.address}`) }, 'connector started');
    io.onStarted(started, connector, logger);
    return connector;
  } catch (err) {
    for (const part of started.reverse()) await part.close().catch(() => undefined);
    throw err;
  }
}

async function readPem(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new UserError('connector-file-unreadable', `cannot read ${flag} ${file} (${errorCode(err) ?? errorMessage(err)}); check the path and its permissions`, { cause: err });
  }
}
