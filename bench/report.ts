/**
 * Turns the metrics of one run into the JSON file and the markdown table: every figure with the
 * direct floor and its baseline beside it, the ratio causeway / baseline, the goal and whether it
 * was met in this run.
 */
import type { Column, Goal, Metric } from './suites/suite.ts';

export type Verdict = 'pass' | 'miss' | 'no data' | 'info';

export interface Row {
  metric: Metric;
  ratio: number | undefined;
  verdict: Verdict;
}

export interface RunInfo {
  startedAt: string;
  finishedAt: string;
  mode: 'full' | 'quick';
  suites: string[];
  machine: Record<string, unknown>;
  targets: Record<string, string>;
  unavailable: Record<string, string>;
  failures: string[];
}

const COLUMNS: readonly Column[] = ['direct', 'stunnel', 'stunnel-1hop', 'nginx', 'causeway'];

export function evaluate(metric: Metric): Row {
  const value = metric.values.causeway;
  const base = metric.baseline === undefined ? undefined : metric.values[metric.baseline];
  const ratio = value !== undefined && base !== undefined && base !== 0 ? value / base : undefined;
  const goal = metric.goal;
  if (goal === undefined) return { metric, ratio, verdict: 'info' };
  if (value === undefined) return { metric, ratio, verdict: 'no data' };
  if (goal.kind === 'at-most') return { metric, ratio, verdict: value <= goal.value ? 'pass' : 'miss' };
  if (ratio === undefined) return { metric, ratio, verdict: 'no data' };
  const ok = goal.kind === 'ratio-at-most' ? ratio <= goal.value : ratio >= goal.value;
  return { metric, ratio, verdict: ok ? 'pass' : 'miss' };
}

export function goalText(goal: Goal | undefined, unit: string): string {
  if (goal === undefined) return '';
  switch (goal.kind) {
    case 'ratio-at-most':
      return `≤ ${goal.value.toFixed(1)} × ${goal.baseline}`;
    case 'ratio-at-least':
      return `≥ ${goal.value.toFixed(1)} × ${goal.baseline}`;
    case 'at-most':
      return `≤ ${goal.value} ${unit}`;
  }
}

function cell(value: number | undefined, digits: number): string {
  if (value === undefined || Number.isNaN(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** The markdown report: a header saying what ran, the table, then notes. */
export function markdown(rows: readonly Row[], info: RunInfo): string {
  const used = COLUMNS.filter((c) => c === 'direct' || c === 'stunnel' || c === 'causeway' || rows.some((r) => r.metric.values[c] !== undefined));
  const lines: string[] = [];
  lines.push(`# Causeway benchmark, ${info.startedAt}${info.mode === 'quick' ? ' (quick)' : ''}`, '');
  lines.push(`Node ${String(info.machine['node'])}, ${String(info.machine['cpus'])} CPUs (${String(info.machine['cpuModel'])}), load average at start ${String(info.machine['loadAverage'])}. Suites: ${info.suites.join(', ')}.`, '');
  lines.push(`| metric | unit | ${used.join(' | ')} | ratio | target | result |`);
  lines.push(`|---|---|${used.map(() => '---:').join('|')}|---:|---|---|`);
  for (const row of rows) {
    const m = row.metric;
    const ratio = row.ratio === undefined ? '' : `${row.ratio.toFixed(2)} ×`;
    const result = row.verdict === 'info' ? '' : row.verdict;
    lines.push(`| ${m.title} | ${m.unit} | ${used.map((c) => cell(m.values[c], m.digits)).join(' | ')} | ${ratio} | ${goalText(m.goal, m.unit)} | ${result} |`);
  }
  lines.push('', 'Ratio = causeway ÷ the baseline named in the target (stunnel, or nginx for handshakes); rows without a target are context.');
  lines.push('');
  lines.push('Targets:');
  for (const [name, description] of Object.entries(info.targets)) lines.push(`- ${name}: ${description}`);
  const unavailable = Object.entries(info.unavailable);
  if (unavailable.length > 0) {
    lines.push('', 'Not measured:');
    for (const [name, reason] of unavailable) lines.push(`- ${name}: ${reason}`);
  }
  const notes = rows.flatMap((r) => (r.metric.notes ?? []).map((n) => `${r.metric.title}: ${n}`));
  if (notes.length > 0 || info.failures.length > 0) {
    lines.push('', 'Errors:');
    for (const n of [...info.failures, ...notes]) lines.push(`- ${n}`);
  }
  return `${lines.join('\n')}\n`;
}

export function json(rows: readonly Row[], info: RunInfo): string {
  return `${JSON.stringify({
    ...info,
    metrics: rows.map((r) => ({
      ...r.metric,
      ratio: r.ratio,
      target: goalText(r.metric.goal, r.metric.unit) || undefined,
      result: r.verdict,
    })),
  }, null, 2)}\n`;
}
