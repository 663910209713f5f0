/**
 * Canonicalising and matching connection targets (DESIGN §8, THREATS LP-03, AT-02, AT-05).
 *
 * Every authority a client sends (a CONNECT target, an SNI name, a spec domain) goes through here
 * before anything compares it with a rule, and the canonical form is what callers dial, so the
 * address checked is the address used. The rules, chosen to fail closed:
 *
 * - DNS names are ASCII only (punycode `xn--` labels as they are, raw non-ASCII refused: no IDNA
 *   mapping, and nothing like U+212A KELVIN SIGN is lower-cased into `k`), lower-cased, one trailing
 *   dot removed. Labels are 1–63 characters of letters, digits, hyphen and underscore, never starting
 *   or ending with a hyphen; the whole name is at most 253 characters. Underscore is accepted because
 *   real internal names carry it (Docker Compose services, `_`-prefixed service records) and matching
 *   is exact, so it cannot be confused with anything else.
 * - IPv4 only as strict dotted decimal: four parts, 0–255, no leading zeros. Anything a resolver or
 *   `inet_aton` could read as an address instead (`0x7f.1`, `2130706433`, `017700000001`, `127.1`,
 *   `0177.0.0.1`, `127.0.0.1.`, any name whose last label is all digits or `0x…`) is `ambiguous-ip`,
 *   never a DNS name.
 * - IPv6 only in brackets, without a zone id, in the compressed lower-case form of RFC 5952.
 *   Addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated
 *   `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, IPv4-compatible `::a.b.c.d`) become that IPv4
 *   address (kind `ipv4`), so they match exactly what the IPv4 address would match. The NAT64
 *   local-use prefix `64:ff9b:1::/48`, whose IPv4 part depends on the translator, is `ambiguous-ip`.
 * - Ports are decimal 1–65535 without sign or leading zeros, and always required.
 */
import { BlockList, isIPv6 } from 'node:net';
import { UserError } from '../errors.ts';

export interface Target {
  /** Canonical host: a lower-case DNS name, a dotted-decimal IPv4 address, or a compressed IPv6 address without brackets. */
  host: string;
  port: number;
  kind: 'dns' | 'ipv4' | 'ipv6';
}

export type AuthorityErrorCode = 'bad-authority' | 'ambiguous-ip' | 'bad-port';

export type ParseAuthorityResult =
  | { ok: true; target: Target }
  | { ok: false; code: AuthorityErrorCode; message: string };

/** The longest authority accepted: a 253-character name, a colon and a port, with room to spare. */
const MAX_AUTHORITY_LENGTH = 300;

/** Parses `host:port` or `[v6]:port` into its canonical target. Never throws. */
export function parseAuthority(authority: string): ParseAuthorityResult {
  if (typeof authority !== 'string' || authority.length === 0) return fail('bad-authority', 'the target is empty; write host:port');
  if (authority.length > MAX_AUTHORITY_LENGTH) return fail('bad-authority', `the target is longer than ${MAX_AUTHORITY_LENGTH} characters`);
  for (let i = 0; i < authority.length; i++) {
    const c = authority.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return fail('bad-authority', 'the target contains a space, a control character or a non-ASCII character');
    if (c === 0x40 /* @ */) return fail('bad-authority', 'the target contains userinfo (@); write host:port only');
    if (c === 0x25 /* % */) return fail('bad-authority', 'the target contains % (percent-encoding or an IPv6 zone id); write host:port only');
    if (c === 0x2f /* / */ || c === 0x5c /* \ */ || c === 0x3f /* ? */ || c === 0x23 /* # */) {
      return fail('bad-authority', 'the target is not host:port (it contains a path, query or fragment character)');
    }
  }

  if (authority.charCodeAt(0) === 0x5b /* [ */) {
    const close = authority.indexOf(']');
    if (close === -1) return fail('bad-authority', 'the IPv6 address has no closing bracket');
    const rest = authority.slice(close + 1);
    if (rest.length === 0) return fail('bad-port', 'the target has no port; write [address]:port');
    if (rest.charCodeAt(0) !== 0x3a /* : */) return fail('bad-authority', 'only :port may follow a bracketed IPv6 address');
    const host = canonicalIPv6Host(authority.slice(1, close));
    if (typeof host !== 'object') return fail(host === AMBIGUOUS ? 'ambiguous-ip' : 'bad-authority', host === AMBIGUOUS ? NAT64_LOCAL_MESSAGE : 'the bracketed part is not a valid IPv6 address');
    const port = parsePort(rest.slice(1));
    if (port === undefined) return fail('bad-port', PORT_MESSAGE);
    return { ok: true, target: { host: host.host, port, kind: host.kind } };
  }

  const colon = authority.lastIndexOf(':');
  if (colon === -1) return fail('bad-port', 'the target has no port; write host:port');
  const rawHost = authority.slice(0, colon);
  let host: string;
  let kind: Target['kind'];
  if (isStrictIPv4(rawHost)) {
    host = rawHost;
    kind = 'ipv4';
  } else {
    const name = classifyName(rawHost);
    if (name === AMBIGUOUS) return fail('ambiguous-ip', AMBIGUOUS_MESSAGE);
    if (name === INVALID) return fail('bad-authority', rawHost.includes(':') ? 'an IPv6 address must be written in brackets: [address]:port' : HOSTNAME_MESSAGE);
    host = name;
    kind = 'dns';
  }
  const port = parsePort(authority.slice(colon + 1));
  if (port === undefined) return fail('bad-port', PORT_MESSAGE);
  return { ok: true, target: { host, port, kind } };
}

/**
 * The canonical form of a DNS name for SNI and spec domains: lower case, one trailing dot removed.
 * IP literals in any form, and anything that is not a valid name, give `undefined`. Never throws.
 */
export function canonicalHostname(name: string): string | undefined {
  if (typeof name !== 'string' || name.length === 0 || name.length > 254) return undefined;
  const result = classifyName(name);
  return result === AMBIGUOUS || result === INVALID ? undefined : result;
}

/** `host:port`, or `[v6]:port`. `parseAuthority(formatAuthority(t))` gives `t` back for a canonical target. */
export function formatAuthority(t: Target): string {
  return t.kind === 'ipv6' ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

// ---------------------------------------------------------------------------------------------
// Patterns (a service's allowPatterns) and allow-lists (a connector's own limits)

export interface TargetPattern {
  /** Exact names, or `*.example.com`: any name ending in `.example.com` with at least one more label (never `example.com` itself). */
  hostnames?: string[];
  /** IPv4 or IPv6 networks (`10.0.0.0/8`, `fd00::/8`, or a single address); they apply to IP targets only. */
  cidrs?: string[];
  /** Ports (`5432`) and inclusive ranges (`"8000-8099"`); an empty list matches nothing. */
  ports: Array<number | string>;
}

/**
 * Every host rule of a pattern list (or allow-list) in one index, each entry tagged with the rules
 * it belongs to, so a match costs a few map lookups whatever the number of patterns.
 */
interface HostIndex {
  /** Exact names → rule numbers. */
  readonly exact: ReadonlyMap<string, readonly number[]>;
  /** Suffixes with their leading dot (`.example.com` for `*.example.com`) → rule numbers. */
  readonly suffixes: ReadonlyMap<string, readonly number[]>;
  /** IPv4 networks as triples: [network, mask, rule, …], unsigned 32-bit. */
  readonly v4: readonly number[];
  /** IPv6 networks, one BlockList per rule (IPv6 only: a BlockList would let ::/0 match IPv4 addresses). */
  readonly v6: ReadonlyArray<{ readonly list: BlockList; readonly rule: number }>;
}

/** Precompiled patterns; opaque to callers. */
export interface CompiledPatterns {
  readonly index: HostIndex;
  /** Per rule: inclusive port ranges as pairs [lo0, hi0, lo1, hi1, …]. */
  readonly ports: readonly Uint16Array[];
}

/** Precompiled connector allow-list; opaque to callers. */
export interface CompiledAllowList {
  readonly index: HostIndex;
}

/** Compiles a service's allow patterns once, so matching does no parsing. Throws a UserError naming the bad entry. */
export function compilePatterns(patterns: TargetPattern[]): CompiledPatterns {
  const builder = new HostIndexBuilder();
  const ports = patterns.map((pattern, rule): Uint16Array => {
    const where = `allow pattern ${rule + 1}`;
    for (const entry of pattern.hostnames ?? []) {
      const parsed = parseHostnamePattern(entry);
      if (typeof parsed === 'string') throw new UserError('bad-pattern', `${where}: ${parsed}`);
      builder.addName(parsed, rule);
    }
    for (const entry of pattern.cidrs ?? []) {
      const parsed = parseCidr(entry);
      if (typeof parsed === 'string') throw new UserError('bad-pattern', `${where}: ${parsed}`);
      builder.addCidr(parsed, rule);
    }
    const ranges: number[] = [];
    for (const entry of pattern.ports) {
      const parsed = parsePortRange(entry);
      if (typeof parsed === 'string') throw new UserError('bad-pattern', `${where}: ${parsed}`);
      ranges.push(parsed[0], parsed[1]);
    }
    return Uint16Array.from(ranges);
  });
  return { index: builder.build(), ports };
}

/** True when some pattern allows both the target's host and its port. */
export function matchesPatterns(compiled: CompiledPatterns, t: Target): boolean {
  return indexMatches(compiled.index, t, compiled.ports);
}

/**
 * Compiles a connector's allow-list. Domains starting with `.` (or written `*.example.com`) match
 * names below that domain on a label boundary, never the bare domain itself (list it as well when
 * it should be reachable); other domains match exactly. IP targets are permitted only by `cidrs`,
 * DNS targets only by `domains`. Throws a UserError naming the bad entry.
 */
export function compileAllowList(list: { cidrs: string[]; domains: string[] }): CompiledAllowList {
  const builder = new HostIndexBuilder();
  for (const entry of list.domains) {
    const parsed = parseAllowedDomain(entry);
    if (typeof parsed === 'string') throw new UserError('bad-allow-list', `allowed domain: ${parsed}`);
    builder.addName(parsed, 0);
  }
  for (const entry of list.cidrs) {
    const parsed = parseCidr(entry);
    if (typeof parsed === 'string') throw new UserError('bad-allow-list', `allowed CIDR: ${parsed}`);
    builder.addCidr(parsed, 0);
  }
  return { index: builder.build() };
}

/** True when the connector's allow-list permits the target's host (allow-lists are port-agnostic). */
export function allowListPermits(list: CompiledAllowList, t: Target): boolean {
  return indexMatches(list.index, t, undefined);
}

/** Why a `hostnames` pattern entry is invalid, or undefined when it is valid (for spec validation). */
export function hostnamePatternProblem(value: string): string | undefined {
  const parsed = parseHostnamePattern(value);
  return typeof parsed === 'string' ? parsed : undefined;
}

/** Why an allowed-domain entry (`.suffix` or an exact name) is invalid, or undefined. */
export function allowedDomainProblem(value: string): string | undefined {
  const parsed = parseAllowedDomain(value);
  return typeof parsed === 'string' ? parsed : undefined;
}

/** Why a CIDR entry is invalid, or undefined. */
export function cidrProblem(value: string): string | undefined {
  const parsed = parseCidr(value);
  return typeof parsed === 'string' ? parsed : undefined;
}

/** Why a port entry (a number or `"a-b"`) is invalid, or undefined. */
export function portRangeProblem(value: number | string): string | undefined {
  const parsed = parsePortRange(value);
  return typeof parsed === 'string' ? parsed : undefined;
}

// ---------------------------------------------------------------------------------------------
// Internals

const AMBIGUOUS = 1;
const INVALID = 2;
const AMBIGUOUS_MESSAGE = 'the host could be read as an IP address in a non-standard form; write IPv4 as four decimal parts (10.0.0.1) or use a DNS name';
const NAT64_LOCAL_MESSAGE = 'the address is in the NAT64 local-use prefix 64:ff9b:1::/48, whose IPv4 part cannot be known; use the IPv4 address';
const HOSTNAME_MESSAGE = 'the host is not a valid DNS name (ASCII letters, digits, hyphens and underscores in dot-separated labels of 1 to 63 characters, 253 in all)';
const PORT_MESSAGE = 'the port must be a decimal number from 1 to 65535';

function fail(code: AuthorityErrorCode, message: string): ParseAuthorityResult {
  return { ok: false, code, message };
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHexDigit(c: number): boolean {
  return isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}

/** Decimal 1–65535 without sign or leading zero. */
function parsePort(s: string): number | undefined {
  if (s.length === 0 || s.length > 5 || s.charCodeAt(0) === 0x30) return undefined;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!isDigit(c)) return undefined;
    n = n * 10 + (c - 0x30);
  }
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** Four decimal parts 0–255 without leading zeros, nothing else. */
function isStrictIPv4(s: string): boolean {
  return ipv4ToNumber(s) !== undefined;
}

/** The address as an unsigned 32-bit number, or undefined unless `s` is strict dotted decimal. */
function ipv4ToNumber(s: string): number | undefined {
  if (s.length < 7 || s.length > 15) return undefined;
  let value = 0;
  let parts = 0;
  let part = 0;
  let digits = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i === s.length ? 0x2e : s.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (digits === 0) return undefined;
      value = value * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (isDigit(c)) {
      if (digits > 0 && part === 0) return undefined; // leading zero
      part = part * 10 + (c - 0x30);
      digits++;
      if (part > 255) return undefined;
    } else {
      return undefined;
    }
  }
  return parts === 4 ? value : undefined;
}

/**
 * Validates and canonicalises a DNS name: the canonical name, or AMBIGUOUS when a resolver could
 * read it as an IP address, or INVALID. Checks ASCII before lower-casing (U+212A lower-cases to `k`).
 */
function classifyName(raw: string): string | typeof AMBIGUOUS | typeof INVALID {
  let end = raw.length;
  if (end > 0 && raw.charCodeAt(end - 1) === 0x2e) end--; // one trailing dot
  if (end === 0 || end > 253) return INVALID;
  let labelStart = 0;
  let upper = false;
  for (let i = 0; i <= end; i++) {
    const c = i === end ? 0x2e : raw.charCodeAt(i);
    if (c === 0x2e) {
      const len = i - labelStart;
      if (len === 0 || len > 63) return INVALID;
      if (raw.charCodeAt(labelStart) === 0x2d || raw.charCodeAt(i - 1) === 0x2d) return INVALID; // leading or trailing hyphen
      labelStart = i + 1;
    } else if (c >= 0x41 && c <= 0x5a) {
      upper = true;
    } else if (!((c >= 0x61 && c <= 0x7a) || isDigit(c) || c === 0x2d || c === 0x5f)) {
      return INVALID;
    }
  }
  const name = end === raw.length ? raw : raw.slice(0, end);
  const lower = upper ? name.toLowerCase() : name;
  // The last label decides whether resolvers (WHATWG URL, inet_aton) treat the whole as an address.
  const lastDot = lower.lastIndexOf('.');
  if (looksNumeric(lower, lastDot + 1)) return AMBIGUOUS;
  return lower;
}

/** All decimal digits, or `0x` followed by hex digits (possibly none), from `start` to the end. */
function looksNumeric(s: string, start: number): boolean {
  if (s.length - start >= 2 && s.charCodeAt(start) === 0x30 && (s.charCodeAt(start + 1) | 0x20) === 0x78) {
    for (let i = start + 2; i < s.length; i++) if (!isHexDigit(s.charCodeAt(i))) return false;
    return true;
  }
  for (let i = start; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return false;
  return true;
}

/** Eight 16-bit words of a valid IPv6 address (validated by the caller with net.isIPv6). */
function ipv6Words(s: string): number[] {
  const words: number[] = [];
  const double = s.indexOf('::');
  const head = double === -1 ? s : s.slice(0, double);
  const tail = double === -1 ? '' : s.slice(double + 2);
  const headWords = groupsToWords(head);
  const tailWords = groupsToWords(tail);
  words.push(...headWords);
  for (let i = headWords.length + tailWords.length; i < 8; i++) words.push(0);
  words.push(...tailWords);
  return words;
}

function groupsToWords(part: string): number[] {
  if (part.length === 0) return [];
  const words: number[] = [];
  for (const group of part.split(':')) {
    if (group.includes('.')) {
      const v4 = ipv4ToNumber(group) ?? 0;
      words.push(v4 >>> 16, v4 & 0xffff);
    } else {
      words.push(parseInt(group, 16));
    }
  }
  return words;
}

/** The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one. */
function embeddedIPv4(w: readonly number[]): string | undefined {
  const lowZero = w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0;
  const mapped = lowZero && w[4] === 0 && w[5] === 0xffff; // ::ffff:a.b.c.d
  const translated = lowZero && w[4] === 0xffff && w[5] === 0; // ::ffff:0:a.b.c.d (RFC 2765)
  const nat64 = w[0] === 0x64 && w[1] === 0xff9b && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0; // 64:ff9b::/96
  const compatible = lowZero && w[4] === 0 && w[5] === 0 && !(w[6] === 0 && w[7] <= 1); // ::a.b.c.d, but not :: or ::1
  if (!(mapped || translated || nat64 || compatible)) return undefined;
  const hi = w[6];
  const lo = w[7];
  return `${hi >>> 8}.${hi & 0xff}.${lo >>> 8}.${lo & 0xff}`;
}

function isNat64LocalUse(w: readonly number[]): boolean {
  return w[0] === 0x64 && w[1] === 0xff9b && w[2] === 1;
}

/** RFC 5952: lower-case hex, no leading zeros, the longest run (≥ 2) of zero words as `::`, the first on a tie. */
function compressIPv6(w: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => w.slice(from, to).map((x) => x.toString(16)).join(':');
  if (bestStart === -1) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

function canonicalIPv6Host(inner: string): { host: string; kind: 'ipv4' | 'ipv6' } | typeof AMBIGUOUS | typeof INVALID {
  if (inner.length === 0 || inner.length > 45 || !isIPv6(inner)) return INVALID;
  const words = ipv6Words(inner);
  const v4 = embeddedIPv4(words);
  if (v4 !== undefined) return { host: v4, kind: 'ipv4' };
  if (isNat64LocalUse(words)) return AMBIGUOUS;
  return { host: compressIPv6(words), kind: 'ipv6' };
}

/** Whether the index holds the target's host for some rule whose ports (when given) hold its port. */
function indexMatches(index: HostIndex, t: Target, ports: readonly Uint16Array[] | undefined): boolean {
  switch (t.kind) {
    case 'dns': {
      if (anyRulePort(index.exact.get(t.host), ports, t.port)) return true;
      if (index.suffixes.size === 0) return false;
      // Every suffix that starts at a label boundary: `a.b.example.com` → `.b.example.com`, `.example.com`, `.com`.
      for (let dot = t.host.indexOf('.'); dot !== -1; dot = t.host.indexOf('.', dot + 1)) {
        if (anyRulePort(index.suffixes.get(t.host.slice(dot)), ports, t.port)) return true;
      }
      return false;
    }
    case 'ipv4': {
      const v4 = index.v4;
      if (v4.length === 0) return false;
      const address = ipv4ToNumber(t.host);
      if (address === undefined) return false;
      for (let i = 0; i < v4.length; i += 3) {
        if ((address & v4[i + 1]) >>> 0 === v4[i] && (ports === undefined || portInRanges(ports[v4[i + 2]], t.port))) return true;
      }
      return false;
    }
    case 'ipv6':
      for (const { list, rule } of index.v6) {
        if ((ports === undefined || portInRanges(ports[rule], t.port)) && list.check(t.host, 'ipv6')) return true;
      }
      return false;
  }
}

function anyRulePort(rules: readonly number[] | undefined, ports: readonly Uint16Array[] | undefined, port: number): boolean {
  if (rules === undefined) return false;
  if (ports === undefined) return true;
  for (const rule of rules) if (portInRanges(ports[rule], port)) return true;
  return false;
}

function portInRanges(ranges: Uint16Array | undefined, port: number): boolean {
  if (ranges === undefined) return false;
  for (let i = 0; i < ranges.length; i += 2) {
    if (port >= ranges[i] && port <= ranges[i + 1]) return true;
  }
  return false;
}

class HostIndexBuilder {
  readonly #exact = new Map<string, number[]>();
  readonly #suffixes = new Map<string, number[]>();
  readonly #v4: number[] = [];
  readonly #v6 = new Map<number, BlockList>();

  addName(parsed: { name: string; suffix: boolean }, rule: number): void {
    const map = parsed.suffix ? this.#suffixes : this.#exact;
    const rules = map.get(parsed.name);
    if (rules === undefined) map.set(parsed.name, [rule]);
    else if (!rules.includes(rule)) rules.push(rule);
  }

  addCidr(cidr: ParsedCidr, rule: number): void {
    if (cidr.family === 'ipv4') {
      const mask = cidr.prefix === 0 ? 0 : (0xffffffff << (32 - cidr.prefix)) >>> 0;
      this.#v4.push(ipv4ToNumber(cidr.network) ?? 0, mask, rule);
      return;
    }
    let list = this.#v6.get(rule);
    if (list === undefined) this.#v6.set(rule, (list = new BlockList()));
    list.addSubnet(cidr.network, cidr.prefix, 'ipv6');
  }

  build(): HostIndex {
    return { exact: this.#exact, suffixes: this.#suffixes, v4: this.#v4, v6: [...this.#v6].map(([rule, list]) => ({ list, rule })) };
  }
}

function parseHostnamePattern(value: unknown): { name: string; suffix: boolean } | string {
  if (typeof value !== 'string') return 'a hostname pattern must be a string';
  if (value.startsWith('*.')) {
    const base = canonicalHostname(value.slice(2));
    if (base === undefined) return `"${printable(value)}" is not a valid wildcard: write *.example.com`;
    return { name: `.${base}`, suffix: true };
  }
  if (value.includes('*')) return `"${printable(value)}": a wildcard is allowed only as the whole first label (*.example.com)`;
  const name = canonicalHostname(value);
  if (name === undefined) return `"${printable(value)}" is not a valid hostname (IP addresses go in cidrs)`;
  return { name, suffix: false };
}

function parseAllowedDomain(value: unknown): { name: string; suffix: boolean } | string {
  if (typeof value !== 'string') return 'an allowed domain must be a string';
  const suffix = value.startsWith('.') || value.startsWith('*.');
  const rest = value.startsWith('.') ? value.slice(1) : value.startsWith('*.') ? value.slice(2) : value;
  const name = canonicalHostname(rest);
  if (name === undefined) return `"${printable(value)}" is not a domain: write .example.com (names below it) or an exact hostname`;
  return suffix ? { name: `.${name}`, suffix } : { name, suffix };
}

interface ParsedCidr {
  family: 'ipv4' | 'ipv6';
  network: string;
  prefix: number;
}

function parseCidr(value: unknown): ParsedCidr | string {
  if (typeof value !== 'string') return 'a CIDR must be a string';
  const shown = printable(value);
  const slash = value.indexOf('/');
  const address = slash === -1 ? value : value.slice(0, slash);
  const prefixText = slash === -1 ? undefined : value.slice(slash + 1);
  const v4 = ipv4ToNumber(address);
  if (v4 !== undefined) {
    const prefix = prefixText === undefined ? 32 : parsePrefix(prefixText, 32);
    if (prefix === undefined) return `"${shown}": the prefix length must be 0 to 32`;
    const hostBits = v4 % 2 ** (32 - prefix);
    if (hostBits !== 0) return `"${shown}" has host bits set; write the network address (${numberToIPv4(v4 - hostBits)}/${prefix})`;
    return { family: 'ipv4', network: address, prefix };
  }
  if (address.includes(':') && !address.includes('%') && isIPv6(address)) {
    const prefix = prefixText === undefined ? 128 : parsePrefix(prefixText, 128);
    if (prefix === undefined) return `"${shown}": the prefix length must be 0 to 128`;
    const words = ipv6Words(address);
    for (let bit = prefix; bit < 128; bit++) {
      if ((words[bit >> 4] >> (15 - (bit & 15))) & 1) return `"${shown}" has host bits set; write the network address`;
    }
    if (prefix >= 96 && embeddedIPv4(words) !== undefined) return `"${shown}" is an IPv4 address written as IPv6; write it as IPv4 (targets in that form are matched as IPv4)`;
    return { family: 'ipv6', network: address, prefix };
  }
  return `"${shown}" is not a CIDR such as 10.0.0.0/8 or fd00::/8 (IPv4 in four decimal parts without leading zeros)`;
}

function parsePrefix(s: string, max: number): number | undefined {
  if (s.length === 0 || s.length > 3 || (s.length > 1 && s.charCodeAt(0) === 0x30)) return undefined;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!isDigit(c)) return undefined;
    n = n * 10 + (c - 0x30);
  }
  return n <= max ? n : undefined;
}

function numberToIPv4(n: number): string {
  return `${Math.floor(n / 0x1000000) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** A number or `a-b`; ports 1–65535 in decimal without leading zeros, a ≤ b. */
function parsePortRange(value: unknown): [number, number] | string {
  if (typeof value === 'number') {
    return Number.isInteger(value) && value >= 1 && value <= 65535 ? [value, value] : `port ${String(value)} must be a whole number from 1 to 65535`;
  }
  if (typeof value !== 'string') return 'a port must be a number or a range such as "8000-8099"';
  const dash = value.indexOf('-');
  const lo = parsePort(dash === -1 ? value : value.slice(0, dash));
  const hi = dash === -1 ? lo : parsePort(value.slice(dash + 1));
  if (lo === undefined || hi === undefined) return `"${printable(value)}" is not a port or a port range such as "8000-8099" (ports 1 to 65535)`;
  if (lo > hi) return `"${printable(value)}": the range must run from the lower port to the higher`;
  return [lo, hi];
}

/** Quotes user input in messages without letting control characters through (CP-09). */
function printable(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return shown.replace(/[^\x20-\x7e]/g, '?');
}
