/**
 * Who is on the other end of an accepted TLS connection. The TLS server requests a certificate and
 * OpenSSL verifies it against our CA only; we read OpenSSL's verdict (socket.authorized) ourselves
 * instead of letting Node drop the socket, because Node then reports every failure as "peer did not
 * return a certificate", and the audit event must say what really happened (expired, another CA…).
 * An unauthorized peer is refused before a single byte is read or written. Then checkPeerCertificate
 * checks type, identity and revocation against the current configuration.
 */
import type { TLSSocket } from 'node:tls';
import { checkPeerCertificate } from '../lib/pki/index.ts';
import type { CertType, PeerCheckCode, PeerIdentity } from '../lib/pki/index.ts';
import type { AccessTierState } from './state.ts';

/** Like PeerCheck, but a revoked certificate's identity is kept, so the event can say who was refused. */
export type PeerResult = { ok: true; identity: PeerIdentity } | { ok: false; code: PeerCheckCode; message: string; identity?: PeerIdentity };

export function checkPeer(socket: TLSSocket, expected: CertType, state: AccessTierState, now: number): PeerResult {
  const cert = socket.getPeerX509Certificate();
  if (cert === undefined) return { ok: false, code: 'cert-missing', message: 'no client certificate was presented' };
  if (!socket.authorized) {
    const error = socket.authorizationError as unknown;
    const code = typeof error === 'string' ? error : error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.message) : 'unknown';
    if (code === 'CERT_HAS_EXPIRED') return { ok: false, code: 'cert-expired', message: 'the certificate has expired' };
    if (code === 'CERT_NOT_YET_VALID') return { ok: false, code: 'cert-not-yet-valid', message: 'the certificate is not valid yet' };
    return { ok: false, code: 'cert-unknown-ca', message: `the certificate was not issued by this installation's CA (${code})` };
  }
  const checked = checkPeerCertificate(cert, expected, { now });
  if (checked.ok && state.revoked.has(checked.identity.serial.toLowerCase())) {
    return { ok: false, code: 'cert-revoked', message: 'the certificate has been revoked', identity: checked.identity };
  }
  return checked;
}
