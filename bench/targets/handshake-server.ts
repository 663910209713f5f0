import type { BenchProcess } from '../processes.ts';

/**
 * A TLS server that requires client certificates, measured for full mTLS handshakes per second:
 * nginx with `ssl_verify_client on` (the baseline) or Causeway's access tier.
 */
export interface HandshakeServer {
  readonly column: 'nginx' | 'causeway';
  readonly description: string;
  readonly host: string;
  readonly port: number;
  readonly servername: string;
  /** The client's trust material: the CA that signed the server, and a client certificate the server accepts. */
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
  /**
   * Sent right after the handshake. In TLS 1.3 the client finishes its side of the handshake before
   * the server has checked the client certificate, so one small request and the first byte of its
   * answer prove the server completed (and accepted) the whole mutual handshake.
   */
  readonly request: Buffer;
  /** The server process, whose CPU time per handshake is reported. */
  readonly process: BenchProcess;
}
