/**
 * Discovery: `/version`, `/api`, `/apis`, `/api/v1`. Answers aggregated discovery
 * (apidiscovery.k8s.io v2 and v2beta1, which kubectl 1.30+ asks for first) when the Accept header
 * asks for it, and the legacy APIVersions / APIGroupList / APIResourceList otherwise.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendJson } from './status.ts';

export interface ServerVersion {
  major: string;
  minor: string;
  gitVersion: string;
}

interface Subresource {
  name: string;
  kind: string;
  verbs: string[];
}

interface CoreResource {
  name: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  verbs: string[];
  shortNames?: string[];
  categories?: string[];
  subresources: Subresource[];
}

const core: CoreResource[] = [
  {
    name: 'namespaces',
    singular: 'namespace',
    kind: 'Namespace',
    namespaced: false,
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    shortNames: ['ns'],
    subresources: [
      { name: 'finalize', kind: 'Namespace', verbs: ['update'] },
      { name: 'status', kind: 'Namespace', verbs: ['get', 'patch', 'update'] },
    ],
  },
  {
    name: 'events',
    singular: 'event',
    kind: 'Event',
    namespaced: true,
    verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
    shortNames: ['ev'],
    subresources: [],
  },
  {
    name: 'pods',
    singular: 'pod',
    kind: 'Pod',
    namespaced: true,
    verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
    shortNames: ['po'],
    categories: ['all'],
    subresources: [
      { name: 'attach', kind: 'PodAttachOptions', verbs: ['create', 'get'] },
      { name: 'exec', kind: 'PodExecOptions', verbs: ['create', 'get'] },
      { name: 'log', kind: 'Pod', verbs: ['get'] },
      { name: 'portforward', kind: 'PodPortForwardOptions', verbs: ['create', 'get'] },
      { name: 'status', kind: 'Pod', verbs: ['get', 'patch', 'update'] },
    ],
  },
];

const AGGREGATED = /application\/json;\s*g=apidiscovery\.k8s\.io;\s*v=(v2|v2beta1);\s*as=APIGroupDiscoveryList/;

/** The aggregated discovery version the client accepts, if any. */
function aggregatedVersion(req: IncomingMessage): string | undefined {
  const accept = req.headers.accept ?? '';
  for (const part of accept.split(',')) {
    const m = AGGREGATED.exec(part.trim());
    if (m !== null) return m[1];
  }
  return undefined;
}

function sendAggregated(res: ServerResponse, version: string, items: unknown[]): void {
  sendJson(res, 200, { kind: 'APIGroupDiscoveryList', apiVersion: `apidiscovery.k8s.io/${version}`, metadata: {}, items }, `application/json;g=apidiscovery.k8s.io;v=${version};as=APIGroupDiscoveryList`);
}

function aggregatedCore(): unknown {
  return {
    metadata: { creationTimestamp: null },
    versions: [
      {
        version: 'v1',
        freshness: 'Current',
        resources: core.map((r) => {
          const resource: Record<string, unknown> = {
            resource: r.name,
            responseKind: { group: '', version: 'v1', kind: r.kind },
            scope: r.namespaced ? 'Namespaced' : 'Cluster',
            singularResource: r.singular,
            verbs: r.verbs,
            subresources: r.subresources.map((s) => ({ subresource: s.name, responseKind: { group: '', version: 'v1', kind: s.kind }, verbs: s.verbs })),
          };
          if (r.shortNames !== undefined) resource.shortNames = r.shortNames;
          if (r.categories !== undefined) resource.categories = r.categories;
          return resource;
        }),
      },
    ],
  };
}

export function serveVersion(res: ServerResponse, version: ServerVersion): void {
  sendJson(res, 200, {
    major: version.major,
    minor: version.minor,
    gitVersion: version.gitVersion,
    gitCommit: '0000000000000000000000000000000000000000',
    gitTreeState: 'clean',
    buildDate: '2025-01-01T00:00:00Z',
    goVersion: 'go1.23.8',
    compiler: 'gc',
    platform: 'linux/amd64',
  });
}

export function serveApi(req: IncomingMessage, res: ServerResponse, serverAddress: string, allowAggregated: boolean): void {
  const aggregated = allowAggregated ? aggregatedVersion(req) : undefined;
  if (aggregated !== undefined) {
    sendAggregated(res, aggregated, [aggregatedCore()]);
    return;
  }
  sendJson(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] });
}

export function serveApis(req: IncomingMessage, res: ServerResponse, allowAggregated: boolean): void {
  const aggregated = allowAggregated ? aggregatedVersion(req) : undefined;
  if (aggregated !== undefined) {
    sendAggregated(res, aggregated, []);
    return;
  }
  sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
}

export function serveCoreV1(res: ServerResponse): void {
  const resources: unknown[] = [];
  for (const r of core) {
    const entry: Record<string, unknown> = { name: r.name, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: r.verbs };
    if (r.shortNames !== undefined) entry.shortNames = r.shortNames;
    if (r.categories !== undefined) entry.categories = r.categories;
    resources.push(entry);
    for (const s of r.subresources) resources.push({ name: `${r.name}/${s.name}`, singularName: '', namespaced: r.namespaced, kind: s.kind, verbs: s.verbs });
  }
  sendJson(res, 200, { kind: 'APIResourceList', groupVersion: 'v1', resources });
}
