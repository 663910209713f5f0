/** Activity › Audit log: who changed what, with the object before and after. */
import { useState } from 'react';
import { query } from '../api.ts';
import { listDevices, listUsers } from '../objects.ts';
import { Badge, CodeBlock, LoadState, Modal, PageHeader, Table, Time, toYaml, useLoad } from '../ui.tsx';
import { FilterBar, filterQuery, LoadOlder, useEventPages, useFilters } from './filters.tsx';
import type { FilterField } from './filters.tsx';

interface AuditEvent { id: string; at: string; actor: string; action: string; kind: string; name: string; before?: unknown; after?: unknown }

const FIELDS: FilterField[] = [
  { key: 'actor', label: 'Actor', placeholder: 'any' },
  { key: 'action', label: 'Action', placeholder: 'e.g. update' },
  { key: 'kind', label: 'Kind', placeholder: 'e.g. Service' },
  { key: 'name', label: 'Name', placeholder: 'any' },
  { key: 'since', label: 'From (UTC)', type: 'datetime' },
  { key: 'until', label: 'To (UTC)', type: 'datetime' },
];

function actionTone(action: string) {
  if (/delete|ban|disable|revoke|disconnect/.test(action)) return 'red' as const;
  if (/create|add/.test(action)) return 'green' as const;
  return 'blue' as const;
}

export function AuditPage() {
  const filters = useFilters();
  const applied = filters.applied;
  const [shown, setShown] = useState<AuditEvent | undefined>(undefined);
  const names = useLoad(async (signal) => {
    const [users, devices] = await Promise.all([listUsers(signal), listDevices(signal)]);
    return new Map<string, string>([...users.map((u) => [u.id, u.name] as [string, string]), ...devices.flatMap((d) => (d.hostname === null || d.hostname === undefined ? [] : [[d.id, d.hostname] as [string, string]]))]);
  }, []);
  const nameOf = (e: AuditEvent) => ((e.kind === 'User' || e.kind === 'Device') ? names.data?.get(e.name) : undefined);
  const pages = useEventPages<AuditEvent>('/audit', filterQuery(applied), [JSON.stringify(applied)]);
  return (
    <>
      <PageHeader title="Audit log" description="Every change to users, devices, tokens and specs: who made it, when, and the object before and after." />
      <FilterBar
        fields={FIELDS}
        {...filters.bar}
        actions={<a className="button button-ghost" href={`/api/v1/audit/export${query(filterQuery(applied))}`} download="causeway-audit.jsonl">Export JSON lines</a>}
      />
      <LoadState loaded={pages.loaded}>
        <Table
          label="Audit events"
          rows={pages.events}
          rowKey={(e) => e.id}
          empty="No audit events match."
          columns={[
            { header: 'Time', cell: (e) => <Time iso={e.at} short /> },
            { header: 'Actor', cell: (e) => <span className="mono small">{e.actor}</span> },
            { header: 'Action', cell: (e) => <Badge tone={actionTone(e.action)}>{e.action}</Badge> },
            { header: 'Object', cell: (e) => {
              const name = nameOf(e);
              return name === undefined
                ? <span><span className="muted">{e.kind}</span> <strong>{e.name}</strong></span>
                : <span title={e.name}><span className="muted">{e.kind}</span> <strong>{name}</strong> <span className="muted small mono">{e.name.slice(0, 8)}</span></span>;
            } },
            { header: '', className: 'actions', cell: (e) => <button type="button" className="button button-small button-ghost" onClick={() => setShown(e)}>Changes</button> },
          ]}
        />
        <LoadOlder pages={pages} />
      </LoadState>
      {shown === undefined ? null : (
        <Modal title={`${shown.action} ${shown.kind} ${shown.name}`} onClose={() => setShown(undefined)} wide>
          <p className="muted small">By {shown.actor} at <Time iso={shown.at} />.</p>
          <div className="diff">
            <CodeBlock label="Before" text={shown.before === undefined || shown.before === null ? '(nothing)' : toYaml(shown.before)} />
            <CodeBlock label="After" text={shown.after === undefined || shown.after === null ? '(nothing)' : toYaml(shown.after)} />
          </div>
        </Modal>
      )}
    </>
  );
}
