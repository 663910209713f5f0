/**
 * `causeway agent` (the background agent in the foreground), `causeway agent install [--print]`,
 * `causeway connect SERVICE [--port N]`, `causeway disconnect SERVICE`, `causeway status [-o json]` and
 * `causeway app [--no-browser]` (issue 7).
 *
 * This is an entry point: it reads the environment, argv and the managed client config, and wires the
 * agent (agent.ts) to the session, the device files, the catalog (catalog.ts), the kubeconfig writer
 * (kubeconfig.ts) and the app page (app-page.ts). connect/disconnect/status/app talk to the agent over
 * its socket (agent-client.ts); connect and app start it first when it is not running.
 *
 * The service unit `agent install` writes runs `causeway agent` at login: a systemd user unit on Linux
 * (~/.config/systemd/user/causeway-agent.service), a launchd agent on macOS
 * (~/Library/LaunchAgents/dev.causeway.agent.plist). It prints the command that enables it and runs
 * nothing itself. The unit runs the same program this command runs (the `causeway` on PATH when there is
 * one, else this script with this Node), with CAUSEWAY_HOME, KUBECONFIG and CAUSEWAY_CLIENT_CONFIG as
 * they are set now.
 */
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import { UserError, errorCode } from '../lib/errors.ts';
import { closeOnSignals } from '../lib/lifecycle.ts';
import { createLogger } from '../lib/log.ts';
import { SessionStore, causewayHome } from '../lib/session/index.ts';
import { AGENT_LOG, agentRequest, agentStatus, ensureAgent } from './agent-client.ts';
import type { AgentConnectResult, AgentStatus } from './agent-client.ts';
import { startAgent } from './agent.ts';
import type { AgentOptions } from './agent.ts';
import { startAppPage } from './app-page.ts';
import { fetchCatalog } from './catalog.ts';
import { describePortHolder, trustFromFiles } from './command.ts';
import { defaultDeviceIo, deviceContext } from './device-command.ts';
import type { DeviceIo } from './device-command.ts';
import { systemBrowserOpener } from './identity-command.ts';
import { describeIgnored, loadClientSettings } from './settings.ts';
import { isExecutable, kubeconfigPath, resolveCausewayCommand, writeKubeconfigEntries } from './kubeconfig.ts';

/** What the commands touch outside themselves; tests replace parts. */
export interface AgentCommandIo {
  env: NodeJS.ProcessEnv;
  homedir: () => string;
  platform: NodeJS.Platform;
  out: (line: string) => void;
  err: (line: string) => void;
  /** How to run this program again (`causeway agent`, the exec plugin, the service unit). */
  self: { execPath: string; script: string | undefined; execArgv: string[] };
  openBrowser: ((url: string) => Promise<void>) | undefined;
  /** Called once the foreground agent runs; the default closes it on SIGTERM/SIGINT and exits. */
  onAgentStarted: (agent: { close(): Promise<void> }, logger: ReturnType<typeof createLogger>) => void;
  /** The client settings the agent obeys (managed config over the user's; settings.ts). */
  settings: (env: NodeJS.ProcessEnv, homedir: () => string) => Promise<AgentSettings>;
  /** Replaces parts of the agent's options (tests). */
  agent?: Partial<AgentOptions>;
  device?: Partial<DeviceIo>;
}

/** What the agent takes from the client settings. */
export interface AgentSettings {
  kubeconfigOverwrite: boolean;
  autorun: string[];
  hideCatalog: boolean;
  warnings: string[];
}

const defaultIo: AgentCommandIo = {
  settings: async (env, homedir) => {
    const loaded = await loadClientSettings({ env, homedir, readFile: (file) => readFile(file, 'utf8') });
    const { kubeconfigOverwrite, autorun, hideCatalog } = loaded.settings;
    return { kubeconfigOverwrite, autorun, hideCatalog, warnings: describeIgnored(loaded) };
  },
  env: process.env,
  homedir: () => os.homedir(),
  platform: process.platform,
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  self: { execPath: process.execPath, script: process.argv[1], execArgv: process.execArgv },
  openBrowser: systemBrowserOpener(process.env, process.platform),
  onAgentStarted: (agent, logger) => closeOnSignals([agent], logger),
};

export function registerAgentCommands(program: Command, io: Partial<AgentCommandIo> = {}): void {
  const deps: AgentCommandIo = { ...defaultIo, ...io };
  const agent = program
    .command('agent')
    .description('Run the background agent in the foreground (connect and app start it on demand)')
    .option('--app-port <n>', 'serve the local app page on this port of 127.0.0.1 (default: a free one)', parsePortFlag)
    .option('--no-app', 'do not serve the local app page')
    .option('--log-level <level>', 'log level of agent.log (debug, info, warn, error)', 'info')
    .action(async (flags: { appPort?: number; app: boolean; logLevel: string }) => {
      await runAgent(deps, flags);
    });
  agent
    .command('install')
    .description('Write a service unit that starts the agent at login (systemd user unit on Linux, launchd agent on macOS)')
    .option('--print', 'print the unit instead of writing it')
    .action(async (flags: { print?: boolean }) => {
      await runInstall(deps, flags.print === true);
    });
  program
    .command('connect')
    .description("Connect a service: start its local proxy in the agent (and, for Kubernetes, write its kubeconfig context)")
    .argument('<service>', 'the service name, as `causeway services` lists it')
    .option('--port <n>', "listen on this port instead of the service's (when the service allows it)", parsePortFlag)
    .action(async (service: string, flags: { port?: number }) => {
      await runConnect(deps, service, flags.port);
    });
  program
    .command('disconnect')
    .description("Disconnect a service: stop its local proxy")
    .argument('<service>', 'the service name')
    .action(async (service: string) => {
      const home = homeOf(deps);
      const result = await agentRequest<{ disconnected: boolean }>(home, 'POST', '/v1/disconnect', { service }).catch((err: unknown) => {
        if (errorCode(err) === 'AGENT_NOT_RUNNING') return { disconnected: false };
        throw err;
      });
      deps.out(result.disconnected ? `Disconnected ${service}.` : `${service} was not connected.`);
    });
  program
    .command('status')
    .description('Show the agent, every connected service (port, since, bytes, open connections), the trust certificate and the device trust level')
    .option('-o, --output <format>', 'json for scripts', parseOutputFlag)
    .action(async (flags: { output?: 'json' }) => {
      await runStatus(deps, flags.output);
    });
  program
    .command('app')
    .description('Open the local app page (starts the agent when needed)')
    .option('--no-browser', 'print the URL instead of opening it')
    .action(async (flags: { browser: boolean }) => {
      await runApp(deps, flags.browser);
    });
}

function homeOf(io: AgentCommandIo): string {
  return causewayHome(io.env, io.homedir());
}

function parsePortFlag(value: string): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) throw new InvalidArgumentError('must be a port number from 1 to 65535 (or 0 for any free port)');
  return Number(value);
}

function parseOutputFlag(value: string): 'json' {
  if (value !== 'json') throw new InvalidArgumentError('must be json');
  return value;
}

/** The program and arguments that run this causeway: the one on PATH, else this script (with this Node). */
export function selfCommand(io: Pick<AgentCommandIo, 'env' | 'self'>, check: (file: string) => boolean = isExecutable): { command: string; args: string[] } {
  const resolved = resolveCausewayCommand({ pathEnv: io.env.PATH, script: io.self.script, execPath: io.self.execPath, isExecutable: check });
  return resolved;
}

function agentCommandLine(io: AgentCommandIo): { file: string; args: string[] } {
  // The agent is this very program: the same Node, its flags and the same script (never a PATH lookup,
  // so `connect` and the agent it starts are always the same version).
  if (io.self.script === undefined) return { file: io.self.execPath, args: ['agent'] };
  return { file: io.self.execPath, args: [...io.self.execArgv, io.self.script, 'agent'] };
}

async function runAgent(io: AgentCommandIo, flags: { appPort?: number; app: boolean; logLevel: string }): Promise<void> {
  const home = homeOf(io);
  await mkdir(home, { recursive: true, mode: 0o700 });
  const logFile = path.join(home, AGENT_LOG);
  const logStream = createWriteStream(logFile, { flags: 'a', mode: 0o600 });
  const logger = createLogger({ name: 'causeway-agent', level: flags.logLevel, destination: logStream });
  const settings = await io.settings(io.env, io.homedir);
  for (const warning of settings.warnings) logger.warn(warning);
  const deviceIo: DeviceIo = { ...defaultDeviceIo, env: io.env, homedir: io.homedir, ...io.device };
  const ctx = deviceContext(deviceIo);
  const store = new SessionStore({ home });
  const causeway = selfCommand(io);
  const kubeconfigFile = kubeconfigPath(io.env, io.homedir());
  const agent = await startAgent({
    home,
    logger,
    clock: deviceIo.clock,
    ctx,
    readSession: () => store.read(),
    trust: trustFromFiles({ certPath: ctx.files.path('trustCert'), keyPath: ctx.files.path('trustKey'), caPath: ctx.files.path('ca') }),
    fetchCatalog,
    writeKubeconfig: async (entries) =>
      writeKubeconfigEntries({ file: kubeconfigFile, overwrite: settings.kubeconfigOverwrite, causewayCommand: causeway.command, causewayArgs: causeway.args }, entries),
    autorun: settings.autorun,
    hideCatalog: settings.hideCatalog,
    describePortHolder,
    networkInterfaces: () => os.networkInterfaces(),
    ...(flags.app ? { startApp: (backend) => startAppPage({ backend, logger, ...(flags.appPort === undefined ? {} : { port: flags.appPort }) }) } : {}),
    onShutdown: () => {
      logStream.end(() => process.exit(0));
    },
    ...io.agent,
  }).catch((err: unknown) => {
    // Lost the race to another agent (two CLIs started one each): that one serves, this one is not needed.
    if (errorCode(err) === 'AGENT_ALREADY_RUNNING') {
      io.err((err as Error).message);
      process.exitCode = 0;
      return undefined;
    }
    throw err;
  });
  if (agent === undefined) {
    logStream.end();
    return;
  }
  io.err(`Causeway agent running (pid ${process.pid}); socket ${agent.socketPath}, log ${logFile}${agent.appUrl() === undefined ? '' : '; open the app page with: causeway app'}`);
  // Closing also flushes agent.log, so its last lines ("agent stopped") are not lost at exit.
  const closeAll = async (): Promise<void> => {
    await agent.close();
    await new Promise<void>((resolve) => logStream.end(() => resolve()));
  };
  io.onAgentStarted({ close: closeAll }, logger);
}

async function runConnect(io: AgentCommandIo, service: string, port: number | undefined): Promise<void> {
  const home = homeOf(io);
  await ensureAgent({ home, command: agentCommandLine(io), env: io.env });
  const result = await agentRequest<AgentConnectResult & { warning?: string }>(home, 'POST', '/v1/connect', port === undefined ? { service } : { service, port });
  const c = result.connection;
  const here = `127.0.0.1:${c.port}`;
  const verb = result.alreadyConnected === true ? 'Already connected' : 'Connected';
  if (c.kubeContext !== undefined) io.out(`${verb} ${c.service} on ${here}; kubectl --context ${c.kubeContext} get pods${c.kubeconfig === undefined ? '' : ` (context written to ${c.kubeconfig})`}`);
  else if (c.type === 'kubernetes') io.out(`${verb} ${c.service} on ${here}; kubectl: https_proxy=http://${here} kubectl get pods`);
  else io.out(`${verb} ${c.service} on ${here}; point your client at ${here} (or use http://${here} as its HTTPS proxy)`);
  if (result.warning !== undefined) io.err(`Warning: ${result.warning}`);
}

function ago(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/** A plain-text table, columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ').trimEnd());
}

/** The human view of `causeway status`. */
export function formatStatus(status: AgentStatus | null, now: number): string[] {
  if (status === null) return ['The Causeway agent is not running: nothing is connected. `causeway connect SERVICE` starts it.'];
  const lines: string[] = [];
  lines.push(`Agent: running (pid ${status.pid}) since ${status.startedAt}`);
  lines.push(status.user === null || status.server === null ? 'Not logged in: run causeway login' : `Logged in to ${status.server} as ${status.user.name}`);
  if (status.device !== null) {
    lines.push(`Device: ${status.device.id}, trust level ${status.device.trustLevel ?? 'not scored yet'}`);
    if (status.device.explanation !== undefined) lines.push(`  ${status.device.explanation}`);
  }
  if (status.trustCert === null) lines.push('Trust certificate: none (causeway device report, or causeway login)');
  else {
    const left = Date.parse(status.trustCert.notAfter) - now;
    lines.push(`Trust certificate: valid until ${status.trustCert.notAfter}${left > 0 ? ` (in ${ago(new Date(now - left).toISOString(), now)})` : ' (EXPIRED)'}`);
  }
  if (status.lastError !== undefined) lines.push(`Last problem (${status.lastError.at}): ${status.lastError.message}`);
  lines.push('');
  if (status.connections.length === 0) lines.push('No services connected.');
  else {
    lines.push(
      ...table(
        ['SERVICE', 'TYPE', 'PORT', 'SINCE', 'UP', 'DOWN', 'OPEN', 'CONTEXT'],
        status.connections.map((c) => [c.service, c.type, String(c.port), ago(c.since, now), bytes(c.bytesUp), bytes(c.bytesDown), String(c.openConnections), c.kubeContext ?? (c.autorun ? '(autorun)' : '-')]),
      ),
    );
  }
  return lines;
}

async function runStatus(io: AgentCommandIo, output: 'json' | undefined): Promise<void> {
  const status = await agentStatus(homeOf(io));
  if (output === 'json') {
    io.out(JSON.stringify(status === null ? { running: false } : { running: true, ...status }, null, 2));
    return;
  }
  for (const line of formatStatus(status, Date.now())) io.out(line);
}

async function runApp(io: AgentCommandIo, browser: boolean): Promise<void> {
  const home = homeOf(io);
  await ensureAgent({ home, command: agentCommandLine(io), env: io.env });
  const { url } = await agentRequest<{ url: string }>(home, 'GET', '/v1/app');
  if (!browser || io.openBrowser === undefined) {
    if (browser) io.err('No browser can be opened here; open this URL yourself (it carries the page\'s secret: do not share it):');
    io.out(url);
    return;
  }
  // Not the URL itself: a browser's command line is readable by every local user (/proc/PID/cmdline), and
  // the URL carries the page's secret. The browser opens a file only this user can read, which redirects.
  const file = path.join(home, APP_OPEN_FILE);
  await writeFile(file, appRedirectHtml(url), { mode: 0o600 });
  await chmod(file, 0o600);
  await io.openBrowser(pathToFileURL(file).href);
  io.err('Opened the Causeway app page in your browser.');
}

export const APP_OPEN_FILE = 'app-open.html';

/** A page that sends the browser on to the app URL (the secret stays in the fragment), for `causeway app`. */
export function appRedirectHtml(url: string): string {
  if (!/^http:\/\/127\.0\.0\.1:\d{1,5}\/#[A-Za-z0-9_-]+$/.test(url)) throw new UserError('APP_URL_INVALID', `the agent answered an unexpected app URL; restart it (causeway agent)`);
  return `<!doctype html>\n<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><meta http-equiv="refresh" content="0;url=${url}"><title>Causeway</title></head><body><p>Opening the Causeway app page…</p></body></html>\n`;
}

// --- service units --------------------------------------------------------------------------------

export interface UnitInput {
  /** The program and its arguments up to (not including) `agent`. */
  command: string[];
  /** Environment the agent needs (CAUSEWAY_HOME, KUBECONFIG, CAUSEWAY_CLIENT_CONFIG, PATH). */
  env: Record<string, string>;
  /** launchd: where stdout/stderr go (the agent also logs to agent.log itself). */
  logFile: string;
}

/** systemd quoting for ExecStart/Environment: double-quoted with \\ and " escaped; % doubled (specifiers). */
function systemdQuote(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\n/g, '\\n')}"`;
}

/** The systemd user unit that runs the agent at login. */
export function systemdUnit(input: UnitInput): string {
  const exec = [...input.command, 'agent'].map(systemdQuote).join(' ');
  const env = Object.entries(input.env)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `Environment=${systemdQuote(`${k}=${v}`)}`);
  return [
    '[Unit]',
    'Description=Causeway agent (local proxies, trust certificate renewal, posture reports)',
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${exec}`,
    ...env,
    'Restart=on-failure',
    'RestartSec=5',
    'KillSignal=SIGTERM',
    'TimeoutStopSec=15',
    '',
    '[Install]',
    'WantedBy=default.target',
    '',
  ].join('\n');
}

function xml(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

export const LAUNCHD_LABEL = 'dev.causeway.agent';

/** The launchd agent (macOS) that runs the agent at login. */
export function launchdPlist(input: UnitInput): string {
  const args = [...input.command, 'agent'].map((a) => `      <string>${xml(a)}</string>`);
  const env = Object.entries(input.env)
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([k, v]) => [`      <key>${xml(k)}</key>`, `      <string>${xml(v)}</string>`]);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    '  <dict>',
    '    <key>Label</key>',
    `    <string>${LAUNCHD_LABEL}</string>`,
    '    <key>ProgramArguments</key>',
    '    <array>',
    ...args,
    '    </array>',
    '    <key>EnvironmentVariables</key>',
    '    <dict>',
    ...env,
    '    </dict>',
    '    <key>RunAtLoad</key>',
    '    <true/>',
    '    <key>KeepAlive</key>',
    '    <dict>',
    '      <key>SuccessfulExit</key>',
    '      <false/>',
    '    </dict>',
    '    <key>ProcessType</key>',
    '    <string>Background</string>',
    '    <key>StandardOutPath</key>',
    `    <string>${xml(input.logFile)}</string>`,
    '    <key>StandardErrorPath</key>',
    `    <string>${xml(input.logFile)}</string>`,
    '  </dict>',
    '</plist>',
    '',
  ].join('\n');
}

/** Where the unit goes, its text, and the command that enables it, for this platform. */
export function unitFor(io: Pick<AgentCommandIo, 'env' | 'homedir' | 'platform' | 'self'>, check: (file: string) => boolean = isExecutable): { file: string; text: string; enable: string } {
  const self = selfCommand(io, check);
  const env: Record<string, string> = {};
  for (const key of ['CAUSEWAY_HOME', 'KUBECONFIG', 'CAUSEWAY_CLIENT_CONFIG'] as const) {
    const value = io.env[key];
    if (value !== undefined && value !== '') env[key] = key === 'KUBECONFIG' ? value : path.resolve(value);
  }
  // `causeway` from PATH needs that PATH (and kubectl's exec plugin inherits it).
  if (io.env.PATH !== undefined && io.env.PATH !== '') env.PATH = io.env.PATH;
  // systemd and launchd do not search the unit's PATH: the unit names the absolute file.
  const program = self.command === 'causeway' ? onPath('causeway', io.env.PATH, check) ?? self.command : self.command;
  const input: UnitInput = { command: [program, ...self.args], env, logFile: path.join(causewayHome(io.env, io.homedir()), AGENT_LOG) };
  if (io.platform === 'darwin') {
    const file = path.join(io.homedir(), 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
    return { file, text: launchdPlist(input), enable: `launchctl load -w ${file}` };
  }
  if (io.platform === 'linux') {
    const file = path.join(io.homedir(), '.config', 'systemd', 'user', 'causeway-agent.service');
    return { file, text: systemdUnit(input), enable: 'systemctl --user daemon-reload && systemctl --user enable --now causeway-agent.service' };
  }
  throw new UserError('UNSUPPORTED_PLATFORM', `causeway agent install knows systemd (Linux) and launchd (macOS), not ${io.platform}. Run causeway agent from your session's startup instead.`);
}

function onPath(name: string, pathEnv: string | undefined, check: (file: string) => boolean): string | undefined {
  for (const dir of (pathEnv ?? '').split(path.delimiter)) {
    if (dir !== '' && path.isAbsolute(dir) && check(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

async function runInstall(io: AgentCommandIo, print: boolean): Promise<void> {
  const unit = unitFor(io);
  if (print) {
    io.out(unit.text.trimEnd());
    return;
  }
  await mkdir(path.dirname(unit.file), { recursive: true, mode: 0o700 });
  await writeFile(unit.file, unit.text, { mode: 0o644 });
  io.err(`Wrote ${unit.file}. To start the agent now and at every login, run:`);
  io.out(unit.enable);
}
