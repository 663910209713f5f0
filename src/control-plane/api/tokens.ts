/**
 * API tokens (for admins and scripts) and join tokens (for enrolling an access tier, connector or kube
 * proxy). A token's secret appears once, in the response that creates it; lists show records only
 * (CP-11). Join tokens are single-use and live at most 24 hours (DT-06).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import type { CertificateAuthority } from '../../lib/pki/index.ts';
import { principalOf } from '../auth.ts';
import { caPin } from '../ca-store.ts';
import type { ApiTokenScope, JoinTokenKind, Store } from '../store/index.ts';
import { badRequest } from './errors.ts';
import { apiTokenSchema, DURATION_PATTERN, errorResponses, ID_PATTERN, joinTokenSchema, NAME_PATTERN } from './schemas.ts';

export interface TokenRoutesDeps {
  store: Store;
  ca: CertificateAuthority;
  clock: Clock;
  /** Where parts reach this control plane; goes into the join command. */
  publicUrl: string;
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "15m", "1h", "2d" → milliseconds (the pattern was checked by the schema). */
export function durationMs(text: string): number {
  const match = /^([0-9]{1,6})([smhd])$/.exec(text);
  if (match === null) throw badRequest('BAD_DURATION', `"${text.slice(0, 32)}" is not a duration: use a number and a unit, such as 15m, 1h or 2d`);
  return Number(match[1]) * UNIT_MS[match[2]];
}

/** Quotes a word for a POSIX shell when it needs it. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The line an operator runs on the part's machine to join it. */
export function joinCommand(kind: JoinTokenKind, publicUrl: string, token: string, pin: string): string {
  return ['causeway', kind, '--control-plane', shellWord(publicUrl), '--join-token', shellWord(token), '--ca-pin', pin].join(' ');
}

const idParams = { type: 'object', properties: { id: { type: 'string', pattern: ID_PATTERN } }, required: ['id'], additionalProperties: false } as const;

export function tokenRoutes(app: FastifyInstance, deps: TokenRoutesDeps): void {
  const { store, ca, clock, publicUrl } = deps;
  const pin = caPin(ca.certPem);

  app.get('/tokens', {
    config: { access: 'read' },
    schema: { summary: 'List API tokens (records, never secrets)', tags: ['tokens'], response: { 200: { type: 'object', properties: { items: { type: 'array', items: apiTokenSchema } }, required: ['items'] }, ...errorResponses(401, 403) } },
  }, async () => ({ items: await store.listApiTokens() }));

  app.post('/tokens', {
    config: { access: 'write' },
    schema: {
      summary: 'Create an API token; its secret is in this response only',
      tags: ['tokens'],
      body: {
        type: 'object',
        properties: {
          name: { type: 'string', pattern: ID_PATTERN },
          scope: { type: 'string', enum: ['admin', 'viewer'] },
          ttl: { type: 'string', pattern: DURATION_PATTERN, description: 'lifetime such as 30d; none: no expiry' },
        },
        required: ['name', 'scope'],
        additionalProperties: false,
      },
      response: {
        201: { type: 'object', properties: { token: { type: 'string', description: 'the secret: shown once' }, record: apiTokenSchema }, required: ['token', 'record'] },
        ...errorResponses(400, 401, 403),
      },
    },
  }, async (request: FastifyRequest<{ Body: { name: string; scope: ApiTokenScope; ttl?: string } }>, reply) => {
    const { name, scope, ttl } = request.body;
    const expiresAt = ttl === undefined ? null : new Date(clock.now() + durationMs(ttl)).toISOString();
    const issued = await store.createApiToken({ name, scope, expiresAt }, { actor: principalOf(request).actor });
    request.log.info({ tokenId: issued.record.id, scope }, 'API token created');
    return reply.code(201).send({ token: issued.token, record: issued.record });
  });

  app.delete('/tokens/:id', {
    config: { access: 'write' },
    schema: { summary: 'Revoke an API token', tags: ['tokens'], params: idParams, response: { 200: apiTokenSchema, ...errorResponses(400, 401, 403, 404) } },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => store.revokeApiToken(request.params.id, { actor: principalOf(request).actor }));

  app.get('/join-tokens', {
    config: { access: 'read' },
    schema: { summary: 'List join tokens (records, never secrets)', tags: ['tokens'], response: { 200: { type: 'object', properties: { items: { type: 'array', items: joinTokenSchema } }, required: ['items'] }, ...errorResponses(401, 403) } },
  }, async () => ({ items: await store.listJoinTokens() }));

  app.post('/join-tokens', {
    config: { access: 'write' },
    schema: {
      summary: 'Create a single-use join token for an access tier, connector or kube proxy',
      description: 'The response holds the secret (once) and `command`, the exact line to run on the part\'s machine.',
      tags: ['tokens'],
      body: {
        type: 'object',
        properties: {
          kind: { type: 'string', enum: ['access-tier', 'connector', 'kube-proxy'] },
          name: { type: 'string', pattern: NAME_PATTERN },
          ttl: { type: 'string', pattern: DURATION_PATTERN, description: 'default 1h, at most 24h' },
        },
        required: ['kind', 'name'],
        additionalProperties: false,
      },
      response: {
        201: {
          type: 'object',
          properties: {
            token: { type: 'string' },
            id: { type: 'string' },
            kind: { type: 'string' },
            name: { type: 'string' },
            expiresAt: { type: 'string' },
            caPin: { type: 'string' },
            command: { type: 'string' },
          },
          required: ['token', 'id', 'kind', 'name', 'expiresAt', 'caPin', 'command'],
        },
        ...errorResponses(400, 401, 403),
      },
    },
  }, async (request: FastifyRequest<{ Body: { kind: JoinTokenKind; name: string; ttl?: string } }>, reply) => {
    const { kind, name, ttl } = request.body;
    const ttlMs = ttl === undefined ? undefined : durationMs(ttl);
    if (ttlMs !== undefined && ttlMs > UNIT_MS.d) throw badRequest('BAD_DURATION', 'a join token lives at most 24h (DT-06); create it when you are about to use it');
    const issued = await store.createJoinToken({ kind, name, ...(ttlMs === undefined ? {} : { ttlMs }) }, { actor: principalOf(request).actor });
    request.log.info({ tokenId: issued.record.id, kind, name }, 'join token created');
    return reply.code(201).send({
      token: issued.token,
      id: issued.record.id,
      kind,
      name,
      expiresAt: issued.record.expiresAt,
      caPin: pin,
      command: joinCommand(kind, publicUrl, issued.token, pin),
    });
  });
}
