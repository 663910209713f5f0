/**
 * A target is one way for the client (the benchmark process) to reach the backend: straight
 * (`direct`), through a baseline (`stunnel`), or through Causeway (`causeway`). Suites only see
 * endpoints, so every suite measures every target the same way.
 */
import type { BenchProcess } from '../processes.ts';

export type TargetName = 'direct' | 'stunnel' | 'stunnel-1hop' | 'causeway';

/** What the backend offers; each target gives one entry point per backend service. */
export type BackendService = 'sink' | 'source' | 'http';

export interface Endpoint {
  host: string;
  port: number;
  /**
   * When set, the client first sends `CONNECT <authority> HTTP/1.1` and waits for `200`, as kubectl
   * does with HTTPS_PROXY or proxy-url; the bytes after that reach the backend service.
   */
  connectAuthority?: string;
}

export interface Target {
  readonly name: TargetName;
  /** One line for the report: what sits between client and backend. */
  readonly description: string;
  endpoint(service: BackendService): Endpoint;
  /**
   * Every independent entry point for the service (Causeway: one per client proxy), for suites that
   * spread many connections; `endpoint()` is the first. Targets with one entry leave it out.
   */
  entryPoints?(service: BackendService): Endpoint[];
  /** The relay processes between client and backend (none for `direct`), for CPU and memory figures. */
  readonly relays: readonly Relay[];
  close(): Promise<void>;
}

export interface Relay {
  /** e.g. `connector`, `stunnel-middle`; several processes may share a role (client proxies). */
  readonly role: string;
  readonly process: BenchProcess;
}

/** What the backend child reported: its listening ports. */
export interface Backend {
  readonly host: string;
  readonly ports: Record<BackendService, number>;
  readonly process: BenchProcess;
}

export const BACKEND_SERVICES: readonly BackendService[] = ['sink', 'source', 'http'];
