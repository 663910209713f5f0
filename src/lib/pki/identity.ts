/**
 * Identity URIs: causeway://user/<id>, causeway://device/<id>, causeway://<type>/<name> for the
 * access-tier, connector, kube-proxy and control-plane types. Built at issue time, parsed strictly from
 * Node's `subjectAltName` string at verification time.
 */
import type { CertIdentity, CertType } from './types.ts';

/** Ids and names: no '/', '%', whitespace or anything else that could change how a URI or a log line reads. */
export const IDENTITY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

export function isValidIdentityId(value: unknown): value is string {
  return typeof value === 'string' && IDENTITY_ID_RE.test(value);
}

type UriKind = 'user' | 'device' | 'access-tier' | 'connector' | 'kube-proxy' | 'control-plane';
type NameKind = Exclude<UriKind, 'user' | 'device'>;

const URI_RE = /^causeway:\/\/(user|device|access-tier|connector|kube-proxy|control-plane)\/([A-Za-z0-9][A-Za-z0-9._@-]{0,127})$/;

export function identityUri(kind: UriKind, id: string): string {
  return `causeway://${kind}/${id}`;
}

/** The identity URIs a certificate of this type carries; throws a plain Error when the identity does not fit the type. */
export function identityUrisFor(type: CertType, identity: CertIdentity): string[] {
  const problem = identityProblem(type, identity);
  if (problem !== undefined) throw new Error(problem);
  switch (type) {
    case 'trust':
      return [identityUri('user', identity.user as string), identityUri('device', identity.device as string)];
    case 'device':
      return [identityUri('device', identity.device as string)];
    default:
      return [identityUri(type, identity.name as string)];
  }
}

/** Why this identity cannot be carried by a certificate of this type, or undefined when it can. */
export function identityProblem(type: CertType, identity: CertIdentity, nameKind?: CertType): string | undefined {
  const { user, device, name } = identity;
  for (const [field, value] of [['user', user], ['device', device], ['name', name]] as const) {
    if (value !== undefined && !isValidIdentityId(value)) return `${field} "${String(value).slice(0, 64)}" is not a valid id (letters, digits, '.', '_', '@', '-'; at most 128)`;
  }
  switch (type) {
    case 'trust':
      if (user === undefined || device === undefined || name !== undefined) return 'a trust certificate names exactly one user and one device';
      return undefined;
    case 'device':
      if (device === undefined || user !== undefined || name !== undefined) return 'a device certificate names exactly one device';
      return undefined;
    default:
      if (name === undefined || user !== undefined || device !== undefined) return `a ${type} certificate names exactly one ${type}`;
      if (nameKind !== undefined && nameKind !== type) return `a ${type} certificate carries a ${nameKind} name`;
      return undefined;
  }
}

export interface ParsedIdentity {
  identity: CertIdentity;
  /** Which kind of name URI carried `identity.name`, when there is one. */
  nameKind?: NameKind;
}

/**
 * Splits Node's subjectAltName string ("DNS:a, URI:causeway://user/x, IP Address:1.2.3.4") into
 * [label, value] pairs. Node JSON-quotes values containing ',', quotes, backslashes or control
 * characters (CVE-2021-44532), so a quoted value is decoded as a JSON string and never split.
 * Returns undefined when the string does not follow that format.
 */
export function splitSubjectAltName(san: string): Array<[label: string, value: string, quoted: boolean]> | undefined {
  const out: Array<[string, string, boolean]> = [];
  let pos = 0;
  while (pos < san.length) {
    const colon = san.indexOf(':', pos);
    if (colon <= pos) return undefined;
    const label = san.slice(pos, colon);
    if (!/^[A-Za-z][A-Za-z ]*$/.test(label)) return undefined;
    pos = colon + 1;
    let value: string;
    let quoted = false;
    if (san[pos] === '"') {
      let end = pos + 1;
      while (end < san.length && san[end] !== '"') end += san[end] === '\\' ? 2 : 1;
      if (end >= san.length) return undefined;
      try {
        const decoded: unknown = JSON.parse(san.slice(pos, end + 1));
        if (typeof decoded !== 'string') return undefined;
        value = decoded;
      } catch {
        return undefined;
      }
      quoted = true;
      pos = end + 1;
    } else {
      const comma = san.indexOf(',', pos);
      const end = comma === -1 ? san.length : comma;
      value = san.slice(pos, end);
      pos = end;
    }
    out.push([label, value, quoted]);
    if (pos < san.length) {
      if (!san.startsWith(', ', pos)) return undefined;
      pos += 2;
      if (pos >= san.length) return undefined;
    }
  }
  return out;
}

/** Strict parse with the kind of name URI; see parseIdentityUris. */
export function parseIdentitySans(subjectAltName: string | undefined): ParsedIdentity | { error: string } {
  if (subjectAltName === undefined || subjectAltName === '') return { error: 'the certificate has no subject alternative names' };
  const entries = splitSubjectAltName(subjectAltName);
  if (entries === undefined) return { error: 'the subject alternative names are not in a recognised form' };
  const identity: CertIdentity = {};
  let nameKind: NameKind | undefined;
  for (const [label, value, quoted] of entries) {
    // Anything that mentions the causeway: scheme must be exactly one of our URIs; DNS names such as
    // causeway.example.com cannot contain ':' and are left alone.
    if (!value.toLowerCase().includes('causeway:')) continue;
    if (label !== 'URI' || quoted) return { error: 'a causeway identity is not a plain URI name' };
    const m = URI_RE.exec(value);
    if (m === null) return { error: 'a causeway identity URI is malformed' };
    const kind = m[1] as UriKind;
    const id = m[2];
    if (kind === 'user' || kind === 'device') {
      if (identity[kind] !== undefined) return { error: `more than one ${kind} identity` };
      identity[kind] = id;
    } else {
      if (identity.name !== undefined) return { error: 'more than one name identity' };
      identity.name = id;
      nameKind = kind;
    }
  }
  if (identity.user === undefined && identity.device === undefined && identity.name === undefined) return { error: 'the certificate carries no causeway identity' };
  return nameKind === undefined ? { identity } : { identity, nameKind };
}

/**
 * The identity named by a certificate's URI SANs, given Node's `X509Certificate.subjectAltName`.
 * Strict: ids must match IDENTITY_ID_RE, at most one user, one device and one name URI, and any
 * other mention of causeway (another kind, a quoted value, another SAN type) is an error. Never throws.
 */
export function parseIdentityUris(subjectAltName: string | undefined): CertIdentity | { error: string } {
  const parsed = parseIdentitySans(subjectAltName);
  return 'error' in parsed ? parsed : parsed.identity;
}
