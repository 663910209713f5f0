export { MAX_CANONICAL_DEPTH, canonicalJson } from './canonical.ts';
export { DEFAULT_MAX_SKEW_MS, MAX_REPORT_BYTES, SIGNATURE_CONTEXT, signPostureReport, verifyPostureReport } from './report.ts';
export type { NonceStore, PostureRejection, PostureReport, VerifyOptions, VerifyResult } from './report.ts';
export { DEFAULT_NONCE_TTL_MS, createMemoryNonceStore } from './nonces.ts';
export type { MemoryNonceStore, MemoryNonceStoreOptions } from './nonces.ts';
