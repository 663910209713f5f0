import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../lib/errors.ts';
import { describeIgnored, loadClientSettings, managedConfigPath, mergeSettings, parseSettings } from './settings.ts';
import type { SettingsIo } from './settings.ts';

function setup(t: { after: (fn: () => void) => void }, files: { managed?: string; user?: string; managedMode?: number }): SettingsIo & { dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-settings-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const home = path.join(dir, 'home');
  fs.mkdirSync(home, { mode: 0o700 });
  if (files.managed !== undefined) fs.writeFileSync(path.join(dir, 'client.yaml'), files.managed, { mode: files.managedMode ?? 0o644 });
  if (files.managed !== undefined && files.managedMode !== undefined) fs.chmodSync(path.join(dir, 'client.yaml'), files.managedMode);
  if (files.user !== undefined) fs.writeFileSync(path.join(home, 'settings.yaml'), files.user, { mode: 0o600 });
  return { dir, env: { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: path.join(dir, 'client.yaml') }, homedir: () => dir, readFile: (file) => fs.promises.readFile(file, 'utf8') };
}

function rejectsWith(code: string, pattern: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof UserError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  };
}

void test('no files: the defaults', async (t) => {
  const io = setup(t, {});
  const loaded = await loadClientSettings(io);
  assert.deepEqual(loaded.settings, { kubeconfigOverwrite: false, autorun: [], hideCatalog: false });
  assert.equal(loaded.managedPresent, false);
  assert.equal(loaded.userPresent, false);
  assert.deepEqual(loaded.pinned, []);
  assert.equal(loaded.sources.hideCatalog, 'default');
});

void test('the managed file wins over the user\'s, and the user\'s overridden values are reported as ignored', async (t) => {
  const io = setup(t, {
    managed: 'controlPlane: https://cp.corp.example.com:8440\ndeviceOwnership: corporate-dedicated\nmdmPresent: true\nkubeconfigOverwrite: true\nautorun: [prod-k8s]\n',
    user: 'controlPlane: https://evil.example.com\nkubeconfigOverwrite: false\nautorun: [staging-k8s, staging-k8s]\nhideCatalog: true\ncaFile: /home/me/ca.crt\n',
  });
  const loaded = await loadClientSettings(io);
  assert.deepEqual(loaded.settings, {
    controlPlane: 'https://cp.corp.example.com:8440',
    deviceOwnership: 'corporate-dedicated',
    mdmPresent: true,
    kubeconfigOverwrite: true,
    autorun: ['prod-k8s'],
    hideCatalog: true,
    caFile: '/home/me/ca.crt',
  });
  assert.equal(loaded.sources.controlPlane, 'managed');
  assert.equal(loaded.sources.hideCatalog, 'user');
  assert.deepEqual(loaded.pinned.sort(), ['autorun', 'controlPlane', 'deviceOwnership', 'kubeconfigOverwrite', 'mdmPresent']);
  assert.deepEqual(loaded.ignored.map((i) => i.key).sort(), ['autorun', 'controlPlane', 'kubeconfigOverwrite']);
  const lines = describeIgnored(loaded);
  assert.ok(lines.some((l) => l.startsWith('controlPlane: your setting "https://evil.example.com"') && l.includes('managed by your organisation')), lines.join('\n'));
});

void test('a user value equal to the pin is not reported as ignored', () => {
  const merged = mergeSettings({ hideCatalog: true }, { hideCatalog: true });
  assert.deepEqual(merged.ignored, []);
  assert.equal(merged.settings.hideCatalog, true);
});

void test('an unknown key is an error naming it and the file (a typo must not silently unpin)', async (t) => {
  const io = setup(t, { managed: 'kubeconfigOverwrte: true\n' });
  await assert.rejects(loadClientSettings(io), rejectsWith('SETTINGS_UNKNOWN_KEY', /client\.yaml: unknown setting "kubeconfigOverwrte"\. Known settings: .*kubeconfigOverwrite/));
  const user = setup(t, { user: 'colour: blue\n' });
  await assert.rejects(loadClientSettings(user), rejectsWith('SETTINGS_UNKNOWN_KEY', /settings\.yaml: unknown setting "colour"/));
});

void test('wrong types and values name the key', () => {
  for (const [text, pattern] of [
    ['controlPlane: http://cp.example.com', /controlPlane must be an https:\/\/ URL/],
    ['controlPlane: https://user:pw@cp.example.com', /controlPlane must be an https:\/\/ URL without credentials/],
    ['controlPlane: 42', /controlPlane must be the control plane URL/],
    ['caFile: relative/ca.crt', /caFile must be an absolute path/],
    ['deviceOwnership: mine', /deviceOwnership must be one of corporate-dedicated/],
    ['hideCatalog: "yes"', /hideCatalog must be true or false/],
    ['autorun: prod-k8s', /autorun must be a list of service names/],
    ['autorun: [Prod K8s]', /autorun must be a list of service names/],
    ['- a\n- b', /must be a mapping of settings/],
    ['a: [\n', /\(line \d\) is not valid YAML/],
    ['hideCatalog: true\nhideCatalog: false\n', /\(line 2\) is not valid YAML/],
  ] as const) {
    assert.throws(() => parseSettings(text, '/etc/causeway/client.yaml', 'managed'), rejectsWith('SETTINGS_INVALID', pattern), text);
  }
});

void test('mdmPresent can only come from the managed file', () => {
  assert.deepEqual(parseSettings('mdmPresent: true\n', 'managed.yaml', 'managed'), { mdmPresent: true });
  assert.throws(() => parseSettings('mdmPresent: true\n', 'settings.yaml', 'user'), rejectsWith('SETTINGS_INVALID', /mdmPresent can only be set by the managed client config/));
});

void test('an empty file, or null values, set nothing', () => {
  assert.deepEqual(parseSettings('', 'f', 'managed'), {});
  assert.deepEqual(parseSettings('# nothing yet\n', 'f', 'managed'), {});
  assert.deepEqual(parseSettings('autorun: null\ncontrolPlane: https://cp.example.com/\n', 'f', 'user'), { controlPlane: 'https://cp.example.com' });
});

void test('CN-09 a group- or world-writable managed config is refused, not half-applied', async (t) => {
  for (const mode of [0o664, 0o666]) {
    const io = setup(t, { managed: 'kubeconfigOverwrite: true\n', managedMode: mode });
    await assert.rejects(loadClientSettings(io), rejectsWith('SETTINGS_UNSAFE', /managed client config .*client\.yaml is refused: .*writable/));
  }
  const user = setup(t, { user: 'hideCatalog: true\n' });
  fs.chmodSync(path.join(user.dir, 'home', 'settings.yaml'), 0o666);
  await assert.rejects(loadClientSettings(user), rejectsWith('SETTINGS_UNSAFE', /settings file .*settings\.yaml is refused/));
});

void test('managedConfigPath: $CAUSEWAY_CLIENT_CONFIG, else /etc/causeway/client.yaml', () => {
  assert.equal(managedConfigPath({ CAUSEWAY_CLIENT_CONFIG: '/x/y.yaml' }), '/x/y.yaml');
  assert.equal(managedConfigPath({ CAUSEWAY_CLIENT_CONFIG: '' }), '/etc/causeway/client.yaml');
  assert.equal(managedConfigPath({}), '/etc/causeway/client.yaml');
});
