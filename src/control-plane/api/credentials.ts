/**
 * Built-in users' credentials, for administrators (unrestricted admins: `access: 'write'`):
 *
 *   PUT    /users/:name/password   {password}  sets the password (scrypt; 12 to 1024 characters); 204
 *   DELETE /users/:name/password               removes it (the user can no longer log in with one); 204
 *   POST   /users/:name/totp                   a new TOTP secret, sealed in the store; answers
 *                                              {secret, uri} once: the only time it is ever shown
 *   DELETE /users/:name/totp                   removes the second factor; 204
 *   POST   /users/:name/unlock                 lifts a lock after repeated failed logins; the user
 *
 * Users who log in through an org IdP (`source` other than `local`) have neither: the IdP checks them,
 * so a password or TOTP secret set here would never be asked for; those writes are refused (409).
 *
 * No response carries a password, a hash or a sealed secret (CP-11); the store records each write as
 * a versioned change with an audit event (`update`, `unlock`), without the secret values.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import { errorCode, errorMessage } from '../../lib/errors.ts';
import { principalOf } from '../auth.ts';
import { totpContext } from '../identity/directory.ts';
import { hashPassword } from '../identity/passwords.ts';
import type { SecretBox } from '../identity/secret-box.ts';
import { newTotpSecret, totpUri } from '../identity/totp.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { ApiError, notFound } from './errors.ts';
import { expectedVersionFromHeaders } from './objects.ts';
import { errorResponses, USER_NAME_PATTERN, userSchema } from './schemas.ts';

export interface CredentialRoutesDeps {
  store: Store;
  secretBox: Pick<SecretBox, 'seal'>;
  clock?: Clock;
  /** The issuer shown in authenticator apps. Default `Causeway`; give the installation's host to tell several apart. */
  totpIssuer?: string;
}

const nameParams = { type: 'object', properties: { name: { type: 'string', pattern: USER_NAME_PATTERN } }, required: ['name'], additionalProperties: false } as const;
const ifMatchHeader = { type: 'object', properties: { 'if-match': { type: 'string', maxLength: 64 } } } as const;
/** The policy counts characters (checkPasswordPolicy); this bounds the bytes before hashing. */
const passwordBody = { type: 'object', properties: { password: { type: 'string', minLength: 1, maxLength: 4096 } }, required: ['password'], additionalProperties: false } as const;
const totpResponse = {
  type: 'object',
  description: 'Shown once: add it to an authenticator app now (the URI is what a QR code carries).',
  properties: { secret: { type: 'string', description: 'base32, 160 bits' }, uri: { type: 'string', description: 'otpauth://totp/…' } },
  required: ['secret', 'uri'],
  additionalProperties: false,
} as const;

/** Refusals of the password policy, as 400s (UserError codes the API does not map on its own). */
async function hashOrRefuse(password: string): Promise<string> {
  try {
    return await hashPassword(password);
  } catch (err) {
    const code = errorCode(err);
    if (code === 'PASSWORD_TOO_SHORT' || code === 'PASSWORD_TOO_LONG') throw new ApiError(400, code, errorMessage(err));
    throw err;
  }
}

export function credentialRoutes(app: FastifyInstance, deps: CredentialRoutesDeps): void {
  const { store, secretBox } = deps;
  const issuer = deps.totpIssuer ?? 'Causeway';

  const localUser = async (name: string, what: string): Promise<UserRecord> => {
    const user = await store.getUserByName(name);
    if (user === undefined) throw notFound(`user ${name}`);
    if (user.source !== 'local') throw new ApiError(409, 'USER_NOT_LOCAL', `user ${name} logs in through ${user.source}, which checks their credentials; a ${what} set here would never be used`);
    return user;
  };

  const writeOptions = (request: FastifyRequest): { actor: string; expectedVersion?: number } => {
    const expectedVersion = expectedVersionFromHeaders(request);
    return { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) };
  };

  app.put('/users/:name/password', {
    config: { access: 'write' },
    bodyLimit: 16 * 1024,
    schema: {
      summary: 'Set a built-in user\'s password',
      description: '12 to 1024 characters. Stored as a scrypt hash; never shown again. 409 USER_NOT_LOCAL for users of an org IdP.',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      body: passwordBody,
      response: { 204: { type: 'null', description: 'Set' }, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: { password: string } }>, reply: FastifyReply) => {
    const user = await localUser(request.params.name, 'password');
    const options = writeOptions(request);
    const passwordHash = await hashOrRefuse(request.body.password);
    await store.updateUser(user.id, { passwordHash }, options);
    return reply.code(204).send();
  });

  app.delete('/users/:name/password', {
    config: { access: 'write' },
    schema: {
      summary: 'Remove a built-in user\'s password',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      response: { 204: { type: 'null', description: 'Removed' }, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
    const user = await store.getUserByName(request.params.name);
    if (user === undefined) throw notFound(`user ${request.params.name}`);
    if (user.hasPassword) await store.updateUser(user.id, { passwordHash: null }, writeOptions(request));
    return reply.code(204).send();
  });

  app.post('/users/:name/totp', {
    config: { access: 'write' },
    schema: {
      summary: 'Give a built-in user a new TOTP second factor',
      description: 'Replaces any earlier one. The secret and otpauth URI are in this response only; they cannot be read back. 409 USER_NOT_LOCAL for users of an org IdP.',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      response: { 200: totpResponse, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    const user = await localUser(request.params.name, 'TOTP secret');
    const options = writeOptions(request);
    const secret = newTotpSecret();
    await store.updateUser(user.id, { totpSecret: secretBox.seal(secret, totpContext(user.id)) }, options);
    return { secret, uri: totpUri({ secret, account: user.name, issuer }) };
  });

  app.delete('/users/:name/totp', {
    config: { access: 'write' },
    schema: {
      summary: 'Remove a built-in user\'s TOTP second factor',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      response: { 204: { type: 'null', description: 'Removed' }, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
    const user = await store.getUserByName(request.params.name);
    if (user === undefined) throw notFound(`user ${request.params.name}`);
    if (user.hasTotp) await store.updateUser(user.id, { totpSecret: null }, writeOptions(request));
    return reply.code(204).send();
  });

  app.post('/users/:name/unlock', {
    config: { access: 'write' },
    schema: {
      summary: 'Lift the lock after repeated failed logins',
      tags: ['users'],
      params: nameParams,
      headers: ifMatchHeader,
      response: { 200: userSchema, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    const user = await store.getUserByName(request.params.name);
    if (user === undefined) throw notFound(`user ${request.params.name}`);
    return store.unlockUser(user.id, writeOptions(request));
  });
}
