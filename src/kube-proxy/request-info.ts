/**
 * What a Kubernetes API request is, parsed the way the API server's RequestInfoFactory does
 * (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go), so rules and audit see the verb,
 * resource, namespace, name and subresource the API server will authorize.
 *
 * The path is read as Go's net/http reads it (percent-decoded, `%2F` included) and refused when
 * decoding could make the two of us see different things: bad escapes, control characters, empty,
 * `.` or `..` segments (Go's mux would clean or redirect those). The proxy forwards the original
 * path, which the API server decodes to exactly what was parsed here.
 *
 * Verbs: GET/HEAD → get, list (no name) or watch (`watch=` true, or the legacy /watch/ prefix);
 * POST → create; PUT → update; PATCH → patch; DELETE → delete or deletecollection. An upgrade
 * (WebSocket GET) to pods/exec, attach or portforward is `create`, as API servers since 1.30
 * authorize it (AuthorizePodWebsocketUpgradeCreatePermission), and as kubectl's SPDY POST is anyway.
 */

export interface KubeRequestInfo {
  /** Under /api or /apis. */
  isResourceRequest: boolean;
  /** The percent-decoded path (what the API server routes on). */
  path: string;
  verb: string;
  apiPrefix?: 'api' | 'apis';
  apiGroup?: string;
  apiVersion?: string;
  namespace?: string;
  resource?: string;
  subresource?: string;
  name?: string;
  /** The segments after the subresource (pods/NAME/proxy/…); never matched by rules. */
  parts: string[];
}

export type RequestInfoResult = { ok: true; info: KubeRequestInfo } | { ok: false; message: string };

const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const GO_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);

/** strconv.ParseBool's true values (anything else, including garbage, is not true). */
export function goBool(value: string | null): boolean {
  return value !== null && GO_TRUE.has(value);
}

function decodePath(rawPath: string): string | undefined {
  try {
    return decodeURIComponent(rawPath);
  } catch {
    return undefined;
  }
}

/** The path and query of a request target (origin-form only: `/…`). */
export function splitTarget(target: string): { rawPath: string; query: URLSearchParams; rawQuery: string } | undefined {
  if (!target.startsWith('/') || target.startsWith('//')) return undefined;
  const hash = target.indexOf('#');
  if (hash !== -1) return undefined;
  const q = target.indexOf('?');
  const rawPath = q === -1 ? target : target.slice(0, q);
  const rawQuery = q === -1 ? '' : target.slice(q + 1);
  // Go's ParseQuery refuses semicolons; so do we, rather than split differently.
  if (rawQuery.includes(';')) return undefined;
  return { rawPath, query: new URLSearchParams(rawQuery), rawQuery };
}

export function parseRequestInfo(method: string, rawPath: string, query: URLSearchParams, upgrade = false): RequestInfoResult {
  const path = decodePath(rawPath);
  if (path === undefined) return { ok: false, message: 'the request path has an invalid percent-encoding' };
  if (CONTROL_RE.test(path)) return { ok: false, message: 'the request path contains control characters' };
  const segments = path === '/' ? [] : path.slice(1).split('/');
  // A trailing slash is one empty last segment, which the API server tolerates; anywhere else it is refused.
  const inner = segments.length > 0 && segments[segments.length - 1] === '' ? segments.slice(0, -1) : segments;
  if (inner.some((s) => s === '' || s === '.' || s === '..')) return { ok: false, message: 'the request path has empty, "." or ".." segments' };

  const m = method.toUpperCase();
  const nonResource = (): RequestInfoResult => ({ ok: true, info: { isResourceRequest: false, path, verb: m.toLowerCase(), parts: inner } });
  let parts = inner;
  if (parts.length === 0 || (parts[0] !== 'api' && parts[0] !== 'apis')) return nonResource();
  const apiPrefix = parts[0];
  parts = parts.slice(1);
  let apiGroup = '';
  if (apiPrefix === 'apis') {
    if (parts.length < 2) return nonResource();
    apiGroup = parts[0];
    parts = parts.slice(1);
  } else if (parts.length < 1) {
    return nonResource();
  }
  const apiVersion = parts[0];
  parts = parts.slice(1);
  if (parts.length === 0) return nonResource();

  let verb: string;
  switch (m) {
    case 'POST': verb = 'create'; break;
    case 'GET': case 'HEAD': verb = 'get'; break;
    case 'PUT': verb = 'update'; break;
    case 'PATCH': verb = 'patch'; break;
    case 'DELETE': verb = 'delete'; break;
    default: verb = m.toLowerCase();
  }
  if (parts[0] === 'watch') {
    // The deprecated /watch/ prefix: a watch whatever the method says.
    if (verb === 'get') verb = 'watch';
    parts = parts.slice(1);
    if (parts.length === 0) return { ok: false, message: 'a watch path must name a resource' };
  }

  let namespace: string | undefined;
  if (parts[0] === 'namespaces') {
    if (parts.length > 1) {
      namespace = parts[1];
      if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2])) parts = parts.slice(2);
    }
  }
  const resource = parts[0];
  const name = parts.length >= 2 ? parts[1] : undefined;
  const subresource = parts.length >= 3 ? parts[2] : undefined;
  let finalName = name;

  if (name === undefined && verb === 'get') verb = 'list';
  if ((verb === 'list' || verb === 'get') && goBool(query.get('watch'))) verb = 'watch';
  if (name === undefined && verb === 'delete') verb = 'deletecollection';
  if ((verb === 'list' || verb === 'watch') && finalName === undefined) {
    // As the API server: a list or watch narrowed to one name by fieldSelector metadata.name=NAME is about that name.
    const selector = query.get('fieldSelector');
    if (selector !== null) {
      for (const term of selector.split(',')) {
        const match = /^metadata\.name==?(.+)$/.exec(term.trim());
        if (match !== null) finalName = match[1];
      }
    }
  }
  if (upgrade && resource === 'pods' && (subresource === 'exec' || subresource === 'attach' || subresource === 'portforward')) verb = 'create';

  return {
    ok: true,
    info: {
      isResourceRequest: true,
      path,
      verb,
      apiPrefix,
      apiGroup,
      apiVersion,
      ...(namespace !== undefined ? { namespace } : {}),
      resource,
      ...(subresource !== undefined ? { subresource } : {}),
      ...(finalName !== undefined ? { name: finalName } : {}),
      parts: parts.slice(3),
    },
  };
}
