import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createMemoryNonceStore, signPostureReport, verifyPostureReport } from '../../lib/posture/index.ts';
import { deviceFactorValuesSchema } from '../../lib/trust/index.ts';
import { collectPosture, collectorPlatform, createCommandRunner, createPostureFiles } from './index.ts';
import type { CommandResult, CommandRunner, PostureFiles } from './index.ts';
import {
  hasDesktopSession,
  matchProcesses,
  parseAptAutomatic,
  parseAptSimulation,
  parseDnfCheckUpdate,
  parseGsettingsBoolean,
  parseGsettingsUint,
  parseIptablesFiltersInput,
  parseLsblkRootEncrypted,
  parseNftFiltersInput,
  parseOsRelease,
  parseUfwStatus,
} from './linux.ts';
import { parseDefaultsBoolean, parseFdesetupStatus, parsePsComm, parseSocketFilterGlobalState, parseSoftwareUpdateList, parseSwVers, parseSysadminctlScreenLock } from './macos.ts';
import {
  POWERSHELL,
  SCRIPTS,
  parseBitLockerShellProperty,
  parseBitLockerVolume,
  parseFirewallProfiles,
  parseProcessNames,
  parseScreenSaver,
  parseUpdateCount,
  parseUpdatePolicy,
  parseWin32OperatingSystem,
} from './windows.ts';

function fixture(name: string): string {
  return readFileSync(fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)), 'utf8');
}

const ok = (stdout: string, stderr = ''): CommandResult => ({ code: 0, stdout, stderr });
const fail = (stderr: string, code: number | null = 1): CommandResult => ({ code, stdout: '', stderr });

/** A runner answering from a table keyed by `cmd arg arg…` (PowerShell keyed by its script); anything else: not found. */
function fakeRunner(table: Record<string, CommandResult>, calls: string[] = []): CommandRunner {
  return (cmd, args) => {
    const key = cmd === POWERSHELL ? `ps:${args.at(-1) ?? ''}` : [cmd, ...args].join(' ');
    calls.push(key);
    return Promise.resolve(table[key] ?? fail(`${cmd}: command not found`, null));
  };
}

function fakeFiles(files: Record<string, string>, dirs: Record<string, string[]> = {}): PostureFiles {
  return {
    readText: (path) => Promise.resolve(files[path]),
    exists: (path) => Promise.resolve(Object.hasOwn(files, path) || Object.hasOwn(dirs, path)),
    list: (path) => Promise.resolve(dirs[path]),
  };
}

void describe('Linux posture parsers on recorded outputs', () => {
  void test('os-release gives the distribution and VERSION_ID; a rolling release has no version', () => {
    const ubuntu = parseOsRelease(fixture('linux-os-release-ubuntu.txt'));
    assert.equal(ubuntu.ID, 'ubuntu');
    assert.equal(ubuntu.VERSION_ID, '24.04');
    assert.equal(ubuntu.PRETTY_NAME, 'Ubuntu 24.04.1 LTS');
    assert.equal(parseOsRelease(fixture('linux-os-release-arch.txt')).VERSION_ID, undefined);
  });

  void test('apt-get -s upgrade counts the packages to upgrade, and apt-config dump says whether unattended upgrades run', () => {
    assert.equal(parseAptSimulation(fixture('linux-apt-upgrade-simulated.txt')), 3);
    assert.equal(parseAptSimulation(fixture('linux-apt-upgrade-none.txt')), 0);
    assert.equal(parseAptSimulation('E: Could not open lock file'), undefined);
    assert.equal(parseAptAutomatic(fixture('linux-apt-config-dump.txt')), true);
    assert.equal(parseAptAutomatic(fixture('linux-apt-config-dump.txt').replace('Unattended-Upgrade "1"', 'Unattended-Upgrade "0"')), false);
    assert.equal(parseAptAutomatic('APT "";\n'), false);
  });

  void test('dnf check-update counts packages (exit 100) and stops at obsoletes', () => {
    assert.equal(parseDnfCheckUpdate(100, fixture('linux-dnf-check-update.txt')), 3);
    assert.equal(parseDnfCheckUpdate(0, ''), 0);
    assert.equal(parseDnfCheckUpdate(1, 'Error: Failed to download metadata'), undefined);
  });

  void test('lsblk: root on LVM on LUKS is encrypted, a plain root partition is not, a container root is unknown', () => {
    assert.equal(parseLsblkRootEncrypted(fixture('linux-lsblk-luks.json')), true);
    assert.equal(parseLsblkRootEncrypted(fixture('linux-lsblk-plain.json')), false);
    assert.equal(parseLsblkRootEncrypted(fixture('linux-lsblk-container.json')), undefined);
    assert.equal(parseLsblkRootEncrypted('lsblk: unknown column: MOUNTPOINTS'), undefined);
    assert.equal(parseLsblkRootEncrypted('{"blockdevices": {"x": 1}}'), undefined);
  });

  void test('firewall outputs: nft input drop policy, iptables under ufw, ufw status', () => {
    assert.equal(parseNftFiltersInput(fixture('linux-nft-ruleset-drop.txt')), true);
    assert.equal(parseNftFiltersInput(fixture('linux-nft-ruleset-open.txt')), false);
    assert.equal(parseNftFiltersInput(''), false);
    assert.equal(parseIptablesFiltersInput(fixture('linux-iptables-S-ufw.txt')), true);
    assert.equal(parseIptablesFiltersInput(fixture('linux-iptables-S-open.txt')), false);
    assert.equal(parseIptablesFiltersInput('-P INPUT ACCEPT\n-A INPUT -s 10.0.0.66/32 -j DROP\n'), true);
    assert.equal(parseUfwStatus(fixture('linux-ufw-status-active.txt')), true);
    assert.equal(parseUfwStatus(fixture('linux-ufw-status-inactive.txt')), false);
    assert.equal(parseUfwStatus('ERROR: You need to be root to run this script'), undefined);
  });

  void test('gsettings values and the desktop-session test', () => {
    assert.equal(parseGsettingsBoolean('true\n'), true);
    assert.equal(parseGsettingsBoolean('false\n'), false);
    assert.equal(parseGsettingsBoolean('No such schema'), undefined);
    assert.equal(parseGsettingsUint('uint32 300\n'), 300);
    assert.equal(parseGsettingsUint('uint32 x'), undefined);
    assert.equal(hasDesktopSession({ XDG_SESSION_TYPE: 'wayland' }), true);
    assert.equal(hasDesktopSession({ DISPLAY: ':0' }), true);
    assert.equal(hasDesktopSession({ XDG_SESSION_TYPE: 'tty' }), false);
    assert.equal(hasDesktopSession({}), false);
  });

  void test('process names match exactly, by comm’s first 15 characters, and case-insensitively with .exe on Windows', () => {
    const running = new Set(['falcon-sensor', 'systemd', 'verylongprocess']);
    assert.deepEqual(matchProcesses(['falcon-sensor', 'verylongprocessname', 'osqueryd'], running), { 'falcon-sensor': true, verylongprocessname: true, osqueryd: false });
    assert.deepEqual(matchProcesses(['MsSense.exe', 'csfalconservice'], new Set(['MsSense', 'CSFalconService']), true), { 'MsSense.exe': true, csfalconservice: true });
  });
});

void describe('macOS posture parsers on recorded outputs', () => {
  void test('sw_vers, fdesetup and socketfilterfw', () => {
    assert.equal(parseSwVers(fixture('macos-sw_vers.txt')), '14.4.1');
    assert.equal(parseSwVers('14.4.1\n'), '14.4.1');
    assert.equal(parseSwVers('garbage'), undefined);
    assert.equal(parseFdesetupStatus(fixture('macos-fdesetup-on.txt')), true);
    assert.equal(parseFdesetupStatus(fixture('macos-fdesetup-off.txt')), false);
    assert.equal(parseFdesetupStatus(fixture('macos-fdesetup-encrypting.txt')), false);
    assert.equal(parseFdesetupStatus('Error: unknown'), undefined);
    assert.equal(parseSocketFilterGlobalState(fixture('macos-socketfilterfw-enabled.txt')), true);
    assert.equal(parseSocketFilterGlobalState(fixture('macos-socketfilterfw-disabled.txt')), false);
    assert.equal(parseSocketFilterGlobalState('Firewall is blocking all non-essential incoming connections. (State = 2)'), true);
  });

  void test('softwareupdate --list, the automatic-install default, sysadminctl screen lock and ps', () => {
    assert.equal(parseSoftwareUpdateList(fixture('macos-softwareupdate-list.txt')), 2);
    assert.equal(parseSoftwareUpdateList(fixture('macos-softwareupdate-none.txt')), 0);
    assert.equal(parseSoftwareUpdateList('Software Update Tool\n\nFinding available software\n'), undefined);
    assert.equal(parseDefaultsBoolean(ok(fixture('macos-defaults-auto-install-on.txt'))), true);
    assert.equal(parseDefaultsBoolean({ code: 1, stdout: '', stderr: fixture('macos-defaults-auto-install-missing.txt') }), undefined);
    assert.equal(parseSysadminctlScreenLock(fixture('macos-sysadminctl-screenlock-immediate.txt')), true);
    assert.equal(parseSysadminctlScreenLock(fixture('macos-sysadminctl-screenlock-300.txt')), true);
    assert.equal(parseSysadminctlScreenLock(fixture('macos-sysadminctl-screenlock-off.txt')), false);
    const names = parsePsComm(fixture('macos-ps-comm.txt'));
    assert.ok(names.has('falcond') && names.has('loginwindow') && names.has('launchd'));
  });
});

void describe('Windows posture parsers on recorded outputs', () => {
  void test('BitLocker: protection on counts, suspended protection does not, a denied query is unknown', () => {
    assert.equal(parseBitLockerVolume(fixture('windows-bitlocker-on.json')), true);
    assert.equal(parseBitLockerVolume(fixture('windows-bitlocker-suspended.json')), false);
    assert.equal(parseBitLockerVolume(fixture('windows-bitlocker-denied.txt')), undefined);
    assert.equal(parseBitLockerShellProperty('1\r\n'), true);
    assert.equal(parseBitLockerShellProperty('5\r\n'), false);
    assert.equal(parseBitLockerShellProperty('\r\n'), undefined);
  });

  void test('firewall profiles: on only when every profile is enabled', () => {
    assert.equal(parseFirewallProfiles(fixture('windows-firewall-on.json')), true);
    assert.equal(parseFirewallProfiles(fixture('windows-firewall-public-off.json')), false);
    assert.equal(parseFirewallProfiles('[{"Name":"Domain","Enabled":"True"}]'), true);
    assert.equal(parseFirewallProfiles('[]'), undefined);
    assert.equal(parseFirewallProfiles('[{"Name":"Domain","Enabled":"weird"}]'), undefined);
  });

  void test('OS version, processes, update count and policy, screen saver', () => {
    assert.equal(parseWin32OperatingSystem(fixture('windows-os.json')), '10.0.22631');
    assert.equal(parseWin32OperatingSystem('\uFEFF{"Version":"10.0.19045"}'), '10.0.19045');
    assert.equal(parseWin32OperatingSystem('{"Version":"ten"}'), undefined);
    const names = parseProcessNames(fixture('windows-processes.txt'));
    assert.ok(names.has('MsSense') && names.has('CSFalconService') && !names.has(''));
    assert.equal(parseUpdateCount(fixture('windows-updates-count.txt')), 4);
    assert.equal(parseUpdateCount('Exception calling "Search"'), undefined);
    assert.equal(parseUpdatePolicy(0, ''), true);
    assert.equal(parseUpdatePolicy(0, fixture('windows-au-policy-notify.json')), false);
    assert.equal(parseUpdatePolicy(0, '{"NoAutoUpdate":1}'), false);
    assert.equal(parseUpdatePolicy(0, '{"NoAutoUpdate":0,"AUOptions":4}'), true);
    assert.equal(parseScreenSaver(fixture('windows-screensaver-secure.json')), true);
    assert.equal(parseScreenSaver(fixture('windows-screensaver-off.json')), false);
  });
});

void describe('collectPosture', () => {
  void test('Linux: every collector runs through the injected runner and files', async () => {
    const calls: string[] = [];
    const run = fakeRunner(
      {
        'apt-get -s -o Debug::NoLocking=true upgrade': ok(fixture('linux-apt-upgrade-simulated.txt')),
        'apt-config dump': ok(fixture('linux-apt-config-dump.txt')),
        'lsblk -J -o NAME,TYPE,MOUNTPOINTS': ok(fixture('linux-lsblk-luks.json')),
        'ufw status': fail('ERROR: You need to be root to run this script'),
        'nft list ruleset': ok(fixture('linux-nft-ruleset-drop.txt')),
        'gsettings get org.gnome.desktop.screensaver lock-enabled': ok('true\n'),
        'gsettings get org.gnome.desktop.session idle-delay': ok('uint32 300\n'),
      },
      calls,
    );
    const files = fakeFiles(
      { '/etc/os-release': fixture('linux-os-release-ubuntu.txt'), '/usr/bin/unattended-upgrade': '', '/etc/corp/agent.conf': 'x', '/proc/1/comm': 'systemd\n', '/proc/42/comm': 'falcon-sensor\n', '/proc/42/cmdline': '/opt/CrowdStrike/falcon-sensor\0--x\0' },
      { '/proc': ['1', '42', 'self', 'cpuinfo'] },
    );
    const { factors, problems } = await collectPosture({
      platform: 'linux',
      run,
      files,
      env: { XDG_SESSION_TYPE: 'wayland' },
      requirements: { files: ['/etc/corp/agent.conf', '/etc/missing.conf'], processes: ['falcon-sensor', 'osqueryd'] },
    });
    assert.deepEqual(factors, {
      osVersion: '24.04',
      osDistribution: 'ubuntu',
      updatesPending: 3,
      updatesAutomatic: true,
      diskEncryption: true,
      firewall: true,
      screenLock: true,
      processes: { 'falcon-sensor': true, osqueryd: false },
      files: { '/etc/corp/agent.conf': true, '/etc/missing.conf': false },
    });
    assert.deepEqual(problems, []);
    assert.ok(calls.includes('nft list ruleset'));
  });

  void test('Linux: without root and without ufw.conf or firewalld the firewall is unknown; an open full view is off', async () => {
    const base = { platform: 'linux' as const, files: fakeFiles({}), env: {} };
    const unknown = await collectPosture({ ...base, run: fakeRunner({ 'nft list ruleset': fail('Operation not permitted (you must be root)') }) });
    assert.equal(unknown.factors.firewall, undefined);
    assert.ok(unknown.problems.includes('firewall: could not be established'));
    assert.equal(unknown.factors.screenLock, 'not-applicable', 'no desktop session');
    const off = await collectPosture({ ...base, run: fakeRunner({ 'nft list ruleset': ok(fixture('linux-nft-ruleset-open.txt')), 'iptables -S': ok(fixture('linux-iptables-S-open.txt')) }) });
    assert.equal(off.factors.firewall, false);
    const ufwConf = await collectPosture({ ...base, run: fakeRunner({}), files: fakeFiles({ '/etc/ufw/ufw.conf': '# comment\nENABLED=yes\nLOGLEVEL=low\n' }) });
    assert.equal(ufwConf.factors.firewall, true);
  });

  void test('macOS: the standard commands, from recorded outputs', async () => {
    const run = fakeRunner({
      sw_vers: ok(fixture('macos-sw_vers.txt')),
      'fdesetup status': ok(fixture('macos-fdesetup-on.txt')),
      '/usr/libexec/ApplicationFirewall/socketfilterfw --getglobalstate': ok(fixture('macos-socketfilterfw-disabled.txt')),
      'softwareupdate --list': ok('', fixture('macos-softwareupdate-list.txt')),
      'defaults read /Library/Preferences/com.apple.SoftwareUpdate AutomaticallyInstallMacOSUpdates': ok(fixture('macos-defaults-auto-install-on.txt')),
      'sysadminctl -screenLock status': ok('', fixture('macos-sysadminctl-screenlock-300.txt')),
      'ps -axo comm=': ok(fixture('macos-ps-comm.txt')),
    });
    const { factors } = await collectPosture({ platform: 'macos', run, files: fakeFiles({ '/Library/Corp/agent.plist': '' }), requirements: { processes: ['falcond', 'osqueryd'], files: ['/Library/Corp/agent.plist'] } });
    assert.deepEqual(factors, {
      osVersion: '14.4.1',
      diskEncryption: true,
      firewall: false,
      updatesPending: 2,
      updatesAutomatic: true,
      screenLock: true,
      processes: { falcond: true, osqueryd: false },
      files: { '/Library/Corp/agent.plist': true },
    });
  });

  void test('Windows: PowerShell queries, from recorded outputs, with the BitLocker fallback for non-administrators', async () => {
    const run = fakeRunner({
      [`ps:${SCRIPTS.os}`]: ok(fixture('windows-os.json')),
      [`ps:${SCRIPTS.bitLocker}`]: { code: 1, stdout: '', stderr: fixture('windows-bitlocker-denied.txt') },
      [`ps:${SCRIPTS.bitLockerShell}`]: ok('1\r\n'),
      [`ps:${SCRIPTS.firewall}`]: ok(fixture('windows-firewall-public-off.json')),
      [`ps:${SCRIPTS.updatesPending}`]: ok(fixture('windows-updates-count.txt')),
      [`ps:${SCRIPTS.updatesPolicy}`]: ok(''),
      [`ps:${SCRIPTS.screenSaver}`]: ok(fixture('windows-screensaver-secure.json')),
      [`ps:${SCRIPTS.processes}`]: ok(fixture('windows-processes.txt')),
    });
    const { factors } = await collectPosture({ platform: 'windows', run, files: fakeFiles({}), requirements: { processes: ['MsSense.exe', 'falcon-sensor'] } });
    assert.deepEqual(factors, {
      osVersion: '10.0.22631',
      diskEncryption: true,
      firewall: false,
      updatesPending: 4,
      updatesAutomatic: true,
      screenLock: true,
      processes: { 'MsSense.exe': true, 'falcon-sensor': false },
    });
  });

  void test('a collector whose runner throws or never answers gives unknown values and a problem, never an exception', async () => {
    const throwing: CommandRunner = () => Promise.reject(new Error('spawn EACCES'));
    const thrown = await collectPosture({ platform: 'macos', run: throwing, files: fakeFiles({}), timeoutMs: 1000 });
    assert.deepEqual(thrown.factors, {});
    assert.ok(thrown.problems.some((p) => p.startsWith('firewall: spawn EACCES')));
    const hanging: CommandRunner = () => new Promise<CommandResult>(() => undefined);
    const hung = await collectPosture({ platform: 'windows', run: hanging, files: fakeFiles({}), timeoutMs: 20 });
    assert.deepEqual(hung.factors, {});
    assert.ok(hung.problems.some((p) => /^firewall: firewall: no answer within \d+ ms$/.test(p)), hung.problems.join('\n'));
    const brokenFiles: PostureFiles = { readText: () => Promise.reject(new Error('EIO')), exists: () => Promise.reject(new Error('EIO')), list: () => Promise.reject(new Error('EIO')) };
    const broken = await collectPosture({ platform: 'linux', run: fakeRunner({}), files: brokenFiles, requirements: { files: ['/x'], processes: ['y'] } });
    assert.equal(broken.factors.osVersion, undefined);
    assert.ok(broken.problems.some((p) => p.startsWith('osVersion: EIO')));
  });

  void test('collectorPlatform maps Node’s platform names', () => {
    assert.equal(collectorPlatform('linux'), 'linux');
    assert.equal(collectorPlatform('darwin'), 'macos');
    assert.equal(collectorPlatform('win32'), 'windows');
    assert.equal(collectorPlatform('aix'), undefined);
  });

  void test('the Linux collectors run for real on this machine and give a well-formed, signable report', async () => {
    const run = createCommandRunner({ env: process.env });
    const { factors, problems } = await collectPosture({
      platform: 'linux',
      run,
      files: createPostureFiles(),
      env: process.env,
      requirements: { files: ['/etc/os-release', '/etc/causeway-no-such-file'], processes: ['node', 'no-such-process-xyz'] },
      timeoutMs: 60_000,
    });
    const parsed = deviceFactorValuesSchema.safeParse(factors);
    assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
    assert.deepEqual(factors.files, { '/etc/os-release': true, '/etc/causeway-no-such-file': false });
    assert.deepEqual(factors.processes, { node: true, 'no-such-process-xyz': false });
    assert.ok(factors.osDistribution !== undefined, 'this machine has /etc/os-release');
    for (const key of ['diskEncryption', 'firewall', 'updatesAutomatic'] as const) {
      assert.ok(factors[key] === undefined || typeof factors[key] === 'boolean');
    }
    assert.ok(factors.screenLock === undefined || factors.screenLock === 'not-applicable' || typeof factors.screenLock === 'boolean');
    for (const problem of problems) assert.match(problem, /^[A-Za-z]+: /);

    // What was collected can be signed and verified as a posture report.
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const nonces = createMemoryNonceStore({ clock: { now: () => now } });
    const nonce = nonces.issue('this-device');
    const body = signPostureReport({ deviceId: 'this-device', nonce, timestamp: now, factors }, privateKey);
    const verified = await verifyPostureReport(body, { publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), expectedDeviceId: 'this-device', nonceStore: nonces, now });
    assert.ok(verified.ok);
    assert.deepEqual(verified.report.factors, factors);
  });

  void test('the real command runner reports a missing program and a timeout without throwing', async () => {
    const run = createCommandRunner();
    const missing = await run('causeway-no-such-program', [], { timeoutMs: 5000 });
    assert.equal(missing.code, null);
    assert.match(missing.stderr, /ENOENT/);
    const slow = await run('sleep', ['30'], { timeoutMs: 50 });
    assert.equal(slow.code, null);
    const exit = await run('sh', ['-c', 'echo out; echo err >&2; exit 3'], { timeoutMs: 5000 });
    assert.deepEqual(exit, { code: 3, stdout: 'out\n', stderr: 'err\n' });
  });

  void test('the real file reader tells present, absent and unreadable apart', async () => {
    const files = createPostureFiles();
    assert.equal(await files.exists('/etc/os-release'), true);
    assert.equal(await files.exists('/etc/causeway-no-such-file'), false);
    assert.equal(await files.readText('/etc/causeway-no-such-file'), undefined);
    assert.equal((await files.readText('/etc/os-release', 4))?.length, 4);
    assert.ok((await files.list('/proc'))?.includes('self'));
    assert.equal(await files.list('/etc/causeway-no-such-dir'), undefined);
  });
});
