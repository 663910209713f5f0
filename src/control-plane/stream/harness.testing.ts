/**
 * A real control plane for the tests of the peer-facing plugins: createControlPlane over HTTPS on
 * 127.0.0.1 (port 0, kept across restarts), a store (SQLite in memory unless given), our CA, an
 * admin API token, and helpers to issue peer certificates and call the admin API.
 *
 * Register `after(() => cp.close())` (or t.after) right after starting one.
 */
import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import { requestControlPlane } from '../../lib/enroll/transport.ts';
import type { ControlPlaneResponse, PeerTlsMaterial } from '../../lib/enroll/transport.ts';
import type { Logger } from '../../lib/log.ts';
import { CertificateAuthority, issueKeyAndCert } from '../../lib/pki/index.ts';
import type { CertIdentity, CertType } from '../../lib/pki/index.ts';
import { identityUrisFor } from '../../lib/pki/identity.ts';
import { createControlPlane, issueServingCertificate } from '../server.ts';
import type { ControlPlane, ControlPlanePluginOptions, Listener } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';

export type TestPlugin = (app: FastifyInstance, options: ControlPlanePluginOptions) => Promise<void>;

export interface TestControlPlaneOptions {
  /** Default: a private in-memory SQLite store, closed with the control plane. */
  store?: Store;
  ca?: CertificateAuthority;
  plugins: TestPlugin[];
  clock?: Clock;
  logger?: Logger;
}

export interface IssuedPeer extends PeerTlsMaterial {
  certPem: string;
  keyPem: string;
  serial: string;
  notAfter: Date;
}

export interface TestControlPlane {
  readonly url: string;
  readonly ca: CertificateAuthority;
  readonly store: Store;
  readonly controlPlane: ControlPlane;
  readonly adminToken: string;
  /** A peer certificate from the CA, recorded in the store as enrollment would. */
  issue(type: CertType, identity: CertIdentity, lifetimeMs?: number): Promise<IssuedPeer>;
  /** A JSON call to the admin API with the admin token. */
  api(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<ControlPlaneResponse>;
  put(path: string, body: unknown): Promise<ControlPlaneResponse>;
  /** Stops the control plane (not the store). */
  stop(): Promise<void>;
  /** Starts it again on the same port over the same store. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startTestControlPlane(options: TestControlPlaneOptions): Promise<TestControlPlane> {
  const ownStore = options.store === undefined;
  const store = options.store ?? (await openStore({ url: ':memory:' }));
  const ca = options.ca ?? (await CertificateAuthority.create({ commonName: 'causeway test CA' }));
  const serving = await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1', listenHost: '127.0.0.1' });
  const { token: adminToken } = await store.createApiToken({ name: `admin-${Date.now()}`, scope: 'admin' }, { actor: 'test' });
  let port = 0;
  let controlPlane: ControlPlane | undefined;
  let listener: Listener | undefined;

  const start = async (): Promise<void> => {
    controlPlane = await createControlPlane({
      store,
      ca,
      publicUrl: `https://127.0.0.1:${port === 0 ? 8440 : port}`,
      plugins: options.plugins,
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
    listener = await controlPlane.listen({ host: '127.0.0.1', port, tls: serving });
    port = listener.port;
  };
  const stop = async (): Promise<void> => {
    const cp = controlPlane;
    controlPlane = undefined;
    await cp?.close();
  };
  await start();

  const call = (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<ControlPlaneResponse> =>
    requestControlPlane({ baseUrl: `https://127.0.0.1:${port}`, path, method, body, tls: { caPem: ca.certPem }, headers: { authorization: `Bearer ${adminToken}` } });

  return {
    get url() {
      return `https://127.0.0.1:${port}`;
    },
    ca,
    store,
    get controlPlane() {
      if (controlPlane === undefined) throw new Error('the test control plane is stopped');
      return controlPlane;
    },
    adminToken,
    async issue(type, identity, lifetimeMs) {
      const issued = await issueKeyAndCert(ca, { type, identity, ...(lifetimeMs === undefined ? {} : { lifetimeMs }) });
      await store.recordCertificate({ serial: issued.serial, type, identity: identityUrisFor(type, identity).join(' '), notAfter: issued.notAfter.toISOString() });
      return { certPem: issued.certPem, keyPem: issued.keyPem, caPem: ca.certPem, serial: issued.serial, notAfter: issued.notAfter };
    },
    api: (method, path, body) => call(method, path, body),
    put: (path, body) => call('PUT', path, body),
    stop,
    start,
    async close() {
      await stop();
      if (ownStore) await store.close();
    },
  };
}

/** The specs most tests start from: one access tier, one connector, one role, one policy, one TCP service. */
export function baseSpecs(): Array<Record<string, unknown>> {
  return [
    { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-1' }, spec: { cluster: 'c1', address: '127.0.0.1:8443' } },
    { apiVersion: 'causeway/v1', kind: 'Connector', metadata: { name: 'dc1' }, spec: { cluster: 'c1', allowedCidrs: ['10.0.0.0/8'] } },
    { apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'eng' }, spec: { users: { groups: ['eng'] } } },
    { apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { access: [{ roles: ['eng'], trustLevel: 'Low' }] } },
    {
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name: 'db', description: 'the database' },
      spec: { type: 'tcp', cluster: 'c1', accessTier: 'edge-1', domain: 'db.example.com', port: 5432, backend: { target: 'db.internal:5432' }, policy: { name: 'p' } },
    },
  ];
}

/** Writes specs through the admin API, one PUT each; throws with the answer on any failure. */
export async function applySpecs(cp: TestControlPlane, docs: Array<Record<string, unknown>>): Promise<void> {
  for (const doc of docs) {
    const kind = String(doc.kind).toLowerCase();
    const name = (doc.metadata as { name: string }).name;
    const r = await cp.put(`/api/v1/objects/${kind}/${name}`, doc);
    if (r.status !== 200 && r.status !== 201) throw new Error(`PUT ${kind}/${name}: ${r.status} ${JSON.stringify(r.body)}`);
  }
}
