/**
 * The service catalog as the logged-in user on one of their devices sees it (issue 7):
 *
 *   GET /me/services?device=<id>   → { services: [entry] }
 *
 * For login sessions only (an API token is 403 `SESSION_REQUIRED`: a catalog is a person's view), and
 * only with one of the caller's own devices: another user's device is 404, exactly like one that does
 * not exist (CP-03). A disabled user gets an empty catalog.
 *
 * Every Service with `showInCatalog: true` is listed, sorted by name, with what the client needs to
 * connect (domain, port, listen port, the access tiers — "*" resolved to every AccessTier of the
 * service's cluster —, the Kubernetes cluster name, CA and authentication) and `access`: the decision
 * the access tier would take right now for this user on this device, from the same code
 * (lib/policy `compilePolicies` + `evaluate`, the principal state made the way the config stream
 * makes it, stream/translate.ts + lib/config/wire.ts) and explained with `describeDecision`. A
 * permissive policy's would-deny counts as allowed (the access tier lets it through), with its
 * reasons. A service whose roles can never match this user is still listed, denied as
 * `no-matching-role`: showInCatalog is the administrator's statement that people may see it, and
 * the user learns whom to ask rather than wondering where it went.
 *
 * Nothing about the backend is sent (dnsOverride, target addresses are the private network's), only
 * `proxy.mode` (chain: the client sends CONNECT; tcp: raw bytes to a fixed backend) and, for
 * `httpConnect` services, the allow patterns the client may CONNECT to. No policy, role or other
 * user's data is sent beyond the decision's own reasons. Nothing is recorded: this is a preview of a
 * decision, not an access.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CatalogAccess, CatalogEntry } from '../../lib/catalog.ts';
import type { Clock } from '../../lib/clock.ts';
import { deviceState, userState } from '../../lib/config/wire.ts';
import { compilePolicies, describeDecision, evaluate } from '../../lib/policy/index.ts';
import type { CompiledPolicies, PolicyDecision } from '../../lib/policy/index.ts';
import type { AccessTierSpec, PolicySpec, RoleSpec, ServiceSpec } from '../../lib/spec/index.ts';
import { principalOf } from '../auth.ts';
import { wireDevice, wireUser } from '../stream/translate.ts';
import type { Store } from '../store/index.ts';
import { StoredSpecCache } from './documents.ts';
import { ApiError, notFound } from './errors.ts';
import { errorResponses, ID_PATTERN } from './schemas.ts';

export interface MeServiceRoutesDeps {
  store: Pick<Store, 'getUser' | 'getDevice' | 'listObjects'>;
  clock: Clock;
}

const stringArray = { type: 'array', items: { type: 'string' } } as const;

export const catalogEntrySchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    description: { type: 'string' },
    link: { type: 'string' },
    type: { type: 'string', enum: ['kubernetes', 'tcp'] },
    domain: { type: 'string' },
    port: { type: 'integer' },
    autorun: { type: 'boolean' },
    client: {
      type: 'object',
      properties: { listenPort: { type: 'integer' }, allowUserOverride: { type: 'boolean' } },
      required: ['listenPort', 'allowUserOverride'],
    },
    accessTiers: {
      type: 'array',
      description: 'the access tiers to connect through ("*" resolved to every access tier of the service\'s cluster)',
      items: { type: 'object', properties: { name: { type: 'string' }, address: { type: 'string' } }, required: ['name', 'address'] },
    },
    kubernetes: {
      type: ['object', 'null'],
      properties: {
        clusterName: { type: 'string' },
        caPublicKey: { type: 'string' },
        authentication: { type: 'string', enum: ['oidc', 'cluster'] },
      },
      required: ['clusterName', 'caPublicKey', 'authentication'],
    },
    proxy: {
      type: 'object',
      description: 'how the local listener works: chain (HTTP CONNECT) or tcp (raw bytes); allowPatterns for httpConnect services',
      properties: { mode: { type: 'string', enum: ['chain', 'tcp'] }, allowPatterns: { type: 'array', items: { type: 'object', additionalProperties: true } } },
      required: ['mode'],
    },
    access: {
      type: 'object',
      description: 'what the access tier would decide now for this user on this device',
      properties: {
        allowed: { type: 'boolean' },
        mode: { type: 'string', description: 'the policy mode: enforcing, permissive, or none (no policy)' },
        reasons: { ...stringArray, description: 'reason codes (trust-too-low, no-matching-role, …)' },
        explanation: { type: 'string' },
        hints: { ...stringArray, description: 'details such as needs:Medium, has:Low, trust:firewall-off' },
      },
      required: ['allowed', 'mode', 'reasons', 'explanation', 'hints'],
    },
  },
  required: ['name', 'type', 'domain', 'port', 'autorun', 'client', 'accessTiers', 'kubernetes', 'proxy', 'access'],
} as const;

export function meServiceRoutes(app: FastifyInstance, deps: MeServiceRoutesDeps): void {
  const specs = new StoredSpecCache();
  let compiled: CompiledPolicies | undefined;

  app.get('/me/services', {
    config: { access: 'user' },
    schema: {
      summary: 'The service catalog for the logged-in user on one of their devices, with what the access tier would decide now',
      tags: ['me'],
      querystring: {
        type: 'object',
        properties: { device: { type: 'string', pattern: ID_PATTERN, description: 'one of your devices (the catalog is evaluated for it)' } },
        required: ['device'],
        additionalProperties: false,
      },
      response: { 200: { type: 'object', properties: { services: { type: 'array', items: catalogEntrySchema } }, required: ['services'] }, ...errorResponses(400, 401, 403, 404, 429) },
    },
  }, async (request: FastifyRequest) => {
    const principal = principalOf(request);
    if (principal.method !== 'session') {
      throw new ApiError(403, 'SESSION_REQUIRED', 'this route is for a logged-in user (causeway login), not an API token: a catalog is a person\'s view on their device');
    }
    const { device: deviceId } = request.query as { device: string };
    const device = await deps.store.getDevice(deviceId);
    if (device === undefined || device.userId !== principal.id) throw notFound(`device ${deviceId}`);
    const user = await deps.store.getUser(principal.id);
    if (user === undefined || user.disabled) return { services: [] };

    const objects = specs.specObjects(await deps.store.listObjects());
    const services = objects.filter((o): o is ServiceSpec => o.kind === 'Service');
    compiled = compilePolicies(
      {
        services,
        roles: objects.filter((o): o is RoleSpec => o.kind === 'Role'),
        policies: objects.filter((o): o is PolicySpec => o.kind === 'Policy'),
      },
      compiled,
    );
    const tiers = objects.filter((o): o is AccessTierSpec => o.kind === 'AccessTier').sort((a, b) => compare(a.metadata.name, b.metadata.name));
    const u = userState(wireUser(user));
    const d = deviceState(wireDevice(device));
    const now = deps.clock.now();
    const entries = services
      .filter((s) => s.spec.showInCatalog)
      .sort((a, b) => compare(a.metadata.name, b.metadata.name))
      .map((service) => entryView(service, tiers, accessView(evaluate(compiled as CompiledPolicies, { service: service.metadata.name, user: u, device: d, now }))));
    return { services: entries };
  });
}

/** The decision as the catalog shows it: codes, details (hints) and one sentence. */
export function accessView(decision: PolicyDecision): CatalogAccess {
  return {
    allowed: decision.effect !== 'deny',
    mode: decision.mode,
    reasons: decision.effect === 'allow' ? [] : decision.reasons.filter((r) => !r.includes(':')),
    explanation: describeDecision(decision),
    hints: decision.effect === 'allow' ? [] : decision.reasons.filter((r) => r.includes(':')),
  };
}

function entryView(service: ServiceSpec, tiers: AccessTierSpec[], access: CatalogAccess): CatalogEntry {
  const { spec, metadata } = service;
  const wanted = spec.accessTier;
  const chosen = wanted === '*' ? tiers.filter((t) => t.spec.cluster === spec.cluster) : tiers.filter((t) => t.metadata.name === wanted);
  const tcp = spec.type === 'tcp' && spec.backend.target !== undefined && spec.backend.httpConnect !== true;
  const entry: CatalogEntry = {
    name: metadata.name,
    type: spec.type,
    domain: spec.domain,
    port: spec.port,
    autorun: spec.autorun,
    client: { listenPort: spec.client.listenPort, allowUserOverride: spec.client.allowUserOverride },
    accessTiers: chosen.map((t) => ({ name: t.metadata.name, address: t.spec.address })),
    kubernetes: spec.kubernetes === undefined ? null : { clusterName: spec.kubernetes.clusterName, caPublicKey: spec.kubernetes.caPublicKey, authentication: spec.kubernetes.authentication },
    proxy: tcp ? { mode: 'tcp' } : spec.backend.httpConnect === true ? { mode: 'chain', allowPatterns: spec.backend.allowPatterns ?? [] } : { mode: 'chain' },
    access,
  };
  if (metadata.description !== undefined) entry.description = metadata.description;
  if (metadata.link !== undefined) entry.link = metadata.link;
  return entry;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
