/**
 * What every object form shares: loading the object being edited, saving it, and the server's problems; and the
 * YAML, Edit and Delete buttons of an object in a list.
 */
import { useEffect, useState } from 'react';
import type { ReactNode } from 'react';
import { ApiError, errorMessage } from './api.ts';
import type { Problem } from './api.ts';
import { deleteObject, getObject, putObject } from './objects.ts';
import { Link, useRouter } from './router.tsx';
import { Card, CodeBlock, ConfirmButton, Notice, OtherProblems, toYaml, YamlButton } from './ui.tsx';
import type { SpecDocument } from './ui.tsx';

export interface Existing {
  loading: boolean;
  doc: SpecDocument | undefined;
  error: string | undefined;
}

/** The stored object when editing (`name` given), nothing when creating. */
export function useExisting(kind: string, name: string | undefined): Existing {
  const [state, setState] = useState<Existing>({ loading: name !== undefined, doc: undefined, error: undefined });
  useEffect(() => {
    if (name === undefined) return undefined;
    const controller = new AbortController();
    getObject(kind, name, controller.signal).then(
      (doc) => setState({ loading: false, doc, error: undefined }),
      (err: unknown) => { if (!controller.signal.aborted) setState({ loading: false, doc: undefined, error: errorMessage(err) }); },
    );
    return () => controller.abort();
  }, [kind, name]);
  return state;
}

export interface Saver {
  saving: boolean;
  problems: Problem[];
  error: string | undefined;
  save: (doc: SpecDocument) => void;
}

/** Saves with PUT (create only when new, at the loaded version when editing), then goes to `back`. */
export function useSaver(existing: SpecDocument | undefined, back: string): Saver {
  const { navigate } = useRouter();
  const [saving, setSaving] = useState(false);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [error, setError] = useState<string | undefined>(undefined);
  const save = (doc: SpecDocument) => {
    setSaving(true);
    setProblems([]);
    setError(undefined);
    putObject(doc, existing?.metadata.version).then(
      () => navigate(back),
      (err: unknown) => {
        setSaving(false);
        // Bring the first problem into view once it is drawn.
        setTimeout(() => document.querySelector('.field-invalid, .form .notice-error')?.scrollIntoView({ block: 'center' }), 0);
        if (err instanceof ApiError && err.problems.length > 0) {
          setProblems(err.problems);
          const count = err.problems.length === 1 ? 'The server found 1 problem' : `The server found ${err.problems.length} problems`;
          setError(`${count}; nothing was saved. Each problem is shown with its field.`);
        } else if (err instanceof ApiError && err.code === 'VERSION_CONFLICT') {
          setError(`${err.message}. Someone changed it while you were editing: reload the page to see their version.`);
        } else {
          setError(errorMessage(err));
        }
      },
    );
  };
  return { saving, problems, error, save };
}

export function FormFooter({ saver, claimed, back, submitLabel }: { saver: Saver; claimed: string[]; back: string; submitLabel: string }) {
  return (
    <>
      {saver.error === undefined ? null : <Notice tone="error">{saver.error}</Notice>}
      <OtherProblems problems={saver.problems} claimed={claimed} />
      <div className="form-footer">
        <Link to={back} className="button button-ghost">Cancel</Link>
        <button type="submit" className="button button-primary" disabled={saver.saving}>{saver.saving ? 'Saving…' : submitLabel}</button>
      </div>
    </>
  );
}

export function FormSection({ title, description, children }: { title: string; description?: ReactNode; children: ReactNode }) {
  return (
    <fieldset className="form-section">
      <legend>{title}</legend>
      {description === undefined ? null : <p className="form-section-description">{description}</p>}
      <div className="form-grid">{children}</div>
    </fieldset>
  );
}

export function EditGuard({ existing, name, children }: { existing: Existing; name: string | undefined; children: ReactNode }) {
  if (name === undefined) return <>{children}</>;
  if (existing.loading) return <div className="loading">Loading…</div>;
  if (existing.error !== undefined) return <Notice tone="error">Could not load {name}: {existing.error}</Notice>;
  return <>{children}</>;
}

/** The document the form will send, as YAML: what `causeway apply -f` would take for the same result. */
export function SpecPreview({ doc }: { doc: SpecDocument }) {
  return (
    <Card title="As YAML" className="spec-preview">
      <p className="muted small spec-preview-note">The same object as a spec for <code>causeway apply -f</code>.</p>
      <CodeBlock text={toYaml(doc)} label="YAML" />
    </Card>
  );
}

/**
 * The actions of one object in a list: `children` first (page-specific buttons), then YAML; Edit (a link to
 * `base`/name) and Delete (confirmed, with `deleteMessage`, then `onDeleted`) only for those who may write.
 */
export function ObjectActions({ doc, kind, noun, base, canWrite, deleteMessage, onDeleted, children }: {
  doc: SpecDocument; kind: string; noun: string; base: string; canWrite: boolean; deleteMessage: ReactNode; onDeleted: () => void; children?: ReactNode;
}) {
  const name = doc.metadata.name;
  return (
    <div className="row-actions">
      {children}
      <YamlButton doc={doc} />
      {canWrite ? <Link to={`${base}/${encodeURIComponent(name)}`} className="button button-small button-ghost">Edit</Link> : null}
      {canWrite ? (
        <ConfirmButton label="Delete" danger title={`Delete ${noun} ${name}`} message={deleteMessage}
          onConfirm={async () => { await deleteObject(kind, name, doc.metadata.version); onDeleted(); }} />
      ) : null}
    </div>
  );
}
