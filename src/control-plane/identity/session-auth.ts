/**
 * The admin API for people: `Authorization: Bearer <access token>` from Causeway's own OIDC provider
 * (what `causeway login` keeps), beside API tokens. The provider looks the token up
 * (`findAccessToken`, which wraps `provider.AccessToken.find`); this module turns it into a Principal:
 *
 * - only bearer values that are not API tokens (`cwat_…`) are claimed; a malformed, unknown or
 *   expired one, or one of another client, is `invalid` (401, counted by the failure limiter);
 * - the user is read on every request, so a disabled or deleted user is refused at once, and changed
 *   groups count at once;
 * - the scope comes from the AdminBinding specs (identity/admin-binding.ts). They are cached and
 *   dropped whenever the store's revision grows (store.watch; a write in this process announces before
 *   it returns), so a changed binding applies to the very next request.
 */
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { API_TOKEN_PREFIX, bearerValue, sessionPrincipal } from '../auth.ts';
import type { Authenticator, AuthOutcome } from '../auth.ts';
import type { Store } from '../store/index.ts';
import { parseStoredBinding, resolveGrant } from './admin-binding.ts';
import type { Grant, NamedBinding } from './admin-binding.ts';

/** What the provider knows of an access token. */
export interface AccessTokenInfo {
  /** The user's id. */
  accountId: string;
  clientId: string;
  /** Epoch seconds. */
  expiresAt: number;
  scope: string;
}

export type FindAccessToken = (token: string) => Promise<AccessTokenInfo | undefined>;

export interface SessionAuthenticatorOptions {
  store: Pick<Store, 'getUser' | 'listObjects' | 'watch'>;
  findAccessToken: FindAccessToken;
  clock?: Clock;
  /** Clients whose access tokens open the admin API. Default: the CLI, `causeway-cli`. */
  clientIds?: readonly string[];
}

export interface SessionAuthenticator extends Authenticator {
  /** The grant a user with these groups has now (for tests and whoami-like callers). */
  grantOf(user: { name: string; groups: readonly string[] }): Promise<Grant>;
  /** Stops watching the store. */
  close(): void;
}

/** Opaque access tokens of oidc-provider are 43 base64url characters; allow some room. */
const ACCESS_TOKEN_SHAPE = /^[A-Za-z0-9_-]{16,256}$/;

export function sessionAuthenticator(options: SessionAuthenticatorOptions): SessionAuthenticator {
  const { store, findAccessToken } = options;
  const clock = options.clock ?? systemClock;
  const clientIds = new Set(options.clientIds ?? ['causeway-cli']);

  let generation = 0;
  let stopWatching: (() => void) | undefined;
  let closed = false;
  let cache: { generation: number; bindings: Promise<NamedBinding[]> } | undefined;

  const loadBindings = async (): Promise<NamedBinding[]> => {
    const objects = await store.listObjects('AdminBinding');
    // A stored binding that no longer passes its schema grants nothing.
    return objects.flatMap((object) => parseStoredBinding(object) ?? []);
  };

  const bindings = (): Promise<NamedBinding[]> => {
    if (stopWatching === undefined && !closed) {
      stopWatching = store.watch(() => {
        generation++;
      });
    }
    if (cache === undefined || cache.generation !== generation || closed) {
      const entry = { generation, bindings: loadBindings() };
      cache = entry;
      entry.bindings.catch(() => {
        if (cache === entry) cache = undefined;
      });
    }
    return cache.bindings;
  };

  const grantOf = async (user: { name: string; groups: readonly string[] }): Promise<Grant> => resolveGrant(await bindings(), user);

  return {
    grantOf,
    async authenticate(request): Promise<AuthOutcome> {
      const bearer = bearerValue(request);
      if (bearer.kind === 'missing') return { kind: 'none' };
      if (bearer.kind === 'value' && bearer.value.startsWith(API_TOKEN_PREFIX)) return { kind: 'none' };
      if (bearer.kind !== 'value' || !ACCESS_TOKEN_SHAPE.test(bearer.value)) return { kind: 'invalid' };
      const token = await findAccessToken(bearer.value);
      if (token === undefined || !clientIds.has(token.clientId)) return { kind: 'invalid' };
      if (!Number.isFinite(token.expiresAt) || token.expiresAt * 1000 <= clock.now()) return { kind: 'invalid' };
      const user = await store.getUser(token.accountId);
      if (user === undefined || user.disabled) return { kind: 'invalid' };
      return { kind: 'ok', principal: sessionPrincipal(user, await grantOf(user), new Date(token.expiresAt * 1000).toISOString()) };
    },
    close() {
      closed = true;
      stopWatching?.();
      stopWatching = undefined;
      cache = undefined;
    },
  };
}
