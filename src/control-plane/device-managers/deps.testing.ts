/** Test dependencies for the adapters: a movable clock, recorded Retry-After waits and secret lookups, and captured logs. */
import { Writable } from 'node:stream';
import { createLogger } from '../../lib/log.ts';
import type { SecretRef } from '../../lib/spec/device-manager.ts';
import type { AdapterDeps } from './types.ts';

export interface TestDeps {
  deps: (name: string, secret: string, extra?: Partial<AdapterDeps>) => AdapterDeps & { name: string };
  sleeps: number[];
  resolved: SecretRef[];
  logLines: string[];
  advance(ms: number): void;
  now(): number;
}

export function testDeps(startMs = Date.parse('2026-11-27T12:00:00Z')): TestDeps {
  let now = startMs;
  const sleeps: number[] = [];
  const resolved: SecretRef[] = [];
  const logLines: string[] = [];
  const logger = createLogger({
    name: 'mdm-test',
    level: 'trace',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logLines.push(chunk.toString());
        callback();
      },
    }),
  });
  return {
    sleeps,
    resolved,
    logLines,
    advance: (ms) => {
      now += ms;
    },
    now: () => now,
    deps: (name, secret, extra = {}) => ({
      name,
      clock: { now: () => now },
      logger,
      sleep: (ms) => {
        sleeps.push(ms);
        return Promise.resolve();
      },
      resolveSecret: (ref) => {
        resolved.push(ref);
        return Promise.resolve(secret);
      },
      ...extra,
    }),
  };
}

/** Everything a failure could leak through: the error, its JSON, its cause chain and the log lines. */
export function leakSurface(err: unknown, logLines: string[]): string {
  const parts: string[] = [String(err), JSON.stringify(err), ...logLines];
  let cause: unknown = err;
  for (let i = 0; i < 5 && cause instanceof Error; i++) {
    parts.push(cause.message, cause.stack ?? '');
    cause = cause.cause;
  }
  return parts.join('\n');
}
