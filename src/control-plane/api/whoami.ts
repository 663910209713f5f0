/**
 * `GET /api/v1/whoami`: who the caller is, with what scope, and until when their credential works.
 * Any authenticated caller may ask (access `user`), also a user without an AdminBinding. It shows
 * records only, never a token (CP-11). `device` is the session's device (issue 5): the one whose
 * certificate is on the TLS connection, or the one `?device=<id>` names, when it is the user's own.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { principalOf } from '../auth.ts';
import type { Principal } from '../auth.ts';
import type { Store } from '../store/index.ts';
import type { WhoamiDevice } from './me-devices.ts';
import { errorResponses, ID_PATTERN } from './schemas.ts';

export interface WhoamiRoutesDeps {
  store: Pick<Store, 'getUser'>;
  /** The session's device (me-devices.ts whoamiDeviceResolver); without it `device` is null. */
  deviceOf?: (request: FastifyRequest, principal: Principal) => Promise<WhoamiDevice | null>;
}

const nullableString = { type: ['string', 'null'] } as const;

export const whoamiSchema = {
  type: 'object',
  properties: {
    method: { type: 'string', description: 'api-token or session' },
    id: { type: 'string', description: 'the user\'s or API token\'s id' },
    name: { type: 'string', description: 'the user\'s or API token\'s name' },
    actor: { type: 'string', description: 'what the audit log records for this caller' },
    scope: { type: 'string', enum: ['admin', 'viewer', 'none'] },
    kinds: { type: ['array', 'null'], items: { type: 'string' }, description: 'for an admin restricted to some spec kinds: those; null: unrestricted' },
    bindings: { type: 'array', items: { type: 'string' }, description: 'the AdminBindings that gave a session its scope' },
    user: {
      type: ['object', 'null'],
      description: 'the logged-in user; null for an API token',
      properties: {
        id: { type: 'string' },
        name: { type: 'string' },
        email: nullableString,
        groups: { type: 'array', items: { type: 'string' } },
        source: { type: 'string', description: 'local, or idp:<name>' },
      },
      required: ['id', 'name', 'email', 'groups', 'source'],
    },
    token: {
      type: ['object', 'null'],
      description: 'the API token (its record, never its secret); null for a session',
      properties: { id: { type: 'string' }, name: { type: 'string' } },
      required: ['id', 'name'],
    },
    device: {
      type: ['object', 'null'],
      description: 'the session\'s device (its certificate on the TLS connection, or ?device=<id>) with its trust; null when none',
      properties: {
        id: { type: 'string' },
        platform: { type: 'string' },
        hostname: nullableString,
        trust: {
          type: ['object', 'null'],
          properties: {
            level: nullableString,
            reasons: { type: 'array', items: { type: 'string' } },
            explanation: nullableString,
            factors: { type: 'array', items: { type: 'object', additionalProperties: true } },
          },
        },
      },
      required: ['id', 'platform', 'hostname', 'trust'],
    },
    tokenExpiresAt: { ...nullableString, description: 'when the credential stops working; null: never' },
  },
  required: ['method', 'id', 'name', 'actor', 'scope', 'kinds', 'bindings', 'user', 'token', 'device', 'tokenExpiresAt'],
  additionalProperties: false,
} as const;

export function whoamiRoutes(app: FastifyInstance, deps: WhoamiRoutesDeps): void {
  app.get('/whoami', {
    config: { access: 'user' },
    schema: {
      summary: 'The caller: who they are, how they authenticated, their scope and when their credential expires',
      tags: ['meta'],
      querystring: { type: 'object', properties: { device: { type: 'string', pattern: ID_PATTERN, description: 'show this device of yours' } } },
      response: { 200: whoamiSchema, ...errorResponses(400, 401, 429) },
    },
  }, async (request: FastifyRequest) => {
    const principal = principalOf(request);
    const { method, id, name, actor, scope } = principal;
    const session = method === 'session';
    const record = session ? await deps.store.getUser(id) : undefined;
    const user = record === undefined ? null : { id: record.id, name: record.name, email: record.email, groups: record.groups, source: record.source };
    return {
      method,
      id,
      name,
      actor,
      scope,
      kinds: principal.kinds ?? null,
      bindings: principal.bindings ?? [],
      user,
      token: session ? null : { id, name },
      device: session && deps.deviceOf !== undefined ? await deps.deviceOf(request, principal) : null,
      tokenExpiresAt: principal.expiresAt ?? null,
    };
  });
}
