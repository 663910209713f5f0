/**
 * What a suite is and what it returns. A suite measures one thing on every target it needs and
 * returns metrics; `run.ts` starts what the selected suites need, runs them in order and reports.
 */
import type { ProcessGroup } from '../processes.ts';
import type { Backend, Target, TargetName } from '../targets/target.ts';
import type { HandshakeServer } from '../targets/handshake-server.ts';

/** A column of the results table. `nginx` is the baseline of the handshake-rate figure only. */
export type Column = TargetName | 'nginx';

export type Goal =
  /** causeway / baseline must be at most `value` (lower is better: latency). */
  | { kind: 'ratio-at-most'; baseline: Column; value: number }
  /** causeway / baseline must be at least `value` (higher is better: throughput, rate). */
  | { kind: 'ratio-at-least'; baseline: Column; value: number }
  /** causeway's value itself must be at most `value` (in the metric's unit). */
  | { kind: 'at-most'; value: number };

export interface Metric {
  /** Stable id for the JSON file, e.g. `throughput.download`. */
  id: string;
  /** Row title in the table. */
  title: string;
  unit: string;
  values: Partial<Record<Column, number>>;
  /** The per-round values behind `values` (median of rounds, or pooled percentiles). */
  rounds?: Partial<Record<Column, number[]>>;
  /** The column the ratio is taken against (causeway / baseline), when there is one. */
  baseline?: Column;
  goal?: Goal;
  /** Digits after the decimal point when printed. */
  digits: number;
  /** Why a column is empty, or anything the reader must know to read the row. */
  notes?: string[];
  details?: Record<string, unknown>;
}

export interface Sizes {
  /** Throughput: rounds per target and seconds per direction per round. */
  throughputRounds: number;
  throughputSeconds: number;
  /** New connections: rounds per target, connections per round. */
  newConnectionRounds: number;
  newConnectionsPerRound: number;
  /** Kept-alive requests: rounds per target, requests per round (after a warm-up). */
  requestRounds: number;
  requestsPerRound: number;
  /** Idle streams held open at once through the chain. */
  idleStreams: number;
  /** Handshake rate: rounds per server, seconds per round, handshakes in flight. */
  handshakeRounds: number;
  handshakeSeconds: number;
  handshakeConcurrency: number;
  /** Timed policy decisions (a quarter as many warm-up ones first). */
  policyDecisions: number;
}

export interface SuiteContext {
  readonly sizes: Sizes;
  /** The targets that started, always in the order direct, stunnel, stunnel-1hop, causeway. */
  readonly targets: readonly Target[];
  /** Why a wanted target or baseline is missing (e.g. stunnel could not be installed). */
  readonly unavailable: ReadonlyMap<Column, string>;
  readonly backend: Backend;
  readonly handshakeServers: readonly HandshakeServer[];
  readonly group: ProcessGroup;
  readonly dir: string;
  log(line: string): void;
}

/** Thrown by a suite that cannot run in this tree (a part it measures is missing): reported, not a failure. */
export class SuiteSkipped extends Error {
  override readonly name = 'SuiteSkipped';
}

/** What a suite needs started before it runs. */
export type Need = 'stunnel' | 'causeway' | 'nginx';

export interface Suite {
  /** Used with `--only`. */
  readonly name: string;
  readonly title: string;
  readonly needs: readonly Need[];
  run(context: SuiteContext): Promise<Metric[]>;
}

/**
 * Runs `measure` for every target, `rounds` times, rotating the order each round so no target
 * always runs first (or right after the noisiest one). Errors are kept per target.
 */
export async function interleave<T, R>(
  items: readonly T[],
  rounds: number,
  measure: (item: T, round: number) => Promise<R>,
): Promise<Map<T, { results: R[]; error?: Error }>> {
  const out = new Map<T, { results: R[]; error?: Error }>(items.map((item) => [item, { results: [] }]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < items.length; i++) {
      const item = items[(i + round) % items.length];
      const entry = out.get(item)!;
      if (entry.error !== undefined) continue;
      try {
        entry.results.push(await measure(item, round));
      } catch (err) {
        entry.error = err instanceof Error ? err : new Error(String(err));
      }
    }
  }
  return out;
}
