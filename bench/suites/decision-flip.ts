/**
 * Decision flip (DESIGN.md §7: a decision flip cuts every affected live stream on every access
 * tier within 1 s at p99): bench/decision-flip.ts starts a control plane and two access tier
 * processes, holds live connections through both, makes an admin API write that no longer allows
 * them, and times each cut from the write. The figure is absolute (there is no baseline to cut).
 */
import type { DecisionFlipOptions, DecisionFlipResult } from '../decision-flip.ts';
import type { Metric, Suite, SuiteContext } from './suite.ts';
import { SuiteSkipped } from './suite.ts';

export const decisionFlipSuite: Suite = {
  name: 'decision-flip',
  title: 'Decision flip: API write to every affected live connection cut, two access tiers',
  needs: [],
  async run(context: SuiteContext): Promise<Metric[]> {
    let runDecisionFlipBench: (options: DecisionFlipOptions) => Promise<DecisionFlipResult>;
    try {
      ({ runDecisionFlipBench } = await import('../decision-flip.ts'));
    } catch (err) {
      throw new SuiteSkipped(`bench/decision-flip.ts cannot be loaded in this tree (${err instanceof Error ? err.message : String(err)})`);
    }
    // The quick size runs half the rounds; both hold 100 connections on each access tier.
    const rounds = context.sizes.policyDecisions < 100_000 ? 5 : 10;
    const r = await runDecisionFlipBench({ connectionsPerTier: 100, rounds, log: (line) => context.log(`  ${line}`) });
    context.log(`    cut p50 ${r.p50Ms.toFixed(0)} ms, p99 ${r.p99Ms.toFixed(0)} ms over ${r.samples} cuts`);
    const details = { ...r, rounds: r.rounds.length };
    return [
      {
        id: 'decision-flip.p99',
        title: `Decision flip to cut, p99 (${r.tiers} access tiers × ${r.connectionsPerTier} connections, ${r.database})`,
        unit: 'ms',
        values: { causeway: r.p99Ms },
        goal: { kind: 'at-most', value: 1000 },
        digits: 0,
        details,
      },
      { id: 'decision-flip.p50', title: 'Decision flip to cut, p50', unit: 'ms', values: { causeway: r.p50Ms }, digits: 0, details },
    ];
  },
};
