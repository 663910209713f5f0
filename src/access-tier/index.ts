/** The access tier: see access-tier.ts. */
export { startAccessTier, DEFAULT_ACCESS_TIER_LIMITS, DEFAULT_ACCESS_TIER_PORT } from './access-tier.ts';
export type { AccessTier, AccessTierOptions, AccessTierStats } from './access-tier.ts';
export type { AccessTierLimits } from './context.ts';
export { decisionChannel } from './context.ts';
export type { ConnectionFilter, LiveConnection } from './registry.ts';
export { buildState, checkTarget } from './state.ts';
export type { AccessTierState, ServiceEntry, ServiceMode } from './state.ts';
export { tunnelStreamChannel } from './tunnel-pool.ts';
