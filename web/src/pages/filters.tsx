/** The filter bar shared by the events and audit pages: text fields, a decision, a time window. */
import type { ReactNode } from 'react';

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
