/**
 * The quickstart's data directory: the CA, the certificates, the specs and the kubeconfigs, created on
 * the first run and reused afterwards. An entry-point module (it reads and writes files); only
 * src/quickstart.ts uses it.
 *
 * Layout:
 *   ca/                     the CA (`causeway ca init` layout: ca.crt, ca.key encrypted, ca-passphrase)
 *   certs/                  edge-1 (access tier), dc1 (connector), demo-quickstart (the demo user's trust
 *                           cert), demo-kube (the demo API's serving certificate); issued afresh on every
 *                           start, since they are short-lived by design
 *   specs.yaml              AccessTier, Connector and Service specs (`causeway apply -f` format). The
 *                           fields that depend on this run's ports are updated on every start; everything
 *                           else (and every comment) stays as the user left it
 *   kubeconfig              cluster https://kube.demo.causeway.test, for use with https_proxy
 *   kubeconfig-proxy-url    the same with proxy-url set; rewritten on every start for the current port
 *   demo-kube-token         the bearer token the demo API expects (also in the kubeconfigs)
 *   access-events.jsonl     one JSON line per access decision
 *
 * A CA created on this run (first run, or ca/ removed) makes everything derived from it stale, so the
 * specs, kubeconfigs and token are then written afresh.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { exists, writeReplacing } from './cli-files.ts';
import { UserError } from './lib/errors.ts';
import { issueKeyAndCert } from './lib/pki/index.ts';
import type { CertificateAuthority, CertIdentity, CertType } from './lib/pki/index.ts';
import { formatProblems, parseSpecDocuments, validateReferences } from './lib/spec/index.ts';
import type { SpecObject } from './lib/spec/index.ts';
import { initCaDir, loadCaDir } from './pki-command.ts';

/** The demo service's domain: kubectl's server, the SNI, and a name in the demo API's certificate. */
export const QUICKSTART_DOMAIN = 'kube.demo.causeway.test';

export const QUICKSTART_NAMES = {
  cluster: 'quickstart',
  accessTier: 'edge-1',
  connector: 'dc1',
  service: 'demo-k8s',
  /** The kubeconfig's cluster, user and context name. */
  kubeContext: 'demo',
  user: 'demo',
  device: 'quickstart',
  demoKube: 'demo-kube',
} as const;

export interface QuickstartPaths {
  dir: string;
  ca: string;
  certs: string;
  specs: string;
  kubeconfig: string;
  proxyUrlKubeconfig: string;
  token: string;
  events: string;
}

export function quickstartPaths(dataDir: string): QuickstartPaths {
  const dir = resolve(dataDir);
  return {
    dir,
    ca: join(dir, 'ca'),
    certs: join(dir, 'certs'),
    specs: join(dir, 'specs.yaml'),
    kubeconfig: join(dir, 'kubeconfig'),
    proxyUrlKubeconfig: join(dir, 'kubeconfig-proxy-url'),
    token: join(dir, 'demo-kube-token'),
    events: join(dir, 'access-events.jsonl'),
  };
}

export interface QuickstartData {
  paths: QuickstartPaths;
  ca: CertificateAuthority;
  /** True when this run created the CA. */
  caCreated: boolean;
  /** The bearer token the demo API expects. */
  token: string;
}

/** Creates the data directory, and in it the CA and the demo token unless they exist. */
export async function openQuickstartData(dataDir: string): Promise<QuickstartData> {
  const paths = quickstartPaths(dataDir);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const caCreated = !(await exists(join(paths.ca, 'ca.crt')));
  const ca = caCreated ? await initCaDir(paths.ca) : await loadCaDir(paths.ca);
  return { paths, ca, caCreated, token: await ensureToken(paths, caCreated) };
}

async function ensureToken(paths: QuickstartPaths, fresh: boolean): Promise<string> {
  if (!fresh && (await exists(paths.token))) {
    const token = (await readFile(paths.token, 'utf8')).trim();
    if (token !== '') return token;
  }
  const token = `demo-${randomBytes(18).toString('base64url')}`;
  await writeReplacing(paths.token, `${token}\n`, 0o600);
  return token;
}

export interface IssuedMaterial {
  certPem: string;
  keyPem: string;
  caPem: string;
  notAfter: Date;
}

/** Issues a key and certificate and writes them to certs/BASE.key (0600) and certs/BASE.crt. */
export async function issueToFiles(
  data: QuickstartData,
  base: string,
  req: { type: CertType; identity: CertIdentity; dnsNames?: string[]; ipAddresses?: string[]; lifetimeMs?: number },
): Promise<IssuedMaterial> {
  const issued = await issueKeyAndCert(data.ca, req);
  await mkdir(data.paths.certs, { recursive: true, mode: 0o700 });
  await writeReplacing(join(data.paths.certs, `${base}.key`), issued.keyPem, 0o600);
  await writeReplacing(join(data.paths.certs, `${base}.crt`), issued.certPem, 0o644);
  return { certPem: issued.certPem, keyPem: issued.keyPem, caPem: issued.caPem, notAfter: issued.notAfter };
}

/** What a run binds, and so what the specs must say. */
export interface RuntimeAddresses {
  /** host:port of the access tier. */
  accessTierAddress: string;
  /** host:port of the demo API (the service's backend.dnsOverride). */
  kubeAddress: string;
  /** The client proxy's port (the service's client.listenPort). */
  proxyPort: number;
}

/** The specs of a fresh data directory, with comments for whoever opens the file. */
export function initialSpecs(caPem: string, at: RuntimeAddresses): string {
  const n = QUICKSTART_NAMES;
  const docs: Array<{ comment: string; object: Record<string, unknown> }> = [
    {
      comment: 'Written by `causeway quickstart`. The addresses that depend on the ports of a run are updated on every start.',
      object: { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: n.accessTier }, spec: { cluster: n.cluster, address: at.accessTierAddress } },
    },
    {
      comment: 'The connector may dial loopback addresses only: the demo API runs on this machine.',
      object: { apiVersion: 'causeway/v1', kind: 'Connector', metadata: { name: n.connector }, spec: { cluster: n.cluster, allowedCidrs: ['127.0.0.0/8'], allowedDomains: [] } },
    },
    {
      comment: 'The DEMO Kubernetes API: a fake server from the Causeway test kit, not a real cluster.',
      object: {
        apiVersion: 'causeway/v1',
        kind: 'Service',
        metadata: { name: n.service, description: 'DEMO Kubernetes API (a fake from the Causeway test kit, not a real cluster)' },
        spec: {
          type: 'kubernetes',
          cluster: n.cluster,
          accessTier: n.accessTier,
          connector: n.connector,
          domain: QUICKSTART_DOMAIN,
          port: 443,
          backend: { dnsOverride: at.kubeAddress },
          client: { listenPort: at.proxyPort, allowUserOverride: true },
          kubernetes: { clusterName: n.kubeContext, caPublicKey: caPem },
        },
      },
    },
  ];
  return docs.map((d) => `# ${d.comment}\n${stringify(d.object, { lineWidth: 0 })}`).join('---\n');
}

function specsError(path: string, detail: string): UserError {
  return new UserError('QUICKSTART_SPECS_INVALID', `${path} cannot be used: ${detail}. Fix it, or delete it and run the quickstart again to have it written afresh.`);
}

/**
 * Sets the run-dependent fields (edge-1's address, demo-k8s's dnsOverride and listen port) in the spec
 * text and leaves everything else, comments included, as written.
 */
export function patchSpecs(text: string, path: string, at: RuntimeAddresses): string {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw specsError(path, 'it is not a list of YAML documents');
  let tier = false;
  let service = false;
  for (const doc of docs) {
    if (doc.errors.length > 0) throw specsError(path, doc.errors.map((e) => e.message).join('; '));
    const kind: unknown = doc.get('kind');
    const name: unknown = doc.getIn(['metadata', 'name']);
    if (kind === 'AccessTier' && name === QUICKSTART_NAMES.accessTier) {
      doc.setIn(['spec', 'address'], at.accessTierAddress);
      tier = true;
    } else if (kind === 'Service' && name === QUICKSTART_NAMES.service) {
      doc.setIn(['spec', 'backend', 'dnsOverride'], at.kubeAddress);
      doc.setIn(['spec', 'client', 'listenPort'], at.proxyPort);
      service = true;
    }
  }
  if (!tier || !service) throw specsError(path, `the quickstart needs the AccessTier "${QUICKSTART_NAMES.accessTier}" and the Service "${QUICKSTART_NAMES.service}" in it`);
  return docs.map((d) => d.toString({ lineWidth: 0 })).join('');
}

/** Parses and checks spec text; any problem is a UserError listing them all. */
export function parseSpecsOrThrow(text: string, path: string): SpecObject[] {
  const parsed = parseSpecDocuments(text, path);
  const problems = parsed.ok ? validateReferences(parsed.objects) : parsed.problems;
  if (!parsed.ok || problems.length > 0) throw specsError(path, `${problems.length === 1 ? 'a problem' : `${problems.length} problems`}:\n${formatProblems(problems)}`);
  return parsed.objects;
}

/**
 * Brings DATA/specs.yaml up to date with this run's addresses (writing it the first time, or afresh
 * after a new CA) and returns the objects it holds. The file is written only when it changes.
 */
export async function writeQuickstartSpecs(data: QuickstartData, at: RuntimeAddresses): Promise<SpecObject[]> {
  const { specs } = data.paths;
  const before = !data.caCreated && (await exists(specs)) ? await readFile(specs, 'utf8') : undefined;
  const text = before === undefined ? initialSpecs(data.ca.certPem, at) : patchSpecs(before, specs, at);
  const objects = parseSpecsOrThrow(text, specs);
  if (text !== before) await writeReplacing(specs, text, 0o644);
  return objects;
}

/** A kubeconfig for the demo service: server https://QUICKSTART_DOMAIN, our CA, the demo token. */
export function quickstartKubeconfig(caPem: string, token: string, proxyUrl?: string): string {
  const name = QUICKSTART_NAMES.kubeContext;
  const cluster: Record<string, unknown> = { server: `https://${QUICKSTART_DOMAIN}`, 'certificate-authority-data': Buffer.from(caPem).toString('base64') };
  if (proxyUrl !== undefined) cluster['proxy-url'] = proxyUrl;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster }],
    users: [{ name, user: { token } }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
    'current-context': name,
    preferences: {},
  });
}

/**
 * Writes DATA/kubeconfig when it is missing (or after a new CA), so the user's edits survive, and
 * DATA/kubeconfig-proxy-url on every start, for this run's proxy port.
 */
export async function writeQuickstartKubeconfigs(data: QuickstartData, proxyUrl: string): Promise<void> {
  const { kubeconfig, proxyUrlKubeconfig } = data.paths;
  if (data.caCreated || !(await exists(kubeconfig))) await writeReplacing(kubeconfig, quickstartKubeconfig(data.ca.certPem, data.token), 0o600);
  await writeReplacing(proxyUrlKubeconfig, quickstartKubeconfig(data.ca.certPem, data.token, proxyUrl), 0o600);
}
