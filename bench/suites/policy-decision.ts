/**
 * The policy decision micro-benchmark (DESIGN.md §7: ≤ 20 µs at p99 with 10,000 roles and
 * policies): bench/policy.ts (the policy engineer's) builds the seeded organisation and times every
 * decision; this suite runs it in the benchmark's own process while every target is idle and turns
 * its result into rows. The figure is absolute: a decision is CPU work in one process, with no
 * baseline to take a ratio against.
 */
import type { PolicyBenchOptions, PolicyBenchResult } from '../policy.ts';
import type { Metric, Suite, SuiteContext } from './suite.ts';
import { SuiteSkipped } from './suite.ts';

export const policyDecisionSuite: Suite = {
  name: 'policy-decision',
  title: 'Policy decision with 10,000 roles and policies',
  needs: [],
  async run(context: SuiteContext): Promise<Metric[]> {
    // Loaded only now, so a tree without the policy code still runs every other suite.
    let runPolicyBench: (options: PolicyBenchOptions) => Promise<PolicyBenchResult>;
    try {
      ({ runPolicyBench } = await import('../policy.ts'));
    } catch (err) {
      throw new SuiteSkipped(`bench/policy.ts cannot be loaded in this tree (${err instanceof Error ? err.message : String(err)})`);
    }
    const decisions = context.sizes.policyDecisions;
    context.log(`  ${decisions.toLocaleString('en-US')} timed decisions after ${(decisions / 4).toLocaleString('en-US')} warm-up ones`);
    const r = await runPolicyBench({ decisions, warmup: decisions / 4 });
    context.log(`    decide p50 ${r.p50Us.toFixed(2)} µs, p99 ${r.p99Us.toFixed(2)} µs; compile ${r.compileMs.toFixed(0)} ms`);
    const details = { ...r };
    const row = (id: string, title: string, value: number, goal?: number): Metric => ({
      id: `policy-decision.${id}`,
      title,
      unit: 'µs',
      values: { causeway: value },
      ...(goal !== undefined ? { goal: { kind: 'at-most', value: goal } as const } : {}),
      digits: 2,
      details,
    });
    return [
      row('p99', `Policy decision, p99 (${r.roles.toLocaleString('en-US')} roles, ${r.policies.toLocaleString('en-US')} policies)`, r.p99Us, 20),
      row('p50', 'Policy decision, p50', r.p50Us),
      row('evaluate-p99', 'Policy evaluate alone, p99', r.evaluateP99Us),
    ];
  },
};
