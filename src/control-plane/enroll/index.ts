/**
 * Enrollment and renewal of access tiers, connectors and kube proxies (the client side is
 * src/lib/enroll; the wire is src/lib/enroll/wire.ts):
 *
 *     POST /api/v1/enroll  { joinToken, kind, csr }  →  { certPem, caPem, notAfter, name, serial }
 *     POST /api/v1/renew   { csr }  with the current client certificate  →  the same shape
 *
 * Enrollment spends a join token atomically (single use, unexpired, of the kind asked: DT-06). Every
 * way a token can be wrong is the same 401 `JOIN_TOKEN_INVALID`, and each failure drains the
 * caller's address's bucket, so guessing is slow (CP-12). The certificate's type comes from the
 * token's kind and its identity from the token's name, never from the request (CA-04): the request
 * only proves possession of the key, which never leaves the part's machine.
 *
 * Renewal needs the part's current certificate, unexpired and unrevoked, and issues the same type
 * and name for a new key. Both record the certificate in the store, so it can be revoked by serial.
 *
 *     await app.register(enrollmentPlugin, { store, ca, logger, clock });
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CausewayError, errorCode } from '../../lib/errors.ts';
import { ENROLL_KINDS, ENROLL_PATH, MAX_CSR_CHARS, MAX_JOIN_TOKEN_CHARS, RENEW_PATH } from '../../lib/enroll/wire.ts';
import type { EnrolledResponse, EnrollKind } from '../../lib/enroll/wire.ts';
import { identityUrisFor } from '../../lib/pki/identity.ts';
import { publicKeyFromCsr } from '../../lib/pki/keys.ts';
import type { CertType, IssuedCertificate } from '../../lib/pki/index.ts';
import { sendError } from '../api/errors.ts';
import { FailureLimiter, sourceKey } from '../auth.ts';
import type { FailureLimiterOptions } from '../auth.ts';
import { authenticatePeer, pluginDeps, refusePeer } from '../stream/peer.ts';
import type { PeerPluginDeps, PeerPluginOptions } from '../stream/peer.ts';

export type EnrollmentPluginOptions = PeerPluginOptions & {
  /** Failed enrollments per source address (CP-12). Default: 10 in a row, then one a minute. */
  failures?: Omit<FailureLimiterOptions, 'clock'>;
  /** Renewals per certificate identity. Default: 10 in a row, then one every 5 minutes. */
  renewals?: Omit<FailureLimiterOptions, 'clock'>;
  /** Certificate lifetime per kind; default the type's (24 h, DESIGN §3). */
  lifetimeMs?: Partial<Record<EnrollKind, number>>;
};

const JOIN_TOKEN_MESSAGE = 'the join token is not valid: it may be mistyped, used already, expired, or for another kind of part; create a new one with `causeway join-token create`';

const certificateResponse = {
  type: 'object',
  properties: {
    certPem: { type: 'string' },
    caPem: { type: 'string' },
    notAfter: { type: 'string' },
    name: { type: 'string' },
    serial: { type: 'string' },
  },
  required: ['certPem', 'caPem', 'notAfter', 'name', 'serial'],
} as const;

const errorRef = { $ref: 'error#' } as const;

export function enrollmentPlugin(app: FastifyInstance, options: EnrollmentPluginOptions): Promise<void> {
  const deps = pluginDeps(options);
  const logger = deps.logger.child({ component: 'enrollment' });
  const failures = new FailureLimiter({ burst: 10, refillPerSecond: 1 / 60, ...options.failures, clock: deps.clock });
  const renewals = new FailureLimiter({ burst: 10, refillPerSecond: 1 / 300, ...options.renewals, clock: deps.clock });
  const errors = app.getSchemas().error === undefined ? {} : { 400: errorRef, 401: errorRef, 429: errorRef };

  app.post(ENROLL_PATH, {
    schema: {
      summary: 'Enroll an access tier, connector or kube proxy with a join token and a certificate request',
      tags: ['enrollment'],
      security: [],
      body: {
        type: 'object',
        properties: {
          joinToken: { type: 'string', minLength: 1, maxLength: MAX_JOIN_TOKEN_CHARS },
          kind: { type: 'string', enum: [...ENROLL_KINDS] },
          csr: { type: 'string', minLength: 1, maxLength: MAX_CSR_CHARS },
        },
        required: ['joinToken', 'kind', 'csr'],
        additionalProperties: false,
      },
      response: { 200: certificateResponse, ...errors },
    },
  }, async (request: FastifyRequest<{ Body: { joinToken: string; kind: EnrollKind; csr: string } }>, reply) => {
    const source = sourceKey(request.ip);
    if (limited(reply, failures.retryAfter(source))) return reply;
    const { joinToken, kind, csr } = request.body;
    if (!(await csrUsable(csr, reply))) {
      failures.fail(source);
      return reply;
    }
    let record: { name: string; kind: EnrollKind; id: string };
    try {
      record = await deps.store.consumeJoinToken(joinToken, kind);
    } catch (err) {
      if (errorCode(err) !== 'JOIN_TOKEN_INVALID') throw err;
      failures.fail(source);
      logger.warn({ source: request.ip, kind }, 'enrollment refused: join token invalid');
      return sendError(reply, 401, 'JOIN_TOKEN_INVALID', JOIN_TOKEN_MESSAGE);
    }
    const issued = await issue(deps, kind, record.name, csr, options.lifetimeMs?.[kind]);
    logger.info({ kind, name: record.name, serial: issued.serial, notAfter: issued.notAfter.toISOString(), joinToken: record.id, source: request.ip }, 'enrolled');
    return reply.send(response(deps, record.name, issued));
  });

  app.post(RENEW_PATH, {
    schema: {
      summary: 'Renew the calling part\'s certificate (it presents the current one) for a new key',
      tags: ['enrollment'],
      security: [],
      body: {
        type: 'object',
        properties: { csr: { type: 'string', minLength: 1, maxLength: MAX_CSR_CHARS } },
        required: ['csr'],
        additionalProperties: false,
      },
      response: { 200: certificateResponse, ...errors },
    },
  }, async (request: FastifyRequest<{ Body: { csr: string } }>, reply) => {
    const source = sourceKey(request.ip);
    if (limited(reply, failures.retryAfter(source))) return reply;
    const auth = await authenticatePeer(request, ENROLL_KINDS, deps);
    if (!auth.ok) {
      failures.fail(source);
      logger.warn({ source: request.ip, reason: auth.reason, detail: auth.message }, 'renewal refused');
      return refusePeer(reply, auth, ENROLL_KINDS);
    }
    const { type, name = '' } = auth.identity;
    const kind = type as EnrollKind;
    const key = `${kind}/${name}`;
    if (limited(reply, renewals.retryAfter(key))) return reply;
    renewals.fail(key);
    if (!(await csrUsable(request.body.csr, reply))) return reply;
    const issued = await issue(deps, kind, name, request.body.csr, options.lifetimeMs?.[kind]);
    logger.info({ kind, name, serial: issued.serial, previous: auth.identity.serial, notAfter: issued.notAfter.toISOString() }, 'certificate renewed');
    return reply.send(response(deps, name, issued));
  });
  return Promise.resolve();
}

function limited(reply: FastifyReply, wait: number): boolean {
  if (wait <= 0) return false;
  void reply.header('retry-after', String(wait));
  sendError(reply, 429, 'RATE_LIMITED', `too many attempts from here; retry in ${wait} s`);
  return true;
}

/** Checks the request's self-signature and key strength before anything is spent; 400 when unusable. */
async function csrUsable(csr: string, reply: FastifyReply): Promise<boolean> {
  try {
    await publicKeyFromCsr(csr);
    return true;
  } catch (err) {
    const code = errorCode(err) ?? 'CSR_INVALID';
    sendError(reply, 400, code === 'CERT_WEAK_KEY' ? 'CERT_WEAK_KEY' : 'CSR_INVALID', err instanceof Error ? err.message : 'the certificate request is not usable');
    return false;
  }
}

async function issue(deps: PeerPluginDeps, kind: EnrollKind, name: string, csrPem: string, lifetimeMs: number | undefined): Promise<IssuedCertificate> {
  const type: CertType = kind;
  const identity = { name };
  const issued = await deps.ca.issue({ type, identity, csrPem, ...(lifetimeMs === undefined ? {} : { lifetimeMs }) });
  try {
    await deps.store.recordCertificate({ serial: issued.serial, type, identity: identityUrisFor(type, identity).join(' '), notAfter: issued.notAfter.toISOString() });
  } catch (err) {
    // Unrecorded, it could not be revoked by serial from the console: do not hand it out.
    throw new CausewayError('CERT_RECORD_FAILED', 'the certificate could not be recorded; retry', { cause: err, retryable: true });
  }
  return issued;
}

function response(deps: PeerPluginDeps, name: string, issued: IssuedCertificate): EnrolledResponse {
  return { certPem: issued.certPem, caPem: deps.ca.certPem, notAfter: issued.notAfter.toISOString(), name, serial: issued.serial };
}
