/** Activity › Live sessions: who is connected right now (refreshed every 2 s); admins cut a session at once. */
import { useState } from 'react';
import { api } from '../api.ts';
import { itemsOf } from '../objects.ts';
import { ago, ConfirmButton, formatBytes, LoadState, Notice, PageHeader, Table, useCanWrite, useLoad } from '../ui.tsx';

export interface LiveSession {
  id: string;
  user?: string;
  userName?: string;
  device?: string;
  deviceName?: string;
  service?: string;
  since?: string;
  source?: string;
  target?: string;
  via?: string;
  connector?: string;
  accessTier?: string;
  bytesUp?: number;
  bytesDown?: number;
}

export function SessionsPage() {
  const canWrite = useCanWrite();
  const [message, setMessage] = useState<string | undefined>(undefined);
  const loaded = useLoad(async (signal) => itemsOf<LiveSession>(await api<unknown>('GET', '/sessions', { signal }), 'sessions'), [], 2000);
  const now = Date.now();
  return (
    <>
      <PageHeader
        title="Live sessions"
        description="Connections open right now on every access tier, refreshed every 2 seconds. Disconnecting cuts the connection at once; the user's next connection is decided again by policy."
        actions={<span className="live-indicator" aria-live="polite"><span className="pulse" aria-hidden="true" />Live</span>}
      />
      {message === undefined ? null : <Notice tone="success">{message}</Notice>}
      <LoadState loaded={loaded}>
        <Table
          label="Live sessions"
          rows={loaded.data ?? []}
          rowKey={(s) => s.id}
          empty="Nobody is connected right now."
          columns={[
            { header: 'User', cell: (s) => <strong>{s.userName ?? s.user ?? '—'}</strong> },
            { header: 'Device', cell: (s) => (s.deviceName !== undefined ? <span title={s.device}>{s.deviceName}</span> : <span className="mono small">{s.device === undefined ? '—' : s.device.slice(0, 13)}</span>) },
            { header: 'Service', cell: (s) => s.service ?? '—' },
            { header: 'Path', cell: (s) => (
              <div className="cell-stack">
                <span>{s.accessTier ?? '?'}{s.via === 'connector' ? ` → ${s.connector ?? 'connector'}` : ''}</span>
                <span className="muted small mono">{s.source ?? ''}{s.target === undefined ? '' : ` → ${s.target}`}</span>
              </div>
            ) },
            { header: 'Since', cell: (s) => <span title={s.since}>{ago(s.since, now)}</span> },
            { header: 'Up', className: 'num', cell: (s) => formatBytes(s.bytesUp) },
            { header: 'Down', className: 'num', cell: (s) => formatBytes(s.bytesDown) },
            ...(canWrite ? [{
              header: '',
              className: 'actions',
              cell: (s: LiveSession) => (
                <ConfirmButton
                  label="Disconnect"
                  danger
                  title="Disconnect this session"
                  message={<p>{s.userName ?? s.user ?? 'The user'}'s connection to {s.service ?? 'the service'} is cut at once, on whichever access tier holds it.</p>}
                  onConfirm={async () => {
                    await api('POST', `/sessions/${encodeURIComponent(s.id)}/disconnect`, { body: {} });
                    setMessage(`Disconnected ${s.userName ?? s.user ?? 'the user'} from ${s.service ?? 'the service'}.`);
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
