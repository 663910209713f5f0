/**
 * Spec documents and principal state for the policy tests, built through the real schemas so
 * defaults apply exactly as in production.
 */
import { specSchemas } from '../spec/index.ts';
import type { PolicySpec, RoleSpec, ServiceSpec } from '../spec/index.ts';
import type { DeviceState, UserState } from './types.ts';

export type RoleInput = { users?: { groups?: string[]; emails?: string[] }; devices?: Record<string, unknown> };
export type RuleInput = { roles: string[]; trustLevel: 'Low' | 'Medium' | 'High'; schedule?: { start?: string | null; end?: string | null } };

export function role(name: string, spec: RoleInput = {}): RoleSpec {
  return specSchemas.Role.parse({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name }, spec });
}

export function policy(name: string, access: RuleInput[]): PolicySpec {
  return specSchemas.Policy.parse({ apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name }, spec: { access } });
}

/** A TCP service; `attached` is its `spec.policy`, or none. */
export function service(name: string, attached?: { name: string; mode?: 'enforcing' | 'permissive' }): ServiceSpec {
  return specSchemas.Service.parse({
    apiVersion: 'causeway/v1',
    kind: 'Service',
    metadata: { name },
    spec: {
      type: 'tcp',
      cluster: 'edge',
      accessTier: '*',
      domain: `${name}.corp.example.com`,
      backend: { target: `${name}.internal:5432` },
      ...(attached === undefined ? {} : { policy: attached }),
    },
  });
}

export function user(overrides: Partial<UserState> = {}): UserState {
  return { id: 'u-alice', email: 'alice@example.com', groups: ['eng'], disabled: false, ...overrides };
}

/** A trusted corporate laptop: every attribute a role can ask for is present. */
export function device(overrides: Partial<DeviceState> = {}): DeviceState {
  return {
    id: 'd-laptop',
    ownership: 'corporate-dedicated',
    platform: 'macos',
    serialNumber: 'C02XK1ABCD',
    known: true,
    mdmPresent: true,
    banned: false,
    trustLevel: 'High',
    trustReasons: [],
    ...overrides,
  };
}

/** State as it may arrive over the wire: any field of any type, or missing. */
export function malformed<T>(base: T, patch: Record<string, unknown>): T {
  const copy: Record<string, unknown> = { ...(base as Record<string, unknown>), ...patch };
  for (const [key, value] of Object.entries(patch)) if (value === undefined) delete copy[key];
  return copy as T;
}
