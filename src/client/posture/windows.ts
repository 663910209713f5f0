/**
 * Windows posture collectors: PowerShell queries whose output is JSON (ConvertTo-Json) or plain
 * lines, parsed from recorded outputs in tests (fixtures/windows-*). ConvertTo-Json writes enums
 * as numbers in Windows PowerShell 5.1 and as numbers or names elsewhere, so parsers take both.
 */
import type { FactorValues } from '../../lib/trust/factor-values.ts';
import { matchProcesses } from './linux.ts';
import type { CollectContext } from './types.ts';

const VERSION = /^\d{1,9}(\.\d{1,9}){0,5}$/;

export const POWERSHELL = 'powershell.exe';

export const SCRIPTS = {
  bitLocker: 'Get-BitLockerVolume -MountPoint $env:SystemDrive | Select-Object MountPoint,VolumeStatus,ProtectionStatus,EncryptionPercentage | ConvertTo-Json',
  /** Without administrator rights Get-BitLockerVolume is refused; the shell's volume property is readable by anyone. */
  bitLockerShell: "(New-Object -ComObject Shell.Application).NameSpace($env:SystemDrive + '\\').Self.ExtendedProperty('System.Volume.BitLockerProtection')",
  firewall: 'Get-NetFirewallProfile | Select-Object Name,Enabled | ConvertTo-Json',
  os: 'Get-CimInstance Win32_OperatingSystem | Select-Object Caption,Version,BuildNumber | ConvertTo-Json',
  processes: 'Get-Process | Select-Object -ExpandProperty ProcessName',
  updatesPending: "(New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher().Search('IsInstalled=0 and IsHidden=0 and Type=''Software''').Updates.Count",
  updatesPolicy: "Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU' -ErrorAction SilentlyContinue | Select-Object NoAutoUpdate,AUOptions | ConvertTo-Json",
  screenSaver: "Get-ItemProperty -Path 'HKCU:\\Control Panel\\Desktop' | Select-Object ScreenSaveActive,ScreenSaverIsSecure,ScreenSaveTimeOut | ConvertTo-Json",
} as const;

export function powershellArgs(script: string): string[] {
  return ['-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-Command', script];
}

function json(text: string): unknown {
  try {
    return JSON.parse(text.replace(/^\uFEFF/, '')) as unknown;
  } catch {
    return undefined;
  }
}

function record(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** ConvertTo-Json writes one object bare and several as an array. */
function records(value: unknown): Array<Record<string, unknown>> {
  const list = Array.isArray(value) ? (value as unknown[]) : [value];
  return list.map(record).filter((r): r is Record<string, unknown> => r !== undefined);
}

/** Get-BitLockerVolume: protection On (1) counts; Off (0, including suspended protection) does not. */
export function parseBitLockerVolume(stdout: string): boolean | undefined {
  const volume = records(json(stdout))[0];
  if (volume === undefined) return undefined;
  const status = volume.ProtectionStatus;
  if (status === 1 || status === 'On') return true;
  if (status === 0 || status === 'Off') return false;
  return undefined;
}

/**
 * System.Volume.BitLockerProtection: 1 on, 6 on (locked); 2 off, 3 encrypting, 4 decrypting,
 * 5 suspended, 8 waiting for activation, 0 not encryptable: only a finished, active protection counts.
 */
export function parseBitLockerShellProperty(stdout: string): boolean | undefined {
  const v = stdout.trim();
  if (v === '1' || v === '6') return true;
  if (/^[023458]$/.test(v)) return false;
  return undefined;
}

/** Get-NetFirewallProfile: on only when every profile (Domain, Private, Public) is enabled. */
export function parseFirewallProfiles(stdout: string): boolean | undefined {
  const profiles = records(json(stdout));
  if (profiles.length === 0) return undefined;
  let all = true;
  for (const p of profiles) {
    const e = p.Enabled;
    if (e === 1 || e === true || e === 'True') continue;
    if (e === 0 || e === false || e === 'False' || e === 2 || e === 'NotConfigured') all = false;
    else return undefined;
  }
  return all;
}

/** Win32_OperatingSystem: Version such as 10.0.22631. */
export function parseWin32OperatingSystem(stdout: string): string | undefined {
  const os = records(json(stdout))[0];
  const version = os?.Version;
  return typeof version === 'string' && VERSION.test(version) ? version : undefined;
}

export function parseProcessNames(stdout: string): Set<string> {
  return new Set(
    stdout
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== ''),
  );
}

export function parseUpdateCount(stdout: string): number | undefined {
  const v = stdout.trim();
  return /^\d{1,6}$/.test(v) ? Number(v) : undefined;
}

/**
 * The Windows Update policy key: absent (empty output) means the default, automatic; NoAutoUpdate=1
 * or AUOptions 2 (notify only) means not automatic.
 */
export function parseUpdatePolicy(code: number | null, stdout: string): boolean | undefined {
  if (code !== 0) return undefined;
  if (stdout.trim() === '') return true;
  const policy = records(json(stdout))[0];
  if (policy === undefined) return undefined;
  if (policy.NoAutoUpdate === 1) return false;
  if (policy.AUOptions === 2) return false;
  return true;
}

/** HKCU\Control Panel\Desktop: a secure screen saver with a timeout. Values are strings. */
export function parseScreenSaver(stdout: string): boolean | undefined {
  const desktop = records(json(stdout))[0];
  if (desktop === undefined) return undefined;
  const flag = (value: unknown): boolean => value === '1' || value === 1;
  const timeout = desktop.ScreenSaveTimeOut;
  const seconds = typeof timeout === 'string' && /^\d{1,9}$/.test(timeout) ? Number(timeout) : typeof timeout === 'number' ? timeout : 0;
  return flag(desktop.ScreenSaveActive) && flag(desktop.ScreenSaverIsSecure) && seconds > 0;
}

async function ps(ctx: CollectContext, script: string, timeoutMs = ctx.timeoutMs) {
  return ctx.run(POWERSHELL, powershellArgs(script), { timeoutMs });
}

export async function windowsOsVersion(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ps(ctx, SCRIPTS.os);
  const version = r.code === 0 ? parseWin32OperatingSystem(r.stdout) : undefined;
  return version === undefined ? {} : { osVersion: version };
}

export async function windowsDiskEncryption(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ps(ctx, SCRIPTS.bitLocker);
  let on = r.code === 0 ? parseBitLockerVolume(r.stdout) : undefined;
  if (on === undefined) {
    const shell = await ps(ctx, SCRIPTS.bitLockerShell);
    on = shell.code === 0 ? parseBitLockerShellProperty(shell.stdout) : undefined;
  }
  return on === undefined ? {} : { diskEncryption: on };
}

export async function windowsFirewall(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ps(ctx, SCRIPTS.firewall);
  const on = r.code === 0 ? parseFirewallProfiles(r.stdout) : undefined;
  return on === undefined ? {} : { firewall: on };
}

export async function windowsUpdates(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const out: Partial<FactorValues> = {};
  // The update search asks Microsoft's servers; it gets a longer budget than the local checks.
  const count = await ps(ctx, SCRIPTS.updatesPending, ctx.timeoutMs * 4);
  const pending = count.code === 0 ? parseUpdateCount(count.stdout) : undefined;
  if (pending !== undefined) out.updatesPending = pending;
  const policy = await ps(ctx, SCRIPTS.updatesPolicy);
  const automatic = parseUpdatePolicy(policy.code, policy.stdout);
  if (automatic !== undefined) out.updatesAutomatic = automatic;
  return out;
}

export async function windowsScreenLock(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const r = await ps(ctx, SCRIPTS.screenSaver);
  const on = r.code === 0 ? parseScreenSaver(r.stdout) : undefined;
  return on === undefined ? {} : { screenLock: on };
}

export async function windowsProcesses(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const wanted = ctx.requirements.processes ?? [];
  if (wanted.length === 0) return {};
  const r = await ps(ctx, SCRIPTS.processes);
  if (r.code !== 0) return {};
  const names = parseProcessNames(r.stdout);
  return names.size === 0 ? {} : { processes: matchProcesses(wanted, names, true) };
}
