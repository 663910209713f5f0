/**
 * Private access › Services: the list and the "Register service" form, in the seed's order: details,
 * where it is reached (cluster, access tier or connector, domain), the backend, the client, the
 * Kubernetes cluster, and the policy. The server validates everything (the CA PEM too) and its
 * problems show next to the fields.
 */
import { useState } from 'react';
import { listObjects } from '../objects.ts';
import { EditGuard, ObjectActions, FormFooter, FormSection, SpecPreview, useExisting, useSaver } from '../form.tsx';
import { Link } from '../router.tsx';
import { Badge, Checkbox, ExactProblems, Field, LoadState, PageHeader, Table, useCanWrite, useLoad } from '../ui.tsx';
import type { SpecDocument } from '../ui.tsx';

interface ServiceSpec {
  type?: 'kubernetes' | 'tcp';
  cluster?: string;
  accessTier?: string;
  connector?: string;
  domain?: string;
  port?: number;
  showInCatalog?: boolean;
  autorun?: boolean;
  backend?: { dnsOverride?: string; target?: string; httpConnect?: boolean; allowPatterns?: unknown[] };
  client?: { listenPort?: number; allowUserOverride?: boolean };
  kubernetes?: { clusterName?: string; caPublicKey?: string; authentication?: string };
  policy?: { name: string; mode?: 'enforcing' | 'permissive' };
}

export function ServicesPage() {
  const canWrite = useCanWrite('Service');
  const loaded = useLoad((signal) => listObjects('Service', signal), []);
  return (
    <>
      <PageHeader
        title="Services"
        description="Private TCP services and Kubernetes clusters that users reach through an access tier. A service without a policy lets nobody in."
        actions={canWrite ? <Link to="/services/new" className="button button-primary">Register service</Link> : undefined}
      />
      <LoadState loaded={loaded}>
        <Table
          label="Services"
          rows={loaded.data ?? []}
          rowKey={(s) => s.metadata.name}
          empty="No services yet. Register one to make it reachable."
          columns={[
            { header: 'Service', cell: (s) => (
              <div className="cell-stack">
                <Link to={`/services/${encodeURIComponent(s.metadata.name)}`} className="strong">{s.metadata.name}</Link>
                {s.metadata.description === undefined ? null : <span className="muted small">{s.metadata.description}</span>}
              </div>
            ) },
            { header: 'Type', cell: (s) => <Badge tone={(s.spec as ServiceSpec).type === 'kubernetes' ? 'blue' : 'neutral'}>{(s.spec as ServiceSpec).type ?? '?'}</Badge> },
            { header: 'Domain', cell: (s) => <span className="mono small">{(s.spec as ServiceSpec).domain}:{(s.spec as ServiceSpec).port ?? 443}</span> },
            { header: 'Reached through', cell: (s) => {
              const spec = s.spec as ServiceSpec;
              return (
                <div className="cell-stack">
                  <span>{spec.accessTier === '*' ? `every access tier of ${spec.cluster ?? '?'}` : `access tier ${spec.accessTier ?? '?'}`}</span>
                  <span className="muted small">{spec.connector === undefined ? 'direct' : `connector ${spec.connector}`}</span>
                </div>
              );
            } },
            { header: 'Policy', cell: (s) => {
              const policy = (s.spec as ServiceSpec).policy;
              return policy === undefined ? <Badge tone="red">none: nobody</Badge> : (
                <span className="nowrap"><Link to={`/policies/${encodeURIComponent(policy.name)}`}>{policy.name}</Link> <Badge tone={policy.mode === 'permissive' ? 'amber' : 'green'}>{policy.mode ?? 'enforcing'}</Badge></span>
              );
            } },
            { header: 'Catalog', cell: (s) => ((s.spec as ServiceSpec).showInCatalog === false ? <span className="muted">hidden</span> : <span>shown{(s.spec as ServiceSpec).autorun === true ? ', autorun' : ''}</span>) },
            { header: '', className: 'actions', cell: (s) => (
              <ObjectActions doc={s} kind="Service" noun="service" base="/services" canWrite={canWrite} deleteMessage={<p>Its live sessions end and clients can no longer reach it.</p>} onDeleted={loaded.reload} />
            ) },
          ]}
        />
      </LoadState>
    </>
  );
}

export function ServiceEditPage({ name }: { name: string | undefined }) {
  const existing = useExisting('Service', name);
  return (
    <EditGuard existing={existing} name={name}>
      <ServiceForm existing={existing.doc} />
    </EditGuard>
  );
}

function numberOr(text: string): number | string {
  const trimmed = text.trim();
  return /^[0-9]+$/.test(trimmed) ? Number(trimmed) : trimmed;
}

function ServiceForm({ existing }: { existing: SpecDocument | undefined }) {
  const spec = (existing?.spec ?? {}) as ServiceSpec;
  const related = useLoad(async (signal) => {
    const [tiers, connectors, policies] = await Promise.all([listObjects('AccessTier', signal), listObjects('Connector', signal), listObjects('Policy', signal)]);
    return { tiers, connectors, policies };
  }, []);
  const [name, setName] = useState(existing?.metadata.name ?? '');
  const [description, setDescription] = useState(existing?.metadata.description ?? '');
  const [link, setLink] = useState(existing?.metadata.link ?? '');
  const [type, setType] = useState<'kubernetes' | 'tcp'>(spec.type ?? 'kubernetes');
  const [cluster, setCluster] = useState(spec.cluster ?? '');
  const [showInCatalog, setShowInCatalog] = useState(spec.showInCatalog ?? true);
  const [autorun, setAutorun] = useState(spec.autorun ?? false);
  const [accessTier, setAccessTier] = useState(spec.accessTier ?? '*');
  const [connector, setConnector] = useState(spec.connector ?? '');
  const [domain, setDomain] = useState(spec.domain ?? '');
  const [port, setPort] = useState(String(spec.port ?? 443));
  const [dnsOverride, setDnsOverride] = useState(spec.backend?.dnsOverride ?? '');
  const [target, setTarget] = useState(spec.backend?.target ?? '');
  const [listenPort, setListenPort] = useState(String(spec.client?.listenPort ?? 8081));
  const [allowUserOverride, setAllowUserOverride] = useState(spec.client?.allowUserOverride ?? false);
  const [clusterName, setClusterName] = useState(spec.kubernetes?.clusterName ?? '');
  const [caPublicKey, setCaPublicKey] = useState(spec.kubernetes?.caPublicKey ?? '');
  const [policy, setPolicy] = useState(spec.policy?.name ?? '');
  const [mode, setMode] = useState<'enforcing' | 'permissive'>(spec.policy?.mode ?? 'enforcing');
  const saver = useSaver(existing, '/services');
  const p = saver.problems;

  const tiers = related.data?.tiers ?? [];
  const clusters = [...new Set([...tiers, ...(related.data?.connectors ?? [])].map((o) => String(o.spec.cluster)))].sort();
  const tiersInCluster = tiers.filter((t) => cluster === '' || t.spec.cluster === cluster);
  const connectorsInCluster = (related.data?.connectors ?? []).filter((c) => cluster === '' || c.spec.cluster === cluster);

  const build = (): SpecDocument => {
    const backend: Record<string, unknown> = { ...(spec.backend ?? {}) };
    delete backend.dnsOverride;
    delete backend.target;
    if (dnsOverride.trim() !== '') backend.dnsOverride = dnsOverride.trim();
    if (type === 'tcp' && target.trim() !== '') backend.target = target.trim();
    const next: Record<string, unknown> = {
      ...(existing?.spec ?? {}),
      type,
      cluster: cluster.trim(),
      accessTier: accessTier.trim(),
      domain: domain.trim(),
      port: numberOr(port),
      showInCatalog,
      autorun,
      backend,
      client: { listenPort: numberOr(listenPort), allowUserOverride },
    };
    if (connector === '') delete next.connector;
    else next.connector = connector;
    if (type === 'kubernetes') next.kubernetes = { ...(spec.kubernetes ?? {}), clusterName: clusterName.trim(), caPublicKey };
    else delete next.kubernetes;
    if (policy === '') delete next.policy;
    else next.policy = { name: policy, mode };
    return {
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name: name.trim(), ...(description.trim() === '' ? {} : { description }), ...(link.trim() === '' ? {} : { link: link.trim() }) },
      spec: next,
    };
  };

  return (
    <>
      <PageHeader
        title={existing === undefined ? 'Register service' : `Edit service ${existing.metadata.name}`}
        description="Say what the service is, where users reach it, where the access tier sends the traffic, and which policy decides who gets in."
      />
      <div className="form-layout">
      <form className="form" aria-label="Service" onSubmit={(event) => { event.preventDefault(); saver.save(build()); }}>
        <FormSection title="1. Service details">
          <Field label="Service type" path="spec.type" problems={p}>
            <div className="segmented" role="radiogroup" aria-label="Service type">
              <label className={type === 'kubernetes' ? 'on' : ''}><input type="radio" name="type" value="kubernetes" checked={type === 'kubernetes'} onChange={() => setType('kubernetes')} />Kubernetes API</label>
              <label className={type === 'tcp' ? 'on' : ''}><input type="radio" name="type" value="tcp" checked={type === 'tcp'} onChange={() => setType('tcp')} />TCP service</label>
            </div>
          </Field>
          <Field label="Name" htmlFor="service-name" path="metadata.name" problems={p} hint="Lower-case letters, digits and hyphens; what users type in causeway connect.">
            <input id="service-name" name="name" value={name} onChange={(e) => setName(e.target.value)} readOnly={existing !== undefined} required autoComplete="off" />
          </Field>
          <Field label="Description" htmlFor="service-description" path="metadata.description" problems={p}>
            <input id="service-description" name="description" value={description} onChange={(e) => setDescription(e.target.value)} autoComplete="off" />
          </Field>
          <Field label="Link" htmlFor="service-link" path="metadata.link" problems={p} hint="A page about the service, shown in the catalog.">
            <input id="service-link" name="link" type="url" value={link} onChange={(e) => setLink(e.target.value)} placeholder="https://wiki.example.com/prod" autoComplete="off" />
          </Field>
          <Field label="Cluster" htmlFor="service-cluster" path="spec.cluster" problems={p} hint="The access tier cluster that carries this service.">
            <input id="service-cluster" name="cluster" list="service-clusters" value={cluster} onChange={(e) => setCluster(e.target.value)} required autoComplete="off" />
            <datalist id="service-clusters">{clusters.map((c) => <option key={c} value={c} />)}</datalist>
          </Field>
          <Field label="Catalog" path="spec.showInCatalog" problems={p}>
            <div className="checkbox-group">
              <Checkbox name="showInCatalog" label="Show in the users' service catalog" checked={showInCatalog} onChange={setShowInCatalog} />
              <Checkbox name="autorun" label="Autorun: connect when the user logs in" checked={autorun} onChange={setAutorun} />
            </div>
          </Field>
        </FormSection>

        <FormSection title="2. Access" description="Where clients connect: the access tier, and the connector when the access tier cannot reach the backend itself.">
          <Field label="Access tier" htmlFor="service-access-tier" path="spec.accessTier" problems={p}>
            <select id="service-access-tier" name="accessTier" value={accessTier} onChange={(e) => setAccessTier(e.target.value)}>
              <option value="*">Every access tier of the cluster</option>
              {tiersInCluster.map((t) => <option key={t.metadata.name} value={t.metadata.name}>{t.metadata.name}</option>)}
              {accessTier !== '*' && !tiersInCluster.some((t) => t.metadata.name === accessTier) ? <option value={accessTier}>{accessTier}</option> : null}
            </select>
          </Field>
          <Field label="Connector" htmlFor="service-connector" path="spec.connector" problems={p}>
            <select id="service-connector" name="connector" value={connector} onChange={(e) => setConnector(e.target.value)}>
              <option value="">None: the access tier reaches the backend</option>
              {connectorsInCluster.map((c) => <option key={c.metadata.name} value={c.metadata.name}>{c.metadata.name}</option>)}
              {connector !== '' && !connectorsInCluster.some((c) => c.metadata.name === connector) ? <option value={connector}>{connector}</option> : null}
            </select>
          </Field>
          <Field label="Service domain name" htmlFor="service-domain" path="spec.domain" problems={p} hint="The name clients send (SNI) and CONNECT to.">
            <input id="service-domain" name="domain" value={domain} onChange={(e) => setDomain(e.target.value)} placeholder="kube.corp.example.com" required autoComplete="off" />
          </Field>
          <Field label="Port" htmlFor="service-port" path="spec.port" problems={p} hint="The port clients CONNECT to.">
            <input id="service-port" name="port" inputMode="numeric" value={port} onChange={(e) => setPort(e.target.value)} />
          </Field>
        </FormSection>

        <FormSection title="3. Backend" description="Where the access tier (or connector) really dials.">
          {type === 'tcp' ? (
            <Field label="Target" htmlFor="service-target" path="spec.backend.target" problems={p} hint="host:port of the service.">
              <input id="service-target" name="target" value={target} onChange={(e) => setTarget(e.target.value)} placeholder="db.internal:5432" autoComplete="off" />
            </Field>
          ) : null}
          <Field label="Backend DNS override" htmlFor="service-dns-override" path="spec.backend.dnsOverride" problems={p} hint="host:port to dial instead of the domain; empty: the domain and port.">
            <input id="service-dns-override" name="dnsOverride" value={dnsOverride} onChange={(e) => setDnsOverride(e.target.value)} placeholder="kube-proxy.causeway.svc.cluster.local:8443" autoComplete="off" />
          </Field>
          <ExactProblems problems={p} path="spec.backend" />
        </FormSection>

        <FormSection title="4. Client" description="The local port causeway connect listens on.">
          <Field label="Assigned listen port" htmlFor="service-listen-port" path="spec.client.listenPort" problems={p}>
            <input id="service-listen-port" name="listenPort" inputMode="numeric" value={listenPort} onChange={(e) => setListenPort(e.target.value)} />
          </Field>
          <Field label="User override" path="spec.client.allowUserOverride" problems={p}>
            <Checkbox name="allowUserOverride" label="Users may choose another port" checked={allowUserOverride} onChange={setAllowUserOverride} />
          </Field>
        </FormSection>

        {type === 'kubernetes' ? (
          <FormSection title="5. Kubernetes" description="The kubeconfig cluster name, and the CA of the kube proxy's (or API server's) serving certificate.">
            <Field label="Cluster name" htmlFor="service-cluster-name" path="spec.kubernetes.clusterName" problems={p} hint="The name in the users' kubeconfig.">
              <input id="service-cluster-name" name="clusterName" value={clusterName} onChange={(e) => setClusterName(e.target.value)} placeholder="prod" autoComplete="off" />
            </Field>
            <Field label="CA public key (PEM)" htmlFor="service-ca" path="spec.kubernetes.caPublicKey" problems={p} hint="Paste the certificate, or upload the PEM file." wide>
              <textarea id="service-ca" name="caPublicKey" className="mono" rows={6} value={caPublicKey} onChange={(e) => setCaPublicKey(e.target.value)} placeholder={'-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----'} spellCheck={false} />
              <input
                type="file"
                aria-label="Upload CA PEM file"
                accept=".pem,.crt,.cer,application/x-pem-file"
                className="file-input"
                onChange={(event) => {
                  const file = event.target.files?.[0];
                  if (file !== undefined) void file.text().then(setCaPublicKey);
                }}
              />
            </Field>
            <ExactProblems problems={p} path="spec.kubernetes" />
          </FormSection>
        ) : null}

        <FormSection title={type === 'kubernetes' ? '6. Policy' : '5. Policy'} description="Who may connect. Permissive allows everyone but records who the policy would have denied.">
          <Field label="Policy" htmlFor="service-policy" path="spec.policy.name" problems={p}>
            <select id="service-policy" name="policy" value={policy} onChange={(e) => setPolicy(e.target.value)}>
              <option value="">No policy (nobody gets in)</option>
              {(related.data?.policies ?? []).map((x) => <option key={x.metadata.name} value={x.metadata.name}>{x.metadata.name}</option>)}
            </select>
          </Field>
          <Field label="Mode" path="spec.policy.mode" problems={p}>
            <div className="segmented" role="radiogroup" aria-label="Policy mode">
              <label className={mode === 'enforcing' ? 'on' : ''}><input type="radio" name="mode" value="enforcing" checked={mode === 'enforcing'} onChange={() => setMode('enforcing')} disabled={policy === ''} />Enforcing</label>
              <label className={mode === 'permissive' ? 'on' : ''}><input type="radio" name="mode" value="permissive" checked={mode === 'permissive'} onChange={() => setMode('permissive')} disabled={policy === ''} />Permissive</label>
            </div>
          </Field>
        </FormSection>

        <FormFooter saver={saver} back="/services" submitLabel={existing === undefined ? 'Register service' : 'Save service'}
          claimed={['spec.type', 'metadata.name', 'metadata.description', 'metadata.link', 'spec.cluster', 'spec.showInCatalog', 'spec.autorun', 'spec.accessTier', 'spec.connector', 'spec.domain', 'spec.port', 'spec.backend', 'spec.client.listenPort', 'spec.client.allowUserOverride', ...(type === 'kubernetes' ? ['spec.kubernetes'] : []), 'spec.policy']} />
      </form>
      <aside className="form-aside">
        <SpecPreview doc={build()} />
      </aside>
      </div>
    </>
  );
}
