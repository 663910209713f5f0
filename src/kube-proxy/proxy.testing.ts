/**
 * Test support only (never imported by product code): a kube proxy wired to a test OIDC issuer, a
 * small recording HTTPS backend standing in for the API server (its handlers replaceable per test),
 * a StaticConfigSource for live state, and raw TLS clients for the attacks.
 */
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { StaticConfigSource, snapshotFromObjects } from '../lib/config/index.ts';
import type { ConfigSnapshot } from '../lib/config/index.ts';
import type { KubeEvent } from '../lib/audit/kube-event.ts';
import { idTokenClaims, startTestIssuer } from '../lib/oidc/test-issuer.testing.ts';
import type { TestIssuer } from '../lib/oidc/test-issuer.testing.ts';
import type { DeviceState, UserState } from '../lib/policy/index.ts';
import { parseSpecDocuments } from '../lib/spec/index.ts';
import type { KubeProxy, KubeProxyOptions } from './index.ts';
import { startKubeProxy } from './proxy.ts';
import { createServingCa, issueServingCert } from './serving-ca.ts';

export const AUDIENCE = 'kubernetes:prod';
export const BACKEND_TOKEN = 'proxy-sa-token-0123456789abcdef';

export interface RecordedBackendRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
  upgrade: boolean;
}

export interface RawBackend {
  readonly url: string;
  readonly caPem: string;
  readonly requests: RecordedBackendRequest[];
  /** Every byte received on every connection, in order, per connection. */
  readonly connections: Buffer[][];
  onRequest: (req: IncomingMessage, res: ServerResponse, body: string) => void;
  /** Default: refuse with 400. */
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  close(): Promise<void>;
}

let sharedCa: Awaited<ReturnType<typeof createServingCa>> | undefined;
async function testCa(): Promise<Awaited<ReturnType<typeof createServingCa>>> {
  sharedCa ??= await createServingCa({ clusterName: 'test' });
  return sharedCa;
}

export async function startRawBackend(): Promise<RawBackend> {
  const ca = await testCa();
  const cert = await issueServingCert(ca, { hosts: ['127.0.0.1', 'localhost'] });
  const requests: RecordedBackendRequest[] = [];
  const connections: Buffer[][] = [];
  const sockets = new Set<Duplex>();
  const backend: RawBackend = {
    url: '',
    caPem: ca.certPem,
    requests,
    connections,
    onRequest: (_req, res) => {
      const body = JSON.stringify({ kind: 'PodList', apiVersion: 'v1', items: [] });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    },
    onUpgrade: (_req, socket) => {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: [...req.rawHeaders], body, upgrade: false });
      backend.onRequest(req, res, body);
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: [...req.rawHeaders], body: '', upgrade: true });
    backend.onUpgrade(req, socket, head);
  });
  server.on('secureConnection', (socket: Duplex) => {
    const received: Buffer[] = [];
    connections.push(received);
    sockets.add(socket);
    socket.on('data', (c: Buffer) => received.push(Buffer.from(c)));
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (backend as { url: string }).url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return backend;
}

/** A config source whose snapshots a test edits: users, devices and spec YAML. */
export class TestState {
  readonly source = new StaticConfigSource();
  users: UserState[] = [];
  devices: DeviceState[] = [];
  yaml = '';
  #n = 0;

  publish(): ConfigSnapshot {
    const parsed = parseSpecDocuments(this.yaml);
    if (!parsed.ok) throw new Error(`bad test spec: ${JSON.stringify(parsed.problems)}`);
    const base = snapshotFromObjects(parsed.objects, { version: `v${++this.#n}` });
    const snapshot: ConfigSnapshot = { ...base, users: structuredClone(this.users), devices: structuredClone(this.devices) };
    this.source.update(snapshot);
    return snapshot;
  }
}

export interface Harness {
  issuer: TestIssuer;
  backend: RawBackend;
  proxy: KubeProxy;
  /** The proxy's serving CA. */
  caPem: string;
  events: KubeEvent[];
  state: TestState | undefined;
  /** A valid ID token for the proxy (sub user-1, email ada@example.com, groups [eng]) with overrides. */
  token(overrides?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

export async function startHarness(opts: { state?: boolean; backendToken?: string | null; options?: Partial<KubeProxyOptions> } = {}): Promise<Harness> {
  const issuer = await startTestIssuer();
  await issuer.addKey('ES256');
  const backend = await startRawBackend();
  const ca = await testCa();
  const serving = await issueServingCert(ca, { hosts: ['127.0.0.1'] });
  const events: KubeEvent[] = [];
  const state = opts.state === true ? new TestState() : undefined;
  const backendToken = opts.backendToken === null ? undefined : (opts.backendToken ?? BACKEND_TOKEN);
  const proxy = await startKubeProxy({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { certPem: serving.certPem, keyPem: serving.keyPem, caPem: ca.certPem },
    issuer: issuer.issuer,
    audience: AUDIENCE,
    allowInsecureIssuer: true,
    backend: { url: backend.url, caPem: backend.caPem, ...(backendToken !== undefined ? { token: () => backendToken } : {}) },
    clusterName: 'prod',
    events: { write: (e) => events.push(e) },
    ...(state !== undefined ? { state: state.source } : {}),
    ...opts.options,
  });
  return {
    issuer,
    backend,
    proxy,
    caPem: ca.certPem,
    events,
    state,
    token: (overrides = {}) => issuer.sign(idTokenClaims(issuer.issuer, AUDIENCE, Date.now(), overrides)),
    close: async () => {
      await proxy.close();
      await backend.close();
      await issuer.close();
    },
  };
}

export interface RawAnswer {
  /** Everything received until the server closed (or the wait ended). */
  text: string;
  /** Whether the server closed the connection. */
  closed: boolean;
}

/**
 * Writes `chunks` to a fresh TLS connection (each after the previous is flushed, `gapMs` apart) and
 * collects the answer until the server closes it or `waitMs` passes.
 */
export async function rawExchange(h: { proxy: KubeProxy; caPem: string }, chunks: Array<string | Buffer>, opts: { waitMs?: number; gapMs?: number } = {}): Promise<RawAnswer> {
  const socket = tlsConnect({ host: '127.0.0.1', port: h.proxy.port, ca: h.caPem, ALPNProtocols: ['http/1.1'] });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const received: Buffer[] = [];
  let closed = false;
  const done = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => received.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      resolve();
    });
  });
  for (const chunk of chunks) {
    if (socket.destroyed) break;
    await new Promise<void>((resolve) => socket.write(chunk, () => resolve()));
    if (opts.gapMs !== undefined) await new Promise((r) => setTimeout(r, opts.gapMs));
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, opts.waitMs ?? 3000)))]);
  clearTimeout(timer);
  socket.destroy();
  return { text: Buffer.concat(received).toString('utf8'), closed };
}

/** Header values of `name` from a recorded request, case-insensitively. */
export function recorded(req: RecordedBackendRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === name.toLowerCase()) out.push(req.rawHeaders[i + 1]);
  return out;
}

/** The status code of the first response in a raw answer. */
export function statusOf(text: string): number {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return m === null ? 0 : Number(m[1]);
}

/** Polls `check` until it is true or `ms` passes (a generous wait, never an assertion about time). */
export async function waitFor(check: () => boolean, ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}
