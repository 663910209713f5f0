/**
 * The spec documents of DESIGN §4 as zod schemas: the one place that says what a valid document is
 * and which defaults apply. Every object is strict (unknown fields are problems), names follow one
 * pattern, and values that later meet hostile input (domains, host:port, CIDRs, patterns) are checked
 * and canonicalised with the same code that matches connections (lib/net/target), so a spec can
 * never hold a value the data path would read differently.
 *
 * Adding a kind: write its spec schema, add one line to `specSchemas`, and export its type.
 *
 * Service backend rules, kept simple:
 * - `type: kubernetes`: `backend` takes `dnsOverride` or nothing (then `domain:port` is dialled);
 *   `kubernetes: {clusterName, caPublicKey}` is required.
 * - `type: tcp`: `backend` takes exactly one of `target: host:port` (a fixed backend) or
 *   `httpConnect: true` (the client picks targets, limited by `allowPatterns`, which is then
 *   required and otherwise refused). `dnsOverride` is where a fixed destination is really dialled,
 *   so it is refused with `httpConnect`. `kubernetes` is refused.
 */
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { allowedDomainProblem, canonicalHostname, cidrProblem, formatAuthority, hostnamePatternProblem, parseAuthority, portRangeProblem } from '../net/target.ts';
import { deviceManagerSpec } from './device-manager.ts';
import { identityProviderSpec } from './identity-provider.ts';
import { trustProfileSpec } from './trust-profile.ts';

export const API_VERSION = 'causeway/v1';

export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const NAME_MESSAGE = 'must be a lower-case name of 1 to 63 letters, digits and hyphens that starts and ends with a letter or digit';

export const objectName = z.string().regex(NAME_PATTERN, NAME_MESSAGE);

const nonEmpty = z.string().trim().min(1, 'must not be empty');

const port = z.number().int('must be a whole number').min(1, 'must be between 1 and 65535').max(65535, 'must be between 1 and 65535');

/** `host:port` (IPv6 in brackets), canonicalised with the rules the data path uses. */
const hostPort = z.string().transform((value, ctx) => {
  const parsed = parseAuthority(value);
  if (!parsed.ok) {
    ctx.issues.push({ code: 'custom', input: value, message: `must be host:port (${parsed.message})` });
    return z.NEVER;
  }
  return formatAuthority(parsed.target);
});

/** A DNS name, canonicalised (lower case, no trailing dot); IP literals refused, since SNI carries names only. */
const domain = z.string().transform((value, ctx) => {
  const name = canonicalHostname(value);
  if (name === undefined) {
    ctx.issues.push({ code: 'custom', input: value, message: 'must be a DNS name such as kube.example.com (letters, digits, hyphens; not an IP address)' });
    return z.NEVER;
  }
  return name;
});

/** A string checked by one of target.ts's problem functions. */
function checkedString(problem: (value: string) => string | undefined) {
  return z.string().superRefine((value, ctx) => {
    const message = problem(value);
    if (message !== undefined) ctx.addIssue({ code: 'custom', input: value, message });
  });
}

const metadata = z.strictObject({
  name: objectName,
  description: z.string().max(1024, 'must be at most 1024 characters').optional(),
  link: z.url({ protocol: /^https?$/, error: 'must be an http or https URL' }).optional(),
});

function documentSchema<K extends string, S extends z.ZodType>(kind: K, spec: S) {
  return z.strictObject({
    apiVersion: z.literal(API_VERSION, `must be ${API_VERSION}`),
    kind: z.literal(kind),
    metadata,
    spec,
  });
}

// ---------------------------------------------------------------------------------------------
// Role

export const DEVICE_OWNERSHIP = ['corporate-dedicated', 'corporate-shared', 'employee-owned', 'other'] as const;
export const DEVICE_PLATFORMS = ['macos', 'linux', 'windows', 'ios', 'android'] as const;

const roleSpec = z.strictObject({
  /** Any listed group OR email matches; both empty means any user. */
  users: z
    .strictObject({
      groups: z.array(nonEmpty).default([]),
      emails: z.array(z.email('must be an email address')).default([]),
    })
    .prefault({}),
  /** Every listed attribute must hold; an empty list or false places no requirement. */
  devices: z
    .strictObject({
      ownership: z.array(z.enum(DEVICE_OWNERSHIP)).default([]),
      platforms: z.array(z.enum(DEVICE_PLATFORMS)).default([]),
      knownDeviceOnly: z.boolean().default(false),
      mdmPresent: z.boolean().default(false),
      serialNumbers: z.array(nonEmpty).default([]),
    })
    .prefault({}),
});

// ---------------------------------------------------------------------------------------------
// Policy

export const TRUST_LEVELS = ['Low', 'Medium', 'High'] as const;

const isoTime = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 time such as 2026-01-01T00:00:00Z' });

const schedule = z
  .strictObject({
    start: isoTime.nullable().default(null),
    end: isoTime.nullable().default(null),
  })
  .superRefine((value, ctx) => {
    if (value.start !== null && value.end !== null && !(Date.parse(value.start) < Date.parse(value.end))) {
      ctx.addIssue({ code: 'custom', input: value, path: ['end'], message: 'must be later than start' });
    }
  });

const accessRule = z.strictObject({
  roles: z.array(objectName).min(1, 'must name at least one role'),
  /** The minimum trust level. */
  trustLevel: z.enum(TRUST_LEVELS),
  schedule: schedule.optional(),
});

/** Kubernetes verbs a kube proxy rule may name ('*' for every verb). */
export const KUBERNETES_RULE_VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection', '*'] as const;

/**
 * One kube proxy deny rule: who (roles; absent or empty = everyone), which verbs, which resources
 * (`pods`, `pods/exec`, `*`, `*\/exec`, `pods/*`) and where (namespaces; absent = everywhere, cluster
 * scope included). The kube proxy enforces it before Kubernetes RBAC sees the request.
 */
const kubernetesDenyRule = z.strictObject({
  roles: z.array(objectName).optional(),
  verbs: z.array(z.enum(KUBERNETES_RULE_VERBS)).min(1, 'must name at least one verb (or "*")'),
  resources: z.array(z.string().regex(/^(\*|[a-z0-9][a-z0-9.-]*)(\/(\*|[a-z0-9][a-z0-9.-]*))?$/, 'must be a resource, resource/subresource or "*" (e.g. pods/exec)')).min(1, 'must name at least one resource (or "*")'),
  namespaces: z.array(z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a namespace name')).min(1, 'must name at least one namespace, or be left out for all').optional(),
  // eslint-disable-next-line no-control-regex
  message: z.string().max(256).regex(/^[^\u0000-\u001f\u007f]*$/, 'must be one line of text').optional(),
});

/** An empty access list is valid and allows nobody. */
const policySpec = z.strictObject({
  access: z.array(accessRule),
  /** Rules the kube proxy enforces for the Kubernetes services this policy is attached to. */
  kubernetes: z.strictObject({ deny: z.array(kubernetesDenyRule).default([]) }).optional(),
});

// ---------------------------------------------------------------------------------------------
// AccessTier and Connector

const accessTierSpec = z.strictObject({
  cluster: objectName,
  /** Where client proxies and connectors reach this access tier. */
  address: hostPort,
});

const connectorSpec = z.strictObject({
  cluster: objectName,
  allowedCidrs: z.array(checkedString(cidrProblem)).default([]),
  /** `.example.com` for names below example.com (not example.com itself), or exact names. */
  allowedDomains: z.array(checkedString(allowedDomainProblem)).default([]),
});

// ---------------------------------------------------------------------------------------------
// Service

const allowPattern = z
  .strictObject({
    hostnames: z.array(checkedString(hostnamePatternProblem)).optional(),
    cidrs: z.array(checkedString(cidrProblem)).optional(),
    ports: z
      .array(
        z.union([z.number(), z.string()], 'must be a port number or a range such as "8000-8099"').superRefine((value, ctx) => {
          const message = portRangeProblem(value);
          if (message !== undefined) ctx.addIssue({ code: 'custom', input: value, message });
        }),
      )
      .min(1, 'must list at least one port or range'),
  })
  .superRefine((value, ctx) => {
    if ((value.hostnames ?? []).length === 0 && (value.cidrs ?? []).length === 0) {
      ctx.addIssue({ code: 'custom', input: value, message: 'must list hostnames or cidrs (a pattern without either matches nothing)' });
    }
  });

/** PEM certificates (a bundle is fine, for CA rotation); each must parse, and no private key may ride along. */
const caCertificates = z.string().superRefine((value, ctx) => {
  if (value.includes('PRIVATE KEY')) {
    ctx.addIssue({ code: 'custom', input: '[redacted]', message: 'contains a private key; give only the CA certificate (and rotate that key: it has been exposed)' });
    return;
  }
  const blocks = value.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    ctx.addIssue({ code: 'custom', input: value, message: 'must be a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)' });
    return;
  }
  blocks.forEach((block, index) => {
    try {
      new X509Certificate(block);
    } catch {
      ctx.addIssue({ code: 'custom', input: value, message: `certificate ${index + 1} is not a valid X.509 certificate` });
    }
  });
});

const serviceSpec = z
  .strictObject({
    type: z.enum(['kubernetes', 'tcp']),
    cluster: objectName,
    /** An access tier's name, or "*" for every access tier of the cluster. */
    accessTier: z.string().regex(/^(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$/, 'must be an access tier name or "*"'),
    /** Omitted when the access tier reaches the backend itself. */
    connector: objectName.optional(),
    /** The SNI clients send and the name they CONNECT to. */
    domain,
    /** The port clients CONNECT to. */
    port: port.default(443),
    showInCatalog: z.boolean().default(true),
    autorun: z.boolean().default(false),
    backend: z
      .strictObject({
        dnsOverride: hostPort.optional(),
        target: hostPort.optional(),
        httpConnect: z.boolean().optional(),
        allowPatterns: z.array(allowPattern).optional(),
      })
      .prefault({}),
    client: z
      .strictObject({
        listenPort: port.default(8081),
        allowUserOverride: z.boolean().default(false),
      })
      .prefault({}),
    kubernetes: z
      .strictObject({
        clusterName: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@:-]{0,252}$/, 'must be a kubeconfig cluster name (letters, digits, . _ @ : -)'),
        caPublicKey: caCertificates,
        /** oidc: the kubeconfig user runs `causeway kube-credential`; cluster: the cluster keeps its own authentication. */
        authentication: z.enum(['oidc', 'cluster']).default('oidc'),
      })
      .optional(),
    policy: z
      .strictObject({
        name: objectName,
        /** permissive: allow, but record who would have been denied. */
        mode: z.enum(['enforcing', 'permissive']).default('enforcing'),
      })
      .optional(),
  })
  // Runs even when fields above have problems, so one pass reports everything.
  .superRefine((value, ctx) => serviceRules(value, ctx), { when: (payload) => isRecord(payload.value) });

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The cross-field rules of a Service, written against possibly malformed input. */
function serviceRules(value: Record<string, unknown>, ctx: z.RefinementCtx): void {
  const issue = (path: Array<string | number>, message: string): void => ctx.addIssue({ code: 'custom', input: undefined, path, message });
  const backend = isRecord(value.backend) ? value.backend : {};
  if (value.type === 'kubernetes') {
    for (const key of ['target', 'httpConnect', 'allowPatterns']) {
      if (backend[key] !== undefined) issue(['backend', key], 'is not allowed for type kubernetes (its backend takes only dnsOverride)');
    }
    if (value.kubernetes === undefined) issue(['kubernetes'], 'is required for type kubernetes (clusterName and caPublicKey)');
  } else if (value.type === 'tcp') {
    if (value.kubernetes !== undefined) issue(['kubernetes'], 'is only for type kubernetes');
    const httpConnect = backend.httpConnect === true;
    const hasTarget = backend.target !== undefined;
    if (httpConnect && hasTarget) issue(['backend', 'target'], 'give either target or httpConnect: true, not both');
    if (!httpConnect && !hasTarget) issue(['backend'], 'a tcp service needs target: host:port, or httpConnect: true with allowPatterns');
    if (httpConnect && (!Array.isArray(backend.allowPatterns) || backend.allowPatterns.length === 0)) {
      issue(['backend', 'allowPatterns'], 'is required with httpConnect: true (list the hostnames or cidrs and ports clients may reach)');
    }
    if (!httpConnect && backend.allowPatterns !== undefined) issue(['backend', 'allowPatterns'], 'is allowed only with httpConnect: true');
    if (httpConnect && backend.dnsOverride !== undefined) issue(['backend', 'dnsOverride'], 'is not allowed with httpConnect: true (each connection names its own target)');
  }
}

// ---------------------------------------------------------------------------------------------
// AdminBinding: who may use the admin API with their login session, and for what (CP-17)

export const ADMIN_ROLES = ['admin', 'viewer'] as const;

/** A user name as the users API takes it. */
const userName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/, 'must be a user name (letters, digits, . _ @ -; at most 128)');

const adminBindingSpec = z
  .strictObject({
    role: z.enum(ADMIN_ROLES),
    /** Any listed user OR group matches. */
    users: z.array(userName).default([]),
    groups: z.array(nonEmpty).default([]),
    /** An admin only for these spec kinds; empty or absent: everything (users, devices, tokens too). */
    kinds: z
      .array(
        z.string().superRefine((value, ctx) => {
          // Looked up when a document is checked, so kinds added to the registry below count.
          if (!Object.hasOwn(specSchemas, value)) ctx.addIssue({ code: 'custom', input: value, message: `must be a spec kind: one of ${Object.keys(specSchemas).join(', ')}` });
        }),
      )
      .default([]),
  })
  .superRefine((value, ctx) => {
    if (value.users.length === 0 && value.groups.length === 0) {
      ctx.addIssue({ code: 'custom', input: value, path: ['users'], message: 'name at least one user or group (a binding for nobody does nothing)' });
    }
    if (value.role === 'viewer' && value.kinds.length > 0) {
      ctx.addIssue({ code: 'custom', input: value, path: ['kinds'], message: 'is only for role admin (a viewer reads everything; it writes nothing)' });
    }
  });

// ---------------------------------------------------------------------------------------------
// The registry of kinds

export const specSchemas = {
  Role: documentSchema('Role', roleSpec),
  Policy: documentSchema('Policy', policySpec),
  AccessTier: documentSchema('AccessTier', accessTierSpec),
  Connector: documentSchema('Connector', connectorSpec),
  Service: documentSchema('Service', serviceSpec),
  AdminBinding: documentSchema('AdminBinding', adminBindingSpec),
  IdentityProvider: documentSchema('IdentityProvider', identityProviderSpec),
  TrustProfile: documentSchema('TrustProfile', trustProfileSpec),
  DeviceManager: documentSchema('DeviceManager', deviceManagerSpec),
};

export type SpecKind = keyof typeof specSchemas;
export const SPEC_KINDS = Object.keys(specSchemas) as SpecKind[];

/** For documents of an unknown kind: still checks everything but `kind` and `spec`, so one pass reports all. */
export const envelopeSchema = z.strictObject({
  apiVersion: z.literal(API_VERSION, `must be ${API_VERSION}`),
  kind: z.unknown(),
  metadata,
  spec: z.unknown(),
});

export type RoleSpec = z.output<typeof specSchemas.Role>;
export type PolicySpec = z.output<typeof specSchemas.Policy>;
export type AccessTierSpec = z.output<typeof specSchemas.AccessTier>;
export type ConnectorSpec = z.output<typeof specSchemas.Connector>;
export type ServiceSpec = z.output<typeof specSchemas.Service>;
export type AdminBindingSpec = z.output<typeof specSchemas.AdminBinding>;
export type IdentityProviderSpec = z.output<typeof specSchemas.IdentityProvider>;
export type TrustProfileSpec = z.output<typeof specSchemas.TrustProfile>;

/** Any spec document, with defaults applied; discriminated on `kind`. */
export type SpecObject = { [K in SpecKind]: z.output<(typeof specSchemas)[K]> }[SpecKind];

export function isSpecKind(kind: unknown): kind is SpecKind {
  return typeof kind === 'string' && Object.hasOwn(specSchemas, kind);
}
