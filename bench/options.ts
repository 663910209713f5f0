/** Command-line options of `npm run bench`. */
import type { Sizes } from './suites/suite.ts';

export interface BenchOptions {
  quick: boolean;
  /** Suite names (or prefixes) to run; empty = all. */
  only: string[];
  /** Keep the work directory (configs, certificates, child logs) after the run. */
  keep: boolean;
  help: boolean;
}

export const USAGE = `usage: npm run bench [-- [--quick] [--only SUITE[,SUITE…]] [--keep]]

  --quick        about a minute: fewer rounds, shorter windows, 2,000 idle streams instead of 10,000
  --only LIST    run only these suites (names or prefixes, comma-separated), e.g. --only throughput
  --keep         keep the work directory (configs, certificates, every child's log) after the run
  --help         this text

Suites: throughput, new-connection, request-latency, idle-streams, handshake-rate, policy-decision.
Results: bench/results/<timestamp>.json and bench/results/latest.md (see bench/README.md).`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function parseOptions(argv: readonly string[]): BenchOptions {
  const options: BenchOptions = { quick: false, only: [], keep: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') options.quick = true;
    else if (arg === '--keep') options.keep = true;
    else if (arg === '--help' || arg === '-h') options.help = true;
    else if (arg === '--only' || arg.startsWith('--only=')) {
      const value = arg === '--only' ? argv[++i] : arg.slice('--only='.length);
      if (value === undefined || value === '') throw new UsageError('--only needs a suite name');
      options.only.push(...value.split(',').map((s) => s.trim()).filter((s) => s !== ''));
    } else {
      throw new UsageError(`unknown argument: ${arg}`);
    }
  }
  return options;
}

export function sizesFor(quick: boolean): Sizes {
  return quick
    ? {
        throughputRounds: 2, throughputSeconds: 1.5,
        newConnectionRounds: 2, newConnectionsPerRound: 50,
        requestRounds: 2, requestsPerRound: 500,
        idleStreams: 2_000,
        handshakeRounds: 2, handshakeSeconds: 1.5, handshakeConcurrency: 16,
        policyDecisions: 40_000,
      }
    : {
        throughputRounds: 5, throughputSeconds: 2.5,
        newConnectionRounds: 3, newConnectionsPerRound: 150,
        requestRounds: 3, requestsPerRound: 2_000,
        idleStreams: 10_000,
        handshakeRounds: 3, handshakeSeconds: 3, handshakeConcurrency: 16,
        policyDecisions: 200_000,
      };
}
