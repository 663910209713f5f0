/**
 * A fake of a plain JSON device-lookup API, for the generic HTTP adapter: GET /api/devices/{serial}
 * with `X-Api-Key` → 200 `{device: {serial, enrolled, compliance, riskScore, os, lastCheckIn}}`,
 * 404 for an unknown serial, 401 for a missing or wrong key, 429 with Retry-After once on request.
 */
import type { JsonServer, RateLimiter } from './common.ts';
import { rateLimiter, startJsonServer } from './common.ts';

export interface HttpDevice {
  serial: string;
  enrolled: boolean;
  compliance: string;
  riskScore: number | string | null;
  os: string;
  lastCheckIn: string;
}

export interface FakeHttpMdm extends JsonServer {
  apiKey: string;
  rateLimit: RateLimiter;
  devices: Map<string, HttpDevice>;
  addDevice(device: Partial<HttpDevice> & { serial: string }): HttpDevice;
  setCompliance(serial: string, compliance: string): void;
}

export async function startFakeHttpMdm(options: { apiKey?: string } = {}): Promise<FakeHttpMdm> {
  const apiKey = options.apiKey ?? 'http-mdm-api-key';
  const devices = new Map<string, HttpDevice>();
  const limiter = rateLimiter();
  const server = await startJsonServer((req) => {
    const m = /^\/api\/devices\/([^/]+)$/.exec(req.url.pathname);
    if (req.method !== 'GET' || m === null) return { status: 404, body: { error: 'not found' } };
    if (req.headers['x-api-key'] !== apiKey) return { status: 401, body: { error: 'unauthorized' } };
    const limited = limiter.take();
    if (limited !== undefined) return limited;
    const device = devices.get(decodeURIComponent(m[1]));
    return device === undefined ? { status: 404, body: { error: 'no such device' } } : { status: 200, body: { device } };
  });
  return {
    ...server,
    apiKey,
    rateLimit: limiter,
    devices,
    addDevice(device): HttpDevice {
      const full: HttpDevice = { enrolled: true, compliance: 'compliant', riskScore: 10, os: 'Ubuntu 24.04', lastCheckIn: '2026-11-27T11:00:00Z', ...device };
      devices.set(full.serial, full);
      return full;
    },
    setCompliance(serial, compliance): void {
      const d = devices.get(serial);
      if (d !== undefined) d.compliance = compliance;
    },
  };
}
