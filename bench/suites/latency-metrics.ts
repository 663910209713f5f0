import { percentile } from '../stats.ts';
import type { Target } from '../targets/target.ts';
import type { Column, Metric } from './suite.ts';

/** p50 and p99 rows over the samples of all rounds pooled, with the ratio against stunnel. */
export function latencyMetrics(
  results: Map<Target, { results: number[][]; error?: Error }>,
  options: { id: string; title: string; unit: string; scale: number; digits: number; goals: { p50?: number; p99?: number } },
): Metric[] {
  const metrics: Metric[] = [];
  for (const p of [50, 99] as const) {
    const values: Partial<Record<Column, number>> = {};
    const rounds: Partial<Record<Column, number[]>> = {};
    const notes: string[] = [];
    const counts: Record<string, number> = {};
    for (const [target, { results: perRound, error }] of results) {
      if (error !== undefined) {
        notes.push(`${target.name}: ${error.message}`);
        continue;
      }
      const pooled = perRound.flat();
      values[target.name] = percentile(pooled, p) * options.scale;
      rounds[target.name] = perRound.map((samples) => percentile(samples, p) * options.scale);
      counts[target.name] = pooled.length;
    }
    const goal = options.goals[`p${p}`];
    metrics.push({
      id: `${options.id}.p${p}`,
      title: `${options.title}, p${p}`,
      unit: options.unit,
      values,
      rounds,
      baseline: 'stunnel',
      ...(goal !== undefined ? { goal: { kind: 'ratio-at-most', baseline: 'stunnel', value: goal } as const } : {}),
      digits: options.digits,
      ...(notes.length > 0 ? { notes } : {}),
      details: { samples: counts },
    });
  }
  return metrics;
}
