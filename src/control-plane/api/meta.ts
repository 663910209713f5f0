/** The CA certificate (public: enrollment pins it by hash) and the OpenAPI document. (whoami: whoami.ts) */
import type { FastifyInstance } from 'fastify';
import type { CertificateAuthority } from '../../lib/pki/index.ts';
import { caPin } from '../ca-store.ts';

export interface MetaRoutesDeps {
  ca: CertificateAuthority;
  /** The generated OpenAPI document (available once the app is ready). */
  openapi: () => unknown;
}

export function metaRoutes(app: FastifyInstance, deps: MetaRoutesDeps): void {
  const pin = caPin(deps.ca.certPem);

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
