import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:tls';
import type { ConnectionOptions, TLSSocket, TlsOptions } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { CertificateAuthority, issueKeyAndCert } from './authority.ts';
import { checkPeerCertificate } from './check.ts';
import { forgeCertificate } from './forge.testing.ts';
import { mtlsClientOptions, mtlsServerOptions } from './tls.ts';
import { EKU_CLIENT_AUTH, TYPE_MARKER_OID } from './types.ts';

interface HandshakeResult {
  /** The server accepted and the client read the server's greeting. */
  ok: boolean;
  clientError?: Error;
  serverError?: Error;
  /** What the server saw, through checkPeerCertificate-ready native certificates. */
  serverSawPeer?: boolean;
}

/** One TLS connection from a real client to a real server on loopback; both are closed before returning. */
async function handshake(serverOptions: TlsOptions, clientOptions: ConnectionOptions): Promise<HandshakeResult> {
  let serverError: Error | undefined;
  let serverSawPeer = false;
  const server = createServer(serverOptions, (socket: TLSSocket) => {
    serverSawPeer = socket.getPeerX509Certificate() !== undefined;
    socket.on('error', () => {});
    socket.end('ok');
  });
  server.on('tlsClientError', (err) => {
    serverError = err;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const { port } = server.address() as AddressInfo;
    const client = connect({ ...clientOptions, host: '127.0.0.1', port });
    let data = '';
    let clientError: Error | undefined;
    client.setEncoding('utf8');
    client.on('data', (chunk: string) => {
      data += chunk;
    });
    const closed = new Promise((resolve) => client.once('close', resolve));
    client.on('error', (err: Error) => {
      clientError = err;
    });
    await closed;
    // A refused client certificate is reported on the server side; let that event land before reading it.
    await new Promise((resolve) => setImmediate(resolve));
    const result: HandshakeResult = { ok: data === 'ok' && clientError === undefined, serverSawPeer };
    if (clientError !== undefined) result.clientError = clientError;
    if (serverError !== undefined) result.serverError = serverError;
    return result;
  } finally {
    server.close();
    await once(server, 'close');
  }
}

/**
 * Why the server refuses this client. Node's TLS server verifies the client chain itself and, with
 * rejectUnauthorized, destroys the socket without saying why; so we repeat the connection against a
 * server that only records socket.authorizationError.
 */
async function verifyErrorFor(serverOptions: TlsOptions, clientOptions: ConnectionOptions): Promise<string | undefined> {
  let reason: string | undefined;
  const server = createServer({ ...serverOptions, rejectUnauthorized: false }, (socket: TLSSocket) => {
    const err = socket.authorizationError as Error | string | null | undefined;
    reason = typeof err === 'string' ? err : (err as { code?: string } | null | undefined)?.code ?? err?.message;
    // Only failures of a certificate that was actually presented count here.
    if (socket.getPeerX509Certificate() === undefined) reason = `no certificate (${reason})`;
    socket.on('error', () => {});
    socket.end();
  });
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const client = connect({ ...clientOptions, host: '127.0.0.1', port: (server.address() as AddressInfo).port });
    client.on('error', () => {});
    client.resume();
    await new Promise((resolve) => client.once('close', resolve));
  } finally {
    server.close();
    await once(server, 'close');
  }
  return reason;
}

const HOUR = 3_600_000;
/** A hostile client does not hold itself to our security level. */
const ATTACKER_CIPHERS = 'DEFAULT@SECLEVEL=0';

void describe('mutual TLS between parts', () => {
  let ca: CertificateAuthority;
  let edge: { certPem: string; keyPem: string; caPem: string };
  let trust: { certPem: string; keyPem: string };

  before(async () => {
    ca = await CertificateAuthority.create();
    edge = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' }, ipAddresses: ['127.0.0.1'] });
    trust = await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
  });

  const serverOpts = (): TlsOptions => mtlsServerOptions({ caPem: ca.certPem, certPem: edge.certPem, keyPem: edge.keyPem });
  const clientOpts = (cert: { certPem: string; keyPem: string }, extra: Partial<Parameters<typeof mtlsClientOptions>[0]> = {}): ConnectionOptions =>
    mtlsClientOptions({ caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem, servername: 'mykube.corp.example.com', expectServerType: 'access-tier', ...extra });

  void test('a trust certificate reaches an access tier over TLS 1.3 with the service domain as SNI', async () => {
    const result = await handshake(serverOpts(), clientOpts(trust, { expectServerName: 'edge-1' }));
    assert.equal(result.ok, true, String(result.clientError ?? result.serverError));
    assert.equal(result.serverSawPeer, true);
  });

  void test('the server options allow TLS 1.3 only and require a client certificate', () => {
    const o = serverOpts();
    assert.equal(o.minVersion, 'TLSv1.3');
    assert.equal(o.maxVersion, 'TLSv1.3');
    assert.equal(o.requestCert, true);
    assert.equal(o.rejectUnauthorized, true);
    assert.equal(o.ca, ca.certPem);
  });

  void test('AT-01 a client without a certificate is refused at the handshake', async () => {
    const result = await handshake(serverOpts(), mtlsClientOptions({ caPem: ca.certPem, expectServerType: 'access-tier' }));
    assert.equal(result.ok, false);
    assert.equal(result.serverSawPeer, false);
  });

  void test('a TLS 1.2 client is refused', async () => {
    const result = await handshake(serverOpts(), { ...clientOpts(trust), minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    assert.equal(result.ok, false);
  });

  void test('CA-01 an expired client certificate is refused at the handshake', async () => {
    const clock = { now: () => Date.now() - 10 * HOUR };
    const past = await CertificateAuthority.load(ca.exportEncrypted('pw'), 'pw', { clock });
    const expired = await issueKeyAndCert(past, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    assert.ok(expired.notAfter.getTime() < Date.now());
    const client = clientOpts({ certPem: expired.certPem, keyPem: expired.keyPem });
    const result = await handshake(serverOpts(), client);
    assert.equal(result.ok, false);
    assert.equal(result.serverSawPeer, false);
    assert.equal(await verifyErrorFor(serverOpts(), client), 'CERT_HAS_EXPIRED');
  });

  void test('CA-01 a client certificate not yet valid beyond the skew is refused at the handshake', async () => {
    const clock = { now: () => Date.now() + HOUR };
    const future = await CertificateAuthority.load(ca.exportEncrypted('pw'), 'pw', { clock });
    const early = await issueKeyAndCert(future, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    const client = clientOpts({ certPem: early.certPem, keyPem: early.keyPem });
    const result = await handshake(serverOpts(), client);
    assert.equal(result.ok, false);
    assert.equal(result.serverSawPeer, false);
    assert.equal(await verifyErrorFor(serverOpts(), client), 'CERT_NOT_YET_VALID');
  });

  void test('CA-01 a certificate from an issuer whose clock runs 3 minutes ahead is usable at once (backdated notBefore)', async () => {
    const clock = { now: () => Date.now() + 3 * 60_000 };
    const ahead = await CertificateAuthority.load(ca.exportEncrypted('pw'), 'pw', { clock });
    const cert = await issueKeyAndCert(ahead, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    const result = await handshake(serverOpts(), clientOpts({ certPem: cert.certPem, keyPem: cert.keyPem }));
    assert.equal(result.ok, true, String(result.clientError ?? result.serverError));
  });

  void test('CA-01 an expired server certificate is refused by the client', async () => {
    const clock = { now: () => Date.now() - 30 * HOUR };
    const past = await CertificateAuthority.load(ca.exportEncrypted('pw'), 'pw', { clock });
    const oldEdge = await issueKeyAndCert(past, { type: 'access-tier', identity: { name: 'edge-1' } });
    const result = await handshake(mtlsServerOptions({ caPem: ca.certPem, certPem: oldEdge.certPem, keyPem: oldEdge.keyPem }), clientOpts(trust));
    assert.equal(result.ok, false);
    assert.match(String(result.clientError?.message), /expired/i);
  });

  void test('CA-02 a client certificate from another CA with the same names is refused at the handshake', async () => {
    const impostor = await CertificateAuthority.create();
    assert.equal(impostor.certificate.subject, ca.certificate.subject);
    const fake = await issueKeyAndCert(impostor, { type: 'trust', identity: { user: 'alice', device: 'laptop-1' } });
    const client = clientOpts({ certPem: fake.certPem, keyPem: fake.keyPem });
    const result = await handshake(serverOpts(), client);
    assert.equal(result.ok, false);
    assert.equal(result.serverSawPeer, false);
    assert.equal(await verifyErrorFor(serverOpts(), client), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  void test('CA-02 CN-08 a server certificate from another CA with the same names is refused by the client', async () => {
    const impostor = await CertificateAuthority.create();
    const fakeEdge = await issueKeyAndCert(impostor, { type: 'access-tier', identity: { name: 'edge-1' } });
    const result = await handshake(mtlsServerOptions({ caPem: impostor.certPem, certPem: fakeEdge.certPem, keyPem: fakeEdge.keyPem }), clientOpts(trust));
    assert.equal(result.ok, false);
    assert.match(String(result.clientError?.message), /certificate/i);
  });

  void test('CA-03 a server certificate of the wrong type is refused by the client check', async () => {
    const kubeProxy = await issueKeyAndCert(ca, { type: 'kube-proxy', identity: { name: 'edge-1' }, ipAddresses: ['127.0.0.1'] });
    const result = await handshake(mtlsServerOptions({ caPem: ca.certPem, certPem: kubeProxy.certPem, keyPem: kubeProxy.keyPem }), clientOpts(trust));
    assert.equal(result.ok, false);
    assert.match(String(result.clientError?.message), /kube-proxy certificate was presented where access-tier is required/);
  });

  void test('CA-03 a server certificate with only clientAuth (a connector certificate) is refused by the client', async () => {
    const connector = await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } });
    const result = await handshake(mtlsServerOptions({ caPem: ca.certPem, certPem: connector.certPem, keyPem: connector.keyPem }), clientOpts(trust, { expectServerType: ['access-tier', 'connector'] }));
    assert.equal(result.ok, false);
    assert.match(String(result.clientError?.message), /purpose/i);
  });

  void test('the client refuses an access tier whose name URI is not the expected one', async () => {
    const result = await handshake(serverOpts(), clientOpts(trust, { expectServerName: 'edge-2' }));
    assert.equal(result.ok, false);
    assert.match(String(result.clientError?.message), /not "edge-2"/);
  });

  void test('CA-07 a client certificate signed with SHA-1 is refused at the handshake', async () => {
    const weak = await forgeCertificate({ ca, hash: 'sha1', ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust], uris: ['causeway://user/alice', 'causeway://device/laptop-1'] });
    const client = { ...clientOpts(weak), ciphers: ATTACKER_CIPHERS };
    const result = await handshake(serverOpts(), client);
    assert.equal(result.ok, false);
    assert.equal(result.serverSawPeer, false);
    // OpenSSL's security-level check refuses it; Node reports that verification error as UNSPECIFIED.
    assert.equal(await verifyErrorFor(serverOpts(), client), 'UNSPECIFIED');
  });

  void test('CA-07 the same forged certificate signed with SHA-256 is accepted, so only the digest made the difference', async () => {
    const strong = await forgeCertificate({ ca, hash: 'sha256', ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust], uris: ['causeway://user/alice', 'causeway://device/laptop-1'] });
    const result = await handshake(serverOpts(), { ...clientOpts(strong), ciphers: ATTACKER_CIPHERS });
    assert.equal(result.ok, true, String(result.clientError ?? result.serverError));
  });

  void test('CA-07 a client certificate with an RSA-1024 key is refused at the handshake', async () => {
    const weak = await forgeCertificate({ ca, rsaBits: 1024, ekus: [EKU_CLIENT_AUTH, TYPE_MARKER_OID.trust], uris: ['causeway://user/alice', 'causeway://device/laptop-1'] });
    const client = { ...clientOpts(weak), ciphers: ATTACKER_CIPHERS };
    const result = await handshake(serverOpts(), client);
    assert.equal(result.ok, false);
    assert.equal(result.serverSawPeer, false);
    assert.equal(await verifyErrorFor(serverOpts(), client), 'UNSPECIFIED');
  });

  void test('the server hands checkPeerCertificate a native certificate that identifies the trust cert holder', async () => {
    let seen: ReturnType<typeof checkPeerCertificate> | undefined;
    const server = createServer(serverOpts(), (socket) => {
      seen = checkPeerCertificate(socket.getPeerX509Certificate(), 'trust');
      socket.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const client = connect({ ...clientOpts(trust), host: '127.0.0.1', port: (server.address() as AddressInfo).port });
      client.resume();
      await new Promise((resolve) => client.once('close', resolve));
    } finally {
      server.close();
      await once(server, 'close');
    }
    assert.ok(seen?.ok);
    assert.equal(seen.identity.user, 'alice');
    assert.equal(seen.identity.device, 'laptop-1');
  });
});
