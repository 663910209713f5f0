/**
 * `causeway access-tier`: runs an access tier in the foreground (DESIGN.md §5).
 *
 *   causeway access-tier --name edge-1 --config specs.yaml --cert edge.crt --key edge.key --ca ca.crt
 *                        [--listen 0.0.0.0:8443] [--events FILE | --data-dir DIR] [--log-level info]
 *
 * This is an entry point: it reads files. The spec file (the `causeway apply -f` format) is watched
 * and reloaded on change; a file with problems never replaces the last good configuration. Access
 * events are appended as JSON lines to --events (default ./access-events.jsonl, or
 * DIR/access-events.jsonl with --data-dir). Logs are JSON on stdout. SIGTERM or SIGINT drains
 * connections (up to 10 s) and exits.
 */
import { readFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import type { DestinationStream } from 'pino';
import { JsonLinesFileSink } from '../lib/audit/index.ts';
import { FileConfigSource } from '../lib/config/index.ts';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { closeOnSignals } from '../lib/lifecycle.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { createLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import { parseAuthority } from '../lib/net/target.ts';
import { DEFAULT_ACCESS_TIER_PORT, startAccessTier } from './access-tier.ts';
import type { AccessTier } from './access-tier.ts';

/** What the command touches outside itself; tests replace it. */
export interface AccessTierCommandIo {
  cwd: () => string;
  /** Where JSON logs go (stdout by default). */
  logDestination: DestinationStream;
  /** Called once the access tier listens; the default closes everything on SIGTERM/SIGINT. */
  onStarted: (parts: Closable[], accessTier: AccessTier, logger: Logger) => void;
}

const defaultIo: AccessTierCommandIo = {
  cwd: () => process.cwd(),
  logDestination: process.stdout,
  onStarted: (parts, _accessTier, logger) => closeOnSignals(parts, logger),
};

export interface AccessTierFlags {
  name: string;
  config: string;
  listen: { host: string; port: number };
  cert: string;
  key: string;
  ca: string;
  events?: string;
  dataDir?: string;
  logLevel: string;
}

export function registerAccessTierCommand(program: Command, io: Partial<AccessTierCommandIo> = {}): Command {
  const deps: AccessTierCommandIo = { ...defaultIo, ...io };
  return program
    .command('access-tier')
    .description('Run an access tier: the TLS listener that client proxies and connectors reach')
    .requiredOption('--name <name>', 'this access tier\'s name (its AccessTier spec and certificate carry it)')
    .requiredOption('--config <file>', 'spec YAML with the AccessTier, Connector and Service documents; reloaded when it changes')
    .option('--listen <host:port>', `address to listen on (default 0.0.0.0:${DEFAULT_ACCESS_TIER_PORT})`, parseListen, { host: '0.0.0.0', port: DEFAULT_ACCESS_TIER_PORT })
    .requiredOption('--cert <file>', 'this access tier\'s certificate (PEM)')
    .requiredOption('--key <file>', 'its private key (PEM)')
    .requiredOption('--ca <file>', 'the Causeway CA certificate (PEM)')
    .option('--events <file>', 'append access events here as JSON lines (default ./access-events.jsonl, or DIR/access-events.jsonl with --data-dir)')
    .option('--data-dir <dir>', 'directory for this access tier\'s files')
    .option('--log-level <level>', 'log level for the JSON logs on stdout (debug, info, warn, error)', 'info')
    .action(async (flags: AccessTierFlags) => {
      await runAccessTier(flags, deps);
    });
}

export async function runAccessTier(flags: AccessTierFlags, io: AccessTierCommandIo): Promise<AccessTier> {
  const [certPem, keyPem, caPem] = await Promise.all([readPem(flags.cert, '--cert'), readPem(flags.key, '--key'), readPem(flags.ca, '--ca')]);
  const logger = createLogger({ name: 'causeway-access-tier', level: flags.logLevel, destination: io.logDestination });
  const eventsPath = eventsPathFor(flags, io.cwd());
  await mkdir(path.dirname(eventsPath), { recursive: true, mode: 0o700 });

  const config = new FileConfigSource({ path: flags.config, logger: logger.child({ part: 'config' }) });
  const started: Closable[] = [config];
  try {
    await config.ready();
    const events = await JsonLinesFileSink.open({ path: eventsPath, logger });
    started.push(events);
    const accessTier = await startAccessTier({ name: flags.name, config, tls: { certPem, keyPem, caPem }, events, listen: flags.listen, logger });
    started.push(accessTier);
    logger.info({ address: accessTier.address(), events: eventsPath, config: path.resolve(flags.config) }, 'access tier started');
    io.onStarted(started, accessTier, logger);
    return accessTier;
  } catch (err) {
    for (const part of started.reverse()) await part.close().catch(() => undefined);
    throw err;
  }
}

export function eventsPathFor(flags: Pick<AccessTierFlags, 'events' | 'dataDir'>, cwd: string): string {
  if (flags.events !== undefined) return path.resolve(cwd, flags.events);
  if (flags.dataDir !== undefined) return path.resolve(cwd, flags.dataDir, 'access-events.jsonl');
  return path.resolve(cwd, 'access-events.jsonl');
}

/** `host:port`, `[v6]:port` or `:port` (all addresses); port 0 picks a free port. */
export function parseListen(value: string): { host: string; port: number } {
  const text = value.startsWith(':') ? `0.0.0.0${value}` : value;
  const anyPort = text.endsWith(':0');
  const parsed = parseAuthority(anyPort ? `${text.slice(0, -1)}1` : text);
  if (!parsed.ok) throw new InvalidArgumentError(`--listen must be host:port, [IPv6]:port or :port (${parsed.message})`);
  return { host: parsed.target.host, port: anyPort ? 0 : parsed.target.port };
}

async function readPem(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new UserError('access-tier-file-unreadable', `cannot read ${flag} ${file} (${errorCode(err) ?? errorMessage(err)}); check the path and its permissions`, { cause: err });
  }
}
