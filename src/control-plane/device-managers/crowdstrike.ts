/**
 * CrowdStrike Falcon, through its OAuth2 API with an API client (scopes Hosts: Read and Zero Trust
 * Assessment: Read), at the region's base URL.
 *
 * - token: POST {url}/oauth2/token (client_id, client_secret)
 * - one device: GET /devices/queries/devices/v1?filter=serial_number:'…' → device ids, then
 *   GET /devices/entities/devices/v2?ids=… (details) and
 *   GET /zero-trust-assessment/entities/assessments/v1?ids=… (the ZTA score)
 * - all devices: the query without a filter, paged by offset and limit, details and scores in batches
 *
 * managed = a Falcon sensor is present for the serial. The score is the ZTA overall score (1–100);
 * with `minimumScore` the device is compliant when its score reaches it, without one (or without an
 * assessment yet) compliance is unknown.
 */
import type { CrowdStrikeManagerSpec } from '../../lib/spec/device-manager.ts';
import { authorizedGet, checkSerial, clientCredentialsToken, failureMessage, fqlString, httpContext, isRecord, MdmError, statusError, stringField, timeField } from './http.ts';
import type { AdapterDeps, DeviceManagerAdapter, MdmDeviceState } from './types.ts';

const PAGE_SIZE = 500;
/** Ids per entities / assessments request (the assessments API takes at most 100). */
const BATCH = 100;
const MAX_PAGES = 2000;

export function createCrowdStrikeAdapter(spec: CrowdStrikeManagerSpec, deps: AdapterDeps & { name: string }): DeviceManagerAdapter {
  const ctx = httpContext('CrowdStrike', deps);
  const source = `crowdstrike:${deps.name}`;
  const tokens = clientCredentialsToken(ctx, { tokenUrl: `${spec.url}/oauth2/token`, clientId: spec.clientId, clientSecret: spec.clientSecret, omitGrantType: true }, deps.resolveSecret);

  function resourcesOf(body: unknown, what: string): unknown[] {
    if (!isRecord(body) || !Array.isArray(body.resources)) throw new MdmError('MDM_BAD_RESPONSE', `CrowdStrike's answer to ${what} has no resources`);
    return body.resources;
  }

  async function queryIds(params: Record<string, string>, what: string): Promise<{ ids: string[]; total: number }> {
    const res = await authorizedGet(ctx, tokens, `${spec.url}/devices/queries/devices/v1?${new URLSearchParams(params).toString()}`, what);
    if (res.status !== 200) throw statusError(ctx, what, res.status);
    const ids = resourcesOf(res.body, what).filter((id): id is string => typeof id === 'string' && /^[0-9a-f]{32}$/i.test(id));
    const meta = isRecord(res.body) && isRecord(res.body.meta) ? res.body.meta : {};
    const pagination = isRecord(meta.pagination) ? meta.pagination : {};
    return { ids, total: typeof pagination.total === 'number' ? pagination.total : ids.length };
  }

  function idsQuery(ids: string[]): string {
    const q = new URLSearchParams();
    for (const id of ids) q.append('ids', id);
    return q.toString();
  }

  async function details(ids: string[]): Promise<Array<Record<string, unknown>>> {
    const what = 'the device details';
    const res = await authorizedGet(ctx, tokens, `${spec.url}/devices/entities/devices/v2?${idsQuery(ids)}`, what);
    if (res.status !== 200) throw statusError(ctx, what, res.status);
    return resourcesOf(res.body, what).filter(isRecord);
  }

  async function scores(ids: string[]): Promise<Map<string, number>> {
    const what = 'the Zero Trust Assessment';
    const res = await authorizedGet(ctx, tokens, `${spec.url}/zero-trust-assessment/entities/assessments/v1?${idsQuery(ids)}`, what);
    const out = new Map<string, number>();
    // 404: none of these devices has an assessment yet.
    if (res.status === 404) return out;
    if (res.status !== 200) throw statusError(ctx, what, res.status);
    for (const r of resourcesOf(res.body, what)) {
      if (!isRecord(r) || typeof r.aid !== 'string' || !isRecord(r.assessment)) continue;
      const overall = r.assessment.overall;
      if (typeof overall === 'number' && Number.isFinite(overall) && overall >= 0 && overall <= 100) out.set(r.aid, overall);
    }
    return out;
  }

  async function states(ids: string[]): Promise<MdmDeviceState[]> {
    const out: MdmDeviceState[] = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const batch = ids.slice(i, i + BATCH);
      const [hosts, byAid] = await Promise.all([details(batch), scores(batch)]);
      for (const host of hosts) {
        const serial = stringField(host.serial_number);
        const aid = stringField(host.device_id);
        if (serial === undefined || aid === undefined) continue;
        const score = byAid.get(aid);
        const os = [stringField(host.platform_name), stringField(host.os_version)].filter((s) => s !== undefined).join(' ');
        const lastSeen = timeField(host.last_seen);
        out.push({
          serial,
          managed: true,
          compliant: spec.minimumScore === undefined || score === undefined ? undefined : score >= spec.minimumScore,
          ...(score === undefined ? {} : { score }),
          ...(os === '' ? {} : { os }),
          ...(lastSeen === undefined ? {} : { lastSeen }),
          source,
        });
      }
    }
    return out;
  }

  return {
    source,
    canList: true,

    async lookup(serial: string): Promise<MdmDeviceState | undefined> {
      checkSerial(serial);
      const { ids } = await queryIds({ filter: `serial_number:${fqlString(serial)}`, limit: '20' }, 'the device query');
      if (ids.length === 0) return undefined;
      let best: MdmDeviceState | undefined;
      // Several sensors for one serial (a reinstall): the one seen last speaks for the device.
      for (const state of await states(ids)) {
        if (state.serial !== serial) continue;
        if (best === undefined || (state.lastSeen ?? '') > (best.lastSeen ?? '')) best = state;
      }
      return best;
    },

    async *list(): AsyncIterable<MdmDeviceState> {
      const size = deps.pageSize ?? PAGE_SIZE;
      for (let n = 0, offset = 0; ; n++) {
        if (n >= MAX_PAGES) throw new MdmError('MDM_BAD_RESPONSE', `CrowdStrike kept sending pages after ${MAX_PAGES}`);
        const { ids, total } = await queryIds({ limit: String(size), offset: String(offset) }, 'the device list');
        for (const state of await states(ids)) yield state;
        offset += ids.length;
        if (ids.length === 0 || offset >= total) return;
      }
    },

    async test(): Promise<{ ok: boolean; message: string }> {
      try {
        const { total } = await queryIds({ limit: '1' }, 'a test device query');
        return { ok: true, message: `signed in to ${spec.url}; Falcon lists ${total} hosts` };
      } catch (err) {
        return { ok: false, message: failureMessage(err) };
      }
    },
  };
}
