/**
 * A fake of the parts of Microsoft Entra ID and Microsoft Graph that the Intune adapter calls, as
 * documented:
 *
 * - POST /{tenant}/oauth2/v2.0/token (client credentials; scope must be `{graph}/.default`):
 *   200 `{token_type, expires_in, access_token}`, or 401 `{error: "invalid_client", …}`
 * - GET /v1.0/deviceManagement/managedDevices with `$filter=serialNumber eq '…'` (OData string,
 *   quotes doubled; any other filter is 400), `$select`, `$top`, and `@odata.nextLink` paging
 *   (`$skiptoken`). A missing or unknown bearer token gets 401 `InvalidAuthenticationToken`.
 *
 * One server plays both hosts: use its url as loginUrl and graphUrl.
 */
import type { FakeReply, JsonServer, RateLimiter, TokenIssuer } from './common.ts';
import { form, rateLimiter, startJsonServer, tokenIssuer } from './common.ts';

export interface IntuneDevice {
  id: string;
  deviceName: string;
  serialNumber: string;
  /** unknown | compliant | noncompliant | conflict | error | inGracePeriod | configManager */
  complianceState: string;
  managementState: string;
  operatingSystem: string;
  osVersion: string;
  lastSyncDateTime: string;
}

export interface FakeIntune extends JsonServer {
  tenantId: string;
  clientId: string;
  clientSecret: string;
  tokens: TokenIssuer;
  rateLimit: RateLimiter;
  devices: Map<string, IntuneDevice>;
  addDevice(device: Partial<IntuneDevice> & { serialNumber: string }): IntuneDevice;
  /** Flips every record of this serial to a compliance state. */
  setCompliance(serial: string, state: string): void;
}

export async function startFakeIntune(
  options: { tenantId?: string; clientId?: string; clientSecret?: string; defaultPageSize?: number; tls?: { certPem: string; keyPem: string } } = {},
): Promise<FakeIntune> {
  const tenantId = options.tenantId ?? 'contoso.onmicrosoft.com';
  const clientId = options.clientId ?? 'intune-client';
  const clientSecret = options.clientSecret ?? 'intune-secret-value';
  const devices = new Map<string, IntuneDevice>();
  const limiter = rateLimiter();
  let url = '';
  let issuer: TokenIssuer | undefined;
  const tokens = (): TokenIssuer =>
    (issuer ??= tokenIssuer({
      clientId,
      clientSecret,
      // Entra takes the resource's app ID URI; the fake takes any origin's /.default.
      require: { scope: /^https?:\/\/[^/]+\/\.default$/ },
      refuse: (reason) =>
        reason === 'invalid_client'
          ? { status: 401, body: { error: 'invalid_client', error_description: 'AADSTS7000215: Invalid client secret provided.' } }
          : { status: 400, body: { error: 'invalid_request', error_description: 'AADSTS900144: The request body must contain the following parameter.' } },
    }));

  const graphError = (status: number, code: string, message: string): FakeReply => ({ status, body: { error: { code, message } } });

  const server = await startJsonServer((req) => {
    const path = req.url.pathname;
    if (req.method === 'POST' && path === `/${tenantId}/oauth2/v2.0/token`) return tokens().issue(form(req.body));
    if (req.method === 'POST' && /^\/[^/]+\/oauth2\/v2\.0\/token$/.test(path)) {
      return { status: 400, body: { error: 'invalid_request', error_description: 'AADSTS90002: Tenant not found.' } };
    }
    if (req.method === 'GET' && path === '/v1.0/deviceManagement/managedDevices') {
      if (!tokens().check(req.headers.authorization)) return graphError(401, 'InvalidAuthenticationToken', 'Access token is empty or invalid.');
      const limited = limiter.take();
      if (limited !== undefined) return limited;
      return managedDevices(req.url);
    }
    return graphError(404, 'ResourceNotFound', 'Resource not found.');
  }, options.tls);
  url = server.url;

  function managedDevices(reqUrl: URL): FakeReply {
    const q = reqUrl.searchParams;
    let list = [...devices.values()];
    const filter = q.get('$filter');
    if (filter !== null) {
      const m = /^serialNumber eq '((?:[^']|'')*)'$/.exec(filter);
      if (m === null) return graphError(400, 'BadRequest', 'Invalid filter clause');
      const wanted = m[1].replaceAll("''", "'").toLowerCase();
      list = list.filter((d) => d.serialNumber.toLowerCase() === wanted);
    }
    const top = Number(q.get('$top') ?? options.defaultPageSize ?? 1000);
    const skip = Number(q.get('$skiptoken') ?? 0);
    const select = q.get('$select')?.split(',');
    const page = list.slice(skip, skip + top).map((d) => (select === undefined ? d : Object.fromEntries(select.filter((k) => k in d).map((k) => [k, d[k as keyof IntuneDevice]]))));
    const body: Record<string, unknown> = { '@odata.context': `${url}/v1.0/$metadata#deviceManagement/managedDevices`, value: page };
    if (skip + top < list.length) {
      const next = new URLSearchParams(q);
      next.set('$skiptoken', String(skip + top));
      next.set('$top', String(top));
      body['@odata.nextLink'] = `${url}/v1.0/deviceManagement/managedDevices?${next.toString()}`;
    }
    return { status: 200, body };
  }

  let nextId = 1;
  return {
    ...server,
    tenantId,
    clientId,
    clientSecret,
    get tokens() {
      return tokens();
    },
    rateLimit: limiter,
    devices,
    addDevice(device): IntuneDevice {
      const full: IntuneDevice = {
        id: `0000000${nextId++}-aaaa-bbbb-cccc-000000000000`,
        deviceName: `DESKTOP-${device.serialNumber}`,
        complianceState: 'compliant',
        managementState: 'managed',
        operatingSystem: 'Windows',
        osVersion: '10.0.22631.4602',
        lastSyncDateTime: '2026-11-27T10:00:00Z',
        ...device,
      };
      devices.set(full.id, full);
      return full;
    },
    setCompliance(serial: string, state: string): void {
      for (const d of devices.values()) if (d.serialNumber === serial) d.complianceState = state;
    },
  };
}
