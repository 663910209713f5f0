/**
 * exec and port-forward against the fake without kubectl: exec through the `ws` package (an
 * independent WebSocket implementation) and this kit's SPDY client, port-forward through the SPDY
 * client over both the WebSocket tunnel and a plain SPDY upgrade.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect } from 'node:tls';
import { WebSocket } from 'ws';
import { SpdySession } from '../spdy/session.ts';
import type { SpdyStream } from '../spdy/session.ts';
import { startFakeKube } from './index.ts';
import type { FakeKube } from './index.ts';
import { webSocketDuplex } from './portforward.ts';
import { WebSocketConnection } from './websocket.ts';

interface ExecOutcome {
  messages: Array<{ channel: number; data: string }>;
  status: { status: string; reason?: string; message?: string; details?: { causes: Array<{ reason?: string; message: string }> } } | undefined;
  closeCode: number;
  protocol: string;
}

function execUrl(kube: FakeKube, pod: string, query: string): string {
  return `${kube.url.replace('https', 'wss')}/api/v1/namespaces/default/pods/${pod}/exec?${query}`;
}

/** Runs an exec over ws, sends the given messages once open, and collects everything until close. */
function wsExec(kube: FakeKube, query: string, protocols: string[], send: Buffer[] = []): Promise<ExecOutcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(execUrl(kube, 'web-0', query), protocols, { ca: kube.caPem, headers: { Authorization: 'Bearer t' } });
    const messages: ExecOutcome['messages'] = [];
    ws.on('open', () => {
      for (const m of send) ws.send(m);
    });
    ws.on('message', (data: Buffer) => messages.push({ channel: data[0], data: data.subarray(1).toString() }));
    ws.on('close', (code) => {
      const statusMessage = messages.find((m) => m.channel === 3);
      resolve({ messages: messages.filter((m) => m.channel !== 3), status: statusMessage === undefined ? undefined : (JSON.parse(statusMessage.data) as ExecOutcome['status']), closeCode: code, protocol: ws.protocol });
    });
    ws.on('error', reject);
  });
}

interface RawReply {
  status: number;
  headers: Record<string, string>;
  socket: Duplex;
  body: Promise<string>;
}

/** Sends a hand-written upgrade request and reads the response head. */
function rawRequest(kube: FakeKube, method: string, path: string, headers: Record<string, string>): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: kube.port, ca: kube.caPem, servername: 'localhost' }, () => {
      const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${kube.port}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
    socket.on('error', reject);
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const [statusLine, ...headerLines] = buffered.subarray(0, end).toString().split('\r\n');
      const rest = buffered.subarray(end + 4);
      const parsed: Record<string, string> = {};
      for (const l of headerLines) {
        const i = l.indexOf(':');
        parsed[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const status = Number(statusLine.split(' ')[1]);
      if (rest.length > 0) socket.unshift(rest);
      const body =
        status === 101
          ? Promise.resolve('')
          : new Promise<string>((r) => {
              let text = '';
              socket.on('data', (c: Buffer) => (text += c.toString()));
              socket.on('end', () => r(text));
              socket.on('close', () => r(text));
            });
      resolve({ status, headers: parsed, socket, body });
    };
    socket.on('data', onData);
  });
}

function wsHandshakeHeaders(protocol: string): Record<string, string> {
  return { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64'), 'Sec-WebSocket-Protocol': protocol };
}

/** Opens a port-forward SPDY session to web-0, tunnelled in a WebSocket or on a plain upgrade. */
async function portForwardSession(kube: FakeKube, transport: 'websocket' | 'spdy'): Promise<SpdySession> {
  const path = '/api/v1/namespaces/default/pods/web-0/portforward';
  if (transport === 'websocket') {
    const reply = await rawRequest(kube, 'GET', path, wsHandshakeHeaders('SPDY/3.1+portforward.k8s.io'));
    assert.equal(reply.status, 101);
    assert.equal(reply.headers['sec-websocket-protocol'], 'SPDY/3.1+portforward.k8s.io');
    const ws = new WebSocketConnection(reply.socket, { protocol: 'SPDY/3.1+portforward.k8s.io', isServer: false });
    return new SpdySession(webSocketDuplex(ws), { isServer: false, enforceSendWindow: false });
  }
  const reply = await rawRequest(kube, 'POST', path, { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'portforward.k8s.io', 'Content-Length': '0' });
  assert.equal(reply.status, 101);
  assert.equal(reply.headers['x-stream-protocol-version'], 'portforward.k8s.io');
  return new SpdySession(reply.socket, { isServer: false, enforceSendWindow: false });
}

function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** Opens the error+data pair kubectl opens for one forwarded connection. */
async function openPair(session: SpdySession, port: number, requestId: number): Promise<{ data: SpdyStream; error: SpdyStream; errorText: Promise<string> }> {
  const error = session.openStream({ streamtype: ['error'], port: [String(port)], requestid: [String(requestId)] });
  error.end();
  const errorText = readAll(error).then((b) => b.toString());
  const data = session.openStream({ streamtype: ['data'], port: [String(port)], requestid: [String(requestId)] });
  await Promise.all([once(error, 'reply'), once(data, 'reply')]);
  return { data, error, errorText };
}

/** A TCP service that greets, counts what it receives and reports the count when the client half-closes. */
async function countingService(): Promise<{ server: Server; port: number; connections: Socket[] }> {
  const connections: Socket[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    connections.push(socket);
    socket.write('hello from the pod\n');
    let n = 0;
    socket.on('data', (c: Buffer) => (n += c.length));
    socket.on('end', () => socket.end(`received ${n} bytes\n`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, connections };
}

void describe('exec over WebSocket', () => {
  void test('echo answers on stdout, then Success on the status channel, then a normal close (v5)', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const out = await wsExec(kube, 'command=echo&command=hello&command=world&stdout=true&stderr=true', ['v5.channel.k8s.io', 'v4.channel.k8s.io']);
    assert.equal(out.protocol, 'v5.channel.k8s.io');
    assert.deepEqual(out.messages, [{ channel: 1, data: 'hello world\n' }]);
    assert.equal(out.status?.status, 'Success');
    assert.equal(out.closeCode, 1000);
    assert.deepEqual(kube.execs.map((e) => [e.pod, e.container, e.command, e.tty, e.transport, e.protocol, e.exitCode]), [['web-0', 'main', ['echo', 'hello', 'world'], false, 'websocket', 'v5.channel.k8s.io', 0]]);
    assert.equal(kube.execs[0].user?.user, 'system:anonymous');
  });

  void test('a non-zero exit is a NonZeroExitCode status with the code as its ExitCode cause (v4)', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const out = await wsExec(kube, 'command=sh&command=-c&command=exit+7&stdout=true&stderr=true', ['v4.channel.k8s.io']);
    assert.equal(out.protocol, 'v4.channel.k8s.io');
    assert.equal(out.status?.reason, 'NonZeroExitCode');
    assert.deepEqual(out.status?.details?.causes, [{ reason: 'ExitCode', message: '7' }]);
    const falsy = await wsExec(kube, 'command=false&stdout=true', ['v5.channel.k8s.io']);
    assert.deepEqual(falsy.status?.details?.causes, [{ reason: 'ExitCode', message: '1' }]);
    assert.deepEqual(kube.execs.map((e) => e.exitCode), [7, 1]);
  });

  void test('cat copies stdin to stdout until the v5 close-channel message ends stdin', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const out = await wsExec(kube, 'command=cat&stdin=true&stdout=true&stderr=true', ['v5.channel.k8s.io'], [Buffer.from('\x00first '), Buffer.from('\x00second'), Buffer.from([255, 0])]);
    assert.equal(out.messages.map((m) => m.data).join(''), 'first second');
    assert.equal(out.status?.status, 'Success');
    assert.equal(kube.execs[0].stdin, true);
  });

  void test('hostname, env, seq and stderr output are deterministic', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    assert.equal((await wsExec(kube, 'command=hostname&stdout=true', ['v5.channel.k8s.io'])).messages[0].data, 'web-0\n');
    assert.match((await wsExec(kube, 'command=env&stdout=true', ['v5.channel.k8s.io'])).messages[0].data, /^PATH=.*\nHOSTNAME=web-0\n/);
    assert.equal((await wsExec(kube, 'command=seq&command=3&stdout=true', ['v5.channel.k8s.io'])).messages[0].data, '1\n2\n3\n');
    const missing = await wsExec(kube, 'command=cat&command=/etc/nope&stdout=true&stderr=true', ['v5.channel.k8s.io']);
    assert.deepEqual(missing.messages, [{ channel: 2, data: 'cat: /etc/nope: No such file or directory\n' }]);
    const tty = await wsExec(kube, 'command=echo&command=a&stdout=true&stderr=true&tty=true', ['v5.channel.k8s.io'], [Buffer.from('\x04{"Width":80,"Height":24}')]);
    assert.deepEqual(tty.messages, [{ channel: 1, data: 'a\r\n' }], 'a terminal writes CR LF');
  });

  void test('an unknown command fails to start with an InternalError status', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const out = await wsExec(kube, 'command=no-such-tool&stdout=true', ['v5.channel.k8s.io']);
    assert.equal(out.status?.status, 'Failure');
    assert.equal(out.status?.reason, 'InternalError');
    assert.match(out.status?.message ?? '', /executable file not found/);
    assert.equal(kube.execs[0].exitCode, null);
  });

  void test('refuses bad exec upgrades with a Status and closes the socket', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const path = (q: string, pod = 'web-0'): string => `/api/v1/namespaces/default/pods/${pod}/exec?${q}`;
    const cases: Array<[string, string, string, Record<string, string>, number, RegExp]> = [
      ['no command', 'GET', path('stdout=true'), wsHandshakeHeaders('v5.channel.k8s.io'), 400, /at least 1 command/],
      ['no stream', 'GET', path('command=ls'), wsHandshakeHeaders('v5.channel.k8s.io'), 400, /at least one of stdin/],
      ['an unknown subprotocol', 'GET', path('command=ls&stdout=true'), wsHandshakeHeaders('v9.channel.k8s.io'), 400, /supported: v5/],
      ['a missing pod', 'GET', path('command=ls&stdout=true', 'ghost'), wsHandshakeHeaders('v5.channel.k8s.io'), 404, /pods \\"ghost\\" not found/],
      ['an unknown container', 'GET', path('command=ls&stdout=true&container=sidecar'), wsHandshakeHeaders('v5.channel.k8s.io'), 400, /container sidecar is not valid/],
      ['SPDY exec with only old protocols', 'POST', path('command=ls&stdout=true'), { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v2.channel.k8s.io, channel.k8s.io' }, 403, /unable to negotiate protocol: client supports \[v2\.channel\.k8s\.io channel\.k8s\.io\]/],
      ['an exec upgrade to something else', 'GET', path('command=ls&stdout=true'), { Connection: 'Upgrade', Upgrade: 'h2c' }, 400, /needs Upgrade: websocket .* or Upgrade: SPDY\/3\.1/],
    ];
    for (const [name, method, p, headers, status, message] of cases) {
      const reply = await rawRequest(kube, method, p, headers);
      assert.equal(reply.status, status, name);
      assert.match(await reply.body, message, name);
    }
    assert.equal(kube.execs.length, 0);
    const plain = await rawRequest(kube, 'GET', path('command=ls&stdout=true'), { Connection: 'close' });
    assert.equal(plain.status, 400);
    assert.match(await plain.body, /Upgrade request required/);
  });

  void test('close() ends a running exec promptly', async () => {
    const kube = await startFakeKube();
    const ws = new WebSocket(execUrl(kube, 'web-0', 'command=sleep&command=3600&stdout=true'), ['v5.channel.k8s.io'], { ca: kube.caPem });
    ws.on('error', () => {});
    await once(ws, 'open');
    const closed = once(ws, 'close');
    await kube.close();
    await closed;
    assert.equal(kube.execs[0].command.join(' '), 'sleep 3600');
  });
});

interface SpdyExecOutcome {
  stdout: string;
  stderr: string;
  status: { status: string; reason?: string; details?: { causes: Array<{ reason?: string; message: string }> } };
  protocol: string | undefined;
}

/** Runs an exec (or attach) over a plain SPDY/3.1 upgrade the way client-go does: error, stdin, stdout, stderr, resize streams. */
async function spdyExec(kube: FakeKube, query: string, opts: { stdin?: Buffer; tty?: boolean; subresource?: string; pod?: string } = {}): Promise<SpdyExecOutcome> {
  const path = `/api/v1/namespaces/default/pods/${opts.pod ?? 'web-0'}/${opts.subresource ?? 'exec'}?${query}`;
  const reply = await rawRequest(kube, 'POST', path, { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v5.channel.k8s.io, v4.channel.k8s.io', 'Content-Length': '0' });
  assert.equal(reply.status, 101, await reply.body);
  const session = new SpdySession(reply.socket, { isServer: false, enforceSendWindow: false });
  const open = (type: string): SpdyStream => session.openStream({ streamtype: [type] });
  const error = open('error');
  error.end();
  const stdin = opts.stdin === undefined ? undefined : open('stdin');
  const stdout = open('stdout');
  stdout.end();
  const stderr = opts.tty === true ? undefined : open('stderr');
  stderr?.end();
  const resize = opts.tty === true ? open('resize') : undefined;
  const closed = once(session, 'close');
  const results = Promise.all([readAll(stdout), stderr === undefined ? Buffer.alloc(0) : readAll(stderr), readAll(error)]);
  await Promise.all([error, stdin, stdout, stderr, resize].filter((x) => x !== undefined).map((x) => once(x, 'reply')));
  resize?.write('{"Width":100,"Height":40}');
  stdin?.end(opts.stdin);
  const [out, err, status] = await results;
  await closed;
  return { stdout: out.toString(), stderr: err.toString(), status: JSON.parse(status.toString()) as SpdyExecOutcome['status'], protocol: reply.headers['x-stream-protocol-version'] };
}

void describe('exec over SPDY/3.1', () => {
  void test('echo answers on the stdout stream, then Success on the error stream, then GOAWAY', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const out = await spdyExec(kube, 'command=echo&command=hi&stdout=true&stderr=true');
    assert.deepEqual([out.stdout, out.stderr, out.status.status, out.protocol], ['hi\n', '', 'Success', 'v5.channel.k8s.io']);
    assert.deepEqual(kube.execs.map((e) => [e.subresource, e.command, e.transport, e.protocol, e.exitCode]), [['exec', ['echo', 'hi'], 'spdy', 'v5.channel.k8s.io', 0]]);
  });

  void test('stdin reaches cat, stderr and exit codes come back, a terminal gets a resize stream', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const payload = randomBytes(200_000);
    const cat = await spdyExec(kube, 'command=cat&stdin=true&stdout=true&stderr=true', { stdin: payload });
    assert.equal(cat.stdout, payload.toString());
    const failing = await spdyExec(kube, 'command=sh&command=-c&command=cat+%2Fnope%3B+exit+5&stdout=true&stderr=true');
    assert.equal(failing.stderr, 'cat: /nope: No such file or directory\n');
    assert.deepEqual(failing.status.details?.causes, [{ reason: 'ExitCode', message: '5' }]);
    const tty = await spdyExec(kube, 'command=echo&command=a&stdout=true&tty=true', { tty: true });
    assert.equal(tty.stdout, 'a\r\n');
    assert.deepEqual(kube.execs.map((e) => e.exitCode), [0, 5, 0]);
  });

  void test('attach connects to the main process, which echoes stdin', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const out = await spdyExec(kube, 'stdin=true&stdout=true&stderr=true', { subresource: 'attach', stdin: Buffer.from('ping\n') });
    assert.equal(out.stdout, 'ping\n');
    assert.equal(out.status.status, 'Success');
    assert.deepEqual(kube.execs.map((e) => [e.subresource, e.command, e.transport]), [['attach', [], 'spdy']]);
  });

  void test('a stream of an unexpected type is reset and the command does not start', async (t) => {
    const kube = await startFakeKube();
    t.after(() => kube.close());
    const reply = await rawRequest(kube, 'POST', '/api/v1/namespaces/default/pods/web-0/exec?command=echo&stdout=true', { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v4.channel.k8s.io' });
    assert.equal(reply.status, 101);
    const session = new SpdySession(reply.socket, { isServer: false, enforceSendWindow: false });
    t.after(() => session.destroy());
    const stray = session.openStream({ streamtype: ['stdin'] });
    stray.on('error', () => {});
    const [status] = (await once(stray, 'reset')) as [number];
    assert.ok(status > 0);
    assert.equal(kube.execs[0].exitCode, undefined, 'still waiting for its streams');
  });
});

for (const transport of ['websocket', 'spdy'] as const) {
  void describe(`port-forward over ${transport === 'websocket' ? 'SPDY in a WebSocket' : 'a plain SPDY/3.1 upgrade'}`, () => {
    void test('the built-in echo returns the bytes and half-closes after the client does', async (t) => {
      const kube = await startFakeKube();
      t.after(() => kube.close());
      const session = await portForwardSession(kube, transport);
      t.after(() => session.destroy());
      const { data, errorText } = await openPair(session, 8080, 0);
      const payload = randomBytes(300_000);
      const back = readAll(data);
      data.end(payload);
      assert.ok((await back).equals(payload));
      assert.equal(await errorText, '', 'the error stream ends empty');
      assert.deepEqual(kube.portForwards.map((p) => [p.pod, p.port, p.transport]), [['web-0', 8080, transport]]);
    });

    void test('a target set with setPortForwardTarget gets the bytes both ways, with half-close', async (t) => {
      const kube = await startFakeKube();
      const service = await countingService();
      t.after(async () => {
        await kube.close();
        service.server.close();
      });
      kube.setPortForwardTarget('default', 'web-0', 5432, service.port);
      const session = await portForwardSession(kube, transport);
      t.after(() => session.destroy());
      const first = await openPair(session, 5432, 0);
      const second = await openPair(session, 5432, 1);
      const replies = [readAll(first.data), readAll(second.data)];
      first.data.end(Buffer.alloc(70_000, 1));
      second.data.end('tiny');
      assert.equal((await replies[0]).toString(), 'hello from the pod\nreceived 70000 bytes\n');
      assert.equal((await replies[1]).toString(), 'hello from the pod\nreceived 4 bytes\n');
      assert.equal(service.connections.length, 2);
    });

    void test('a refused target port is reported on the error stream', async (t) => {
      const kube = await startFakeKube();
      t.after(() => kube.close());
      const closed = createServer();
      closed.listen(0, '127.0.0.1');
      await once(closed, 'listening');
      const deadPort = (closed.address() as AddressInfo).port;
      closed.close();
      kube.setPortForwardTarget('default', 'web-0', 9999, deadPort);
      const session = await portForwardSession(kube, transport);
      t.after(() => session.destroy());
      const { data, errorText } = await openPair(session, 9999, 0);
      data.resume();
      assert.match(await errorText, /error forwarding port 9999 to pod web-0.*connection refused/);
    });

    void test('close() ends the session and every forwarded connection', async () => {
      const kube = await startFakeKube();
      const session = await portForwardSession(kube, transport);
      const { data } = await openPair(session, 80, 0);
      data.on('error', () => {});
      const sessionClosed = once(session, 'close');
      await kube.close();
      await sessionClosed;
      assert.ok(data.destroyed);
    });
  });
}

void test('a WebSocket port-forward without the SPDY tunnelling subprotocol is refused', async (t) => {
  const kube = await startFakeKube();
  t.after(() => kube.close());
  const reply = await rawRequest(kube, 'GET', '/api/v1/namespaces/default/pods/web-0/portforward?ports=80', wsHandshakeHeaders('v4.channel.k8s.io'));
  assert.equal(reply.status, 400);
  assert.match(await reply.body, /SPDY\/3\.1\+portforward\.k8s\.io/);
  const spdyWrongVersion = await rawRequest(kube, 'POST', '/api/v1/namespaces/default/pods/web-0/portforward', { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v4.channel.k8s.io' });
  assert.equal(spdyWrongVersion.status, 403);
  assert.match(await spdyWrongVersion.body, /unable to negotiate protocol/);
});
