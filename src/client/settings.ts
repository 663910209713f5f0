/**
 * The client's settings: the managed client config an MDM deploys (`/etc/causeway/client.yaml`, or
 * `$CAUSEWAY_CLIENT_CONFIG`) over the user's own (`$CAUSEWAY_HOME/settings.yaml`). Keys:
 *
 *   controlPlane: https://cp.example.com:8440   # `causeway login` without a URL logs in here
 *   caFile: /etc/causeway/ca.crt                # the control plane's CA for that login
 *   deviceOwnership: corporate-dedicated        # told to the server when this device registers
 *   mdmPresent: true                            # informational: shown by whoami and the app page (managed file only)
 *   kubeconfigOverwrite: false                  # regenerate the kubeconfig instead of merging into it
 *   autorun: [prod-k8s]                         # services the agent connects at login (beside the catalog's autorun)
 *   hideCatalog: false                          # `causeway services` shows only connected and autorun services
 *
 * Whatever the managed file sets wins: the user's value for the same key is ignored, and reported as
 * ignored (`ignored`), so `causeway services`/`status` can say why a setting has no effect. `mdmPresent`
 * is a statement about the machine only its management can make, so the user's file may not set it.
 * An unknown key or a value of the wrong type is a UserError naming the file and the key (a typo in a
 * pin must not silently unpin). A managed file that another user could have written (group- or
 * world-writable, or owned by someone else; src/lib/fs-safety.ts, THREATS CN-09) is refused with a
 * UserError: its pins would be someone else's. The same check applies to the user's file. A missing
 * file is no settings.
 */
import path from 'node:path';
import { parseDocument } from 'yaml';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { unsafePathProblem } from '../lib/fs-safety.ts';
import { causewayHome } from '../lib/session/index.ts';
import { DEVICE_OWNERSHIP } from '../lib/spec/index.ts';

export const DEFAULT_MANAGED_CONFIG = '/etc/causeway/client.yaml';
export const USER_SETTINGS_FILE = 'settings.yaml';

export type DeviceOwnershipSetting = (typeof DEVICE_OWNERSHIP)[number];

export interface ClientSettings {
  controlPlane?: string;
  caFile?: string;
  deviceOwnership?: DeviceOwnershipSetting;
  mdmPresent?: boolean;
  kubeconfigOverwrite: boolean;
  autorun: string[];
  hideCatalog: boolean;
}

export type SettingKey = keyof ClientSettings;

export interface IgnoredSetting {
  key: SettingKey;
  /** The user's value, which the managed file overrides. */
  userValue: unknown;
  managedValue: unknown;
}

export interface LoadedSettings {
  settings: ClientSettings;
  /** Where each effective value came from. */
  sources: Record<SettingKey, 'managed' | 'user' | 'default'>;
  /** The keys the managed file pins. */
  pinned: SettingKey[];
  ignored: IgnoredSetting[];
  managedFile: string;
  userFile: string;
  /** Whether each file exists. */
  managedPresent: boolean;
  userPresent: boolean;
}

export interface SettingsIo {
  env: NodeJS.ProcessEnv;
  homedir: () => string;
  readFile: (file: string) => Promise<string>;
  /** Why the file is not ours alone (fs-safety), or undefined; tests replace it. */
  unsafeProblem?: (file: string) => Promise<string | undefined>;
}

const KEYS: readonly SettingKey[] = ['controlPlane', 'caFile', 'deviceOwnership', 'mdmPresent', 'kubeconfigOverwrite', 'autorun', 'hideCatalog'];
const MANAGED_ONLY: ReadonlySet<SettingKey> = new Set(['mdmPresent']);
const SERVICE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The managed config's path: $CAUSEWAY_CLIENT_CONFIG, else /etc/causeway/client.yaml. */
export function managedConfigPath(env: NodeJS.ProcessEnv): string {
  const named = env.CAUSEWAY_CLIENT_CONFIG;
  return named !== undefined && named !== '' ? named : DEFAULT_MANAGED_CONFIG;
}

/** Reads both files and merges them (see the module comment). */
export async function loadClientSettings(io: SettingsIo): Promise<LoadedSettings> {
  const managedFile = managedConfigPath(io.env);
  const userFile = path.join(causewayHome(io.env, io.homedir()), USER_SETTINGS_FILE);
  const managedText = await readIfPresent(managedFile, 'managed client config', io);
  const userText = await readIfPresent(userFile, 'settings file', io);
  const managed = managedText === undefined ? {} : parseSettings(managedText, managedFile, 'managed');
  const user = userText === undefined ? {} : parseSettings(userText, userFile, 'user');
  return { ...mergeSettings(managed, user), managedFile, userFile, managedPresent: managedText !== undefined, userPresent: userText !== undefined };
}

/** Managed over user over defaults, with what was ignored. */
export function mergeSettings(managed: Partial<ClientSettings>, user: Partial<ClientSettings>): Pick<LoadedSettings, 'settings' | 'sources' | 'pinned' | 'ignored'> {
  const settings: ClientSettings = { kubeconfigOverwrite: false, autorun: [], hideCatalog: false };
  const sources = {} as Record<SettingKey, 'managed' | 'user' | 'default'>;
  const ignored: IgnoredSetting[] = [];
  const pinned: SettingKey[] = [];
  const out = settings as unknown as Record<string, unknown>;
  for (const key of KEYS) {
    const m = managed[key];
    const u = user[key];
    if (m !== undefined) {
      out[key] = m;
      sources[key] = 'managed';
      pinned.push(key);
      if (u !== undefined && JSON.stringify(u) !== JSON.stringify(m)) ignored.push({ key, userValue: u, managedValue: m });
    } else if (u !== undefined) {
      out[key] = u;
      sources[key] = 'user';
    } else {
      sources[key] = 'default';
    }
  }
  return { settings, sources, pinned, ignored };
}

/** Parses one settings file; every problem is a UserError naming the file, the key and (for YAML) the line. */
export function parseSettings(text: string, file: string, kind: 'managed' | 'user'): Partial<ClientSettings> {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const error = doc.errors[0];
  if (error !== undefined) {
    const line = text.slice(0, error.pos[0]).split('\n').length;
    throw new UserError('SETTINGS_INVALID', `${file} (line ${line}) is not valid YAML: ${error.message.split('\n')[0] ?? ''}. Fix it and retry.`);
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new UserError('SETTINGS_INVALID', `${file} must be a mapping of settings (${KEYS.join(', ')}).`);
  const out: Partial<ClientSettings> = {};
  for (const [key, raw] of Object.entries(value as Record<string, unknown>)) {
    const bad = (what: string): UserError => new UserError('SETTINGS_INVALID', `${file}: ${key} ${what}. Fix it and retry.`);
    if (!(KEYS as readonly string[]).includes(key)) {
      throw new UserError('SETTINGS_UNKNOWN_KEY', `${file}: unknown setting "${key.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')}". Known settings: ${KEYS.filter((k) => kind === 'managed' || !MANAGED_ONLY.has(k)).join(', ')}.`);
    }
    if (kind === 'user' && MANAGED_ONLY.has(key as SettingKey)) throw bad('can only be set by the managed client config (it is a statement about this machine)');
    if (raw === null) continue;
    switch (key as SettingKey) {
      case 'controlPlane': {
        if (typeof raw !== 'string' || !URL.canParse(raw)) throw bad('must be the control plane URL, such as https://cp.example.com:8440');
        const url = new URL(raw);
        if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') throw bad('must be an https:// URL without credentials, query or fragment');
        out.controlPlane = raw.replace(/\/+$/, '');
        break;
      }
      case 'caFile':
        if (typeof raw !== 'string' || raw === '' || !path.isAbsolute(raw)) throw bad('must be an absolute path to a PEM file');
        out.caFile = raw;
        break;
      case 'deviceOwnership':
        if (typeof raw !== 'string' || !(DEVICE_OWNERSHIP as readonly string[]).includes(raw)) throw bad(`must be one of ${DEVICE_OWNERSHIP.join(', ')}`);
        out.deviceOwnership = raw as DeviceOwnershipSetting;
        break;
      case 'mdmPresent':
      case 'kubeconfigOverwrite':
      case 'hideCatalog':
        if (typeof raw !== 'boolean') throw bad('must be true or false');
        out[key as 'mdmPresent' | 'kubeconfigOverwrite' | 'hideCatalog'] = raw;
        break;
      case 'autorun':
        if (!Array.isArray(raw) || !raw.every((s) => typeof s === 'string' && SERVICE_NAME.test(s))) throw bad('must be a list of service names');
        out.autorun = [...new Set(raw as string[])];
        break;
    }
  }
  return out;
}

/** One line per ignored user setting, for the commands to print. */
export function describeIgnored(loaded: Pick<LoadedSettings, 'ignored' | 'managedFile' | 'userFile'>): string[] {
  return loaded.ignored.map((i) => `${i.key}: your setting ${JSON.stringify(i.userValue)} in ${loaded.userFile} is ignored; ${loaded.managedFile} (managed by your organisation) sets ${JSON.stringify(i.managedValue)}.`);
}

async function readIfPresent(file: string, what: string, io: SettingsIo): Promise<string | undefined> {
  let text: string;
  try {
    text = await io.readFile(file);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
    throw new UserError('SETTINGS_UNREADABLE', `Cannot read the ${what} ${file}: ${errorMessage(err)}.`, { cause: err });
  }
  const problem = await (io.unsafeProblem ?? unsafePathProblem)(file);
  if (problem !== undefined) {
    throw new UserError('SETTINGS_UNSAFE', `The ${what} ${file} is refused: ${problem}. Another user could have written it; make it writable only by its owner (chmod go-w) and owned by you or root.`);
  }
  return text;
}
