/** Directory › Devices: platform, OS, owner, serial, MDM state and the trust level with each factor's explanation. */
import { useState } from 'react';
import { api } from '../api.ts';
import { listDevices, listUsers } from '../objects.ts';
import type { DeviceRecord, UserRecord } from '../objects.ts';
import { useRouter } from '../router.tsx';
import { Badge, ConfirmButton, LoadState, Modal, Notice, PageHeader, Table, Time, trustTone, useCanWrite, useLoad } from '../ui.tsx';

function mdmSummary(device: DeviceRecord): { label: string; tone: 'green' | 'amber' | 'red' | 'neutral' } {
  const managers = Object.values(device.mdm ?? {});
  if (managers.length === 0) return { label: 'Not managed', tone: 'neutral' };
  if (managers.some((m) => m.managed === true && m.compliant === false)) return { label: 'Not compliant', tone: 'red' };
  if (managers.some((m) => m.managed === true && m.compliant === true)) return { label: 'Compliant', tone: 'green' };
  if (managers.some((m) => m.managed === true)) return { label: 'Managed', tone: 'amber' };
  return { label: 'Not managed', tone: 'neutral' };
}

function observedText(value: string | number | boolean | null): string {
  if (value === null) return 'unknown';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

function DeviceDetails({ device, owner, onClose }: { device: DeviceRecord; owner: UserRecord | undefined; onClose: () => void }) {
  const trust = device.trust ?? undefined;
  const factors = trust?.factors ?? [];
  return (
    <Modal title={`Device ${device.hostname ?? device.id}`} onClose={onClose} wide>
      <dl className="facts">
        <div><dt>Owner</dt><dd>{owner?.name ?? device.userId}</dd></div>
        <div><dt>Platform</dt><dd>{device.platform} {device.osVersion ?? ''}</dd></div>
        <div><dt>Ownership</dt><dd>{device.ownership ?? '—'}</dd></div>
        <div><dt>Serial</dt><dd>{device.serial ?? '—'}</dd></div>
        <div><dt>Registered</dt><dd><Time iso={device.registeredAt} /></dd></div>
        <div><dt>Last posture report</dt><dd><Time iso={device.postureAt} /></dd></div>
        <div><dt>Device id</dt><dd className="mono small">{device.id}</dd></div>
      </dl>
      <h3>Trust level <Badge tone={trustTone(trust?.level)}>{trust?.level ?? 'not scored'}</Badge> {trust?.stale === true ? <Badge tone="red">stale</Badge> : null}</h3>
      {trust?.explanation === undefined ? null : <p className="explanation">{trust.explanation}</p>}
      {factors.length === 0 ? <p className="muted">No trust profile applies to this device, so no factor is checked.</p> : (
        <div className="table-wrap">
          <table className="table" aria-label="Trust factors">
            <thead><tr><th>Factor</th><th>Profile</th><th>Required</th><th>Observed</th><th>If unmet</th><th>Result</th></tr></thead>
            <tbody>
              {factors.map((f) => (
                <tr key={`${f.profile}:${f.type}`}>
                  <td><strong>{f.type}</strong>{f.met || f.remedy === undefined ? null : <div className="remedy">{f.remedy}</div>}</td>
                  <td>{f.profile}</td>
                  <td>{f.required}</td>
                  <td>{observedText(f.observed)}</td>
                  <td><Badge tone={trustTone(f.effect)}>{f.effect}</Badge></td>
                  <td>{f.met ? <Badge tone="green">met</Badge> : <Badge tone="red" title={f.reason}>{f.reason ?? 'unmet'}</Badge>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3>Device managers</h3>
      {Object.keys(device.mdm ?? {}).length === 0 ? <p className="muted">No device manager knows this device.</p> : (
        <ul className="plain-list">
          {Object.entries(device.mdm ?? {}).map(([name, m]) => (
            <li key={name}><strong>{name}</strong>: {m.managed === true ? 'managed' : 'not managed'}{m.compliant === undefined ? '' : m.compliant ? ', compliant' : ', not compliant'}{m.score === undefined ? '' : `, score ${m.score}`} <span className="muted small">(<Time iso={m.at} relative />)</span></li>
          ))}
        </ul>
      )}
      {(device.trustOverrides ?? []).length === 0 ? null : (
        <>
          <h3>Trust overrides</h3>
          <ul className="plain-list">
            {(device.trustOverrides ?? []).map((o) => (
              <li key={`${o.source}`}>at most <Badge tone={trustTone(o.maxLevel)}>{o.maxLevel}</Badge> from {o.source}: {o.reason} <span className="muted small">by {o.setBy}</span></li>
            ))}
          </ul>
        </>
      )}
    </Modal>
  );
}

export function DevicesPage() {
  const canWrite = useCanWrite();
  const { search, navigate } = useRouter();
  const userFilter = new URLSearchParams(search).get('user') ?? undefined;
  const [shown, setShown] = useState<string | undefined>(undefined);
  const [message, setMessage] = useState<string | undefined>(undefined);
  const loaded = useLoad(async (signal) => {
    const [devices, users] = await Promise.all([listDevices(signal), listUsers(signal)]);
    return { devices, users: new Map(users.map((u) => [u.id, u])) };
  }, []);
  const devices = (loaded.data?.devices ?? []).filter((d) => userFilter === undefined || d.userId === userFilter);
  const ownerOf = (d: DeviceRecord) => loaded.data?.users.get(d.userId);
  const shownDevice = devices.find((d) => d.id === shown);
  const act = async (what: string, run: () => Promise<unknown>) => {
    await run();
    setMessage(what);
    loaded.reload();
  };
  return (
    <>
      <PageHeader
        title="Devices"
        description="Registered devices, their posture and trust level. The level is the most restrictive effect among unmet factors of the trust profiles that apply; open a device to see why."
      />
      {userFilter === undefined ? null : (
        <Notice>Showing the devices of {loaded.data?.users.get(userFilter)?.name ?? userFilter}. <button type="button" className="link-button" onClick={() => navigate('/devices')}>Show all devices</button></Notice>
      )}
      {message === undefined ? null : <Notice tone="success">{message}</Notice>}
      <LoadState loaded={loaded}>
        <Table
          label="Devices"
          rows={devices}
          rowKey={(d) => d.id}
          empty="No devices registered yet. A device registers on its first causeway login."
          columns={[
            { header: 'Device', cell: (d) => (
              <div className="cell-stack">
                <button type="button" className="link-button strong" onClick={() => setShown(d.id)}>{d.hostname ?? d.id.slice(0, 8)}</button>
                <span className="muted small mono">{d.id.slice(0, 13)}</span>
              </div>
            ) },
            { header: 'Owner', cell: (d) => ownerOf(d)?.name ?? <span className="muted">{d.userId}</span> },
            { header: 'Platform', cell: (d) => <div className="cell-stack"><span>{d.platform}</span><span className="muted small">{d.osVersion ?? ''}</span></div> },
            { header: 'Ownership', cell: (d) => d.ownership ?? '—' },
            { header: 'Serial', cell: (d) => <span className="mono small">{d.serial ?? '—'}</span> },
            { header: 'MDM', cell: (d) => { const m = mdmSummary(d); return <Badge tone={m.tone}>{m.label}</Badge>; } },
            { header: 'Trust', cell: (d) => (
              <div className="cell-stack">
                <span>{d.banned ? <Badge tone="red">Banned</Badge> : <Badge tone={trustTone(d.trust?.level)}>{d.trust?.level ?? 'not scored'}</Badge>}</span>
                {d.trust?.reasons !== undefined && d.trust.reasons.length > 0 && !d.banned ? <span className="muted small">{d.trust.reasons.slice(0, 2).join(', ')}</span> : null}
              </div>
            ) },
            { header: 'Last seen', cell: (d) => <Time iso={d.lastSeen} relative /> },
            { header: 'Actions', className: 'actions', cell: (d) => (
              <div className="row-actions">
                <button type="button" className="button button-small button-ghost" onClick={() => setShown(d.id)}>Details</button>
                {!canWrite ? null : d.banned ? (
                  <ConfirmButton label="Unban" title={`Unban ${d.hostname ?? d.id}`} message={<p>The device can get trust certificates again once it reports its posture.</p>}
                    onConfirm={() => act('Device unbanned.', () => api('POST', `/devices/${d.id}/unban`, { ifMatch: d.version }))} />
                ) : (
                  <ConfirmButton label="Ban" danger title={`Ban ${d.hostname ?? d.id}`} message={<p>The device loses its trust at once: its live sessions are cut and it gets no new trust certificate until it is unbanned.</p>}
                    onConfirm={() => act('Device banned.', () => api('POST', `/devices/${d.id}/ban`, { ifMatch: d.version }))} />
                )}
                {canWrite ? (
                  <ConfirmButton label="Unregister" danger title={`Unregister ${d.hostname ?? d.id}`} message={<p>The device record is deleted; the user must log in again on it to register it anew.</p>}
                    onConfirm={() => act('Device unregistered.', () => api('DELETE', `/devices/${d.id}`, { ifMatch: d.version }))} />
                ) : null}
              </div>
            ) },
          ]}
        />
      </LoadState>
      {shownDevice === undefined ? null : <DeviceDetails device={shownDevice} owner={ownerOf(shownDevice)} onClose={() => setShown(undefined)} />}
    </>
  );
}
