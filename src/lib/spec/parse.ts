/**
 * Reading and writing multi-document spec YAML (what `causeway apply -f` takes and `causeway get -o
 * yaml` prints). Parsing collects every problem in every document (YAML syntax, unknown kinds and
 * fields, bad values, duplicates) and returns objects only when there are none, so nothing partially
 * valid is ever applied.
 */
import { LineCounter, parseAllDocuments, stringify } from 'yaml';
import type { z } from 'zod';
import { envelopeSchema, isSpecKind, SPEC_KINDS, specSchemas } from './schemas.ts';
import type { SpecObject } from './schemas.ts';

export interface SpecProblem {
  /**
   * 1-based position among the non-empty documents of the input, which is also the 1-based index in
   * the object list (for validateReferences); empty documents (`---` with nothing) are not counted.
   */
  document: number;
  kind?: string;
  name?: string;
  /** The field, such as `spec.backend.dnsOverride` or `spec.access[0].roles[1]`; empty for the whole document. */
  path: string;
  message: string;
  /** Where the YAML came from (a file name), when the caller said. */
  source?: string;
}

export type ParseSpecResult = { ok: true; objects: SpecObject[] } | { ok: false; problems: SpecProblem[] };

/** Aliases expanded beyond this count are refused (a "billion laughs" document). */
const MAX_ALIAS_COUNT = 100;

export function parseSpecDocuments(yamlText: string, source?: string): ParseSpecResult {
  const problems: SpecProblem[] = [];
  const objects: SpecObject[] = [];
  const seen = new Map<string, number>();
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(yamlText, { lineCounter, prettyErrors: false, uniqueKeys: true });
  let number = 0;
  for (const doc of documents) {
    const syntax = [...doc.errors, ...doc.warnings];
    let value: unknown;
    if (syntax.length === 0) {
      try {
        value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
      } catch (err) {
        number++;
        problems.push(withSource({ document: number, path: '', message: `the YAML cannot be read: ${err instanceof Error ? err.message : String(err)}` }, source));
        continue;
      }
      if (value === null || value === undefined) continue; // an empty document
    }
    number++;
    if (syntax.length > 0) {
      for (const error of syntax) {
        const { line, col } = lineCounter.linePos(error.pos[0]);
        problems.push(withSource({ document: number, path: '', message: `line ${line}, column ${col}: ${firstLine(error.message)}` }, source));
      }
      continue;
    }
    const before = problems.length;
    const { object, kind, name } = checkDocument(value, number, problems, source);
    // Duplicates are found among invalid documents too, so one pass reports everything.
    if (kind !== undefined && name !== undefined) {
      const key = `${kind}/${name}`;
      const first = seen.get(key);
      if (first === undefined) seen.set(key, number);
      else problems.push(withSource({ document: number, kind, name, path: 'metadata.name', message: `another ${kind} named "${name}" is in document ${first}` }, source));
    }
    if (object !== undefined && problems.length === before) objects.push(object);
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, objects };
}

/** One line per problem: `document 2 (Service prod-k8s): spec.port: must be between 1 and 65535`. */
export function formatProblems(problems: SpecProblem[]): string {
  return problems
    .map((p) => {
      const label = p.kind !== undefined && p.name !== undefined ? ` (${p.kind} ${p.name})` : p.kind !== undefined ? ` (${p.kind})` : '';
      const where = p.path === '' ? '' : `${p.path}: `;
      return oneLine(`${p.source === undefined ? '' : `${p.source}: `}document ${p.document}${label}: ${where}${p.message}`);
    })
    .join('\n');
}

/** Multi-document YAML that parseSpecDocuments reads back to the same objects. */
export function stringifySpecs(objects: SpecObject[]): string {
  return objects.map((object) => stringify(object, { lineWidth: 0 })).join('---\n');
}

// ---------------------------------------------------------------------------------------------

interface Checked {
  object?: SpecObject;
  /** The kind and name as written (printable), for labels and duplicate detection. */
  kind?: string;
  name?: string;
}

function checkDocument(value: unknown, document: number, problems: SpecProblem[], source: string | undefined): Checked {
  const record = value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  if (record === undefined) {
    problems.push(withSource({ document, path: '', message: 'must be a mapping with apiVersion, kind, metadata and spec' }, source));
    return {};
  }
  const kind = typeof record.kind === 'string' ? record.kind : undefined;
  const metadata = record.metadata;
  const rawName = metadata !== null && typeof metadata === 'object' && 'name' in metadata && typeof metadata.name === 'string' ? metadata.name : undefined;
  const label = { document, ...(kind === undefined ? {} : { kind: printable(kind) }), ...(rawName === undefined ? {} : { name: printable(rawName) }) };

  if (!isSpecKind(kind)) {
    const message = kind === undefined ? `is required: one of ${SPEC_KINDS.join(', ')}` : `unknown kind ${JSON.stringify(printable(kind))}; expected one of ${SPEC_KINDS.join(', ')}`;
    problems.push(withSource({ ...label, path: 'kind', message }, source));
    const envelope = envelopeSchema.safeParse(record, { error: friendlyMessage });
    if (!envelope.success) pushIssues(envelope.error.issues, label, problems, source);
    return label;
  }
  const parsed = specSchemas[kind].safeParse(record, { error: friendlyMessage });
  if (!parsed.success) {
    pushIssues(parsed.error.issues, label, problems, source);
    return label;
  }
  return { ...label, object: parsed.data };
}

function pushIssues(issues: z.core.$ZodIssue[], label: { document: number; kind?: string; name?: string }, problems: SpecProblem[], source: string | undefined): void {
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) problems.push(withSource({ ...label, path: formatPath([...issue.path, key]), message: 'unknown field' }, source));
    } else {
      problems.push(withSource({ ...label, path: formatPath(issue.path), message: issue.message }, source));
    }
  }
}

/** Messages for issues the schemas do not word themselves. */
function friendlyMessage(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? 'is required' : `must be ${article(issue.expected)} (found ${describeValue(issue.input)})`;
    case 'invalid_value':
      return issue.values.length === 1 ? `must be ${JSON.stringify(issue.values[0])}` : `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return undefined;
  }
}

function article(expected: string): string {
  switch (expected) {
    case 'object':
      return 'a mapping';
    case 'array':
      return 'a list';
    case 'int':
      return 'a whole number';
    default:
      return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
  }
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${printable(JSON.stringify(value) ?? typeof value)}`;
}

function formatPath(path: PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return printable(out);
}

function withSource(problem: SpecProblem, source: string | undefined): SpecProblem {
  return source === undefined ? problem : { ...problem, source };
}

function firstLine(message: string): string {
  const cut = message.indexOf('\n');
  return (cut === -1 ? message : message.slice(0, cut)).replace(/ at line \d+, column \d+:?$/, '');
}

/** User text in messages stays on one line and short. */
function printable(text: string): string {
  const shown = text.length > 120 ? `${text.slice(0, 120)}…` : text;
  // eslint-disable-next-line no-control-regex
  return shown.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ');
}
