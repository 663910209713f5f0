/** Directory › Users: groups, devices, last seen; admins disable and enable accounts. */
import { api } from '../api.ts';
import { listDevices, listUsers } from '../objects.ts';
import type { DeviceRecord, UserRecord } from '../objects.ts';
import { Badge, Chips, ConfirmButton, LoadState, PageHeader, Table, Time, useCanWrite, useLoad } from '../ui.tsx';
import { Link } from '../router.tsx';

function latest(...times: Array<string | null | undefined>): string | null {
  let best: string | null = null;
  for (const t of times) if (t !== null && t !== undefined && (best === null || Date.parse(t) > Date.parse(best))) best = t;
  return best;
}

export function UsersPage() {
  const canWrite = useCanWrite();
  const loaded = useLoad(async (signal) => {
    const [users, devices] = await Promise.all([listUsers(signal), listDevices(signal)]);
    return { users, devices };
  }, []);
  const devicesOf = (user: UserRecord): DeviceRecord[] => loaded.data?.devices.filter((d) => d.userId === user.id) ?? [];
  return (
    <>
      <PageHeader
        title="Users"
        description="Everyone who has logged in through the built-in directory or an identity provider. Groups come from the directory or the IdP and decide which roles match."
      />
      <LoadState loaded={loaded}>
        <Table
          label="Users"
          rows={loaded.data?.users ?? []}
          rowKey={(u) => u.id}
          empty="No users yet. Users appear after their first login, or add built-in users with causeway user add."
          columns={[
            { header: 'User', cell: (u) => (
              <div className="cell-stack">
                <strong>{u.name}</strong>
                <span className="muted small">{u.email ?? 'no email'}</span>
              </div>
            ) },
            { header: 'Groups', cell: (u) => <Chips values={u.groups} /> },
            { header: 'Source', cell: (u) => <span className="muted">{u.source === undefined || u.source === 'local' ? 'built-in' : u.source.replace(/^idp:/, '')}</span> },
            { header: 'Devices', cell: (u) => {
              const devices = devicesOf(u);
              return devices.length === 0 ? <span className="muted">none</span> : <Link to={`/devices?user=${encodeURIComponent(u.id)}`}>{devices.length === 1 ? '1 device' : `${devices.length} devices`}</Link>;
            } },
            { header: 'Last seen', cell: (u) => <Time iso={latest(u.lastSeen, u.lastLoginAt, ...devicesOf(u).map((d) => d.lastSeen))} relative /> },
            { header: 'Status', cell: (u) => (
              u.disabled ? <Badge tone="red">Disabled</Badge>
                : u.lockedUntil !== null && u.lockedUntil !== undefined && Date.parse(u.lockedUntil) > Date.now() ? <Badge tone="amber">Locked</Badge>
                  : <Badge tone="green">Active</Badge>
            ) },
            ...(canWrite ? [{
              header: 'Actions',
              className: 'actions',
              cell: (u: UserRecord) => (
                <ConfirmButton
                  label={u.disabled ? 'Enable' : 'Disable'}
                  danger={!u.disabled}
                  title={u.disabled ? `Enable ${u.name}` : `Disable ${u.name}`}
                  message={u.disabled
                    ? <p>{u.name} can log in again and use their devices, as their roles allow.</p>
                    : <p>{u.name} can no longer log in; their console and login sessions end and their live connections are cut.</p>}
                  onConfirm={async () => {
                    await api('PATCH', `/users/${encodeURIComponent(u.name)}`, { body: { disabled: !u.disabled }, ifMatch: u.version });
                    loaded.reload();
                  }}
                />
              ),
            }] : []),
          ]}
        />
      </LoadState>
    </>
  );
}
