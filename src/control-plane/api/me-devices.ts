/**
 * The user's own devices (issue 5, device trust), on /api/v1 with access `user`, for login sessions
 * only (an API token is 403 `SESSION_REQUIRED`: a device belongs to a person). Another user's device
 * is 404, exactly like one that does not exist (CP-03).
 *
 *   POST /me/devices                       { csrPem, platform, osVersion, serial?, hostname?, ownership? }
 *                                          → 201 { device, certificatePem, caPem, notAfter }
 *   GET  /me/devices                       → { items: [device] }
 *   GET  /me/devices/:id                   → device
 *   POST /me/devices/:id/posture/nonce     → { nonce, expiresAt, requirements: { files, processes } }
 *   POST /me/devices/:id/posture           the signed report envelope { payload, signature } → { trust }
 *   POST /me/devices/:id/trust-cert        { csrPem }, over TLS with THIS device's certificate
 *                                          → { certificatePem, notAfter, caPem, serial }
 *
 * Registration takes the device key from a PKCS#10 request whose self-signature must verify; the
 * subject, attributes and requested extensions are ignored, so a request asking for another
 * identity or CA:true gets a plain device certificate naming the new device id (CA-04). The key must
 * be ECDSA P-256 (posture reports are signed with it). The certificate is recorded so it can be
 * revoked by serial.
 *
 * Posture reports are verified with the device's registered key (src/lib/posture) and a nonce the
 * control plane handed out for that device, kept in the store (model `PostureNonce`, 5 min) and
 * consumed atomically (`oidcConsumeOnce`), so a report counts once across replicas (DT-01).
 *
 * A trust certificate needs proof of the device: the TLS client certificate of the request must be
 * this device's certificate (type device, its id, unrevoked, its key the registered one), never a
 * trust certificate or another device's (CA-03). It names exactly (user, device), lives
 * `trustCertLifetimeMs` (default 8 h, clamped to 5 min–24 h) and is recorded for revocation.
 *
 * Every refusal of a report, a nonce or a trust certificate writes an access event (accessTier
 * `control-plane`, decision deny, the reason code), and an issued trust certificate one with
 * decision allow. Responses carry records and certificates only, never a key or token (CP-11).
 */
import { createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import type { KeyObject, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { newEventId } from '../../lib/audit/index.ts';
import type { AccessEvent } from '../../lib/audit/index.ts';
import type { Clock } from '../../lib/clock.ts';
import { errorCode } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { identityUrisFor } from '../../lib/pki/identity.ts';
import { publicKeyFromCsr } from '../../lib/pki/keys.ts';
import { LIFETIME_RANGE_MS } from '../../lib/pki/index.ts';
import type { CertificateAuthority, CertIdentity } from '../../lib/pki/index.ts';
import { MAX_REPORT_BYTES, verifyPostureReport } from '../../lib/posture/index.ts';
import type { NonceStore, PostureRejection } from '../../lib/posture/index.ts';
import { DEVICE_OWNERSHIP, DEVICE_PLATFORMS } from '../../lib/spec/index.ts';
import { postureRequirements } from '../../lib/trust/index.ts';
import type { TrustProfileInput } from '../../lib/trust/index.ts';
import { FailureLimiter, principalOf } from '../auth.ts';
import type { Principal } from '../auth.ts';
import { authenticatePeer } from '../stream/peer.ts';
import type { DeviceRecord, Store } from '../store/index.ts';
import { ApiError, notFound, sendError } from './errors.ts';
import { errorResponses, ID_PATTERN } from './schemas.ts';

/** What the trust engine offers this module; both optional until it is wired. */
export interface DeviceTrustHooks {
  /** Scores the device now and writes `device.trust`; resolves with the verdict (or anything: the device is read again). */
  rescore(deviceId: string): Promise<unknown>;
  /** Asks the device managers about this serial now (fresh), so a report sees current MDM state. */
  lookupNow?(serial: string, options?: { fresh?: boolean }): Promise<unknown>;
}

export interface MeDeviceRoutesDeps {
  store: Store;
  ca: CertificateAuthority;
  clock: Clock;
  logger: Logger;
  /** The trust engine, when there is one (read at each request, so it may be wired later). */
  trust?: () => DeviceTrustHooks | undefined;
  /** Lifetime of trust certificates; default 8 h, clamped to 5 min–24 h. */
  trustCertLifetimeMs?: number;
  /** Devices per user; default 20. */
  maxDevicesPerUser?: number;
  /** How far a report's timestamp may be from the server's time; default 5 min. */
  postureMaxSkewMs?: number;
  /** How long a posture nonce may be used; default 5 min. */
  nonceTtlMs?: number;
}

export const POSTURE_NONCE_MODEL = 'PostureNonce';
export const DEFAULT_TRUST_CERT_LIFETIME_MS = 8 * 60 * 60_000;
export const DEFAULT_MAX_DEVICES_PER_USER = 20;
const DEFAULT_NONCE_TTL_MS = 5 * 60_000;
const MAX_CSR_CHARS = 32 * 1024;
const ACCESS_TIER = 'control-plane';

/** The configured lifetime within what trust certificates may have (5 min–24 h). */
export function clampTrustCertLifetime(ms: number | undefined): number {
  const { min, max } = LIFETIME_RANGE_MS.trust;
  if (ms === undefined || !Number.isFinite(ms)) return DEFAULT_TRUST_CERT_LIFETIME_MS;
  return Math.min(max, Math.max(min, Math.floor(ms)));
}

// --- views ---------------------------------------------------------------------------------------

export interface TrustView {
  level: string | null;
  reasons: string[];
  explanation: string | null;
  factors: unknown[];
  stale: boolean;
  scoredAt: string | null;
  staleAt: string | null;
  mdmPresent: boolean | null;
  mdmCompliant: boolean | null;
}

export interface DeviceView {
  id: string;
  platform: string;
  osVersion: string | null;
  serial: string | null;
  hostname: string | null;
  ownership: string;
  registeredAt: string;
  banned: boolean;
  lastSeen: string | null;
  postureAt: string | null;
  trust: TrustView | null;
}

const FACTOR_FIELDS = ['type', 'profile', 'met', 'effect', 'observed', 'required', 'reason', 'remedy'] as const;

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function bool(value: unknown): boolean | null {
  return typeof value === 'boolean' ? value : null;
}

/** What a person is shown of a verdict: level, reasons, explanation, factors with remedies. */
export function trustView(trust: Record<string, unknown> | null | undefined): TrustView | null {
  if (trust === null || trust === undefined || typeof trust !== 'object') return null;
  const factors = Array.isArray(trust.factors) ? trust.factors : [];
  return {
    level: str(trust.level),
    reasons: Array.isArray(trust.reasons) ? trust.reasons.filter((r): r is string => typeof r === 'string') : [],
    explanation: str(trust.explanation),
    factors: factors.filter((f): f is Record<string, unknown> => f !== null && typeof f === 'object').map((f) => {
      const out: Record<string, unknown> = {};
      for (const key of FACTOR_FIELDS) if (f[key] !== undefined) out[key] = f[key];
      return out;
    }),
    stale: trust.stale === true,
    scoredAt: str(trust.scoredAt),
    staleAt: str(trust.staleAt),
    mdmPresent: bool(trust.mdmPresent),
    mdmCompliant: bool(trust.mdmCompliant),
  };
}

export function deviceView(device: DeviceRecord): DeviceView {
  return {
    id: device.id,
    platform: device.platform,
    osVersion: device.osVersion,
    serial: device.serial,
    hostname: device.hostname,
    ownership: device.ownership,
    registeredAt: device.registeredAt,
    banned: device.banned,
    lastSeen: device.lastSeen,
    postureAt: device.postureAt,
    trust: trustView(device.trust),
  };
}

const nullableString = { type: ['string', 'null'] } as const;

export const trustViewSchema = {
  type: ['object', 'null'],
  description: 'The trust verdict: level (High, Medium, Low, AlwaysDeny), reasons, an explanation and the factors with what to do; null before the first scoring.',
  properties: {
    level: nullableString,
    reasons: { type: 'array', items: { type: 'string' } },
    explanation: nullableString,
    factors: { type: 'array', items: { type: 'object', additionalProperties: true } },
    stale: { type: 'boolean' },
    scoredAt: nullableString,
    staleAt: nullableString,
    mdmPresent: { type: ['boolean', 'null'] },
    mdmCompliant: { type: ['boolean', 'null'] },
  },
} as const;

export const meDeviceSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    platform: { type: 'string' },
    osVersion: nullableString,
    serial: nullableString,
    hostname: nullableString,
    ownership: { type: 'string' },
    registeredAt: { type: 'string' },
    banned: { type: 'boolean' },
    lastSeen: nullableString,
    postureAt: nullableString,
    trust: trustViewSchema,
  },
  required: ['id', 'platform', 'ownership', 'registeredAt', 'banned', 'trust'],
} as const;

// --- helpers -------------------------------------------------------------------------------------

function sessionOf(request: FastifyRequest): Principal {
  const principal = principalOf(request);
  if (principal.method !== 'session') {
    throw new ApiError(403, 'SESSION_REQUIRED', 'this route is for a logged-in user (causeway login), not an API token: devices belong to people');
  }
  return principal;
}

/** ip:port of the caller, as access events name sources. */
function sourceOf(request: FastifyRequest): string {
  const port = request.socket.remotePort;
  const ip = request.ip.includes(':') ? `[${request.ip}]` : request.ip;
  return port === undefined ? request.ip : `${ip}:${port}`;
}

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** The key of a PKCS#10 request after its self-signature verified; 400 otherwise. */
async function csrKey(csrPem: string): Promise<KeyObject> {
  try {
    return createPublicKey({ key: await publicKeyFromCsr(csrPem), format: 'der', type: 'spki' });
  } catch (err) {
    const code = errorCode(err) === 'CERT_WEAK_KEY' ? 'CERT_WEAK_KEY' : 'CSR_INVALID';
    throw new ApiError(400, code, err instanceof Error ? err.message.slice(0, 300) : 'the certificate request is not usable');
  }
}

function spkiPem(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

function sameKey(a: string, b: KeyObject): boolean {
  try {
    return createPublicKey(a).export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }));
  } catch {
    return false;
  }
}

const idParams = { type: 'object', properties: { id: { type: 'string', pattern: ID_PATTERN } }, required: ['id'], additionalProperties: false } as const;
const csrProperty = { type: 'string', minLength: 1, maxLength: MAX_CSR_CHARS, description: 'A PKCS#10 request (PEM); only its key and self-signature are used.' } as const;

const POSTURE_STATUS: Readonly<Record<PostureRejection, number>> = {
  'posture-too-large': 413,
  'posture-malformed': 400,
  'posture-device-key-invalid': 400,
  'posture-bad-signature': 400,
  'posture-wrong-device': 400,
  'posture-stale': 400,
  'posture-from-future': 400,
  'posture-bad-factors': 400,
  'posture-replayed': 409,
};

// --- routes --------------------------------------------------------------------------------------

export function meDeviceRoutes(app: FastifyInstance, deps: MeDeviceRoutesDeps): void {
  const { store, ca, clock } = deps;
  const logger = deps.logger.child({ component: 'me-devices' });
  const lifetimeMs = clampTrustCertLifetime(deps.trustCertLifetimeMs);
  const maxDevices = deps.maxDevicesPerUser ?? DEFAULT_MAX_DEVICES_PER_USER;
  const nonceTtlMs = deps.nonceTtlMs ?? DEFAULT_NONCE_TTL_MS;
  const hooks = (): DeviceTrustHooks | undefined => deps.trust?.();
  // Nonces are store rows: a device may ask for 30 in a row, then one every 10 s (each lives 5 min).
  const nonceBudget = new FailureLimiter({ burst: 30, refillPerSecond: 0.1, clock });

  const record = async (event: Omit<AccessEvent, 'id' | 'time' | 'type' | 'accessTier'>): Promise<void> => {
    const now = clock.now();
    try {
      await store.appendAccessEvents([{ id: newEventId(now), time: new Date(now).toISOString(), type: 'access', accessTier: ACCESS_TIER, ...event }]);
    } catch (err) {
      logger.error({ err, reasons: event.reasons, device: event.device }, 'an access event could not be stored');
    }
  };

  /** Sends a refusal and records it. */
  const refuse = async (reply: FastifyReply, request: FastifyRequest, o: { status: number; code: string; message: string; reasons: string[]; user: string; device: string; details?: Record<string, unknown> }): Promise<FastifyReply> => {
    await record({ decision: 'deny', reasons: o.reasons, user: o.user, device: o.device, source: sourceOf(request) });
    logger.info({ user: o.user, device: o.device, reasons: o.reasons, source: request.ip }, 'device request refused');
    return sendError(reply, o.status, o.code, o.message, o.details);
  };

  /** The caller's device, or 404 for a device that is missing or someone else's (CP-03). */
  const ownDevice = async (principal: Principal, id: string): Promise<DeviceRecord> => {
    const device = await store.getDevice(id);
    if (device === undefined || device.userId !== principal.id) throw notFound(`device ${id}`);
    return device;
  };

  /**
   * The device's verdict now: what the engine's rescoring answers when there is an engine (the stored
   * one may be older than the latest report, since the engine writes only changes), else the stored
   * one. A failed rescoring is logged, and the stored verdict stands (`fresh` false).
   */
  const verdictNow = async (id: string): Promise<{ trust: TrustView | null; fresh: boolean }> => {
    const engine = hooks();
    if (engine !== undefined) {
      try {
        const answered = await engine.rescore(id);
        if (answered !== null && typeof answered === 'object' && typeof (answered as { level?: unknown }).level === 'string') {
          return { trust: trustView(answered as Record<string, unknown>), fresh: true };
        }
      } catch (err) {
        logger.error({ err, device: id }, 'rescoring the device failed');
      }
    }
    return { trust: trustView((await current(id)).trust), fresh: false };
  };

  const current = async (id: string): Promise<DeviceRecord> => {
    const device = await store.getDevice(id);
    if (device === undefined) throw notFound(`device ${id}`);
    return device;
  };

  app.post('/me/devices', {
    config: { access: 'user' },
    schema: {
      summary: 'Register this device for the logged-in user: a device certificate for the key of the request',
      tags: ['me'],
      body: {
        type: 'object',
        properties: {
          csrPem: csrProperty,
          platform: { type: 'string', enum: [...DEVICE_PLATFORMS] },
          osVersion: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._+~-]+$' },
          serial: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:/+-]+$' },
          hostname: { type: 'string', minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9._-]+$' },
          ownership: { type: 'string', enum: [...DEVICE_OWNERSHIP] },
        },
        required: ['csrPem', 'platform', 'osVersion'],
        additionalProperties: false,
      },
      response: {
        201: {
          type: 'object',
          properties: { device: meDeviceSchema, certificatePem: { type: 'string' }, caPem: { type: 'string' }, notAfter: { type: 'string' } },
          required: ['device', 'certificatePem', 'caPem', 'notAfter'],
        },
        ...errorResponses(400, 401, 403, 409, 429),
      },
    },
  }, async (request: FastifyRequest<{ Body: { csrPem: string; platform: string; osVersion: string; serial?: string; hostname?: string; ownership?: string } }>, reply) => {
    const principal = sessionOf(request);
    const body = request.body;
    const key = await csrKey(body.csrPem);
    if (!isP256(key)) throw new ApiError(400, 'DEVICE_KEY_UNSUPPORTED', 'the device key must be ECDSA P-256 (posture reports are signed with it); create the request for a P-256 key');
    const existing = await store.listDevices({ userId: principal.id });
    if (existing.length >= maxDevices) {
      throw new ApiError(409, 'TOO_MANY_DEVICES', `you have ${existing.length} registered devices, the most allowed is ${maxDevices}; ask an admin to unregister old ones (causeway device unregister)`);
    }
    const publicKey = spkiPem(key);
    const id = randomUUID();
    const device = await store.registerDevice({
      id,
      userId: principal.id,
      platform: body.platform,
      osVersion: body.osVersion,
      serial: body.serial ?? null,
      hostname: body.hostname ?? null,
      ownership: body.ownership ?? 'other',
      publicKey,
    }, { actor: principal.actor });
    const identity: CertIdentity = { device: id };
    const issued = await ca.issue({ type: 'device', identity, publicKeyPem: publicKey });
    try {
      await store.recordCertificate({ serial: issued.serial, type: 'device', identity: identityUrisFor('device', identity).join(' '), notAfter: issued.notAfter.toISOString() });
    } catch (err) {
      logger.error({ err, device: id }, 'the device certificate could not be recorded');
      // Unrecorded, it could not be revoked by serial: no certificate, and no half-registered device.
      await store.unregisterDevice(id, { actor: principal.actor }).catch((e: unknown) => logger.error({ err: e, device: id }, 'could not remove a device whose certificate was not recorded'));
      throw new ApiError(503, 'CERT_RECORD_FAILED', 'the device certificate could not be recorded; register again');
    }
    logger.info({ user: principal.name, device: id, serial: issued.serial, platform: body.platform }, 'device registered');
    const { trust } = await verdictNow(id);
    return reply.code(201).send({ device: { ...deviceView((await store.getDevice(id)) ?? device), trust }, certificatePem: issued.certPem, caPem: ca.certPem, notAfter: issued.notAfter.toISOString() });
  });

  app.get('/me/devices', {
    config: { access: 'user' },
    schema: {
      summary: 'The logged-in user\'s devices with their trust',
      tags: ['me'],
      response: { 200: { type: 'object', properties: { items: { type: 'array', items: meDeviceSchema } }, required: ['items'] }, ...errorResponses(401, 403, 429) },
    },
  }, async (request: FastifyRequest) => {
    const principal = sessionOf(request);
    return { items: (await store.listDevices({ userId: principal.id })).map(deviceView) };
  });

  app.get('/me/devices/:id', {
    config: { access: 'user' },
    schema: { summary: 'One of the logged-in user\'s devices with its trust', tags: ['me'], params: idParams, response: { 200: meDeviceSchema, ...errorResponses(401, 403, 404, 429) } },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const principal = sessionOf(request);
    return deviceView(await ownDevice(principal, request.params.id));
  });

  app.post('/me/devices/:id/posture/nonce', {
    config: { access: 'user' },
    schema: {
      summary: 'A single-use nonce for the next posture report, and what the report must cover',
      tags: ['me'],
      params: idParams,
      response: {
        200: {
          type: 'object',
          properties: {
            nonce: { type: 'string' },
            expiresAt: { type: 'string' },
            requirements: {
              type: 'object',
              properties: { files: { type: 'array', items: { type: 'string' } }, processes: { type: 'array', items: { type: 'string' } } },
              required: ['files', 'processes'],
            },
          },
          required: ['nonce', 'expiresAt', 'requirements'],
        },
        ...errorResponses(401, 403, 404, 429),
      },
    },
  }, async (request: FastifyRequest<{ Params: { id: string } }>, reply) => {
    const principal = sessionOf(request);
    const device = await ownDevice(principal, request.params.id);
    if (device.banned) {
      return refuse(reply, request, { status: 403, code: 'DEVICE_BANNED', message: 'this device is banned; ask an admin', reasons: ['device-banned'], user: principal.id, device: device.id, details: { reason: 'device-banned' } });
    }
    const wait = nonceBudget.retryAfter(device.id);
    if (wait > 0) {
      void reply.header('retry-after', String(wait));
      return sendError(reply, 429, 'RATE_LIMITED', `too many nonces for this device; retry in ${wait} s`);
    }
    nonceBudget.fail(device.id);
    const nonce = randomBytes(32).toString('base64url');
    const expiresAt = new Date(clock.now() + nonceTtlMs).toISOString();
    await store.oidcUpsert(POSTURE_NONCE_MODEL, nonce, { deviceId: device.id }, expiresAt);
    const user = await store.getUser(principal.id);
    const profiles: TrustProfileInput[] = (await store.listObjects('TrustProfile')).map((o) => ({ metadata: { name: o.name }, spec: o.spec as TrustProfileInput['spec'] }));
    const requirements = postureRequirements(profiles, { platform: device.platform, ownership: device.ownership, groups: user?.groups ?? [] });
    return { nonce, expiresAt, requirements };
  });

  app.post('/me/devices/:id/posture', {
    config: { access: 'user' },
    bodyLimit: MAX_REPORT_BYTES,
    schema: {
      summary: 'A posture report signed with the device key, for a nonce from /posture/nonce; answers the new trust',
      tags: ['me'],
      params: idParams,
      // The envelope ({payload, signature}) is checked by verifyPostureReport, so that every way it
      // can be wrong is a refusal with its reason and an access event.
      body: { type: 'object' },
      response: { 200: { type: 'object', properties: { trust: trustViewSchema }, required: ['trust'] }, ...errorResponses(400, 401, 403, 404, 409, 413, 429) },
    },
  }, async (request: FastifyRequest<{ Params: { id: string }; Body: unknown }>, reply) => {
    const principal = sessionOf(request);
    const device = await ownDevice(principal, request.params.id);
    const base = { user: principal.id, device: device.id };
    if (device.banned) {
      return refuse(reply, request, { ...base, status: 403, code: 'DEVICE_BANNED', message: 'this device is banned; its reports are not accepted; ask an admin', reasons: ['device-banned'], details: { reason: 'device-banned' } });
    }
    const nonces: NonceStore = {
      async consume(nonce, deviceId) {
        // Bound to the device: a nonce handed to another device is refused and not used up.
        const found = await store.oidcFind(POSTURE_NONCE_MODEL, nonce);
        if (found === undefined || found.deviceId !== (deviceId ?? device.id)) return false;
        return store.oidcConsumeOnce(POSTURE_NONCE_MODEL, nonce);
      },
    };
    const now = clock.now();
    const verdict = await verifyPostureReport(JSON.stringify(request.body), {
      publicKeyPem: device.publicKey ?? '',
      expectedDeviceId: device.id,
      nonceStore: nonces,
      now,
      ...(deps.postureMaxSkewMs === undefined ? {} : { maxSkewMs: deps.postureMaxSkewMs }),
    });
    if (!verdict.ok) {
      return refuse(reply, request, { ...base, status: POSTURE_STATUS[verdict.reason], code: verdict.reason, message: verdict.message, reasons: [verdict.reason], details: { reason: verdict.reason } });
    }
    const at = new Date(now).toISOString();
    await store.recordPosture(device.id, { factors: { ...verdict.report.factors }, at });
    await store.touchDevice(device.id, at);
    const engine = hooks();
    if (device.serial !== null && engine?.lookupNow !== undefined) {
      try {
        await engine.lookupNow(device.serial, { fresh: true });
      } catch (err) {
        logger.warn({ err, device: device.id }, 'asking the device managers about this device failed; scoring with what they said before');
      }
    }
    const { trust } = await verdictNow(device.id);
    logger.debug({ device: device.id, user: principal.name, level: trust?.level ?? null }, 'posture report accepted');
    return { trust };
  });

  app.post('/me/devices/:id/trust-cert', {
    config: { access: 'user' },
    schema: {
      summary: 'A short-lived trust certificate for (user, device); the request must present this device\'s certificate over TLS',
      tags: ['me'],
      params: idParams,
      body: { type: 'object', properties: { csrPem: csrProperty }, required: ['csrPem'], additionalProperties: false },
      response: {
        200: {
          type: 'object',
          properties: { certificatePem: { type: 'string' }, notAfter: { type: 'string' }, caPem: { type: 'string' }, serial: { type: 'string' } },
          required: ['certificatePem', 'notAfter', 'caPem', 'serial'],
        },
        ...errorResponses(400, 401, 403, 404, 429),
      },
    },
  }, async (request: FastifyRequest<{ Params: { id: string }; Body: { csrPem: string } }>, reply) => {
    const principal = sessionOf(request);
    const device = await ownDevice(principal, request.params.id);
    const base = { user: principal.id, device: device.id };
    const refused = (status: number, code: string, reason: string, message: string): Promise<FastifyReply> =>
      refuse(reply, request, { ...base, status, code, message, reasons: ['trust-cert-refused', reason], details: { reason } });

    // Proof of the device: its own certificate on this TLS connection (CA-03).
    const peer = await authenticatePeer(request, ['device'], { store, ca, clock });
    if (!peer.ok) return refused(403, 'DEVICE_CERT_REQUIRED', peer.reason, `present this device's certificate (device.crt) as the TLS client certificate (${peer.reason})`);
    if (peer.identity.device !== device.id || !presentedKeyIs(request, device.publicKey)) {
      return refused(403, 'DEVICE_CERT_REQUIRED', 'device-cert-mismatch', 'the TLS client certificate is not this device\'s certificate');
    }
    const user = await store.getUser(principal.id);
    if (user === undefined || user.disabled) return refused(403, 'USER_DISABLED', 'user-disabled', 'this user is disabled');
    if (device.banned) return refused(403, 'DEVICE_BANNED', 'device-banned', 'this device is banned; ask an admin');

    const { trust, fresh } = await verdictNow(device.id);
    // A stored verdict's staleAt counts too, unless the engine just answered (it knows of later reports).
    const staleAt = fresh || trust?.staleAt === null || trust?.staleAt === undefined ? Number.NaN : Date.parse(trust.staleAt);
    if (trust !== null && (trust.stale || staleAt <= clock.now())) {
      return refused(403, 'TRUST_TOO_LOW', 'stale', 'no recent posture report from this device: send one (causeway device report) and ask again');
    }
    if (trust?.level === 'AlwaysDeny') {
      return refused(403, 'TRUST_TOO_LOW', 'always-deny', `this device's trust level is AlwaysDeny${trust.explanation === null ? '' : `: ${trust.explanation.slice(0, 500)}`}`);
    }
    if (trust === null && hooks() !== undefined) {
      return refused(403, 'TRUST_TOO_LOW', 'not-scored', 'this device has not been scored yet: send a posture report (causeway device report) and ask again');
    }

    const key = await csrKey(request.body.csrPem);
    const identity: CertIdentity = { user: principal.id, device: device.id };
    const issued = await ca.issue({ type: 'trust', identity, publicKeyPem: spkiPem(key), lifetimeMs });
    try {
      await store.recordCertificate({ serial: issued.serial, type: 'trust', identity: identityUrisFor('trust', identity).join(' '), notAfter: issued.notAfter.toISOString() });
    } catch {
      throw new ApiError(503, 'CERT_RECORD_FAILED', 'the trust certificate could not be recorded; ask again');
    }
    await record({ decision: 'allow', reasons: ['trust-cert-issued'], ...base, certSerial: issued.serial, source: sourceOf(request) });
    logger.info({ user: principal.name, device: device.id, serial: issued.serial, notAfter: issued.notAfter.toISOString(), level: trust?.level ?? null }, 'trust certificate issued');
    return { certificatePem: issued.certPem, notAfter: issued.notAfter.toISOString(), caPem: ca.certPem, serial: issued.serial };
  });
}

/** Whether the TLS client certificate's key is the device's registered key. */
function presentedKeyIs(request: FastifyRequest, publicKeyPem: string | null): boolean {
  if (publicKeyPem === null) return false;
  const socket = request.raw.socket as Partial<TLSSocket>;
  let cert: X509Certificate | undefined;
  try {
    cert = socket.getPeerX509Certificate?.();
  } catch {
    return false;
  }
  return cert !== undefined && sameKey(publicKeyPem, cert.publicKey);
}

// --- whoami --------------------------------------------------------------------------------------

export interface WhoamiDevice {
  id: string;
  platform: string;
  hostname: string | null;
  trust: { level: string | null; reasons: string[]; explanation: string | null; factors: unknown[] } | null;
}

/**
 * whoami's device: the one whose certificate is on this TLS connection, else the one `?device=`
 * names; only the caller's own devices, only for sessions; null otherwise.
 */
export function whoamiDeviceResolver(deps: Pick<MeDeviceRoutesDeps, 'store' | 'ca' | 'clock'>): (request: FastifyRequest, principal: Principal) => Promise<WhoamiDevice | null> {
  return async (request, principal) => {
    if (principal.method !== 'session') return null;
    let id: string | undefined;
    const peer = await authenticatePeer(request, ['device'], deps);
    if (peer.ok) id = peer.identity.device;
    if (id === undefined) {
      const query = request.query as Record<string, unknown> | undefined;
      const named = query?.device;
      if (typeof named === 'string' && new RegExp(ID_PATTERN).test(named)) id = named;
    }
    if (id === undefined) return null;
    const device = await deps.store.getDevice(id);
    if (device === undefined || device.userId !== principal.id) return null;
    const trust = trustView(device.trust);
    return {
      id: device.id,
      platform: device.platform,
      hostname: device.hostname,
      trust: trust === null ? null : { level: trust.level, reasons: trust.reasons, explanation: trust.explanation, factors: trust.factors },
    };
  };
}
