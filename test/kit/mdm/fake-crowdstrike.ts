/**
 * A fake of the parts of the CrowdStrike Falcon API that the CrowdStrike adapter calls, as documented:
 *
 * - POST /oauth2/token (form client_id, client_secret): 201 `{access_token, token_type, expires_in}`,
 *   or 401 `{errors: [{code: 401, message: "access denied, authorization failed"}]}`
 * - GET /devices/queries/devices/v1 with an FQL `filter` of exactly `serial_number:'…'` (backslash
 *   escapes; anything else is 400), `limit`, `offset`: `{meta: {pagination: {offset, limit, total}},
 *   resources: [device ids], errors: []}`
 * - GET /devices/entities/devices/v2?ids=…: `{resources: [{device_id, serial_number, platform_name,
 *   os_version, last_seen, status}]}`
 * - GET /zero-trust-assessment/entities/assessments/v1?ids=…: `{resources: [{aid, assessment:
 *   {overall, os, sensor_config, version}}]}`; ids without an assessment are left out (404 when none has one)
 *
 * Rate limiting answers 429 with `X-RateLimit-RetryAfter` (epoch seconds), as Falcon does.
 */
import type { FakeReply, JsonServer, TokenIssuer } from './common.ts';
import { form, startJsonServer, tokenIssuer } from './common.ts';

export interface FalconHost {
  deviceId: string;
  serialNumber: string;
  platformName: string;
  osVersion: string;
  lastSeen: string;
  /** The ZTA overall score (1–100); undefined: no assessment yet. */
  score: number | undefined;
}

export interface FakeCrowdStrike extends JsonServer {
  clientId: string;
  clientSecret: string;
  tokens: TokenIssuer;
  hosts: Map<string, FalconHost>;
  addHost(host: Partial<FalconHost> & { serialNumber: string }): FalconHost;
  setScore(serial: string, score: number | undefined): void;
  /** The next API request gets 429 with X-RateLimit-RetryAfter = now + seconds. */
  rateLimitOnce(seconds: number, nowMs: number): void;
}

export async function startFakeCrowdStrike(options: { clientId?: string; clientSecret?: string } = {}): Promise<FakeCrowdStrike> {
  const clientId = options.clientId ?? 'falcon-client';
  const clientSecret = options.clientSecret ?? 'falcon-secret-value';
  const hosts = new Map<string, FalconHost>();
  let limited: number | undefined;
  const tokens = tokenIssuer({
    clientId,
    clientSecret,
    lifetimeSec: 1799,
    okStatus: 201,
    requireGrantType: false,
    refuse: () => ({ status: 401, body: { meta: {}, errors: [{ code: 401, message: 'access denied, authorization failed' }] } }),
  });
  const falcon = (status: number, resources: unknown[], extra: Record<string, unknown> = {}, errors: unknown[] = []): FakeReply => ({
    status,
    body: { meta: { query_time: 0.01, trace_id: 'trace', ...extra }, resources, errors },
  });

  const server = await startJsonServer((req) => {
    const path = req.url.pathname;
    const q = req.url.searchParams;
    if (req.method === 'POST' && path === '/oauth2/token') return tokens.issue(form(req.body));
    if (!tokens.check(req.headers.authorization)) return falcon(401, [], {}, [{ code: 401, message: 'access denied, invalid bearer token' }]);
    if (limited !== undefined) {
      const at = limited;
      limited = undefined;
      return { status: 429, headers: { 'x-ratelimit-retryafter': String(at), 'x-ratelimit-remaining': '0' }, body: { errors: [{ code: 429, message: 'API rate limit exceeded.' }] } };
    }
    if (req.method === 'GET' && path === '/devices/queries/devices/v1') {
      let list = [...hosts.values()];
      const filter = q.get('filter');
      if (filter !== null) {
        const m = /^serial_number:'((?:[^'\\]|\\.)*)'$/.exec(filter);
        if (m === null) return falcon(400, [], {}, [{ code: 400, message: 'Invalid filter' }]);
        const wanted = m[1].replace(/\\(.)/g, '$1');
        list = list.filter((h) => h.serialNumber === wanted);
      }
      const limit = Number(q.get('limit') ?? 100);
      const offset = Number(q.get('offset') ?? 0);
      if (!Number.isInteger(limit) || limit < 1 || limit > 5000 || !Number.isInteger(offset) || offset < 0) return falcon(400, [], {}, [{ code: 400, message: 'invalid paging' }]);
      return falcon(200, list.slice(offset, offset + limit).map((h) => h.deviceId), { pagination: { offset, limit, total: list.length } });
    }
    if (req.method === 'GET' && path === '/devices/entities/devices/v2') {
      const ids = q.getAll('ids');
      if (ids.length === 0 || ids.length > 5000) return falcon(400, [], {}, [{ code: 400, message: 'ids required' }]);
      const found = ids.map((id) => hosts.get(id)).filter((h) => h !== undefined);
      return falcon(200, found.map((h) => ({ device_id: h.deviceId, serial_number: h.serialNumber, platform_name: h.platformName, os_version: h.osVersion, last_seen: h.lastSeen, status: 'normal' })));
    }
    if (req.method === 'GET' && path === '/zero-trust-assessment/entities/assessments/v1') {
      const ids = q.getAll('ids');
      if (ids.length === 0 || ids.length > 100) return falcon(400, [], {}, [{ code: 400, message: 'between 1 and 100 ids' }]);
      const found = ids.map((id) => hosts.get(id)).filter((h) => h !== undefined && h.score !== undefined) as FalconHost[];
      const resources = found.map((h) => ({ aid: h.deviceId, cid: 'cid', assessment: { overall: h.score, os: h.score, sensor_config: h.score, version: '3.6.1' }, modified_time: h.lastSeen }));
      return found.length === 0 ? falcon(404, [], {}, [{ code: 404, message: 'No assessments found' }]) : falcon(200, resources);
    }
    return falcon(404, [], {}, [{ code: 404, message: 'Not Found' }]);
  });

  let n = 1;
  const bySerial = (serial: string): FalconHost[] => [...hosts.values()].filter((h) => h.serialNumber === serial);
  return {
    ...server,
    clientId,
    clientSecret,
    tokens,
    hosts,
    addHost(host): FalconHost {
      const full: FalconHost = {
        deviceId: `${(n++).toString(16).padStart(8, '0')}aaaabbbbccccddddeeeeffff`,
        platformName: 'Mac',
        osVersion: 'Sequoia (15)',
        lastSeen: '2026-11-27T11:30:00Z',
        score: 80,
        ...host,
      };
      hosts.set(full.deviceId, full);
      return full;
    },
    setScore(serial, score): void {
      for (const h of bySerial(serial)) h.score = score;
    },
    rateLimitOnce(seconds, nowMs): void {
      limited = Math.floor(nowMs / 1000) + seconds;
    },
  };
}
