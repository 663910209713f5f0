export { TUNNEL_STREAM_CHANNEL, accessTierStats, connectorStats, createPartMetrics, meteredSink } from './part-metrics.ts';
export type { ConfigStatusView, MetricsPart, PartMetrics, PartMetricsOptions, PartSources, PartStats } from './part-metrics.ts';
export { NONE, OTHER, REASON_CODES, reasonLabel, resultLabel } from './reasons.ts';
