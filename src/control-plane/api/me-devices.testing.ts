/**
 * Test support only: a stand-in for the trust engine (H8's createTrustEngine) as the device routes
 * see it. `rescore` writes `device.trust` like the engine would, from a level a test sets per device,
 * or by default: never reported → AlwaysDeny `stale`, reported → High.
 */
import type { DeviceTrustHooks } from './me-devices.ts';
import type { Store } from '../store/index.ts';

export interface FakeVerdict {
  level: 'High' | 'Medium' | 'Low' | 'AlwaysDeny';
  reasons: string[];
  explanation: string;
  stale?: boolean;
}

export interface FakeTrustEngine extends DeviceTrustHooks {
  /** What rescore writes for this device from now on; undefined: back to the default. */
  set(deviceId: string, verdict: FakeVerdict | undefined): void;
  rescored: string[];
  lookedUp: string[];
}

export function fakeTrustEngine(store: Store): FakeTrustEngine {
  const verdicts = new Map<string, FakeVerdict>();
  const rescored: string[] = [];
  const lookedUp: string[] = [];
  return {
    rescored,
    lookedUp,
    set(deviceId, verdict) {
      if (verdict === undefined) verdicts.delete(deviceId);
      else verdicts.set(deviceId, verdict);
    },
    async rescore(deviceId) {
      rescored.push(deviceId);
      const device = await store.getDevice(deviceId);
      if (device === undefined) return undefined;
      const verdict = verdicts.get(deviceId) ?? (device.postureAt === null
        ? { level: 'AlwaysDeny', reasons: ['stale'], explanation: 'AlwaysDeny: no posture report yet', stale: true }
        : { level: 'High', reasons: [], explanation: 'High: every factor is met' });
      const trust = {
        ...verdict,
        stale: verdict.stale ?? false,
        factors: [{ type: 'firewall', profile: 'default', met: verdict.level === 'High', effect: 'Low', observed: verdict.level === 'High', required: 'on', ...(verdict.level === 'High' ? {} : { reason: 'firewall-off', remedy: 'turn the firewall on' }) }],
        scoredAt: new Date().toISOString(),
      };
      await store.updateDevice(deviceId, { trust }, { actor: 'system:trust' });
      return trust;
    },
    lookupNow(serial) {
      lookedUp.push(serial);
      return Promise.resolve([]);
    },
  };
}
