/**
 * What the events and audit pages share: the filter bar (text fields, a decision, a time window), its draft and
 * applied values, and newest-first paging with "Load older events".
 */
import { useState } from 'react';
import type { ReactNode } from 'react';
import { api, query } from '../api.ts';
import { useLoad } from '../ui.tsx';
import type { Loaded } from '../ui.tsx';

export interface FilterField {
  key: string;
  label: string;
  placeholder?: string;
  options?: Array<{ value: string; label: string }>;
  type?: 'text' | 'datetime';
}

/** datetime-local (UTC) → ISO; empty stays empty. */
export function isoOf(local: string | undefined): string | undefined {
  if (local === undefined || local === '') return undefined;
  return `${local}:00Z`;
}

/** The query of applied filters: the time window as ISO. */
export function filterQuery(values: Record<string, string>): Record<string, string | undefined> {
  return { ...values, since: isoOf(values.since), until: isoOf(values.until) };
}

/** The filters being typed (`values`, for the FilterBar) and those applied by Apply; Reset clears both. */
export function useFilters(): {
  applied: Record<string, string>;
  bar: { values: Record<string, string>; onChange: (key: string, value: string) => void; onSubmit: () => void; onReset: () => void };
} {
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [applied, setApplied] = useState<Record<string, string>>({});
  return {
    applied,
    bar: {
      values: draft,
      onChange: (key, value) => setDraft((d) => ({ ...d, [key]: value })),
      onSubmit: () => setApplied(draft),
      onReset: () => { setDraft({}); setApplied({}); },
    },
  };
}

export interface EventPage<E> { events: E[]; next?: string }

/**
 * A newest-first event list from `path` with `params`, 100 at a time: the first page loads (again) when `deps` change,
 * and `loadOlder` appends the next page after the cursor; a new first page forgets the older ones.
 */
export function useEventPages<E>(path: string, params: Record<string, string | undefined>, deps: readonly unknown[]): {
  loaded: Loaded<EventPage<E>>;
  events: E[];
  next: string | undefined;
  loadOlder: () => void;
} {
  const [older, setOlder] = useState<EventPage<E>>({ events: [] });
  const loaded = useLoad(async (signal) => {
    const page = await api<EventPage<E>>('GET', `${path}${query({ ...params, limit: '100' })}`, { signal });
    setOlder({ events: [], ...(page.next === undefined ? {} : { next: page.next }) });
    return page;
  }, deps);
  const next = older.events.length > 0 ? older.next : loaded.data?.next;
  return {
    loaded,
    events: [...(loaded.data?.events ?? []), ...older.events],
    next,
    loadOlder: () => {
      if (next === undefined) return;
      void api<EventPage<E>>('GET', `${path}${query({ ...params, limit: '100', cursor: next })}`).then((page) => setOlder((o) => ({ events: [...o.events, ...page.events], ...(page.next === undefined ? {} : { next: page.next }) })));
    },
  };
}

/** The "Load older events" button, while there is an older page. */
export function LoadOlder({ pages }: { pages: { next: string | undefined; loadOlder: () => void } }) {
  if (pages.next === undefined) return null;
  return (
    <div className="load-more">
      <button type="button" className="button button-ghost" onClick={pages.loadOlder}>Load older events</button>
    </div>
  );
}

export function FilterBar({ fields, values, onChange, onSubmit, onReset, actions }: {
  fields: FilterField[]; values: Record<string, string>; onChange: (key: string, value: string) => void; onSubmit: () => void; onReset: () => void; actions?: ReactNode;
}) {
  return (
    <form className="filter-bar" aria-label="Filters" onSubmit={(event) => { event.preventDefault(); onSubmit(); }}>
      <div className="filter-fields">
      {fields.map((f) => (
        <label key={f.key} className="filter">
          <span>{f.label}</span>
          {f.options !== undefined ? (
            <select name={f.key} value={values[f.key] ?? ''} onChange={(e) => onChange(f.key, e.target.value)}>
              {f.options.map((o) => <option key={o.value} value={o.value}>{o.label}</option>)}
            </select>
          ) : (
            <input name={f.key} type={f.type === 'datetime' ? 'datetime-local' : 'text'} value={values[f.key] ?? ''} placeholder={f.placeholder} onChange={(e) => onChange(f.key, e.target.value)} autoComplete="off" />
          )}
        </label>
      ))}
      </div>
      <div className="filter-actions">
        <button type="submit" className="button button-primary">Apply</button>
        <button type="button" className="button button-ghost" onClick={onReset}>Reset</button>
        {actions}
      </div>
    </form>
  );
}
