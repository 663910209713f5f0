/**
 * The console's building blocks: page header, tables, badges, dialogs, form fields that show the
 * server's problems, the YAML view. Everything renders text as text (React escapes it); nothing here
 * uses dangerouslySetInnerHTML, and styles live in styles.css (the CSP allows no inline <style>).
 */
import { createContext, useCallback, useContext, useEffect, useId, useRef, useState } from 'react';
import type { ReactNode } from 'react';
import { createPortal } from 'react-dom';
import { stringify } from 'yaml';
import { errorMessage } from './api.ts';
import type { ConsoleSession, Problem } from './api.ts';

// --- session -------------------------------------------------------------------------------------

export const SessionContext = createContext<ConsoleSession | null>(null);

export function useSession(): ConsoleSession {
  const session = useContext(SessionContext);
  if (session === null) throw new Error('no console session');
  return session;
}

/** Whether this session may write objects of `kind` (undefined: users, devices, tokens, sessions: unrestricted admins only). */
export function useCanWrite(kind?: string): boolean {
  const { role, kinds } = useSession();
  if (role !== 'admin') return false;
  if (kinds === null || kinds.length === 0) return true;
  return kind !== undefined && kinds.includes(kind);
}

// --- loading -------------------------------------------------------------------------------------

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  loading: boolean;
  reload: () => void;
}

export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: readonly unknown[], pollMs?: number): Loaded<T> {
  const [state, setState] = useState<{ data: T | undefined; error: string | undefined; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    load(controller.signal).then(
      (data) => { if (!controller.signal.aborted) setState({ data, error: undefined, loading: false }); },
      (err: unknown) => { if (!controller.signal.aborted) setState((s) => ({ data: s.data, error: errorMessage(err), loading: false })); },
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (pollMs !== undefined) timer = setTimeout(reload, pollMs);
    return () => {
      controller.abort();
      if (timer !== undefined) clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { ...state, reload };
}

// --- layout --------------------------------------------------------------------------------------

export function PageHeader({ title, description, actions }: { title: string; description?: ReactNode; actions?: ReactNode }) {
  return (
    <header className="page-header">
      <div>
        <h1>{title}</h1>
        {description === undefined ? null : <p className="page-description">{description}</p>}
      </div>
      {actions === undefined ? null : <div className="page-actions">{actions}</div>}
    </header>
  );
}

export function Card({ title, actions, children, className }: { title?: ReactNode; actions?: ReactNode; children: ReactNode; className?: string }) {
  return (
    <section className={`card ${className ?? ''}`}>
      {title === undefined && actions === undefined ? null : (
        <div className="card-header">
          {title === undefined ? <span /> : <h2>{title}</h2>}
          {actions}
        </div>
      )}
      <div className="card-body">{children}</div>
    </section>
  );
}

export function Notice({ tone = 'info', children }: { tone?: 'info' | 'error' | 'success' | 'warning'; children: ReactNode }) {
  return <div className={`notice notice-${tone}`} role={tone === 'error' ? 'alert' : 'status'}>{children}</div>;
}

export function LoadState({ loaded, children }: { loaded: Loaded<unknown>; children: ReactNode }) {
  if (loaded.error !== undefined && loaded.data === undefined) return <Notice tone="error">Could not load: {loaded.error}</Notice>;
  if (loaded.data === undefined) return <div className="loading">Loading…</div>;
  return (
    <>
      {loaded.error === undefined ? null : <Notice tone="warning">Could not refresh: {loaded.error}</Notice>}
      {children}
    </>
  );
}

// --- tables --------------------------------------------------------------------------------------

export interface Column<T> {
  header: string;
  cell: (row: T) => ReactNode;
  className?: string;
}

export function Table<T>({ columns, rows, rowKey, empty, label }: { columns: Column<T>[]; rows: T[]; rowKey: (row: T) => string; empty: ReactNode; label: string }) {
  return (
    <div className="table-wrap">
      <table className="table" aria-label={label}>
        <thead>
          <tr>{columns.map((c) => <th key={c.header} className={c.className}>{c.header}</th>)}</tr>
        </thead>
        <tbody>
          {rows.length === 0 ? (
            <tr><td className="empty" colSpan={columns.length}>{empty}</td></tr>
          ) : rows.map((row) => (
            <tr key={rowKey(row)} data-row={rowKey(row)}>
              {columns.map((c) => <td key={c.header} className={c.className}>{c.cell(row)}</td>)}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export type Tone = 'neutral' | 'green' | 'amber' | 'red' | 'blue' | 'violet';

export function Badge({ tone = 'neutral', children, title }: { tone?: Tone; children: ReactNode; title?: string }) {
  return <span className={`badge badge-${tone}`} title={title}>{children}</span>;
}

export function Chips({ values, empty = '—' }: { values: readonly string[]; empty?: string }) {
  if (values.length === 0) return <span className="muted">{empty}</span>;
  return <span className="chips">{values.map((v) => <span key={v} className="chip">{v}</span>)}</span>;
}

export function trustTone(level: string | undefined): Tone {
  switch (level) {
    case 'High': return 'green';
    case 'Medium': return 'blue';
    case 'Low': return 'amber';
    case 'AlwaysDeny': return 'red';
    default: return 'neutral';
  }
}

// --- time and sizes ------------------------------------------------------------------------------

export function formatTime(iso: string | null | undefined): string {
  if (iso === null || iso === undefined || iso === '') return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function ago(iso: string | null | undefined, now: number = Date.now()): string {
  if (iso === null || iso === undefined || iso === '') return 'never';
  const ms = now - Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  if (ms < 0) return 'just now';
  const s = Math.floor(ms / 1000);
  if (s < 10) return 'just now';
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ago`;
  return `${Math.floor(h / 24)}d ago`;
}

/** Dense, for tables: `27 Nov 21:43:07` (the year only when it is not this one). */
export function formatShortTime(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const sameYear = date.getFullYear() === new Date().getFullYear();
  const day = date.toLocaleDateString(undefined, { day: 'numeric', month: 'short', ...(sameYear ? {} : { year: 'numeric' }) });
  const time = date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  return `${day} ${time}`;
}

export function Time({ iso, relative = false, short = false }: { iso: string | null | undefined; relative?: boolean; short?: boolean }) {
  if (iso === null || iso === undefined || iso === '') return <span className="muted">never</span>;
  return <time dateTime={iso} title={formatTime(iso)} className="nowrap">{relative ? ago(iso) : short ? formatShortTime(iso) : formatTime(iso)}</time>;
}

export function formatBytes(bytes: number | undefined): string {
  if (bytes === undefined || !Number.isFinite(bytes)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

// --- dialogs -------------------------------------------------------------------------------------

export function Modal({ title, onClose, children, footer, wide }: { title: string; onClose: () => void; children: ReactNode; footer?: ReactNode; wide?: boolean }) {
  const titleId = useId();
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => { if (event.key === 'Escape') onClose(); };
    window.addEventListener('keydown', onKey);
    ref.current?.focus();
    return () => window.removeEventListener('keydown', onKey);
  }, [onClose]);
  // A portal: a dialog opened from a table cell must not inherit the cell's alignment or wrapping.
  return createPortal(
    <div className="modal-backdrop" onMouseDown={(event) => { if (event.target === event.currentTarget) onClose(); }}>
      <div className={`modal ${wide === true ? 'modal-wide' : ''}`} role="dialog" aria-modal="true" aria-labelledby={titleId} tabIndex={-1} ref={ref}>
        <div className="modal-header">
          <h2 id={titleId}>{title}</h2>
          <button type="button" className="icon-button" aria-label="Close" onClick={onClose}>×</button>
        </div>
        <div className="modal-body">{children}</div>
        {footer === undefined ? null : <div className="modal-footer">{footer}</div>}
      </div>
    </div>,
    document.body,
  );
}

/** An action that asks first (in the page, not window.confirm), then runs and reports its error. */
export function ConfirmButton({ label, title, message, confirmLabel, danger, onConfirm, className }: {
  label: string; title: string; message: ReactNode; confirmLabel?: string; danger?: boolean; onConfirm: () => Promise<unknown>; className?: string;
}) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const close = useCallback(() => { if (!busy) { setOpen(false); setError(undefined); } }, [busy]);
  return (
    <>
      <button type="button" className={className ?? `button button-small ${danger === true ? 'button-danger-ghost' : 'button-ghost'}`} onClick={() => setOpen(true)}>{label}</button>
      {open ? (
        <Modal
          title={title}
          onClose={close}
          footer={(
            <>
              <button type="button" className="button button-ghost" onClick={close} disabled={busy}>Cancel</button>
              <button
                type="button"
                className={`button ${danger === true ? 'button-danger' : 'button-primary'}`}
                disabled={busy}
                onClick={() => {
                  setBusy(true);
                  setError(undefined);
                  onConfirm().then(() => { setBusy(false); setOpen(false); }, (err: unknown) => { setBusy(false); setError(errorMessage(err)); });
                }}
              >
                {busy ? 'Working…' : confirmLabel ?? label}
              </button>
            </>
          )}
        >
          <div className="confirm-message">{message}</div>
          {error === undefined ? null : <Notice tone="error">{error}</Notice>}
        </Modal>
      ) : null}
    </>
  );
}

// --- YAML ----------------------------------------------------------------------------------------

export interface SpecDocument {
  apiVersion: string;
  kind: string;
  metadata: { name: string; description?: string; link?: string; version?: number; createdAt?: string; createdBy?: string; updatedAt?: string; updatedBy?: string };
  spec: Record<string, unknown>;
}

/** The document as `causeway apply -f` takes it: the server's bookkeeping (version, times, actors) left out. */
export function applyable(doc: SpecDocument): SpecDocument {
  const { name, description, link } = doc.metadata;
  return {
    apiVersion: doc.apiVersion,
    kind: doc.kind,
    metadata: { name, ...(description === undefined ? {} : { description }), ...(link === undefined ? {} : { link }) },
    spec: doc.spec,
  };
}

export function toYaml(value: unknown): string {
  return stringify(value, { lineWidth: 0 });
}

export function CopyButton({ text, label = 'Copy' }: { text: string; label?: string }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  return (
    <button
      type="button"
      className="button button-small button-ghost"
      onClick={() => {
        navigator.clipboard.writeText(text).then(() => setCopied('yes'), () => setCopied('failed'));
        setTimeout(() => setCopied('no'), 2000);
      }}
    >
      {copied === 'yes' ? 'Copied' : copied === 'failed' ? 'Select and copy' : label}
    </button>
  );
}

export function CodeBlock({ text, label }: { text: string; label: string }) {
  return (
    <div className="code-block">
      <div className="code-block-bar"><span>{label}</span><CopyButton text={text} /></div>
      <pre><code>{text}</code></pre>
    </div>
  );
}

export function YamlButton({ doc, label = 'YAML' }: { doc: SpecDocument; label?: string }) {
  const [open, setOpen] = useState(false);
  const text = toYaml(applyable(doc));
  return (
    <>
      <button type="button" className="button button-small button-ghost" onClick={() => setOpen(true)} aria-label={`View ${doc.kind} ${doc.metadata.name} as YAML`}>{label}</button>
      {open ? (
        <Modal title={`${doc.kind} ${doc.metadata.name}`} onClose={() => setOpen(false)} wide>
          <p className="muted small">The spec as <code>causeway apply -f</code> takes it.</p>
          <CodeBlock text={text} label="YAML" />
        </Modal>
      ) : null}
    </>
  );
}

// --- forms ---------------------------------------------------------------------------------------

/** The problems that belong to a field: its path or anything below it (`spec.access[0]` owns `spec.access[0].roles`). */
export function problemsAt(problems: readonly Problem[], path: string): Problem[] {
  return problems.filter((p) => p.path === path || p.path.startsWith(`${path}.`) || p.path.startsWith(`${path}[`));
}

export function Field({ label, hint, problems, path, children, htmlFor, wide }: {
  label: string; hint?: ReactNode; problems?: readonly Problem[]; path?: string; children: ReactNode; htmlFor?: string; wide?: boolean;
}) {
  const own = path === undefined || problems === undefined ? [] : problemsAt(problems, path);
  return (
    <div className={`field ${own.length > 0 ? 'field-invalid' : ''} ${wide === true ? 'field-wide' : ''}`} data-path={path}>
      <label className="field-label" htmlFor={htmlFor}>{label}</label>
      {children}
      {hint === undefined ? null : <div className="field-hint">{hint}</div>}
      {own.map((p) => (
        <div className="field-error" role="alert" key={`${p.path}:${p.message}`} data-problem-path={p.path}>
          {p.path === path ? '' : `${subPath(p.path.slice(path?.length ?? 0))}: `}{p.message}
        </div>
      ))}
    </div>
  );
}

/** `[0]` → `item 1`, `.start` → `start`, `[1].roles` → `item 2 roles`: where inside a field a problem is. */
function subPath(rest: string): string {
  return rest.replace(/^\./, '').replace(/\[(\d+)\]\.?/g, (_m, index: string) => `item ${Number(index) + 1} `).trim();
}

/** Problems about a whole group of fields (`spec.backend`), not one of them. */
export function ExactProblems({ problems, path }: { problems: readonly Problem[]; path: string }) {
  const own = problems.filter((p) => p.path === path);
  if (own.length === 0) return null;
  return (
    <div className="field field-invalid field-wide" data-path={path}>
      {own.map((p) => <div className="field-error" role="alert" key={p.message} data-problem-path={p.path}>{p.message}</div>)}
    </div>
  );
}

/** Problems no field on the form claims, shown above the buttons. */
export function OtherProblems({ problems, claimed }: { problems: readonly Problem[]; claimed: readonly string[] }) {
  const rest = problems.filter((p) => !claimed.some((path) => problemsAt([p], path).length > 0));
  if (rest.length === 0) return null;
  return (
    <Notice tone="error">
      <ul className="problem-list">
        {rest.map((p) => <li key={`${p.path}:${p.message}`}><code>{p.path === '' ? '(document)' : p.path}</code> {p.message}</li>)}
      </ul>
    </Notice>
  );
}

/** Comma- or newline-separated text as a list, blanks dropped. */
export function splitList(text: string): string[] {
  return text.split(/[,\n]/).map((s) => s.trim()).filter((s) => s !== '');
}

export function Checkbox({ label, checked, onChange, name }: { label: ReactNode; checked: boolean; onChange: (value: boolean) => void; name?: string }) {
  return (
    <label className="checkbox">
      <input type="checkbox" name={name} checked={checked} onChange={(event) => onChange(event.target.checked)} />
      <span>{label}</span>
    </label>
  );
}

export function CheckboxGroup<T extends string>({ options, values, onChange, name }: { options: readonly T[]; values: readonly T[]; onChange: (values: T[]) => void; name: string }) {
  return (
    <div className="checkbox-group" role="group">
      {options.map((option) => (
        <Checkbox
          key={option}
          name={`${name}-${option}`}
          label={option}
          checked={values.includes(option)}
          onChange={(on) => onChange(on ? [...values, option] : values.filter((v) => v !== option))}
        />
      ))}
    </div>
  );
}
