/**
 * What posture collectors need from the machine, injected so tests can replay recorded outputs.
 * Collectors never throw and never guess: a value they cannot establish is left out (unknown),
 * which trust scoring counts as unmet (DT-07).
 */
import type { FactorValues } from '../../lib/trust/factor-values.ts';

export interface CommandResult {
  /** The exit code; null when the command could not start, timed out or was killed. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program (no shell) with a timeout. Implementations should not throw; collectors guard anyway. */
export type CommandRunner = (cmd: string, args: readonly string[], options: { timeoutMs: number }) => Promise<CommandResult>;

export interface PostureFiles {
  /** The text of a file, at most `maxBytes`; undefined when it cannot be read. */
  readText(path: string, maxBytes?: number): Promise<string | undefined>;
  /** true / false when known; undefined when it cannot be told (permission denied, I/O error). */
  exists(path: string): Promise<boolean | undefined>;
  /** The names in a directory; undefined when it cannot be listed. */
  list(path: string): Promise<string[] | undefined>;
}

export type CollectorPlatform = 'linux' | 'macos' | 'windows';

/** What the control plane asked this device to check (from its trust profiles). */
export interface PostureRequirements {
  files?: readonly string[];
  processes?: readonly string[];
}

export interface CollectContext {
  run: CommandRunner;
  files: PostureFiles;
  /** The environment the client runs in (whether a desktop session exists); passed in by the entry point. */
  env: Readonly<Record<string, string | undefined>>;
  requirements: PostureRequirements;
  /** The budget of each collector (default 30 s; software update checks get more). */
  timeoutMs: number;
}

export interface CollectedPosture {
  factors: FactorValues;
  /** Why a value is unknown, e.g. `firewall: nft needs root`: for `causeway device report -v`, never sent. */
  problems: string[];
}

export type Collector = (context: CollectContext) => Promise<Partial<FactorValues>>;
