/**
 * The fake Kubernetes API server for tests, the quickstart's demo cluster and the benchmark.
 * Start it with startFakeKube(), point kubectl at `url` trusting `caPem`, close() it when done.
 */
export { startFakeKube, BIG_NAMESPACE, defaultPodInputs } from './server.ts';
export type { FakeKube, FakeKubeOptions, FakeKubeUser, RecordedExec, RecordedPortForward, RecordedRequest } from './types.ts';
export type { FakePodInput, PodObject, PodPatch, PodPhase } from './pods.ts';
