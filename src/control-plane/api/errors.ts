/**
 * API errors: every failure is `{ error: { code, message, details? } }` with a stable code and a status
 * that follows from it. Messages are written for people and never carry a stack, a token or a key;
 * anything unexpected is a 500 whose detail goes to the log only, under the request id.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CausewayError, errorCode } from '../../lib/errors.ts';

export interface ApiErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

/** An error the API answers with a given status. */
export class ApiError extends CausewayError {
  readonly statusCode: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(statusCode: number, code: string, message: string, details?: Record<string, unknown>) {
    super(code, message);
    this.name = 'ApiError';
    this.statusCode = statusCode;
    this.details = details;
  }
}

/** Statuses for the codes the store and the libraries throw (as UserError or CausewayError). */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  INVALID_ARGUMENT: 400,
  BAD_DURATION: 400,
  INVALID_CURSOR: 400,
  UNAUTHENTICATED: 401,
  JOIN_TOKEN_INVALID: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  VERSION_CONFLICT: 409,
  OBJECT_IN_USE: 409,
  SPEC_INVALID: 422,
  RATE_LIMITED: 429,
  STORE_CLOSED: 503,
};

/** Fastify's own request errors, mapped to our codes. Their messages are safe to show. */
const FASTIFY_CODES: Readonly<Record<string, string>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_INSTANCE_ALREADY_STARTED: 'INTERNAL',
  FST_ERR_VALIDATION: 'INVALID_REQUEST',
};

export function errorBody(code: string, message: string, details?: Record<string, unknown>): ApiErrorBody {
  return details === undefined ? { error: { code, message } } : { error: { code, message, details } };
}

/** Sends an error response (JSON, our shape). */
export function sendError(reply: FastifyReply, statusCode: number, code: string, message: string, details?: Record<string, unknown>): FastifyReply {
  return reply.code(statusCode).type('application/json; charset=utf-8').send(errorBody(code, message, details));
}

interface Mapped {
  statusCode: number;
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

/** What an error becomes on the wire; undefined for errors that must not be shown (500). */
export function mapError(err: unknown): Mapped | undefined {
  if (err instanceof ApiError) return { statusCode: err.statusCode, code: err.code, message: err.message, ...(err.details === undefined ? {} : { details: err.details }) };
  const fastify = err as Partial<FastifyError> | null;
  if (fastify !== null && typeof fastify === 'object' && Array.isArray(fastify.validation)) {
    const context = typeof fastify.validationContext === 'string' ? fastify.validationContext : 'request';
    const problems = fastify.validation.map((v) => {
      const extra = v.params !== undefined && typeof v.params === 'object' && 'additionalProperty' in v.params ? `/${String(v.params.additionalProperty)}` : '';
      return { path: `${context}${v.instancePath}${extra}`, message: v.message ?? 'is not valid' };
    });
    const message = problems.map((p) => `${p.path} ${p.message}`).join('; ');
    return { statusCode: 400, code: 'INVALID_REQUEST', message: `the request is not valid: ${message}`, details: { problems } };
  }
  const code = errorCode(err);
  if (code !== undefined && Object.hasOwn(FASTIFY_CODES, code)) {
    const ours = FASTIFY_CODES[code];
    if (ours === 'INTERNAL') return undefined;
    const statusCode = typeof fastify?.statusCode === 'number' ? fastify.statusCode : 400;
    return { statusCode, code: ours, message: messageFor(ours, fastify?.message) };
  }
  if (err instanceof CausewayError) {
    const statusCode = STATUS_BY_CODE[err.code];
    if (statusCode !== undefined) return { statusCode, code: err.code, message: err.message };
    return undefined;
  }
  // Errors from the HTTP layer below Fastify's codes (a SyntaxError from the JSON parser, a
  // prototype-poisoning refusal): trusted only for their 4xx status.
  if (fastify !== null && typeof fastify === 'object' && typeof fastify.statusCode === 'number' && fastify.statusCode >= 400 && fastify.statusCode < 500) {
    const isJson = err instanceof SyntaxError || /JSON|prototype|constructor/i.test(String(fastify.message));
    const ours = isJson ? 'INVALID_JSON' : fastify.statusCode === 413 ? 'BODY_TOO_LARGE' : 'INVALID_REQUEST';
    return { statusCode: fastify.statusCode, code: ours, message: messageFor(ours, fastify.message) };
  }
  return undefined;
}

function messageFor(code: string, original: string | undefined): string {
  switch (code) {
    case 'BODY_TOO_LARGE':
      return 'the request body is too large';
    case 'UNSUPPORTED_MEDIA_TYPE':
      return 'unsupported Content-Type: send application/json (or application/yaml to /api/v1/apply)';
    case 'INVALID_JSON':
      return 'the request body is not valid JSON';
    default:
      return original !== undefined && original.length < 300 ? original : 'the request is not valid';
  }
}

/** The error and not-found handlers for an app: our shape everywhere, details of 500s only in the log. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const mapped = mapError(err);
    if (mapped === undefined) {
      request.log.error({ err }, 'request failed');
      return sendError(reply, 500, 'INTERNAL', `internal error; the server log has the details (request ${request.id})`);
    }
    if (mapped.statusCode >= 500) request.log.error({ err }, 'request failed');
    else request.log.debug({ code: mapped.code }, 'request refused');
    if (mapped.statusCode === 401) void reply.header('www-authenticate', 'Bearer');
    return sendError(reply, mapped.statusCode, mapped.code, mapped.message, mapped.details);
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    return sendError(reply, 404, 'NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0].slice(0, 200)}`);
  });
}

export function notFound(what: string): ApiError {
  return new ApiError(404, 'NOT_FOUND', `${what} does not exist`);
}

export function badRequest(code: string, message: string, details?: Record<string, unknown>): ApiError {
  return new ApiError(400, code, message, details);
}
