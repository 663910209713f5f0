/**
 * Server-side printing: pods as `meta.k8s.io/v1` Table, the way kubectl asks for them
 * (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the real pod columns.
 */
import type { PodObject } from './pods.ts';

export interface TableColumn {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

export interface TableRow {
  cells: unknown[];
  object?: unknown;
}

export interface Table {
  kind: 'Table';
  apiVersion: string;
  metadata: { resourceVersion: string };
  columnDefinitions?: TableColumn[];
  rows: TableRow[];
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

export const podColumns: TableColumn[] = [
  { name: 'Name', type: 'string', format: 'name', description: 'Name must be unique within a namespace.', priority: 0 },
  { name: 'Ready', type: 'string', format: '', description: 'The aggregate readiness state of this pod for accepting traffic.', priority: 0 },
  { name: 'Status', type: 'string', format: '', description: 'The aggregate status of the containers in this pod.', priority: 0 },
  { name: 'Restarts', type: 'string', format: '', description: 'The number of times the containers in this pod have been restarted.', priority: 0 },
  { name: 'Age', type: 'string', format: '', description: 'CreationTimestamp is a timestamp representing the server time when this object was created.', priority: 0 },
  { name: 'IP', type: 'string', format: '', description: 'IP address allocated to the pod.', priority: 1 },
  { name: 'Node', type: 'string', format: '', description: 'Name of the node this pod runs on.', priority: 1 },
  { name: 'Nominated Node', type: 'string', format: '', description: 'Name of the node nominated for this pod.', priority: 1 },
  { name: 'Readiness Gates', type: 'string', format: '', description: 'Pod readiness gates.', priority: 1 },
];

/** Which Table version the Accept header asks for, if any (v1 preferred, as kubectl lists it first). */
export function acceptsTable(accept: string | undefined): string | undefined {
  if (accept === undefined) return undefined;
  for (const part of accept.split(',')) {
    const params = new Map(
      part
        .split(';')
        .slice(1)
        .map((p) => p.trim().split('=') as [string, string]),
    );
    if (params.get('as') === 'Table' && params.get('g') === 'meta.k8s.io') {
      const v = params.get('v');
      if (v === 'v1' || v === 'v1beta1') return `meta.k8s.io/${v}`;
    }
  }
  return undefined;
}

/** Kubernetes' duration.HumanDuration, as the AGE column shows it. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const d = Math.floor(hours / 24) % 365;
    return d === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${d}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

interface ContainerStatus {
  ready: boolean;
  restartCount: number;
  state: { waiting?: { reason?: string }; terminated?: { reason?: string } };
}

export function podRow(pod: PodObject, includeObject: IncludeObject, now: number): TableRow {
  const statuses = (pod.status.containerStatuses ?? []) as ContainerStatus[];
  const ready = statuses.filter((s) => s.ready).length;
  let status: string = pod.status.phase;
  if (typeof pod.status.reason === 'string') status = pod.status.reason;
  for (const s of statuses) {
    const reason = s.state.waiting?.reason ?? (status === pod.status.phase ? s.state.terminated?.reason : undefined);
    if (reason !== undefined && reason !== '') status = reason;
  }
  if (pod.metadata.deletionTimestamp !== undefined) status = 'Terminating';
  const restarts = statuses.reduce((n, s) => n + s.restartCount, 0);
  const row: TableRow = {
    cells: [
      pod.metadata.name,
      `${ready}/${pod.spec.containers.length}`,
      status,
      String(restarts),
      humanDuration(now - Date.parse(pod.metadata.creationTimestamp)),
      pod.status.podIP === '' ? '<none>' : pod.status.podIP,
      pod.spec.nodeName === '' ? '<none>' : pod.spec.nodeName,
      '<none>',
      '<none>',
    ],
  };
  if (includeObject === 'Object') row.object = pod;
  else if (includeObject === 'Metadata') row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: pod.metadata };
  return row;
}

export function podTable(pods: PodObject[], options: { apiVersion: string; resourceVersion: number; includeObject: IncludeObject; withColumns: boolean; now: number }): Table {
  const table: Table = {
    kind: 'Table',
    apiVersion: options.apiVersion,
    metadata: { resourceVersion: String(options.resourceVersion) },
    rows: pods.map((p) => podRow(p, options.includeObject, options.now)),
  };
  if (options.withColumns) table.columnDefinitions = podColumns;
  return table;
}
