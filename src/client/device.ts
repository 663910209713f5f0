/**
 * Device trust on the client (issue 5): registering this machine, reporting its posture, and getting
 * trust certificates, against the control plane's `/api/v1/me/devices` routes.
 *
 * - Registration: a PKCS#10 request for the device key (device-files.ts; the key never leaves) and
 *   the machine's facts → a device certificate. A device stays registered for its server: a later
 *   login reuses it, unless the server no longer knows it (404), then it is registered again.
 * - Posture: a nonce (and what the server's trust profiles want checked) → collect → a report signed
 *   with the device key → the new trust verdict.
 * - Trust certificate: a request for a fresh key, sent over TLS with the DEVICE certificate as the
 *   client certificate (the server's proof that this is the device) → trust.key / trust.crt.
 *
 * Nothing here reads the environment, argv or files other than through DeviceFiles; the commands
 * (identity-command.ts, device-command.ts, command.ts) gather the facts and pass them in.
 */
import { request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { CausewayError, UserError } from '../lib/errors.ts';
import type { Clock } from '../lib/clock.ts';
import { createCsr, generateKeyPair } from '../lib/pki/index.ts';
import { signPostureReport } from '../lib/posture/index.ts';
import { connectionError, notLoggedIn } from '../lib/session/index.ts';
import type { FetchLike, Session } from '../lib/session/index.ts';
import type { CollectedPosture, PostureRequirements } from './posture/index.ts';
import type { DeviceFiles, DeviceState } from './device-files.ts';

/** What the machine says about itself at registration. */
export interface DeviceFacts {
  platform: string;
  osVersion: string;
  serial?: string;
  hostname?: string;
  ownership?: string;
}

export interface TrustFactor {
  type?: string;
  profile?: string;
  met?: boolean;
  effect?: string;
  reason?: string;
  remedy?: string;
}

export interface TrustVerdict {
  level: string | null;
  reasons: string[];
  explanation: string | null;
  factors: TrustFactor[];
  stale?: boolean;
  staleAt?: string | null;
}

export interface DeviceInfo {
  id: string;
  platform: string;
  osVersion: string | null;
  serial: string | null;
  hostname: string | null;
  ownership: string;
  registeredAt: string;
  banned: boolean;
  postureAt: string | null;
  trust: TrustVerdict | null;
}

/** A POST over TLS with a client certificate; the default is node:https. */
export type MtlsPost = (url: string, o: { caPem?: string; keyPem: string; certPem: string; headers: Record<string, string>; body: string; timeoutMs?: number }) => Promise<{ status: number; text: string }>;

export interface DeviceContext {
  files: DeviceFiles;
  /** A session whose access token is valid now (refreshed when needed). */
  session: () => Promise<Session>;
  /** A fetch that trusts the session's CA. */
  fetchFor: (caPem: string | undefined) => FetchLike;
  mtlsPost?: MtlsPost;
  clock: Clock;
  /** The machine's facts, gathered by the command (read only when registering). */
  facts: () => Promise<DeviceFacts>;
  /** Runs the posture collectors for these requirements. */
  collect: (requirements: PostureRequirements) => Promise<CollectedPosture>;
}

export type TrustCertOutcome =
  | { ok: true; notAfter: string; serial?: string }
  | { ok: false; status: number; code: string; reason: string; message: string };

interface ApiAnswer {
  status: number;
  json: Record<string, unknown>;
}

const MAX_TEXT = 300;

function printable(value: string, max = MAX_TEXT): string {
  return value.slice(0, max).replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?');
}

function parseJson(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The server's error: { code, message, reason }. */
export function apiErrorOf(json: Record<string, unknown>, status: number): { code: string; message: string; reason: string } {
  const e = (json.error ?? {}) as Record<string, unknown>;
  const details = (e.details ?? {}) as Record<string, unknown>;
  const code = typeof e.code === 'string' ? e.code : `HTTP_${status}`;
  const message = typeof e.message === 'string' ? printable(e.message, 600) : `HTTP ${status}`;
  const reason = typeof details.reason === 'string' ? details.reason : code;
  return { code: printable(code, 80), message, reason: printable(reason, 80) };
}

async function api(ctx: DeviceContext, session: Session, method: string, path: string, body?: string): Promise<ApiAnswer> {
  const fetchFn = ctx.fetchFor(session.caPem);
  const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${session.accessToken}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetchFn(`${session.server}/api/v1${path}`, { method, headers, redirect: 'manual', ...(body === undefined ? {} : { body }) }).catch((err: unknown) => {
    throw connectionError(session.server, err);
  });
  const text = await res.text();
  if (res.status === 401) throw notLoggedIn(session.server);
  return { status: res.status, json: parseJson(text) };
}

function failed(what: string, answer: ApiAnswer): CausewayError {
  const e = apiErrorOf(answer.json, answer.status);
  if (answer.status === 403 && e.code === 'SESSION_REQUIRED') return new UserError('SESSION_REQUIRED', `${what}: ${e.message}`);
  return new CausewayError(e.code, `${what} failed (HTTP ${answer.status}): ${e.message}`);
}

function isDeviceInfo(v: unknown): v is DeviceInfo {
  const d = v as Record<string, unknown> | null;
  return d !== null && typeof d === 'object' && typeof d.id === 'string' && typeof d.platform === 'string';
}

// --- registration --------------------------------------------------------------------------------

export interface EnsuredDevice {
  state: DeviceState;
  /** True when this call registered the device (first login, another server, or forgotten by the server). */
  registered: boolean;
  device: DeviceInfo;
}

/** The device registered at the session's server: the one in device.json when the server still knows it, else a new registration. */
export async function ensureDevice(ctx: DeviceContext): Promise<EnsuredDevice> {
  const session = await ctx.session();
  const state = await ctx.files.readState();
  if (state !== undefined && state.server === session.server && (await ctx.files.readDeviceCert()) !== undefined && (await ctx.files.readKey()) !== undefined) {
    const answer = await api(ctx, session, 'GET', `/me/devices/${encodeURIComponent(state.id)}`);
    if (answer.status === 200 && isDeviceInfo(answer.json)) return { state, registered: false, device: answer.json };
    if (answer.status !== 404) throw failed('looking up this device', answer);
    // The server no longer knows it (unregistered by an admin, or another installation at the same URL).
  }
  return { ...(await registerDevice(ctx, session)), registered: true };
}

async function registerDevice(ctx: DeviceContext, session: Session): Promise<{ state: DeviceState; device: DeviceInfo }> {
  const keys = await ctx.files.ensureKey();
  const facts = await ctx.facts();
  const body = {
    csrPem: await createCsr(keys, 'causeway-device'),
    platform: facts.platform,
    osVersion: facts.osVersion,
    ...(facts.serial === undefined ? {} : { serial: facts.serial }),
    ...(facts.hostname === undefined ? {} : { hostname: facts.hostname }),
    ...(facts.ownership === undefined ? {} : { ownership: facts.ownership }),
  };
  const answer = await api(ctx, session, 'POST', '/me/devices', JSON.stringify(body));
  if (answer.status !== 201 || !isDeviceInfo(answer.json.device) || typeof answer.json.certificatePem !== 'string') throw failed('registering this device', answer);
  const state: DeviceState = { id: answer.json.device.id, server: session.server };
  // A new registration invalidates a trust certificate made for the old device.
  await ctx.files.forgetRegistration();
  await ctx.files.writeRegistration(state, answer.json.certificatePem, typeof answer.json.caPem === 'string' ? answer.json.caPem : undefined);
  return { state, device: answer.json.device };
}

/** The device this machine has at the session's server, without registering; undefined when it has none. */
export async function currentDevice(ctx: DeviceContext): Promise<{ state: DeviceState; device: DeviceInfo | undefined } | undefined> {
  const session = await ctx.session();
  const state = await ctx.files.readState();
  if (state === undefined || state.server !== session.server) return undefined;
  const answer = await api(ctx, session, 'GET', `/me/devices/${encodeURIComponent(state.id)}`);
  if (answer.status === 404) return { state, device: undefined };
  if (answer.status !== 200 || !isDeviceInfo(answer.json)) throw failed('looking up this device', answer);
  return { state, device: answer.json };
}

// --- posture -------------------------------------------------------------------------------------

export interface ReportOutcome {
  trust: TrustVerdict | null;
  /** Why some values are unknown (not sent; for the user). */
  problems: string[];
}

function requirementsOf(v: unknown): PostureRequirements {
  const r = (v ?? {}) as Record<string, unknown>;
  const list = (x: unknown): string[] => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : []);
  return { files: list(r.files), processes: list(r.processes) };
}

/** Collects, signs with the device key and sends a posture report; answers the new trust verdict. */
export async function reportPosture(ctx: DeviceContext, state: DeviceState): Promise<ReportOutcome> {
  const session = await ctx.session();
  const keys = await ctx.files.readKey();
  if (keys === undefined) throw new UserError('NO_DEVICE', 'this machine has no device key; run causeway login');
  const path = `/me/devices/${encodeURIComponent(state.id)}`;
  const issued = await api(ctx, session, 'POST', `${path}/posture/nonce`, '{}');
  if (issued.status !== 200 || typeof issued.json.nonce !== 'string') throw failed('asking for a posture nonce', issued);
  const collected = await ctx.collect(requirementsOf(issued.json.requirements));
  const body = signPostureReport({ deviceId: state.id, nonce: issued.json.nonce, timestamp: ctx.clock.now(), factors: collected.factors }, keys.privateKeyPem);
  const answer = await api(ctx, session, 'POST', `${path}/posture`, body);
  if (answer.status !== 200) throw failed('sending the posture report', answer);
  return { trust: (answer.json.trust ?? null) as TrustVerdict | null, problems: collected.problems };
}

// --- trust certificates --------------------------------------------------------------------------

export const defaultMtlsPost: MtlsPost = (url, o) =>
  new Promise((resolve, reject) => {
    const target = new URL(url);
    if (target.protocol !== 'https:') {
      reject(new UserError('INSECURE_URL', `refusing ${target.origin}: the control plane must be reached over https://`));
      return;
    }
    const payload = Buffer.from(o.body, 'utf8');
    const req = httpsRequest(
      target,
      {
        method: 'POST',
        headers: { ...o.headers, 'content-length': String(payload.length) },
        agent: false,
        minVersion: 'TLSv1.2',
        key: o.keyPem,
        cert: o.certPem,
        timeout: o.timeoutMs ?? 30_000,
        ...(o.caPem === undefined ? {} : { ca: o.caPem }),
      },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > 1024 * 1024) req.destroy(new CausewayError('ANSWER_TOO_LARGE', `${target.origin} sent more than 1 MiB`));
          else chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new CausewayError('TIMEOUT', `no answer from ${target.origin} within ${(o.timeoutMs ?? 30_000) / 1000} s`, { retryable: true })));
    req.on('error', (err) => reject(connectionError(target.origin, err)));
    req.end(payload);
  });

/**
 * Asks for a trust certificate for a fresh key over TLS with the device certificate, and writes
 * trust.key / trust.crt (and ca.crt) when one is issued. A refusal is an outcome, not an error.
 */
export async function fetchTrustCert(ctx: DeviceContext, state: DeviceState): Promise<TrustCertOutcome> {
  const session = await ctx.session();
  const deviceKey = await ctx.files.readKey();
  const deviceCert = await ctx.files.readDeviceCert();
  if (deviceKey === undefined || deviceCert === undefined) throw new UserError('NO_DEVICE', 'this machine has no device certificate; run causeway login');
  const trustKey = await generateKeyPair();
  const body = JSON.stringify({ csrPem: await createCsr(trustKey, 'causeway-trust') });
  const post = ctx.mtlsPost ?? defaultMtlsPost;
  const answer = await post(`${session.server}/api/v1/me/devices/${encodeURIComponent(state.id)}/trust-cert`, {
    ...(session.caPem === undefined ? {} : { caPem: session.caPem }),
    keyPem: deviceKey.privateKeyPem,
    certPem: deviceCert,
    headers: { accept: 'application/json', 'content-type': 'application/json', authorization: `Bearer ${session.accessToken}` },
    body,
  });
  if (answer.status === 401) throw notLoggedIn(session.server);
  const json = parseJson(answer.text);
  if (answer.status !== 200 || typeof json.certificatePem !== 'string' || typeof json.notAfter !== 'string') {
    return { ok: false, status: answer.status, ...apiErrorOf(json, answer.status) };
  }
  await ctx.files.writeTrust(trustKey.privateKeyPem, json.certificatePem, typeof json.caPem === 'string' ? json.caPem : undefined);
  return { ok: true, notAfter: json.notAfter, ...(typeof json.serial === 'string' ? { serial: json.serial } : {}) };
}

/** Whether the trust certificate should be renewed now: missing, or less than `fraction` of its lifetime left. */
export function trustCertDue(trust: { issuedAt: number; notAfter: number } | undefined, now: number, fraction = 0.5): boolean {
  if (trust === undefined) return true;
  const lifetime = trust.notAfter - trust.issuedAt;
  if (!(lifetime > 0)) return true;
  return trust.notAfter - now < lifetime * fraction;
}

// --- output --------------------------------------------------------------------------------------

/** Lines for people: the level, the explanation, and each unmet factor with what to do. */
export function describeTrust(trust: TrustVerdict | null | undefined): string[] {
  if (trust === null || trust === undefined) return ['Trust level: not scored yet (send a posture report: causeway device report)'];
  const lines = [`Trust level: ${printable(trust.level ?? 'unknown', 40)}`];
  if (trust.explanation !== null && trust.explanation !== undefined && trust.explanation !== '') lines.push(printable(trust.explanation, 2000));
  for (const f of trust.factors ?? []) {
    if (f.met !== false) continue;
    const what = [f.type, f.reason].filter((s): s is string => typeof s === 'string' && s !== '').map((s) => printable(s, 200)).join(': ');
    lines.push(`  - ${what === '' ? 'a factor is not met' : what}${typeof f.remedy === 'string' && f.remedy !== '' ? ` → ${printable(f.remedy, 400)}` : ''}`);
  }
  return lines;
}

/** One line for a refused trust certificate. */
export function describeRefusal(outcome: Extract<TrustCertOutcome, { ok: false }>): string {
  return `No trust certificate: ${outcome.message} (${outcome.reason})`;
}

