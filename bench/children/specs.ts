import { snapshotFromObjects } from '../../src/lib/config/index.ts';
import type { ConfigSnapshot } from '../../src/lib/config/index.ts';
import { formatProblems, parseSpecDocuments, validateReferences } from '../../src/lib/spec/index.ts';

/** The specs YAML the benchmark wrote, parsed and checked like `causeway apply` would, as one snapshot. */
export function snapshotFromSpecs(yaml: string): ConfigSnapshot {
  const parsed = parseSpecDocuments(yaml, 'bench specs');
  if (!parsed.ok) throw new Error(`the benchmark's specs are invalid:\n${formatProblems(parsed.problems)}`);
  const problems = validateReferences(parsed.objects);
  if (problems.length > 0) throw new Error(`the benchmark's specs do not fit together:\n${formatProblems(problems)}`);
  return snapshotFromObjects(parsed.objects);
}
