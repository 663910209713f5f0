/**
 * Activity › Kubernetes: what the kube proxies saw and decided (GET /api/v1/kube-events), newest first: one row per
 * Kubernetes API request and one per exec/attach/port-forward session with the command that ran, filtered by type,
 * cluster, user, namespace, verb, decision and time.
 */
import { listDevices, listUsers } from '../objects.ts';
import { Badge, Chips, LoadState, PageHeader, Table, Time, useLoad } from '../ui.tsx';
import { FilterBar, filterQuery, LoadOlder, useEventPages, useFilters } from './filters.tsx';
import type { FilterField } from './filters.tsx';

interface KubeEvent {
  id: string;
  time: string;
  type: 'kube-request' | 'kube-session';
  clusterName: string;
  kubeProxy: string;
  user: string;
  userId?: string;
  groups: string[];
  device?: string;
  verb: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  apiGroup?: string;
  path: string;
  code: number;
  latencyMs: number;
  decision: 'allow' | 'deny';
  reason?: string;
  source: string;
  command?: string[];
  container?: string;
  interactive?: boolean;
  tty?: boolean;
  durationMs?: number;
  transport?: 'websocket' | 'spdy';
}

const FIELDS: FilterField[] = [
  { key: 'type', label: 'Type', options: [{ value: '', label: 'Any' }, { value: 'kube-request', label: 'Requests' }, { value: 'kube-session', label: 'Sessions' }] },
  { key: 'cluster', label: 'Cluster', placeholder: 'any' },
  { key: 'user', label: 'User', placeholder: 'Kubernetes username' },
  { key: 'namespace', label: 'Namespace', placeholder: 'any' },
  { key: 'verb', label: 'Verb', placeholder: 'e.g. list, create' },
  { key: 'decision', label: 'Decision', options: [{ value: '', label: 'Any' }, { value: 'allow', label: 'Allow' }, { value: 'deny', label: 'Deny' }] },
  { key: 'since', label: 'From (UTC)', type: 'datetime' },
  { key: 'until', label: 'To (UTC)', type: 'datetime' },
];

/** Causeway names for the ids in events: users by id, devices by id (their hostname). */
interface Directory { users: Map<string, string>; devices: Map<string, string> }

/** A command as a shell would show it: arguments with spaces or quotes are single-quoted. Text only, never markup. */
export function commandText(command: readonly string[]): string {
  return command.map((arg) => (/^[A-Za-z0-9_./:=@%+,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function duration(ms: number | undefined): string {
  if (ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  return minutes < 60 ? `${minutes} min ${Math.round(seconds % 60)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function codeTone(code: number) {
  if (code < 300) return 'green' as const;
  if (code < 400) return 'blue' as const;
  if (code < 500) return 'amber' as const;
  return 'red' as const;
}

function resourceOf(e: KubeEvent): string | undefined {
  if (e.resource === undefined) return undefined;
  return e.subresource === undefined ? e.resource : `${e.resource}/${e.subresource}`;
}

function objectOf(e: KubeEvent): string | undefined {
  if (e.namespace === undefined && e.name === undefined) return undefined;
  return e.namespace === undefined ? e.name : e.name === undefined ? e.namespace : `${e.namespace}/${e.name}`;
}

function SessionCell({ event }: { event: KubeEvent }) {
  if (event.type !== 'kube-session') return <span className="muted">—</span>;
  const flags = [
    ...(event.interactive === true ? ['interactive'] : []),
    ...(event.tty === true ? ['tty'] : []),
    ...(event.transport === undefined ? [] : [event.transport]),
    ...(event.container === undefined ? [] : [`container ${event.container}`]),
  ];
  return (
    <div className="cell-stack">
      {event.command !== undefined && event.command.length > 0 ? <code className="kube-command">{commandText(event.command)}</code> : null}
      <div className="kube-session-meta">
        <Chips values={flags} />
        <span className="muted small" title="How long the session lasted">{duration(event.durationMs)}</span>
      </div>
    </div>
  );
}

export function KubeEventsPage() {
  const filters = useFilters();
  const applied = filters.applied;
  const directory = useLoad(async (signal): Promise<Directory> => {
    const [users, devices] = await Promise.all([listUsers(signal), listDevices(signal)]);
    return {
      users: new Map(users.map((u) => [u.id, u.name])),
      devices: new Map(devices.flatMap((d) => (d.hostname === null || d.hostname === undefined ? [] : [[d.id, d.hostname] as [string, string]]))),
    };
  }, []);
  const names = directory.data;
  const params = filterQuery(applied);
  const pages = useEventPages<KubeEvent>('/kube-events', { ...params, user: params.user?.trim() === '' ? undefined : params.user?.trim() }, [JSON.stringify(applied)]);
  return (
    <>
      <PageHeader title="Kubernetes" description="Every request through the kube proxies, and every exec, attach and port-forward session with the command that ran: who, from which device, on which cluster, allowed or denied. Newest first." />
      <FilterBar fields={FIELDS} {...filters.bar} />
      <LoadState loaded={pages.loaded}>
        <Table
          label="Kubernetes events"
          rows={pages.events}
          rowKey={(e) => e.id}
          empty="No Kubernetes events match."
          columns={[
            { header: 'Time', cell: (e) => <Time iso={e.time} short /> },
            { header: 'Decision', cell: (e) => (
              <div className="cell-stack">
                <span><Badge tone={e.decision === 'allow' ? 'green' : 'red'}>{e.decision}</Badge></span>
                {e.reason === undefined ? null : <span className="muted small">{e.reason}</span>}
              </div>
            ) },
            { header: 'User', cell: (e) => {
              const device = e.device === undefined ? undefined : names?.devices.get(e.device);
              return (
                <div className="cell-stack">
                  <span title={`${(e.userId === undefined ? undefined : names?.users.get(e.userId)) ?? e.userId ?? ''} · groups: ${e.groups.join(', ')}`}>{e.user === '' ? <span className="muted">unauthenticated</span> : e.user}</span>
                  {e.device === undefined ? null : <span className="muted small" title={e.device}>{device ?? <span className="mono">{e.device.slice(0, 13)}</span>}</span>}
                </div>
              );
            } },
            { header: 'Cluster', cell: (e) => <span title={`kube proxy ${e.kubeProxy}`}>{e.clusterName}</span> },
            { header: 'Verb', cell: (e) => <span className="mono small">{e.verb}</span> },
            { header: 'Resource', cell: (e) => {
              const resource = resourceOf(e);
              if (resource === undefined) return <span className="mono small muted" title={e.path}>{e.path}</span>;
              return e.apiGroup === undefined || e.apiGroup === '' ? <span className="mono small">{resource}</span> : (
                <div className="cell-stack">
                  <span className="mono small">{resource}</span>
                  <span className="muted small">{e.apiGroup}</span>
                </div>
              );
            } },
            { header: 'Namespace / name', cell: (e) => {
              const object = objectOf(e);
              return object === undefined ? <span className="muted">—</span> : <span className="mono small">{object}</span>;
            } },
            { header: 'Code', className: 'num', cell: (e) => <Badge tone={codeTone(e.code)}>{String(e.code)}</Badge> },
            { header: 'Latency', className: 'num', cell: (e) => <span className="small">{duration(e.latencyMs)}</span> },
            { header: 'Session', cell: (e) => <SessionCell event={e} /> },
          ]}
        />
        <LoadOlder pages={pages} />
      </LoadState>
    </>
  );
}
