/**
 * JSON schemas of the API's requests and responses: Fastify validates requests with them and
 * serialises responses through them (so a field not listed here, a hash say, can never reach a
 * response), and @fastify/swagger turns them into the OpenAPI document.
 */

export const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
/** User names: what fits in an identity URI (lib/pki IDENTITY_ID_RE). */
export const USER_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$';
/** A token or device id. */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$';
/** "90s", "15m", "1h", "2d". */
export const DURATION_PATTERN = '^[0-9]{1,6}[smhd]$';

const nullableString = { type: ['string', 'null'] } as const;
const freeObject = { type: 'object', additionalProperties: true } as const;

export const problemSchema = {
  type: 'object',
  properties: {
    document: { type: 'integer' },
    kind: { type: 'string' },
    name: { type: 'string' },
    path: { type: 'string' },
    message: { type: 'string' },
  },
  required: ['path', 'message'],
} as const;

export const errorSchema = {
  $id: 'causeway-error',
  type: 'object',
  description: 'Every error: a stable code, a message for people, and sometimes details (problems, referrers).',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        details: freeObject,
      },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
} as const;

export const errorRef = { $ref: 'causeway-error#' } as const;

/** The error responses a route can give, for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, typeof errorRef> {
  return Object.fromEntries(statuses.map((s) => [s, errorRef]));
}

export const documentSchema = {
  type: 'object',
  description: 'A spec document (DESIGN §4); metadata also carries version, createdAt, createdBy, updatedAt, updatedBy.',
  properties: {
    apiVersion: { type: 'string' },
    kind: { type: 'string' },
    metadata: freeObject,
    spec: freeObject,
  },
  required: ['apiVersion', 'kind', 'metadata', 'spec'],
} as const;

/** What a request may send as a document: checked in full by the spec schemas, not here. */
export const documentInputSchema = { type: 'object', description: 'A spec document (DESIGN §4)' } as const;

export const userSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    email: nullableString,
    groups: { type: 'array', items: { type: 'string' } },
    disabled: { type: 'boolean' },
    hasPassword: { type: 'boolean' },
    source: { type: 'string', description: 'local (the built-in directory) or idp:<IdentityProvider name>' },
    hasTotp: { type: 'boolean' },
    lockedUntil: { ...nullableString, description: 'Until when logins are refused after repeated failures; null when not locked.' },
    lastLoginAt: nullableString,
    lastSeen: { ...nullableString, description: 'The latest of the last login and the last contact of any of their devices; null: never. In GET answers only.' },
    version: { type: 'integer' },
    createdAt: { type: 'string' },
    createdBy: { type: 'string' },
    updatedAt: { type: 'string' },
    updatedBy: { type: 'string' },
  },
  required: ['id', 'name', 'email', 'groups', 'disabled', 'version'],
} as const;

export const deviceSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    userId: { type: 'string' },
    platform: { type: 'string' },
    osVersion: nullableString,
    serial: nullableString,
    hostname: nullableString,
    ownership: { type: 'string' },
    publicKey: { ...nullableString, description: 'The device public key (PEM); public.' },
    registeredAt: { type: 'string' },
    registeredBy: { type: 'string' },
    banned: { type: 'boolean' },
    lastSeen: nullableString,
    trust: { type: ['object', 'null'], additionalProperties: true, description: 'The computed verdict: level, reasons, explanation, factors (with remedies), profiles, mdmPresent, mdmCompliant, stale, scoredAt, staleAt.' },
    postureAt: { ...nullableString, description: 'Server time of the last verified posture report; null: never.' },
    posture: { type: ['object', 'null'], additionalProperties: true, description: 'The factor values of that report (not secret).' },
    mdm: { type: 'object', additionalProperties: true, description: 'What each device manager last said: { [manager]: { managed, compliant, score?, at, source } }.' },
    trustOverrides: { type: 'array', items: { type: 'object', additionalProperties: true }, description: 'Caps on the trust level: { source, maxLevel, reason, setBy, setAt, expiresAt? }; the strictest wins.' },
    version: { type: 'integer' },
    updatedAt: { type: 'string' },
    updatedBy: { type: 'string' },
  },
  required: ['id', 'userId', 'platform', 'banned', 'version'],
} as const;

export const apiTokenSchema = {
  type: 'object',
  description: 'An API token record: never the secret, never its hash.',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    scope: { type: 'string', enum: ['admin', 'viewer'] },
    createdAt: { type: 'string' },
    createdBy: { type: 'string' },
    expiresAt: nullableString,
    revokedAt: nullableString,
    lastUsedAt: nullableString,
  },
  required: ['id', 'name', 'scope', 'createdAt', 'expiresAt', 'revokedAt'],
} as const;

export const joinTokenSchema = {
  type: 'object',
  description: 'A join token record: never the secret, never its hash.',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string', enum: ['access-tier', 'connector', 'kube-proxy'] },
    name: { type: 'string' },
    createdAt: { type: 'string' },
    createdBy: { type: 'string' },
    expiresAt: { type: 'string' },
    usedAt: nullableString,
  },
  required: ['id', 'kind', 'name', 'expiresAt', 'usedAt'],
} as const;

export const auditEventSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    at: { type: 'string' },
    actor: { type: 'string' },
    action: { type: 'string' },
    kind: { type: 'string' },
    name: { type: 'string' },
    before: {},
    after: {},
  },
  required: ['id', 'at', 'actor', 'action', 'kind', 'name'],
} as const;

export const accessEventSchema = {
  type: 'object',
  description: 'An access decision (see lib/audit AccessEvent).',
  additionalProperties: true,
  properties: {
    id: { type: 'string' },
    time: { type: 'string' },
    decision: { type: 'string' },
  },
} as const;

export const kubeEventSchema = {
  type: 'object',
  description: 'A kube proxy request or exec/attach/port-forward session (see lib/audit KubeEvent).',
  additionalProperties: true,
  properties: {
    id: { type: 'string' },
    time: { type: 'string' },
    type: { type: 'string', enum: ['kube-request', 'kube-session'] },
    decision: { type: 'string' },
  },
} as const;

export function pageSchema(item: object): object {
  return {
    type: 'object',
    properties: {
      events: { type: 'array', items: item },
      next: { type: 'string', description: 'Pass as `cursor` for the next (older) page; absent on the last page.' },
    },
    required: ['events'],
  };
}

/** Query strings are strings: numbers are checked by pattern and converted by the handler. */
export const limitQuery = { type: 'string', pattern: '^[0-9]{1,4}$', description: '1 to 1000 (default 100)' } as const;
export const timeQuery = { type: 'string', maxLength: 64, description: 'ISO 8601 time' } as const;
export const cursorQuery = { type: 'string', maxLength: 512 } as const;
