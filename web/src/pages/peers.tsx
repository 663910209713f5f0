/** Private access › Access tiers & connectors: health, version and tunnels, and join tokens with the exact command. */
import { useState } from 'react';
import { api, errorMessage } from '../api.ts';
import { itemsOf, listObjects } from '../objects.ts';
import { Link } from '../router.tsx';
import { Badge, CodeBlock, LoadState, Modal, Notice, PageHeader, Table, Time, useCanWrite, useLoad, YamlButton } from '../ui.tsx';
import type { SpecDocument } from '../ui.tsx';

interface Tunnel { peer?: string; connector?: string; accessTier?: string; since?: string; streams?: number }

interface Peer {
  name: string;
  kind: string;
  cluster?: string | null;
  status?: string;
  version?: string | null;
  lastReport?: string | null;
  startedAt?: string | null;
  tunnels?: Tunnel[];
  sessions?: number | null;
  address?: string | null;
  configured?: boolean;
  enrolled?: boolean;
}

interface JoinToken { token: string; id: string; kind: string; name: string; expiresAt: string; caPin: string; command: string }

const KIND_LABEL: Record<string, string> = { 'access-tier': 'Access tier', AccessTier: 'Access tier', connector: 'Connector', Connector: 'Connector', 'kube-proxy': 'Kube proxy' };

function kindKey(kind: string): string {
  return kind === 'AccessTier' ? 'access-tier' : kind === 'Connector' ? 'connector' : kind;
}

function statusBadge(status: string | undefined) {
  if (status === 'up') return <Badge tone="green">● Up</Badge>;
  if (status === 'down') return <Badge tone="red">● Down</Badge>;
  return <Badge tone="neutral">Never reported</Badge>;
}

function JoinTokenDialog({ initial, specs, onClose }: { initial: { kind: string; name: string }; specs: SpecDocument[]; onClose: () => void }) {
  const [kind, setKind] = useState(initial.kind);
  const [name, setName] = useState(initial.name);
  const [ttl, setTtl] = useState('1h');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const [token, setToken] = useState<JoinToken | undefined>(undefined);
  const names = specs.filter((s) => kindKey(s.kind) === kind).map((s) => s.metadata.name);
  return (
    <Modal title="Create join token" onClose={onClose} wide>
      {token === undefined ? (
        <form
          className="form"
          aria-label="Join token"
          onSubmit={(event) => {
            event.preventDefault();
            setBusy(true);
            setError(undefined);
            api<JoinToken>('POST', '/join-tokens', { body: { kind, name: name.trim(), ttl } }).then(
              (answer) => { setBusy(false); setToken(answer); },
              (err: unknown) => { setBusy(false); setError(errorMessage(err)); },
            );
          }}
        >
          <p className="muted">A join token enrolls one access tier, connector or kube proxy. It works once and expires; the secret is shown only now.</p>
          <div className="form-grid">
            <div className="field">
              <label className="field-label" htmlFor="join-kind">Part</label>
              <select id="join-kind" value={kind} onChange={(e) => setKind(e.target.value)}>
                <option value="access-tier">Access tier</option>
                <option value="connector">Connector</option>
                <option value="kube-proxy">Kube proxy</option>
              </select>
            </div>
            <div className="field">
              <label className="field-label" htmlFor="join-name">Name</label>
              <input id="join-name" list="join-names" value={name} onChange={(e) => setName(e.target.value)} required autoComplete="off" />
              <datalist id="join-names">{names.map((n) => <option key={n} value={n} />)}</datalist>
            </div>
            <div className="field">
              <label className="field-label" htmlFor="join-ttl">Valid for</label>
              <select id="join-ttl" value={ttl} onChange={(e) => setTtl(e.target.value)}>
                <option value="15m">15 minutes</option>
                <option value="1h">1 hour</option>
                <option value="24h">24 hours</option>
              </select>
            </div>
          </div>
          {error === undefined ? null : <Notice tone="error">{error}</Notice>}
          <div className="form-footer">
            <button type="button" className="button button-ghost" onClick={onClose}>Cancel</button>
            <button type="submit" className="button button-primary" disabled={busy}>{busy ? 'Creating…' : 'Create token'}</button>
          </div>
        </form>
      ) : (
        <div>
          <Notice tone="success">Token for {KIND_LABEL[token.kind] ?? token.kind} <strong>{token.name}</strong>, valid until <Time iso={token.expiresAt} />. Copy it now: it is not shown again.</Notice>
          <p>Run this on the machine that will run the {KIND_LABEL[token.kind]?.toLowerCase() ?? token.kind}:</p>
          <CodeBlock text={token.command} label="Command" />
          <p className="muted small">The command pins the control plane's CA ({token.caPin.slice(0, 24)}…), so the part trusts only this control plane.</p>
          <div className="form-footer"><button type="button" className="button button-primary" onClick={onClose}>Done</button></div>
        </div>
      )}
    </Modal>
  );
}

export function PeersPage() {
  const canWrite = useCanWrite();
  const canWriteTier = useCanWrite('AccessTier');
  const canWriteConnector = useCanWrite('Connector');
  const [join, setJoin] = useState<{ kind: string; name: string } | undefined>(undefined);
  const loaded = useLoad(async (signal) => {
    const [tiers, connectors, peers] = await Promise.all([
      listObjects('AccessTier', signal),
      listObjects('Connector', signal),
      api<unknown>('GET', '/peers', { signal }).then((a) => ({ items: itemsOf<Peer>(a, 'peers'), error: undefined }), (err: unknown) => ({ items: [] as Peer[], error: errorMessage(err) })),
    ]);
    return { specs: [...tiers, ...connectors], peers: peers.items, peersError: peers.error };
  }, [], 5000);
  const rows: Array<Peer & { spec?: SpecDocument }> = (() => {
    const data = loaded.data;
    if (data === undefined) return [];
    const out: Array<Peer & { spec?: SpecDocument }> = data.peers.map((peer) => {
      const spec = data.specs.find((s) => kindKey(s.kind) === kindKey(peer.kind) && s.metadata.name === peer.name);
      return spec === undefined ? { ...peer, kind: kindKey(peer.kind) } : { ...peer, kind: kindKey(peer.kind), spec };
    });
    for (const spec of data.specs) {
      if (!out.some((p) => p.kind === kindKey(spec.kind) && p.name === spec.metadata.name)) {
        out.push({ name: spec.metadata.name, kind: kindKey(spec.kind), cluster: String(spec.spec.cluster), status: 'never', spec });
      }
    }
    return out.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
  })();
  return (
    <>
      <PageHeader
        title="Access tiers & connectors"
        description="Access tiers take client connections at the edge; connectors dial out from private networks to every access tier of their cluster. Each reports its health every few seconds."
        actions={canWrite ? (
          <>
            {canWriteTier ? <Link to="/network/access-tier/new" className="button button-ghost">Add access tier</Link> : null}
            {canWriteConnector ? <Link to="/network/connector/new" className="button button-ghost">Add connector</Link> : null}
            <button type="button" className="button button-primary" onClick={() => setJoin({ kind: 'access-tier', name: '' })}>Create join token</button>
          </>
        ) : undefined}
      />
      {loaded.data?.peersError === undefined ? null : <Notice tone="warning">Health reports are not available: {loaded.data.peersError}</Notice>}
      <LoadState loaded={loaded}>
        <Table
          label="Access tiers and connectors"
          rows={rows}
          rowKey={(r) => `${r.kind}/${r.name}`}
          empty="No access tiers or connectors yet. Add one, then create a join token to enroll it."
          columns={[
            { header: 'Name', cell: (r) => (
              <div className="cell-stack">
                <strong>{r.name}</strong>
                <span className="muted small">{KIND_LABEL[r.kind] ?? r.kind}{r.address !== null && r.address !== undefined ? ` · ${r.address}` : ''}{r.configured === false ? ' · no spec' : ''}{r.enrolled === false ? ' · not enrolled' : ''}</span>
              </div>
            ) },
            { header: 'Cluster', cell: (r) => r.cluster ?? <span className="muted">—</span> },
            { header: 'Status', cell: (r) => statusBadge(r.status) },
            { header: 'Version', cell: (r) => (r.version === null || r.version === undefined ? <span className="muted">—</span> : <span className="mono small">{r.version}</span>) },
            { header: 'Last report', cell: (r) => <Time iso={r.lastReport} relative /> },
            { header: 'Tunnels', cell: (r) => {
              const tunnels = r.tunnels ?? [];
              if (tunnels.length === 0) return <span className="muted">none</span>;
              return (
                <ul className="rule-list">
                  {tunnels.map((t, i) => <li key={i}>{t.peer ?? t.connector ?? t.accessTier ?? '?'} <span className="muted small">{t.streams === 1 ? '1 stream' : `${t.streams ?? 0} streams`} · since <Time iso={t.since} relative /></span></li>)}
                </ul>
              );
            } },
            { header: 'Sessions', className: 'num', cell: (r) => (r.kind === 'access-tier' && r.sessions !== null && r.sessions !== undefined ? String(r.sessions) : <span className="muted">—</span>) },
            { header: '', className: 'actions', cell: (r) => (
              <div className="row-actions">
                {r.spec === undefined ? null : <YamlButton doc={r.spec} />}
                {r.spec !== undefined && (r.kind === 'access-tier' ? canWriteTier : canWriteConnector) ? <Link to={`/network/${r.kind}/${encodeURIComponent(r.name)}`} className="button button-small button-ghost">Edit</Link> : null}
                {canWrite && (r.kind === 'access-tier' || r.kind === 'connector') ? <button type="button" className="button button-small button-ghost" onClick={() => setJoin({ kind: r.kind, name: r.name })}>Join token</button> : null}
              </div>
            ) },
          ]}
        />
      </LoadState>
      {join === undefined ? null : <JoinTokenDialog initial={join} specs={loaded.data?.specs ?? []} onClose={() => { setJoin(undefined); loaded.reload(); }} />}
    </>
  );
}
