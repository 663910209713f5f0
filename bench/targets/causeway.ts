/**
 * The Causeway chain as a target (being wired in as its parts land).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ProcessGroup } from '../processes.ts';
import type { HandshakeServer } from './handshake-server.ts';
import type { Backend, Target } from './target.ts';

/** The chain cannot be measured in this tree (a part is missing); the run goes on without it. */
export class TargetUnavailable extends Error {
  override readonly name = 'TargetUnavailable';
}

const REQUIRED = ['src/client/proxy.ts', 'src/access-tier/index.ts', 'src/connector/index.ts'];

export function startCausewayTarget(_options: {
  backend: Backend;
  group: ProcessGroup;
  dir: string;
  log: (line: string) => void;
}): Promise<{ target: Target; handshakeServer: HandshakeServer }> {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const missing = REQUIRED.filter((f) => !existsSync(root + f));
  return Promise.reject(new TargetUnavailable(missing.length > 0 ? `not in this tree yet: ${missing.join(', ')}` : 'the chain is not wired into the benchmark yet'));
}
