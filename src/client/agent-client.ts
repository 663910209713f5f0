/**
 * Talking to the background agent (src/client/agent.ts) from the CLI: HTTP/1.1 with JSON over the unix
 * socket `$CAUSEWAY_HOME/agent.sock`. Every request carries `X-Causeway-Agent: 1`; the agent refuses any
 * request without it, so nothing that can only send a plain form or a simple request (a web page that
 * somehow reaches the socket) can drive it.
 *
 * `agentStatus(home)` is null when no agent answers; `ensureAgent(io)` starts `causeway agent` detached
 * (stdout and stderr appended to `$CAUSEWAY_HOME/agent.log`) when none answers and waits until it does.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { CausewayError, UserError, errorCode, errorMessage } from '../lib/errors.ts';

export const AGENT_SOCKET = 'agent.sock';
export const AGENT_LOG = 'agent.log';
export const AGENT_HEADER = 'x-causeway-agent';
/** Linux allows 107 bytes in a unix socket path (sun_path is 108 with the NUL); macOS 103. */
const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103;
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/** One connected service, as `GET /v1/status` reports it. */
export interface AgentConnection {
  service: string;
  type: 'kubernetes' | 'tcp';
  /** The local port the proxy listens on (127.0.0.1 and ::1). */
  port: number;
  /** ISO time the proxy started. */
  since: string;
  bytesUp: number;
  bytesDown: number;
  /** Local connections open now, and accepted since start. */
  openConnections: number;
  totalConnections: number;
  /** The kubeconfig context written for it (kubernetes services), and the file. */
  kubeContext?: string;
  kubeconfig?: string;
  /** True when it was started because the service (or the managed config) says autorun. */
  autorun: boolean;
}

/** `GET /v1/status`. */
export interface AgentStatus {
  pid: number;
  /** ISO time the agent started. */
  startedAt: string;
  /** The control plane of the session, or null when not logged in. */
  server: string | null;
  user: { name: string; email?: string } | null;
  device: { id: string; trustLevel?: string; explanation?: string } | null;
  /** The trust certificate held now (null when none). */
  trustCert: { notAfter: string } | null;
  connections: AgentConnection[];
  /** The latest problem the agent met in the background (catalog refresh, renewal, report), if any. */
  lastError?: { code: string; message: string; at: string };
  /** The local app page's port (never its secret). */
  appPort?: number;
}

/** `POST /v1/connect` answer. */
export interface AgentConnectResult {
  connection: AgentConnection;
  /** Set when already connected (nothing new was started). */
  alreadyConnected?: boolean;
}

export function agentSocketPath(home: string): string {
  return path.join(home, AGENT_SOCKET);
}

export function checkSocketPath(socketPath: string): void {
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new UserError('AGENT_SOCKET_PATH_TOO_LONG', `The agent's socket path ${socketPath} is longer than this system allows (${MAX_SOCKET_PATH} bytes); set CAUSEWAY_HOME to a shorter directory.`);
  }
}

export interface AgentRequestOptions {
  /** Give up after this long; default 60 s (a connect may log in to an access tier and write a kubeconfig). */
  timeoutMs?: number;
}

/**
 * One request to the agent. A JSON error answer (`{ error: { code, message } }`) is thrown as a UserError
 * (4xx) or CausewayError (5xx) with the agent's code. No agent (no socket, refused) throws AGENT_NOT_RUNNING.
 */
export async function agentRequest<T = unknown>(home: string, method: string, urlPath: string, body?: unknown, options: AgentRequestOptions = {}): Promise<T> {
  const socketPath = agentSocketPath(home);
  checkSocketPath(socketPath);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return await new Promise<T>((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        host: 'causeway-agent',
        headers: {
          [AGENT_HEADER]: '1',
          accept: 'application/json',
          ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(payload.length) }),
        },
        timeout: options.timeoutMs ?? 60_000,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) {
            req.destroy(new CausewayError('AGENT_ANSWER_TOO_LARGE', `the agent's answer to ${method} ${urlPath} is over ${MAX_ANSWER_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            reject(new CausewayError('AGENT_BAD_ANSWER', `the agent answered ${method} ${urlPath} with status ${res.statusCode} and no JSON; see ${path.join(home, AGENT_LOG)}`));
            return;
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            resolve(parsed as T);
            return;
          }
          reject(answerError(parsed, status, method, urlPath));
        });
      },
    );
    req.on('timeout', () => {
      req.destroy(new CausewayError('AGENT_TIMEOUT', `the agent did not answer ${method} ${urlPath} in time; see ${path.join(home, AGENT_LOG)}`, { retryable: true }));
    });
    req.on('error', (err) => {
      const code = errorCode(err);
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        reject(new UserError('AGENT_NOT_RUNNING', `The Causeway agent is not running (no answer on ${socketPath}). Start it with \`causeway agent\`, or run \`causeway connect SERVICE\`, which starts it.`, { cause: err }));
        return;
      }
      if (err instanceof CausewayError) {
        reject(err);
        return;
      }
      reject(new CausewayError('AGENT_UNREACHABLE', `cannot talk to the agent on ${socketPath}: ${code ?? errorMessage(err)}`, { cause: err }));
    });
    req.end(payload);
  });
}

function answerError(parsed: unknown, status: number, method: string, urlPath: string): CausewayError {
  const error = parsed !== null && typeof parsed === 'object' && 'error' in parsed ? parsed.error : undefined;
  const code = error !== null && typeof error === 'object' && 'code' in error && typeof error.code === 'string' ? error.code : `AGENT_HTTP_${status}`;
  const message = error !== null && typeof error === 'object' && 'message' in error && typeof error.message === 'string' ? error.message : `the agent refused ${method} ${urlPath} (status ${status})`;
  return status >= 400 && status < 500 ? new UserError(code, message) : new CausewayError(code, message);
}

/** The agent's status, or null when no agent answers on the socket. */
export async function agentStatus(home: string, options: AgentRequestOptions = {}): Promise<AgentStatus | null> {
  try {
    return await agentRequest<AgentStatus>(home, 'GET', '/v1/status', undefined, { timeoutMs: options.timeoutMs ?? 10_000 });
  } catch (err) {
    if (errorCode(err) === 'AGENT_NOT_RUNNING') return null;
    throw err;
  }
}

export interface EnsureAgentIo {
  home: string;
  /** How to run `causeway agent`: the program and its arguments (the entry point builds it from its own argv). */
  command: { file: string; args: string[] };
  env: NodeJS.ProcessEnv;
  /** Give up waiting for the new agent after this long; default 30 s. */
  timeoutMs?: number;
  /** Poll interval while waiting; default 100 ms. */
  pollMs?: number;
}

/**
 * Returns the running agent's status, starting one first when none answers: `causeway agent`, detached,
 * in its own process group, stdin closed, stdout and stderr appended to `$CAUSEWAY_HOME/agent.log` (0600).
 * When several CLIs race, the agents they start settle it themselves (only one holds agent.pid); each CLI
 * just waits for an answer. An agent that exits before answering is reported with the end of its log.
 */
export async function ensureAgent(io: EnsureAgentIo): Promise<AgentStatus> {
  const running = await agentStatus(io.home);
  if (running !== null) return running;
  mkdirSync(io.home, { recursive: true, mode: 0o700 });
  const logFile = path.join(io.home, AGENT_LOG);
  const fd = openSync(logFile, 'a', 0o600);
  let exited: { code: number | null; signal: string | null } | undefined;
  try {
    const child = spawn(io.command.file, io.command.args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: io.env,
      cwd: io.home,
    });
    child.on('exit', (code, signal) => {
      exited = { code, signal };
    });
    child.on('error', (err) => {
      exited = { code: null, signal: errorMessage(err) };
    });
    child.unref();
  } finally {
    closeSync(fd);
  }
  const deadline = Date.now() + (io.timeoutMs ?? 30_000);
  const pollMs = io.pollMs ?? 100;
  for (;;) {
    const status = await agentStatus(io.home, { timeoutMs: 5_000 }).catch((err: unknown) => {
      if (errorCode(err) === 'AGENT_TIMEOUT') return null;
      throw err;
    });
    if (status !== null) return status;
    // An agent that lost the race to another one exits 0 after seeing it answer; keep waiting for that one.
    if (exited !== undefined && exited.code !== 0) {
      throw new UserError('AGENT_START_FAILED', `The Causeway agent stopped while starting (${exited.code === null ? exited.signal : `exit ${exited.code}`}). The end of ${logFile}:\n${logTail(logFile)}`);
    }
    if (Date.now() > deadline) {
      throw new UserError('AGENT_START_TIMEOUT', `The Causeway agent did not answer on ${agentSocketPath(io.home)} in time. The end of ${logFile}:\n${logTail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

function logTail(file: string): string {
  try {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    return lines.slice(-10).join('\n');
  } catch {
    return '(no log)';
  }
}
