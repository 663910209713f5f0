/**
 * TLS options for our mutual-TLS links: TLS 1.3 only, our CA pinned (never the system store), and on
 * the client side a server check by certificate type and name URI instead of by hostname, because
 * clients reach the access tier with SNI = the service domain, which is not in the edge's certificate.
 */
import { X509Certificate } from 'node:crypto';
import type { ConnectionOptions, PeerCertificate, TlsOptions } from 'node:tls';
import { checkPeerCertificate } from './check.ts';
import type { CertType } from './types.ts';

/**
 * OpenSSL security level 2: refuses RSA keys under 2048 bits and SHA-1 signatures in the chain
 * (THREATS CA-07). TLS 1.3 suites stay at their defaults.
 */
const SECURITY_CIPHERS = 'DEFAULT@SECLEVEL=2';

export interface MtlsServerOptionsInput {
  caPem: string | string[];
  certPem: string;
  keyPem: string;
}

/** Server side: client certificate required and verified against our CA(s) only. */
export function mtlsServerOptions(o: MtlsServerOptionsInput): TlsOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: SECURITY_CIPHERS,
    ca: o.caPem,
    cert: o.certPem,
    key: o.keyPem,
    requestCert: true,
    rejectUnauthorized: true,
  };
}

export interface MtlsClientOptionsInput {
  caPem: string | string[];
  certPem?: string;
  keyPem?: string;
  /** SNI to send (the service domain when dialing the access tier). */
  servername?: string;
  /** The server certificate must be of this type (or one of these). */
  expectServerType: CertType | readonly CertType[];
  /** When given, the server certificate's name URI must be exactly this. */
  expectServerName?: string;
}

/**
 * Client side: our CA(s) pinned, and checkServerIdentity replaced by a type (and optional name) check.
 * The chain and validity were already verified by OpenSSL before checkServerIdentity runs.
 */
export function mtlsClientOptions(o: MtlsClientOptionsInput): ConnectionOptions {
  const expectedTypes = o.expectServerType;
  const expectedName = o.expectServerName;
  const options: ConnectionOptions = {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: SECURITY_CIPHERS,
    ca: o.caPem,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, peer: PeerCertificate): Error | undefined => {
      if (peer?.raw === undefined) return serverIdentityError('the server presented no certificate');
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(peer.raw);
      } catch {
        return serverIdentityError('the server certificate cannot be read');
      }
      const result = checkPeerCertificate(cert, expectedTypes);
      if (!result.ok) return serverIdentityError(result.message, result.code);
      if (expectedName !== undefined && result.identity.name !== expectedName) {
        return serverIdentityError(`the server certificate names ${result.identity.type} "${result.identity.name ?? ''}", not "${expectedName}"`);
      }
      return undefined;
    },
  };
  if (o.certPem !== undefined) options.cert = o.certPem;
  if (o.keyPem !== undefined) options.key = o.keyPem;
  if (o.servername !== undefined) options.servername = o.servername;
  return options;
}

function serverIdentityError(message: string, reason = 'cert-wrong-name'): Error {
  const err = new Error(`Server certificate refused: ${message}`) as Error & { code: string; reason: string };
  err.code = 'ERR_TLS_CERT_ALTNAME_INVALID';
  err.reason = reason;
  return err;
}
