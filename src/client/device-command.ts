/**
 * `causeway device report | show` and the device steps of `causeway login` (issue 5).
 *
 * This is an entry point: it reads the environment, the client settings (settings.ts: the managed
 * client config `/etc/causeway/client.yaml` or $CAUSEWAY_CLIENT_CONFIG, key `deviceOwnership`), the machine's
 * serial number (/sys/class/dmi/id/product_serial, when readable) and host name, runs the posture
 * collectors, and wires device.ts to the session in `$CAUSEWAY_HOME`.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { Command } from 'commander';
import { deviceGroup } from '../lib/cli/device-group.ts';
import { UserError, errorMessage } from '../lib/errors.ts';
import { systemClock } from '../lib/clock.ts';
import type { Clock } from '../lib/clock.ts';
import { SessionStore, causewayHome, createTrustingFetch, freshSession } from '../lib/session/index.ts';
import type { FetchLike } from '../lib/session/index.ts';
import { DEVICE_OWNERSHIP } from '../lib/spec/index.ts';
import { COLLECTORS, collectPosture, collectorPlatform, createCommandRunner, createPostureFiles } from './posture/index.ts';
import type { CollectedPosture, PostureRequirements } from './posture/index.ts';
import { DeviceFiles } from './device-files.ts';
import { DEFAULT_MANAGED_CONFIG, loadClientSettings } from './settings.ts';
import { currentDevice, describeRefusal, describeTrust, ensureDevice, fetchTrustCert, reportPosture, trustCertDue } from './device.ts';
import type { DeviceContext, DeviceFacts, MtlsPost, TrustCertOutcome } from './device.ts';

/** The managed client config's default path (settings.ts). */
export const DEFAULT_CLIENT_CONFIG = DEFAULT_MANAGED_CONFIG;
const SERIAL_FILE = '/sys/class/dmi/id/product_serial';

/** What the device commands touch outside themselves; tests replace parts. */
export interface DeviceIo {
  env: NodeJS.ProcessEnv;
  homedir: () => string;
  out: (line: string) => void;
  err: (line: string) => void;
  readFile: (path: string) => Promise<string>;
  clock: Clock;
  /** Replaces the trusting fetch (tests). */
  fetchFor?: (caPem: string | undefined) => FetchLike;
  /** Replaces the posture collectors (tests choose the factors a report carries). */
  collect?: (requirements: PostureRequirements) => Promise<CollectedPosture>;
  /** Replaces the mTLS POST of trust-certificate requests (tests). */
  mtlsPost?: MtlsPost;
  /** node:os and process facts, replaceable for tests. */
  platform: NodeJS.Platform;
  hostname: () => string;
  osRelease: () => string;
}

export const defaultDeviceIo: DeviceIo = {
  env: process.env,
  homedir: () => os.homedir(),
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  readFile: (path) => readFile(path, 'utf8'),
  clock: systemClock,
  platform: process.platform,
  hostname: () => os.hostname(),
  osRelease: () => os.release(),
};

export function registerDeviceCommands(program: Command, io: Partial<DeviceIo> = {}): void {
  const deps: DeviceIo = { ...defaultDeviceIo, ...io };
  const group = deviceGroup(program);
  group.device
    .command('report')
    .description("Check this machine's posture, report it (signed with the device key) and show the trust level; renews the trust certificate when due")
    .option('-v, --verbose', 'also say which values could not be established, and why')
    .action(async (flags: { verbose?: boolean }) => {
      await runReport(deps, flags.verbose === true);
    });
  group.onShowSelf(async () => {
    await runShow(deps);
  });
  if (!group.showShared) {
    // `device show` belongs to a module that does not share it (it needs a NAME): this machine's view stays reachable.
    group.device
      .command('status')
      .description("This machine's device, its trust level and what to fix")
      .action(async () => {
        await runShow(deps);
      });
  }
}

function homeOf(io: DeviceIo): string {
  return causewayHome(io.env, io.homedir());
}

/** The DeviceContext for this machine and the session in $CAUSEWAY_HOME. */
export function deviceContext(io: DeviceIo, options: { ownership?: string; store?: SessionStore } = {}): DeviceContext {
  const home = homeOf(io);
  const store = options.store ?? new SessionStore({ home });
  const fetchFor = io.fetchFor ?? ((caPem: string | undefined) => createTrustingFetch(caPem === undefined ? {} : { caPem }));
  return {
    files: new DeviceFiles({ home }),
    session: () => freshSession(store, { clock: io.clock, ...(io.fetchFor === undefined ? {} : { fetchFor: io.fetchFor }) }),
    fetchFor,
    ...(io.mtlsPost === undefined ? {} : { mtlsPost: io.mtlsPost }),
    clock: io.clock,
    facts: () => deviceFacts(io, options.ownership),
    collect: io.collect ?? ((requirements) => collectHere(io, requirements)),
  };
}

async function collectHere(io: DeviceIo, requirements: PostureRequirements): Promise<CollectedPosture> {
  const platform = collectorPlatform(io.platform);
  if (platform === undefined) return { factors: {}, problems: [`${io.platform}: no posture collectors for this platform`] };
  return collectPosture({ platform, run: createCommandRunner({ env: io.env }), files: createPostureFiles(), env: io.env, requirements });
}

const SAFE_VALUE = /^[A-Za-z0-9._+~-]+$/;
const SAFE_SERIAL = /^[A-Za-z0-9._:/+-]+$/;
const SAFE_HOST = /^[A-Za-z0-9._-]+$/;
const JUNK_SERIALS = new Set(['0', 'none', 'default', 'defaultstring', 'tobefilledbyo.e.m.', 'systemserialnumber', '0123456789', 'notspecified', 'notapplicable']);

function platformOf(nodePlatform: NodeJS.Platform): string {
  if (nodePlatform === 'darwin') return 'macos';
  if (nodePlatform === 'win32') return 'windows';
  if (nodePlatform === 'android') return 'android';
  return 'linux';
}

/** The machine's facts for registration: platform, OS version, serial, host name, ownership. */
export async function deviceFacts(io: DeviceIo, ownershipFlag: string | undefined): Promise<DeviceFacts> {
  const platform = platformOf(io.platform);
  let osVersion: string | undefined;
  const collectors = collectorPlatform(io.platform);
  if (collectors !== undefined) {
    try {
      const found = await COLLECTORS[collectors].osVersion({ run: createCommandRunner({ env: io.env }), files: createPostureFiles(), env: io.env, requirements: {}, timeoutMs: 10_000 });
      if (typeof found.osVersion === 'string' && SAFE_VALUE.test(found.osVersion)) osVersion = found.osVersion;
    } catch {
      osVersion = undefined;
    }
  }
  if (osVersion === undefined) osVersion = io.osRelease().replace(/[^A-Za-z0-9._+~-]/g, '-').slice(0, 64) || 'unknown';
  const facts: DeviceFacts = { platform, osVersion };
  if (io.platform === 'linux') {
    const serial = (await io.readFile(SERIAL_FILE).catch(() => '')).trim();
    if (serial !== '' && serial.length <= 128 && SAFE_SERIAL.test(serial) && !JUNK_SERIALS.has(serial.toLowerCase().replace(/\s/g, ''))) facts.serial = serial;
  }
  const host = io.hostname().trim().slice(0, 253);
  if (host !== '' && SAFE_HOST.test(host)) facts.hostname = host;
  const ownership = ownershipFlag ?? (await managedOwnership(io));
  if (ownership !== undefined) facts.ownership = ownership;
  return facts;
}

/** Checks an --ownership value. */
export function parseOwnership(value: string): string {
  if (!(DEVICE_OWNERSHIP as readonly string[]).includes(value)) throw new UserError('BAD_FLAGS', `--ownership must be one of ${DEVICE_OWNERSHIP.join(', ')}`);
  return value;
}

/**
 * `deviceOwnership` from the client settings (settings.ts: the managed client config over the user's
 * settings.yaml). A settings problem (an unsafe or malformed file) is printed and registration goes on
 * without it (the server then records `other`): a login never fails over it.
 */
async function managedOwnership(io: DeviceIo): Promise<string | undefined> {
  try {
    return (await loadClientSettings({ env: io.env, homedir: io.homedir, readFile: io.readFile })).settings.deviceOwnership;
  } catch (err) {
    io.err(`Ignoring the client settings for deviceOwnership: ${errorMessage(err)}`);
    return undefined;
  }
}

function sayTrustCert(io: DeviceIo, outcome: TrustCertOutcome): void {
  if (outcome.ok) io.err(`Trust certificate valid until ${outcome.notAfter}.`);
  else io.err(describeRefusal(outcome));
}

/**
 * The device steps of `causeway login`: register this machine (or reuse its registration), report
 * its posture, get a trust certificate. None of them fails the login: a problem is printed with what
 * to do, and the login stands.
 */
export async function deviceAfterLogin(io: DeviceIo, options: { ownership?: string; store?: SessionStore }): Promise<void> {
  const ctx = deviceContext(io, options);
  let ensured;
  try {
    ensured = await ensureDevice(ctx);
  } catch (err) {
    io.err(`This device could not be registered: ${errorMessage(err)}. Access that needs a trusted device will be refused; run causeway login again later.`);
    return;
  }
  io.err(ensured.registered ? `Registered this device as ${ensured.state.id}.` : `This device is ${ensured.state.id}.`);
  try {
    const reported = await reportPosture(ctx, ensured.state);
    for (const line of describeTrust(reported.trust)) io.err(line);
  } catch (err) {
    io.err(`The posture report failed: ${errorMessage(err)}. Run causeway device report to try again.`);
  }
  try {
    sayTrustCert(io, await fetchTrustCert(ctx, ensured.state));
  } catch (err) {
    io.err(`No trust certificate: ${errorMessage(err)}. Run causeway device report to try again.`);
  }
}

async function runReport(io: DeviceIo, verbose: boolean): Promise<void> {
  const ctx = deviceContext(io);
  const ensured = await ensureDevice(ctx);
  if (ensured.registered) io.err(`Registered this device as ${ensured.state.id}.`);
  const reported = await reportPosture(ctx, ensured.state);
  for (const line of describeTrust(reported.trust)) io.out(line);
  if (verbose) for (const problem of reported.problems) io.err(`unknown: ${problem}`);
  const trust = await ctx.files.readTrust();
  if (reported.trust?.level === 'AlwaysDeny') {
    io.err('The trust certificate is not renewed at AlwaysDeny; fix what is listed above and run causeway device report again.');
    return;
  }
  if (ensured.registered || trustCertDue(trust, io.clock.now())) sayTrustCert(io, await fetchTrustCert(ctx, ensured.state));
}

async function runShow(io: DeviceIo): Promise<void> {
  const ctx = deviceContext(io);
  const found = await currentDevice(ctx);
  if (found === undefined) throw new UserError('NO_DEVICE', 'this machine has no device registered at the current server; run causeway login');
  if (found.device === undefined) throw new UserError('NO_DEVICE', `the server no longer knows device ${found.state.id}; run causeway login to register this machine again`);
  const d = found.device;
  const trust = await ctx.files.readTrust();
  const rows: Array<[string, string]> = [
    ['device', d.id],
    ['server', found.state.server],
    ['host', d.hostname ?? '-'],
    ['platform', `${d.platform}${d.osVersion === null ? '' : ` ${d.osVersion}`}`],
    ['serial', d.serial ?? '-'],
    ['ownership', d.ownership],
    ['banned', d.banned ? 'yes' : 'no'],
    ['reported', d.postureAt ?? 'never'],
    ['trust cert', trust === undefined ? 'none' : `valid until ${new Date(trust.notAfter).toISOString()}`],
  ];
  for (const [key, value] of rows) io.out(`${`${key}:`.padEnd(12)}${value.slice(0, 300).replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?')}`);
  for (const line of describeTrust(d.trust)) io.out(line);
}
