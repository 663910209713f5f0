/**
 * exec and attach: the request checks both transports share, and the WebSocket channel protocols
 * (v5.channel.k8s.io, v4.channel.k8s.io): each binary message starts with a channel byte
 * (0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize); v5 adds 255 [channel] to close one
 * channel (stdin EOF). SPDY/3.1 (exec-spdy.ts) maps its streams onto the same ExecStreams.
 */
import type { IncomingMessage } from 'node:http';
import { PassThrough, Writable } from 'node:stream';
import type { Duplex } from 'node:stream';
import { runAttach, runFakeCommand, resultStatus } from './exec.ts';
import type { ExecResult, ExecStreams, ExecTarget } from './exec.ts';
import { handleSpdyExecUpgrade } from './exec-spdy.ts';
import { resolveContainer } from './logs.ts';
import { refuseUpgrade } from './server.ts';
import type { UpgradeContext } from './server.ts';
import { failure } from './status.ts';
import type { FakeKubeUser, RecordedExec } from './types.ts';
import { acceptWebSocket, checkHandshake, CloseCode, isWebSocketUpgrade, parseSubprotocols } from './websocket.ts';
import type { WebSocketConnection } from './websocket.ts';

export interface UpgradeTarget {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  query: URLSearchParams;
  namespace: string;
  pod: string;
  user: FakeKubeUser;
}

/** Channel protocols we speak, most preferred first. */
export const EXEC_WEBSOCKET_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'] as const;

const Channel = { Stdin: 0, Stdout: 1, Stderr: 2, Error: 3, Resize: 4, Close: 255 } as const;

function flag(query: URLSearchParams, name: string): boolean {
  const v = query.get(name);
  return v === 'true' || v === '1';
}

export type ExecSubresource = 'exec' | 'attach';

export interface ExecRequest {
  subresource: ExecSubresource;
  target: ExecTarget;
  /** The command (exec); empty for attach. */
  command: string[];
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

/** Validates the exec or attach query the way the API server does; returns a refusal Status on error. */
export function parseExecRequest(ctx: UpgradeContext, target: UpgradeTarget, subresource: ExecSubresource = 'exec'): ExecRequest | ReturnType<typeof failure> {
  const command = subresource === 'exec' ? target.query.getAll('command') : [];
  if (subresource === 'exec' && command.length === 0) return failure(400, 'BadRequest', 'you must specify at least 1 command');
  const tty = flag(target.query, 'tty');
  const request = {
    subresource,
    command,
    stdin: flag(target.query, 'stdin'),
    stdout: flag(target.query, 'stdout'),
    // With a terminal, stderr is merged into stdout.
    stderr: flag(target.query, 'stderr') && !tty,
    tty,
  };
  if (!request.stdin && !request.stdout && !flag(target.query, 'stderr')) return failure(400, 'BadRequest', 'you must specify at least one of stdin, stdout, stderr');
  const resolved = resolveContainer(ctx.store, target.namespace, target.pod, target.query.get('container'));
  if ('status' in resolved) return resolved.status;
  return { ...request, target: { namespace: target.namespace, pod: target.pod, container: resolved.container, fs: ctx.files.get(target.namespace, target.pod) } };
}

/** What an exec or attach records when it starts. */
export function execRecord(request: ExecRequest, target: UpgradeTarget, transport: 'websocket' | 'spdy', protocol: string): RecordedExec {
  return {
    subresource: request.subresource,
    namespace: request.target.namespace,
    pod: request.target.pod,
    container: request.target.container,
    command: request.command,
    tty: request.tty,
    stdin: request.stdin,
    transport,
    protocol,
    user: target.user,
    time: Date.now(),
  };
}

/** Runs the command (exec) or connects to the main process (attach); never throws. */
export async function runExec(ctx: UpgradeContext, request: ExecRequest, io: ExecStreams): Promise<ExecResult> {
  try {
    return request.subresource === 'attach' ? await runAttach(io) : await runFakeCommand(request.command, io, request.target);
  } catch (err) {
    ctx.logger.error({ err }, 'fake-kube: exec command failed');
    return { error: 'the fake runtime failed' };
  }
}

export function handleExecUpgrade(ctx: UpgradeContext, target: UpgradeTarget, subresource: ExecSubresource = 'exec'): void {
  const parsed = parseExecRequest(ctx, target, subresource);
  if ('code' in parsed) {
    refuseUpgrade(target.socket, parsed);
    return;
  }
  if (!isWebSocketUpgrade(target.req)) {
    // kubectl falls back to SPDY/3.1 when the WebSocket upgrade fails or with
    // KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false.
    handleSpdyExecUpgrade(ctx, target, parsed);
    return;
  }
  const problem = checkHandshake(target.req);
  if (problem !== undefined) {
    refuseUpgrade(target.socket, failure(400, 'BadRequest', problem));
    return;
  }
  const offered = parseSubprotocols(target.req.headers['sec-websocket-protocol']);
  const protocol = EXEC_WEBSOCKET_PROTOCOLS.find((p) => offered.includes(p));
  if (protocol === undefined) {
    refuseUpgrade(target.socket, failure(400, 'BadRequest', `none of the offered subprotocols [${offered.join(', ')}] is supported; supported: ${EXEC_WEBSOCKET_PROTOCOLS.join(', ')}`));
    return;
  }
  const ws = acceptWebSocket(target.req, target.socket, target.head, protocol);
  const record = execRecord(parsed, target, 'websocket', protocol);
  ctx.execs.push(record);
  void serveExecOverWebSocket(ctx, ws, parsed, record);
}

/** A Writable that sends each chunk as one message on a channel. */
function channelWriter(ws: WebSocketConnection, channel: number): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (!ws.isOpen) {
        callback();
        return;
      }
      const ok = ws.send(Buffer.concat([Buffer.of(channel), chunk]));
      if (ok) callback();
      else ws.socket.once('drain', () => callback());
    },
  });
}

async function serveExecOverWebSocket(ctx: UpgradeContext, ws: WebSocketConnection, request: ExecRequest, record: RecordedExec): Promise<void> {
  const gone = new AbortController();
  const onServerClose = (): void => gone.abort();
  ctx.signal.addEventListener('abort', onServerClose);
  ws.on('close', () => gone.abort());

  const stdin = request.stdin ? new PassThrough() : null;
  const io: ExecStreams = {
    stdin,
    stdout: request.stdout ? channelWriter(ws, Channel.Stdout) : null,
    stderr: request.stderr ? channelWriter(ws, Channel.Stderr) : null,
    tty: request.tty,
    signal: gone.signal,
  };
  const v5 = ws.protocol === 'v5.channel.k8s.io';
  ws.on('message', (data, binary) => {
    if (!binary || data.length === 0) return;
    const channel = data[0];
    const body = data.subarray(1);
    if (channel === Channel.Stdin) {
      if (stdin !== null && !stdin.writableEnded) stdin.write(body);
    } else if (channel === Channel.Close && v5) {
      if (body[0] === Channel.Stdin) stdin?.end();
    } else if (channel === Channel.Resize) {
      ctx.logger.debug({ size: body.toString() }, 'fake-kube: exec terminal resize');
    }
  });
  gone.signal.addEventListener('abort', () => {
    if (stdin !== null && !stdin.writableEnded) stdin.end();
  });

  const result = await runExec(ctx, request, io);
  // Let buffered output go out before the status.
  const writers = [io.stdout, io.stderr].filter((w) => w !== null);
  await Promise.all(writers.map((w) => new Promise<void>((resolve) => w.end(resolve))));
  ctx.signal.removeEventListener('abort', onServerClose);
  if (!ws.isOpen) {
    record.exitCode = null;
    return;
  }
  record.exitCode = 'exitCode' in result ? result.exitCode : null;
  ws.send(Buffer.concat([Buffer.of(Channel.Error), Buffer.from(JSON.stringify(resultStatus(request.command, result)))]));
  ws.close(CloseCode.Normal);
}
