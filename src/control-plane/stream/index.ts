/**
 * `GET /api/v1/config/stream?since=N`: the live config stream to access tiers, connectors and kube
 * proxies (the wire format is documented in src/lib/config/wire.ts). Register it on the control
 * plane's HTTPS Fastify app:
 *
 *     await app.register(configStreamPlugin, { store, ca, logger, clock });
 *
 * Each stream is checked once, at its start (client certificate of a peer type, from our CA, valid,
 * not revoked), then held open: the first record brings the peer up to date (a snapshot, the deltas
 * it missed, or a heartbeat when it has everything), later records follow the change feed as it
 * commits. The server ends a stream by itself when the peer's certificate is revoked or expires
 * (the peer reconnects with its renewed certificate, or cannot), when the peer reads too slowly,
 * and when the control plane closes.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import { CONFIG_STREAM_CONTENT_TYPE, CONFIG_STREAM_PATH, encodeRecord, HEARTBEAT_INTERVAL_MS, STREAM_AUDIENCES } from '../../lib/config/wire.ts';
import type { StreamAudience } from '../../lib/config/wire.ts';
import type { Logger } from '../../lib/log.ts';
import type { PeerIdentity } from '../../lib/pki/index.ts';
import { sendError } from '../api/errors.ts';
import { ConfigHub } from './hub.ts';
import type { HubSubscriber } from './hub.ts';
import { authenticatePeer, pluginDeps, refusePeer } from './peer.ts';
import type { PeerPluginOptions } from './peer.ts';

export { authenticatePeer, pluginDeps, refusePeer } from './peer.ts';
export type { PeerAuth, PeerPluginDeps, PeerPluginOptions } from './peer.ts';
export { ConfigHub } from './hub.ts';

export type ConfigStreamPluginOptions = PeerPluginOptions & {
  /** Default 10 s (wire.ts HEARTBEAT_INTERVAL_MS). */
  heartbeatIntervalMs?: number;
  /** A peer that lets this much pile up unread is cut (it resumes when it comes back). Default 64 MiB. */
  maxBufferedBytes?: number;
  /** Recent changes kept for resuming peers (default 2000); older `since` values get a snapshot. */
  retainChanges?: number;
  /** Called with the hub once it is running (metrics, tests). */
  onHub?: (hub: ConfigHub) => void;
};

const SINCE_RE = /^(0|[1-9][0-9]{0,14})$/;

export async function configStreamPlugin(app: FastifyInstance, options: ConfigStreamPluginOptions): Promise<void> {
  const deps = pluginDeps(options);
  const { clock } = deps;
  const logger = deps.logger.child({ component: 'config-stream' });
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS;
  const maxBufferedBytes = options.maxBufferedBytes ?? 64 * 1024 * 1024;
  const hub = new ConfigHub({ store: deps.store, logger, clock, ...(options.retainChanges === undefined ? {} : { retainChanges: options.retainChanges }) });
  await hub.start();
  options.onHub?.(hub);
  const streams = new Set<PeerStream>();
  let closing = false;

  const heartbeat = setInterval(() => {
    const due = clock.now() - heartbeatIntervalMs + Math.min(250, heartbeatIntervalMs / 4);
    for (const s of streams) if (s.lastWrite <= due) s.write(encodeRecord({ type: 'heartbeat', revision: s.revision, at: new Date(clock.now()).toISOString() }));
  }, heartbeatIntervalMs);
  heartbeat.unref();

  // Before the server waits for open requests to finish: ours never would.
  app.addHook('preClose', async () => {
    closing = true;
    for (const s of [...streams]) s.end('shutting-down', 'the control plane is shutting down; reconnect to another replica or retry');
    await Promise.resolve();
  });
  app.addHook('onClose', async () => {
    closing = true;
    clearInterval(heartbeat);
    for (const s of [...streams]) s.destroy();
    hub.close();
    await Promise.resolve();
  });

  app.get(CONFIG_STREAM_PATH, async (request, reply) => {
    const auth = await authenticatePeer(request, STREAM_AUDIENCES, deps);
    if (!auth.ok) {
      logger.warn({ source: request.ip, reason: auth.reason, detail: auth.message }, 'config stream refused');
      return refusePeer(reply, auth, STREAM_AUDIENCES);
    }
    const rawSince = (request.query as Record<string, unknown> | undefined)?.since;
    let since: number | undefined;
    if (rawSince !== undefined) {
      if (typeof rawSince !== 'string' || !SINCE_RE.test(rawSince)) return sendError(reply, 400, 'BAD_SINCE', 'since must be a revision number (a whole number, 0 or more)');
      since = Number(rawSince);
    }
    if (closing) return sendError(reply, 503, 'SHUTTING_DOWN', 'the control plane is shutting down; retry');
    // A replica that has not heard of the peer's revision yet catches up first, so it does not take
    // a newer peer for one ahead of the database.
    if (since !== undefined && since > hub.revision) await hub.pull();

    const identity = auth.identity;
    const audience = identity.type as StreamAudience;
    reply.hijack();
    const res = reply.raw;
    const socket = res.socket;
    socket?.setNoDelay(true);
    socket?.setKeepAlive(true, 30_000);
    res.writeHead(200, { 'content-type': CONFIG_STREAM_CONTENT_TYPE, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    const stream = new PeerStream({ res, socket, identity, audience, clock, maxBufferedBytes, logger, hub, onEnd: () => streams.delete(stream) });
    streams.add(stream);
    const catchup = hub.attach(stream, since);
    stream.revision = hub.revision;
    if (catchup.kind === 'current') stream.write(encodeRecord({ type: 'heartbeat', revision: catchup.revision, at: new Date(clock.now()).toISOString() }));
    else stream.write(catchup.line);
    logger.info({ peer: `${identity.type}/${identity.name ?? ''}`, serial: identity.serial, source: request.ip, since, sent: catchup.kind, revision: hub.revision }, 'config stream opened');
  });
}

interface PeerStreamOptions {
  res: ServerResponse;
  socket: Socket | null;
  identity: PeerIdentity;
  audience: StreamAudience;
  clock: Clock;
  maxBufferedBytes: number;
  logger: Logger;
  hub: ConfigHub;
  onEnd: () => void;
}

class PeerStream implements HubSubscriber {
  readonly audience: StreamAudience;
  revision = 0;
  lastWrite = 0;
  readonly #o: PeerStreamOptions;
  readonly #expiry: NodeJS.Timeout;
  #ended = false;

  constructor(o: PeerStreamOptions) {
    this.#o = o;
    this.audience = o.audience;
    this.lastWrite = o.clock.now();
    // A certificate that expires ends its stream; the peer comes back with its renewed one.
    const left = o.identity.notAfter.getTime() - o.clock.now();
    this.#expiry = setTimeout(() => this.end('cert-expired', 'your certificate expired; reconnect with the renewed one'), Math.max(0, Math.min(left, 2 ** 31 - 1)));
    this.#expiry.unref();
    o.res.on('close', () => this.#finish('closed'));
    o.res.on('error', () => this.#finish('error'));
  }

  write(line: string): void {
    if (this.#ended || this.#o.res.destroyed) return;
    this.#o.res.write(line);
    this.lastWrite = this.#o.clock.now();
    if (this.#o.res.writableLength > this.#o.maxBufferedBytes) {
      this.#o.logger.warn({ peer: this.#peer(), buffered: this.#o.res.writableLength }, 'config stream peer reads too slowly; cutting it (it will resume)');
      this.destroy();
    }
  }

  delta(revision: number, line: string): void {
    this.revision = revision;
    this.write(line);
  }

  revoked(serial: string): void {
    if (serial.toLowerCase() === this.#o.identity.serial.toLowerCase()) this.end('cert-revoked', 'your certificate was revoked');
  }

  /** Says why in an error record, then ends the response. */
  end(code: string, message: string): void {
    if (this.#ended) return;
    this.write(encodeRecord({ type: 'error', code, message }));
    this.#finish(code);
    this.#o.res.end();
  }

  destroy(): void {
    this.#finish('destroyed');
    this.#o.res.destroy();
  }

  #finish(why: string): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#expiry);
    this.#o.hub.detach(this);
    this.#o.onEnd();
    this.#o.logger.info({ peer: this.#peer(), why }, 'config stream closed');
  }

  #peer(): string {
    return `${this.#o.identity.type}/${this.#o.identity.name ?? ''}`;
  }
}
