/** The connector: see connector.ts. */
export { startConnector, connectorView } from './connector.ts';
export type { Connector, ConnectorOptions, ConnectorState, ConnectorStatus, ConnectorView } from './connector.ts';
export type { AccessTierEndpoint, LinkState, LinkStatus } from './link.ts';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.ts';
export type { BackoffOptions } from './backoff.ts';
export { streamChannel } from './streams.ts';
