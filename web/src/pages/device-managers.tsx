/** Trust › Device managers: each MDM/EDR integration, its sync state, and a Test button that runs one lookup. */
import { useState } from 'react';
import { api, errorMessage } from '../api.ts';
import { itemsOf, listObjects } from '../objects.ts';
import { ObjectActions } from '../form.tsx';
import { Link } from '../router.tsx';
import { Badge, LoadState, Notice, PageHeader, Table, Time, useCanWrite, useLoad } from '../ui.tsx';

interface ManagerStatus { manager?: string; name?: string; valid?: boolean; failures?: number; type?: string; lastSyncAt?: string | null; lastSuccessAt?: string | null; lastError?: string | null; devices?: number; [key: string]: unknown }

function statusText(status: ManagerStatus | undefined): { label: string; tone: 'green' | 'red' | 'neutral' } {
  if (status === undefined) return { label: 'not synced yet', tone: 'neutral' };
  const error = status.lastError ?? status.error;
  if (typeof error === 'string' && error !== '') return { label: 'failing', tone: 'red' };
  return { label: 'ok', tone: 'green' };
}

function pick(status: ManagerStatus | undefined, ...keys: string[]): string | null {
  for (const key of keys) {
    const value = status?.[key];
    if (typeof value === 'string') return value;
  }
  return null;
}

export function DeviceManagersPage() {
  const canWrite = useCanWrite('DeviceManager');
  const canTest = useCanWrite();
  const [results, setResults] = useState<Record<string, { ok: boolean; message: string } | 'running'>>({});
  const loaded = useLoad(async (signal) => {
    const [managers, status] = await Promise.all([
      listObjects('DeviceManager', signal),
      api<unknown>('GET', '/device-managers/status', { signal }).then((a) => itemsOf<ManagerStatus>(a, 'managers'), () => [] as ManagerStatus[]),
    ]);
    return { managers, status };
  }, []);
  return (
    <>
      <PageHeader
        title="Device managers"
        description="MDM and EDR integrations (Intune, Jamf, CrowdStrike, or any HTTP source). Their answers feed the mdmPresent, mdmCompliant and crowdstrikeScore factors."
        actions={canWrite ? <Link to="/device-managers/new" className="button button-primary">Add device manager</Link> : undefined}
      />
      <LoadState loaded={loaded}>
        <Table
          label="Device managers"
          rows={loaded.data?.managers ?? []}
          rowKey={(m) => m.metadata.name}
          empty="No device managers. Add one to take compliance from your MDM."
          columns={[
            { header: 'Name', cell: (m) => <div className="cell-stack"><strong>{m.metadata.name}</strong>{m.metadata.description === undefined ? null : <span className="muted small">{m.metadata.description}</span>}</div> },
            { header: 'Type', cell: (m) => <Badge tone="blue">{String(m.spec.type)}</Badge> },
            { header: 'Devices', className: 'num', cell: (m) => { const n = loaded.data?.status.find((s) => (s.manager ?? s.name) === m.metadata.name)?.devices; return n === undefined ? <span className="muted">—</span> : String(n); } },
            { header: 'Sync every', cell: (m) => (typeof m.spec.syncInterval === 'string' ? m.spec.syncInterval : '20m') },
            { header: 'Sync', cell: (m) => {
              const status = loaded.data?.status.find((s) => (s.manager ?? s.name) === m.metadata.name);
              const state = statusText(status);
              const error = pick(status, 'lastError', 'error');
              return <div className="cell-stack"><span><Badge tone={state.tone}>{state.label}</Badge></span>{error === null ? null : <span className="small text-red">{error}</span>}</div>;
            } },
            { header: 'Last sync', cell: (m) => <Time iso={pick(loaded.data?.status.find((s) => (s.manager ?? s.name) === m.metadata.name), 'lastSuccessAt', 'lastSyncAt', 'lastSync')} relative /> },
            { header: 'Test', cell: (m) => {
              const result = results[m.metadata.name];
              if (result === undefined) return <span className="muted">—</span>;
              if (result === 'running') return <span className="muted">testing…</span>;
              return <span className={result.ok ? 'text-green' : 'text-red'} role="status">{result.ok ? '✓ ' : '✗ '}{result.message}</span>;
            } },
            { header: '', className: 'actions', cell: (m) => (
              <ObjectActions doc={m} kind="DeviceManager" noun="device manager" base="/device-managers" canWrite={canWrite} deleteMessage={<p>Its answers stop counting toward trust.</p>} onDeleted={loaded.reload}>
                {canTest ? (
                  <button
                    type="button"
                    className="button button-small button-ghost"
                    disabled={results[m.metadata.name] === 'running'}
                    onClick={() => {
                      const name = m.metadata.name;
                      setResults((r) => ({ ...r, [name]: 'running' }));
                      api<{ ok: boolean; message: string }>('POST', `/device-managers/${encodeURIComponent(name)}/test`, { body: {} }).then(
                        (answer) => setResults((r) => ({ ...r, [name]: answer })),
                        (err: unknown) => setResults((r) => ({ ...r, [name]: { ok: false, message: errorMessage(err) } })),
                      );
                    }}
                  >
                    Test
                  </button>
                ) : null}
              </ObjectActions>
            ) },
          ]}
        />
        {(loaded.data?.managers ?? []).length > 0 && canTest ? <Notice>Test checks the credentials and makes one cheap read; it never shows a secret.</Notice> : null}
      </LoadState>
    </>
  );
}
