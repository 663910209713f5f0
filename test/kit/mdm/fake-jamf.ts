/**
 * A fake of the parts of the Jamf Pro API that the Jamf adapter calls, as documented:
 *
 * - POST /api/oauth/token (API client credentials, form): 200 `{access_token, scope, token_type,
 *   expires_in}`, or 401 `{error: "invalid_client"}`
 * - GET /api/v1/computers-inventory with `section=` (GENERAL, HARDWARE, OPERATING_SYSTEM,
 *   GROUP_MEMBERSHIPS), `page`, `page-size`, `sort`, and an RSQL `filter` of exactly
 *   `hardware.serialNumber=="…"` (backslash escapes; anything else is 400):
 *   `{totalCount, results: [{id, general: {name, lastContactTime, remoteManagement: {managed}},
 *   hardware: {serialNumber}, operatingSystem: {name, version}, groupMemberships: [...]}]}`.
 *   Only the requested sections are filled (others are null, as Jamf does).
 */
import type { FakeReply, JsonServer, RateLimiter, TokenIssuer } from './common.ts';
import { form, rateLimiter, startJsonServer, tokenIssuer } from './common.ts';

export interface JamfComputer {
  id: string;
  name: string;
  serialNumber: string;
  managed: boolean;
  osName: string;
  osVersion: string;
  lastContactTime: string;
  groups: string[];
}

export interface FakeJamf extends JsonServer {
  clientId: string;
  clientSecret: string;
  tokens: TokenIssuer;
  rateLimit: RateLimiter;
  computers: Map<string, JamfComputer>;
  addComputer(computer: Partial<JamfComputer> & { serialNumber: string }): JamfComputer;
  /** Puts the computer into, or takes it out of, a (smart) group. */
  setGroup(serial: string, group: string, member: boolean): void;
  setManaged(serial: string, managed: boolean): void;
}

const SECTIONS = new Set(['GENERAL', 'HARDWARE', 'OPERATING_SYSTEM', 'GROUP_MEMBERSHIPS', 'USER_AND_LOCATION', 'DISK_ENCRYPTION', 'SECURITY']);

export async function startFakeJamf(options: { clientId?: string; clientSecret?: string } = {}): Promise<FakeJamf> {
  const clientId = options.clientId ?? 'jamf-api-client';
  const clientSecret = options.clientSecret ?? 'jamf-secret-value';
  const computers = new Map<string, JamfComputer>();
  const limiter = rateLimiter();
  const tokens = tokenIssuer({
    clientId,
    clientSecret,
    lifetimeSec: 1199,
    refuse: (reason) => ({ status: reason === 'invalid_client' ? 401 : 400, body: { error: reason } }),
  });
  const jamfError = (status: number, code: string, description: string): FakeReply => ({ status, body: { httpStatus: status, errors: [{ code, description, id: '0', field: null }] } });

  const server = await startJsonServer((req) => {
    const path = req.url.pathname;
    if (req.method === 'POST' && path === '/api/oauth/token') return tokens.issue(form(req.body));
    if (req.method === 'GET' && path === '/api/v1/computers-inventory') {
      if (!tokens.check(req.headers.authorization)) return jamfError(401, 'INVALID_TOKEN', 'Unauthorized');
      const limited = limiter.take();
      if (limited !== undefined) return limited;
      return inventory(req.url.searchParams);
    }
    return jamfError(404, 'NOT_FOUND', 'Not found');
  });

  function inventory(q: URLSearchParams): FakeReply {
    const sections = q.getAll('section');
    for (const s of sections) if (!SECTIONS.has(s)) return jamfError(400, 'INVALID_FIELD', `invalid section ${s}`);
    let list = [...computers.values()].sort((a, b) => Number(a.id) - Number(b.id));
    const filter = q.get('filter');
    if (filter !== null) {
      const m = /^hardware\.serialNumber=="((?:[^"\\]|\\.)*)"$/.exec(filter);
      if (m === null) return jamfError(400, 'INVALID_RSQL_FILTER', 'Invalid RSQL filter');
      const wanted = m[1].replace(/\\(.)/g, '$1').toLowerCase();
      list = list.filter((c) => c.serialNumber.toLowerCase() === wanted);
    }
    const page = Number(q.get('page') ?? 0);
    const size = Number(q.get('page-size') ?? 100);
    if (!Number.isInteger(page) || page < 0 || !Number.isInteger(size) || size < 1 || size > 2000) return jamfError(400, 'INVALID_FIELD', 'invalid paging');
    const has = (s: string): boolean => sections.includes(s);
    const results = list.slice(page * size, page * size + size).map((c) => ({
      id: c.id,
      udid: `UDID-${c.id}`,
      general: has('GENERAL') ? { name: c.name, lastContactTime: c.lastContactTime, remoteManagement: { managed: c.managed, managementUsername: 'jamfadmin' } } : null,
      hardware: has('HARDWARE') ? { serialNumber: c.serialNumber, model: 'MacBook Pro' } : null,
      operatingSystem: has('OPERATING_SYSTEM') ? { name: c.osName, version: c.osVersion } : null,
      groupMemberships: has('GROUP_MEMBERSHIPS') ? c.groups.map((g, i) => ({ groupId: String(i + 1), groupName: g, smartGroup: true })) : null,
    }));
    return { status: 200, body: { totalCount: list.length, results } };
  }

  let nextId = 1;
  const bySerial = (serial: string): JamfComputer[] => [...computers.values()].filter((c) => c.serialNumber === serial);
  return {
    ...server,
    clientId,
    clientSecret,
    tokens,
    rateLimit: limiter,
    computers,
    addComputer(computer): JamfComputer {
      const full: JamfComputer = {
        id: String(nextId++),
        name: `mac-${computer.serialNumber}`,
        managed: true,
        osName: 'macOS',
        osVersion: '15.1.1',
        lastContactTime: '2026-11-27T09:30:00.000Z',
        groups: [],
        ...computer,
      };
      computers.set(full.id, full);
      return full;
    },
    setGroup(serial, group, member): void {
      for (const c of bySerial(serial)) c.groups = member ? [...new Set([...c.groups, group])] : c.groups.filter((g) => g !== group);
    },
    setManaged(serial, managed): void {
      for (const c of bySerial(serial)) c.managed = managed;
    },
  };
}
