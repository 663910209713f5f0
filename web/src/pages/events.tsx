/** Activity › Events: every access decision, filtered by user, device, service, decision, reason and time; exported as JSON lines. */
import { query } from '../api.ts';
import { listDevices, listUsers } from '../objects.ts';
import { Badge, Chips, formatBytes, LoadState, PageHeader, Table, Time, useLoad } from '../ui.tsx';
import { FilterBar, filterQuery, LoadOlder, useEventPages, useFilters } from './filters.tsx';
import type { FilterField } from './filters.tsx';

interface AccessEvent {
  id: string;
  time: string;
  decision: string;
  reasons?: string[];
  accessTier?: string;
  service?: string;
  sni?: string;
  target?: string;
  via?: string;
  connector?: string;
  user?: string;
  device?: string;
  source?: string;
  bytesUp?: number;
  bytesDown?: number;
  durationMs?: number;
  closeReason?: string;
}

const FIELDS: FilterField[] = [
  { key: 'user', label: 'User', placeholder: 'name or id' },
  { key: 'device', label: 'Device', placeholder: 'any' },
  { key: 'service', label: 'Service', placeholder: 'any' },
  { key: 'decision', label: 'Decision', options: [{ value: '', label: 'Any' }, { value: 'allow', label: 'Allow' }, { value: 'deny', label: 'Deny' }, { value: 'would-deny', label: 'Would deny' }] },
  { key: 'reason', label: 'Reason', placeholder: 'e.g. no-matching-role' },
  { key: 'since', label: 'From (UTC)', type: 'datetime' },
  { key: 'until', label: 'To (UTC)', type: 'datetime' },
];

function decisionTone(decision: string) {
  return decision === 'allow' ? 'green' : decision === 'deny' ? 'red' : 'amber';
}

/** Events name users and devices by id; people type names. */
interface Directory { users: Map<string, string>; userIds: Map<string, string>; devices: Map<string, string> }

function eventQuery(values: Record<string, string>, directory: Directory | undefined): Record<string, string | undefined> {
  const user = values.user?.trim();
  return { ...filterQuery(values), user: user === undefined || user === '' ? undefined : directory?.userIds.get(user) ?? user };
}

export function EventsPage() {
  const filters = useFilters();
  const applied = filters.applied;
  const directory = useLoad(async (signal): Promise<Directory> => {
    const [users, devices] = await Promise.all([listUsers(signal), listDevices(signal)]);
    return {
      users: new Map(users.map((u) => [u.id, u.name])),
      userIds: new Map(users.map((u) => [u.name, u.id])),
      devices: new Map(devices.flatMap((d) => (d.hostname === null || d.hostname === undefined ? [] : [[d.id, d.hostname] as [string, string]]))),
    };
  }, []);
  const names = directory.data;
  const pages = useEventPages<AccessEvent>('/events', eventQuery(applied, names), [JSON.stringify(applied), names]);
  const exportHref = `/api/v1/events/export${query(eventQuery(applied, names))}`;
  return (
    <>
      <PageHeader title="Events" description="Every decision the access tiers made: who, from which device, to which service, allowed or denied and why. Newest first." />
      <FilterBar
        fields={FIELDS}
        {...filters.bar}
        actions={<a className="button button-ghost" href={exportHref} download="causeway-events.jsonl">Export JSON lines</a>}
      />
      <LoadState loaded={pages.loaded}>
        <Table
          label="Access events"
          rows={pages.events}
          rowKey={(e) => e.id}
          empty="No events match."
          columns={[
            { header: 'Time', cell: (e) => <Time iso={e.time} short /> },
            { header: 'Decision', cell: (e) => <Badge tone={decisionTone(e.decision)}>{e.decision}</Badge> },
            { header: 'User', cell: (e) => (e.user === undefined ? <span className="muted">—</span> : <span title={e.user}>{names?.users.get(e.user) ?? e.user}</span>) },
            { header: 'Device', cell: (e) => (e.device === undefined ? <span className="muted">—</span> : names?.devices.get(e.device) !== undefined
              ? <div className="cell-stack"><span>{names.devices.get(e.device)}</span><span className="muted small mono">{e.device.slice(0, 8)}</span></div>
              : <span className="mono small">{e.device.slice(0, 13)}</span>) },
            { header: 'Service', cell: (e) => <div className="cell-stack"><span>{e.service ?? <span className="muted">{e.sni ?? '—'}</span>}</span><span className="muted small">{e.accessTier}{e.via === 'connector' ? ` → ${e.connector ?? 'connector'}` : ''}</span></div> },
            { header: 'Reasons', cell: (e) => <Chips values={[...(e.reasons ?? []), ...(e.closeReason === undefined ? [] : [`closed: ${e.closeReason}`])]} /> },
            { header: 'Source', cell: (e) => <span className="mono small">{e.source ?? '—'}</span> },
            { header: 'Traffic', className: 'num', cell: (e) => (e.bytesUp === undefined && e.bytesDown === undefined ? <span className="muted">—</span> : <span className="small">↑ {formatBytes(e.bytesUp)} ↓ {formatBytes(e.bytesDown)}</span>) },
          ]}
        />
        <LoadOlder pages={pages} />
      </LoadState>
    </>
  );
}
