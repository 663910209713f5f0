/**
 * Micro-benchmark of the policy decision (DESIGN §7: ≤ 20 µs at p99 with 10,000 roles and
 * policies loaded). Unlike the data-path suites this figure is absolute: a decision is pure CPU
 * work in one process, so there is no baseline to take a ratio against.
 *
 *     npx node bench/policy.ts                # prints the figures
 *     npx node --cpu-prof bench/policy.ts     # and writes a .cpuprofile to look at
 *
 * bench/run.ts can call `runPolicyBench()`.
 *
 * The configuration is generated from a fixed seed, with the variety a large organisation has:
 * 10,000 roles (groups drawn from 300 with a few popular ones, email lists, any-user roles, every
 * kind of device requirement including serial-number lists), 10,000 policies of 1–4 rules naming
 * 1–4 roles each (a fifth with schedules, some closed), 1,000 services (a fifth permissive, a few
 * without a policy), 5,000 users with 1–40 groups (a few disabled) and 5,000 devices (a few banned,
 * every trust level). Each decision is a random (user, device, service) triple, decided through the
 * access tier's Decider (certificate checks, directory lookups, clock, evaluate, mapping) and,
 * separately, through `evaluate` alone. Each call is timed on its own with process.hrtime.bigint()
 * after a warm-up, so the percentiles include the timer's own cost (tens of nanoseconds).
 */
import { realpathSync } from 'node:fs';
import type { ConfigSnapshot } from '../src/lib/config/index.ts';
import { compilePolicies } from '../src/lib/policy/compile.ts';
import { directoryFromState } from '../src/lib/policy/directory.ts';
import { evaluate } from '../src/lib/policy/evaluate.ts';
import { createPolicyDecider } from '../src/lib/policy/policy-decider.ts';
import type { DeviceState, UserState } from '../src/lib/policy/types.ts';
import type { DecisionInput } from '../src/lib/policy/decider.ts';
import type { PeerIdentity } from '../src/lib/pki/index.ts';
import { DEVICE_OWNERSHIP, DEVICE_PLATFORMS, TRUST_LEVELS } from '../src/lib/spec/index.ts';
import type { PolicySpec, RoleSpec, ServiceSpec } from '../src/lib/spec/index.ts';

export interface PolicyBenchOptions {
  roles?: number;
  policies?: number;
  services?: number;
  users?: number;
  devices?: number;
  /** Timed decisions per measurement (after `warmup` untimed ones). */
  decisions?: number;
  warmup?: number;
  seed?: number;
}

export interface PolicyBenchResult {
  /** Full decisions through the Decider, in microseconds. */
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  /** `evaluate` alone. */
  evaluateP50Us: number;
  evaluateP99Us: number;
  roles: number;
  policies: number;
  services: number;
  decisions: number;
  /** compilePolicies over the whole configuration, in milliseconds (median of 3). */
  compileMs: number;
  /** compilePolicies after one policy edit, given the previous compilation (median of 3). */
  recompileMs: number;
  /** How the decisions came out (a deny walks every rule, so it is the slower path). */
  effects: { allow: number; deny: number; wouldDeny: number };
}

const DEFAULTS: Required<PolicyBenchOptions> = { roles: 10_000, policies: 10_000, services: 1_000, users: 5_000, devices: 5_000, decisions: 200_000, warmup: 50_000, seed: 0x5eed };

export function runPolicyBench(options: PolicyBenchOptions = {}): Promise<PolicyBenchResult> {
  return Promise.resolve(measure({ ...DEFAULTS, ...options }));
}

function measure(o: Required<PolicyBenchOptions>): PolicyBenchResult {
  const world = generatePolicyWorld(o);
  const snapshot: ConfigSnapshot = { version: 'bench', services: world.services, accessTiers: [], connectors: [], policies: world.policies, roles: world.roles, revokedSerials: ['dead01', 'dead02'] };

  const median3 = (run: () => void): number => {
    const times = [0, 1, 2].map(() => {
      const start = process.hrtime.bigint();
      run();
      return Number(process.hrtime.bigint() - start) / 1e6;
    });
    return times.sort((a, b) => a - b)[1];
  };
  const compileMs = median3(() => compilePolicies(snapshot));
  const previous = compilePolicies(snapshot);
  const edited = world.policies.slice();
  const recompileMs = median3(() => {
    edited[0] = structuredClone(edited[0]);
    compilePolicies({ ...snapshot, policies: edited }, previous);
  });

  const directory = directoryFromState({ users: world.users, devices: world.devices });
  const decider = createPolicyDecider({ directory: () => directory, clock: { now: () => world.now } });
  decider.prepare(snapshot);
  const compiled = compilePolicies(snapshot);

  // Pre-drawn triples, so the random generator stays out of the timed region.
  const rand = rng(o.seed ^ 0xabcdef);
  const count = o.warmup + o.decisions;
  const inputs: DecisionInput[] = new Array<DecisionInput>(count);
  for (let i = 0; i < count; i++) {
    const user = pick(rand, world.users);
    const device = pick(rand, world.devices);
    const identity: PeerIdentity = { type: 'trust', user: user.id, device: device.id, serial: `${(i % 4096).toString(16)}ab`, notBefore: new Date(0), notAfter: new Date(world.now + 3_600_000), fingerprint256: '' };
    inputs[i] = { service: pick(rand, world.services), identity, target: { host: 'svc.example.com', port: 443, kind: 'dns' }, snapshot };
  }

  const effects = { allow: 0, deny: 0, wouldDeny: 0 };
  const full = new Float64Array(o.decisions);
  for (let i = 0; i < count; i++) {
    const input = inputs[i];
    const start = process.hrtime.bigint();
    const decision = decider.decide(input);
    const took = process.hrtime.bigint() - start;
    if (i < o.warmup) continue;
    full[i - o.warmup] = Number(took) / 1000;
    if (!decision.allow) effects.deny++;
    else if (decision.wouldDeny === true) effects.wouldDeny++;
    else effects.allow++;
  }

  const alone = new Float64Array(o.decisions);
  for (let i = 0; i < count; i++) {
    const input = inputs[i];
    const user = directory.user(input.identity.user as string);
    const device = directory.device(input.identity.device as string);
    const start = process.hrtime.bigint();
    evaluate(compiled, { service: input.service, user, device, now: world.now });
    const took = process.hrtime.bigint() - start;
    if (i >= o.warmup) alone[i - o.warmup] = Number(took) / 1000;
  }

  full.sort();
  alone.sort();
  return {
    p50Us: rank(full, 50),
    p99Us: rank(full, 99),
    p999Us: rank(full, 99.9),
    maxUs: full[full.length - 1] ?? Number.NaN,
    evaluateP50Us: rank(alone, 50),
    evaluateP99Us: rank(alone, 99),
    roles: world.roles.length,
    policies: world.policies.length,
    services: world.services.length,
    decisions: o.decisions,
    compileMs,
    recompileMs,
    effects,
  };
}

/** Nearest-rank percentile of sorted samples (bench/stats.ts's method). */
function rank(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const r = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, r - 1))];
}

// ---------------------------------------------------------------------------------------------
// The generated organisation

export interface World {
  roles: RoleSpec[];
  policies: PolicySpec[];
  services: ServiceSpec[];
  users: UserState[];
  devices: DeviceState[];
  now: number;
}

const GROUPS = Array.from({ length: 300 }, (_, i) => `group-${i.toString().padStart(3, '0')}`);
const NOW = Date.parse('2026-06-15T12:00:00Z');

/** The generated organisation, for profiling compile or evaluate on their own. */
export function generatePolicyWorld(options: PolicyBenchOptions = {}): World {
  const o = { ...DEFAULTS, ...options };
  const rand = rng(o.seed);
  /** Skewed towards the first groups: a few are in most roles and on most users, as in real directories. */
  const group = (): string => GROUPS[Math.floor(GROUPS.length * rand() ** 2)];
  const groups = (min: number, max: number): string[] => [...new Set(Array.from({ length: between(rand, min, max) }, group))];
  const email = (): string => `user${Math.floor(rand() * o.users)}@example.com`;
  const some = <T>(list: readonly T[], chance: number): T[] => (rand() < chance ? list.filter(() => rand() < 0.5) : []);

  const roles: RoleSpec[] = [];
  for (let i = 0; i < o.roles; i++) {
    const kind = rand();
    const users =
      kind < 0.6
        ? { groups: groups(1, 3), emails: [] }
        : kind < 0.75
          ? { groups: [], emails: Array.from({ length: between(rand, 1, 5) }, email).map((e) => (rand() < 0.2 ? e.toUpperCase() : e)) }
          : kind < 0.95
            ? { groups: groups(1, 2), emails: Array.from({ length: between(rand, 1, 3) }, email) }
            : { groups: [], emails: [] };
    roles.push({
      apiVersion: 'causeway/v1',
      kind: 'Role',
      metadata: { name: `role-${i}` },
      spec: {
        users,
        devices: {
          ownership: some(DEVICE_OWNERSHIP, 0.5),
          platforms: some(DEVICE_PLATFORMS, 0.5),
          knownDeviceOnly: rand() < 0.5,
          mdmPresent: rand() < 0.3,
          serialNumbers: rand() < 0.05 ? Array.from({ length: between(rand, 1, 20) }, () => serial(rand)) : [],
        },
      },
    });
  }

  const policies: PolicySpec[] = [];
  for (let i = 0; i < o.policies; i++) {
    const access = Array.from({ length: between(rand, 1, 4) }, () => {
      const rule: PolicySpec['spec']['access'][number] = {
        roles: [...new Set(Array.from({ length: between(rand, 1, 4) }, () => `role-${Math.floor(rand() * o.roles)}`))],
        trustLevel: TRUST_LEVELS[Math.floor(rand() * 3)],
      };
      if (rand() < 0.2) {
        const start = rand() < 0.5 ? null : new Date(NOW - between(rand, -30, 300) * 86_400_000).toISOString();
        const end = rand() < 0.5 ? null : new Date(NOW + between(rand, 1, 300) * 86_400_000).toISOString();
        rule.schedule = { start, end };
      }
      return rule;
    });
    policies.push({ apiVersion: 'causeway/v1', kind: 'Policy', metadata: { name: `policy-${i}` }, spec: { access } });
  }

  const services: ServiceSpec[] = [];
  for (let i = 0; i < o.services; i++) {
    const spec: ServiceSpec['spec'] = {
      type: 'tcp',
      cluster: 'edge',
      accessTier: '*',
      domain: `svc-${i}.corp.example.com`,
      port: 443,
      showInCatalog: true,
      autorun: false,
      backend: { target: `svc-${i}.internal:5432` },
      client: { listenPort: 8081, allowUserOverride: false },
    };
    if (rand() >= 0.02) spec.policy = { name: `policy-${Math.floor(rand() * o.policies)}`, mode: rand() < 0.2 ? 'permissive' : 'enforcing' };
    services.push({ apiVersion: 'causeway/v1', kind: 'Service', metadata: { name: `svc-${i}` }, spec });
  }

  const users: UserState[] = Array.from({ length: o.users }, (_, i) => ({
    id: `u-${i}`,
    email: `user${i}@example.com`,
    groups: groups(1, 40),
    disabled: rand() < 0.01,
  }));

  const levels = ['High', 'High', 'Medium', 'Medium', 'Low', 'AlwaysDeny'] as const;
  const devices: DeviceState[] = Array.from({ length: o.devices }, (_, i) => {
    const trustLevel = levels[Math.floor(rand() * levels.length)];
    return {
      id: `d-${i}`,
      ownership: DEVICE_OWNERSHIP[Math.floor(rand() * DEVICE_OWNERSHIP.length)],
      platform: DEVICE_PLATFORMS[Math.floor(rand() * DEVICE_PLATFORMS.length)],
      serialNumber: serial(rand),
      known: rand() < 0.9,
      mdmPresent: rand() < 0.7,
      banned: rand() < 0.01,
      trustLevel,
      trustReasons: trustLevel === 'High' ? [] : ['firewall-off', 'disk-unencrypted'].filter(() => rand() < 0.6),
    };
  });

  return { roles, policies, services, users, devices, now: NOW };
}

function serial(rand: () => number): string {
  return Math.floor(rand() * 36 ** 8)
    .toString(36)
    .toUpperCase()
    .padStart(8, '0');
}

/** mulberry32: small, fast, good enough for generating test data from a seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function between(rand: () => number, min: number, max: number): number {
  return min + Math.floor(rand() * (max - min + 1));
}

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)];
}

// ---------------------------------------------------------------------------------------------

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === import.meta.filename;
if (invokedDirectly) {
  const r = await runPolicyBench();
  const us = (v: number): string => `${v.toFixed(2)} µs`;
  console.log(`policy decision: ${r.roles} roles, ${r.policies} policies, ${r.services} services, ${r.decisions} timed decisions (Node ${process.version})`);
  console.log(`  compile ${r.compileMs.toFixed(1)} ms; after one policy edit, from the previous compilation ${r.recompileMs.toFixed(1)} ms`);
  console.log(`  decide  p50 ${us(r.p50Us)}  p99 ${us(r.p99Us)}  p99.9 ${us(r.p999Us)}  max ${us(r.maxUs)}`);
  console.log(`  evaluate p50 ${us(r.evaluateP50Us)}  p99 ${us(r.evaluateP99Us)}`);
  console.log(`  outcomes: ${r.effects.allow} allow, ${r.effects.wouldDeny} would-deny, ${r.effects.deny} deny`);
  console.log(`  goal: p99 ≤ 20 µs — ${r.p99Us <= 20 ? 'met' : 'MISSED'}`);
}
