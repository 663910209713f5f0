/**
 * What the access tier decides with, built once per configuration snapshot and swapped as a whole:
 * the services this tier serves, indexed by SNI, with their targets parsed and patterns compiled so
 * the per-connection work is a few lookups; the connectors of this tier's cluster; revoked serials.
 *
 * Modes (documented for the client proxy, DESIGN §3):
 * - TCP mode: a `tcp` service with `backend.target`. The client sends no CONNECT; after the
 *   handshake and the decision the access tier dials the fixed backend (`dnsOverride` when given,
 *   else `target`) and relays raw bytes.
 * - CHAIN mode: every other service. The client sends one `CONNECT host:port HTTP/1.1`; the target
 *   must belong to the SNI's service: exactly (domain, port) for kubernetes services (dialled at
 *   `dnsOverride` when given, else at the target itself); for `httpConnect` tcp services, any target
 *   matching `allowPatterns` (dialled as given, after canonicalisation).
 */
import type { ConfigSnapshot } from '../lib/config/index.ts';
import { compilePatterns, matchesPatterns, parseAuthority } from '../lib/net/target.ts';
import type { CompiledPatterns, Target } from '../lib/net/target.ts';
import type { AccessTierSpec, ConnectorSpec, ServiceSpec } from '../lib/spec/index.ts';
import { errorMessage } from '../lib/errors.ts';

export type ServiceMode = 'chain' | 'tcp';

export interface ServiceEntry {
  readonly spec: ServiceSpec;
  readonly name: string;
  readonly domain: string;
  readonly port: number;
  readonly mode: ServiceMode;
  /** The connector that carries this service's streams; undefined when the access tier dials itself. */
  readonly connector: string | undefined;
  /** TCP mode: what the client is said to reach (backend.target). */
  readonly fixedTarget: Target | undefined;
  /** Where a fixed destination is really dialled: dnsOverride, else backend.target, else undefined. */
  readonly dialOverride: Target | undefined;
  readonly patterns: CompiledPatterns | undefined;
  /** Set when the service cannot be served as configured; connections to it are denied. */
  readonly problem: string | undefined;
}

export interface AccessTierState {
  readonly version: string;
  readonly snapshot: ConfigSnapshot;
  /** This access tier's own spec; without it the tier serves nothing (fail closed). */
  readonly tier: AccessTierSpec | undefined;
  readonly cluster: string | undefined;
  readonly bySni: ReadonlyMap<string, ServiceEntry>;
  /** Connector specs of this tier's cluster, by name. */
  readonly connectors: ReadonlyMap<string, ConnectorSpec>;
  /** Revoked serials, lower-case hex. */
  readonly revoked: ReadonlySet<string>;
  /** Configuration problems found while building (logged by the caller). */
  readonly problems: readonly string[];
}

export function buildState(snapshot: ConfigSnapshot, tierName: string): AccessTierState {
  const problems: string[] = [];
  const tier = snapshot.accessTiers.find((t) => t.metadata.name === tierName);
  if (tier === undefined) problems.push(`no AccessTier spec is named "${tierName}"; this access tier serves no services and accepts no connectors until one exists`);
  const cluster = tier?.spec.cluster;
  const bySni = new Map<string, ServiceEntry>();
  const connectors = new Map<string, ConnectorSpec>();
  if (cluster !== undefined) {
    for (const c of snapshot.connectors) if (c.spec.cluster === cluster) connectors.set(c.metadata.name, c);
    for (const service of snapshot.services) {
      if (service.spec.cluster !== cluster) continue;
      if (service.spec.accessTier !== '*' && service.spec.accessTier !== tierName) continue;
      const entry = compileService(service);
      const clash = bySni.get(entry.domain);
      if (clash !== undefined) {
        // Exactly one service's policy may apply to an SNI (AT-05): two claimants serve neither.
        const problem = `services "${clash.name}" and "${entry.name}" both claim the domain ${entry.domain}`;
        problems.push(problem);
        bySni.set(entry.domain, { ...clash, problem });
        continue;
      }
      if (entry.problem !== undefined) problems.push(`service "${entry.name}": ${entry.problem}`);
      bySni.set(entry.domain, entry);
    }
  }
  return {
    version: snapshot.version,
    snapshot,
    tier,
    cluster,
    bySni,
    connectors,
    revoked: new Set(snapshot.revokedSerials.map((s) => s.toLowerCase())),
    problems,
  };
}

function compileService(service: ServiceSpec): ServiceEntry {
  const spec = service.spec;
  const backend = spec.backend;
  const base = { spec: service, name: service.metadata.name, domain: spec.domain, port: spec.port, connector: spec.connector };
  let problem: string | undefined;
  const parse = (field: string, value: string | undefined): Target | undefined => {
    if (value === undefined) return undefined;
    const parsed = parseAuthority(value);
    if (!parsed.ok) {
      problem ??= `backend.${field} "${value}" is not host:port: ${parsed.message}`;
      return undefined;
    }
    return parsed.target;
  };
  const fixedTarget = spec.type === 'tcp' ? parse('target', backend.target) : undefined;
  const override = parse('dnsOverride', backend.dnsOverride);
  let patterns: CompiledPatterns | undefined;
  if (spec.type === 'tcp' && backend.httpConnect === true) {
    try {
      patterns = compilePatterns(backend.allowPatterns ?? []);
    } catch (err) {
      problem ??= `backend.allowPatterns: ${errorMessage(err)}`;
    }
  }
  const mode: ServiceMode = spec.type === 'tcp' && backend.target !== undefined ? 'tcp' : 'chain';
  if (spec.type === 'tcp' && mode === 'chain' && patterns === undefined) problem ??= 'a tcp service needs backend.target, or httpConnect with allowPatterns';
  return { ...base, mode, fixedTarget, dialOverride: override ?? fixedTarget, patterns, problem };
}

export type TargetCheck = { ok: true; dial: Target } | { ok: false; reason: 'target-not-in-service'; message: string };

/**
 * Does a CONNECT target belong to this service, and what is dialled for it? The dialled address
 * comes from configuration (dnsOverride) or is the checked target itself; nothing else the client
 * sent can influence it (DESIGN §8).
 */
export function checkTarget(entry: ServiceEntry, target: Target): TargetCheck {
  if (entry.patterns !== undefined) {
    return matchesPatterns(entry.patterns, target) ? { ok: true, dial: target } : { ok: false, reason: 'target-not-in-service', message: `this service's allow patterns do not include ${describe(target)}` };
  }
  if (entry.mode === 'chain' && target.kind === 'dns' && target.host === entry.domain && target.port === entry.port) {
    return { ok: true, dial: entry.dialOverride ?? target };
  }
  return { ok: false, reason: 'target-not-in-service', message: `this service is reached as ${entry.domain}:${entry.port}, not ${describe(target)}` };
}

function describe(t: Target): string {
  return t.kind === 'ipv6' ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}
