/**
 * Spec documents over the API: reading them from a request (JSON values or YAML text), validating
 * them against the whole state they would produce, and turning stored objects back into documents.
 *
 * A document read back carries the server's bookkeeping in `metadata` (version, createdAt, createdBy,
 * updatedAt, updatedBy). Those fields are accepted and dropped on the way in, except `version`, which
 * becomes the write's expected version: a document read, edited and applied again fails with 409 when
 * someone changed the object in between (CP-14), and applies as `unchanged` when nobody did.
 */
import { parseAllDocuments } from 'yaml';
import { isSpecKind, parseSpecDocuments, SPEC_KINDS, specSchemas, validateReferences, API_VERSION } from '../../lib/spec/index.ts';
import type { SpecKind, SpecObject, SpecProblem } from '../../lib/spec/index.ts';
import type { ApplyItem, StoredObject } from '../store/index.ts';

/** A problem as the API reports it; `document` is left out for a problem with a stored object. */
export interface ApiProblem {
  document?: number;
  kind?: string;
  name?: string;
  path: string;
  message: string;
}

/** A spec document as the API returns it. */
export interface ApiDocument {
  apiVersion: string;
  kind: string;
  metadata: Record<string, unknown> & { name: string; version: number };
  spec: unknown;
}

export const SERVER_METADATA_FIELDS = ['version', 'createdAt', 'createdBy', 'updatedAt', 'updatedBy'] as const;

/** Deeper than this is refused before anything recursive looks at it (CP-13). */
export const MAX_DOCUMENT_DEPTH = 64;
export const MAX_DOCUMENTS = 1000;

/**
 * Each document checked on its own: `objects[i]` is document i+1 when it passed its schema, else
 * undefined and its problems are in `problems`. `versions[i]` is its metadata.version, if any.
 */
export interface PreparedDocuments {
  objects: Array<SpecObject | undefined>;
  versions: Array<number | undefined>;
  problems: ApiProblem[];
  /** `Kind/name` of documents that failed their schema, so reference checks do not call them missing. */
  invalid: Set<string>;
}

/** Kinds as people type them: `service`, `Service`, `services` → `Service`; `policies` → `Policy`. */
export function normalizeKind(text: string): SpecKind | undefined {
  const lower = text.toLowerCase();
  return SPEC_KINDS.find((kind) => {
    const singular = kind.toLowerCase();
    return singular === lower || (singular.endsWith('y') ? `${singular.slice(0, -1)}ies` : `${singular}s`) === lower;
  });
}

/** Multi-document YAML text → documents. Syntax problems come back as parseSpecDocuments words them. */
export function documentsFromYaml(text: string): { ok: true; values: unknown[] } | { ok: false; problems: ApiProblem[] } {
  const documents = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: false });
  const values: unknown[] = [];
  for (const doc of documents) {
    if (doc.errors.length > 0 || doc.warnings.length > 0) return { ok: false, problems: problemsOf(text) };
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch {
      return { ok: false, problems: problemsOf(text) };
    }
    if (value === null || value === undefined) continue;
    values.push(value);
  }
  return { ok: true, values };
}

function problemsOf(text: string): ApiProblem[] {
  const parsed = parseSpecDocuments(text);
  return parsed.ok ? [{ path: '', message: 'the YAML cannot be read' }] : parsed.problems.map(toApiProblem);
}

/**
 * Checks each document on its own (schema, unknown fields, values) and all of them for duplicates,
 * taking the server's metadata fields off. Documents are numbered from 1 in the order given.
 */
export function prepareDocuments(values: unknown[]): PreparedDocuments {
  const problems: ApiProblem[] = [];
  const objects: Array<SpecObject | undefined> = [];
  const versions: Array<number | undefined> = [];
  const invalid = new Set<string>();
  const seen = new Map<string, number>();
  if (values.length > MAX_DOCUMENTS) {
    return { objects: [], versions: [], invalid, problems: [{ path: '', message: `at most ${MAX_DOCUMENTS} documents per request` }] };
  }
  values.forEach((value, index) => {
    const document = index + 1;
    const label = labelOf(value);
    const before = problems.length;
    let object: SpecObject | undefined;
    let version: number | undefined;
    if (exceedsDepth(value, MAX_DOCUMENT_DEPTH)) {
      problems.push({ document, ...label, path: '', message: `is nested deeper than ${MAX_DOCUMENT_DEPTH} levels` });
    } else {
      const stripped = stripServerMetadata(value);
      if (stripped.problem !== undefined) problems.push({ document, ...label, path: 'metadata.version', message: stripped.problem });
      version = stripped.version;
      // JSON is YAML: each document goes through the one parser that knows the schemas.
      const parsed = parseSpecDocuments(JSON.stringify(stripped.stripped));
      if (parsed.ok) object = parsed.objects[0];
      else problems.push(...parsed.problems.map((p) => ({ ...toApiProblem(p), document })));
    }
    if (label.kind !== undefined && label.name !== undefined) {
      const key = `${label.kind}/${label.name}`;
      const first = seen.get(key);
      if (first === undefined) seen.set(key, document);
      else problems.push({ document, ...label, path: 'metadata.name', message: `another ${label.kind} named "${label.name}" is in document ${first}` });
    }
    const ok = problems.length === before && object !== undefined;
    objects.push(ok ? object : undefined);
    versions.push(version);
    if (!ok && label.kind !== undefined && label.name !== undefined) invalid.add(`${normalizeKind(label.kind) ?? label.kind}/${label.name}`);
  });
  return { objects, versions, problems, invalid };
}

function labelOf(value: unknown): { kind?: string; name?: string } {
  if (!isRecord(value)) return {};
  const kind = typeof value.kind === 'string' ? value.kind.slice(0, 64) : undefined;
  const name = isRecord(value.metadata) && typeof value.metadata.name === 'string' ? value.metadata.name.slice(0, 64) : undefined;
  return { ...(kind === undefined ? {} : { kind }), ...(name === undefined ? {} : { name }) };
}

function stripServerMetadata(value: unknown): { stripped: unknown; version?: number; problem?: string } {
  if (!isRecord(value) || !isRecord(value.metadata)) return { stripped: value };
  const metadata: Record<string, unknown> = { ...value.metadata };
  const version = metadata.version;
  for (const field of SERVER_METADATA_FIELDS) delete metadata[field];
  const stripped = { ...value, metadata };
  if (version === undefined || version === null) return { stripped };
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) return { stripped, problem: 'must be a whole number: the version the object had when you read it' };
  return { stripped, version };
}

function toApiProblem(problem: SpecProblem): ApiProblem {
  const { document, kind, name, path, message } = problem;
  return { document, ...(kind === undefined ? {} : { kind }), ...(name === undefined ? {} : { name }), path, message };
}


/** Iterative, so a hostile depth cannot overflow the stack while it is measured. */
export function exceedsDepth(value: unknown, max: number): boolean {
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 1 }];
  while (stack.length > 0) {
    const item = stack.pop();
    if (item === undefined || item.value === null || typeof item.value !== 'object') continue;
    if (item.depth > max) return true;
    for (const child of Object.values(item.value as Record<string, unknown>)) {
      if (child !== null && typeof child === 'object') stack.push({ value: child, depth: item.depth + 1 });
    }
  }
  return false;
}

/** The deepest `[`/`{` nesting of JSON text, counted without parsing it; stops counting past `limit`. */
export function jsonNestingExceeds(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth > limit) return true;
    } else if ((c === 0x5d || c === 0x7d) && depth > 0) depth--;
  }
  return false;
}

/**
 * The same count for YAML flow collections (`[[[…`), which nest without indentation. Quotes and
 * comments are not understood, so it can only overcount, never miss a real nesting.
 */
export function flowNestingExceeds(text: string, limit: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth > limit) return true;
    } else if ((c === 0x5d || c === 0x7d) && depth > 0) depth--;
  }
  return false;
}

// --- stored objects ------------------------------------------------------------------------------

/** A stored object as a document: the metadata it was written with, its name, and the server's fields. */
export function toDocument(object: StoredObject): ApiDocument {
  return {
    apiVersion: API_VERSION,
    kind: object.kind,
    metadata: {
      name: object.name,
      ...object.metadata,
      version: object.version,
      createdAt: object.createdAt,
      createdBy: object.createdBy,
      updatedAt: object.updatedAt,
      updatedBy: object.updatedBy,
    },
    spec: object.spec,
  };
}

/** What the store keeps of a validated document. */
export function toApplyItem(object: SpecObject, expectedVersion: number | undefined): ApplyItem {
  const { name: _name, ...metadata } = object.metadata;
  return { kind: object.kind, name: object.metadata.name, metadata, spec: object.spec, ...(expectedVersion === undefined ? {} : { expectedVersion }) };
}

/**
 * Stored objects as validated SpecObjects, for reference checks. Objects are re-checked against the
 * schemas once per version (cached), and any that no longer pass, or whose kind this server does not
 * know, are left out (and reported through `onInvalid`).
 */
export class StoredSpecCache {
  readonly #cache = new Map<string, { version: number; spec: SpecObject | undefined }>();
  readonly #onInvalid: (object: StoredObject) => void;

  constructor(onInvalid: (object: StoredObject) => void = () => {}) {
    this.#onInvalid = onInvalid;
  }

  specObjects(stored: StoredObject[]): SpecObject[] {
    const out: SpecObject[] = [];
    const seen = new Set<string>();
    for (const object of stored) {
      if (!isSpecKind(object.kind)) continue;
      const key = `${object.kind}/${object.name}`;
      seen.add(key);
      let entry = this.#cache.get(key);
      if (entry === undefined || entry.version !== object.version) {
        const parsed = specSchemas[object.kind].safeParse({ apiVersion: API_VERSION, kind: object.kind, metadata: { ...object.metadata, name: object.name }, spec: object.spec });
        entry = { version: object.version, spec: parsed.success ? parsed.data : undefined };
        if (!parsed.success) this.#onInvalid(object);
        this.#cache.set(key, entry);
      }
      if (entry.spec !== undefined) out.push(entry.spec);
    }
    for (const key of this.#cache.keys()) if (!seen.has(key)) this.#cache.delete(key);
    return out;
  }
}

const DOCUMENT_REF = /\(document (\d+)\)/g;

function problemKey(problem: SpecProblem): string {
  return JSON.stringify([problem.kind, problem.name, problem.path, problem.message.replace(DOCUMENT_REF, '')]);
}

const MISSING = /^names the ([A-Za-z]+) "([^"]*)", which does not exist/;

/**
 * Reference problems of the state after writing `batch` over `existing` (the same kind and name
 * replaces): names that must exist, clusters that must agree, domains that must be unique. Problems
 * that the stored objects already had are not the batch's fault and are left out, and so are
 * "does not exist" problems about documents of the request that failed their own checks (`invalid`).
 * `documents[i]` is the document number of `batch[i]` (default i+1).
 */
export function referenceProblems(batch: SpecObject[], existing: SpecObject[], options: { documents?: number[]; invalid?: ReadonlySet<string> } = {}): ApiProblem[] {
  const key = (o: SpecObject): string => `${o.kind}/${o.metadata.name}`;
  const replaced = new Set(batch.map(key));
  const kept = existing.filter((o) => !replaced.has(key(o)));
  const before = new Set(validateReferences(existing).map(problemKey));
  const offset = kept.length;
  const documentOf = (n: number): number => options.documents?.[n - offset - 1] ?? n - offset;
  const renumber = (message: string): string => message.replace(DOCUMENT_REF, (_m, n: string) => (Number(n) <= offset ? '(already stored)' : `(document ${documentOf(Number(n))})`));
  const out: ApiProblem[] = [];
  for (const problem of validateReferences([...kept, ...batch])) {
    const missing = MISSING.exec(problem.message);
    if (missing !== null && options.invalid?.has(`${missing[1]}/${missing[2]}`) === true) continue;
    const label = { ...(problem.kind === undefined ? {} : { kind: problem.kind }), ...(problem.name === undefined ? {} : { name: problem.name }) };
    if (problem.document <= offset) {
      if (before.has(problemKey(problem))) continue;
      out.push({ ...label, path: problem.path, message: `${renumber(problem.message)} (a stored object this change would break)` });
    } else {
      out.push({ document: documentOf(problem.document), ...label, path: problem.path, message: renumber(problem.message) });
    }
  }
  return out;
}

/** Problems in document order (problems with stored objects last), stable otherwise. */
export function sortProblems(problems: ApiProblem[]): ApiProblem[] {
  const order = (p: ApiProblem): number => p.document ?? Number.MAX_SAFE_INTEGER;
  return problems.map((p, i) => ({ p, i })).sort((a, b) => order(a.p) - order(b.p) || a.i - b.i).map(({ p }) => p);
}

/** Objects that would be left broken by deleting `kind/name` (a Service naming a deleted Policy…). */
export function referrersOf(kind: string, name: string, existing: SpecObject[]): ApiProblem[] {
  const before = new Set(validateReferences(existing).map(problemKey));
  const after = existing.filter((o) => !(o.kind === kind && o.metadata.name === name));
  return validateReferences(after)
    .filter((p) => !before.has(problemKey(p)))
    .map((p) => ({ ...(p.kind === undefined ? {} : { kind: p.kind }), ...(p.name === undefined ? {} : { name: p.name }), path: p.path, message: p.message.replace(DOCUMENT_REF, '') }));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
