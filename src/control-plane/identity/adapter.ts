/**
 * oidc-provider's storage (its "adapter") over the store's oidc_records (Store.oidc*), shared by every
 * replica on one database.
 *
 * Records are kept under the SHA-256 of their id, never under the id itself: for the token models the id
 * *is* the token (an opaque access token, refresh token, authorization code or device code is its `jti`),
 * and the session cookie holds the Session's id. The `jti` is also left out of the stored payload and put
 * back by `find`, which is handed the id anyway. Records that are also found by an index (DeviceCode by
 * its user code, Session by its uid) need their `jti` back from the payload: it is kept sealed by the
 * SecretBox (`sealedJti`). So a copy of the database holds no usable token.
 * (`userCode`, the short code a person types on the device page, and `uid` stay readable: the store
 * indexes them for findByUserCode/findByUid, they are short-lived, and neither is a bearer credential.)
 *
 * The `Client` model is not stored: besides the static clients in the configuration, a client id
 * `kubernetes:<clusterName>` names the Service of `type: kubernetes` with that cluster name, resolved
 * from the store on every lookup. These are public clients that can do nothing at the token endpoint
 * (no grant types, no redirect URIs); they exist as the audiences of token exchange.
 */
import { createHash } from 'node:crypto';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import type { Store } from '../store/index.ts';
import type { SecretBox } from './secret-box.ts';

export type OidcStore = Pick<Store, 'oidcUpsert' | 'oidcFind' | 'oidcFindByUserCode' | 'oidcFindByUid' | 'oidcConsume' | 'oidcDestroy' | 'oidcRevokeByGrantId' | 'oidcPrune' | 'listObjects'>;

export const KUBERNETES_CLIENT_PREFIX = 'kubernetes:';
const MAX_ID_LENGTH = 512;

/** The SHA-256 (base64url) a record is stored under. */
export function storageId(id: string): string {
  return createHash('sha256').update(id, 'utf8').digest('base64url');
}

/** The cluster names of every Service with `type: kubernetes`. */
export async function kubernetesClusterNames(store: Pick<Store, 'listObjects'>): Promise<Set<string>> {
  const names = new Set<string>();
  for (const object of await store.listObjects('Service')) {
    const spec = object.spec as { type?: unknown; kubernetes?: { clusterName?: unknown } } | null;
    if (spec?.type === 'kubernetes' && typeof spec.kubernetes?.clusterName === 'string' && spec.kubernetes.clusterName !== '') names.add(spec.kubernetes.clusterName);
  }
  return names;
}

/** Whether `clientId` is `kubernetes:<clusterName>` of a Kubernetes service in the store now. */
export async function isKubernetesAudience(store: Pick<Store, 'listObjects'>, clientId: string): Promise<boolean> {
  if (!clientId.startsWith(KUBERNETES_CLIENT_PREFIX)) return false;
  return (await kubernetesClusterNames(store)).has(clientId.slice(KUBERNETES_CLIENT_PREFIX.length));
}

export interface AdapterOptions {
  store: OidcStore;
  secretBox: SecretBox;
  clock?: Clock;
}

/** The models found by an index rather than by id: their jti is kept, sealed. */
const INDEXED_MODELS = new Set(['DeviceCode', 'Session', 'BackchannelAuthenticationRequest']);

/** The adapter factory for `configuration.adapter`. */
export function createAdapterFactory(options: AdapterOptions): (model: string) => Adapter {
  const { store, secretBox } = options;
  const clock = options.clock ?? systemClock;
  return (model) => (model === 'Client' ? kubernetesClientAdapter(store) : recordAdapter(model, store, secretBox, clock));
}

function recordAdapter(model: string, store: OidcStore, secretBox: SecretBox, clock: Clock): Adapter {
  const context = `oidc-jti:${model}`;
  const restore = (id: string, payload: Record<string, unknown> | undefined): AdapterPayload | undefined => {
    if (payload === undefined) return undefined;
    const { sealedJti: _sealed, ...rest } = payload;
    return { ...rest, jti: id };
  };
  /** A record found by an index: its jti comes from the sealed copy, and must hash to where it is stored. */
  const restoreIndexed = (payload: Record<string, unknown> | undefined): AdapterPayload | undefined => {
    if (payload === undefined || typeof payload.sealedJti !== 'string') return undefined;
    let jti: string;
    try {
      jti = secretBox.open(payload.sealedJti, context);
    } catch {
      return undefined;
    }
    return restore(jti, payload);
  };
  return {
    async upsert(id, payload, expiresIn) {
      const { jti: _jti, ...rest } = payload as AdapterPayload & { jti?: unknown };
      const stored: Record<string, unknown> = { ...rest };
      if (INDEXED_MODELS.has(model)) stored.sealedJti = secretBox.seal(id, context);
      const expiresAt = typeof expiresIn === 'number' && expiresIn > 0 ? new Date(clock.now() + expiresIn * 1000).toISOString() : null;
      await store.oidcUpsert(model, storageId(id), stored, expiresAt);
    },
    async find(id) {
      if (typeof id !== 'string' || id === '' || id.length > MAX_ID_LENGTH) return undefined;
      return restore(id, await store.oidcFind(model, storageId(id)));
    },
    async findByUserCode(userCode) {
      if (typeof userCode !== 'string' || userCode === '' || userCode.length > MAX_ID_LENGTH) return undefined;
      return restoreIndexed(await store.oidcFindByUserCode(model, userCode));
    },
    async findByUid(uid) {
      if (typeof uid !== 'string' || uid === '' || uid.length > MAX_ID_LENGTH) return undefined;
      return restoreIndexed(await store.oidcFindByUid(model, uid));
    },
    async consume(id) {
      await store.oidcConsume(model, storageId(id));
    },
    async destroy(id) {
      await store.oidcDestroy(model, storageId(id));
    },
    async revokeByGrantId(grantId) {
      await store.oidcRevokeByGrantId(grantId);
    },
  };
}

function kubernetesClientAdapter(store: OidcStore): Adapter {
  const refuse = (): Promise<undefined> => Promise.resolve(undefined);
  return {
    async find(id) {
      if (typeof id !== 'string' || id.length > MAX_ID_LENGTH || !(await isKubernetesAudience(store, id))) return undefined;
      return {
        client_id: id,
        client_name: `Kubernetes cluster ${id.slice(KUBERNETES_CLIENT_PREFIX.length)}`,
        token_endpoint_auth_method: 'none',
        application_type: 'web',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      };
    },
    upsert: refuse,
    findByUserCode: refuse,
    findByUid: refuse,
    consume: refuse,
    destroy: refuse,
    revokeByGrantId: refuse,
  };
}

/** Deletes expired records every `everyMs` (default 10 min); returns the function that stops it. */
export function startPruning(options: { store: Pick<Store, 'oidcPrune'>; clock?: Clock; logger: Logger; everyMs?: number }): () => void {
  const clock = options.clock ?? systemClock;
  const timer = setInterval(() => {
    options.store.oidcPrune(new Date(clock.now()).toISOString()).then(
      (count) => {
        if (count > 0) options.logger.debug({ count }, 'pruned expired OIDC records');
      },
      (err: unknown) => options.logger.warn({ err }, 'pruning expired OIDC records failed; will retry'),
    );
  }, options.everyMs ?? 600_000);
  timer.unref();
  return () => clearInterval(timer);
}
