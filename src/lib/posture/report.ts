/**
 * The posture report wire format (issue 5, DT-01): what a device says about itself, signed by its
 * device key, bound to a nonce the control plane issued and to the time it was made.
 *
 * Wire (the body the client sends, JSON):
 *
 *     {"payload":"<canonical JSON of {deviceId, nonce, timestamp, factors}>","signature":"<base64url>"}
 *
 * - The payload travels as the exact string that was signed; the verifier checks the signature over
 *   those bytes first and then accepts the payload only if it is canonical JSON (canonical.ts), so
 *   what was signed, what is parsed and what is checked are one and the same.
 * - The signature is ECDSA P-256 with SHA-256, IEEE P1363 encoding (r‖s, 64 bytes, as in JWS ES256),
 *   over `causeway-posture-report-v1\n` followed by the payload: the prefix keeps a posture signature
 *   from ever meaning anything else the device key signs (its CSR, later challenges).
 *   P-256 rather than Ed25519: the keys hardware keeps (macOS Secure Enclave, TPM 2.0, Windows
 *   CNG/Platform Crypto Provider, Android Keystore) are P-256, so the device key can move into
 *   hardware later without changing this format; the CA is P-256 too, so one algorithm is checked
 *   everywhere.
 * - `timestamp` is milliseconds since the epoch (an integer); `nonce` is what the control plane
 *   handed out for this device (base64url, 16 to 128 characters).
 *
 * verifyPostureReport checks, in this order, and answers with the first failure:
 *   size (before any parsing) → envelope → the registered device key → signature → canonical
 *   payload → payload shape → device id → timestamp within the skew → factor values → nonce
 *   (consumed last, so only a report that passed everything else uses it up).
 * It never throws for anything the report holds; it throws only if the nonce store does (an
 * outage, not a verdict) or the options are unusable.
 */
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { CausewayError } from '../errors.ts';
import { deviceFactorValuesSchema } from '../trust/factor-values.ts';
import type { FactorValues } from '../trust/factor-values.ts';
import { canonicalJson } from './canonical.ts';

/** The largest report body accepted, in bytes; checked before anything is parsed. */
export const MAX_REPORT_BYTES = 64 * 1024;
export const DEFAULT_MAX_SKEW_MS = 5 * 60_000;
export const SIGNATURE_CONTEXT = 'causeway-posture-report-v1\n';

export interface PostureReport {
  deviceId: string;
  nonce: string;
  /** ms since the epoch, when the device made the report. */
  timestamp: number;
  factors: FactorValues;
}

/** Why a report was refused; stable (access and audit events carry them). */
export type PostureRejection =
  | 'posture-too-large'
  | 'posture-malformed'
  | 'posture-device-key-invalid'
  | 'posture-bad-signature'
  | 'posture-wrong-device'
  | 'posture-stale'
  | 'posture-from-future'
  | 'posture-bad-factors'
  | 'posture-replayed';

export type VerifyResult = { ok: true; report: PostureReport } | { ok: false; reason: PostureRejection; message: string };

export interface NonceStore {
  /** True exactly once for a nonce that was issued (to this device, when given) and has not expired. */
  consume(nonce: string, deviceId?: string): Promise<boolean>;
}

export interface VerifyOptions {
  /** The device's registered public key (SPKI PEM), ECDSA P-256. */
  publicKeyPem: string;
  /** The device the report is for (from its device certificate or the API route). */
  expectedDeviceId: string;
  nonceStore: NonceStore;
  /** ms since the epoch (Clock.now()). */
  now: number;
  /** How far the report's timestamp may be from now, either way (default 5 min). */
  maxSkewMs?: number;
}

const NONCE = /^[A-Za-z0-9_-]{16,128}$/;

const envelopeSchema = z.strictObject({
  payload: z.string().max(MAX_REPORT_BYTES),
  signature: z.string().regex(/^[A-Za-z0-9_-]{1,200}$/),
});

/** The payload without its factors, which are checked separately (a distinct rejection reason). */
const payloadSchema = z.strictObject({
  deviceId: z.string().min(1).max(128),
  nonce: z.string().regex(NONCE),
  timestamp: z.number().int().min(0).max(8.64e15),
  factors: z.unknown(),
});

function signedBytes(payload: string): Buffer {
  return Buffer.from(SIGNATURE_CONTEXT + payload, 'utf8');
}

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/**
 * The wire body for a report, signed with the device's private key (PEM or KeyObject, ECDSA P-256).
 * Throws a CausewayError for a key of another kind or values JSON cannot carry exactly.
 */
export function signPostureReport(report: PostureReport, privateKey: string | KeyObject): string {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  if (!isP256(key)) throw new CausewayError('posture_key_invalid', 'the device key must be an ECDSA P-256 key');
  const payload = canonicalJson({ deviceId: report.deviceId, nonce: report.nonce, timestamp: report.timestamp, factors: report.factors });
  const signature = sign('sha256', signedBytes(payload), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  return JSON.stringify({ payload, signature });
}

function refuse(reason: PostureRejection, message: string): VerifyResult {
  return { ok: false, reason, message };
}

/** See the module comment for the order of checks. */
export async function verifyPostureReport(body: string | Uint8Array, options: VerifyOptions): Promise<VerifyResult> {
  const maxSkewMs = options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  if (!Number.isFinite(maxSkewMs) || maxSkewMs < 0) throw new CausewayError('posture_options_invalid', 'maxSkewMs must be a finite number of milliseconds, 0 or more');
  if (!Number.isFinite(options.now)) throw new CausewayError('posture_options_invalid', 'now must be a time in milliseconds');

  // 1. Size, before parsing.
  const size = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.byteLength;
  if (size > MAX_REPORT_BYTES) return refuse('posture-too-large', `the report is ${size} bytes; at most ${MAX_REPORT_BYTES} are accepted`);

  // 2. Envelope.
  let envelope: z.output<typeof envelopeSchema>;
  try {
    const text = typeof body === 'string' ? body : new TextDecoder('utf-8', { fatal: true }).decode(body);
    const parsed = envelopeSchema.safeParse(JSON.parse(text));
    if (!parsed.success) return refuse('posture-malformed', 'the report must be {"payload": "<canonical JSON>", "signature": "<base64url>"}');
    envelope = parsed.data;
  } catch {
    return refuse('posture-malformed', 'the report is not JSON');
  }

  // 3. The registered key.
  let key: KeyObject;
  try {
    key = createPublicKey(options.publicKeyPem);
  } catch {
    return refuse('posture-device-key-invalid', "the device's registered key cannot be read; register the device again");
  }
  if (!isP256(key)) return refuse('posture-device-key-invalid', "the device's registered key is not an ECDSA P-256 key; register the device again");

  // 4. Signature over the exact payload bytes.
  const signature = Buffer.from(envelope.signature, 'base64url');
  let valid: boolean;
  try {
    valid = signature.length === 64 && verify('sha256', signedBytes(envelope.payload), { key, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    valid = false;
  }
  if (!valid) return refuse('posture-bad-signature', "the report's signature does not verify with this device's key");

  // 5. Canonical payload, 6. its shape.
  let payload: z.output<typeof payloadSchema>;
  try {
    const value: unknown = JSON.parse(envelope.payload);
    if (canonicalJson(value) !== envelope.payload) return refuse('posture-malformed', 'the report payload is not canonical JSON');
    const parsed = payloadSchema.safeParse(value);
    if (!parsed.success) return refuse('posture-malformed', 'the report payload must be {deviceId, nonce, timestamp, factors}');
    payload = parsed.data;
  } catch {
    return refuse('posture-malformed', 'the report payload is not canonical JSON');
  }

  // 7. The device it claims to be (a report signed by one device cannot be filed for another).
  if (payload.deviceId !== options.expectedDeviceId) return refuse('posture-wrong-device', 'the report names another device');

  // 8. Time.
  if (options.now - payload.timestamp > maxSkewMs) return refuse('posture-stale', 'the report is too old; send a new one with a fresh nonce');
  if (payload.timestamp - options.now > maxSkewMs) return refuse('posture-from-future', "the report's time is ahead of the server's; check the device clock");

  // 9. Factor values (DT-07: a malformed value refuses the report rather than being guessed at).
  const factors = deviceFactorValuesSchema.safeParse(payload.factors);
  if (!factors.success) {
    const fields = [...new Set(factors.error.issues.map((i) => String(i.path[0] ?? i.path.join('.') ?? '')))].slice(0, 8).map((f) => f.slice(0, 40));
    return refuse('posture-bad-factors', `malformed or unexpected factor values: ${fields.join(', ') || 'factors'}`);
  }

  // 10. The nonce: issued, unexpired, and used once (DT-01).
  if (!(await options.nonceStore.consume(payload.nonce, payload.deviceId))) {
    return refuse('posture-replayed', 'the nonce is unknown, expired or already used; ask for a new one and report again');
  }
  return { ok: true, report: { deviceId: payload.deviceId, nonce: payload.nonce, timestamp: payload.timestamp, factors: factors.data } };
}
