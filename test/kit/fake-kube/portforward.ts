import type { UpgradeContext } from './server.ts';
import { refuseUpgrade } from './server.ts';
import { failure } from './status.ts';
import type { UpgradeTarget } from './exec-transport.ts';

export class PortForwardTargets {
  private readonly targets = new Map<string, number>();
  set(ns: string, pod: string, podPort: number, localPort: number): void {
    this.targets.set(`${ns}/${pod}/${podPort}`, localPort);
  }
  get(ns: string, pod: string, podPort: number): number | undefined {
    return this.targets.get(`${ns}/${pod}/${podPort}`);
  }
}

export function handlePortForwardUpgrade(_ctx: UpgradeContext, target: UpgradeTarget): void {
  refuseUpgrade(target.socket, failure(501, 'NotImplemented', 'port-forward is coming in the next commit'));
}
