/**
 * Users and their devices. Users are addressed by name (what admins type), devices by id. Passwords
 * belong to the built-in login (the identity work); this API neither takes nor shows them.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { principalOf } from '../auth.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { notFound } from './errors.ts';
import { expectedVersionFromHeaders } from './objects.ts';
import { deviceSchema, errorResponses, ID_PATTERN, USER_NAME_PATTERN, userSchema } from './schemas.ts';

export interface UserRoutesDeps {
  store: Store;
}

const nameParams = { type: 'object', properties: { name: { type: 'string', pattern: USER_NAME_PATTERN } }, required: ['name'], additionalProperties: false } as const;
const idParams = { type: 'object', properties: { id: { type: 'string', pattern: ID_PATTERN } }, required: ['id'], additionalProperties: false } as const;
const groups = { type: 'array', items: { type: 'string', minLength: 1, maxLength: 256 }, maxItems: 256, uniqueItems: true } as const;
const email = { type: ['string', 'null'], format: 'email', maxLength: 320 } as const;
const ifMatchHeader = { type: 'object', properties: { 'if-match': { type: 'string', maxLength: 64 } } } as const;

interface UserBody {
  name: string;
  email?: string | null;
  groups?: string[];
  disabled?: boolean;
}

export function userRoutes(app: FastifyInstance, deps: UserRoutesDeps): void {
  const { store } = deps;

  const userByName = async (name: string): Promise<UserRecord> => {
    const user = await store.getUserByName(name);
    if (user === undefined) throw notFound(`user ${name}`);
    return user;
  };

  /** `lastSeen`: the latest of the user's last login and their devices' last contact (null: never). */
  const withLastSeen = async (users: UserRecord[], userId?: string): Promise<Array<UserRecord & { lastSeen: string | null }>> => {
    const latest = new Map<string, string>();
    const note = (id: string, at: string | null | undefined): void => {
      if (typeof at !== 'string') return;
      const seen = latest.get(id);
      if (seen === undefined || at > seen) latest.set(id, at);
    };
    for (const device of await store.listDevices(userId === undefined ? undefined : { userId })) note(device.userId, device.lastSeen);
    for (const user of users) note(user.id, user.lastLoginAt);
    return users.map((user) => ({ ...user, lastSeen: latest.get(user.id) ?? null }));
  };

  app.get('/users', {
    config: { access: 'read' },
    schema: { summary: 'List users', tags: ['users'], response: { 200: { type: 'object', properties: { items: { type: 'array', items: userSchema } }, required: ['items'] }, ...errorResponses(401, 403) } },
  }, async () => ({ items: await withLastSeen(await store.listUsers()) }));

  app.get('/users/:name', {
    config: { access: 'read' },
    schema: { summary: 'Get a user', tags: ['users'], params: nameParams, response: { 200: userSchema, ...errorResponses(401, 403, 404) } },
  }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    const user = await userByName(request.params.name);
    return (await withLastSeen([user], user.id))[0];
  });

  app.post('/users', {
    config: { access: 'write' },
    schema: {
      summary: 'Create a user',
      tags: ['users'],
      body: {
        type: 'object',
        properties: { name: { type: 'string', pattern: USER_NAME_PATTERN }, email, groups, disabled: { type: 'boolean' } },
        required: ['name'],
        additionalProperties: false,
      },
      response: { 201: userSchema, ...errorResponses(400, 401, 403, 409) },
    },
  }, async (request: FastifyRequest<{ Body: UserBody }>, reply) => {
    const { name, email: mail, groups: list, disabled } = request.body;
    const user = await store.createUser({ name, email: mail ?? null, groups: list ?? [], disabled: disabled ?? false }, { actor: principalOf(request).actor });
    return reply.code(201).send(user);
  });

  app.patch('/users/:name', {
    config: { access: 'write' },
    schema: {
      summary: 'Change a user (groups, email, disabled)',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      body: { type: 'object', properties: { email, groups, disabled: { type: 'boolean' } }, additionalProperties: false },
      response: { 200: userSchema, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: Omit<UserBody, 'name'> }>) => {
    const user = await userByName(request.params.name);
    const expectedVersion = expectedVersionFromHeaders(request);
    return store.updateUser(user.id, request.body, { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) });
  });

  app.delete('/users/:name', {
    config: { access: 'write' },
    schema: {
      summary: 'Delete a user and their devices',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      response: { 200: { type: 'object', properties: { deleted: userSchema }, required: ['deleted'] }, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    const user = await userByName(request.params.name);
    const expectedVersion = expectedVersionFromHeaders(request);
    return { deleted: await store.deleteUser(user.id, { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) }) };
  });

  // --- devices -----------------------------------------------------------------------------------

  app.get('/devices', {
    config: { access: 'read' },
    schema: {
      summary: 'List devices',
      tags: ['devices'],
      querystring: { type: 'object', properties: { user: { type: 'string', pattern: USER_NAME_PATTERN, description: 'only this user\'s (by name)' } }, additionalProperties: false },
      response: { 200: { type: 'object', properties: { items: { type: 'array', items: deviceSchema } }, required: ['items'] }, ...errorResponses(400, 401, 403, 404) },
    },
  }, async (request: FastifyRequest<{ Querystring: { user?: string } }>) => {
    if (request.query.user === undefined) return { items: await store.listDevices() };
    const user = await userByName(request.query.user);
    return { items: await store.listDevices({ userId: user.id }) };
  });

  app.get('/devices/:id', {
    config: { access: 'read' },
    schema: { summary: 'Get a device', tags: ['devices'], params: idParams, response: { 200: deviceSchema, ...errorResponses(401, 403, 404) } },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const device = await store.getDevice(request.params.id);
    if (device === undefined) throw notFound(`device ${request.params.id}`);
    return device;
  });

  for (const action of ['ban', 'unban'] as const) {
    app.post(`/devices/:id/${action}`, {
      config: { access: 'write' },
      schema: {
        summary: action === 'ban' ? 'Ban a device: its trust and live sessions end' : 'Lift a ban',
        tags: ['devices'],
        params: idParams,
        headers: ifMatchHeader,
        response: { 200: deviceSchema, ...errorResponses(400, 401, 403, 404, 409) },
      },
    }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
      const expectedVersion = expectedVersionFromHeaders(request);
      const options = { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) };
      return action === 'ban' ? store.banDevice(request.params.id, options) : store.unbanDevice(request.params.id, options);
    });
  }

  app.delete('/devices/:id', {
    config: { access: 'write' },
    schema: {
      summary: 'Unregister a device',
      tags: ['devices'],
      params: idParams,
      headers: ifMatchHeader,
      response: { 200: { type: 'object', properties: { deleted: deviceSchema }, required: ['deleted'] }, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const expectedVersion = expectedVersionFromHeaders(request);
    return { deleted: await store.unregisterDevice(request.params.id, { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) }) };
  });
}
