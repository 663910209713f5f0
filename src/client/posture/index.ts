export { COLLECTORS, DEFAULT_COLLECTOR_TIMEOUT_MS, collectPosture, collectorPlatform } from './collect.ts';
export type { CollectPostureOptions } from './collect.ts';
export { createCommandRunner, createPostureFiles } from './system.ts';
export type { CommandRunnerOptions } from './system.ts';
export type { CollectContext, CollectedPosture, Collector, CollectorPlatform, CommandResult, CommandRunner, PostureFiles, PostureRequirements } from './types.ts';
