/**
 * macOS posture collectors: the standard commands, parsed from their recorded outputs in tests
 * (fixtures/macos-*.txt). Each parser says undefined for output it does not recognise.
 */
import type { FactorValues } from '../../lib/trust/factor-values.ts';
import { matchProcesses } from './linux.ts';
import type { CollectContext, CommandResult } from './types.ts';

const VERSION = /^\d{1,9}(\.\d{1,9}){0,5}$/;

function both(result: CommandResult): string {
  return `${result.stdout}\n${result.stderr}`;
}

/** `sw_vers` (ProductVersion: 14.4.1) or `sw_vers -productVersion` (14.4.1). */
export function parseSwVers(stdout: string): string | undefined {
  const m = /^ProductVersion:\s*(\S+)\s*$/m.exec(stdout);
  const version = m !== null ? m[1] : stdout.trim();
  return version !== undefined && VERSION.test(version) ? version : undefined;
}

/** `fdesetup status`: on only when FileVault is on and no encryption or decryption is under way. */
export function parseFdesetupStatus(stdout: string): boolean | undefined {
  if (/(Encryption|Decryption) in progress/i.test(stdout)) return false;
  if (/FileVault is On\./.test(stdout)) return true;
  if (/FileVault is Off\./.test(stdout)) return false;
  return undefined;
}

/** `socketfilterfw --getglobalstate`: State 1 (on) or 2 (block all) is on, 0 off. */
export function parseSocketFilterGlobalState(stdout: string): boolean | undefined {
  const state = /State = (\d)/.exec(stdout)?.[1];
  if (state !== undefined) return state !== '0';
  if (/Firewall is enabled/i.test(stdout)) return true;
  if (/Firewall is disabled/i.test(stdout)) return false;
  return undefined;
}

/** `softwareupdate --list` (stdout and stderr together): the number of updates listed. */
export function parseSoftwareUpdateList(output: string): number | undefined {
  if (/No new software available/i.test(output)) return 0;
  if (!/Software Update found the following/i.test(output)) return undefined;
  return output.split('\n').filter((line) => /^\s*\* (Label: )?\S/.test(line)).length;
}

/** `defaults read … AutomaticallyInstallMacOSUpdates`: 1 / 0; undefined when the key is not set. */
export function parseDefaultsBoolean(result: CommandResult): boolean | undefined {
  if (result.code !== 0) return undefined;
  const v = result.stdout.trim();
  return v === '1' || v === 'true' ? true : v === '0' || v === 'false' ? false : undefined;
}

/** `sysadminctl -screenLock status` (it writes to stderr): `screenLock delay is …` on, `screenLock is off` off. */
export function parseSysadminctlScreenLock(output: string): boolean | undefined {
  if (/screenLock is off/i.test(output)) return false;
  if (/screenLock delay is (immediate|\d+ seconds?)/i.test(output)) return true;
  return undefined;
}

/** `ps -axo comm=`: one path or name per line. */
export function parsePsComm(stdout: string): Set<string> {
  const names = new Set<string>();
  for (const line of stdout.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed === 'COMM' || trimmed === 'COMMAND') continue;
    names.add(trimmed.split('/').pop() ?? trimmed);
  }
  return names;
}

export async function macosOsVersion(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ctx.run('sw_vers', [], { timeoutMs: ctx.timeoutMs });
  const version = r.code === 0 ? parseSwVers(r.stdout) : undefined;
  return version === undefined ? {} : { osVersion: version };
}

export async function macosDiskEncryption(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ctx.run('fdesetup', ['status'], { timeoutMs: ctx.timeoutMs });
  const on = r.code === 0 ? parseFdesetupStatus(r.stdout) : undefined;
  return on === undefined ? {} : { diskEncryption: on };
}

export async function macosFirewall(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ctx.run('/usr/libexec/ApplicationFirewall/socketfilterfw', ['--getglobalstate'], { timeoutMs: ctx.timeoutMs });
  const on = r.code === 0 ? parseSocketFilterGlobalState(r.stdout) : undefined;
  return on === undefined ? {} : { firewall: on };
}

export async function macosUpdates(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const out: Partial<FactorValues> = {};
  // softwareupdate asks Apple's servers; it gets a longer budget than the local checks.
  const list = await ctx.run('softwareupdate', ['--list'], { timeoutMs: ctx.timeoutMs * 4 });
  const pending = list.code === 0 ? parseSoftwareUpdateList(both(list)) : undefined;
  if (pending !== undefined) out.updatesPending = pending;
  const auto = await ctx.run('defaults', ['read', '/Library/Preferences/com.apple.SoftwareUpdate', 'AutomaticallyInstallMacOSUpdates'], { timeoutMs: ctx.timeoutMs });
  const automatic = parseDefaultsBoolean(auto);
  if (automatic !== undefined) out.updatesAutomatic = automatic;
  return out;
}

export async function macosScreenLock(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ctx.run('sysadminctl', ['-screenLock', 'status'], { timeoutMs: ctx.timeoutMs });
  const on = r.code === 0 ? parseSysadminctlScreenLock(both(r)) : undefined;
  return on === undefined ? {} : { screenLock: on };
}

export async function macosProcesses(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const wanted = ctx.requirements.processes ?? [];
  if (wanted.length === 0) return {};
  const r = await ctx.run('ps', ['-axo', 'comm='], { timeoutMs: ctx.timeoutMs });
  if (r.code !== 0) return {};
  const names = parsePsComm(r.stdout);
  return names.size === 0 ? {} : { processes: matchProcesses(wanted, names) };
}
