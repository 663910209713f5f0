/**
 * Microsoft Intune through Microsoft Graph v1.0 (`deviceManagement/managedDevices`), with an app
 * registration's client credentials (application permission DeviceManagementManagedDevices.Read.All).
 *
 * - token: POST {loginUrl}/{tenantId}/oauth2/v2.0/token, scope `{graphUrl}/.default`
 * - one device: GET {graphUrl}/v1.0/deviceManagement/managedDevices?$filter=serialNumber eq '…'&$select=…
 * - all devices: the same without $filter, following @odata.nextLink (only to the Graph origin)
 *
 * complianceState `compliant` and `inGracePeriod` (non-compliant but still allowed by Intune's own
 * conditional access until the grace period ends) count as compliant; `noncompliant`, `conflict` and
 * `error` as not compliant; `unknown` and `configManager` leave compliance unknown. A device whose
 * managementState says it is being retired or wiped counts as unmanaged. When one serial has several
 * records (re-enrolment), the one that synced last wins.
 */
import type { IntuneManagerSpec } from '../../lib/spec/device-manager.ts';
import { authorizedGet, checkSerial, clientCredentialsToken, failureMessage, httpContext, isRecord, MdmError, odataString, sameOrigin, statusError, stringField, timeField } from './http.ts';
import type { AdapterDeps, DeviceManagerAdapter, MdmDeviceState } from './types.ts';

const SELECT = 'id,deviceName,serialNumber,complianceState,managementState,operatingSystem,osVersion,lastSyncDateTime';
const PAGE_SIZE = 500;
/** A runaway nextLink chain stops here (500 × 2,000 = a million devices). */
const MAX_PAGES = 2000;

const COMPLIANT = new Set(['compliant', 'inGracePeriod']);
const NONCOMPLIANT = new Set(['noncompliant', 'conflict', 'error']);
const UNMANAGED = new Set(['retirePending', 'retireFailed', 'wipePending', 'wipeFailed', 'unhealthy', 'deletePending', 'retireIssued', 'wipeIssued', 'wipeCanceled', 'retireCanceled', 'discovered']);

export function createIntuneAdapter(spec: IntuneManagerSpec, deps: AdapterDeps & { name: string }): DeviceManagerAdapter {
  const ctx = httpContext('Intune', deps);
  const source = `intune:${deps.name}`;
  const tokens = clientCredentialsToken(
    ctx,
    {
      tokenUrl: `${spec.loginUrl}/${encodeURIComponent(spec.tenantId)}/oauth2/v2.0/token`,
      clientId: spec.clientId,
      clientSecret: spec.clientSecret,
      extra: { scope: `${spec.graphUrl}/.default` },
    },
    deps.resolveSecret,
  );
  const base = `${spec.graphUrl}/v1.0/deviceManagement/managedDevices`;

  async function page(url: string, what: string): Promise<{ devices: unknown[]; next: string | undefined }> {
    const res = await authorizedGet(ctx, tokens, url, what);
    if (res.status !== 200) throw statusError(ctx, what, res.status);
    if (!isRecord(res.body) || !Array.isArray(res.body.value)) throw new MdmError('MDM_BAD_RESPONSE', `Intune's answer to ${what} has no value list`);
    const next = res.body['@odata.nextLink'];
    if (next !== undefined && (typeof next !== 'string' || !sameOrigin(next, spec.graphUrl))) {
      throw new MdmError('MDM_BAD_RESPONSE', `Intune's next-page link for ${what} does not point to ${spec.graphUrl}`);
    }
    return { devices: res.body.value, next };
  }

  function toState(device: unknown): MdmDeviceState | undefined {
    if (!isRecord(device)) return undefined;
    const serial = stringField(device.serialNumber);
    if (serial === undefined) return undefined;
    const compliance = stringField(device.complianceState);
    const management = stringField(device.managementState);
    const os = [stringField(device.operatingSystem), stringField(device.osVersion)].filter((s) => s !== undefined).join(' ');
    const lastSeen = timeField(device.lastSyncDateTime);
    return {
      serial,
      managed: management === undefined || !UNMANAGED.has(management),
      compliant: compliance === undefined ? undefined : COMPLIANT.has(compliance) ? true : NONCOMPLIANT.has(compliance) ? false : undefined,
      ...(os === '' ? {} : { os }),
      ...(lastSeen === undefined ? {} : { lastSeen }),
      source,
    };
  }

  return {
    source,
    canList: true,

    async lookup(serial: string): Promise<MdmDeviceState | undefined> {
      checkSerial(serial);
      const query = new URLSearchParams({ $filter: `serialNumber eq ${odataString(serial)}`, $select: SELECT });
      let url: string | undefined = `${base}?${query.toString()}`;
      let best: MdmDeviceState | undefined;
      for (let n = 0; url !== undefined && n < 10; n++) {
        const { devices, next } = await page(url, 'the device lookup');
        for (const device of devices) {
          const state = toState(device);
          // Graph's filter is case-insensitive; the answer must still be this device.
          if (state === undefined || state.serial.toLowerCase() !== serial.toLowerCase()) continue;
          if (best === undefined || (state.lastSeen ?? '') > (best.lastSeen ?? '')) best = state;
        }
        url = next;
      }
      return best;
    },

    async *list(): AsyncIterable<MdmDeviceState> {
      let url: string | undefined = `${base}?${new URLSearchParams({ $select: SELECT, $top: String(deps.pageSize ?? PAGE_SIZE) }).toString()}`;
      for (let n = 0; url !== undefined; n++) {
        if (n >= MAX_PAGES) throw new MdmError('MDM_BAD_RESPONSE', `Intune kept sending next-page links after ${MAX_PAGES} pages`);
        const { devices, next } = await page(url, 'the device list');
        for (const device of devices) {
          const state = toState(device);
          if (state !== undefined) yield state;
        }
        url = next;
      }
    },

    async test(): Promise<{ ok: boolean; message: string }> {
      try {
        await page(`${base}?${new URLSearchParams({ $select: 'id', $top: '1' }).toString()}`, 'a test read of managedDevices');
        return { ok: true, message: `signed in to tenant ${spec.tenantId} and read managedDevices from ${spec.graphUrl}` };
      } catch (err) {
        return { ok: false, message: failureMessage(err) };
      }
    },
  };
}
