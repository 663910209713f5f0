/**
 * `causeway apply -f FILE|-`, `causeway get KIND [NAME]`, `causeway delete KIND NAME`: spec objects
 * through the API. Validation is the server's: apply sends the file as it is (YAML, or the JSON that
 * `get -o json` prints) and prints every problem the server found, with its document and field path.
 */
import type { Command } from 'commander';
import { UserError } from '../lib/errors.ts';
import { formatProblems, SPEC_KINDS } from '../lib/spec/index.ts';
import type { SpecKind, SpecProblem } from '../lib/spec/index.ts';
import { ApiCallError, ApiClient } from './client.ts';
import type { AdminIo, ConnectionFlags } from './client.ts';
import { cell, parseOutputFormat, printable, shortTime, table, toJson, toYamlDocuments } from './output.ts';
import type { OutputFormat } from './output.ts';

export interface Document {
  apiVersion: string;
  kind: string;
  metadata: { name: string; version?: number; updatedAt?: string; description?: string } & Record<string, unknown>;
  spec: Record<string, unknown>;
}

interface ApplyResult {
  kind: string;
  name: string;
  result: 'created' | 'changed' | 'unchanged';
  version: number;
}

export interface Problem {
  document?: number;
  kind?: string;
  name?: string;
  path: string;
  message: string;
}

/** `service`, `Service` or `services` (`policies`): the kind as the API names it. */
export function kindArgument(text: string): SpecKind {
  const lower = text.toLowerCase();
  const kind = SPEC_KINDS.find((k) => k.toLowerCase() === lower || plural(k.toLowerCase()) === lower);
  if (kind === undefined) throw new UserError('UNKNOWN_KIND', `Unknown kind "${printable(text.slice(0, 64))}": use one of ${SPEC_KINDS.map((k) => k.toLowerCase()).join(', ')}.`);
  return kind;
}

function plural(word: string): string {
  return word.endsWith('y') ? `${word.slice(0, -1)}ies` : `${word}s`;
}

/** Lines for problems the API reported: `FILE: document 2 (Service x): spec.port: …`. */
export function problemLines(problems: Problem[], source: string): string[] {
  return problems.map((p) => {
    if (p.document === undefined) return printable(`${source}: stored ${p.kind ?? 'object'} ${p.name ?? ''}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`);
    const problem: SpecProblem = { document: p.document, path: p.path, message: p.message, source, ...(p.kind === undefined ? {} : { kind: p.kind }), ...(p.name === undefined ? {} : { name: p.name }) };
    return formatProblems([problem]);
  });
}

/** The file's documents as the API takes them: JSON (a document, a list, or `{items}`) as documents, anything else as YAML text. */
export function applyBody(text: string): { json?: unknown; yaml?: string } {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      const value: unknown = JSON.parse(text);
      if (Array.isArray(value)) return { json: { documents: value } };
      if (value !== null && typeof value === 'object' && Array.isArray((value as { items?: unknown }).items)) return { json: { documents: (value as { items: unknown[] }).items } };
      return { json: { documents: [value] } };
    } catch {
      // Not JSON after all (YAML flow style): the server reads it as YAML.
    }
  }
  return { yaml: text };
}

const KIND_COLUMNS: Readonly<Record<SpecKind, { headers: string[]; values: (spec: Record<string, unknown>) => unknown[] }>> = {
  Role: { headers: ['GROUPS', 'EMAILS'], values: (s) => [(s.users as { groups?: unknown })?.groups, (s.users as { emails?: unknown })?.emails] },
  Policy: { headers: ['RULES'], values: (s) => [Array.isArray(s.access) ? (s.access as Array<{ roles: string[]; trustLevel: string }>).map((r) => `${r.roles.join('+')}@${r.trustLevel}`) : '-'] },
  AccessTier: { headers: ['CLUSTER', 'ADDRESS'], values: (s) => [s.cluster, s.address] },
  Connector: { headers: ['CLUSTER', 'CIDRS', 'DOMAINS'], values: (s) => [s.cluster, s.allowedCidrs, s.allowedDomains] },
  Service: {
    headers: ['TYPE', 'DOMAIN', 'PORT', 'ACCESS-TIER', 'POLICY'],
    values: (s) => [s.type, s.domain, s.port, s.accessTier, s.policy === undefined ? '-' : `${(s.policy as { name: string }).name} (${(s.policy as { mode: string }).mode})`],
  },
  AdminBinding: {
    headers: ['ROLE', 'USERS', 'GROUPS', 'KINDS'],
    values: (s) => [s.role, s.users, s.groups, Array.isArray(s.kinds) && s.kinds.length > 0 ? s.kinds : 'all'],
  },
  IdentityProvider: { headers: ['DISPLAY-NAME', 'ISSUER', 'CLIENT-ID'], values: (s) => [s.displayName ?? '-', s.issuer, s.clientId] },
  TrustProfile: { headers: ['STALE-AFTER', 'FACTORS'], values: (s) => [s.staleAfter, Array.isArray(s.factors) ? s.factors.length : 0] },
  DeviceManager: { headers: ['TYPE', 'SYNC-INTERVAL'], values: (s) => [s.type, s.syncInterval] },
};

export function objectTable(kind: SpecKind | undefined, documents: Document[]): string[] {
  if (kind === undefined) {
    return table(['KIND', 'NAME', 'VERSION', 'UPDATED'], documents.map((d) => [d.kind.toLowerCase(), d.metadata.name, d.metadata.version, shortTime(d.metadata.updatedAt)]));
  }
  const columns = KIND_COLUMNS[kind];
  return table(['NAME', 'VERSION', 'UPDATED', ...columns.headers], documents.map((d) => [d.metadata.name, d.metadata.version, shortTime(d.metadata.updatedAt), ...columns.values(d.spec)]));
}

export function registerObjectCommands(program: Command, io: AdminIo, connection: (command: Command) => Command): void {
  connection(
    program
      .command('apply')
      .description('Create or update spec objects from a file: all of them, or none when anything is invalid')
      .requiredOption('-f, --filename <file>', 'multi-document YAML (or JSON); - reads standard input'),
  ).action(async (flags: ConnectionFlags & { filename: string }) => {
    const client = await ApiClient.connect(flags, io);
    const source = flags.filename === '-' ? 'stdin' : flags.filename;
    let text: string;
    try {
      text = flags.filename === '-' ? await io.readStdin() : await io.readFile(flags.filename);
    } catch (err) {
      throw new UserError('FILE_UNREADABLE', `Cannot read ${flags.filename}: ${err instanceof Error ? err.message : String(err)}.`, { cause: err });
    }
    let results: ApplyResult[];
    try {
      ({ results } = await client.call<{ results: ApplyResult[] }>('POST', '/api/v1/apply', applyBody(text)));
    } catch (err) {
      if (err instanceof ApiCallError && err.code === 'SPEC_INVALID') {
        const problems = (err.details?.problems ?? []) as Problem[];
        for (const line of problemLines(problems, source)) io.err(line);
        throw new UserError('SPEC_INVALID', `${source} has ${problems.length === 1 ? '1 problem' : `${problems.length} problems`} (above); nothing was applied. Fix them and apply again.`);
      }
      if (err instanceof ApiCallError && err.code === 'VERSION_CONFLICT') {
        throw new UserError('VERSION_CONFLICT', `${err.message}. Nothing was applied. The file names a version (metadata.version) someone has since changed: get the object again, redo your edit, and apply; or remove metadata.version to overwrite.`);
      }
      throw err;
    }
    for (const r of results) io.out(`${r.kind.toLowerCase()}/${printable(r.name)} ${r.result}`);
  });

  connection(
    program
      .command('get')
      .description(`Show spec objects. KIND is one of ${SPEC_KINDS.map((k) => k.toLowerCase()).join(', ')} (or "all")`)
      .argument('<kind>', 'the kind of object')
      .argument('[name]', 'one object by name')
      .option('-o, --output <format>', 'table, json or yaml (yaml applies back with causeway apply -f)', parseOutputFormat, 'table' as OutputFormat),
  ).action(async (kindText: string, name: string | undefined, flags: ConnectionFlags & { output: OutputFormat }) => {
    const all = kindText.toLowerCase() === 'all';
    if (all && name !== undefined) throw new UserError('BAD_ARGUMENT', 'Give a kind with a name: causeway get KIND NAME.');
    const kind = all ? undefined : kindArgument(kindText);
    const client = await ApiClient.connect(flags, io);
    let documents: Document[];
    if (name !== undefined) {
      documents = [await client.call<Document>('GET', `/api/v1/objects/${kind}/${encodeURIComponent(name)}`)];
    } else {
      documents = (await client.call<{ items: Document[] }>('GET', `/api/v1/objects${kind === undefined ? '' : `?kind=${kind}`}`)).items;
    }
    if (flags.output === 'json') io.out(toJson(name !== undefined ? documents[0] : documents));
    else if (flags.output === 'yaml') {
      if (documents.length > 0) io.out(toYamlDocuments(documents));
    } else if (documents.length === 0) io.err(`No ${kind === undefined ? 'objects' : `${kind} objects`}.`);
    else for (const line of objectTable(kind, documents)) io.out(line);
  });

  connection(
    program
      .command('delete')
      .description('Delete a spec object (refused while other objects name it)')
      .argument('<kind>', 'the kind of object')
      .argument('<name>', 'its name'),
  ).action(async (kindText: string, name: string, flags: ConnectionFlags) => {
    const kind = kindArgument(kindText);
    const client = await ApiClient.connect(flags, io);
    try {
      await client.call('DELETE', `/api/v1/objects/${kind}/${encodeURIComponent(name)}`);
    } catch (err) {
      if (err instanceof ApiCallError && err.code === 'OBJECT_IN_USE') {
        const referrers = (err.details?.referrers ?? []) as Problem[];
        for (const r of referrers) io.err(`  ${cell(r.kind).toLowerCase()}/${cell(r.name)} ${cell(r.path)}`);
      }
      throw err;
    }
    io.out(`${kind.toLowerCase()}/${printable(name)} deleted`);
  });
}
