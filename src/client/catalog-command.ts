/**
 * `causeway services [-o json|yaml]`, `causeway kubeconfig sync` and `causeway kubeconfig --print SERVICE`
 * (issue 7, DESIGN §5).
 *
 * This is an entry point: it reads the environment, the client settings (settings.ts) and the session,
 * fetches the catalog for this machine's device (catalog.ts) and asks the agent, when one runs, which
 * services are connected (agent-client.ts; no agent means nothing is connected).
 *
 * `services` lists every service of the catalog: NAME TYPE DOMAIN PORT CONNECTED ACCESS, PORT being the
 * local listen port (the connected one when connected), ACCESS `allowed` or why not in words. When the
 * managed config sets `hideCatalog`, it says the catalog is hidden by the organisation and lists only
 * connected and autorun services (the catalog's autorun, and the settings' autorun list).
 *
 * `kubeconfig sync` writes a context for every Kubernetes service of the catalog, allowed now or not
 * (a denied one works as soon as the device or policy allows it, without another sync; the output says
 * which are denied now), with stable context names (the cluster names), into `$KUBECONFIG`'s first file
 * or ~/.kube/config (kubeconfig.ts: merged, or regenerated in overwrite mode). A service's proxy-url
 * port is the port it is connected on, else its listen port. With hideCatalog, only connected and
 * autorun services are written (the hidden catalog is not written out either).
 * `kubeconfig --print SERVICE` prints that service's entries as a kubeconfig and writes nothing.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { UserError, errorMessage } from '../lib/errors.ts';
import { causewayHome } from '../lib/session/index.ts';
import { agentStatus } from './agent-client.ts';
import type { AgentStatus } from './agent-client.ts';
import { fetchCatalog, findEntry } from './catalog.ts';
import type { CatalogContext, CatalogEntry } from './catalog.ts';
import { defaultDeviceIo, deviceContext } from './device-command.ts';
import type { DeviceIo } from './device-command.ts';
import { isExecutable, kubeconfigPath, renderKubeconfigEntries, resolveCausewayCommand, writeKubeconfigEntries } from './kubeconfig.ts';
import type { KubeconfigEntryInput, KubeconfigTarget, KubeconfigWriteResult } from './kubeconfig.ts';
import { describeIgnored, loadClientSettings } from './settings.ts';
import type { LoadedSettings } from './settings.ts';

/** What the commands touch outside themselves; tests replace parts. */
export interface CatalogCommandIo {
  env: NodeJS.ProcessEnv;
  homedir: () => string;
  out: (line: string) => void;
  err: (line: string) => void;
  readFile: (file: string) => Promise<string>;
  /** The running agent's status, null when none runs (agent-client.ts agentStatus). */
  agentStatus: (home: string) => Promise<AgentStatus | null>;
  /** How this program runs, for the kubeconfig's exec plugin (resolveCausewayCommand). */
  self: { execPath: string; script: string | undefined };
  isExecutable: (file: string) => boolean;
  /** Replaces parts of the device io the session and catalog fetch use (tests: fetchFor, clock). */
  device?: Partial<DeviceIo>;
  /** Replaces the catalog context (tests). */
  catalogContext?: CatalogContext;
}

const defaultIo: CatalogCommandIo = {
  env: process.env,
  homedir: () => os.homedir(),
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  readFile: (file) => readFile(file, 'utf8'),
  agentStatus: (home) => agentStatus(home),
  self: { execPath: process.execPath, script: process.argv[1] },
  isExecutable,
};

/** A catalog entry with what this machine adds: connected now, and on which local port. */
export interface ServiceRow extends CatalogEntry {
  connected: boolean;
  /** The port the local proxy listens on (connected), or would listen on (the service's listenPort). */
  localPort: number;
  /** Whether the settings' autorun list names it (beside the catalog's own autorun). */
  autorunBySettings: boolean;
}

export function registerCatalogCommands(program: Command, io: Partial<CatalogCommandIo> = {}): void {
  const deps: CatalogCommandIo = { ...defaultIo, ...io };
  program
    .command('services')
    .description('The service catalog for you on this device: type, domain, local port, connected or not, and why access would be denied')
    .option('-o, --output <format>', 'json or yaml for scripts', parseOutput)
    .action(async (flags: { output?: 'json' | 'yaml' }) => {
      await runServices(deps, flags.output);
    });
  const kubeconfig = program
    .command('kubeconfig')
    .description('Kubernetes contexts for the catalog: `kubeconfig sync` writes them all, `kubeconfig --print SERVICE` prints one')
    .option('--print <service>', "print the service's kubeconfig entries (cluster, user, context) without writing anything")
    .action(async (flags: { print?: string }) => {
      if (flags.print === undefined) throw new UserError('BAD_FLAGS', 'say what to do: causeway kubeconfig sync, or causeway kubeconfig --print SERVICE');
      await runPrint(deps, flags.print);
    });
  kubeconfig
    .command('sync')
    .description("Write a context for every Kubernetes service of the catalog into $KUBECONFIG (or ~/.kube/config), named after its cluster")
    .action(async () => {
      await runSync(deps);
    });
}

function parseOutput(value: string): 'json' | 'yaml' {
  if (value !== 'json' && value !== 'yaml') throw new InvalidArgumentError('must be json or yaml');
  return value;
}

function homeOf(io: CatalogCommandIo): string {
  return causewayHome(io.env, io.homedir());
}

async function settingsOf(io: CatalogCommandIo): Promise<LoadedSettings> {
  const loaded = await loadClientSettings({ env: io.env, homedir: io.homedir, readFile: io.readFile });
  for (const line of describeIgnored(loaded)) io.err(line);
  return loaded;
}

/** The catalog, the agent's view of it and the settings, joined into rows. */
async function gather(io: CatalogCommandIo): Promise<{ rows: ServiceRow[]; settings: LoadedSettings; hidden: boolean }> {
  const settings = await settingsOf(io);
  const ctx = io.catalogContext ?? deviceContext({ ...defaultDeviceIo, env: io.env, homedir: io.homedir, readFile: io.readFile, ...io.device });
  const [entries, status] = await Promise.all([
    fetchCatalog(ctx),
    io.agentStatus(homeOf(io)).catch((err: unknown) => {
      io.err(`Cannot ask the agent what is connected (${errorMessage(err)}); showing nothing as connected.`);
      return null;
    }),
  ]);
  const connected = new Map((status?.connections ?? []).map((c) => [c.service, c.port]));
  const autorun = new Set(settings.settings.autorun);
  const rows = entries.map((entry) => ({
    ...entry,
    connected: connected.has(entry.name),
    localPort: connected.get(entry.name) ?? entry.client.listenPort,
    autorunBySettings: autorun.has(entry.name),
  }));
  const hidden = settings.settings.hideCatalog;
  return { rows: hidden ? rows.filter((r) => r.connected || r.autorun || r.autorunBySettings) : rows, settings, hidden };
}

async function runServices(io: CatalogCommandIo, output: 'json' | 'yaml' | undefined): Promise<void> {
  const { rows, hidden } = await gather(io);
  if (output !== undefined) {
    const doc = { hidden, services: rows };
    io.out(output === 'json' ? JSON.stringify(doc, null, 2) : stringify(doc, { lineWidth: 0 }).trimEnd());
    return;
  }
  if (hidden) io.out('The service catalog is hidden by your organisation; showing only connected and autorun services.');
  if (rows.length === 0) {
    io.out(hidden ? 'None is connected or set to autorun.' : 'No services in your catalog. Ask your administrator which services you should see.');
    return;
  }
  for (const line of servicesTable(rows)) io.out(line);
}

/** The table `causeway services` prints. */
export function servicesTable(rows: ServiceRow[]): string[] {
  const table = rows.map((r) => [
    r.name,
    r.type,
    r.port === 443 ? r.domain : `${r.domain}:${r.port}`,
    String(r.localPort),
    r.connected ? 'yes' : r.autorun || r.autorunBySettings ? 'no (autorun)' : 'no',
    accessText(r),
  ]);
  return formatTable(['NAME', 'TYPE', 'DOMAIN', 'PORT', 'CONNECTED', 'ACCESS'], table);
}

/** ACCESS in words: allowed, allowed with the permissive warning, or the denial as the access tier would say it. */
export function accessText(entry: Pick<CatalogEntry, 'access'>): string {
  const { access } = entry;
  if (access.allowed && access.reasons.length === 0) return 'allowed';
  const explanation = access.explanation !== '' ? access.explanation : `${access.allowed ? 'allowed, but would deny' : 'denied'}: ${access.reasons.join(', ')}`;
  return explanation;
}

function formatTable(header: string[], body: string[][]): string[] {
  const rows = [header, ...body.map((r) => r.map(cell))];
  const widths = header.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd());
}

/** What reaches the terminal from the server: no control characters (escape sequences), bounded. */
function cell(value: string): string {
  return value.slice(0, 300).replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?');
}

function kubeTarget(io: CatalogCommandIo, settings: LoadedSettings): KubeconfigTarget {
  const command = resolveCausewayCommand({ pathEnv: io.env.PATH, script: io.self.script, execPath: io.self.execPath, isExecutable: io.isExecutable });
  return { file: kubeconfigPath(io.env, io.homedir()), overwrite: settings.settings.kubeconfigOverwrite, causewayCommand: command.command, causewayArgs: command.args };
}

function kubeInputs(rows: ServiceRow[]): KubeconfigEntryInput[] {
  return rows.filter((r) => r.type === 'kubernetes' && r.kubernetes !== null).map((r) => ({ entry: r, listenPort: r.localPort }));
}

async function runSync(io: CatalogCommandIo): Promise<void> {
  const { rows, settings, hidden } = await gather(io);
  const inputs = kubeInputs(rows);
  if (inputs.length === 0) {
    io.out(hidden ? 'No connected or autorun Kubernetes service to write (the catalog is hidden by your organisation).' : 'Your catalog has no Kubernetes services; nothing was written.');
    return;
  }
  const result = await writeKubeconfigEntries(kubeTarget(io, settings), inputs);
  for (const line of syncReport(result, rows)) io.out(line);
}

/** What `kubeconfig sync` says: the file, the contexts, the backup, and what will not work yet. */
export function syncReport(result: KubeconfigWriteResult, rows: ServiceRow[]): string[] {
  const lines = [`${result.overwritten ? 'Regenerated' : 'Updated'} ${result.file} with ${result.contexts.length === 1 ? 'context' : 'contexts'} ${result.contexts.join(', ')}${result.backup === undefined ? '' : ` (previous file: ${result.backup})`}.`];
  for (const skipped of result.skipped) lines.push(`Skipped ${cell(skipped.service)}: ${cell(skipped.because)} (${cell(skipped.clusterName)}).`);
  for (const row of rows) {
    if (row.kubernetes === null || result.skipped.some((s) => s.service === row.name)) continue;
    const context = cell(row.kubernetes.clusterName);
    if (!row.access.allowed) lines.push(`${context}: ${accessText(row)}`);
    else if (!row.connected) lines.push(`${context}: run \`causeway connect ${cell(row.name)}\` before using kubectl --context ${context}.`);
    else lines.push(`${context}: ready — kubectl --context ${context} get pods`);
  }
  return lines;
}

async function runPrint(io: CatalogCommandIo, service: string): Promise<void> {
  const { rows, settings } = await gather(io);
  const row = findEntry(rows, service);
  if (row.type !== 'kubernetes' || row.kubernetes === null) {
    throw new UserError('NOT_KUBERNETES', `Service "${cell(service)}" is a ${row.type} service; only Kubernetes services have kubeconfig entries. Use causeway connect ${cell(service)} and point your client at 127.0.0.1:${row.localPort}.`);
  }
  const target = kubeTarget(io, settings);
  io.out(renderKubeconfigEntries([{ entry: row, listenPort: row.localPort }], target).trimEnd());
}
