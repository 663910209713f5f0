/**
 * Test and benchmark support for the data path (never imported by product code): a PKI with every
 * certificate the data path needs, TCP echo backends, a minimal CHAIN-mode client (TLS 1.3 + trust
 * cert + one CONNECT), and a TCP relay that can blackhole a connection without closing it (CN-06).
 * Everything listens on 127.0.0.1 port 0 and is closed by the caller.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { parseConnectResponseHead } from '../net/connect-request.ts';
import { CertificateAuthority, issueKeyAndCert, mtlsClientOptions } from '../pki/index.ts';
import type { CertIdentity, CertType } from '../pki/index.ts';
import { specSchemas } from '../spec/schemas.ts';
import { TUNNEL_HEADER, tunnelRequestHeaders } from './protocol.ts';
import type { AccessTierSpec, ConnectorSpec, ServiceSpec } from '../spec/index.ts';

/** Spec documents with defaults applied, as a config source would hold them. */
export const specs = {
  accessTier: (name: string, cluster: string, address: string): AccessTierSpec =>
    specSchemas.AccessTier.parse({ apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name }, spec: { cluster, address } }),
  connector: (name: string, cluster: string, allow: { cidrs?: string[]; domains?: string[] } = {}): ConnectorSpec =>
    specSchemas.Connector.parse({ apiVersion: 'causeway/v1', kind: 'Connector', metadata: { name }, spec: { cluster, allowedCidrs: allow.cidrs ?? [], allowedDomains: allow.domains ?? [] } }),
  /** A Service; `spec` is merged over `{ cluster, accessTier: '*' }`. Kubernetes services get a CA. */
  service: (name: string, cluster: string, spec: Record<string, unknown>, caPem?: string): ServiceSpec =>
    specSchemas.Service.parse({
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name },
      spec: { cluster, accessTier: '*', ...(spec['type'] === 'kubernetes' && spec['kubernetes'] === undefined ? { kubernetes: { clusterName: name, caPublicKey: caPem } } : {}), ...spec },
    }),
};

export interface KeyAndCert {
  certPem: string;
  keyPem: string;
  caPem: string;
  serial: string;
}

export interface TestPki {
  ca: CertificateAuthority;
  caPem: string;
  issue(type: CertType, identity: CertIdentity, extra?: { lifetimeMs?: number }): Promise<KeyAndCert>;
}

export async function makeTestPki(): Promise<TestPki> {
  const ca = await CertificateAuthority.create({ commonName: 'causeway test CA' });
  return {
    ca,
    caPem: ca.certPem,
    issue: async (type, identity, extra = {}) => {
      const issued = await issueKeyAndCert(ca, { type, identity, ...(extra.lifetimeMs !== undefined ? { lifetimeMs: extra.lifetimeMs } : {}) });
      return { certPem: issued.certPem, keyPem: issued.keyPem, caPem: issued.caPem, serial: issued.serial };
    },
  };
}

export interface TestServer {
  port: number;
  address: string;
  /** Sockets accepted so far. */
  accepted: number;
  close(): Promise<void>;
}

/** Closes a server and destroys every socket it accepted. */
function closable(server: net.Server, sockets: Set<net.Socket>): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
}

/** A TCP echo server that honours half-close: it ends its side after the peer ended and everything was echoed. */
export async function startEchoServer(): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const result = { port: 0, address: '', accepted: 0, close: (): Promise<void> => Promise.resolve() };
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    result.accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  result.port = (server.address() as AddressInfo).port;
  result.address = `127.0.0.1:${result.port}`;
  result.close = closable(server, sockets);
  return result;
}

/** A TCP server that sends `greeting` and then reads until the peer ends, then ends (for half-close tests). */
export async function startGreetingServer(greeting: Buffer | string): Promise<TestServer & { received: Promise<Buffer> }> {
  const sockets = new Set<net.Socket>();
  let resolveReceived: (b: Buffer) => void = () => undefined;
  const received = new Promise<Buffer>((resolve) => {
    resolveReceived = resolve;
  });
  const result = { port: 0, address: '', accepted: 0, received, close: (): Promise<void> => Promise.resolve() };
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    result.accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const chunks: Buffer[] = [];
    socket.write(greeting);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      resolveReceived(Buffer.concat(chunks));
      socket.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  result.port = (server.address() as AddressInfo).port;
  result.address = `127.0.0.1:${result.port}`;
  result.close = closable(server, sockets);
  return result;
}

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface ChainClientOptions {
  port: number;
  host?: string;
  /** SNI; undefined sends none. */
  servername?: string;
  cert?: { certPem: string; keyPem: string };
  caPem: string;
  /** The CONNECT authority; undefined sends no CONNECT (TCP mode). */
  connect?: string;
  /** Raw bytes to send instead of a well-formed CONNECT head. */
  rawHead?: Buffer | string;
  alpn?: string[];
  timeoutMs?: number;
}

export type ChainResult =
  | { kind: 'established'; socket: tls.TLSSocket; status: number; rest: Buffer }
  | { kind: 'refused'; status: number; reason: string | undefined; body: string; socket: tls.TLSSocket }
  | { kind: 'failed'; error: string; code: string | undefined };

/**
 * Connects like the client proxy does: TLS 1.3 with the trust cert, SNI = the service domain, then
 * one CONNECT. Resolves with the established socket (caller destroys it), the refusal, or how the
 * connection failed (a handshake refused by the server shows up here).
 */
export function chainConnect(o: ChainClientOptions): Promise<ChainResult> {
  return new Promise<ChainResult>((resolve) => {
    const tlsOptions = mtlsClientOptions({ caPem: o.caPem, expectServerType: 'access-tier', ...(o.cert !== undefined ? { certPem: o.cert.certPem, keyPem: o.cert.keyPem } : {}) });
    // allowHalfOpen is honoured by tls.connect though missing from its types.
    const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
      ...tlsOptions,
      host: o.host ?? '127.0.0.1',
      port: o.port,
      ...(o.servername !== undefined ? { servername: o.servername } : {}),
      ...(o.alpn !== undefined ? { ALPNProtocols: o.alpn } : {}),
      allowHalfOpen: true,
    };
    const socket = tls.connect(connectOptions);
    socket.setNoDelay(true);
    let buffered = Buffer.alloc(0);
    let settled = false;
    const finish = (r: ChainResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      if (r.kind === 'failed') socket.destroy();
      else socket.pause();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: 'failed', error: 'timeout', code: 'timeout' }), o.timeoutMs ?? 10_000);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const head = parseConnectResponseHead(buffered);
      if (head.state === 'incomplete') return;
      if (head.state === 'error') {
        finish({ kind: 'failed', error: `bad response: ${head.message}`, code: 'bad-response' });
        return;
      }
      if (head.status === 200) {
        finish({ kind: 'established', socket, status: head.status, rest: buffered.subarray(head.headLength) });
        return;
      }
      // Wait for the whole body of a refusal.
      const bodyEnd = head.headLength + head.bodyLength;
      if (buffered.length < bodyEnd) return;
      finish({ kind: 'refused', status: head.status, reason: head.reason, body: buffered.subarray(head.headLength, bodyEnd).toString('utf8'), socket });
    };
    socket.on('data', onData);
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ kind: 'failed', error: err.message, code: err.code }));
    socket.on('close', () => finish({ kind: 'failed', error: 'closed', code: 'closed' }));
    // Half-open is allowed, so a server that hangs up shows as 'end' first.
    socket.on('end', () => finish({ kind: 'failed', error: 'the server ended the connection', code: 'ended' }));
    socket.once('secureConnect', () => {
      if (o.rawHead !== undefined) socket.write(o.rawHead);
      else if (o.connect !== undefined) socket.write(`CONNECT ${o.connect} HTTP/1.1\r\nHost: ${o.connect}\r\n\r\n`);
      else finish({ kind: 'established', socket, status: 0, rest: Buffer.alloc(0) });
    });
  });
}

/** Writes `payload`, ends, and collects everything until the peer ends. */
export function roundTrip(socket: net.Socket | tls.TLSSocket, payload: Buffer | string, initial: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [initial];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.resume();
    socket.end(payload);
  });
}

/** Sends `size` bytes of a deterministic pattern through `socket` and hashes what comes back. */
export function hashTransfer(socket: net.Socket | tls.TLSSocket, size: number, initial: Buffer = Buffer.alloc(0)): Promise<{ sent: string; received: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const sentHash = createHash('sha256');
    const receivedHash = createHash('sha256');
    let bytes = initial.length;
    receivedHash.update(initial);
    socket.on('data', (c: Buffer) => {
      bytes += c.length;
      receivedHash.update(c);
    });
    socket.once('end', () => resolve({ sent: sentHash.digest('hex'), received: receivedHash.digest('hex'), bytes }));
    socket.once('error', reject);
    socket.resume();
    const chunk = Buffer.alloc(256 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
    let remaining = size;
    const pump = (): void => {
      while (remaining > 0) {
        const n = Math.min(remaining, chunk.length);
        const piece = n === chunk.length ? chunk : chunk.subarray(0, n);
        sentHash.update(piece);
        remaining -= n;
        if (!socket.write(piece)) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    pump();
  });
}

export interface BlackholeRelay {
  port: number;
  /** Stop forwarding in both directions without closing anything: the peers see silence, not a FIN. */
  blackhole(): void;
  close(): Promise<void>;
}

/** A TCP relay to 127.0.0.1:targetPort that can be made to swallow everything (a half-open path, CN-06). */
export async function startBlackholeRelay(targetPort: number): Promise<BlackholeRelay> {
  const sockets = new Set<net.Socket>();
  let holes = false;
  const server = net.createServer((inbound) => {
    const outbound = net.connect({ host: '127.0.0.1', port: targetPort });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    inbound.on('data', (c: Buffer) => {
      if (!holes) outbound.write(c);
    });
    outbound.on('data', (c: Buffer) => {
      if (!holes) inbound.write(c);
    });
    inbound.on('end', () => {
      if (!holes) outbound.end();
    });
    outbound.on('end', () => {
      if (!holes) inbound.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    blackhole: () => {
      holes = true;
    },
    close: closable(server, sockets),
  };
}

/** Polls `check` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${timeoutMs} ms${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** What a tunnel stream opened in a test got back from the connector. */
export interface Opened {
  status: number;
  reason: string | undefined;
  stream: ClientHttp2Stream;
}

/** Opens one tunnel stream to `authority`, as the access tier would, and waits for the connector's answer. */
export function openStream(session: ClientHttp2Session, authority: string): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const stream = session.request(tunnelRequestHeaders(authority, { session: 's', service: 'svc', user: 'alice', device: 'laptop-1' }), { endStream: false });
    stream.on('error', () => undefined);
    stream.once('response', (headers: IncomingHttpHeaders) => {
      const reason = headers[TUNNEL_HEADER.reason];
      resolve({ status: Number(headers[':status']), reason: typeof reason === 'string' ? reason : undefined, stream });
    });
    stream.once('close', () => reject(new Error(`stream closed without a response (rst ${String(stream.rstCode)})`)));
  });
}
