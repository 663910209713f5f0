/**
 * The kube proxy's own credentials to the API server: the in-cluster service account (token and CA
 * from /var/run/secrets/kubernetes.io/serviceaccount, host from KUBERNETES_SERVICE_HOST/PORT) or a
 * kubeconfig. Pure: command.ts reads the files and passes their text (and a reader for files a
 * kubeconfig names); nothing here touches the environment.
 *
 * What is refused, loudly: `insecure-skip-tls-verify` (the proxy sends a powerful token there), exec
 * and auth-provider plugins (a plugin runs code; give a token or a client certificate), a kubeconfig
 * without any credential (the proxy would impersonate as nobody), and plain http:// servers.
 */
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { UserError } from '../lib/errors.ts';
import type { KubeBackend } from './index.ts';

export interface InClusterBackendInput {
  /** KUBERNETES_SERVICE_HOST. */
  host: string;
  /** KUBERNETES_SERVICE_PORT. */
  port: string | number;
  /** ca.crt text. */
  caPem: string;
  /** Reads the (rotating) token file; called per request. */
  token: () => string | undefined;
}

function backendError(message: string): UserError {
  return new UserError('KUBE_BACKEND_INVALID', `kube proxy backend: ${message}`);
}

/** The in-cluster backend: https://HOST:PORT with the service account's token and CA. */
export function inClusterBackend(i: InClusterBackendInput): KubeBackend {
  const host = String(i.host ?? '').trim();
  const port = Number(i.port);
  if (host === '' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw backendError('KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set; run in a pod, or give --backend-kubeconfig');
  }
  if (!i.caPem.includes('-----BEGIN CERTIFICATE-----')) throw backendError('the service account ca.crt is not a PEM certificate');
  const hostPart = isIP(host) === 6 ? `[${host}]` : host;
  return { url: `https://${hostPart}:${port}`, caPem: i.caPem, token: i.token };
}

export interface KubeconfigBackendOptions {
  /** The context to use; default: current-context. */
  context?: string;
  /** Reads a file a kubeconfig names (certificate-authority, client-certificate, client-key, tokenFile), relative paths resolved by the caller. */
  readFile?: (path: string) => string;
}

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => v !== null && typeof v === 'object' && !Array.isArray(v);

function named(list: unknown, name: string, what: string): Rec {
  if (!Array.isArray(list)) throw backendError(`the kubeconfig has no ${what}s`);
  const entry: unknown = list.find((e: unknown) => isRec(e) && e['name'] === name);
  if (!isRec(entry) || !isRec(entry[what])) throw backendError(`the kubeconfig has no ${what} named "${name}"`);
  return entry[what];
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function b64(v: unknown, field: string): string | undefined {
  const s = str(v);
  if (s === undefined) return undefined;
  const text = Buffer.from(s, 'base64').toString('utf8');
  if (!text.includes('-----BEGIN')) throw backendError(`${field} is not base64 of a PEM`);
  return text;
}

/** The backend a kubeconfig's (current) context describes. */
export function kubeconfigBackend(yamlText: string, o: KubeconfigBackendOptions = {}): KubeBackend {
  let doc: unknown;
  try {
    doc = parseYaml(yamlText);
  } catch (err) {
    throw new UserError('KUBE_BACKEND_INVALID', 'kube proxy backend: the kubeconfig is not valid YAML', { cause: err });
  }
  if (!isRec(doc)) throw backendError('the kubeconfig is empty');
  const contextName = o.context ?? str(doc['current-context']);
  if (contextName === undefined) throw backendError('the kubeconfig has no current-context; give a context');
  const context = named(doc['contexts'], contextName, 'context');
  const clusterName = str(context['cluster']);
  const userName = str(context['user']);
  if (clusterName === undefined || userName === undefined) throw backendError(`context "${contextName}" must name a cluster and a user`);
  const cluster = named(doc['clusters'], clusterName, 'cluster');
  const user = named(doc['users'], userName, 'user');
  const read = (path: string, field: string): string => {
    if (o.readFile === undefined) throw backendError(`${field} names a file, which cannot be read here; use ${field}-data`);
    return o.readFile(path);
  };

  const server = str(cluster['server']);
  if (server === undefined) throw backendError(`cluster "${clusterName}" has no server`);
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw backendError(`cluster "${clusterName}" server is not a URL`);
  }
  if (url.protocol !== 'https:') throw backendError(`cluster "${clusterName}" server must be https:// (the proxy sends its credentials there)`);
  if (cluster['insecure-skip-tls-verify'] === true) {
    throw backendError(`cluster "${clusterName}" sets insecure-skip-tls-verify; give certificate-authority(-data) instead (the proxy sends a powerful credential there)`);
  }
  const caPem = b64(cluster['certificate-authority-data'], 'certificate-authority-data') ?? (str(cluster['certificate-authority']) !== undefined ? read(str(cluster['certificate-authority'])!, 'certificate-authority') : undefined);
  const tlsServerName = str(cluster['tls-server-name']);

  if (user['exec'] !== undefined || user['auth-provider'] !== undefined) {
    throw backendError(`user "${userName}" uses an exec or auth-provider plugin; give the proxy a token or a client certificate instead`);
  }
  if (user['as'] !== undefined || user['as-groups'] !== undefined || user['as-user-extra'] !== undefined) {
    throw backendError(`user "${userName}" sets impersonation (as/as-groups); the proxy impersonates each caller itself`);
  }
  const certPem = b64(user['client-certificate-data'], 'client-certificate-data') ?? (str(user['client-certificate']) !== undefined ? read(str(user['client-certificate'])!, 'client-certificate') : undefined);
  const keyPem = b64(user['client-key-data'], 'client-key-data') ?? (str(user['client-key']) !== undefined ? read(str(user['client-key'])!, 'client-key') : undefined);
  if ((certPem === undefined) !== (keyPem === undefined)) throw backendError(`user "${userName}" needs both a client certificate and its key`);
  const staticToken = str(user['token']);
  const tokenFile = str(user['tokenFile']);
  let token: (() => string | undefined) | undefined;
  if (staticToken !== undefined) token = () => staticToken;
  else if (tokenFile !== undefined) {
    read(tokenFile, 'tokenFile');
    token = () => read(tokenFile, 'tokenFile').trim();
  }
  if (token === undefined && certPem === undefined) {
    throw backendError(`user "${userName}" has no token and no client certificate; the proxy needs its own credential to impersonate`);
  }
  if (str(user['username']) !== undefined || str(user['password']) !== undefined) throw backendError(`user "${userName}" uses basic auth, which Kubernetes removed; give a token or a client certificate`);
  return {
    url: `${url.origin}${url.pathname.replace(/\/+$/, '')}`,
    ...(caPem !== undefined ? { caPem } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(certPem !== undefined && keyPem !== undefined ? { clientCert: { certPem, keyPem } } : {}),
    ...(tlsServerName !== undefined ? { tlsServerName } : {}),
  };
}
