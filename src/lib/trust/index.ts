export { DEFAULT_STALE_AFTER_MS, levelRank, profileApplies, scoreDevice } from './score.ts';
export type { DeviceFacts, FactorResult, Observed, ScoreInput, TrustLevel, TrustOverride, TrustProfileInput, TrustScore } from './score.ts';
export { MAX_CHECKED_ITEMS, SERVER_FACTOR_KEYS, compareVersions, deviceFactorValuesSchema } from './factor-values.ts';
export type { FactorValues } from './factor-values.ts';
export { remedy, unknownRemedy } from './remedies.ts';
export type { RemedyContext, RemedyPlatform } from './remedies.ts';
export { mergeFactorValues, postureRequirements } from './requirements.ts';
export type { DeviceRequirements } from './requirements.ts';
