import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { UpgradeContext } from './server.ts';
import { refuseUpgrade } from './server.ts';
import { failure } from './status.ts';
import type { FakeKubeUser } from './types.ts';

export interface UpgradeTarget {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  query: URLSearchParams;
  namespace: string;
  pod: string;
  user: FakeKubeUser;
}

export function handleExecUpgrade(_ctx: UpgradeContext, target: UpgradeTarget): void {
  refuseUpgrade(target.socket, failure(501, 'NotImplemented', 'exec is coming in the next commit'));
}
