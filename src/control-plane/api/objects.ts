/**
 * Spec objects: list, get, put, delete, and apply (many documents in one transaction).
 *
 * Every write is validated in full before anything is written: each document against its schema,
 * then the state it would produce (stored objects plus the batch) for references between objects.
 * Any problem is 422 SPEC_INVALID with every problem and its field path, and nothing is written.
 * Writes of objects are serialised within this replica so the state that was checked is the state
 * that is written; across replicas the store's version checks still prevent lost updates, but two
 * replicas can each pass a reference check that only their combination breaks (see the report in
 * the module that owns the store).
 *
 * Who may write what (CP-17): an unrestricted admin writes everything; a kinds-restricted admin only
 * objects of its kinds, and an AdminBinding only when its own grant covers the binding as it is and as
 * it would be (role ≤ theirs, kinds ⊆ theirs), so nobody grants anyone more than they hold. A batch
 * with any refused document is refused whole (403 FORBIDDEN, `details.refused` names each).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SPEC_KINDS } from '../../lib/spec/index.ts';
import { isUnrestrictedAdmin, principalOf } from '../auth.ts';
import type { Principal } from '../auth.ts';
import { covers, mayWriteKind, parseStoredBinding } from '../identity/admin-binding.ts';
import type { Store, StoredObject } from '../store/index.ts';
import { ApiError, badRequest, notFound } from './errors.ts';
import {
  documentsFromYaml, flowNestingExceeds, MAX_DOCUMENT_DEPTH, normalizeKind, prepareDocuments, referenceProblems, referrersOf, sortProblems, toApplyItem, toDocument,
} from './documents.ts';
import type { ApiProblem, StoredSpecCache } from './documents.ts';
import { documentInputSchema, documentSchema, errorResponses, NAME_PATTERN } from './schemas.ts';

export interface ObjectRoutesDeps {
  store: Store;
  specs: StoredSpecCache;
  /** Runs object writes one at a time (see the module comment). */
  serialize: <T>(fn: () => Promise<T>) => Promise<T>;
}

const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml'];

const kindParams = {
  type: 'object',
  properties: {
    kind: { type: 'string', maxLength: 64, description: `${SPEC_KINDS.join(', ')} (any case, singular or plural)` },
    name: { type: 'string', pattern: NAME_PATTERN },
  },
  required: ['kind', 'name'],
  additionalProperties: false,
} as const;

const resultItemSchema = {
  type: 'object',
  properties: {
    kind: { type: 'string' },
    name: { type: 'string' },
    result: { type: 'string', enum: ['created', 'changed', 'unchanged'] },
    version: { type: 'integer' },
  },
  required: ['kind', 'name', 'result', 'version'],
} as const;

const versionHeaders = {
  type: 'object',
  properties: {
    'if-match': { type: 'string', maxLength: 64, description: 'The version the change is based on ("3", "W/\\"3\\"" or 3); 409 when the object is at another.' },
    'if-none-match': { type: 'string', maxLength: 8, description: '"*": only create; 409 when the object exists.' },
  },
} as const;

export async function objectRoutes(app: FastifyInstance, deps: ObjectRoutesDeps): Promise<void> {
  const { store, specs, serialize } = deps;

  app.get('/objects', {
    config: { access: 'read' },
    schema: {
      summary: 'List spec objects',
      tags: ['objects'],
      querystring: { type: 'object', properties: { kind: { type: 'string', maxLength: 64 } }, additionalProperties: false },
      response: { 200: { type: 'object', properties: { items: { type: 'array', items: documentSchema } }, required: ['items'] }, ...errorResponses(400, 401, 403) },
    },
  }, async (request: FastifyRequest<{ Querystring: { kind?: string } }>) => {
    const kind = request.query.kind === undefined ? undefined : kindOf(request.query.kind);
    const objects = await store.listObjects(kind);
    return { items: objects.filter((o) => kind !== undefined || (SPEC_KINDS as string[]).includes(o.kind)).map(toDocument) };
  });

  app.get('/objects/:kind/:name', {
    config: { access: 'read' },
    schema: { summary: 'Get a spec object', tags: ['objects'], params: kindParams, response: { 200: documentSchema, ...errorResponses(400, 401, 403, 404) } },
  }, async (request: FastifyRequest<{ Params: { kind: string; name: string } }>, reply: FastifyReply) => {
    const kind = kindOf(request.params.kind);
    const object = await store.getObject(kind, request.params.name);
    if (object === undefined) throw notFound(`${kind} ${request.params.name}`);
    void reply.header('etag', `"${object.version}"`);
    return toDocument(object);
  });

  app.put('/objects/:kind/:name', {
    config: { access: 'write', checksKinds: true },
    schema: {
      summary: 'Create or replace a spec object',
      description: 'The body is one spec document whose kind and metadata.name match the path. `If-Match` or `metadata.version` names the version it is based on.',
      tags: ['objects'],
      params: kindParams,
      headers: versionHeaders,
      body: documentInputSchema,
      response: {
        200: { type: 'object', properties: { result: { type: 'string' }, object: documentSchema }, required: ['result', 'object'] },
        201: { type: 'object', properties: { result: { type: 'string' }, object: documentSchema }, required: ['result', 'object'] },
        ...errorResponses(400, 401, 403, 409, 413, 422),
      },
    },
  }, async (request: FastifyRequest<{ Params: { kind: string; name: string }; Body: Record<string, unknown> }>, reply: FastifyReply) => {
    const kind = kindOf(request.params.kind);
    const { name } = request.params;
    const body = request.body;
    const metadata = body.metadata;
    const bodyName = metadata !== null && typeof metadata === 'object' && 'name' in metadata ? metadata.name : undefined;
    if (typeof body.kind !== 'string' || normalizeKind(body.kind) !== kind || bodyName !== name) {
      throw badRequest('PATH_MISMATCH', `the document must be the ${kind} named "${name}" that the path names (kind and metadata.name)`);
    }
    const headerVersion = expectedVersionFromHeaders(request);
    const principal = principalOf(request);
    const [outcome] = await serialize(() => writeDocuments(store, specs, [body], principal, headerVersion));
    return reply.code(outcome.result === 'created' ? 201 : 200).send({ result: outcome.result, object: toDocument(outcome.object) });
  });

  app.delete('/objects/:kind/:name', {
    config: { access: 'write', checksKinds: true },
    schema: {
      summary: 'Delete a spec object',
      description: '409 OBJECT_IN_USE while other objects name it (details.referrers), 409 VERSION_CONFLICT when If-Match names another version.',
      tags: ['objects'],
      params: kindParams,
      headers: versionHeaders,
      response: { 200: { type: 'object', properties: { deleted: documentSchema }, required: ['deleted'] }, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { kind: string; name: string } }>) => {
    const kind = kindOf(request.params.kind);
    const { name } = request.params;
    const expectedVersion = expectedVersionFromHeaders(request);
    const principal = principalOf(request);
    const { actor } = principal;
    return serialize(async () => {
      const existing = await store.listObjects();
      const target = existing.find((o) => o.kind === kind && o.name === name);
      if (!isUnrestrictedAdmin(principal)) {
        const reason = kindRefusal(principal, kind) ?? (target === undefined ? undefined : storedBindingRefusal(principal, target));
        if (reason !== undefined) throw forbidden(principal, [{ kind, name, reason }]);
      }
      if (target === undefined) throw notFound(`${kind} ${name}`);
      const referrers = referrersOf(kind, name, specs.specObjects(existing));
      if (referrers.length > 0) {
        const names = [...new Set(referrers.map((r) => `${r.kind} ${r.name}`))].join(', ');
        throw new ApiError(409, 'OBJECT_IN_USE', `${kind} ${name} is still named by ${names}; change or delete those first`, { referrers });
      }
      const deleted = await store.deleteObject(kind, name, { actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) });
      return { deleted: toDocument(deleted.object) };
    });
  });

  // Apply takes YAML as well as JSON: the YAML parser is registered in this scope only, so no other
  // route ever receives an unvalidated string body.
  await app.register((scope, _options, registered) => {
    scope.addContentTypeParser(YAML_TYPES, { parseAs: 'string' }, (_request, body, done) => {
      if (flowNestingExceeds(body as string, MAX_DOCUMENT_DEPTH)) {
        done(new ApiError(413, 'BODY_TOO_DEEP', `the YAML is nested deeper than ${MAX_DOCUMENT_DEPTH} levels`), undefined);
        return;
      }
      done(null, body);
    });
    const applyBody = {
      type: 'object',
      properties: { documents: { type: 'array', items: documentInputSchema, maxItems: 1000 } },
      required: ['documents'],
      additionalProperties: false,
    } as const;
    scope.post('/apply', {
      config: { access: 'write', checksKinds: true },
      schema: {
        summary: 'Create or update many spec objects at once',
        description: 'All or nothing: every document is validated against the state the whole batch produces; any problem is 422 SPEC_INVALID listing every problem, and nothing is written. Send JSON `{documents: [...]}` or multi-document YAML (application/yaml).',
        tags: ['objects'],
        body: {
          content: {
            'application/json': { schema: applyBody },
            ...Object.fromEntries(YAML_TYPES.map((t) => [t, { schema: { type: 'string', description: 'multi-document YAML' } }])),
          },
        },
        response: { 200: { type: 'object', properties: { results: { type: 'array', items: resultItemSchema } }, required: ['results'] }, ...errorResponses(400, 401, 403, 409, 413, 415, 422) },
      },
    }, async (request: FastifyRequest<{ Body: { documents: unknown[] } | string }>) => {
      let values: unknown[];
      if (typeof request.body === 'string') {
        const yaml = safely(() => documentsFromYaml(request.body as string));
        if (!yaml.ok) throw specInvalid(yaml.problems);
        values = yaml.values;
      } else {
        values = request.body.documents;
      }
      if (values.length === 0) throw badRequest('NO_DOCUMENTS', 'there is nothing to apply: send at least one document');
      const principal = principalOf(request);
      const results = await serialize(() => writeDocuments(store, specs, values, principal, undefined));
      return { results: results.map((r) => ({ kind: r.object.kind, name: r.object.name, result: r.result, version: r.object.version })) };
    });
    registered();
  });
}

/**
 * Checks that the principal may write each document (kinds first, so a refused kind is 403 before
 * its contents are judged), validates them against the state they produce, checks AdminBindings
 * against the principal's grant, and writes them in one transaction.
 */
async function writeDocuments(store: Store, specs: StoredSpecCache, values: unknown[], principal: Principal, headerVersion: number | undefined) {
  const restricted = !isUnrestrictedAdmin(principal);
  if (restricted) {
    const refused = values.flatMap((value, i) => {
      const label = labelOf(value);
      const kind = label.kind === undefined ? undefined : normalizeKind(label.kind);
      const reason = kind === undefined ? undefined : kindRefusal(principal, kind);
      return reason === undefined ? [] : [{ document: i + 1, kind, name: label.name, reason }];
    });
    if (refused.length > 0) throw forbidden(principal, refused);
  }
  const prepared = safely(() => prepareDocuments(values));
  const valid = prepared.objects.flatMap((object, i) => (object === undefined ? [] : [{ object, document: i + 1 }]));
  const stored = await store.listObjects();
  const existing = specs.specObjects(stored);
  const references = referenceProblems(valid.map((v) => v.object), existing, { documents: valid.map((v) => v.document), invalid: prepared.invalid });
  const problems = sortProblems([...prepared.problems, ...references]);
  if (problems.length > 0) throw specInvalid(problems);
  if (restricted) {
    const refused = valid.flatMap(({ object, document }) => {
      if (object.kind !== 'AdminBinding') return [];
      const name = object.metadata.name;
      const reason = covers(principal, object.spec)
        ? storedBindingRefusal(principal, stored.find((o) => o.kind === 'AdminBinding' && o.name === name))
        : `it grants ${grantText(object.spec)}, more than ${holderText(principal)}`;
      return reason === undefined ? [] : [{ document, kind: object.kind, name, reason }];
    });
    if (refused.length > 0) throw forbidden(principal, refused);
  }
  const items = valid.map(({ object, document }) => toApplyItem(object, headerVersion ?? prepared.versions[document - 1]));
  return store.applyObjects(items, { actor: principal.actor });
}

interface Refusal {
  document?: number;
  kind?: string;
  name?: string | undefined;
  reason: string;
}

/** Why a kinds-restricted admin may not write objects of `kind` at all; undefined when it may. */
function kindRefusal(principal: Principal, kind: string): string | undefined {
  if (kind === 'AdminBinding') return principal.scope === 'admin' ? undefined : `${holderText(principal)} writes no AdminBindings`;
  return mayWriteKind(principal, kind) ? undefined : `${holderText(principal)} may not write ${kind} objects`;
}

/** An AdminBinding already stored may be changed or deleted only by someone whose grant covers it. */
function storedBindingRefusal(principal: Principal, stored: StoredObject | undefined): string | undefined {
  if (stored?.kind !== 'AdminBinding') return undefined;
  const parsed = parseStoredBinding(stored);
  if (parsed === undefined) return 'the stored binding no longer passes its schema; only an unrestricted admin may change it';
  return covers(principal, parsed.spec) ? undefined : `the stored binding grants ${grantText(parsed.spec)}, more than ${holderText(principal)}`;
}

function grantText(binding: { role: string; kinds: readonly string[] }): string {
  return binding.role === 'admin' && binding.kinds.length > 0 ? `admin for ${binding.kinds.join(', ')}` : `${binding.role} for everything`;
}

function holderText(principal: Principal): string {
  const kinds = principal.kinds === undefined ? 'everything' : principal.kinds.join(', ') || 'no kinds';
  return `${principal.method === 'session' ? 'user' : principal.method} "${principal.name}" (${principal.scope} for ${kinds})`;
}

function forbidden(principal: Principal, refused: Refusal[]): ApiError {
  const list = refused.map((r) => `${r.document === undefined ? '' : `document ${r.document}: `}${r.kind ?? '?'} ${r.name ?? '?'}: ${r.reason}`).join('; ');
  const what = refused.length === 1 ? 'this change is' : `${refused.length} documents are`;
  return new ApiError(403, 'FORBIDDEN', `${what} beyond what ${holderText(principal)} may write, so nothing was written: ${list}`, { refused });
}

function labelOf(value: unknown): { kind?: string; name?: string } {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return {};
  const record = value as Record<string, unknown>;
  const metadata = record.metadata;
  const name = metadata !== null && typeof metadata === 'object' && typeof (metadata as Record<string, unknown>).name === 'string' ? ((metadata as Record<string, unknown>).name as string).slice(0, 64) : undefined;
  return { ...(typeof record.kind === 'string' ? { kind: record.kind.slice(0, 64) } : {}), ...(name === undefined ? {} : { name }) };
}

function specInvalid(problems: ApiProblem[]): ApiError {
  const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
  return new ApiError(422, 'SPEC_INVALID', `the specs have ${count}; nothing was applied`, { problems });
}

/** Parsing hostile input can exhaust the stack in spite of the depth guards; that is the client's problem, not a 500. */
function safely<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof RangeError) throw new ApiError(413, 'BODY_TOO_DEEP', 'the documents are nested too deeply');
    throw err;
  }
}

function kindOf(text: string): string {
  const kind = normalizeKind(text);
  if (kind === undefined) throw badRequest('UNKNOWN_KIND', `unknown kind "${text.slice(0, 64)}"; the kinds are ${SPEC_KINDS.join(', ')}`);
  return kind;
}

/** `If-Match: "3"` (also W/"3" or 3) → 3; `If-None-Match: *` → 0 (create only). */
export function expectedVersionFromHeaders(request: FastifyRequest): number | undefined {
  const ifMatch = request.headers['if-match'];
  const ifNoneMatch = request.headers['if-none-match'];
  if (typeof ifNoneMatch === 'string') {
    if (ifNoneMatch.trim() !== '*') throw badRequest('INVALID_PRECONDITION', 'If-None-Match takes only "*" (create only)');
    if (ifMatch !== undefined) throw badRequest('INVALID_PRECONDITION', 'give If-Match or If-None-Match, not both');
    return 0;
  }
  if (typeof ifMatch !== 'string') return undefined;
  const match = /^\s*(?:W\/)?"?([0-9]{1,15})"?\s*$/.exec(ifMatch);
  if (match === null) throw badRequest('INVALID_PRECONDITION', 'If-Match must be a version number, such as "3"');
  return Number(match[1]);
}
