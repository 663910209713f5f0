/** Activity › Events: every access decision, filtered by user, device, service, decision, reason and time; exported as JSON lines. */
import { useState } from 'react';
import { api, query } from '../api.ts';
import { Badge, Chips, formatBytes, LoadState, PageHeader, Table, Time, useLoad } from '../ui.tsx';
import { FilterBar, isoOf } from './filters.tsx';
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

interface Page { events: AccessEvent[]; next?: string }

const FIELDS: FilterField[] = [
  { key: 'user', label: 'User', placeholder: 'any' },
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

export function filterQuery(values: Record<string, string>): Record<string, string | undefined> {
  return { ...values, since: isoOf(values.since), until: isoOf(values.until) };
}

export function EventsPage() {
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [applied, setApplied] = useState<Record<string, string>>({});
  const [older, setOlder] = useState<{ events: AccessEvent[]; next?: string }>({ events: [] });
  const loaded = useLoad(async (signal) => {
    const page = await api<Page>('GET', `/events${query({ ...filterQuery(applied), limit: '100' })}`, { signal });
    setOlder({ events: [], ...(page.next === undefined ? {} : { next: page.next }) });
    return page;
  }, [JSON.stringify(applied)]);
  const events = [...(loaded.data?.events ?? []), ...older.events];
  const next = older.events.length > 0 ? older.next : loaded.data?.next;
  const exportHref = `/api/v1/events/export${query({ ...filterQuery(applied) })}`;
  return (
    <>
      <PageHeader title="Events" description="Every decision the access tiers made: who, from which device, to which service, allowed or denied and why. Newest first." />
      <FilterBar
        fields={FIELDS}
        values={draft}
        onChange={(key, value) => setDraft((d) => ({ ...d, [key]: value }))}
        onSubmit={() => setApplied(draft)}
        onReset={() => { setDraft({}); setApplied({}); }}
        actions={<a className="button button-ghost" href={exportHref} download="causeway-events.jsonl">Export JSON lines</a>}
      />
      <LoadState loaded={loaded}>
        <Table
          label="Access events"
          rows={events}
          rowKey={(e) => e.id}
          empty="No events match."
          columns={[
            { header: 'Time', cell: (e) => <Time iso={e.time} /> },
            { header: 'Decision', cell: (e) => <Badge tone={decisionTone(e.decision)}>{e.decision}</Badge> },
            { header: 'User', cell: (e) => e.user ?? <span className="muted">—</span> },
            { header: 'Device', cell: (e) => <span className="mono small">{e.device === undefined ? '—' : e.device.slice(0, 13)}</span> },
            { header: 'Service', cell: (e) => <div className="cell-stack"><span>{e.service ?? <span className="muted">{e.sni ?? '—'}</span>}</span><span className="muted small">{e.accessTier}{e.via === 'connector' ? ` → ${e.connector ?? 'connector'}` : ''}</span></div> },
            { header: 'Reasons', cell: (e) => <Chips values={[...(e.reasons ?? []), ...(e.closeReason === undefined ? [] : [`closed: ${e.closeReason}`])]} /> },
            { header: 'Source', cell: (e) => <span className="mono small">{e.source ?? '—'}</span> },
            { header: 'Traffic', className: 'num', cell: (e) => (e.bytesUp === undefined && e.bytesDown === undefined ? <span className="muted">—</span> : <span className="small">↑ {formatBytes(e.bytesUp)} ↓ {formatBytes(e.bytesDown)}</span>) },
          ]}
        />
        {next === undefined ? null : (
          <div className="load-more">
            <button type="button" className="button button-ghost" onClick={() => {
              void api<Page>('GET', `/events${query({ ...filterQuery(applied), limit: '100', cursor: next })}`).then((page) => setOlder((o) => ({ events: [...o.events, ...page.events], ...(page.next === undefined ? {} : { next: page.next }) })));
            }}>Load older events</button>
          </div>
        )}
      </LoadState>
    </>
  );
}
