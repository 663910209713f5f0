/**
 * exec and attach over SPDY/3.1, as kubectl does with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false or
 * when the WebSocket upgrade fails: a POST with `Upgrade: SPDY/3.1` and one
 * `X-Stream-Protocol-Version` per offered protocol; after 101 the client opens one SPDY stream per
 * channel, each named by its `streamtype` header (error, stdin, stdout, stderr, resize). The
 * command starts once every expected stream is open; when it ends, stdout and stderr get FIN, the
 * error stream carries the v1 Status JSON (v4 and v5; v5 behaves as v4 here, as SPDY streams
 * half-close by themselves) and the session is closed with GOAWAY.
 */
import type { Duplex } from 'node:stream';
import { RstStatus } from '../spdy/frames.ts';
import { SpdySession } from '../spdy/session.ts';
import type { SpdyStream } from '../spdy/session.ts';
import { resultStatus } from './exec.ts';
import type { ExecStreams } from './exec.ts';
import { execRecord, runExec } from './exec-transport.ts';
import type { ExecRequest, UpgradeTarget } from './exec-transport.ts';
import { refuseUpgrade } from './server.ts';
import type { UpgradeContext } from './server.ts';
import { failure } from './status.ts';

/** SPDY channel protocols the fake speaks (v4 semantics); kubectl offers v5 first. */
export const EXEC_SPDY_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'] as const;

type StreamType = 'error' | 'stdin' | 'stdout' | 'stderr' | 'resize';
const STREAM_TYPES: readonly string[] = ['error', 'stdin', 'stdout', 'stderr', 'resize'];
/** How long the kubelet waits for the client's streams. */
const STREAMS_TIMEOUT_MS = 30_000;

function offeredVersions(header: string | string[] | undefined): string[] {
  const values = Array.isArray(header) ? header : header === undefined ? [] : [header];
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}

export function handleSpdyExecUpgrade(ctx: UpgradeContext, target: UpgradeTarget, request: ExecRequest): void {
  const { req, socket, head } = target;
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'spdy/3.1') {
    refuseUpgrade(socket, failure(400, 'BadRequest', `${request.subresource} needs Upgrade: websocket (v5.channel.k8s.io, v4.channel.k8s.io) or Upgrade: SPDY/3.1`));
    return;
  }
  const offered = offeredVersions(req.headers['x-stream-protocol-version']);
  // The client's order wins, as in the kubelet's httpstream.Handshake.
  const protocol = offered.find((v) => (EXEC_SPDY_PROTOCOLS as readonly string[]).includes(v));
  if (protocol === undefined) {
    refuseUpgrade(socket, failure(403, 'Forbidden', `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server accepts [${EXEC_SPDY_PROTOCOLS.join(' ')}]`));
    return;
  }
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: ${protocol}\r\n\r\n`);
  (socket as Duplex & { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  if (head.length > 0) socket.unshift(head);
  const record = execRecord(request, target, 'spdy', protocol);
  ctx.execs.push(record);
  serveSpdyExec(ctx, socket, request, record);
}

function serveSpdyExec(ctx: UpgradeContext, socket: Duplex, request: ExecRequest, record: ReturnType<typeof execRecord>): void {
  // moby/spdystream (kubectl) never sends WINDOW_UPDATE; see ../spdy/session.ts.
  const session = new SpdySession(socket, { isServer: true, enforceSendWindow: false, sendWindowUpdates: false });
  const expected = new Set<StreamType>(['error']);
  if (request.stdin) expected.add('stdin');
  if (request.stdout) expected.add('stdout');
  if (request.stderr) expected.add('stderr');
  if (request.tty) expected.add('resize');
  const streams = new Map<StreamType, SpdyStream>();
  const gone = new AbortController();
  const onServerClose = (): void => session.destroy();
  ctx.signal.addEventListener('abort', onServerClose);
  session.on('close', () => {
    ctx.signal.removeEventListener('abort', onServerClose);
    clearTimeout(timer);
    gone.abort();
    if (record.exitCode === undefined) record.exitCode = null;
  });
  session.on('protocolError', (err) => ctx.logger.debug({ err }, 'fake-kube: SPDY protocol error from exec client'));
  const timer = setTimeout(() => {
    ctx.logger.debug({ missing: [...expected].filter((t) => !streams.has(t)) }, 'fake-kube: SPDY exec streams did not all arrive');
    session.destroy();
  }, STREAMS_TIMEOUT_MS);
  timer.unref();
  let started = false;

  session.on('stream', (stream) => {
    stream.on('error', () => {});
    const type = stream.header('streamtype') ?? '';
    if (started || !STREAM_TYPES.includes(type) || !expected.has(type as StreamType) || streams.has(type as StreamType)) {
      stream.reset(RstStatus.ProtocolError);
      return;
    }
    stream.reply();
    streams.set(type as StreamType, stream);
    if (type === 'resize') stream.on('data', (b: Buffer) => ctx.logger.debug({ size: b.toString() }, 'fake-kube: exec terminal resize'));
    if (type === 'error' || type === 'stdout' || type === 'stderr') stream.resume();
    if (streams.size === expected.size) {
      started = true;
      clearTimeout(timer);
      void run();
    }
  });

  const run = async (): Promise<void> => {
    const stdin = streams.get('stdin') ?? null;
    const io: ExecStreams = { stdin, stdout: streams.get('stdout') ?? null, stderr: streams.get('stderr') ?? null, tty: request.tty, signal: gone.signal };
    const result = await runExec(ctx, request, io);
    const writers = [io.stdout, io.stderr].filter((w) => w !== null);
    await Promise.all(writers.map((w) => new Promise<void>((resolve) => (w.destroyed || w.writableEnded ? resolve() : w.end(resolve)))));
    const error = streams.get('error');
    if (session.closed || error === undefined || error.destroyed) {
      record.exitCode = null;
      return;
    }
    record.exitCode = 'exitCode' in result ? result.exitCode : null;
    error.end(Buffer.from(JSON.stringify(resultStatus(request.command, result))), () => {
      // The status has been queued behind the output; GOAWAY follows and the socket ends.
      setImmediate(() => session.close());
    });
  };
}
