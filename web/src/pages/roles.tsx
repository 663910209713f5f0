/** Directory › Roles: who (groups, emails) on what kind of device; the form previews who matches now. */
import { useEffect, useState } from 'react';
import { api, ApiError, errorMessage } from '../api.ts';
import { listObjects } from '../objects.ts';
import { EditGuard, ObjectActions, FormFooter, FormSection, useExisting, useSaver } from '../form.tsx';
import { Link } from '../router.tsx';
import { Badge, Card, Checkbox, CheckboxGroup, Chips, Field, LoadState, Notice, PageHeader, Table, trustTone, useCanWrite, useLoad, splitList } from '../ui.tsx';
import type { SpecDocument } from '../ui.tsx';

export const OWNERSHIP = ['corporate-dedicated', 'corporate-shared', 'employee-owned', 'other'] as const;
export const PLATFORMS = ['macos', 'linux', 'windows', 'ios', 'android'] as const;
type Ownership = (typeof OWNERSHIP)[number];
type Platform = (typeof PLATFORMS)[number];

interface RoleSpec {
  users?: { groups?: string[]; emails?: string[] };
  devices?: { ownership?: Ownership[]; platforms?: Platform[]; knownDeviceOnly?: boolean; mdmPresent?: boolean; serialNumbers?: string[] };
}

function deviceRequirements(spec: RoleSpec): string[] {
  const d = spec.devices ?? {};
  const out: string[] = [];
  if ((d.platforms ?? []).length > 0) out.push(d.platforms!.join(' / '));
  if ((d.ownership ?? []).length > 0) out.push(d.ownership!.join(' / '));
  if (d.knownDeviceOnly === true) out.push('known device');
  if (d.mdmPresent === true) out.push('MDM present');
  if ((d.serialNumbers ?? []).length > 0) out.push(`${d.serialNumbers!.length} serial number${d.serialNumbers!.length === 1 ? '' : 's'}`);
  return out;
}

export function RolesPage() {
  const canWrite = useCanWrite('Role');
  const loaded = useLoad(async (signal) => {
    const [roles, policies] = await Promise.all([listObjects('Role', signal), listObjects('Policy', signal)]);
    return { roles, policies };
  }, []);
  const usedBy = (role: string) => (loaded.data?.policies ?? []).filter((p) => ((p.spec.access as Array<{ roles: string[] }> | undefined) ?? []).some((r) => r.roles.includes(role))).map((p) => p.metadata.name);
  return (
    <>
      <PageHeader
        title="Roles"
        description="A role names who (any listed group or email) on which devices (every listed attribute must hold). Policies grant access to roles."
        actions={canWrite ? <Link to="/roles/new" className="button button-primary">Create role</Link> : undefined}
      />
      <LoadState loaded={loaded}>
        <Table
          label="Roles"
          rows={loaded.data?.roles ?? []}
          rowKey={(r) => r.metadata.name}
          empty="No roles yet. Create one to say who may use which devices."
          columns={[
            { header: 'Role', cell: (r) => (
              <div className="cell-stack">
                <Link to={`/roles/${encodeURIComponent(r.metadata.name)}`} className="strong">{r.metadata.name}</Link>
                {r.metadata.description === undefined ? null : <span className="muted small">{r.metadata.description}</span>}
              </div>
            ) },
            { header: 'Users', cell: (r) => {
              const spec = r.spec as RoleSpec;
              const who = [...(spec.users?.groups ?? []).map((g) => `group ${g}`), ...(spec.users?.emails ?? [])];
              return <Chips values={who} empty="any user" />;
            } },
            { header: 'Devices', cell: (r) => <Chips values={deviceRequirements(r.spec)} empty="any device" /> },
            { header: 'Used by', cell: (r) => <Chips values={usedBy(r.metadata.name)} empty="no policy" /> },
            { header: '', className: 'actions', cell: (r) => (
              <ObjectActions doc={r} kind="Role" noun="role" base="/roles" canWrite={canWrite} deleteMessage={<p>Policies that name this role must be changed first.</p>} onDeleted={loaded.reload} />
            ) },
          ]}
        />
      </LoadState>
    </>
  );
}

interface PreviewUser { id: string; name: string; email: string | null; groups: string[]; disabled?: boolean }
interface PreviewDevice { id: string; user: string | null; platform: string; ownership: string; serial: string | null; trustLevel: string | null; hostname?: string | null; banned?: boolean }
interface Preview { users: PreviewUser[]; devices: PreviewDevice[]; totalUsers?: number; totalDevices?: number }

function totalOf(answer: Record<string, unknown>, list: 'users' | 'devices', shown: number): number {
  const total = answer.total;
  if (total !== null && typeof total === 'object' && typeof (total as Record<string, unknown>)[list] === 'number') return (total as Record<string, number>)[list];
  const key = list === 'users' ? ['totalUsers', 'usersTotal'] : ['totalDevices', 'devicesTotal'];
  for (const k of key) if (typeof answer[k] === 'number') return answer[k];
  return shown;
}

function RolePreview({ spec }: { spec: RoleSpec }) {
  const [state, setState] = useState<{ preview?: Preview; error?: string; loading: boolean }>({ loading: true });
  const key = JSON.stringify(spec);
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    const timer = setTimeout(() => {
      api<Record<string, unknown>>('POST', '/roles/preview', { body: { spec }, signal: controller.signal }).then(
        (answer) => {
          const users = Array.isArray(answer.users) ? (answer.users as PreviewUser[]) : [];
          const devices = Array.isArray(answer.devices) ? (answer.devices as PreviewDevice[]) : [];
          setState({ loading: false, preview: { users, devices, totalUsers: totalOf(answer, 'users', users.length), totalDevices: totalOf(answer, 'devices', devices.length) } });
        },
        (err: unknown) => {
          if (controller.signal.aborted) return;
          const problems = err instanceof ApiError ? err.problems.map((p) => `${p.path.replace(/^spec\./, '')}: ${p.message}`) : [];
          setState({ loading: false, error: problems.length > 0 ? problems.join('; ') : errorMessage(err) });
        },
      );
    }, 350);
    return () => { controller.abort(); clearTimeout(timer); };
    // The preview depends on the spec's content, compared as JSON.
  }, [key]);
  const preview = state.preview;
  return (
    <Card title="Who matches now" actions={state.loading ? <span className="muted small">updating…</span> : undefined} className="preview-card">
      {state.error !== undefined ? <Notice tone="warning">No preview until the role is valid: {state.error}</Notice> : null}
      {preview === undefined ? (state.error === undefined ? <div className="loading">Loading…</div> : null) : (
        <div className="preview" aria-label="Role preview">
          <h3>Users <span className="count">{preview.totalUsers}</span></h3>
          {preview.users.length === 0 ? <p className="muted small">No user matches.</p> : (
            <ul className="preview-list" data-testid="preview-users">
              {preview.users.map((u) => <li key={u.id}><strong>{u.name}</strong> <span className="muted small">{u.groups.join(', ')}</span>{u.disabled === true ? <> <Badge tone="red">disabled</Badge></> : null}</li>)}
            </ul>
          )}
          <h3>Devices <span className="count">{preview.totalDevices}</span></h3>
          {preview.devices.length === 0 ? <p className="muted small">No device matches.</p> : (
            <ul className="preview-list" data-testid="preview-devices">
              {preview.devices.map((d) => (
                <li key={d.id}><strong>{d.hostname ?? d.serial ?? d.id.slice(0, 8)}</strong> <span className="muted small">{d.user ?? '?'} · {d.platform} · {d.ownership}</span> {d.banned === true ? <Badge tone="red">banned</Badge> : <Badge tone={trustTone(d.trustLevel ?? undefined)}>{d.trustLevel ?? 'not scored'}</Badge>}</li>
              ))}
            </ul>
          )}
        </div>
      )}
    </Card>
  );
}

export function RoleEditPage({ name }: { name: string | undefined }) {
  const existing = useExisting('Role', name);
  return (
    <EditGuard existing={existing} name={name}>
      <RoleForm existing={existing.doc} />
    </EditGuard>
  );
}

function RoleForm({ existing }: { existing: SpecDocument | undefined }) {
  const spec = (existing?.spec ?? {}) as RoleSpec;
  const [name, setName] = useState(existing?.metadata.name ?? '');
  const [description, setDescription] = useState(existing?.metadata.description ?? '');
  const [groups, setGroups] = useState((spec.users?.groups ?? []).join(', '));
  const [emails, setEmails] = useState((spec.users?.emails ?? []).join(', '));
  const [ownership, setOwnership] = useState<Ownership[]>(spec.devices?.ownership ?? []);
  const [platforms, setPlatforms] = useState<Platform[]>(spec.devices?.platforms ?? []);
  const [knownDeviceOnly, setKnownDeviceOnly] = useState(spec.devices?.knownDeviceOnly ?? false);
  const [mdmPresent, setMdmPresent] = useState(spec.devices?.mdmPresent ?? false);
  const [serials, setSerials] = useState((spec.devices?.serialNumbers ?? []).join('\n'));
  const saver = useSaver(existing, '/roles');
  const roleSpec: RoleSpec = {
    users: { groups: splitList(groups), emails: splitList(emails) },
    devices: { ownership, platforms, knownDeviceOnly, mdmPresent, serialNumbers: splitList(serials) },
  };
  const p = saver.problems;
  return (
    <>
      <PageHeader title={existing === undefined ? 'Create role' : `Edit role ${existing.metadata.name}`} description="Any listed group or email matches the user; every device attribute you set must hold. Leave a list empty to place no requirement." />
      <div className="form-layout">
        <form
          className="form"
          aria-label="Role"
          onSubmit={(event) => {
            event.preventDefault();
            saver.save({
              apiVersion: 'causeway/v1',
              kind: 'Role',
              metadata: { name: name.trim(), ...(description.trim() === '' ? {} : { description }) },
              spec: roleSpec as Record<string, unknown>,
            });
          }}
        >
          <FormSection title="Role">
            <Field label="Name" htmlFor="role-name" path="metadata.name" problems={p} hint="Lower-case letters, digits and hyphens.">
              <input id="role-name" name="name" value={name} onChange={(e) => setName(e.target.value)} readOnly={existing !== undefined} required autoComplete="off" />
            </Field>
            <Field label="Description" htmlFor="role-description" path="metadata.description" problems={p}>
              <input id="role-description" name="description" value={description} onChange={(e) => setDescription(e.target.value)} autoComplete="off" />
            </Field>
          </FormSection>
          <FormSection title="Users" description="A user matches when they are in any listed group or have any listed email. Both empty: any user.">
            <Field label="Groups" htmlFor="role-groups" path="spec.users.groups" problems={p} hint="Comma-separated, as the directory or IdP names them.">
              <input id="role-groups" name="groups" value={groups} onChange={(e) => setGroups(e.target.value)} placeholder="eng, sre" autoComplete="off" />
            </Field>
            <Field label="Emails" htmlFor="role-emails" path="spec.users.emails" problems={p} hint="Comma-separated.">
              <input id="role-emails" name="emails" value={emails} onChange={(e) => setEmails(e.target.value)} placeholder="alice@example.com" autoComplete="off" />
            </Field>
          </FormSection>
          <FormSection title="Devices" description="Every attribute you set must hold for the device the user connects from.">
            <Field label="Ownership" path="spec.devices.ownership" problems={p} hint="None checked: any ownership.">
              <CheckboxGroup name="ownership" options={OWNERSHIP} values={ownership} onChange={setOwnership} />
            </Field>
            <Field label="Platforms" path="spec.devices.platforms" problems={p} hint="None checked: any platform.">
              <CheckboxGroup name="platform" options={PLATFORMS} values={platforms} onChange={setPlatforms} />
            </Field>
            <Field label="Device requirements" path="spec.devices.knownDeviceOnly" problems={p}>
              <div className="checkbox-group">
                <Checkbox name="knownDeviceOnly" label="Known (registered) device only" checked={knownDeviceOnly} onChange={setKnownDeviceOnly} />
                <Checkbox name="mdmPresent" label="Managed by a device manager (MDM present)" checked={mdmPresent} onChange={setMdmPresent} />
              </div>
            </Field>
            <Field label="Serial numbers" htmlFor="role-serials" path="spec.devices.serialNumbers" problems={p} hint="One per line; empty: any serial.">
              <textarea id="role-serials" name="serialNumbers" rows={3} value={serials} onChange={(e) => setSerials(e.target.value)} />
            </Field>
          </FormSection>
          <FormFooter saver={saver} back="/roles" submitLabel={existing === undefined ? 'Create role' : 'Save role'}
            claimed={['metadata.name', 'metadata.description', 'spec.users.groups', 'spec.users.emails', 'spec.devices.ownership', 'spec.devices.platforms', 'spec.devices.knownDeviceOnly', 'spec.devices.serialNumbers']} />
        </form>
        <aside className="form-aside">
          <RolePreview spec={roleSpec} />
        </aside>
      </div>
    </>
  );
}
