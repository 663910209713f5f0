/**
 * Enrollment on the wire (the server is src/control-plane/enroll):
 *
 *     GET  /api/v1/ca                                → { certPem, pin, notAfter }   (public; the joiner checks the pin itself)
 *     POST /api/v1/enroll { joinToken, kind, csr }   → 200 EnrolledResponse
 *                                                      401 JOIN_TOKEN_INVALID (unknown, used, expired or other kind: one answer)
 *                                                      400 CSR_INVALID / CERT_WEAK_KEY, 429 RATE_LIMITED
 *     POST /api/v1/renew  { csr }  + client cert     → 200 EnrolledResponse, 401 PEER_CERT_REFUSED, 429
 *
 * The CA pin is `sha256:` and the lower-case hex SHA-256 of the CA certificate's DER, as
 * `causeway join-token create` prints it in the join command.
 */
import { z } from 'zod';

export const CA_PATH = '/api/v1/ca';
export const ENROLL_PATH = '/api/v1/enroll';
export const RENEW_PATH = '/api/v1/renew';

export type EnrollKind = 'access-tier' | 'connector' | 'kube-proxy';
export const ENROLL_KINDS: readonly EnrollKind[] = ['access-tier', 'connector', 'kube-proxy'];

export const MAX_JOIN_TOKEN_CHARS = 512;
export const MAX_CSR_CHARS = 32 * 1024;

export interface EnrollRequest {
  joinToken: string;
  kind: EnrollKind;
  /** PKCS#10 PEM; only its key and self-signature are used. */
  csr: string;
}

export interface RenewRequest {
  csr: string;
}

export interface EnrolledResponse {
  certPem: string;
  /** The installation's CA certificate. */
  caPem: string;
  /** ISO 8601. */
  notAfter: string;
  /** The part's name, from the join token. */
  name: string;
  /** Upper-case hex. */
  serial: string;
}

export const enrolledResponseSchema = z.object({
  certPem: z.string().min(1).max(64 * 1024),
  caPem: z.string().min(1).max(64 * 1024),
  notAfter: z.string().max(64),
  name: z.string().max(256),
  serial: z.string().max(128),
});

export const caResponseSchema = z.object({ certPem: z.string().min(1).max(64 * 1024) });

export const CA_PIN_RE = /^sha256:([0-9a-fA-F]{64})$/;
