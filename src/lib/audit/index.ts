export { newEventId } from './event.ts';
export type { AccessDecision, AccessEvent, AccessEventSink } from './event.ts';
export { JsonLinesFileSink } from './json-lines-sink.ts';
export type { JsonLinesFileSinkOptions } from './json-lines-sink.ts';
export { MemoryEventSink } from './memory-sink.ts';
