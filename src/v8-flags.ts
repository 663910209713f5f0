/**
 * V8 settings for Causeway's processes (process state, so it lives beside the entry points, not in
 * src/lib), applied by importing this module first (src/main.ts and the
 * benchmark's children do, so the benchmark measures what users run).
 *
 * `--external-memory-accounted-in-global-limit`: every TLS record Node reads becomes a fresh 16 KiB
 * Buffer held outside V8's heap. By default V8 starts a full mark-compact each time such external
 * memory grows by a fixed 64 MiB, whatever the heap's size: a relay moving 1 GiB ran about 45 full
 * GCs per process, about a tenth of its CPU. With this flag external memory counts towards the
 * heap's growing global limit instead: half as many full GCs and about 10–15 % less CPU per GiB on
 * the access tier and the connector (bench/tunnel-throughput.ts). Memory stays bounded: the limit
 * still triggers GCs, only later.
 *
 * A larger young generation (`--max-semi-space-size`) was measured too and does not help: the full
 * GCs are requested by external memory, not by promotion.
 */
import v8 from 'node:v8';

export const V8_FLAGS: readonly string[] = ['--external-memory-accounted-in-global-limit'];

for (const flag of V8_FLAGS) v8.setFlagsFromString(flag);
