/**
 * `kind: DeviceManager`: one MDM / EDR integration the control plane asks about devices (DESIGN §2,
 * issue 5). The spec is a discriminated union on `type`; every variant is strict.
 *
 * ```yaml
 * apiVersion: causeway/v1
 * kind: DeviceManager
 * metadata: {name: intune}
 * spec:
 *   type: intune                  # or jamf | crowdstrike | http
 *   syncInterval: 20m             # batch sync period (1m to 24h)
 *   tenantId: 00000000-0000-0000-0000-000000000000
 *   clientId: 11111111-1111-1111-1111-111111111111
 *   clientSecret: {env: INTUNE_SECRET}   # or {file: /etc/causeway/intune-secret}
 * ```
 *
 * Secrets are only ever references (`{env: NAME}` or `{file: /absolute/path}`); a literal secret is
 * refused, and the refusal never repeats it. Service URLs are https (plain http only for loopback, for
 * development and tests). `syncInterval` stays the string that was written (so `get -o yaml` reads
 * back the same); `durationMs` turns it into milliseconds.
 */
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------
// Durations

const DURATION_PATTERN = /^(?:(\d{1,5})h)?(?:(\d{1,5})m)?(?:(\d{1,6})s)?$/;

/** `20m`, `1h30m`, `90s` in milliseconds; undefined for anything else (including the empty string). */
export function durationMs(text: string): number | undefined {
  if (text === '') return undefined;
  const m = DURATION_PATTERN.exec(text);
  if (m === null) return undefined;
  const [, h, min, s] = m;
  return ((Number(h ?? 0) * 60 + Number(min ?? 0)) * 60 + Number(s ?? 0)) * 1000;
}

export const MIN_SYNC_INTERVAL_MS = 60_000;
export const MAX_SYNC_INTERVAL_MS = 24 * 3600_000;
export const DEFAULT_SYNC_INTERVAL = '20m';

const syncInterval = z
  .string()
  .superRefine((value, ctx) => {
    const ms = durationMs(value);
    if (ms === undefined) ctx.addIssue({ code: 'custom', input: value, message: 'must be a duration such as 20m, 1h or 1h30m' });
    else if (ms < MIN_SYNC_INTERVAL_MS || ms > MAX_SYNC_INTERVAL_MS) ctx.addIssue({ code: 'custom', input: value, message: 'must be between 1m and 24h' });
  })
  .default(DEFAULT_SYNC_INTERVAL);

// ---------------------------------------------------------------------------------------------
// Secret references

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

const envRef = z.strictObject({ env: z.string().regex(ENV_NAME, 'must be an environment variable name (letters, digits, _)') });
const fileRef = z.strictObject({
  file: z.string().refine((value) => value.startsWith('/') && !value.includes('\0') && value.length <= 4096, 'must be an absolute file path'),
});

const SECRET_REF_MESSAGE = 'must be a reference, {env: NAME} or {file: /path}: a secret is never written into a spec';

/** `{env: NAME}` or `{file: /absolute/path}`. A string (a literal secret) is refused without echoing it. */
export const secretRef = z.custom<unknown>().transform((value, ctx): SecretRef => {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === 'env') {
      const parsed = envRef.safeParse(value);
      if (parsed.success) return parsed.data;
      ctx.issues.push({ code: 'custom', input: undefined, path: ['env'], message: 'must be an environment variable name (letters, digits, _)' });
      return z.NEVER;
    }
    if (keys.length === 1 && keys[0] === 'file') {
      const parsed = fileRef.safeParse(value);
      if (parsed.success) return parsed.data;
      ctx.issues.push({ code: 'custom', input: undefined, path: ['file'], message: 'must be an absolute file path' });
      return z.NEVER;
    }
  }
  if (value === undefined) {
    ctx.issues.push({ code: 'custom', input: undefined, message: 'is required: {env: NAME} or {file: /path}' });
    return z.NEVER;
  }
  // `input: undefined`: the refused value may be the secret itself; it must not travel on in the issue.
  ctx.issues.push({ code: 'custom', input: undefined, message: SECRET_REF_MESSAGE });
  return z.NEVER;
});

export type SecretRef = { env: string } | { file: string };

// ---------------------------------------------------------------------------------------------
// URLs and certificates

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

function serviceUrlProblem(value: string, allowPath: boolean, allowQuery = false): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an https URL such as https://example.com';
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) return 'must be an https URL (plain http only for localhost)';
  if (url.username !== '' || url.password !== '') return 'must not carry a user name or password (give credentials as secret references)';
  if (url.hash !== '' || value.includes('#')) return 'must not have a fragment';
  if (url.search !== '' && !allowQuery) return 'must not have a query';
  if (!allowPath && url.pathname !== '/') return 'must be a base URL without a path, such as https://example.com';
  return undefined;
}

/** A base URL, canonicalised without a trailing slash. */
function baseUrl(defaultValue?: string) {
  const schema = z.string().transform((value, ctx) => {
    const problem = serviceUrlProblem(value, true);
    if (problem !== undefined) {
      ctx.issues.push({ code: 'custom', input: value, message: problem });
      return z.NEVER;
    }
    return value.replace(/\/+$/, '');
  });
  return defaultValue === undefined ? schema : schema.default(defaultValue);
}

const caPem = z.string().superRefine((value, ctx) => {
  if (value.includes('PRIVATE KEY')) {
    ctx.addIssue({ code: 'custom', input: undefined, message: 'contains a private key; give only the CA certificate (and rotate that key: it has been exposed)' });
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

const nonEmpty = z.string().trim().min(1, 'must not be empty').max(256, 'must be at most 256 characters');

// ---------------------------------------------------------------------------------------------
// The variants

const common = {
  syncInterval,
  /** Trust for a device manager on a private CA (PEM, a bundle is fine). */
  caPem: caPem.optional(),
};

const GUID_OR_DOMAIN = /^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9][A-Za-z0-9.-]{0,252})$/;

const intuneSpec = z.strictObject({
  type: z.literal('intune'),
  ...common,
  /** The Entra ID tenant (a GUID or a verified domain such as contoso.onmicrosoft.com). */
  tenantId: z.string().regex(GUID_OR_DOMAIN, 'must be a tenant GUID or domain'),
  clientId: nonEmpty,
  clientSecret: secretRef,
  graphUrl: baseUrl('https://graph.microsoft.com'),
  loginUrl: baseUrl('https://login.microsoftonline.com'),
});

const jamfSpec = z.strictObject({
  type: z.literal('jamf'),
  ...common,
  /** The Jamf Pro server, such as https://example.jamfcloud.com. */
  url: baseUrl(),
  clientId: nonEmpty,
  clientSecret: secretRef,
  /**
   * A (smart) computer group whose members count as compliant. Without it Jamf says only whether a
   * computer is managed, and compliance stays unknown.
   */
  compliantGroup: nonEmpty.optional(),
});

const crowdstrikeSpec = z.strictObject({
  type: z.literal('crowdstrike'),
  ...common,
  /** The region's API base: https://api.crowdstrike.com, https://api.us-2.crowdstrike.com, https://api.eu-1.crowdstrike.com, … */
  url: baseUrl('https://api.crowdstrike.com'),
  clientId: nonEmpty,
  clientSecret: secretRef,
  /** The Zero Trust Assessment overall score (1–100) at or above which a device counts as compliant; without it compliance stays unknown. */
  minimumScore: z.number().int('must be a whole number').min(1, 'must be between 1 and 100').max(100, 'must be between 1 and 100').optional(),
});

/** `$.a.b[0].c` (the `$.` is optional): names and indexes only. */
export const JSON_PATH_PATTERN = /^(?:\$\.?)?[A-Za-z_@$][\w@$-]*(?:\.[A-Za-z_@$][\w@$-]*|\[\d{1,4}\])*$/;

const jsonPath = z.string().regex(JSON_PATH_PATTERN, 'must be a path such as $.device.compliant (names and [index] only)');

const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
/** Header names whose value is a credential: they take only secret references. */
const SECRET_HEADER = /^(?:authorization|proxy-authorization|cookie)$|key|token|secret|password|auth/i;

const headerValue = z.custom<unknown>().transform((value, ctx): SecretRef | { value: string } => {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 1 && 'value' in value) {
    const literal = (value).value;
    if (typeof literal === 'string' && literal.length <= 1024 && !/[\r\n\0]/.test(literal)) return { value: literal };
    ctx.issues.push({ code: 'custom', input: undefined, path: ['value'], message: 'must be a header value on one line (at most 1024 characters)' });
    return z.NEVER;
  }
  const parsed = secretRef.safeParse(value);
  if (parsed.success) return parsed.data;
  ctx.issues.push({ code: 'custom', input: undefined, message: 'must be {value: text} for a plain value, or {env: NAME} or {file: /path} for a secret' });
  return z.NEVER;
});

const httpSpec = z
  .strictObject({
    type: z.literal('http'),
    ...common,
    /** Where one device is looked up; `{serial}` is replaced by the URL-encoded serial number. */
    url: z.string().superRefine((value, ctx) => {
      if (!value.includes('{serial}')) {
        ctx.addIssue({ code: 'custom', input: value, message: 'must contain {serial}, where the serial number goes' });
        return;
      }
      const problem = serviceUrlProblem(value.replaceAll('{serial}', 'SERIAL'), true, true);
      if (problem !== undefined) {
        ctx.addIssue({ code: 'custom', input: value, message: problem });
        return;
      }
      // A credential in the query string would sit in the spec in clear: it belongs in a header, by reference.
      for (const name of new URL(value.replaceAll('{serial}', 'SERIAL')).searchParams.keys()) {
        if (SECRET_HEADER.test(name) || /^(?:sig|signature|code|pw|pass)$/i.test(name)) {
          ctx.addIssue({ code: 'custom', input: undefined, message: `must not carry a credential in the query (${name}); send it in a header given as {env: NAME} or {file: /path}` });
        }
      }
    }),
    headers: z
      .record(z.string().regex(HEADER_NAME, 'must be an HTTP header name'), headerValue)
      .default({})
      .superRefine((headers, ctx) => {
        for (const [name, value] of Object.entries(headers)) {
          if ('value' in value && SECRET_HEADER.test(name)) {
            ctx.addIssue({ code: 'custom', input: undefined, path: [name], message: `${name} carries a credential: give it as {env: NAME} or {file: /path}, never as a value` });
          }
        }
      }),
    jsonPaths: z.strictObject({
      /** true/false, or a string or number compared with compliantValues. */
      compliant: jsonPath,
      /** Whether the device is managed; without it, a device that is found counts as managed. */
      mdmPresent: jsonPath.optional(),
      /** A number from 0 to 100. */
      score: jsonPath.optional(),
      os: jsonPath.optional(),
      lastSeen: jsonPath.optional(),
    }),
    /** Values at `jsonPaths.compliant` that mean compliant (compared as strings); true always does. */
    compliantValues: z.array(nonEmpty).default(['compliant']),
  });

export const deviceManagerSpec = z.discriminatedUnion('type', [intuneSpec, jamfSpec, crowdstrikeSpec, httpSpec], {
  error: (issue) => (issue.code === 'invalid_union' ? 'must be one of intune, jamf, crowdstrike, http' : undefined),
});

export const DEVICE_MANAGER_TYPES = ['intune', 'jamf', 'crowdstrike', 'http'] as const;
export type DeviceManagerType = (typeof DEVICE_MANAGER_TYPES)[number];

export type DeviceManagerSpec = z.output<typeof deviceManagerSpec>;
export type IntuneManagerSpec = z.output<typeof intuneSpec>;
export type JamfManagerSpec = z.output<typeof jamfSpec>;
export type CrowdStrikeManagerSpec = z.output<typeof crowdstrikeSpec>;
export type HttpManagerSpec = z.output<typeof httpSpec>;
