import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { makeClientCert, makeServerCert, makeTestCa } from '../../../test/kit/certs.ts';
import type { IssuedCert, TestCa } from '../../../test/kit/certs.ts';
import { createTrustingFetch } from './trusting-fetch.ts';

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

/** Answers by path; /hang never answers (the socket is kept for the test's after()). */
const routes: Record<string, Handler> = {
  '/echo': (req, body, res) => {
    const tls = req.socket as Partial<TLSSocket>;
    const peer = typeof tls.getPeerCertificate === 'function' ? tls.getPeerCertificate() : undefined;
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        method: req.method,
        body: body.toString('utf8'),
        length: req.headers['content-length'] ?? null,
        type: req.headers['content-type'] ?? null,
        custom: req.headers['x-custom'] ?? null,
        clientCn: peer !== undefined && Object.keys(peer).length > 0 ? (peer.subject?.CN ?? null) : null,
        port: req.socket.remotePort,
      }),
    );
  },
  '/redirect': (_req, _body, res) => {
    res.writeHead(302, { location: '/echo' });
    res.end('moved');
  },
  '/empty': (_req, _body, res) => {
    res.writeHead(204);
    res.end();
  },
  '/announced-big': (_req, _body, res) => {
    res.writeHead(200, { 'content-length': '5000' });
    res.end('x'.repeat(5000));
  },
  '/streamed-big': (_req, _body, res) => {
    res.writeHead(200);
    for (let i = 0; i < 10; i++) res.write('y'.repeat(500));
    res.end();
  },
  '/hang': () => undefined,
  '/half': (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('start');
  },
};

function handle(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const route = routes[new URL(req.url ?? '/', 'http://x').pathname];
    if (route === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    route(req, Buffer.concat(chunks), res);
  });
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return String((server.address() as AddressInfo).port);
}

void describe('createTrustingFetch', () => {
  let ca: TestCa;
  let sameNameCa: TestCa;
  let client: IssuedCert;
  let foreignClient: IssuedCert;
  let https: Server;
  let mtls: Server;
  let http: Server;
  let base = '';
  let mtlsBase = '';
  let httpBase = '';

  before(async () => {
    ca = await makeTestCa({ commonName: 'Trusting Fetch Test CA' });
    // CA-02: same names, another key.
    sameNameCa = await makeTestCa({ commonName: 'Trusting Fetch Test CA' });
    const server = await makeServerCert(ca, { ipAddresses: ['127.0.0.1'] });
    client = await makeClientCert(ca, { commonName: 'device-1' });
    foreignClient = await makeClientCert(sameNameCa, { commonName: 'device-1' });
    https = createHttpsServer({ cert: server.certPem, key: server.keyPem }, handle);
    mtls = createHttpsServer({ cert: server.certPem, key: server.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, handle);
    http = createHttpServer(handle);
    base = `https://127.0.0.1:${await listen(https)}`;
    mtlsBase = `https://127.0.0.1:${await listen(mtls)}`;
    httpBase = `http://127.0.0.1:${await listen(http)}`;
  });
  after(() => {
    for (const s of [https, mtls, http]) {
      s.closeAllConnections();
      s.close();
    }
  });

  void test('a server whose certificate our CA signed is trusted through caPem', async () => {
    const f = createTrustingFetch({ caPem: ca.certPem });
    const res = await f(`${base}/echo`);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { method: string }).method, 'GET');
  });

  void test('CA-02 a server whose certificate another CA with the same name signed is refused, and so is one without caPem (system roots only)', async () => {
    await assert.rejects(createTrustingFetch({ caPem: sameNameCa.certPem })(`${base}/echo`), (err: NodeJS.ErrnoException) => /CERT|SIGNATURE|UNABLE_TO_VERIFY/.test(err.code ?? ''));
    await assert.rejects(createTrustingFetch()(`${base}/echo`), (err: NodeJS.ErrnoException) => /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(err.code ?? ''));
  });

  void test('KP-12 a redirect is returned as it is, never followed, even when the caller asks for redirect: follow', async () => {
    const f = createTrustingFetch({ caPem: ca.certPem });
    const res = await f(`${base}/redirect`, { redirect: 'follow' });
    assert.equal(res.status, 302);
    assert.equal(res.headers.get('location'), '/echo');
    assert.equal(await res.text(), 'moved');
  });

  void test('sends the method, headers (record or Headers) and each kind of body with its length', async () => {
    const f = createTrustingFetch({ caPem: ca.certPem });
    const bodies: [string, unknown][] = [
      ['string', 'a=1&b=é'],
      ['URLSearchParams', new URLSearchParams({ a: '1', b: 'é' })],
      ['Uint8Array', new TextEncoder().encode('a=1&b=é')],
      ['a Uint8Array view into a larger buffer', new Uint8Array(Buffer.from('--a=1&b=é--')).subarray(2, 2 + Buffer.byteLength('a=1&b=é'))],
      ['ArrayBuffer', new TextEncoder().encode('a=1&b=é').buffer],
    ];
    for (const [kind, body] of bodies) {
      const headers = kind === 'string' ? new Headers({ 'content-type': 'application/x-www-form-urlencoded', 'x-custom': 'yes' }) : { 'content-type': 'application/x-www-form-urlencoded', 'x-custom': 'yes' };
      const res = await f(`${base}/echo`, { method: 'POST', headers, body });
      const echoed = (await res.json()) as Record<string, unknown>;
      const expected = kind === 'URLSearchParams' ? new URLSearchParams({ a: '1', b: 'é' }).toString() : 'a=1&b=é';
      assert.deepEqual(
        { method: echoed.method, body: echoed.body, length: echoed.length, type: echoed.type, custom: echoed.custom },
        { method: 'POST', body: expected, length: String(Buffer.byteLength(expected)), type: 'application/x-www-form-urlencoded', custom: 'yes' },
        kind,
      );
    }
  });

  void test('a streamed request body is refused with a TypeError before anything is sent', async () => {
    const f = createTrustingFetch({ caPem: ca.certPem });
    await assert.rejects(f(`${base}/echo`, { method: 'POST', body: new ReadableStream() }), TypeError);
  });

  void test('plain http:// is refused (INSECURE_URL) unless allowHttp, and other schemes always (TypeError)', async () => {
    await assert.rejects(createTrustingFetch()(`${httpBase}/echo`), { code: 'INSECURE_URL' });
    const res = await createTrustingFetch({ allowHttp: true })(`${httpBase}/echo`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await assert.rejects(createTrustingFetch({ allowHttp: true })('file:///etc/passwd'), TypeError);
  });

  void test('204 has a null body', async () => {
    const res = await createTrustingFetch({ caPem: ca.certPem })(`${base}/empty`);
    assert.equal(res.status, 204);
    assert.equal(res.body, null);
    const capped = await createTrustingFetch({ caPem: ca.certPem, maxBodyBytes: 10 })(`${base}/empty`);
    assert.equal(capped.status, 204);
    assert.equal(capped.body, null);
  });

  void test('with maxBodyBytes a larger answer is refused (ANSWER_TOO_LARGE), whether announced or streamed; an answer within it is whole', async () => {
    const f = createTrustingFetch({ caPem: ca.certPem, maxBodyBytes: 4096 });
    await assert.rejects(f(`${base}/announced-big`), { code: 'ANSWER_TOO_LARGE' });
    await assert.rejects(f(`${base}/streamed-big`), { code: 'ANSWER_TOO_LARGE' });
    const small = await createTrustingFetch({ caPem: ca.certPem, maxBodyBytes: 5000 })(`${base}/streamed-big`);
    assert.equal((await small.text()).length, 5000);
  });

  void test('without maxBodyBytes the answer is streamed and the caller can stop reading', async () => {
    const res = await createTrustingFetch({ caPem: ca.certPem })(`${base}/half`);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    assert.equal(Buffer.from(first.value).toString('utf8'), 'start');
    await reader.cancel();
  });

  void test('a server that never answers ends in TIMEOUT (retryable) after timeoutMs idle', async () => {
    await assert.rejects(createTrustingFetch({ caPem: ca.certPem, timeoutMs: 200 })(`${base}/hang`), { code: 'TIMEOUT', retryable: true });
  });

  void test('an abort signal ends a pending request, and an aborted one is never sent', async () => {
    const f = createTrustingFetch({ caPem: ca.certPem });
    const controller = new AbortController();
    const pending = f(`${base}/hang`, { signal: controller.signal });
    setImmediate(() => controller.abort());
    await assert.rejects(pending, { name: 'AbortError' });
    await assert.rejects(f(`${base}/echo`, { signal: AbortSignal.abort() }), { name: 'AbortError' });
  });

  void test('a client certificate is presented when given; a server that requires one refuses us without it or with one from another CA', async () => {
    const res = await createTrustingFetch({ caPem: ca.certPem, cert: client.certPem, key: client.keyPem })(`${mtlsBase}/echo`);
    assert.equal(((await res.json()) as { clientCn: string }).clientCn, 'device-1');
    await assert.rejects(createTrustingFetch({ caPem: ca.certPem })(`${mtlsBase}/echo`));
    await assert.rejects(createTrustingFetch({ caPem: ca.certPem, cert: foreignClient.certPem, key: foreignClient.keyPem })(`${mtlsBase}/echo`));
    assert.throws(() => createTrustingFetch({ caPem: ca.certPem, cert: client.certPem }), TypeError);
  });

  void test('without keepAlive each request has its own connection; with it one connection serves them in turn until close()', async () => {
    const port = async (f: ReturnType<typeof createTrustingFetch>): Promise<number> => ((await (await f(`${base}/echo`)).json()) as { port: number }).port;
    const single = createTrustingFetch({ caPem: ca.certPem });
    assert.notEqual(await port(single), await port(single));
    const kept = createTrustingFetch({ caPem: ca.certPem, keepAlive: true });
    try {
      assert.equal(await port(kept), await port(kept));
    } finally {
      kept.close();
    }
  });
});
