/**
 * Admin routes of device trust, under /api/v1:
 *
 *   PUT    /devices/:id/trust-override          { source, maxLevel, reason, expiresAt? }  cap a device's level (write)
 *   DELETE /devices/:id/trust-override/:source  lift one source's cap (write)
 *   POST   /devices/:id/rescore                 score the device now (write)
 *   GET    /device-managers/status              each DeviceManager's sync state (read)
 *   POST   /device-managers/:name/test          check a DeviceManager's credentials with one cheap read (write)
 *
 * Override writes are versioned and audited (If-Match works as elsewhere); the device is rescored at
 * once, so the answer shows the new verdict. Test messages never carry a secret (CP-11).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { principalOf } from '../auth.ts';
import { ApiError, badRequest } from '../api/errors.ts';
import { expectedVersionFromHeaders } from '../api/objects.ts';
import { errorResponses, ID_PATTERN, NAME_PATTERN } from '../api/schemas.ts';
import type { Clock } from '../../lib/clock.ts';
import type { DeviceRecord, Store, TrustOverrideLevel } from '../store/index.ts';
import type { DeviceTrust } from './engine.ts';
import type { DeviceManagers } from './mdm.ts';

export interface TrustRoutesDeps {
  store: Store;
  clock: Clock;
  /** The running device trust (read at each request); without it, rescoring and device-manager routes answer 503. */
  trust: () => { rescore(deviceId: string): Promise<DeviceTrust>; managers: DeviceManagers } | undefined;
}

/** The sources of overrides: who caps (security-team, siem, crowdstrike…). Same rule as the store's. */
export const OVERRIDE_SOURCE_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$';
const LEVELS: readonly TrustOverrideLevel[] = ['High', 'Medium', 'Low', 'AlwaysDeny'];

const nullableString = { type: ['string', 'null'] } as const;
const nullableBoolean = { type: ['boolean', 'null'] } as const;

export const trustVerdictSchema = {
  type: ['object', 'null'],
  description: 'The computed trust verdict of a device (null before it is first scored).',
  properties: {
    level: { type: 'string', enum: LEVELS },
    reasons: { type: 'array', items: { type: 'string' } },
    explanation: { type: 'string' },
    factors: { type: 'array', items: { type: 'object', additionalProperties: true } },
    profile: nullableString,
    profiles: { type: 'array', items: { type: 'string' } },
    mdmPresent: nullableBoolean,
    mdmCompliant: nullableBoolean,
    stale: { type: 'boolean' },
    scoredAt: { type: 'string' },
    staleAt: nullableString,
  },
  additionalProperties: true,
} as const;

export const trustOverrideSchema = {
  type: 'object',
  properties: {
    source: { type: 'string' },
    maxLevel: { type: 'string' },
    reason: { type: 'string' },
    setBy: { type: 'string' },
    setAt: { type: 'string' },
    expiresAt: nullableString,
  },
} as const;

const deviceTrustSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    version: { type: 'integer' },
    trust: trustVerdictSchema,
    trustOverrides: { type: 'array', items: trustOverrideSchema },
  },
  required: ['id', 'version', 'trust', 'trustOverrides'],
} as const;

const managerStatusSchema = {
  type: 'object',
  properties: {
    manager: { type: 'string' },
    source: { type: 'string' },
    valid: { type: 'boolean' },
    lastSyncAt: { type: 'string' },
    lastSuccessAt: { type: 'string' },
    lastError: { type: 'string' },
    failures: { type: 'integer' },
    nextSyncAt: { type: 'string' },
    devices: { type: 'integer' },
  },
  required: ['manager', 'valid'],
} as const;

const idParams = { type: 'object', properties: { id: { type: 'string', pattern: ID_PATTERN } }, required: ['id'], additionalProperties: false } as const;
const ifMatchHeader = { type: 'object', properties: { 'if-match': { type: 'string', maxLength: 64 } } } as const;

interface OverrideBody {
  source: string;
  maxLevel: TrustOverrideLevel;
  reason: string;
  expiresAt?: string;
}

function view(device: DeviceRecord): { id: string; version: number; trust: Record<string, unknown> | null; trustOverrides: unknown[] } {
  return { id: device.id, version: device.version, trust: device.trust, trustOverrides: device.trustOverrides };
}

export function trustRoutes(app: FastifyInstance, deps: TrustRoutesDeps): void {
  const { store, clock } = deps;

  const running = (): NonNullable<ReturnType<TrustRoutesDeps['trust']>> => {
    const trust = deps.trust();
    if (trust === undefined) throw new ApiError(503, 'TRUST_UNAVAILABLE', 'device trust is not running on this server');
    return trust;
  };

  /** Rescoring after an admin write; the write stands even when scoring fails (the engine retries on the change). */
  const rescored = async (request: FastifyRequest, device: DeviceRecord): Promise<DeviceRecord> => {
    const trust = deps.trust();
    if (trust === undefined) return device;
    try {
      await trust.rescore(device.id);
    } catch (err) {
      request.log.warn({ device: device.id, err }, 'rescoring after a trust override failed');
    }
    return (await store.getDevice(device.id)) ?? device;
  };

  app.put('/devices/:id/trust-override', {
    config: { access: 'write' },
    schema: {
      summary: 'Cap a device\'s trust level (one override per source; the strictest wins)',
      tags: ['devices'],
      params: idParams,
      headers: ifMatchHeader,
      body: {
        type: 'object',
        properties: {
          source: { type: 'string', pattern: OVERRIDE_SOURCE_PATTERN, description: 'who caps it, e.g. security-team' },
          maxLevel: { type: 'string', enum: LEVELS },
          reason: { type: 'string', minLength: 1, maxLength: 500 },
          expiresAt: { type: 'string', maxLength: 64, description: 'ISO 8601 time; absent: until cleared' },
        },
        required: ['source', 'maxLevel', 'reason'],
        additionalProperties: false,
      },
      response: { 200: deviceTrustSchema, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { id: string }; Body: OverrideBody }>) => {
    const { source, maxLevel, reason, expiresAt } = request.body;
    if (reason.trim() === '') throw badRequest('INVALID_ARGUMENT', 'reason must say why, for the user and for the audit log');
    if (expiresAt !== undefined) {
      const ms = Date.parse(expiresAt);
      if (!Number.isFinite(ms)) throw badRequest('INVALID_ARGUMENT', 'expiresAt must be an ISO 8601 time, such as 2026-12-01T00:00:00Z');
      if (ms <= clock.now()) throw badRequest('INVALID_ARGUMENT', 'expiresAt is in the past: give a later time, or leave it out for an override until cleared');
    }
    const expectedVersion = expectedVersionFromHeaders(request);
    const device = await store.setTrustOverride(request.params.id, { source, maxLevel, reason, ...(expiresAt === undefined ? {} : { expiresAt }) }, { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) });
    return view(await rescored(request, device));
  });

  app.delete('/devices/:id/trust-override/:source', {
    config: { access: 'write' },
    schema: {
      summary: 'Lift one source\'s cap on a device\'s trust level',
      tags: ['devices'],
      params: { type: 'object', properties: { id: { type: 'string', pattern: ID_PATTERN }, source: { type: 'string', pattern: OVERRIDE_SOURCE_PATTERN } }, required: ['id', 'source'], additionalProperties: false },
      headers: ifMatchHeader,
      response: { 200: deviceTrustSchema, ...errorResponses(400, 401, 403, 404, 409) },
    },
  }, async (request: FastifyRequest<{ Params: { id: string; source: string } }>) => {
    const before = await store.getDevice(request.params.id);
    if (before === undefined) throw new ApiError(404, 'NOT_FOUND', `device ${request.params.id} does not exist`);
    if (!before.trustOverrides.some((o) => o !== null && typeof o === 'object' && o.source === request.params.source)) {
      throw new ApiError(404, 'NOT_FOUND', `device ${request.params.id} has no trust override from ${request.params.source}`);
    }
    const expectedVersion = expectedVersionFromHeaders(request);
    const device = await store.clearTrustOverride(request.params.id, request.params.source, { actor: principalOf(request).actor, ...(expectedVersion === undefined ? {} : { expectedVersion }) });
    return view(await rescored(request, device));
  });

  app.post('/devices/:id/rescore', {
    config: { access: 'write' },
    schema: {
      summary: 'Score a device now',
      tags: ['devices'],
      params: idParams,
      response: { 200: deviceTrustSchema, ...errorResponses(401, 403, 404, 503) },
    },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const trust = running();
    await trust.rescore(request.params.id);
    const device = await store.getDevice(request.params.id);
    if (device === undefined) throw new ApiError(404, 'NOT_FOUND', `device ${request.params.id} does not exist`);
    return view(device);
  });

  app.get('/device-managers/status', {
    config: { access: 'read' },
    schema: {
      summary: 'Each DeviceManager\'s sync state',
      tags: ['device-managers'],
      response: { 200: { type: 'object', properties: { items: { type: 'array', items: managerStatusSchema } }, required: ['items'] }, ...errorResponses(401, 403, 503) },
    },
  }, async () => ({ items: await running().managers.status() }));

  app.post('/device-managers/:name/test', {
    config: { access: 'write' },
    schema: {
      summary: 'Check a DeviceManager\'s credentials and one cheap read (never shows a secret)',
      tags: ['device-managers'],
      params: { type: 'object', properties: { name: { type: 'string', pattern: NAME_PATTERN } }, required: ['name'], additionalProperties: false },
      response: { 200: { type: 'object', properties: { ok: { type: 'boolean' }, message: { type: 'string' } }, required: ['ok', 'message'] }, ...errorResponses(401, 403, 404, 503) },
    },
  }, async (request: FastifyRequest<{ Params: { name: string } }>) => running().managers.test(request.params.name));
}
