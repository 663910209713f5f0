/**
 * `kind: IdentityProvider`: an organisation's OpenID Connect IdP that people log in through
 * (src/control-plane/identity/upstream.ts). Its own file so the registry in schemas.ts takes one line.
 *
 * - `issuer` is compared byte for byte with the IdP's discovery document and ID tokens, so it is kept
 *   exactly as written: an https URL (http only for a loopback host, for development), no user
 *   info, query or fragment.
 * - The client secret is never written into a spec (specs are read back, exported, diffed and kept
 *   in git): `{env: NAME}` or `{file: /path}` names where the control plane reads it. A literal
 *   string is refused with a message that says so.
 * - `caPem`: the CA certificate(s) to trust for an IdP on a private CA, instead of the system roots.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';

export const DEFAULT_IDP_SCOPES: readonly string[] = ['openid', 'email', 'profile', 'groups'];
export const DEFAULT_IDP_CLAIMS = { email: 'email', groups: 'groups', name: 'preferred_username' } as const;

/** Where a secret is read: an environment variable or a file of the control plane. */
export type SecretReference = { env: string } | { file: string };

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const SECRET_HELP = 'give {env: VARIABLE} (an environment variable of the control plane) or {file: /path/to/secret} (a file it reads)';

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1';
  return false;
}

/** An issuer URL's problem, or undefined when it is usable. Exported for tests and the upstream module. */
export function issuerProblem(value: string): string | undefined {
  if (value !== value.trim() || value === '') return 'must be the IdP\'s issuer URL, such as https://idp.example.com, without spaces';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be a URL such as https://idp.example.com';
  }
  if (url.protocol === 'http:') {
    if (!isLoopbackHost(url.hostname)) return 'must be an https URL (http is allowed only for a loopback host such as 127.0.0.1)';
  } else if (url.protocol !== 'https:') {
    return 'must be an https URL';
  }
  if (url.username !== '' || url.password !== '') return 'must not contain a user name or password';
  if (url.search !== '' || value.includes('?')) return 'must not contain a query (?…)';
  if (url.hash !== '' || value.includes('#')) return 'must not contain a fragment (#…)';
  return undefined;
}

const secretReference = z.unknown().transform((value, ctx): SecretReference => {
  const fail = (message: string, path: PropertyKey[] = []): never => {
    ctx.issues.push({ code: 'custom', input: '[redacted]', path, message });
    return z.NEVER;
  };
  if (typeof value === 'string') return fail(`must not be the secret itself (a spec is read back and exported; the secret would leak): ${SECRET_HELP}`);
  if (!isRecord(value)) return fail(`must be a mapping: ${SECRET_HELP}`);
  const keys = Object.keys(value);
  for (const key of keys) if (key !== 'env' && key !== 'file') ctx.issues.push({ code: 'custom', input: undefined, path: [key], message: 'unknown field' });
  const hasEnv = Object.hasOwn(value, 'env');
  const hasFile = Object.hasOwn(value, 'file');
  if (hasEnv && hasFile) return fail(`give either env or file, not both: ${SECRET_HELP}`);
  if (hasEnv) {
    const env = value.env;
    if (typeof env !== 'string' || !ENV_NAME.test(env)) return fail('must be an environment variable name (letters, digits and _; not starting with a digit)', ['env']);
    if (keys.length > 1) return z.NEVER;
    return { env };
  }
  if (hasFile) {
    const file = value.file;
    if (typeof file !== 'string' || !file.startsWith('/') || file.includes('\0') || file.length > 4096) return fail('must be an absolute file path', ['file']);
    if (keys.length > 1) return z.NEVER;
    return { file };
  }
  return fail(`is missing where the secret is: ${SECRET_HELP}`);
});

/** One or more PEM certificates; each must parse, and no private key may ride along. */
const caPem = z.string().superRefine((value, ctx) => {
  if (value.includes('PRIVATE KEY')) {
    ctx.addIssue({ code: 'custom', input: '[redacted]', message: 'contains a private key; give only the CA certificate (and rotate that key: it has been exposed)' });
    return;
  }
  const blocks = value.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    ctx.addIssue({ code: 'custom', input: value, message: 'must be a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----) of the CA that issued the IdP\'s certificate' });
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

/** A claim name: what the IdP's ID token (or userinfo) calls the value. */
const claimName = z.string().regex(/^[A-Za-z0-9_:./-]{1,128}$/, 'must be a claim name (letters, digits, _ : . / -)');

/** RFC 6749 scope-token characters. */
const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/, 'must be a scope name (no spaces or quotes)');

export const identityProviderSpec = z.strictObject({
  /** What the login page's button says; the object's name when absent. */
  displayName: z.string().trim().min(1, 'must not be empty').max(128, 'must be at most 128 characters').optional(),
  /** Exactly as the IdP's discovery document says it. */
  issuer: z.string().superRefine((value, ctx) => {
    const message = issuerProblem(value);
    if (message !== undefined) ctx.addIssue({ code: 'custom', input: value, message });
  }),
  clientId: z.string().trim().min(1, 'must not be empty').max(256, 'must be at most 256 characters'),
  /** Omitted for a public client (PKCE only). */
  clientSecret: secretReference.optional(),
  scopes: z
    .array(scopeToken)
    .default([...DEFAULT_IDP_SCOPES])
    .superRefine((value, ctx) => {
      if (!value.includes('openid')) ctx.addIssue({ code: 'custom', input: value, message: 'must include openid (the login needs an ID token)' });
    }),
  /** Which claims carry the user's email, groups and (Causeway user) name. */
  claims: z
    .strictObject({
      email: claimName.default(DEFAULT_IDP_CLAIMS.email),
      groups: claimName.default(DEFAULT_IDP_CLAIMS.groups),
      name: claimName.default(DEFAULT_IDP_CLAIMS.name),
    })
    .prefault({}),
  caPem: caPem.optional(),
});

export type IdentityProviderSpecBody = z.output<typeof identityProviderSpec>;
