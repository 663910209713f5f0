/**
 * Linux posture collectors, run for real through the injected command runner and file reader.
 * Each returns only what it could establish; the parsers are exported for tests on recorded output.
 */
import type { FactorValues } from '../../lib/trust/factor-values.ts';
import type { CollectContext } from './types.ts';

const VERSION = /^\d{1,9}(\.\d{1,9}){0,5}$/;
const DISTRIBUTION = /^[a-z0-9][a-z0-9._-]{0,63}$/;

// ---------------------------------------------------------------------------------------------
// OS version: /etc/os-release

/** KEY=value lines, values unquoted (os-release(5)). */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m === null) continue;
    let value = m[2] ?? '';
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.endsWith(quote) && value.length >= 2) value = value.slice(1, -1);
    out[m[1] ?? ''] = value.replace(/\\(["'$`\\])/g, '$1');
  }
  return out;
}

export async function linuxOsVersion(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const text = (await ctx.files.readText('/etc/os-release', 64 * 1024)) ?? (await ctx.files.readText('/usr/lib/os-release', 64 * 1024));
  if (text === undefined) return {};
  const fields = parseOsRelease(text);
  const out: Partial<FactorValues> = {};
  if (fields.ID !== undefined && DISTRIBUTION.test(fields.ID)) out.osDistribution = fields.ID;
  if (fields.VERSION_ID !== undefined && VERSION.test(fields.VERSION_ID)) out.osVersion = fields.VERSION_ID;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Updates: apt (Debian, Ubuntu) or dnf (Fedora, RHEL)

/** `apt-get -s upgrade`: one `Inst` line per package that would be upgraded. */
export function parseAptSimulation(stdout: string): number | undefined {
  if (!/^\d+ upgraded, \d+ newly installed/m.test(stdout)) return undefined;
  return stdout.split('\n').filter((line) => line.startsWith('Inst ')).length;
}

/** `apt-config dump`: automatic when APT::Periodic::Unattended-Upgrade is set to a non-zero value. */
export function parseAptAutomatic(stdout: string): boolean {
  const value = (key: string): string | undefined => new RegExp(`^${key.replaceAll(':', '\\:')} "([^"]*)";$`, 'm').exec(stdout)?.[1];
  const unattended = value('APT::Periodic::Unattended-Upgrade');
  const lists = value('APT::Periodic::Update-Package-Lists');
  const on = (v: string | undefined): boolean => v !== undefined && v !== '0' && v !== '' && v.toLowerCase() !== 'false';
  return on(unattended) && (lists === undefined || on(lists));
}

/** `dnf -q check-update`: exit 100 and one line per package; 0 when none. */
export function parseDnfCheckUpdate(code: number | null, stdout: string): number | undefined {
  if (code === 0) return 0;
  if (code !== 100) return undefined;
  let count = 0;
  for (const line of stdout.split('\n')) {
    if (/^Obsoleting/.test(line)) break;
    if (/^\S+\.\S+\s+\S+\s+\S+\s*$/.test(line)) count++;
  }
  return count;
}

export async function linuxUpdates(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const apt = await ctx.run('apt-get', ['-s', '-o', 'Debug::NoLocking=true', 'upgrade'], { timeoutMs: ctx.timeoutMs });
  if (apt.code === 0) {
    const out: Partial<FactorValues> = {};
    const pending = parseAptSimulation(apt.stdout);
    if (pending !== undefined) out.updatesPending = pending;
    const config = await ctx.run('apt-config', ['dump'], { timeoutMs: ctx.timeoutMs });
    if (config.code === 0) {
      const installed = await ctx.files.exists('/usr/bin/unattended-upgrade');
      if (installed === false) out.updatesAutomatic = false;
      else if (installed === true) out.updatesAutomatic = parseAptAutomatic(config.stdout);
    }
    return out;
  }
  const dnf = await ctx.run('dnf', ['-q', 'check-update'], { timeoutMs: ctx.timeoutMs });
  const pending = parseDnfCheckUpdate(dnf.code, dnf.stdout);
  if (pending === undefined) return {};
  const out: Partial<FactorValues> = { updatesPending: pending };
  const timer = await ctx.run('systemctl', ['is-enabled', 'dnf-automatic-install.timer', 'dnf-automatic.timer', 'dnf5-automatic.timer'], { timeoutMs: ctx.timeoutMs });
  if (timer.stdout.trim() !== '') out.updatesAutomatic = timer.stdout.split('\n').some((line) => line.trim() === 'enabled');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Disk encryption: is the root filesystem on dm-crypt (LUKS)?

interface BlockDevice {
  name?: unknown;
  type?: unknown;
  mountpoint?: unknown;
  mountpoints?: unknown;
  children?: unknown;
}

/**
 * `lsblk -J -o NAME,TYPE,MOUNTPOINTS` (or MOUNTPOINT): true when a `crypt` device lies between the
 * disk and the device mounted on `/`, false when none does, undefined when nothing is mounted on `/`
 * (a container, or output that cannot be read).
 */
export function parseLsblkRootEncrypted(stdout: string): boolean | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    return undefined;
  }
  const roots = (parsed as { blockdevices?: unknown } | null)?.blockdevices;
  if (!Array.isArray(roots)) return undefined;
  const mountedOnRoot = (d: BlockDevice): boolean => d.mountpoint === '/' || (Array.isArray(d.mountpoints) && d.mountpoints.includes('/'));
  let found: boolean | undefined;
  const walk = (devices: unknown, encryptedAbove: boolean, depth: number): void => {
    if (!Array.isArray(devices) || depth > 16) return;
    for (const item of devices as BlockDevice[]) {
      if (item === null || typeof item !== 'object') continue;
      const encrypted = encryptedAbove || item.type === 'crypt';
      if (mountedOnRoot(item)) found = (found ?? true) && encrypted;
      walk(item.children, encrypted, depth + 1);
    }
  };
  walk(roots, false, 0);
  return found;
}

export async function linuxDiskEncryption(ctx: CollectContext): Promise<Partial<FactorValues>> {
  for (const columns of ['NAME,TYPE,MOUNTPOINTS', 'NAME,TYPE,MOUNTPOINT']) {
    const result = await ctx.run('lsblk', ['-J', '-o', columns], { timeoutMs: ctx.timeoutMs });
    if (result.code !== 0) continue;
    const encrypted = parseLsblkRootEncrypted(result.stdout);
    return encrypted === undefined ? {} : { diskEncryption: encrypted };
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Firewall: ufw, firewalld, nftables, iptables

/** `nft list ruleset`: a filter chain on the input hook that drops by policy or has a drop/reject rule. */
export function parseNftFiltersInput(stdout: string): boolean {
  const chains = stdout.split(/\n\s*chain\s+/).slice(1);
  for (const chain of chains) {
    const body = chain.split(/\n\s*}\s*(\n|$)/)[0] ?? chain;
    if (!/type\s+filter\s+hook\s+input\b/.test(body)) continue;
    if (/policy\s+drop\s*;/.test(body)) return true;
    const rules = body.split('\n').filter((line) => !/type\s+filter\s+hook/.test(line));
    if (rules.some((line) => /(^|\s)(drop|reject)(\s|$)/.test(line.trim()))) return true;
  }
  return false;
}

/** `iptables -S`: INPUT drops by policy, or has a DROP/REJECT rule. */
export function parseIptablesFiltersInput(stdout: string): boolean {
  if (/^-P INPUT (DROP|REJECT)\s*$/m.test(stdout)) return true;
  return stdout.split('\n').some((line) => line.startsWith('-A INPUT ') && /\s-j (DROP|REJECT)(\s|$)/.test(line));
}

/** `ufw status`: true/false, or undefined when ufw did not answer (e.g. not root). */
export function parseUfwStatus(stdout: string): boolean | undefined {
  const m = /^Status:\s*(active|inactive)\s*$/m.exec(stdout);
  return m === null ? undefined : m[1] === 'active';
}

/**
 * On when any source says it filters; off only when a full view of the rules (nft or iptables ran)
 * shows no input filtering and nothing else is on; otherwise unknown (the client runs without root,
 * so often only ufw.conf and firewalld can be read).
 */
export async function linuxFirewall(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const opts = { timeoutMs: ctx.timeoutMs };
  const ufw = await ctx.run('ufw', ['status'], opts);
  if (ufw.code === 0 && parseUfwStatus(ufw.stdout) === true) return { firewall: true };
  const ufwConf = await ctx.files.readText('/etc/ufw/ufw.conf', 64 * 1024);
  if (ufwConf !== undefined && /^ENABLED=yes\s*$/m.test(ufwConf)) return { firewall: true };
  const firewalld = await ctx.run('firewall-cmd', ['--state'], opts);
  if (firewalld.code === 0 && firewalld.stdout.trim() === 'running') return { firewall: true };
  let fullView = false;
  const nft = await ctx.run('nft', ['list', 'ruleset'], opts);
  if (nft.code === 0) {
    if (parseNftFiltersInput(nft.stdout)) return { firewall: true };
    fullView = true;
  }
  const iptables = await ctx.run('iptables', ['-S'], opts);
  if (iptables.code === 0) {
    if (parseIptablesFiltersInput(iptables.stdout)) return { firewall: true };
    fullView = true;
  }
  return fullView ? { firewall: false } : {};
}

// ---------------------------------------------------------------------------------------------
// Screen lock: only where a desktop session exists

export function hasDesktopSession(env: Readonly<Record<string, string | undefined>>): boolean {
  const type = env.XDG_SESSION_TYPE;
  if (type === 'x11' || type === 'wayland') return true;
  return (env.DISPLAY ?? '') !== '' || (env.WAYLAND_DISPLAY ?? '') !== '';
}

/** `gsettings get …`: `true` / `false`, `uint32 300`. */
export function parseGsettingsBoolean(stdout: string): boolean | undefined {
  const v = stdout.trim();
  return v === 'true' ? true : v === 'false' ? false : undefined;
}

export function parseGsettingsUint(stdout: string): number | undefined {
  const m = /^(?:uint32\s+)?(\d+)$/.exec(stdout.trim());
  return m === null ? undefined : Number(m[1]);
}

export async function linuxScreenLock(ctx: CollectContext): Promise<Partial<FactorValues>> {
  if (!hasDesktopSession(ctx.env)) return { screenLock: 'not-applicable' };
  const opts = { timeoutMs: ctx.timeoutMs };
  if (/KDE/i.test(ctx.env.XDG_CURRENT_DESKTOP ?? '')) {
    for (const tool of ['kreadconfig6', 'kreadconfig5']) {
      const r = await ctx.run(tool, ['--file', 'kscreenlockerrc', '--group', 'Daemon', '--key', 'Autolock', '--default', 'true'], opts);
      if (r.code === 0) return r.stdout.trim() === 'true' ? { screenLock: true } : r.stdout.trim() === 'false' ? { screenLock: false } : {};
    }
    return {};
  }
  const lock = await ctx.run('gsettings', ['get', 'org.gnome.desktop.screensaver', 'lock-enabled'], opts);
  const enabled = lock.code === 0 ? parseGsettingsBoolean(lock.stdout) : undefined;
  if (enabled === undefined) return {};
  if (!enabled) return { screenLock: false };
  // Locking on idle needs an idle delay: 0 means the session never goes idle.
  const idle = await ctx.run('gsettings', ['get', 'org.gnome.desktop.session', 'idle-delay'], opts);
  const delay = idle.code === 0 ? parseGsettingsUint(idle.stdout) : undefined;
  if (delay === undefined) return {};
  return { screenLock: delay > 0 };
}

// ---------------------------------------------------------------------------------------------
// Processes: /proc/*/comm (and argv[0] for names longer than comm's 15 characters)

export async function linuxProcessNames(ctx: CollectContext): Promise<Set<string> | undefined> {
  const entries = await ctx.files.list('/proc');
  if (entries === undefined) return undefined;
  const names = new Set<string>();
  for (const pid of entries.filter((e) => /^\d+$/.test(e))) {
    const comm = await ctx.files.readText(`/proc/${pid}/comm`, 64);
    if (comm !== undefined && comm.trim() !== '') names.add(comm.trim());
    const cmdline = await ctx.files.readText(`/proc/${pid}/cmdline`, 4096);
    const argv0 = cmdline?.split('\0')[0];
    if (argv0 !== undefined && argv0 !== '') names.add(argv0.split('/').pop() ?? argv0);
  }
  return names.size === 0 ? undefined : names;
}

/** Whether each wanted name runs; comm is cut to 15 characters, so a name matches its first 15 too. */
export function matchProcesses(wanted: readonly string[], running: ReadonlySet<string>, caseInsensitive = false): Record<string, boolean> {
  const norm = (s: string): string => (caseInsensitive ? s.toLowerCase() : s);
  const have = new Set([...running].map(norm));
  const out: Record<string, boolean> = {};
  for (const name of wanted) {
    const n = norm(name);
    out[name] = have.has(n) || have.has(n.slice(0, 15)) || (caseInsensitive && (have.has(n.replace(/\.exe$/, '')) || have.has(`${n}.exe`)));
  }
  return out;
}

export async function linuxProcesses(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const wanted = ctx.requirements.processes ?? [];
  if (wanted.length === 0) return {};
  const running = await linuxProcessNames(ctx);
  return running === undefined ? {} : { processes: matchProcesses(wanted, running) };
}

// ---------------------------------------------------------------------------------------------
// Files (every platform)

export async function filesPresent(ctx: CollectContext): Promise<Partial<FactorValues>> {
  const wanted = ctx.requirements.files ?? [];
  if (wanted.length === 0) return {};
  const files: Record<string, boolean> = {};
  for (const path of wanted) {
    const present = await ctx.files.exists(path);
    if (present !== undefined) files[path] = present;
  }
  return { files };
}
