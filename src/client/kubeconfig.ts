/**
 * Writing the kubeconfig entries of Kubernetes services (issue 7, DESIGN.md §2 step 4).
 *
 * For a service with `kubernetes.clusterName` NAME:
 * - cluster NAME: server `https://DOMAIN[:PORT]` (no :443), `certificate-authority-data` = base64 of the
 *   service's Kubernetes CA, `proxy-url: http://localhost:LISTENPORT`;
 * - user `causeway-NAME` (authentication oidc): exec plugin `causeway kube-credential --cluster NAME`
 *   (client.authentication.k8s.io/v1, interactiveMode Never, provideClusterInfo false);
 *   authentication cluster: no Causeway user. The context names the user NAME: an existing user of that
 *   name (the cluster's own credentials, which we never touch) or, when there is none, an empty user
 *   entry NAME that the person fills in with the cluster's credentials;
 * - context NAME (cluster NAME, that user). Context names are the cluster names, so they are stable.
 *
 * Merge (the default): the file is edited as text at the ranges the `yaml` Document API gives for the
 * entries we own, so every other cluster, user, context, comment and the file's own formatting stay
 * byte-for-byte. Entries with our names are replaced. `current-context` is set only when the file has
 * none. Overwrite (the file's `preferences.extensions` entry `causeway` says `extension: {overwrite: true}`,
 * or the managed client config pins `kubeconfigOverwrite`): the file is regenerated from the entries
 * given (its preferences are kept, so overwrite mode persists); callers pass the whole catalog then.
 *
 * Every write: the target's symlinks resolved, the previous bytes copied to `<file>.causeway.bak` (0600),
 * the new file written to a temporary file in the same directory (0600), fsynced and renamed over it.
 * A malformed existing file is a UserError naming the file and line, and nothing is written.
 * Two writers at once (the agent connecting while `kubeconfig sync` runs) are serialised by an
 * exclusive lock file `<file>.causeway.lock` (stale after 30 s).
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, stringify } from 'yaml';
import type { Document, Node as YamlNode, YAMLSeq } from 'yaml';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import type { CatalogEntry } from './catalog.ts';

export interface KubeconfigTarget {
  /** The kubeconfig file to write (see kubeconfigPath). */
  file: string;
  /** Regenerate instead of merging (the managed config's kubeconfigOverwrite); the file's own extension also turns it on. */
  overwrite: boolean;
  /** The exec plugin's command: `causeway`, or an absolute path (see resolveCausewayCommand). */
  causewayCommand: string;
  /** Arguments before `kube-credential` (e.g. the script when the command is the node binary). */
  causewayArgs?: string[];
}

export interface KubeconfigEntryInput {
  entry: CatalogEntry;
  /** The local proxy's port for this service (its listenPort, or the user's override). */
  listenPort: number;
}

export interface KubeconfigWriteResult {
  file: string;
  /** Where the previous file was copied; absent when there was none. */
  backup?: string;
  /** The contexts written, in input order. */
  contexts: string[];
  /** Whether the file was regenerated (overwrite mode) rather than merged. */
  overwritten: boolean;
  /** Entries not written because an earlier one has the same cluster name. */
  skipped: SkippedEntry[];
}

export interface SkippedEntry {
  service: string;
  clusterName: string;
  because: string;
}

export interface KubeconfigIo {
  /** Called with the temporary file just before it is renamed over the target (tests simulate a crash here). */
  beforeRename?: (tmp: string) => Promise<void>;
  /** How long to wait for another writer's lock; default 10 s. */
  lockTimeoutMs?: number;
}

export const BACKUP_SUFFIX = '.causeway.bak';
const LOCK_SUFFIX = '.causeway.lock';
const STALE_LOCK_MS = 30_000;
const EXEC_API_VERSION = 'client.authentication.k8s.io/v1';
const SECTIONS = ['clusters', 'users', 'contexts'] as const;
type Section = (typeof SECTIONS)[number];

/** `$KUBECONFIG`'s first path (colon list; `;` on Windows), else `~/.kube/config`, as kubectl reads it. */
export function kubeconfigPath(env: NodeJS.ProcessEnv, homedir: string): string {
  const list = env.KUBECONFIG ?? '';
  const first = list.split(path.delimiter).find((p) => p !== '');
  return path.resolve(first ?? path.join(homedir, '.kube', 'config'));
}

/** Whether this process may execute `file` (the check resolveCausewayCommand is given by the commands). */
export function isExecutable(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The exec plugin's command. `causeway` when an executable `causeway` is on PATH (kubeconfigs stay
 * portable across upgrades and reinstalls); else the running script itself when it is executable (the
 * bin shim); else the Node binary with the script as first argument (running the sources directly).
 */
export function resolveCausewayCommand(o: { pathEnv: string | undefined; script: string | undefined; execPath: string; isExecutable: (file: string) => boolean }): { command: string; args: string[] } {
  for (const dir of (o.pathEnv ?? '').split(path.delimiter)) {
    if (dir === '' || !path.isAbsolute(dir)) continue; // a relative PATH entry depends on kubectl's working directory
    if (o.isExecutable(path.join(dir, 'causeway'))) return { command: 'causeway', args: [] };
  }
  if (o.script !== undefined && o.script !== '') {
    const script = path.resolve(o.script);
    if (o.isExecutable(script)) return { command: script, args: [] };
    return { command: o.execPath, args: [script] };
  }
  return { command: 'causeway', args: [] };
}

/** The kubeconfig entries (clusters, users, contexts) of these services as a YAML document, for `--print`. */
export function renderKubeconfigEntries(entries: KubeconfigEntryInput[], target: Pick<KubeconfigTarget, 'causewayCommand' | 'causewayArgs'>): string {
  const built = buildEntries(entries, target, new Set());
  const config: Record<string, unknown> = { apiVersion: 'v1', kind: 'Config', clusters: built.clusters, users: built.users, contexts: built.contexts };
  if (built.contexts.length > 0) config['current-context'] = built.contextNames[0];
  return stringify(config, { lineWidth: 0 });
}

/** Merges (or, in overwrite mode, regenerates) the entries into the target file; see the module comment. */
export async function writeKubeconfigEntries(target: KubeconfigTarget, entries: KubeconfigEntryInput[], io: KubeconfigIo = {}): Promise<KubeconfigWriteResult> {
  const file = await resolveTarget(target.file);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  return withLock(file, io.lockTimeoutMs ?? 10_000, async () => {
    const previous = await readExisting(file);
    const parsed = previous === undefined ? undefined : parseKubeconfig(previous, file);
    const overwrite = target.overwrite || (parsed !== undefined && overwriteRequested(parsed));
    const existingUsers = parsed === undefined ? new Set<string>() : namesIn(parsed, 'users');
    const built = buildEntries(entries, target, existingUsers);
    const next = overwrite || parsed === undefined || previous === undefined ? regenerate(parsed, built) : merge(previous, parsed, built, file);
    // What we write must read back as a kubeconfig holding our entries; anything else is our bug, not the user's file.
    verifyWritten(next, built, file);
    let backup: string | undefined;
    if (previous !== undefined) {
      backup = `${file}${BACKUP_SUFFIX}`;
      await atomicWrite(backup, previous, io);
    }
    await atomicWrite(file, next, io);
    return { file, ...(backup === undefined ? {} : { backup }), contexts: built.contextNames, overwritten: overwrite, skipped: built.skipped };
  });
}

/** Whether the kubeconfig text asks for overwrite mode (preferences.extensions[name=causeway].extension.overwrite). */
export function overwriteRequested(doc: Document.Parsed): boolean {
  const extensions = doc.getIn(['preferences', 'extensions']);
  if (!isSeq(extensions)) return false;
  for (const item of extensions.items) {
    if (!isMap(item) || item.get('name') !== 'causeway') continue;
    const extension = item.get('extension');
    if (isMap(extension) && extension.get('overwrite') === true) return true;
  }
  return false;
}

// --- building entries -----------------------------------------------------------------------------

interface Built {
  skipped: SkippedEntry[];
  clusters: Array<Record<string, unknown>>;
  users: Array<Record<string, unknown>>;
  contexts: Array<Record<string, unknown>>;
  contextNames: string[];
}

function buildEntries(entries: KubeconfigEntryInput[], target: Pick<KubeconfigTarget, 'causewayCommand' | 'causewayArgs'>, existingUsers: Set<string>): Built {
  const built: Built = { skipped: [], clusters: [], users: [], contexts: [], contextNames: [] };
  const seen = new Map<string, string>();
  for (const { entry, listenPort } of entries) {
    const k = entry.kubernetes;
    if (entry.type !== 'kubernetes' || k === null) continue;
    const name = k.clusterName;
    const other = seen.get(name);
    if (other !== undefined) {
      // A kubeconfig holds one cluster per name: the first entry given wins (the agent puts the service
      // being connected first), the others are reported.
      built.skipped.push({ service: entry.name, clusterName: name, because: `service "${other}" uses the same Kubernetes cluster name` });
      continue;
    }
    seen.set(name, entry.name);
    if (!Number.isInteger(listenPort) || listenPort < 1 || listenPort > 65535) throw new UserError('BAD_PORT', `Port ${listenPort} for service "${entry.name}" is not a port.`);
    built.clusters.push({
      name,
      cluster: {
        server: entry.port === 443 ? `https://${entry.domain}` : `https://${entry.domain}:${entry.port}`,
        'certificate-authority-data': Buffer.from(k.caPublicKey, 'utf8').toString('base64'),
        'proxy-url': `http://localhost:${listenPort}`,
      },
    });
    let user: string;
    if (k.authentication === 'oidc') {
      user = `causeway-${name}`;
      built.users.push({
        name: user,
        user: {
          exec: {
            apiVersion: EXEC_API_VERSION,
            command: target.causewayCommand,
            args: [...(target.causewayArgs ?? []), 'kube-credential', '--cluster', name],
            interactiveMode: 'Never',
            provideClusterInfo: false,
          },
        },
      });
    } else {
      user = name;
      // The cluster keeps its own authentication: never touch an existing user of that name.
      if (!existingUsers.has(name)) built.users.push({ name, user: {} });
    }
    built.contexts.push({ name, context: { cluster: name, user } });
    built.contextNames.push(name);
  }
  return built;
}

// --- reading --------------------------------------------------------------------------------------

async function resolveTarget(file: string): Promise<string> {
  try {
    return await fs.realpath(file);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return path.resolve(file);
    throw new UserError('KUBECONFIG_UNREADABLE', `Cannot open the kubeconfig ${file}: ${errorMessage(err)}.`, { cause: err });
  }
}

async function readExisting(file: string): Promise<string | undefined> {
  try {
    const text = await fs.readFile(file, 'utf8');
    return text.trim() === '' ? undefined : text;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw new UserError('KUBECONFIG_UNREADABLE', `Cannot read the kubeconfig ${file}: ${errorMessage(err)}. Nothing was written.`, { cause: err });
  }
}

/** Parses a kubeconfig; a YAML error, or a shape kubectl would not read, is a UserError naming file and line. */
export function parseKubeconfig(text: string, file: string): Document.Parsed {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const error = doc.errors[0];
  if (error !== undefined) {
    const line = error.linePos?.[0].line ?? text.slice(0, error.pos[0]).split('\n').length;
    throw malformed(file, line, error.message.split('\n')[0] ?? 'not valid YAML');
  }
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) return doc;
  if (!isMap(root)) throw malformed(file, lineOf(text, root), 'the top level is not a mapping');
  for (const section of SECTIONS) {
    const value = root.get(section, true);
    if (value === undefined || (isScalar(value) && value.value === null)) continue;
    if (!isSeq(value)) throw malformed(file, lineOf(text, value), `${section} is not a list`);
    for (const item of value.items) {
      if (!isMap(item) || typeof item.get('name') !== 'string') throw malformed(file, lineOf(text, item as YamlNode), `an entry of ${section} has no name`);
    }
  }
  return doc;
}

function malformed(file: string, line: number | undefined, what: string): UserError {
  return new UserError(
    'KUBECONFIG_INVALID',
    `The kubeconfig ${file}${line === undefined ? '' : ` (line ${line})`} is malformed: ${what.slice(0, 200)}. Fix it (or move it away) and retry; it was left untouched.`,
  );
}

function lineOf(text: string, node: YamlNode | null | undefined): number | undefined {
  const start = node?.range?.[0];
  if (start === undefined) return undefined;
  return text.slice(0, start).split('\n').length;
}

function namesIn(doc: Document.Parsed, section: Section): Set<string> {
  const seq = doc.get(section, true);
  const names = new Set<string>();
  if (!isSeq(seq)) return names;
  for (const item of seq.items) if (isMap(item) && typeof item.get('name') === 'string') names.add(item.get('name') as string);
  return names;
}

// --- regenerate -----------------------------------------------------------------------------------

function regenerate(parsed: Document.Parsed | undefined, built: Built): string {
  const config: Record<string, unknown> = { apiVersion: 'v1', kind: 'Config' };
  const preferences = parsed?.get('preferences');
  config.preferences = isMap(preferences) ? (preferences.toJSON() as unknown) : {};
  config.clusters = built.clusters;
  config.users = built.users;
  config.contexts = built.contexts;
  const current = parsed?.get('current-context');
  config['current-context'] = typeof current === 'string' && built.contextNames.includes(current) ? current : (built.contextNames[0] ?? '');
  return stringify(config, { lineWidth: 0 });
}

// --- merge ----------------------------------------------------------------------------------------

interface Edit {
  start: number;
  end: number;
  text: string;
}

/**
 * Splices our entries into the original text: an entry of ours replaces the lines of the entry of the
 * same name, a new one goes after the section's last entry, a missing section is appended. Only those
 * ranges change. A flow-style section (`clusters: [...]`, hand-written) falls back to re-serialising the
 * document with the yaml Document API, which keeps the data and comments but may reformat.
 */
function merge(text: string, doc: Document.Parsed, built: Built, file: string): string {
  const root = doc.contents;
  if (!isMap(root)) return regenerate(doc, built);
  const edits: Edit[] = [];
  const appended: string[] = [];
  for (const section of SECTIONS) {
    const items = built[section];
    if (items.length === 0) continue;
    const pair = root.items.find((p) => isScalar(p.key) && p.key.value === section);
    const value = pair?.value;
    if (pair === undefined) {
      appended.push(`${section}:\n${blockItems(items, '')}`);
      continue;
    }
    if (value === null || value === undefined || (isScalar(value) && value.value === null) || (isSeq(value) && value.items.length === 0)) {
      // `clusters:`, `clusters: null` or `clusters: []`: the value becomes our block list.
      const keyEnd = (pair.key as YamlNode).range?.[1];
      const valueRange = isScalar(value) || isSeq(value) ? value.range : undefined;
      if (keyEnd === undefined) return structuredMerge(doc, built);
      const colon = text.indexOf(':', keyEnd);
      const end = valueRange === undefined ? colon + 1 : Math.max(valueRange[1], colon + 1);
      edits.push({ start: colon + 1, end, text: `\n${blockItems(items, '').replace(/\n$/, '')}` });
      continue;
    }
    if (!isSeq(value) || value.flow === true || value.range === undefined || value.range === null) return structuredMerge(doc, built);
    const indent = seqIndent(text, value);
    if (indent === undefined) return structuredMerge(doc, built);
    const pending = [...items];
    for (const item of value.items) {
      if (!isMap(item)) continue;
      const name = item.get('name');
      const index = pending.findIndex((p) => p.name === name);
      if (index === -1) continue;
      const range = item.range;
      if (range === undefined || range === null) return structuredMerge(doc, built);
      const start = lineStart(text, range[0]);
      const end = lineEndAfter(text, range[1]);
      edits.push({ start, end, text: blockItems([pending[index]], indent) });
      pending.splice(index, 1);
    }
    if (pending.length > 0) {
      const at = lineEndAfter(text, value.range[1]);
      const before = at > 0 && text[at - 1] !== '\n' ? '\n' : '';
      edits.push({ start: at, end: at, text: before + blockItems(pending, indent) });
    }
  }
  const current: unknown = doc.get('current-context');
  let tail = appended.join('');
  if ((current === undefined || current === null || current === '') && built.contextNames.length > 0) {
    const pair = root.items.find((p) => isScalar(p.key) && p.key.value === 'current-context');
    const line = `current-context: ${stringify(built.contextNames[0]).trim()}\n`;
    if (pair === undefined) tail += line;
    else {
      const keyRange = (pair.key as YamlNode).range;
      if (keyRange === undefined || keyRange === null) return structuredMerge(doc, built);
      edits.push({ start: lineStart(text, keyRange[0]), end: lineEndAfter(text, keyRange[1]), text: line });
    }
  }
  let out = text;
  for (const edit of edits.sort((a, b) => b.start - a.start)) out = out.slice(0, edit.start) + edit.text + out.slice(edit.end);
  if (tail !== '') out = (out.endsWith('\n') ? out : `${out}\n`) + tail;
  void file;
  return out;
}

/** The fallback merge through the Document API (data and comments kept; formatting may change). */
function structuredMerge(doc: Document.Parsed, built: Built): string {
  const copy = doc.clone();
  for (const section of SECTIONS) {
    let seq = copy.get(section, true) as YAMLSeq | undefined;
    if (!isSeq(seq)) {
      seq = copy.createNode([]);
      copy.set(section, seq);
    }
    for (const item of built[section]) {
      const index = seq.items.findIndex((i) => isMap(i) && (i).get('name') === item.name);
      const node = copy.createNode(item);
      if (index === -1) seq.items.push(node);
      else seq.items[index] = node;
    }
  }
  const current = copy.get('current-context');
  if ((current === undefined || current === null || current === '') && built.contextNames.length > 0) copy.set('current-context', built.contextNames[0]);
  return copy.toString({ lineWidth: 0 });
}

/** The text before a block sequence's `-` (spaces), from its first item's line. */
function seqIndent(text: string, seq: YAMLSeq): string | undefined {
  const first = seq.items[0] as YamlNode | undefined;
  const start = first?.range?.[0];
  if (start === undefined) return undefined;
  const lineText = text.slice(lineStart(text, start), start);
  const match = /^( *)- +$/.exec(lineText);
  return match?.[1];
}

function blockItems(items: Array<Record<string, unknown>>, indent: string): string {
  const rendered = stringify(items, { lineWidth: 0, indentSeq: false });
  return rendered
    .split('\n')
    .map((line) => (line === '' ? line : indent + line))
    .join('\n');
}

function lineStart(text: string, at: number): number {
  return text.lastIndexOf('\n', at - 1) + 1;
}

/** The position after the newline that ends the line holding `at - 1` (the end of a node's last line). */
function lineEndAfter(text: string, at: number): number {
  if (at > 0 && text[at - 1] === '\n') return at;
  const nl = text.indexOf('\n', at);
  return nl === -1 ? text.length : nl + 1;
}

function verifyWritten(next: string, built: Built, file: string): void {
  const doc = parseKubeconfig(next, file);
  for (const section of SECTIONS) {
    const names = namesIn(doc, section);
    for (const item of built[section]) {
      if (!names.has(item.name as string)) throw new Error(`kubeconfig merge lost ${section} entry ${String(item.name)} (a bug)`);
    }
  }
}

// --- writing --------------------------------------------------------------------------------------

async function atomicWrite(file: string, text: string, io: KubeconfigIo): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    try {
      await handle.writeFile(text, 'utf8');
      await handle.chmod(0o600);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await io.beforeRename?.(tmp);
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw new UserError('KUBECONFIG_WRITE_FAILED', `Cannot write the kubeconfig ${file}: ${errorMessage(err)}. The previous file is unchanged.`, { cause: err });
  }
}

async function withLock<T>(file: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const lock = `${file}${LOCK_SUFFIX}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await fs.open(lock, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw new UserError('KUBECONFIG_WRITE_FAILED', `Cannot lock the kubeconfig ${file}: ${errorMessage(err)}.`, { cause: err });
      const st = await fs.stat(lock).catch(() => undefined);
      if (st !== undefined && Date.now() - st.mtimeMs > STALE_LOCK_MS) {
        await fs.rm(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new UserError('KUBECONFIG_LOCKED', `Another causeway process is writing the kubeconfig ${file} (lock ${lock}). Retry; if none runs, remove the lock file.`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lock, { force: true });
  }
}
