/** Private access › Policies: rules (roles, minimum trust level, schedule) and where each policy is attached. */
import { useState } from 'react';
import { listObjects } from '../objects.ts';
import { EditGuard, ObjectActions, FormFooter, FormSection, SpecPreview, useExisting, useSaver } from '../form.tsx';
import { Link } from '../router.tsx';
import { Badge, Checkbox, Chips, Field, LoadState, PageHeader, Table, trustTone, useCanWrite, useLoad } from '../ui.tsx';
import type { SpecDocument } from '../ui.tsx';

export const TRUST_LEVELS = ['Low', 'Medium', 'High'] as const;

interface Rule {
  roles: string[];
  trustLevel: string;
  schedule?: { start: string | null; end: string | null };
}

function rulesOf(doc: SpecDocument): Rule[] {
  return (doc.spec.access as Rule[] | undefined) ?? [];
}

function scheduleText(schedule: Rule['schedule']): string | undefined {
  if (schedule === undefined || (schedule.start === null && schedule.end === null)) return undefined;
  const fmt = (t: string | null) => (t === null ? '…' : new Date(t).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }));
  return `${fmt(schedule.start)} – ${fmt(schedule.end)}`;
}

export function PoliciesPage() {
  const canWrite = useCanWrite('Policy');
  const loaded = useLoad(async (signal) => {
    const [policies, services] = await Promise.all([listObjects('Policy', signal), listObjects('Service', signal)]);
    return { policies, services };
  }, []);
  const attachments = (policy: string) => (loaded.data?.services ?? []).flatMap((s) => {
    const attached = s.spec.policy as { name: string; mode?: string } | undefined;
    return attached?.name === policy ? [{ service: s.metadata.name, mode: attached.mode ?? 'enforcing' }] : [];
  });
  return (
    <>
      <PageHeader
        title="Policies"
        description="A policy lets roles in, each with a minimum trust level and an optional schedule. Attach a policy to services, enforcing or permissive (allow, but log who would be denied)."
        actions={canWrite ? <Link to="/policies/new" className="button button-primary">Create policy</Link> : undefined}
      />
      <LoadState loaded={loaded}>
        <Table
          label="Policies"
          rows={loaded.data?.policies ?? []}
          rowKey={(p) => p.metadata.name}
          empty="No policies yet. Create one, then attach it to a service."
          columns={[
            { header: 'Policy', cell: (p) => (
              <div className="cell-stack">
                <Link to={`/policies/${encodeURIComponent(p.metadata.name)}`} className="strong">{p.metadata.name}</Link>
                {p.metadata.description === undefined ? null : <span className="muted small">{p.metadata.description}</span>}
              </div>
            ) },
            { header: 'Rules', cell: (p) => {
              const rules = rulesOf(p);
              if (rules.length === 0) return <span className="muted">no rules: allows nobody</span>;
              return (
                <ul className="rule-list">
                  {rules.map((r, i) => (
                    <li key={i}>
                      <Chips values={r.roles} /> <span className="muted">at least</span> <Badge tone={trustTone(r.trustLevel)}>{r.trustLevel}</Badge>
                      {scheduleText(r.schedule) === undefined ? null : <span className="muted small"> · {scheduleText(r.schedule)}</span>}
                    </li>
                  ))}
                </ul>
              );
            } },
            { header: 'Attached to', cell: (p) => {
              const list = attachments(p.metadata.name);
              if (list.length === 0) return <span className="muted">no service</span>;
              return (
                <ul className="rule-list">
                  {list.map((a) => <li key={a.service}><Link to={`/services/${encodeURIComponent(a.service)}`}>{a.service}</Link> <Badge tone={a.mode === 'enforcing' ? 'green' : 'amber'}>{a.mode}</Badge></li>)}
                </ul>
              );
            } },
            { header: '', className: 'actions', cell: (p) => (
              <ObjectActions doc={p} kind="Policy" noun="policy" base="/policies" canWrite={canWrite} deleteMessage={<p>Services that use this policy must be changed first.</p>} onDeleted={loaded.reload} />
            ) },
          ]}
        />
      </LoadState>
    </>
  );
}

export function PolicyEditPage({ name }: { name: string | undefined }) {
  const existing = useExisting('Policy', name);
  return (
    <EditGuard existing={existing} name={name}>
      <PolicyForm existing={existing.doc} />
    </EditGuard>
  );
}

interface RuleDraft {
  roles: string[];
  trustLevel: string;
  scheduled: boolean;
  start: string;
  end: string;
}

/** ISO → the value of a datetime-local input (UTC, as the spec is), and back. */
function toLocalInput(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : date.toISOString().slice(0, 16);
}

function fromLocalInput(value: string): string | null {
  return value === '' ? null : `${value}:00Z`;
}

function PolicyForm({ existing }: { existing: SpecDocument | undefined }) {
  const roles = useLoad((signal) => listObjects('Role', signal), []);
  const [name, setName] = useState(existing?.metadata.name ?? '');
  const [description, setDescription] = useState(existing?.metadata.description ?? '');
  const [rules, setRules] = useState<RuleDraft[]>(() => {
    const stored = existing === undefined ? [] : rulesOf(existing);
    if (stored.length === 0) return [{ roles: [], trustLevel: 'Medium', scheduled: false, start: '', end: '' }];
    return stored.map((r) => ({ roles: r.roles, trustLevel: r.trustLevel, scheduled: r.schedule !== undefined, start: toLocalInput(r.schedule?.start), end: toLocalInput(r.schedule?.end) }));
  });
  const saver = useSaver(existing, '/policies');
  const p = saver.problems;
  const roleNames = (roles.data ?? []).map((r) => r.metadata.name);
  const build = (): SpecDocument => ({
    apiVersion: 'causeway/v1',
    kind: 'Policy',
    metadata: { name: name.trim(), ...(description.trim() === '' ? {} : { description }) },
    spec: {
      access: rules.map((r) => ({
        roles: r.roles,
        trustLevel: r.trustLevel,
        ...(r.scheduled ? { schedule: { start: fromLocalInput(r.start), end: fromLocalInput(r.end) } } : {}),
      })),
    },
  });
  const change = (index: number, patch: Partial<RuleDraft>) => setRules((list) => list.map((r, i) => (i === index ? { ...r, ...patch } : r)));
  return (
    <>
      <PageHeader title={existing === undefined ? 'Create policy' : `Edit policy ${existing.metadata.name}`} description="Each rule lets the users of its roles in when their device is at least at the trust level, within the schedule if one is set." />
      <div className="form-layout">
      <form
        className="form"
        aria-label="Policy"
        onSubmit={(event) => {
          event.preventDefault();
          saver.save(build());
        }}
      >
        <FormSection title="Policy">
          <Field label="Name" htmlFor="policy-name" path="metadata.name" problems={p} hint="Lower-case letters, digits and hyphens.">
            <input id="policy-name" name="name" value={name} onChange={(e) => setName(e.target.value)} readOnly={existing !== undefined} required autoComplete="off" />
          </Field>
          <Field label="Description" htmlFor="policy-description" path="metadata.description" problems={p}>
            <input id="policy-description" name="description" value={description} onChange={(e) => setDescription(e.target.value)} autoComplete="off" />
          </Field>
        </FormSection>
        {rules.map((rule, index) => (
          <fieldset className="form-section rule" key={index} data-rule={index}>
            <legend>Rule {index + 1}</legend>
            <div className="form-grid">
              <Field label="Roles" path={`spec.access[${index}].roles`} problems={p} hint={roleNames.length === 0 ? 'There are no roles yet: create one first.' : 'Users matching any checked role.'} wide>
                <div className="checkbox-group">
                  {roleNames.map((role) => (
                    <Checkbox key={role} name={`rule-${index}-role-${role}`} label={role} checked={rule.roles.includes(role)}
                      onChange={(on) => change(index, { roles: on ? [...rule.roles, role] : rule.roles.filter((x) => x !== role) })} />
                  ))}
                </div>
              </Field>
              <Field label="Minimum trust level" htmlFor={`rule-${index}-trust`} path={`spec.access[${index}].trustLevel`} problems={p}>
                <select id={`rule-${index}-trust`} name={`rule-${index}-trustLevel`} value={rule.trustLevel} onChange={(e) => change(index, { trustLevel: e.target.value })}>
                  {TRUST_LEVELS.map((l) => <option key={l} value={l}>{l}</option>)}
                </select>
              </Field>
              <Field label="Schedule" path={`spec.access[${index}].schedule`} problems={p} hint="Times in UTC. Leave an end empty for no end.">
                <Checkbox name={`rule-${index}-scheduled`} label="Only within a time window" checked={rule.scheduled} onChange={(on) => change(index, { scheduled: on })} />
                {rule.scheduled ? (
                  <div className="inline-inputs">
                    <input type="datetime-local" aria-label={`Rule ${index + 1} start`} value={rule.start} onChange={(e) => change(index, { start: e.target.value })} />
                    <span className="muted">to</span>
                    <input type="datetime-local" aria-label={`Rule ${index + 1} end`} value={rule.end} onChange={(e) => change(index, { end: e.target.value })} />
                  </div>
                ) : null}
              </Field>
            </div>
            {rules.length > 1 ? <button type="button" className="button button-small button-danger-ghost" onClick={() => setRules((list) => list.filter((_, i) => i !== index))}>Remove rule</button> : null}
          </fieldset>
        ))}
        <button type="button" className="button button-ghost" onClick={() => setRules((list) => [...list, { roles: [], trustLevel: 'Medium', scheduled: false, start: '', end: '' }])}>Add rule</button>
        <FormFooter saver={saver} back="/policies" submitLabel={existing === undefined ? 'Create policy' : 'Save policy'}
          claimed={['metadata.name', 'metadata.description', ...rules.flatMap((_, i) => [`spec.access[${i}].roles`, `spec.access[${i}].trustLevel`, `spec.access[${i}].schedule`])]} />
      </form>
      <aside className="form-aside">
        <SpecPreview doc={build()} />
      </aside>
      </div>
    </>
  );
}
