import { decisionFlipSuite } from './decision-flip.ts';
import { handshakeRateSuite } from './handshake-rate.ts';
import { idleStreamsSuite } from './idle-streams.ts';
import { kubeProxySuite } from './kube-proxy.ts';
import { newConnectionSuite } from './new-connection.ts';
import { policyDecisionSuite } from './policy-decision.ts';
import { postureFlipSuite } from './posture-flip.ts';
import { requestLatencySuite } from './request-latency.ts';
import type { Suite } from './suite.ts';
import { throughputSuite } from './throughput.ts';

/**
 * Every suite, in the order they run. A new figure from DESIGN.md §7 is a new entry here: a suite
 * says what it needs started (`needs`) and returns metrics; suites with `needs: []` (the policy
 * decision) measure in this process and involve no target.
 */
export const SUITES: readonly Suite[] = [
  throughputSuite,
  newConnectionSuite,
  requestLatencySuite,
  idleStreamsSuite,
  handshakeRateSuite,
  policyDecisionSuite,
  decisionFlipSuite,
  postureFlipSuite,
  kubeProxySuite,
];
