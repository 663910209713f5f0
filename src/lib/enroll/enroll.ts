/**
 * Joining a part to the control plane, once: `causeway access-tier --control-plane URL
 * --join-token T --ca-pin sha256:…` (and connector, kube-proxy).
 *
 * 1. Fetch the CA certificate (`GET /api/v1/ca`) without trusting anything yet, and refuse it unless
 *    its SHA-256 matches the pin from the join command: a man in the middle cannot substitute his
 *    CA (the same bootstrap kubeadm uses with --discovery-token-ca-cert-hash).
 * 2. Make a P-256 key pair here; the private key never leaves this machine.
 * 3. Send the join token and a CSR over TLS that now trusts only that CA (or, for a control plane
 *    published with a public certificate, the system roots and its host name).
 * 4. Check that the certificate answered is of the kind asked, from that CA, for our key.
 *
 * The entry point writes the result (key 0600) and reuses it on the next start.
 */
import { X509Certificate, createPrivateKey, timingSafeEqual } from 'node:crypto';
import { CausewayError, UserError } from '../errors.ts';
import { checkPeerCertificate, createCsr, generateKeyPair } from '../pki/index.ts';
import { describeErrorBody, errorCodeOf, requestControlPlane } from './transport.ts';
import type { ControlPlaneFetch } from './transport.ts';
import { CA_PATH, CA_PIN_RE, ENROLL_PATH, caResponseSchema, enrolledResponseSchema } from './wire.ts';
import type { EnrollKind, EnrollRequest } from './wire.ts';

export interface EnrollOptions {
  controlPlaneUrl: string;
  joinToken: string;
  kind: EnrollKind;
  /** `sha256:<hex>` of the CA certificate's DER, from the join command. */
  caPin: string;
  fetch?: ControlPlaneFetch;
}

/** What a part holds after enrolling or renewing. */
export interface PeerCredentials {
  certPem: string;
  keyPem: string;
  caPem: string;
  kind: EnrollKind;
  name: string;
  /** Upper-case hex. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** The pin of a CA certificate: `sha256:` and the lower-case hex SHA-256 of its DER. */
export function caPinOf(caPem: string): string {
  return `sha256:${new X509Certificate(caPem).fingerprint256.replace(/:/g, '').toLowerCase()}`;
}

/** Parses a pin; a malformed one is a UserError saying what it should look like. */
export function parseCaPin(pin: string): Buffer {
  const match = CA_PIN_RE.exec(pin.trim());
  if (match === null) throw new UserError('CA_PIN_INVALID', '--ca-pin must be sha256: followed by 64 hex digits, as `causeway join-token create` prints it');
  return Buffer.from(match[1].toLowerCase(), 'hex');
}

/**
 * Reads stored or received credentials and checks they hang together: a certificate of `kind` from
 * `caPem`, for `keyPem`. Throws a UserError naming what is wrong (the entry point says to enroll again).
 */
export function credentialsFrom(material: { certPem: string; keyPem: string; caPem: string }, kind: EnrollKind, options: { now?: number } = {}): PeerCredentials {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(material.certPem);
    ca = new X509Certificate(material.caPem);
  } catch (err) {
    throw new UserError('CREDENTIALS_INVALID', `the ${kind} certificate or CA cannot be read; enroll again with a new join token`, { cause: err });
  }
  // Expiry is not checked here: an expired certificate is still ours, and renewal says what to do.
  const checked = checkPeerCertificate(cert, kind, { trustedCas: [ca], now: Math.min(options.now ?? Date.now(), cert.validToDate.getTime()) });
  if (!checked.ok) throw new UserError('CREDENTIALS_INVALID', `the stored certificate is not usable as a ${kind} certificate (${checked.message}); enroll again with a new join token`);
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(material.keyPem));
  } catch {
    matches = false;
  }
  if (!matches) throw new UserError('CREDENTIALS_INVALID', `the ${kind} key does not belong to its certificate; enroll again with a new join token`);
  return { certPem: material.certPem, keyPem: material.keyPem, caPem: material.caPem, kind, name: checked.identity.name ?? '', serial: checked.identity.serial, notBefore: checked.identity.notBefore, notAfter: checked.identity.notAfter };
}

export async function enroll(options: EnrollOptions): Promise<PeerCredentials> {
  const fetch = options.fetch ?? requestControlPlane;
  const expected = parseCaPin(options.caPin);
  if (options.joinToken.trim() === '') throw new UserError('JOIN_TOKEN_MISSING', 'give the join token from `causeway join-token create` with --join-token');

  const caAnswer = await fetch({ baseUrl: options.controlPlaneUrl, path: CA_PATH, method: 'GET', tls: 'discovery' });
  const caBody = caResponseSchema.safeParse(caAnswer.body);
  if (caAnswer.status !== 200 || !caBody.success) {
    throw new CausewayError('CA_FETCH_FAILED', `the control plane did not send its CA certificate (${caAnswer.status}, ${describeErrorBody(caAnswer.body)}); check --control-plane`, { retryable: caAnswer.status >= 500 || caAnswer.status === 0 });
  }
  const caPem = caBody.data.certPem;
  let caCert: X509Certificate;
  try {
    caCert = new X509Certificate(caPem);
  } catch (err) {
    throw new UserError('CA_PIN_MISMATCH', 'the control plane sent a CA certificate that cannot be read; check --control-plane', { cause: err });
  }
  const actual = Buffer.from(caCert.fingerprint256.replace(/:/g, ''), 'hex');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected) || !caCert.ca) {
    throw new UserError('CA_PIN_MISMATCH', `the control plane at ${options.controlPlaneUrl} presented a CA (${caPinOf(caPem)}) that does not match --ca-pin; refusing to trust it. Check that --control-plane is the right server and copy the pin again from \`causeway join-token create\``);
  }

  const keys = await generateKeyPair();
  const request: EnrollRequest = { joinToken: options.joinToken.trim(), kind: options.kind, csr: await createCsr(keys, `causeway-${options.kind}`) };
  const answer = await fetch({ baseUrl: options.controlPlaneUrl, path: ENROLL_PATH, method: 'POST', body: request, tls: { caPem } });
  if (answer.status === 401) throw new UserError('JOIN_TOKEN_INVALID', `the control plane refused the join token: it may be mistyped, used already, expired, or for another kind of part; create a new one with \`causeway join-token create ${options.kind} NAME\``);
  if (answer.status === 429) throw new CausewayError('RATE_LIMITED', `the control plane is refusing enrollments from this address for now (${describeErrorBody(answer.body)})`, { retryable: true });
  if (answer.status !== 200) {
    const retryable = answer.status >= 500 || answer.status === 0;
    const message = `enrollment failed with ${answer.status} (${describeErrorBody(answer.body)})`;
    throw retryable ? new CausewayError('ENROLL_FAILED', message, { retryable }) : new UserError(errorCodeOf(answer.body) ?? 'ENROLL_FAILED', message);
  }
  return checkAnswer(answer.body, keys.privateKeyPem, caPem, options.kind);
}

/** The certificate in an enrollment or renewal answer, checked against our key and the CA we trust. */
export function checkAnswer(body: unknown, keyPem: string, caPem: string, kind: EnrollKind): PeerCredentials {
  const parsed = enrolledResponseSchema.safeParse(body);
  if (!parsed.success) throw new CausewayError('ENROLL_BAD_ANSWER', 'the control plane answered without a usable certificate', { retryable: true });
  try {
    return credentialsFrom({ certPem: parsed.data.certPem, keyPem, caPem }, kind);
  } catch (err) {
    throw new CausewayError('ENROLL_BAD_ANSWER', `the control plane answered with a certificate this part cannot use: ${err instanceof Error ? err.message : String(err)}`, { cause: err, retryable: false });
  }
}
