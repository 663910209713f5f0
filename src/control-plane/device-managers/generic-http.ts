/**
 * Any device manager with a JSON lookup by serial number: GET the configured URL with `{serial}`
 * replaced by the URL-encoded serial, with the configured headers (secrets by reference, resolved for
 * every request so a rotated one is picked up), and read the fields at the configured JSON paths.
 *
 * 404 means the device is unknown. `compliant` is true for `true` or a value listed in
 * compliantValues, false for any other present value, unknown when absent or null. `mdmPresent`, when
 * configured, must be exactly `true` for the device to count as managed; without it a device that is
 * found is managed. A score outside 0–100 is ignored. There is no batch listing: a sync looks known
 * serials up one by one (canList is false).
 */
import type { HttpManagerSpec } from '../../lib/spec/device-manager.ts';
import { checkSerial, failureMessage, httpContext, MdmError, requestJson, statusError, timeField } from './http.ts';
import type { AdapterDeps, DeviceManagerAdapter, MdmDeviceState } from './types.ts';

/** The serial test() looks up: any answer but 200 or 404 is a failure. */
export const TEST_SERIAL = 'CAUSEWAY-CONNECTION-TEST';

type Segment = string | number;

/** `$.a.b[0].c` → ['a', 'b', 0, 'c']; the spec has already checked the syntax. */
export function parseJsonPath(path: string): Segment[] {
  const rest = path.replace(/^\$\.?/, '');
  const out: Segment[] = [];
  for (const m of rest.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) out.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return out;
}

export function readJsonPath(value: unknown, path: Segment[]): unknown {
  let current = value;
  for (const segment of path) {
    if (typeof segment === 'number') {
      if (!Array.isArray(current) || segment >= current.length) return undefined;
      current = current[segment];
    } else {
      if (current === null || typeof current !== 'object' || Array.isArray(current) || !Object.hasOwn(current, segment)) return undefined;
      current = (current as Record<string, unknown>)[segment];
    }
  }
  return current;
}

export function createHttpAdapter(spec: HttpManagerSpec, deps: AdapterDeps & { name: string }): DeviceManagerAdapter {
  const ctx = httpContext(`device manager ${deps.name}`, deps);
  const source = `http:${deps.name}`;
  const paths = {
    compliant: parseJsonPath(spec.jsonPaths.compliant),
    mdmPresent: spec.jsonPaths.mdmPresent === undefined ? undefined : parseJsonPath(spec.jsonPaths.mdmPresent),
    score: spec.jsonPaths.score === undefined ? undefined : parseJsonPath(spec.jsonPaths.score),
    os: spec.jsonPaths.os === undefined ? undefined : parseJsonPath(spec.jsonPaths.os),
    lastSeen: spec.jsonPaths.lastSeen === undefined ? undefined : parseJsonPath(spec.jsonPaths.lastSeen),
  };
  const compliantValues = new Set(spec.compliantValues);

  async function headers(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(spec.headers)) {
      if ('value' in value) {
        out[name] = value.value;
        continue;
      }
      let secret: string;
      try {
        secret = await deps.resolveSecret(value);
      } catch (err) {
        throw new MdmError('MDM_SECRET_UNAVAILABLE', `the ${name} header's secret could not be read from ${'env' in value ? `environment variable ${value.env}` : `file ${value.file}`}`, { cause: err });
      }
      if (/[\r\n\0]/.test(secret)) throw new MdmError('MDM_SECRET_UNAVAILABLE', `the ${name} header's secret holds a line break; remove it`);
      out[name] = secret;
    }
    return out;
  }

  async function fetchDevice(serial: string, what: string): Promise<{ status: number; body: unknown }> {
    const url = spec.url.replaceAll('{serial}', encodeURIComponent(serial));
    return requestJson(ctx, { url, headers: await headers(), what });
  }

  function toState(serial: string, body: unknown): MdmDeviceState {
    const compliantValue = readJsonPath(body, paths.compliant);
    const compliant =
      compliantValue === undefined || compliantValue === null
        ? undefined
        : compliantValue === true || ((typeof compliantValue === 'string' || typeof compliantValue === 'number') && compliantValues.has(String(compliantValue)));
    const managed = paths.mdmPresent === undefined ? true : readJsonPath(body, paths.mdmPresent) === true;
    const scoreValue = paths.score === undefined ? undefined : readJsonPath(body, paths.score);
    const score = typeof scoreValue === 'number' && Number.isFinite(scoreValue) && scoreValue >= 0 && scoreValue <= 100 ? scoreValue : undefined;
    const osValue = paths.os === undefined ? undefined : readJsonPath(body, paths.os);
    const os = typeof osValue === 'string' && osValue !== '' ? osValue.slice(0, 256) : undefined;
    const lastSeen = paths.lastSeen === undefined ? undefined : timeField(readJsonPath(body, paths.lastSeen));
    return { serial, managed, compliant, ...(score === undefined ? {} : { score }), ...(os === undefined ? {} : { os }), ...(lastSeen === undefined ? {} : { lastSeen }), source };
  }

  return {
    source,
    canList: false,

    async lookup(serial: string): Promise<MdmDeviceState | undefined> {
      checkSerial(serial);
      const what = 'the device lookup';
      const res = await fetchDevice(serial, what);
      if (res.status === 404) return undefined;
      if (res.status !== 200) throw statusError(ctx, what, res.status);
      if (res.body === undefined) throw new MdmError('MDM_BAD_RESPONSE', `${ctx.vendor} answered ${what} with an empty body`);
      return toState(serial, res.body);
    },

    list(): AsyncIterable<MdmDeviceState> {
      return (async function* none(): AsyncGenerator<MdmDeviceState> {})();
    },

    async test(): Promise<{ ok: boolean; message: string }> {
      try {
        const res = await fetchDevice(TEST_SERIAL, 'a test lookup');
        if (res.status === 200 || res.status === 404) return { ok: true, message: `the lookup URL answered HTTP ${res.status} for a test serial` };
        return { ok: false, message: statusError(ctx, 'a test lookup', res.status).message };
      } catch (err) {
        return { ok: false, message: failureMessage(err) };
      }
    },
  };
}
