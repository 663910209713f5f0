/**
 * Jamf Pro, through the Jamf Pro API with an API client (client credentials; privilege "Read
 * Computer Inventory Collection", and "Read Smart Computer Groups" for compliantGroup).
 *
 * - token: POST {url}/api/oauth/token
 * - one computer: GET {url}/api/v1/computers-inventory?section=GENERAL&section=HARDWARE&
 *   section=OPERATING_SYSTEM[&section=GROUP_MEMBERSHIPS]&filter=hardware.serialNumber=="…"
 * - all computers: the same without the filter, `page`/`page-size`, sorted by id so pages are stable
 *
 * managed = general.remoteManagement.managed. Jamf has no compliance verdict of its own: with
 * `compliantGroup`, membership of that (smart) group is the verdict; without it compliance is unknown.
 */
import type { JamfManagerSpec } from '../../lib/spec/device-manager.ts';
import { authorizedGet, checkSerial, clientCredentialsToken, failureMessage, httpContext, isRecord, MdmError, rsqlString, statusError, stringField, timeField } from './http.ts';
import type { AdapterDeps, DeviceManagerAdapter, MdmDeviceState } from './types.ts';

const PAGE_SIZE = 200;
const MAX_PAGES = 5000;

export function createJamfAdapter(spec: JamfManagerSpec, deps: AdapterDeps & { name: string }): DeviceManagerAdapter {
  const ctx = httpContext('Jamf Pro', deps);
  const source = `jamf:${deps.name}`;
  const tokens = clientCredentialsToken(ctx, { tokenUrl: `${spec.url}/api/oauth/token`, clientId: spec.clientId, clientSecret: spec.clientSecret }, deps.resolveSecret);
  const sections = ['GENERAL', 'HARDWARE', 'OPERATING_SYSTEM', ...(spec.compliantGroup === undefined ? [] : ['GROUP_MEMBERSHIPS'])];

  function query(params: Record<string, string>): string {
    const q = new URLSearchParams();
    for (const s of sections) q.append('section', s);
    for (const [k, v] of Object.entries(params)) q.set(k, v);
    return `${spec.url}/api/v1/computers-inventory?${q.toString()}`;
  }

  async function page(url: string, what: string): Promise<{ total: number; results: unknown[] }> {
    const res = await authorizedGet(ctx, tokens, url, what);
    if (res.status !== 200) throw statusError(ctx, what, res.status);
    if (!isRecord(res.body) || !Array.isArray(res.body.results) || typeof res.body.totalCount !== 'number') {
      throw new MdmError('MDM_BAD_RESPONSE', `Jamf Pro's answer to ${what} has no results and totalCount`);
    }
    return { total: res.body.totalCount, results: res.body.results };
  }

  function toState(computer: unknown): MdmDeviceState | undefined {
    if (!isRecord(computer)) return undefined;
    const hardware = isRecord(computer.hardware) ? computer.hardware : {};
    const general = isRecord(computer.general) ? computer.general : {};
    const system = isRecord(computer.operatingSystem) ? computer.operatingSystem : {};
    const serial = stringField(hardware.serialNumber);
    if (serial === undefined) return undefined;
    const remote = isRecord(general.remoteManagement) ? general.remoteManagement : {};
    let compliant: boolean | undefined;
    if (spec.compliantGroup !== undefined) {
      const groups = Array.isArray(computer.groupMemberships) ? computer.groupMemberships : [];
      compliant = groups.some((g) => isRecord(g) && g.groupName === spec.compliantGroup);
    }
    const os = [stringField(system.name), stringField(system.version)].filter((s) => s !== undefined).join(' ');
    const lastSeen = timeField(general.lastContactTime);
    return { serial, managed: remote.managed === true, compliant, ...(os === '' ? {} : { os }), ...(lastSeen === undefined ? {} : { lastSeen }), source };
  }

  return {
    source,
    canList: true,

    async lookup(serial: string): Promise<MdmDeviceState | undefined> {
      checkSerial(serial);
      const { results } = await page(query({ page: '0', 'page-size': '100', filter: `hardware.serialNumber==${rsqlString(serial)}` }), 'the computer lookup');
      let best: MdmDeviceState | undefined;
      for (const computer of results) {
        const state = toState(computer);
        if (state === undefined || state.serial.toLowerCase() !== serial.toLowerCase()) continue;
        // A managed record beats a stale unmanaged one; then the latest check-in.
        if (best === undefined || Number(state.managed) > Number(best.managed) || (state.managed === best.managed && (state.lastSeen ?? '') > (best.lastSeen ?? ''))) best = state;
      }
      return best;
    },

    async *list(): AsyncIterable<MdmDeviceState> {
      const size = deps.pageSize ?? PAGE_SIZE;
      for (let n = 0; n < MAX_PAGES; n++) {
        const { total, results } = await page(query({ page: String(n), 'page-size': String(size), sort: 'id:asc' }), 'the computer list');
        for (const computer of results) {
          const state = toState(computer);
          if (state !== undefined) yield state;
        }
        if (results.length < size || (n + 1) * size >= total) return;
      }
      throw new MdmError('MDM_BAD_RESPONSE', `Jamf Pro kept sending pages after ${MAX_PAGES}`);
    },

    async test(): Promise<{ ok: boolean; message: string }> {
      try {
        const { total } = await page(query({ page: '0', 'page-size': '1' }), 'a test read of the computer inventory');
        return { ok: true, message: `signed in to ${spec.url}; the inventory lists ${total} computers` };
      } catch (err) {
        return { ok: false, message: failureMessage(err) };
      }
    },
  };
}
