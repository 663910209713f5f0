/**
 * `POST /api/v1/roles/preview` (access read): which users and devices a Role spec matches right now,
 * for the console's role form. Body `{ spec: <Role spec> }`; the spec is checked like `causeway apply`
 * would (422 SPEC_INVALID with field paths), then matched with the policy engine's own semantics
 * (lib/policy matchRole, on the same user and device state the access tiers get from the config
 * stream):
 *
 *   users    every user whose groups or email satisfy `spec.users` (device requirements aside)
 *   devices  every registered device whose owner satisfies `spec.users` and which satisfies
 *            `spec.devices` (ownership, platform, serial, known, MDM)
 *
 * Disabled users and banned devices can match a role (the decision denies them before roles matter),
 * so they are listed, marked. Each list is capped at 200, sorted by name; `total` counts them all.
 * Nothing is stored.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { deviceState, userState } from '../../lib/config/wire.ts';
import { compilePolicies, matchRole } from '../../lib/policy/index.ts';
import type { DeviceState } from '../../lib/policy/index.ts';
import { API_VERSION, parseSpecDocuments } from '../../lib/spec/index.ts';
import type { RoleSpec } from '../../lib/spec/index.ts';
import { ApiError } from '../api/errors.ts';
import { errorResponses } from '../api/schemas.ts';
import { wireDevice, wireUser } from '../stream/translate.ts';
import type { Store } from '../store/index.ts';

export const PREVIEW_CAP = 200;
const PREVIEW_ROLE = 'preview';

/** A device that every device requirement accepts: for matching users on their user requirements alone. */
const ANY_DEVICE: DeviceState = { id: 'any', known: true, mdmPresent: true, banned: false, trustLevel: 'High' };

const userItem = {
  type: 'object',
  properties: { id: { type: 'string' }, name: { type: 'string' }, email: { type: ['string', 'null'] }, groups: { type: 'array', items: { type: 'string' } }, disabled: { type: 'boolean' } },
  required: ['id', 'name', 'email', 'groups', 'disabled'],
} as const;
const deviceItem = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    user: { type: ['string', 'null'], description: 'The owner\'s name' },
    userId: { type: 'string' },
    hostname: { type: ['string', 'null'] },
    platform: { type: 'string' },
    ownership: { type: 'string' },
    serial: { type: ['string', 'null'] },
    trustLevel: { type: ['string', 'null'] },
    banned: { type: 'boolean' },
  },
  required: ['id', 'user', 'userId', 'platform', 'ownership', 'serial', 'trustLevel', 'banned'],
} as const;

export interface RolePreviewDeps {
  store: Pick<Store, 'listUsers' | 'listDevices'>;
}

export function rolePreviewRoutes(api: FastifyInstance, deps: RolePreviewDeps): void {
  api.post('/roles/preview', {
    config: { access: 'read' },
    schema: {
      summary: 'Which users and devices a Role spec matches now (nothing is stored)',
      tags: ['objects'],
      body: { type: 'object', properties: { spec: { type: 'object', description: 'A Role spec (DESIGN §4)' } }, required: ['spec'], additionalProperties: false },
      response: {
        200: {
          type: 'object',
          properties: {
            users: { type: 'array', items: userItem },
            devices: { type: 'array', items: deviceItem },
            total: { type: 'object', properties: { users: { type: 'integer' }, devices: { type: 'integer' } }, required: ['users', 'devices'] },
          },
          required: ['users', 'devices', 'total'],
        },
        ...errorResponses(400, 401, 403, 422),
      },
    },
  }, async (request: FastifyRequest<{ Body: { spec: Record<string, unknown> } }>) => {
    const parsed = parseSpecDocuments(JSON.stringify({ apiVersion: API_VERSION, kind: 'Role', metadata: { name: PREVIEW_ROLE }, spec: request.body.spec }));
    if (!parsed.ok) {
      const problems = parsed.problems.map((p) => ({ path: p.path, message: p.message }));
      throw new ApiError(422, 'SPEC_INVALID', `the role has ${problems.length === 1 ? '1 problem' : `${problems.length} problems`}`, { problems });
    }
    const role = parsed.objects[0] as RoleSpec;
    const compiled = compilePolicies({ roles: [role], policies: [], services: [] });
    const usersOnly = compilePolicies({ roles: [{ ...role, spec: { ...role.spec, devices: { ownership: [], platforms: [], knownDeviceOnly: false, mdmPresent: false, serialNumbers: [] } } }], policies: [], services: [] });

    const [users, devices] = await Promise.all([deps.store.listUsers(), deps.store.listDevices()]);
    const byId = new Map(users.map((u) => [u.id, u]));
    const matchedUsers = users
      .filter((u) => matchRole(usersOnly, PREVIEW_ROLE, userState(wireUser(u)), ANY_DEVICE))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const matchedDevices = devices.filter((d) => {
      const owner = byId.get(d.userId);
      return owner !== undefined && matchRole(compiled, PREVIEW_ROLE, userState(wireUser(owner)), deviceState(wireDevice(d)));
    });
    const deviceRows = matchedDevices.map((d) => {
      const wire = wireDevice(d);
      return { id: d.id, user: byId.get(d.userId)?.name ?? null, userId: d.userId, hostname: d.hostname, platform: d.platform, ownership: d.ownership, serial: d.serial, trustLevel: wire.trustLevel, banned: d.banned };
    }).sort((a, b) => `${a.user ?? ''}\0${a.hostname ?? ''}\0${a.id}`.localeCompare(`${b.user ?? ''}\0${b.hostname ?? ''}\0${b.id}`));
    return {
      users: matchedUsers.slice(0, PREVIEW_CAP).map((u) => ({ id: u.id, name: u.name, email: u.email, groups: [...u.groups], disabled: u.disabled })),
      devices: deviceRows.slice(0, PREVIEW_CAP),
      total: { users: matchedUsers.length, devices: deviceRows.length },
    };
  });
}
