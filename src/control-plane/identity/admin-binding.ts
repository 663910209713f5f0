/**
 * What a user may do in the admin API, from the `kind: AdminBinding` specs (DESIGN §5, CP-17).
 *
 * A binding matches a user when it lists their name or one of their groups. The strongest matching
 * grant wins: admin beats viewer, an unrestricted admin (no `kinds`) beats a restricted one, and the
 * kinds of several restricted admin bindings add up. No matching binding: scope `none` (the user
 * may call only `access: 'user'` routes, such as whoami).
 *
 * A grant covers another when it holds at least as much: role ≤ theirs and kinds ⊆ theirs. That is
 * the rule for writing AdminBindings: nobody grants anyone (themselves included) more than they hold.
 */
import { API_VERSION, specSchemas } from '../../lib/spec/index.ts';
import type { AdminBindingSpec } from '../../lib/spec/index.ts';
import type { StoredObject } from '../store/index.ts';

export type GrantScope = 'admin' | 'viewer' | 'none';

export interface Grant {
  scope: GrantScope;
  /** For a restricted admin: the spec kinds they may write (sorted). Undefined: everything. */
  kinds?: string[];
  /** The names of the bindings that gave it (sorted). */
  bindings: string[];
}

/** What a binding grants by itself. */
export interface BindingGrant {
  role: 'admin' | 'viewer';
  /** Empty: everything. */
  kinds: readonly string[];
}

export interface NamedBinding {
  name: string;
  spec: Pick<AdminBindingSpec['spec'], 'role' | 'users' | 'groups' | 'kinds'>;
}

/** A stored AdminBinding checked against its schema; undefined when it no longer passes (it grants nothing). */
export function parseStoredBinding(object: StoredObject): NamedBinding | undefined {
  if (object.kind !== 'AdminBinding') return undefined;
  const parsed = specSchemas.AdminBinding.safeParse({ apiVersion: API_VERSION, kind: 'AdminBinding', metadata: { ...object.metadata, name: object.name }, spec: object.spec });
  return parsed.success ? { name: parsed.data.metadata.name, spec: parsed.data.spec } : undefined;
}

export const NO_GRANT: Grant = { scope: 'none', bindings: [] };

/** The grant of a user with this name and these groups. */
export function resolveGrant(bindings: readonly NamedBinding[], user: { name: string; groups: readonly string[] }): Grant {
  const groups = new Set(user.groups);
  const matching = bindings.filter((b) => b.spec.users.includes(user.name) || b.spec.groups.some((g) => groups.has(g)));
  const admins = matching.filter((b) => b.spec.role === 'admin');
  if (admins.length > 0) {
    const unrestricted = admins.filter((b) => b.spec.kinds.length === 0);
    if (unrestricted.length > 0) return { scope: 'admin', bindings: names(unrestricted) };
    const kinds = [...new Set(admins.flatMap((b) => b.spec.kinds))].sort();
    return { scope: 'admin', kinds, bindings: names(admins) };
  }
  if (matching.length > 0) return { scope: 'viewer', bindings: names(matching) };
  return NO_GRANT;
}

function names(bindings: readonly NamedBinding[]): string[] {
  return bindings.map((b) => b.name).sort();
}

/**
 * Whether a holder with `scope`/`kinds` (undefined kinds: unrestricted) holds everything `wanted`
 * grants. A viewer binding is covered by any admin; an admin binding by an unrestricted admin, or by
 * a restricted one when it names only kinds the holder has.
 */
export function covers(holder: { scope: string; kinds?: readonly string[] | undefined }, wanted: BindingGrant): boolean {
  if (holder.scope !== 'admin') return false;
  if (holder.kinds === undefined) return true;
  if (wanted.role === 'viewer') return true;
  if (wanted.kinds.length === 0) return false;
  const held = new Set(holder.kinds);
  return wanted.kinds.every((k) => held.has(k));
}

/**
 * Kinds only an unrestricted admin writes, whatever a binding's `kinds` say: an IdentityProvider
 * decides which users exist and which groups they are in, and so which AdminBindings match them;
 * whoever configures one can make themselves anything (CP-17).
 */
export const UNRESTRICTED_ONLY_KINDS: ReadonlySet<string> = new Set(['IdentityProvider']);

/** Whether `holder` may write objects of `kind` (AdminBindings have their own rule: `covers`). */
export function mayWriteKind(holder: { scope: string; kinds?: readonly string[] | undefined }, kind: string): boolean {
  if (holder.scope !== 'admin') return false;
  if (holder.kinds === undefined) return true;
  if (UNRESTRICTED_ONLY_KINDS.has(kind)) return false;
  return holder.kinds.includes(kind);
}
