/**
 * HTTP handlers for pods and namespaces: list, get, and watch as a chunked stream of JSON events,
 * each in plain JSON or as Table, with label and field selectors.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PodEvent, PodObject, PodStore, WatchEventType } from './pods.ts';
import { failure, notFound, sendJson, sendStatus } from './status.ts';
import { acceptsTable, podTable } from './table.ts';
import type { IncludeObject } from './table.ts';

export interface PodsContext {
  store: PodStore;
  /** Aborted when the server closes: open watches end. */
  signal: AbortSignal;
  now: () => number;
}

type Selector = (pod: PodObject) => boolean;

/** Parses `a=b,c!=d,e,!f,g in (x,y)`-style label selectors (the subset kubectl users type). */
export function parseLabelSelector(raw: string | null): Selector | string {
  if (raw === null || raw.trim() === '') return () => true;
  const terms: Selector[] = [];
  for (const part of raw.split(/,(?![^(]*\))/)) {
    const term = part.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$/.exec(term)) !== null) {
      const [, key, op, value] = m as unknown as [string, string, string, string];
      terms.push((p) => (op === '!=' ? p.metadata.labels?.[key] !== value : p.metadata.labels?.[key] === value));
    } else if ((m = /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term)) !== null) {
      const [, key, op, list] = m as unknown as [string, string, string, string];
      const values = new Set(list.split(',').map((v) => v.trim()));
      terms.push((p) => {
        const v = p.metadata.labels?.[key];
        return op === 'in' ? v !== undefined && values.has(v) : v === undefined || !values.has(v);
      });
    } else if ((m = /^(!?)([\w./-]+)$/.exec(term)) !== null) {
      const [, not, key] = m as unknown as [string, string, string];
      terms.push((p) => (p.metadata.labels?.[key] !== undefined) !== (not === '!'));
    } else {
      return `unable to parse requirement: ${term}`;
    }
  }
  return (p) => terms.every((t) => t(p));
}

const podFields: Record<string, (p: PodObject) => string> = {
  'metadata.name': (p) => p.metadata.name,
  'metadata.namespace': (p) => p.metadata.namespace,
  'spec.nodeName': (p) => p.spec.nodeName,
  'status.phase': (p) => p.status.phase,
  'status.podIP': (p) => p.status.podIP,
};

export function parseFieldSelector(raw: string | null): Selector | string {
  if (raw === null || raw.trim() === '') return () => true;
  const terms: Selector[] = [];
  for (const part of raw.split(',')) {
    const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(part.trim());
    if (m === null) return `invalid field selector: ${part}`;
    const [, field, op, value] = m as unknown as [string, string, string, string];
    const get = podFields[field];
    if (get === undefined) return `field label not supported: ${field}`;
    terms.push((p) => (get(p) === value) !== (op === '!='));
  }
  return (p) => terms.every((t) => t(p));
}

function includeObjectParam(query: URLSearchParams): IncludeObject {
  const v = query.get('includeObject');
  return v === 'None' || v === 'Object' ? v : 'Metadata';
}

function isWatch(query: URLSearchParams): boolean {
  const w = query.get('watch');
  return w === 'true' || w === '1';
}

function selectorsOrFail(res: ServerResponse, query: URLSearchParams): Selector | undefined {
  const labels = parseLabelSelector(query.get('labelSelector'));
  if (typeof labels === 'string') {
    sendStatus(res, failure(400, 'BadRequest', labels));
    return undefined;
  }
  const fields = parseFieldSelector(query.get('fieldSelector'));
  if (typeof fields === 'string') {
    sendStatus(res, failure(400, 'BadRequest', fields));
    return undefined;
  }
  return (p) => labels(p) && fields(p);
}

/** GET /api/v1/pods and /api/v1/namespaces/NS/pods: a list, or a watch with ?watch=true. */
export function servePodCollection(ctx: PodsContext, req: IncomingMessage, res: ServerResponse, query: URLSearchParams, ns: string | undefined): void {
  if (req.method !== 'GET') {
    sendStatus(res, failure(405, 'MethodNotAllowed', `the fake API server does not support ${req.method} on pods`));
    return;
  }
  const selector = selectorsOrFail(res, query);
  if (selector === undefined) return;
  const table = acceptsTable(req.headers.accept);
  if (isWatch(query)) {
    watchPods(ctx, req, res, query, ns, selector, table);
    return;
  }
  const pods = ctx.store.list(ns).filter(selector);
  const rv = ctx.store.resourceVersion;
  if (table !== undefined) {
    const body = podTable(pods, { apiVersion: table, resourceVersion: rv, includeObject: includeObjectParam(query), withColumns: query.get('noHeaders') !== 'true', now: ctx.now() });
    sendJson(res, 200, body, `application/json;as=Table;v=${table.split('/')[1]};g=meta.k8s.io`);
    return;
  }
  sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items: pods });
}

/** GET /api/v1/namespaces/NS/pods/NAME. */
export function servePod(ctx: PodsContext, req: IncomingMessage, res: ServerResponse, query: URLSearchParams, ns: string, name: string): void {
  if (req.method !== 'GET') {
    sendStatus(res, failure(405, 'MethodNotAllowed', `the fake API server does not support ${req.method} on pods`));
    return;
  }
  const pod = ctx.store.get(ns, name);
  if (pod === undefined) {
    sendStatus(res, notFound('pods', name));
    return;
  }
  const table = acceptsTable(req.headers.accept);
  if (table !== undefined) {
    const body = podTable([pod], { apiVersion: table, resourceVersion: Number(pod.metadata.resourceVersion), includeObject: includeObjectParam(query), withColumns: true, now: ctx.now() });
    sendJson(res, 200, body, `application/json;as=Table;v=${table.split('/')[1]};g=meta.k8s.io`);
    return;
  }
  sendJson(res, 200, pod);
}

function watchPods(ctx: PodsContext, req: IncomingMessage, res: ServerResponse, query: URLSearchParams, ns: string | undefined, selector: Selector, table: string | undefined): void {
  const rvParam = query.get('resourceVersion');
  const sendInitial = query.get('sendInitialEvents') === 'true';
  const bookmarks = query.get('allowWatchBookmarks') === 'true';
  const includeObject = includeObjectParam(query);
  const matches = (p: PodObject): boolean => (ns === undefined || p.metadata.namespace === ns) && selector(p);

  // Subscribe before reading the backlog so nothing falls between them.
  const live: PodEvent[] = [];
  let streaming = false;
  const unsubscribe = ctx.store.subscribe((e) => {
    if (streaming) deliver(e);
    else live.push(e);
  });

  let backlog: Array<{ type: WatchEventType; pod: PodObject }>;
  let lastRv = ctx.store.resourceVersion;
  if (rvParam === null || rvParam === '' || rvParam === '0' || sendInitial) {
    // "Get state and start at most recent": synthetic ADDED events for what exists now.
    backlog = ctx.store.list(ns).filter(selector).map((pod) => ({ type: 'ADDED' as const, pod }));
  } else {
    const since = Number(rvParam);
    const events = Number.isInteger(since) ? ctx.store.eventsSince(since) : undefined;
    if (events === undefined) {
      unsubscribe();
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
      res.end(
        JSON.stringify({
          type: 'ERROR',
          object: failure(410, 'Expired', Number.isInteger(since) ? `too old resource version: ${since} (${ctx.store.resourceVersion})` : `invalid resource version: ${rvParam}`),
        }) + '\n',
      );
      return;
    }
    backlog = events.filter((e) => matches(e.pod)).map((e) => ({ type: e.type, pod: e.pod }));
    lastRv = Math.max(since, ...events.map((e) => e.rv));
  }

  res.writeHead(200, {
    'Content-Type': table === undefined ? 'application/json' : `application/json;as=Table;v=${table.split('/')[1]};g=meta.k8s.io`,
    'Cache-Control': 'no-cache, private',
    'Transfer-Encoding': 'chunked',
  });
  res.flushHeaders();
  req.socket.setNoDelay(true);

  let first = true;
  const write = (type: string, pod: PodObject | undefined, bookmarkRv?: string): void => {
    let object: unknown;
    if (pod === undefined) {
      object = { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: bookmarkRv, annotations: { 'k8s.io/initial-events-end': 'true' } } };
    } else if (table !== undefined) {
      // As the API server does, only the first event of a watch carries the column definitions.
      object = podTable([pod], { apiVersion: table, resourceVersion: Number(pod.metadata.resourceVersion), includeObject, withColumns: first, now: ctx.now() });
      first = false;
    } else {
      object = pod;
    }
    res.write(JSON.stringify({ type, object }) + '\n');
  };

  for (const e of backlog) write(e.type, e.pod);
  if (sendInitial && bookmarks) write('BOOKMARK', undefined, String(lastRv));

  let timer: NodeJS.Timeout | undefined;
  const finish = (): void => {
    unsubscribe();
    ctx.signal.removeEventListener('abort', finish);
    if (timer !== undefined) clearTimeout(timer);
    if (!res.writableEnded) res.end();
  };
  const deliver = (e: PodEvent): void => {
    if (e.rv > lastRv && matches(e.pod)) write(e.type, e.pod);
  };
  for (const e of live) deliver(e);
  live.length = 0;
  streaming = true;

  const timeoutSeconds = Number(query.get('timeoutSeconds') ?? '0');
  if (timeoutSeconds > 0) timer = setTimeout(finish, timeoutSeconds * 1000);
  ctx.signal.addEventListener('abort', finish);
  res.on('close', finish);
}

/** GET /api/v1/namespaces and /api/v1/namespaces/NS. */
export function serveNamespaces(ctx: PodsContext, req: IncomingMessage, res: ServerResponse, name: string | undefined): void {
  if (req.method !== 'GET') {
    sendStatus(res, failure(405, 'MethodNotAllowed', `the fake API server does not support ${req.method} on namespaces`));
    return;
  }
  const render = (ns: string): unknown => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: ns, uid: `00000000-0000-4000-8000-${Buffer.from(ns).toString('hex').padEnd(12, '0').slice(0, 12)}`, resourceVersion: '1', creationTimestamp: '2025-01-01T00:00:00Z', labels: { 'kubernetes.io/metadata.name': ns } },
    spec: { finalizers: ['kubernetes'] },
    status: { phase: 'Active' },
  });
  if (name !== undefined) {
    if (!ctx.store.hasNamespace(name)) sendStatus(res, notFound('namespaces', name));
    else sendJson(res, 200, render(name));
    return;
  }
  sendJson(res, 200, { kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: String(ctx.store.resourceVersion) }, items: ctx.store.namespaces().map(render) });
}
