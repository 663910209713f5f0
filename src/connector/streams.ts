/**
 * One tunnel stream on the connector: read the CONNECT, check the target against this connector's
 * own allow-list (defence in depth: a compromised access tier cannot make us dial anything else),
 * dial with a timeout, answer 200 only once the backend connection is up, then relay with half-close
 * both ways (END_STREAM ↔ socket.end()).
 */
import { channel } from 'node:diagnostics_channel';
import { constants as h2 } from 'node:http2';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Logger } from '../lib/log.ts';
import { allowListPermits, formatAuthority } from '../lib/net/target.ts';
import type { CompiledAllowList } from '../lib/net/target.ts';
import { dialBackend } from '../lib/tunnel/dial.ts';
import type { BackendDialer } from '../lib/tunnel/dial.ts';
import { REFUSAL_STATUS, TUNNEL_HEADER, readTunnelRequest } from '../lib/tunnel/protocol.ts';
import type { ConnectorRefusal, StreamMeta } from '../lib/tunnel/protocol.ts';
import { relay } from '../lib/tunnel/relay.ts';
import type { Relay } from '../lib/tunnel/relay.ts';

/** Published on stream open, refusal and close; never per byte. */
export const streamChannel = channel('causeway:tunnel:stream');

export interface StreamContext {
  accessTier: string;
  /** The connector's current allow-list; undefined (no Connector spec for us) refuses everything. */
  allowList: () => CompiledAllowList | undefined;
  dialer: BackendDialer | undefined;
  connectTimeoutMs: number;
  logger: Logger;
  draining: () => boolean;
  /** Live relays, so close() can drain and destroy() can cut them. */
  relays: Set<Relay>;
}

export function serveStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ctx: StreamContext): void {
  stream.on('error', (err) => ctx.logger.debug({ err, accessTier: ctx.accessTier }, 'tunnel stream error'));
  const request = readTunnelRequest(headers);
  if (!request.ok) {
    refuse(stream, 'bad-request', request.message, ctx);
    return;
  }
  const { target, meta } = request;
  const authority = formatAuthority(target);
  if (ctx.draining()) {
    refuse(stream, 'draining', 'the connector is shutting down', ctx, meta, authority);
    return;
  }
  const allowList = ctx.allowList();
  if (allowList === undefined || !allowListPermits(allowList, target)) {
    refuse(stream, 'target-not-allowed', allowList === undefined ? 'this connector has no Connector spec in its config' : 'the target is outside this connector\'s allowedCidrs and allowedDomains', ctx, meta, authority);
    return;
  }

  const abort = new AbortController();
  const onEarlyClose = (): void => abort.abort();
  stream.once('close', onEarlyClose);
  const opts: Parameters<typeof dialBackend>[1] = { timeoutMs: ctx.connectTimeoutMs, signal: abort.signal };
  if (ctx.dialer !== undefined) opts.dialer = ctx.dialer;
  void dialBackend(target, opts).then((dialled) => {
    stream.off('close', onEarlyClose);
    if (!dialled.ok) {
      if (dialled.detail !== 'aborted') refuse(stream, dialled.reason, dialled.detail, ctx, meta, authority);
      return;
    }
    const socket = dialled.socket;
    if (stream.destroyed || stream.closed) {
      socket.destroy();
      return;
    }
    stream.respond({ ':status': 200 });
    const r = relay(stream, socket, {
      // A backend that reset or failed: RST the stream with CONNECT_ERROR (RFC 9113 §8.5).
      abortClient: () => {
        if (!stream.closed) stream.close(h2.NGHTTP2_CONNECT_ERROR);
      },
    });
    ctx.relays.add(r);
    if (streamChannel.hasSubscribers) streamChannel.publish({ side: 'connector', event: 'open', accessTier: ctx.accessTier, session: meta.session, service: meta.service, target: authority });
    void r.done.then((result) => {
      ctx.relays.delete(r);
      if (streamChannel.hasSubscribers) streamChannel.publish({ side: 'connector', event: 'close', accessTier: ctx.accessTier, session: meta.session, outcome: result.outcome, detail: result.detail });
      ctx.logger.debug({ session: meta.session, service: meta.service, target: authority, outcome: result.outcome, detail: result.detail, bytesToBackend: socket.bytesWritten, bytesFromBackend: socket.bytesRead }, 'backend connection closed');
    });
  });
}

function refuse(stream: ServerHttp2Stream, refusal: ConnectorRefusal, detail: string, ctx: StreamContext, meta?: StreamMeta, target?: string): void {
  ctx.logger.info({ refusal, detail, accessTier: ctx.accessTier, session: meta?.session, service: meta?.service, user: meta?.user, device: meta?.device, target }, 'tunnel stream refused');
  if (streamChannel.hasSubscribers) streamChannel.publish({ side: 'connector', event: 'refused', accessTier: ctx.accessTier, session: meta?.session, refusal, target });
  if (stream.destroyed || stream.closed) return;
  stream.respond({ ':status': REFUSAL_STATUS[refusal], [TUNNEL_HEADER.reason]: refusal }, { endStream: true });
  // The answer is complete: RST_STREAM(NO_ERROR) once it is flushed tells the access tier to send
  // nothing more and frees the stream now (RFC 9113 §8.1). A server's resets cost the client nothing.
  stream.close(h2.NGHTTP2_NO_ERROR);
}
