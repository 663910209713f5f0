import { handshakeRateSuite } from './handshake-rate.ts';
import { idleStreamsSuite } from './idle-streams.ts';
import { newConnectionSuite } from './new-connection.ts';
import { requestLatencySuite } from './request-latency.ts';
import type { Suite } from './suite.ts';
import { throughputSuite } from './throughput.ts';

/**
 * Every suite, in the order they run. A new figure from DESIGN.md §7 is a new entry here.
 *
 * Still to come: the policy-decision micro-benchmark (≤ 20 µs at p99 with 10,000 roles and
 * policies) lands with src/lib/policy. It will be a suite with `needs: []` that builds the 10,000
 * roles and policies in memory, times decisions in this process and returns one metric with an
 * `at-most` goal of 20 µs; no target or child process is involved.
 */
export const SUITES: readonly Suite[] = [
  throughputSuite,
  newConnectionSuite,
  requestLatencySuite,
  idleStreamsSuite,
  handshakeRateSuite,
];
