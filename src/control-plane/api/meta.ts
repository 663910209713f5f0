/** Who am I, the CA certificate (public: enrollment pins it by hash), and the OpenAPI document. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CertificateAuthority } from '../../lib/pki/index.ts';
import { principalOf } from '../auth.ts';
import { caPin } from '../ca-store.ts';
import { errorResponses } from './schemas.ts';

export interface MetaRoutesDeps {
  ca: CertificateAuthority;
  /** The generated OpenAPI document (available once the app is ready). */
  openapi: () => unknown;
}

export function metaRoutes(app: FastifyInstance, deps: MetaRoutesDeps): void {
  const pin = caPin(deps.ca.certPem);

  app.get('/whoami', {
    config: { access: 'read' },
    schema: {
      summary: 'The caller: how they authenticated and with which scope',
      tags: ['meta'],
      response: {
        200: {
          type: 'object',
          properties: { method: { type: 'string' }, id: { type: 'string' }, name: { type: 'string' }, scope: { type: 'string' }, actor: { type: 'string' } },
          required: ['method', 'id', 'name', 'scope', 'actor'],
        },
        ...errorResponses(401),
      },
    },
  }, (request: FastifyRequest) => {
    const { method, id, name, scope, actor } = principalOf(request);
    return { method, id, name, scope, actor };
  });

  app.get('/ca', {
    config: { access: 'public' },
    schema: {
      summary: 'The CA certificate every part trusts (public), and its pin',
      tags: ['meta'],
      security: [],
      response: {
        200: {
          type: 'object',
          properties: { certPem: { type: 'string' }, pin: { type: 'string', description: 'sha256:<hex of the certificate DER>' }, notAfter: { type: 'string' } },
          required: ['certPem', 'pin', 'notAfter'],
        },
      },
    },
  }, () => ({ certPem: deps.ca.certPem, pin, notAfter: deps.ca.notAfter.toISOString() }));

  app.get('/openapi.json', { config: { access: 'public' }, schema: { hide: true } }, () => deps.openapi());
}
