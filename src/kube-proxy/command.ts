/**
 * `causeway kube-proxy`: the kube proxy (issue 6) in the foreground, in front of the Kubernetes API,
 * usually in the cluster it guards and reached through a connector (deploy/README.md).
 *
 * Joined to a control plane (the normal way):
 *
 *   causeway kube-proxy --control-plane https://cp:8440 --join-token T --ca-pin sha256:… --data-dir DIR
 *                       --cluster-name prod [--listen 0.0.0.0:8443] [--health-listen 127.0.0.1:9090]
 *                       [--serving-name kube.prod.example.com]...
 *
 *   The first start enrolls with the single-use join token (also CAUSEWAY_JOIN_TOKEN) and keeps the
 *   identity under DIR. Tokens are verified against the control plane's issuer (its URL, trusted by
 *   the installation CA pinned at enrollment; --issuer/--issuer-ca to change), audience
 *   `kubernetes:<cluster>`. The config stream brings users, devices, policies and services: disabled
 *   users, banned devices and Policy `kubernetes.deny` rules are enforced, and live requests and
 *   streams are cut within a second of a change. Kube audit events are spooled under DIR/events and
 *   shipped to the control plane.
 *
 * Without a control plane (kube-apiserver-less setups, or trying it out):
 *
 *   causeway kube-proxy --issuer https://causeway.example.com --cluster-name prod [--audience A]
 *                       [--issuer-ca FILE] [--events FILE] [--data-dir DIR]
 *
 *   Only the token is checked (no users, devices or rules, nothing cut); events are appended to
 *   --events (default DIR/kube-events.jsonl, or ./kube-events.jsonl) as JSON lines.
 *
 * The API server: in-cluster by default (KUBERNETES_SERVICE_HOST/PORT and the service account's
 * token and ca.crt, the token re-read as the kubelet rotates it); --backend URL keeps the service
 * account but names another address; --backend-kubeconfig FILE [--backend-context C] uses a
 * kubeconfig's token or client certificate instead.
 *
 * The serving certificate: a CA of its own under --serving-ca-dir (default DIR itself: DIR/serving-ca.crt …, or
 * ./kube-proxy-serving), created on the first start, and a leaf for the in-cluster names, localhost
 * and every --serving-name (put the Service's `domain` there: kubectl checks it), reissued when it
 * nears expiry or the names change. The CA's PEM is printed on stderr at every start and kept in
 * serving-ca.crt: it is the Service's `kubernetes.caPublicKey`. Or give --tls-cert/--tls-key.
 *
 * This is an entry point: it reads files and the environment. Logs are JSON on stdout. With
 * --health-listen, /healthz, /readyz and Prometheus /metrics answer on that (local) address.
 * SIGTERM or SIGINT cuts live streams and exits.
 */
import { readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { JsonLinesFileSink, SpoolingEventSink, httpEventSender, nodeSpoolFiles } from '../lib/audit/index.ts';
import type { AccessEvent, KubeEvent, KubeEventSink } from '../lib/audit/index.ts';
import { UserError, errorCode, errorMessage } from '../lib/errors.ts';
import { assertSafePath } from '../lib/fs-safety.ts';
import { configStreamHealth, startHealthServer } from '../lib/health/server.ts';
import type { HealthReport } from '../lib/health/server.ts';
import type { Closable } from '../lib/lifecycle.ts';
import { createLogger } from '../lib/log.ts';
import { parseAuthority } from '../lib/net/target.ts';
import type { TokenAlgorithm } from '../lib/oidc/index.ts';
import { closeStarted, defaultPartCommandIo, joinAsPart } from '../part-command.ts';
import type { PartCommandIo } from '../part-command.ts';
import { createServingCa, inClusterBackend, issueServingCert, kubeconfigBackend, servingCertNeedsRenewal, startKubeProxy } from './index.ts';
import type { KubeBackend, KubeProxy, KubeProxyOptions, KubeProxyStats } from './index.ts';

/** What the command touches outside itself; tests replace it. */
export interface KubeProxyCommandIo extends PartCommandIo<KubeProxy> {
  /** Where the serving CA's PEM is shown at start (stderr by default; logs own stdout). */
  print: (text: string) => void;
  /** The service account directory of the in-cluster backend. */
  serviceAccountDir: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** How often the in-cluster token file is looked at again (the kubelet rotates it well before expiry). */
const TOKEN_RECHECK_MS = 5_000;
const ALGORITHMS: readonly TokenAlgorithm[] = ['RS256', 'ES256', 'PS256', 'EdDSA'];

function defaultIo(): KubeProxyCommandIo {
  return { ...defaultPartCommandIo<KubeProxy>(), print: (text) => process.stderr.write(text), serviceAccountDir: SERVICE_ACCOUNT_DIR };
}

export interface KubeProxyFlags {
  clusterName?: string;
  listen: { host: string; port: number };
  healthListen?: { host: string; port: number };
  controlPlane?: string;
  joinToken?: string;
  caPin?: string;
  dataDir?: string;
  name?: string;
  issuer?: string;
  issuerCa?: string;
  audience?: string;
  algorithms?: TokenAlgorithm[];
  usernameClaim: string;
  usernamePrefix: string;
  groupsClaim: string;
  groupsPrefix: string;
  backend?: string;
  backendKubeconfig?: string;
  backendContext?: string;
  servingCaDir?: string;
  servingName: string[];
  tlsCert?: string;
  tlsKey?: string;
  events?: string;
  logLevel: string;
}

export function registerKubeProxyCommand(program: Command, io: Partial<KubeProxyCommandIo> = {}): Command {
  const deps: KubeProxyCommandIo = { ...defaultIo(), ...io };
  return program
    .command('kube-proxy')
    .description('Run the kube proxy: verifies Causeway ID tokens and forwards to the Kubernetes API with impersonation, so the cluster\'s own RBAC applies to the person')
    .option('--cluster-name <name>', 'this cluster\'s name, as Service specs give it in kubernetes.clusterName (required)')
    .addOption(new Option('--listen <host:port>', 'where to serve HTTPS').argParser(parseListen).default({ host: '0.0.0.0', port: 8443 }, '0.0.0.0:8443'))
    .option('--health-listen <host:port>', 'serve /healthz, /readyz and /metrics here (keep it local)', parseListen)
    .option('--control-plane <url>', 'join this control plane (https://host:port) and follow its configuration')
    .option('--join-token <token>', 'the single-use token from `causeway join-token create kube-proxy NAME` (first start only; also CAUSEWAY_JOIN_TOKEN)')
    .option('--ca-pin <sha256:hex>', 'the CA pin printed with the join token (first start only)')
    .option('--data-dir <dir>', 'where the identity, last good configuration, event spool and serving CA are kept (required with --control-plane)')
    .option('--name <name>', 'without a control plane: this proxy\'s name in audit events (default: the cluster name); with one, checked against the enrolled name')
    .option('--issuer <url>', 'the OIDC issuer tokens must come from (default: the control plane URL; required without one)')
    .option('--issuer-ca <file>', 'CA certificate (PEM) to trust the issuer by (default: the installation CA for the control plane\'s own URL, else the system roots)')
    .option('--audience <client-id>', 'the audience tokens must carry (default: kubernetes:<cluster-name>)')
    .option('--algorithms <list>', `token signature algorithms to accept, comma-separated (default RS256,ES256; known: ${ALGORITHMS.join(', ')})`, parseAlgorithms)
    .option('--username-claim <claim>', 'the claim that becomes the Kubernetes username', 'email')
    .option('--username-prefix <prefix>', 'put before every username (e.g. "causeway:")', '')
    .option('--groups-claim <claim>', 'the claim that holds the groups', 'groups')
    .option('--groups-prefix <prefix>', 'put before every group (e.g. "causeway:"); `system:` groups from tokens are always dropped', '')
    .option('--backend <url>', 'the API server URL, with the in-cluster service account\'s token and CA (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)')
    .option('--backend-kubeconfig <file>', 'reach the API server with this kubeconfig\'s server, CA and token or client certificate instead of the service account')
    .option('--backend-context <name>', 'the kubeconfig context to use (default: its current-context)')
    .option('--serving-ca-dir <dir>', 'where the serving CA and certificate are kept (default the data dir, or ./kube-proxy-serving)')
    .addOption(new Option('--serving-name <name>', 'an extra DNS name or IP for the serving certificate, e.g. the Service\'s domain (repeatable)').argParser(collect).default([]))
    .option('--tls-cert <file>', 'serve this certificate (PEM) instead of one from the proxy\'s own CA')
    .option('--tls-key <file>', 'the key of --tls-cert')
    .option('--events <file>', 'without a control plane: append kube audit events here as JSON lines (default DIR/kube-events.jsonl, or ./kube-events.jsonl)')
    .option('--log-level <level>', 'log level for the JSON logs on stdout (debug, info, warn, error)', 'info')
    .action(async (flags: KubeProxyFlags) => {
      await runKubeProxy(flags, deps);
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `host:port`, `[v6]:port` or `:port` (all addresses); port 0 picks a free port. */
export function parseListen(value: string): { host: string; port: number } {
  const text = value.startsWith(':') ? `0.0.0.0${value}` : value;
  const anyPort = text.endsWith(':0');
  const parsed = parseAuthority(anyPort ? `${text.slice(0, -1)}1` : text);
  if (!parsed.ok) throw new InvalidArgumentError(`must be host:port, [IPv6]:port or :port (${parsed.message})`);
  return { host: parsed.target.host, port: anyPort ? 0 : parsed.target.port };
}

function parseAlgorithms(value: string): TokenAlgorithm[] {
  const list = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = list.filter((a) => !(ALGORITHMS as readonly string[]).includes(a));
  if (list.length === 0 || unknown.length > 0) throw new InvalidArgumentError(`give a comma-separated list of ${ALGORITHMS.join(', ')}${unknown.length > 0 ? ` (unknown: ${unknown.join(', ')})` : ''}`);
  return list as TokenAlgorithm[];
}

function kubeProxyError(code: string, message: string): UserError {
  return new UserError(`kube-proxy-${code}`, message);
}

async function readText(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw kubeProxyError('file-unreadable', `cannot read ${flag} ${file} (${errorCode(err) ?? errorMessage(err)}); check the path and its permissions`);
  }
}

/** The in-cluster names a Service in front of the proxy may be reached by, and loopback. */
export function defaultServingNames(extra: readonly string[]): string[] {
  const names = ['causeway-kube-proxy', 'causeway-kube-proxy.causeway', 'causeway-kube-proxy.causeway.svc', 'causeway-kube-proxy.causeway.svc.cluster.local', 'localhost', '127.0.0.1', ...extra];
  return [...new Set(names.map((n) => n.trim()).filter((n) => n !== ''))];
}

export interface ServingMaterial {
  certPem: string;
  keyPem: string;
  /** The CA that signed certPem, when it is the proxy's own. */
  caPem?: string;
  /** Whether this start created the CA (a new caPublicKey to paste). */
  createdCa: boolean;
}

/** The serving CA and certificate in `dir`: loaded, created or reissued as needed (files 0600, dir 0700). */
export async function loadOrCreateServing(dir: string, o: { clusterName: string; hosts: string[]; now?: number }): Promise<ServingMaterial> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const file = (name: string): string => path.join(dir, name);
  const read = async (name: string): Promise<string | undefined> => {
    try {
      return await readFile(file(name), 'utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return undefined;
      throw kubeProxyError('file-unreadable', `cannot read ${file(name)} (${errorCode(err) ?? errorMessage(err)}); check --serving-ca-dir and its permissions`);
    }
  };
  const [caCert, caKey] = await Promise.all([read('serving-ca.crt'), read('serving-ca.key')]);
  if ((caCert === undefined) !== (caKey === undefined)) {
    throw kubeProxyError('serving-ca-incomplete', `${dir} holds only one of serving-ca.crt and serving-ca.key; restore the other, or remove both to have a new CA made (then update the Service's kubernetes.caPublicKey)`);
  }
  let ca = caCert !== undefined && caKey !== undefined ? { certPem: caCert, keyPem: caKey } : undefined;
  const createdCa = ca === undefined;
  if (ca === undefined) {
    ca = await createServingCa({ clusterName: o.clusterName });
    // The key first: a crash between the two leaves no CA certificate without its key.
    await writeFile(file('serving-ca.key'), ca.keyPem, { mode: 0o600 });
    await writeFile(file('serving-ca.crt'), ca.certPem, { mode: 0o644 });
  }
  const [leafCert, leafKey] = await Promise.all([read('serving.crt'), read('serving.key')]);
  const now = o.now ?? Date.now();
  if (leafCert !== undefined && leafKey !== undefined && !servingCertNeedsRenewal({ certPem: leafCert, keyPem: leafKey }, ca.certPem, o.hosts, now)) {
    return { certPem: leafCert, keyPem: leafKey, caPem: ca.certPem, createdCa };
  }
  const issued = await issueServingCert(ca, { hosts: o.hosts });
  await writeFile(file('serving.key'), issued.keyPem, { mode: 0o600 });
  await writeFile(file('serving.crt'), issued.certPem, { mode: 0o644 });
  return { certPem: issued.certPem, keyPem: issued.keyPem, caPem: ca.certPem, createdCa };
}

/** A token file read again when it changes (checked at most every TOKEN_RECHECK_MS), as the kubelet rotates it. */
export function rotatingTokenFile(file: string, now: () => number = Date.now): () => string | undefined {
  let value: string | undefined;
  let mtimeMs = -1;
  let checkedAt = -Infinity;
  return () => {
    const t = now();
    if (t - checkedAt < TOKEN_RECHECK_MS && value !== undefined) return value;
    checkedAt = t;
    try {
      const st = statSync(file);
      if (st.mtimeMs !== mtimeMs || value === undefined) {
        value = readFileSync(file, 'utf8').trim() || undefined;
        mtimeMs = st.mtimeMs;
      }
    } catch {
      // Keep the last good token: a rotation replaces the file by a symlink swap.
    }
    return value;
  };
}

/** The API server and the proxy's credentials to it, from the flags, the environment and the files they name. */
export async function backendFromFlags(flags: Pick<KubeProxyFlags, 'backend' | 'backendKubeconfig' | 'backendContext'>, io: Pick<KubeProxyCommandIo, 'env' | 'cwd' | 'serviceAccountDir'>): Promise<KubeBackend> {
  if (flags.backendKubeconfig !== undefined) {
    if (flags.backend !== undefined) throw kubeProxyError('flags-conflict', '--backend and --backend-kubeconfig both name the API server; give one');
    const file = path.resolve(io.cwd(), flags.backendKubeconfig);
    await assertSafePath(file, '--backend-kubeconfig', 'kube-proxy-file-unsafe');
    const text = await readText(file, '--backend-kubeconfig');
    const base = path.dirname(file);
    return kubeconfigBackend(text, {
      ...(flags.backendContext === undefined ? {} : { context: flags.backendContext }),
      readFile: (p) => {
        const resolved = path.resolve(base, p);
        try {
          return readFileSync(resolved, 'utf8');
        } catch (err) {
          throw kubeProxyError('file-unreadable', `cannot read ${resolved}, which --backend-kubeconfig names (${errorCode(err) ?? errorMessage(err)})`);
        }
      },
    });
  }
  if (flags.backendContext !== undefined) throw kubeProxyError('flags-conflict', '--backend-context is for --backend-kubeconfig');
  const saDir = io.serviceAccountDir;
  const caFile = path.join(saDir, 'ca.crt');
  const tokenFile = path.join(saDir, 'token');
  let caPem: string;
  try {
    caPem = await readFile(caFile, 'utf8');
  } catch (err) {
    throw kubeProxyError('not-in-cluster', `cannot read the service account CA ${caFile} (${errorCode(err) ?? errorMessage(err)}); run in a pod with a service account token mounted, or give --backend-kubeconfig FILE`);
  }
  const token = rotatingTokenFile(tokenFile);
  if (token() === undefined) throw kubeProxyError('not-in-cluster', `cannot read the service account token ${tokenFile}; run in a pod with a service account token mounted, or give --backend-kubeconfig FILE`);
  if (flags.backend !== undefined) {
    let url: URL;
    try {
      url = new URL(flags.backend);
    } catch {
      throw kubeProxyError('backend-invalid', `--backend ${flags.backend} is not a URL; give https://host[:port]`);
    }
    if (url.protocol !== 'https:') throw kubeProxyError('backend-invalid', `--backend must be https:// (the proxy sends its service account token there), not ${url.protocol}`);
    const port = url.port === '' ? 443 : Number(url.port);
    return inClusterBackend({ host: url.hostname.replace(/^\[|\]$/g, ''), port, caPem, token });
  }
  const env = io.env();
  return inClusterBackend({ host: env.KUBERNETES_SERVICE_HOST ?? '', port: env.KUBERNETES_SERVICE_PORT ?? '', caPem, token });
}

/** Kube events as JSON lines (the file sink takes any event; its type names the access events it was made for). */
function jsonLinesKubeSink(sink: JsonLinesFileSink): KubeEventSink {
  return { write: (event: KubeEvent) => sink.write(event as unknown as AccessEvent) };
}

/** Prometheus metrics from the proxy's stats, read at scrape time. */
function kubeProxyMetrics(stats: () => KubeProxyStats | undefined): { scrape: () => Promise<{ contentType: string; body: string }> } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const counter = (name: string, help: string, read: (s: KubeProxyStats) => number): void => {
    const c: Counter = new Counter({
      name,
      help,
      registers,
      collect: () => {
        const s = stats();
        if (s === undefined) return;
        c.reset();
        c.inc(read(s));
      },
    });
  };
  const gauge = (name: string, help: string, read: (s: KubeProxyStats) => number): void => {
    const g: Gauge = new Gauge({
      name,
      help,
      registers,
      collect: () => {
        const s = stats();
        if (s !== undefined) g.set(read(s));
      },
    });
  };
  counter('causeway_kube_proxy_requests_total', 'Kubernetes API requests answered or forwarded', (s) => s.requests);
  counter('causeway_kube_proxy_denied_total', 'Requests the kube proxy refused itself (401, 403, 400, 503)', (s) => s.denied);
  counter('causeway_kube_proxy_cuts_total', 'Live requests and streams cut because a change denied them', (s) => s.cuts);
  gauge('causeway_kube_proxy_live', 'Requests and streams in flight', (s) => s.live);
  gauge('causeway_kube_proxy_sessions', 'exec, attach and port-forward sessions in flight', (s) => s.sessions);
  gauge('causeway_kube_proxy_ready', '1 when the proxy has the state to decide with', (s) => (s.ready ? 1 : 0));
  return { scrape: async () => ({ contentType: registry.contentType, body: await registry.metrics() }) };
}

function proxyHealth(proxy: KubeProxy | undefined): HealthReport {
  if (proxy === undefined) return { ready: false, status: 'unavailable', message: 'starting' };
  const s = proxy.stats();
  const details = { live: s.live, sessions: s.sessions, requests: s.requests };
  return s.ready ? { ready: true, status: 'ok', message: 'serving', details } : { ready: false, status: 'unavailable', message: 'no configuration from the control plane yet', details };
}

function servingNotice(serving: ServingMaterial, dir: string, hosts: string[]): string {
  if (serving.caPem === undefined) return '';
  return [
    `The kube proxy's serving CA${serving.createdCa ? ' (new)' : ''}, for the Kubernetes Service's kubernetes.caPublicKey (also in ${path.join(dir, 'serving-ca.crt')}):`,
    serving.caPem.trim(),
    `Its serving certificate names: ${hosts.join(', ')}`,
    '',
  ].join('\n');
}

export async function runKubeProxy(flags: KubeProxyFlags, io: KubeProxyCommandIo): Promise<KubeProxy> {
  const clusterName = flags.clusterName;
  if (clusterName === undefined || clusterName.trim() === '') {
    throw kubeProxyError('cluster-name-missing', 'give --cluster-name NAME: the cluster this proxy guards, as Service specs name it in kubernetes.clusterName');
  }
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw kubeProxyError('flags-conflict', 'give both --tls-cert and --tls-key, or neither (the proxy then makes its own CA)');
  if (flags.tlsCert !== undefined && (flags.servingCaDir !== undefined || flags.servingName.length > 0)) {
    throw kubeProxyError('flags-conflict', '--serving-ca-dir and --serving-name are for the proxy\'s own CA; with --tls-cert the certificate is yours');
  }
  const joined = flags.controlPlane !== undefined;
  if (joined && flags.events !== undefined) throw kubeProxyError('flags-conflict', '--events is for running without a control plane; with --control-plane events are shipped to it');
  if (!joined) {
    const joinFlags = (['joinToken', 'caPin'] as const).filter((f) => flags[f] !== undefined);
    if (joinFlags.length > 0) throw kubeProxyError('flags-conflict', `${joinFlags.map((f) => (f === 'joinToken' ? '--join-token' : '--ca-pin')).join(', ')} need --control-plane URL`);
    if (flags.issuer === undefined) {
      throw kubeProxyError('issuer-missing', 'give --control-plane URL --join-token T --ca-pin PIN --data-dir DIR to join a control plane, or --issuer URL to run without one (tokens checked only)');
    }
  }
  if (joined && flags.dataDir === undefined) throw kubeProxyError('data-dir-missing', 'with --control-plane, give --data-dir DIR: the kube proxy keeps its identity, its last good configuration, its event spool and its serving CA there');
  const dataDir = flags.dataDir === undefined ? undefined : path.resolve(io.cwd(), flags.dataDir);
  if (dataDir !== undefined) await assertSafePath(dataDir, '--data-dir', 'kube-proxy-file-unsafe');

  const logger = createLogger({ name: 'causeway-kube-proxy', level: flags.logLevel, destination: io.logDestination });
  const started: Closable[] = [];
  try {
    // The API server first: a proxy that cannot reach it should fail before it enrolls.
    const backend = await backendFromFlags(flags, io);

    let serving: ServingMaterial;
    let servingDir = '';
    let hosts: string[] = [];
    if (flags.tlsCert !== undefined && flags.tlsKey !== undefined) {
      const cert = path.resolve(io.cwd(), flags.tlsCert);
      const key = path.resolve(io.cwd(), flags.tlsKey);
      for (const [file, flag] of [[cert, '--tls-cert'], [key, '--tls-key']] as const) await assertSafePath(file, flag, 'kube-proxy-file-unsafe');
      serving = { certPem: await readText(cert, '--tls-cert'), keyPem: await readText(key, '--tls-key'), createdCa: false };
    } else {
      servingDir = path.resolve(io.cwd(), flags.servingCaDir ?? (dataDir ?? 'kube-proxy-serving'));
      await assertSafePath(servingDir, '--serving-ca-dir', 'kube-proxy-file-unsafe');
      hosts = defaultServingNames(flags.servingName);
      serving = await loadOrCreateServing(servingDir, { clusterName, hosts });
    }

    let state: KubeProxyOptions['state'];
    let events: KubeEventSink;
    let issuer = flags.issuer;
    let issuerCaPem = flags.issuerCa === undefined ? undefined : await (async () => {
      const file = path.resolve(io.cwd(), flags.issuerCa!);
      await assertSafePath(file, '--issuer-ca', 'kube-proxy-file-unsafe');
      return readText(file, '--issuer-ca');
    })();
    let name = flags.name ?? clusterName;
    let configHealth: (() => HealthReport) | undefined;
    if (joined && dataDir !== undefined) {
      const controlPlaneUrl = flags.controlPlane!;
      const peer = await joinAsPart<KubeProxy>('kube-proxy', { flags, controlPlaneUrl, dataDir, io, logger, started });
      name = peer.name;
      state = peer.config;
      const spool = await SpoolingEventSink.open({ files: nodeSpoolFiles(path.join(dataDir, 'events')), send: httpEventSender({ controlPlaneUrl, tls: () => peer.tls() }), logger });
      started.push(spool);
      events = spool;
      issuer ??= controlPlaneUrl.replace(/\/+$/, '');
      // The control plane's own URL is trusted by the CA pinned at enrollment, as the config stream is.
      if (issuerCaPem === undefined && new URL(issuer).origin === new URL(controlPlaneUrl).origin) issuerCaPem = peer.tls().caPem;
      configHealth = () => configStreamHealth(peer.config.status(), Date.now());
      if (peer.config.current() === undefined) logger.info({ controlPlane: controlPlaneUrl }, 'waiting for the first configuration from the control plane (requests get 503 until then)');
    } else {
      const eventsPath = path.resolve(io.cwd(), flags.events ?? (dataDir === undefined ? 'kube-events.jsonl' : path.join(dataDir, 'kube-events.jsonl')));
      await assertSafePath(eventsPath, '--events', 'kube-proxy-file-unsafe');
      await mkdir(path.dirname(eventsPath), { recursive: true, mode: 0o700 });
      const sink = await JsonLinesFileSink.open({ path: eventsPath, logger });
      started.push(sink);
      events = jsonLinesKubeSink(sink);
    }
    if (issuer === undefined) throw kubeProxyError('issuer-missing', 'give --issuer URL');
    try {
      if (new URL(issuer).protocol !== 'https:') throw new Error('not https');
    } catch {
      throw kubeProxyError('issuer-invalid', `--issuer ${issuer} must be an https:// URL, exactly as tokens carry it in iss`);
    }
    const audience = flags.audience ?? `kubernetes:${clusterName}`;

    const current: { proxy?: KubeProxy } = {};
    if (flags.healthListen !== undefined) {
      const metrics = kubeProxyMetrics(() => current.proxy?.stats());
      started.push(await startHealthServer({
        ...flags.healthListen,
        logger,
        check: () => {
          const own = proxyHealth(current.proxy);
          const config = configHealth?.();
          if (config === undefined || !own.ready) return own;
          return config.ready ? { ...config, details: { ...config.details, ...own.details } } : config;
        },
        metrics: () => metrics.scrape(),
      }));
    }

    const proxy = await startKubeProxy({
      listen: flags.listen,
      tls: { certPem: serving.certPem, keyPem: serving.keyPem, ...(serving.caPem === undefined ? {} : { caPem: serving.caPem }) },
      issuer,
      audience,
      ...(flags.algorithms === undefined ? {} : { algorithms: flags.algorithms }),
      ...(issuerCaPem === undefined ? {} : { issuerCaPem }),
      claims: { usernameClaim: flags.usernameClaim, usernamePrefix: flags.usernamePrefix, groupsClaim: flags.groupsClaim, groupsPrefix: flags.groupsPrefix },
      backend,
      clusterName,
      name,
      ...(state === undefined ? {} : { state }),
      events,
      logger,
    });
    current.proxy = proxy;
    started.push(proxy);
    if (serving.caPem !== undefined) io.print(servingNotice(serving, servingDir, hosts));
    logger.info({ url: proxy.url, clusterName, name, issuer, audience, backend: backend.url, controlPlane: flags.controlPlane ?? null, rules: state === undefined ? 'off (no control plane)' : 'on' }, 'kube proxy started');
    io.onStarted(started, proxy, logger);
    return proxy;
  } catch (err) {
    await closeStarted(started);
    throw err;
  }
}


