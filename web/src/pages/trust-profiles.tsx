/** Trust › Trust profiles: which factors apply to which devices, and what each unmet factor does. */
import { listObjects } from '../objects.ts';
import { ObjectActions } from '../form.tsx';
import { Link } from '../router.tsx';
import { Badge, Card, Chips, LoadState, PageHeader, trustTone, useCanWrite, useLoad } from '../ui.tsx';

interface Factor { type: string; effect: string; [key: string]: unknown }
interface ProfileSpec { appliesTo?: { platforms?: string[]; ownership?: string[]; groups?: string[] }; staleAfter?: string; factors?: Factor[] }

function factorDetail(factor: Factor): string {
  const { type: _type, effect: _effect, ...rest } = factor;
  const parts = Object.entries(rest).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return parts.join(', ');
}

export function TrustProfilesPage() {
  const canWrite = useCanWrite('TrustProfile');
  const loaded = useLoad((signal) => listObjects('TrustProfile', signal), []);
  return (
    <>
      <PageHeader
        title="Trust profiles"
        description="A device's trust level is the most restrictive effect among the unmet factors of the profiles that apply to it, High when all are met. A device that stops reporting drops to AlwaysDeny after its staleAfter."
        actions={canWrite ? <Link to="/trust-profiles/new" className="button button-primary">Create trust profile</Link> : undefined}
      />
      <LoadState loaded={loaded}>
        {(loaded.data ?? []).length === 0 ? <Card><p className="muted">No trust profiles: every device is at Low. Create one to ask for disk encryption, a firewall, an OS version and more.</p></Card> : null}
        <div className="card-list">
          {(loaded.data ?? []).map((doc) => {
            const spec = doc.spec as ProfileSpec;
            return (
              <Card
                key={doc.metadata.name}
                title={<>{doc.metadata.name} {doc.metadata.description === undefined ? null : <span className="muted small">{doc.metadata.description}</span>}</>}
                actions={<ObjectActions doc={doc} kind="TrustProfile" noun="trust profile" base="/trust-profiles" canWrite={canWrite} deleteMessage={<p>Devices are scored again without it.</p>} onDeleted={loaded.reload} />}
              >
                <dl className="facts facts-inline">
                  <div><dt>Platforms</dt><dd><Chips values={spec.appliesTo?.platforms ?? []} empty="any" /></dd></div>
                  <div><dt>Ownership</dt><dd><Chips values={spec.appliesTo?.ownership ?? []} empty="any" /></dd></div>
                  <div><dt>Groups</dt><dd><Chips values={spec.appliesTo?.groups ?? []} empty="any" /></dd></div>
                  <div><dt>Stale after</dt><dd>{spec.staleAfter ?? '15m'}</dd></div>
                </dl>
                <div className="table-wrap">
                  <table className="table table-compact" aria-label={`Factors of ${doc.metadata.name}`}>
                    <thead><tr><th>Factor</th><th>Settings</th><th>If unmet, at most</th></tr></thead>
                    <tbody>
                      {(spec.factors ?? []).length === 0 ? <tr><td colSpan={3} className="empty">No factors: matching devices are High.</td></tr> : (spec.factors ?? []).map((f, i) => (
                        <tr key={i}><td><strong>{f.type}</strong></td><td className="muted">{factorDetail(f) || '—'}</td><td><Badge tone={trustTone(f.effect)}>{f.effect}</Badge></td></tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              </Card>
            );
          })}
        </div>
      </LoadState>
    </>
  );
}
