/**
 * The fake Kubernetes API server: an HTTPS listener that records every request, authenticates it
 * through the configured hook, and routes it to discovery, pods, logs, exec or port-forward.
 */
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { silentLogger } from '../../../src/lib/log.ts';
import { createTokenVerifier } from '../../../src/lib/oidc/index.ts';
import type { TokenVerifier } from '../../../src/lib/oidc/index.ts';
import type { Logger } from '../../../src/lib/log.ts';
import { makeServerCert, makeTestCa } from '../certs.ts';
import { serveApi, serveApis, serveCoreV1, serveVersion } from './discovery.ts';
import type { ServerVersion } from './discovery.ts';
import { handleExecUpgrade } from './exec-transport.ts';
import { FilesystemStore } from './files.ts';
import { LogStore, serveLogs } from './logs.ts';
import { PodStore } from './pods.ts';
import type { FakePodInput, PodObject, PodPatch } from './pods.ts';
import { servePod, servePodCollection, serveNamespaces } from './pods-http.ts';
import type { PodsContext } from './pods-http.ts';
import { handlePortForwardUpgrade, PortForwardTargets } from './portforward.ts';
import { failure, notFound, sendJson, sendStatus } from './status.ts';
import type { KubeStatus } from './status.ts';
import type { FakeKube, FakeKubeOptions, FakeKubeUser, RecordedExec, RecordedPortForward, RecordedRequest } from './types.ts';

type Identified = { user: FakeKubeUser } | { status: KubeStatus };

export const BIG_NAMESPACE = 'big';

/** What the exec and port-forward handlers need from the server. */
export interface UpgradeContext {
  store: PodStore;
  signal: AbortSignal;
  logger: Logger;
  execs: RecordedExec[];
  portForwards: RecordedPortForward[];
  targets: PortForwardTargets;
  /** Each pod's filesystem (exec's cat/ls/test/tar, kubectl cp). */
  files: FilesystemStore;
  /** Registers a socket the server opened itself (port-forward targets), so close() destroys it. */
  track(socket: Socket): void;
}

const anonymous: FakeKubeUser = { user: 'system:anonymous', groups: ['system:unauthenticated'] };

function parseVersion(v: string): ServerVersion {
  const m = /^v?(\d+)\.(\d+)/.exec(v);
  return { major: m?.[1] ?? '1', minor: m?.[2] ?? '32', gitVersion: v.startsWith('v') ? v : `v${v}` };
}

export function defaultPodInputs(count: number): FakePodInput[] {
  return Array.from({ length: count }, (_, i) => ({ name: `web-${i}`, namespace: 'default', labels: { app: 'web' } }));
}

function bigPodInputs(count: number): FakePodInput[] {
  const filler = 'x'.repeat(1000);
  return Array.from({ length: count }, (_, i) => ({
    name: `big-${String(i).padStart(5, '0')}`,
    namespace: BIG_NAMESPACE,
    labels: { app: 'big' },
    annotations: { 'causeway.test/filler': filler },
  }));
}

/** Writes an HTTP error response on a socket whose request asked for an upgrade, then closes it. */
export function refuseUpgrade(socket: Duplex, status: KubeStatus): void {
  const body = Buffer.from(JSON.stringify(status));
  const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 500: 'Internal Server Error', 501: 'Not Implemented' }[status.code] ?? 'Error';
  socket.end(`HTTP/1.1 ${status.code} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nCache-Control: no-cache, private\r\nConnection: close\r\n\r\n${body.toString()}`);
  setTimeout(() => socket.destroy(), 1000).unref();
}

export class FakeKubeServer implements FakeKube {
  readonly requests: RecordedRequest[] = [];
  readonly execs: RecordedExec[] = [];
  readonly portForwards: RecordedPortForward[] = [];
  readonly caPem: string;
  url = '';
  port = 0;

  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly abort = new AbortController();
  private readonly store = new PodStore();
  private readonly logs = new LogStore();
  private readonly targets = new PortForwardTargets();
  private readonly files = new FilesystemStore();
  private readonly logger: Logger;
  private readonly version: ServerVersion;
  private readonly opts: FakeKubeOptions;
  private closing: Promise<void> | undefined;
  private readonly verifier: TokenVerifier | undefined;
  private readonly requestWaiters = new Set<(req: RecordedRequest | undefined) => boolean>();

  constructor(opts: FakeKubeOptions, tls: { certPem: string; keyPem: string; caPem: string }) {
    this.opts = opts;
    this.caPem = tls.caPem;
    this.logger = opts.logger ?? silentLogger();
    this.version = parseVersion(opts.serverVersion ?? '1.32.4');
    if (opts.oidc !== undefined && opts.authenticate === undefined && opts.impersonation === undefined) {
      this.verifier = createTokenVerifier({
        issuer: opts.oidc.issuer,
        audience: opts.oidc.audience,
        minRefetchIntervalMs: 1000,
        ...(opts.oidc.clockToleranceSec === undefined ? {} : { clockToleranceSec: opts.oidc.clockToleranceSec }),
        ...(opts.oidc.caPem === undefined ? {} : { caPem: opts.oidc.caPem }),
        ...(opts.oidc.allowInsecureHttp === true ? { allowInsecureHttp: true } : {}),
      });
    }
    this.server = createServer({
      cert: tls.certPem,
      key: tls.keyPem,
      requestCert: opts.requireClientCert === true,
      rejectUnauthorized: opts.requireClientCert === true,
      ...(opts.requireClientCert === true ? { ca: opts.clientCaPem ?? tls.caPem } : {}),
    });
    this.server.on('connection', (socket: Socket) => this.track(socket));
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('tlsClientError', (err) => this.logger.debug({ err }, 'fake-kube: TLS client error'));

    this.store.seed([...defaultPodInputs(opts.pods ?? 3), ...bigPodInputs(opts.bigPods ?? 0)]);
    for (const pod of this.store.list('default')) {
      this.logs.append('default', pod.metadata.name, pod.spec.containers[0].name, `${pod.metadata.name} started`);
    }
  }

  async listen(): Promise<void> {
    const host = this.opts.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? 0, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('fake-kube: no TCP address');
    this.port = address.port;
    this.url = `https://${isIP(host) === 6 ? `[${host}]` : host}:${this.port}`;
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  waitForRequest(match: (req: RecordedRequest) => boolean, timeoutMs = 10_000): Promise<RecordedRequest> {
    const found = this.requests.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = (req: RecordedRequest | undefined): boolean => {
        if (req === undefined) {
          clearTimeout(timer);
          reject(new Error('fake-kube: closed while waiting for a request'));
          return true;
        }
        if (!match(req)) return false;
        clearTimeout(timer);
        resolve(req);
        return true;
      };
      const timer = setTimeout(() => {
        this.requestWaiters.delete(waiter);
        reject(new Error(`fake-kube: no matching request within ${timeoutMs} ms; received:\n${this.requests.map((r) => `${r.method} ${r.url}`).join('\n')}`));
      }, timeoutMs);
      this.requestWaiters.add(waiter);
    });
  }

  addPod(pod: FakePodInput): PodObject {
    return this.store.add(pod);
  }

  modifyPod(namespace: string, name: string, patch: PodPatch): PodObject {
    return this.store.modify(namespace, name, patch);
  }

  deletePod(namespace: string, name: string): PodObject {
    const pod = this.store.delete(namespace, name);
    this.logs.endPod(namespace, name);
    this.files.drop(namespace, name);
    return pod;
  }

  getPod(namespace: string, name: string): PodObject | undefined {
    return this.store.get(namespace, name);
  }

  appendLog(namespace: string, pod: string, line: string, container?: string): void {
    const object = this.store.get(namespace, pod);
    if (object === undefined) throw new Error(`pod ${namespace}/${pod} does not exist`);
    const name = container ?? object.spec.containers[0].name;
    if (!object.spec.containers.some((c) => c.name === name)) throw new Error(`pod ${namespace}/${pod} has no container ${name}`);
    this.logs.append(namespace, pod, name, line);
  }

  writeFile(namespace: string, pod: string, path: string, content: Buffer | string, mode?: number): void {
    if (this.store.get(namespace, pod) === undefined) throw new Error(`pod ${namespace}/${pod} does not exist`);
    const problem = this.files.get(namespace, pod).writeFile(path, content, mode === undefined ? {} : { mode });
    if (problem !== undefined) throw new Error(`cannot write ${path} in ${namespace}/${pod}: ${problem}`);
  }

  readFile(namespace: string, pod: string, path: string): Buffer | undefined {
    if (this.store.get(namespace, pod) === undefined) return undefined;
    return this.files.get(namespace, pod).readFile(path);
  }

  setPortForwardTarget(namespace: string, pod: string, podPort: number, localPort: number): void {
    this.targets.set(namespace, pod, podPort, localPort);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.abort.abort();
      for (const waiter of this.requestWaiters) waiter(undefined);
      this.requestWaiters.clear();
      const gone = [...this.sockets].map((s) => new Promise<void>((resolve) => (s.destroyed && s.listenerCount('close') === 0 ? resolve() : s.once('close', () => resolve()))));
      for (const s of this.sockets) s.destroy();
      this.verifier?.close();
      await Promise.all([closed, ...gone]);
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private track(socket: Socket): void {
    if (this.abort.signal.aborted) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private record(req: IncomingMessage, upgrade: boolean): { record: RecordedRequest; url: URL } {
    const url = new URL(req.url ?? '/', 'https://fake-kube.invalid');
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      url: req.url ?? '/',
      rawHeaders: [...req.rawHeaders],
      headers: { ...req.headers },
      time: Date.now(),
      remoteAddress: req.socket.remoteAddress,
      upgrade,
      user: undefined,
    };
    this.requests.push(record);
    for (const waiter of [...this.requestWaiters]) if (waiter(record)) this.requestWaiters.delete(waiter);
    return { record, url };
  }

  private authenticate(req: IncomingMessage): FakeKubeUser | undefined {
    if (this.opts.authenticate !== undefined) return this.opts.authenticate(req);
    if (this.opts.bearerToken !== undefined) {
      const auth = req.headers.authorization;
      return auth === `Bearer ${this.opts.bearerToken}` ? { user: 'token-user', groups: ['system:authenticated'] } : undefined;
    }
    return anonymous;
  }

  /** Who sent the request, recorded on it; undefined (to be refused with 401) also when the hook throws. */
  private recordUser(req: IncomingMessage, record: RecordedRequest): FakeKubeUser | undefined {
    try {
      record.user = this.authenticate(req);
    } catch (err) {
      this.logger.warn({ err }, 'fake-kube: authenticate hook threw');
    }
    return record.user;
  }

  /** The `oidc` option: the bearer token's verified identity, recorded on the request; undefined when refused. */
  private async verifyBearer(req: IncomingMessage, record: RecordedRequest, verifier: TokenVerifier): Promise<FakeKubeUser | undefined> {
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer ([^\s]+)$/i.exec(auth);
    if (m === null) {
      record.authError = auth === '' ? 'NO_TOKEN' : 'NOT_BEARER';
      return undefined;
    }
    try {
      const verified = await verifier.verify(m[1]);
      const claim = verified.claims[this.opts.oidc?.usernameClaim ?? 'email'];
      if (typeof claim !== 'string' || claim === '') {
        record.authError = 'NO_USERNAME_CLAIM';
        return undefined;
      }
      const groups = verified.claims.groups;
      record.user = { user: claim, groups: [...(Array.isArray(groups) ? groups.filter((g): g is string => typeof g === 'string') : []), 'system:authenticated'] };
      return record.user;
    } catch (err) {
      record.authError = (err as { code?: string }).code ?? 'TOKEN_INVALID';
      return undefined;
    }
  }

  private podsContext(): PodsContext {
    return { store: this.store, signal: this.abort.signal, now: () => Date.now() };
  }

  private upgradeContext(): UpgradeContext {
    return {
      store: this.store,
      signal: this.abort.signal,
      logger: this.logger,
      execs: this.execs,
      portForwards: this.portForwards,
      targets: this.targets,
      files: this.files,
      track: (socket) => this.track(socket),
    };
  }

  /**
   * The `impersonation` option: the proxy's credentials, then the impersonated identity from the raw
   * headers (each Impersonate-Group header is one group; names in any casing).
   */
  private impersonated(req: IncomingMessage, record: RecordedRequest): Identified {
    const options = this.opts.impersonation!;
    const refuse = (code: 400 | 401 | 403, why: string, message: string): Identified => {
      record.authError = why;
      const reason = code === 400 ? 'BadRequest' : code === 401 ? 'Unauthorized' : 'Forbidden';
      return { status: failure(code, reason, message) };
    };
    const raw = req.rawHeaders;
    const values = (match: (name: string) => boolean): Array<[string, string]> => {
      const out: Array<[string, string]> = [];
      for (let i = 0; i + 1 < raw.length; i += 2) if (match(raw[i].toLowerCase())) out.push([raw[i].toLowerCase(), raw[i + 1]]);
      return out;
    };
    const auth = values((n) => n === 'authorization');
    if (options.proxyToken !== undefined && (auth.length !== 1 || auth[0][1] !== `Bearer ${options.proxyToken}`)) {
      return refuse(401, auth.length > 1 ? 'REPEATED_AUTHORIZATION' : 'NOT_THE_PROXY', 'Unauthorized');
    }
    if (options.proxyToken === undefined && auth.length > 0) return refuse(401, 'UNEXPECTED_AUTHORIZATION', 'Unauthorized');
    const remote = values((n) => n.startsWith('x-remote-'));
    if (remote.length > 0) return refuse(400, 'CLIENT_IDENTITY_HEADER', `the fake API server refuses client identity headers: ${remote.map(([n]) => n).join(', ')}`);
    const users = values((n) => n === 'impersonate-user');
    const certName = this.opts.requireClientCert === true ? (req.socket as TLSSocket).getPeerCertificate().subject?.CN : undefined;
    const impersonator = options.proxyUser ?? (typeof certName === 'string' ? certName : 'system:serviceaccount:causeway:causeway-kube-proxy');
    if (users.length === 0) return refuse(403, 'IMPERSONATION_REQUIRED', `the fake API server requires impersonation: ${impersonator} may only act as Impersonate-User`);
    if (users.length > 1) return refuse(403, 'REPEATED_IMPERSONATE_USER', 'the fake API server refuses a repeated Impersonate-User');
    const groups = values((n) => n === 'impersonate-group').map(([, v]) => v);
    if (!groups.includes('system:authenticated')) groups.push('system:authenticated');
    const extra: Record<string, string[]> = {};
    for (const [name, value] of values((n) => n.startsWith('impersonate-extra-'))) {
      let key: string;
      try {
        key = decodeURIComponent(name.slice('impersonate-extra-'.length)).toLowerCase();
      } catch {
        return refuse(400, 'BAD_EXTRA_KEY', `the fake API server cannot decode the header ${name}`);
      }
      (extra[key] ??= []).push(value);
    }
    return { user: { user: users[0][1], groups, extra, impersonator } };
  }

  /**
   * Who sent the request (recorded on it), then the `authorize` hook; a Status when refused.
   * Synchronous unless a token must be verified, so a request is served in the tick it is recorded
   * (a test that saw a watch recorded can change pods right away).
   */
  private identify(req: IncomingMessage, record: RecordedRequest, url: URL): Identified | Promise<Identified> {
    if (this.opts.authenticate === undefined && this.opts.impersonation !== undefined) {
      const outcome = this.impersonated(req, record);
      if ('status' in outcome) return outcome;
      record.user = outcome.user;
      return this.authorized(outcome.user, record, url);
    }
    if (this.verifier !== undefined) return this.verifyBearer(req, record, this.verifier).then((user) => this.authorized(user, record, url));
    return this.authorized(this.recordUser(req, record), record, url);
  }

  private authorized(user: FakeKubeUser | undefined, record: RecordedRequest, url: URL): Identified {
    if (user === undefined) return { status: failure(401, 'Unauthorized', 'Unauthorized') };
    const denied = this.opts.authorize?.(user, { method: record.method, path: url.pathname, query: url.searchParams, upgrade: record.upgrade });
    if (denied !== undefined) {
      record.authError = 'FORBIDDEN';
      return { status: failure(403, 'Forbidden', denied) };
    }
    return { user };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const { record, url } = this.record(req, false);
    const answer = (outcome: Identified): void => {
      if ('status' in outcome) sendStatus(res, outcome.status);
      else this.serve(req, res, url);
    };
    const outcome = this.identify(req, record, url);
    if (outcome instanceof Promise) void outcome.then(answer);
    else answer(outcome);
  }

  private serve(req: IncomingMessage, res: ServerResponse, url: URL): void {
    try {
      this.route(req, res, url);
    } catch (err) {
      this.logger.error({ err, path: url.pathname }, 'fake-kube: handler failed');
      if (!res.headersSent) sendStatus(res, failure(500, 'InternalError', 'the fake API server failed on this request'));
      else res.destroy();
    }
  }

  private route(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const q = url.searchParams;
    const ctx = this.podsContext();
    let m: RegExpExecArray | null;
    if (path === '/version') return serveVersion(res, this.version);
    const aggregated = this.opts.aggregatedDiscovery !== false;
    if (path === '/api') return serveApi(req, res, `${req.socket.localAddress ?? '127.0.0.1'}:${this.port}`, aggregated);
    if (path === '/apis') return serveApis(req, res, aggregated);
    if (path === '/api/v1') return serveCoreV1(res);
    if (path === '/api/v1/pods') return servePodCollection(ctx, req, res, q, undefined);
    if (path === '/api/v1/namespaces') return serveNamespaces(ctx, req, res, undefined);
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(path)) !== null) return serveNamespaces(ctx, req, res, decodeURIComponent(m[1]));
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(path)) !== null) return servePodCollection(ctx, req, res, q, decodeURIComponent(m[1]));
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(path)) !== null) return servePod(ctx, req, res, q, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/.exec(path)) !== null) {
      return serveLogs(this.logs, this.store, this.abort.signal, req, res, q, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    }
    if (path === '/api/v1/events' || /^\/api\/v1\/namespaces\/[^/]+\/events$/.test(path)) {
      // The fake records no events; an empty list keeps `kubectl describe` quiet.
      return sendJson(res, 200, { kind: 'EventList', apiVersion: 'v1', metadata: { resourceVersion: String(this.store.resourceVersion) }, items: [] });
    }
    if (/^\/api\/v1\/namespaces\/[^/]+\/pods\/[^/]+\/(exec|attach|portforward)$/.test(path)) {
      return sendStatus(res, failure(400, 'BadRequest', 'Upgrade request required'));
    }
    sendStatus(res, failure(404, 'NotFound', 'the server could not find the requested resource', {}));
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const { record, url } = this.record(req, true);
    socket.on('error', (err) => this.logger.debug({ err }, 'fake-kube: upgraded socket error'));
    const outcome = this.identify(req, record, url);
    if (!(outcome instanceof Promise)) {
      this.upgradeAs(outcome, req, socket, head, url);
      return;
    }
    // Hold the bytes that follow the upgrade until the token is checked.
    socket.pause();
    void outcome.then((o) => {
      this.upgradeAs(o, req, socket, head, url);
      // The handler has attached its listeners (an explicit pause outlasts adding them).
      socket.resume();
    });
  }

  private upgradeAs(outcome: Identified, req: IncomingMessage, socket: Duplex, head: Buffer, url: URL): void {
    if ('status' in outcome) {
      refuseUpgrade(socket, outcome.status);
      return;
    }
    const user = outcome.user;
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/(exec|attach|portforward)\/?$/.exec(url.pathname);
    if (m === null) {
      refuseUpgrade(socket, failure(400, 'BadRequest', `the fake API server does not upgrade ${url.pathname}`));
      return;
    }
    const ns = decodeURIComponent(m[1]);
    const name = decodeURIComponent(m[2]);
    if (this.store.get(ns, name) === undefined) {
      refuseUpgrade(socket, notFound('pods', name));
      return;
    }
    const target = { req, socket, head, query: url.searchParams, namespace: ns, pod: name, user };
    try {
      if (m[3] === 'portforward') handlePortForwardUpgrade(this.upgradeContext(), target);
      else handleExecUpgrade(this.upgradeContext(), target, m[3] === 'attach' ? 'attach' : 'exec');
    } catch (err) {
      this.logger.error({ err, path: url.pathname }, 'fake-kube: upgrade handler failed');
      socket.destroy();
    }
  }
}

/** Starts the fake API server; close() it when done. */
export async function startFakeKube(opts: FakeKubeOptions = {}): Promise<FakeKube> {
  let tls: { certPem: string; keyPem: string; caPem: string };
  if (opts.certPem !== undefined && opts.keyPem !== undefined) {
    tls = { certPem: opts.certPem, keyPem: opts.keyPem, caPem: opts.caPem ?? opts.certPem };
  } else {
    const ca = await makeTestCa({ commonName: 'fake-kube CA' });
    const host = opts.host ?? '127.0.0.1';
    const ipAddresses = ['127.0.0.1', '::1'];
    const dnsNames = ['localhost', 'kubernetes', 'kubernetes.default.svc', ...(opts.dnsNames ?? [])];
    if (isIP(host) !== 0 && !ipAddresses.includes(host)) ipAddresses.push(host);
    else if (isIP(host) === 0 && !dnsNames.includes(host)) dnsNames.push(host);
    const issued = await makeServerCert(ca, { dnsNames, ipAddresses, commonName: 'fake-kube' });
    tls = { certPem: issued.certPem, keyPem: issued.keyPem, caPem: ca.certPem };
  }
  const server = new FakeKubeServer(opts, tls);
  await server.listen();
  return server;
}
