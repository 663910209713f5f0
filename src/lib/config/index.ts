export { deepFreeze, snapshotFromObjects } from './snapshot.ts';
export type { ConfigSnapshot, ConfigSource } from './snapshot.ts';
export { StaticConfigSource } from './static-source.ts';
export { FileConfigSource } from './file-source.ts';
export type { FileConfigSourceOptions } from './file-source.ts';
export { RemoteConfigSource, principalDirectory } from './remote-source.ts';
export type { RemoteConfigSourceOptions, RemoteConfigStatus } from './remote-source.ts';
