/**
 * The connector tunnels this access tier holds, by connector name. Several connector processes of
 * one name are one connector with failover: a new stream goes to the least busy live tunnel of that
 * name; a tunnel that closes, errors or receives GOAWAY leaves the pool at once, so new streams go
 * elsewhere immediately. A stream that could not even be opened because its tunnel was dying is
 * retried on another tunnel (nothing has reached the backend yet, so the retry is safe).
 *
 * Caps (THREATS CN-05): one service may hold at most `maxStreamsPerService` streams on a tunnel, so a
 * flood through one service leaves room for the others; the peer's own concurrency limit is
 * respected, so nothing queues invisibly inside nghttp2.
 */
import { channel } from 'node:diagnostics_channel';
import { constants as h2 } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { REFUSAL_STATUS, readRefusal, tunnelRequestHeaders } from '../lib/tunnel/protocol.ts';
import type { StreamMeta } from '../lib/tunnel/protocol.ts';

export const tunnelStreamChannel = channel('causeway:tunnel:stream');

export interface ConnectorTunnel {
  readonly id: number;
  /** The connector name from its certificate. */
  readonly connector: string;
  readonly serial: string;
  readonly source: string;
  readonly session: ClientHttp2Session;
  readonly since: number;
  /** Streams in flight (opening or relaying). */
  active: number;
  readonly perService: Map<string, number>;
  /** Left the pool (closed, GOAWAY, cut); never picked again. */
  retired: boolean;
  /** Set when the access tier cut the tunnel itself (revocation, shutdown), for its closing event. */
  closeReason: string | undefined;
}

export type OpenFailure = 'no-connector-tunnel' | 'connector-busy' | 'connector-refused' | 'backend-unreachable' | 'backend-timeout' | 'aborted';

export type OpenResult =
  | { ok: true; stream: ClientHttp2Stream; tunnel: ConnectorTunnel }
  | { ok: false; reason: OpenFailure; status: number; detail: string; tunnel?: ConnectorTunnel };

export interface OpenRequest {
  connector: string;
  service: string;
  /** host:port the connector must dial. */
  authority: string;
  meta: StreamMeta;
  /** How long to wait for the connector's answer (it dials with its own connect timeout). */
  timeoutMs: number;
  /** How long to wait for a tunnel of that connector to appear when none is up. */
  waitForTunnelMs: number;
  signal?: AbortSignal;
}

export interface TunnelPoolOptions {
  maxStreamsPerService: number;
}

/** The session cannot take new streams beyond this id; retire the tunnel before (client ids are odd, < 2^31). */
const STREAM_ID_RETIRE_AT = 2 ** 31 - 2 ** 20;

type Attempt = OpenResult | { ok: false; reason: 'tunnel-failed'; detail: string };

export class TunnelPool {
  readonly #byName = new Map<string, Set<ConnectorTunnel>>();
  readonly #waiters = new Map<string, Set<() => void>>();
  readonly #options: TunnelPoolOptions;
  #nextId = 1;

  constructor(options: TunnelPoolOptions) {
    this.#options = options;
  }

  /** Registers a live tunnel; it leaves the pool by itself when its session closes or is told to go away. */
  add(connector: string, serial: string, source: string, session: ClientHttp2Session, now: number): ConnectorTunnel {
    const tunnel: ConnectorTunnel = { id: this.#nextId++, connector, serial, source, session, since: now, active: 0, perService: new Map(), retired: false, closeReason: undefined };
    let set = this.#byName.get(connector);
    if (set === undefined) this.#byName.set(connector, (set = new Set()));
    set.add(tunnel);
    const leave = (): void => this.retire(tunnel);
    session.once('close', leave);
    session.once('goaway', leave);
    session.once('error', leave);
    const waiters = this.#waiters.get(connector);
    if (waiters !== undefined) {
      this.#waiters.delete(connector);
      for (const wake of waiters) wake();
    }
    return tunnel;
  }

  /** Takes a tunnel out of the pool: no new streams; the ones in flight continue until it closes. */
  retire(tunnel: ConnectorTunnel): void {
    if (tunnel.retired) return;
    tunnel.retired = true;
    const set = this.#byName.get(tunnel.connector);
    set?.delete(tunnel);
    if (set?.size === 0) this.#byName.delete(tunnel.connector);
  }

  tunnels(): ConnectorTunnel[] {
    return [...this.#byName.values()].flatMap((s) => [...s]);
  }

  liveCount(connector: string): number {
    return this.#byName.get(connector)?.size ?? 0;
  }

  /** Opens a stream to `authority` through a live tunnel of the connector, failing over between tunnels. */
  async open(req: OpenRequest): Promise<OpenResult> {
    const tried = new Set<ConnectorTunnel>();
    let waited = false;
    for (;;) {
      if (req.signal?.aborted === true) return { ok: false, reason: 'aborted', status: 499, detail: 'the client went away' };
      const picked = this.#pick(req.connector, req.service, tried);
      if (picked === 'busy') return { ok: false, reason: 'connector-busy', status: 503, detail: `every tunnel of connector ${req.connector} is at its stream limit for this service` };
      if (picked === undefined) {
        if (!waited && req.waitForTunnelMs > 0) {
          waited = true;
          await this.#waitForTunnel(req.connector, req.waitForTunnelMs, req.signal);
          continue;
        }
        return { ok: false, reason: 'no-connector-tunnel', status: 502, detail: `connector ${req.connector} has no live tunnel to this access tier` };
      }
      const attempt = await this.#openOn(picked, req);
      if (attempt.ok || attempt.reason !== 'tunnel-failed') return attempt;
      tried.add(picked);
      this.retire(picked);
    }
  }

  #pick(connector: string, service: string, exclude: ReadonlySet<ConnectorTunnel>): ConnectorTunnel | 'busy' | undefined {
    const set = this.#byName.get(connector);
    if (set === undefined) return undefined;
    let best: ConnectorTunnel | undefined;
    let sawBusy = false;
    for (const tunnel of set) {
      if (exclude.has(tunnel)) continue;
      const session = tunnel.session;
      if (session.closed || session.destroyed) {
        this.retire(tunnel);
        continue;
      }
      if ((session.state.nextStreamID ?? 0) >= STREAM_ID_RETIRE_AT) {
        // Out of stream ids soon: let the connector dial a fresh tunnel; this one drains.
        this.retire(tunnel);
        session.close();
        continue;
      }
      const peerMax = session.remoteSettings.maxConcurrentStreams ?? Number.MAX_SAFE_INTEGER;
      if (tunnel.active >= peerMax || (tunnel.perService.get(service) ?? 0) >= this.#options.maxStreamsPerService) {
        sawBusy = true;
        continue;
      }
      if (best === undefined || tunnel.active < best.active) best = tunnel;
    }
    return best ?? (sawBusy ? 'busy' : undefined);
  }

  #waitForTunnel(connector: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      let set = this.#waiters.get(connector);
      if (set === undefined) this.#waiters.set(connector, (set = new Set()));
      const waiters = set;
      const done = (): void => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0 && this.#waiters.get(connector) === waiters) this.#waiters.delete(connector);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  #openOn(tunnel: ConnectorTunnel, req: OpenRequest): Promise<Attempt> {
    let stream: ClientHttp2Stream;
    try {
      stream = tunnel.session.request(tunnelRequestHeaders(req.authority, req.meta), { endStream: false });
    } catch (err) {
      return Promise.resolve({ ok: false, reason: 'tunnel-failed', detail: err instanceof Error ? err.message : String(err) });
    }
    tunnel.active++;
    tunnel.perService.set(req.service, (tunnel.perService.get(req.service) ?? 0) + 1);
    stream.once('close', () => {
      tunnel.active--;
      const n = (tunnel.perService.get(req.service) ?? 1) - 1;
      if (n === 0) tunnel.perService.delete(req.service);
      else tunnel.perService.set(req.service, n);
      if (tunnelStreamChannel.hasSubscribers) tunnelStreamChannel.publish({ side: 'access-tier', event: 'close', connector: tunnel.connector, tunnel: tunnel.id, session: req.meta.session, rstCode: stream.rstCode });
    });
    if (tunnelStreamChannel.hasSubscribers) tunnelStreamChannel.publish({ side: 'access-tier', event: 'open', connector: tunnel.connector, tunnel: tunnel.id, session: req.meta.session, service: req.service, target: req.authority });

    return new Promise<Attempt>((resolve) => {
      let settled = false;
      const settle = (result: Attempt): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream.off('response', onResponse);
        stream.off('close', onClose);
        req.signal?.removeEventListener('abort', onAbort);
        resolve(result);
      };
      const cancel = (): void => {
        if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
      };
      const onResponse = (headers: IncomingHttpHeaders): void => {
        const status = Number(headers[':status']);
        if (status === 200) {
          settle({ ok: true, stream, tunnel });
          return;
        }
        // A refusal ends the connector's side; end ours so the stream closes cleanly (no RST).
        stream.end();
        stream.resume();
        const refusal = readRefusal(headers);
        if (refusal === 'draining') settle({ ok: false, reason: 'tunnel-failed', detail: 'the connector is draining' });
        else if (refusal === 'backend-unreachable' || refusal === 'backend-timeout') settle({ ok: false, reason: refusal, status: REFUSAL_STATUS[refusal], detail: `connector ${tunnel.connector}: ${refusal}`, tunnel });
        else settle({ ok: false, reason: 'connector-refused', status: 502, detail: `connector ${tunnel.connector} answered ${status} ${refusal ?? ''}`.trim(), tunnel });
      };
      const onClose = (): void => {
        const session = tunnel.session;
        const tunnelDying = session.closed || session.destroyed || stream.rstCode === h2.NGHTTP2_REFUSED_STREAM;
        if (tunnelDying) settle({ ok: false, reason: 'tunnel-failed', detail: `tunnel ${tunnel.id} closed (rst ${String(stream.rstCode)})` });
        else settle({ ok: false, reason: 'connector-refused', status: 502, detail: `connector ${tunnel.connector} reset the stream (code ${String(stream.rstCode)})`, tunnel });
      };
      const onAbort = (): void => {
        cancel();
        settle({ ok: false, reason: 'aborted', status: 499, detail: 'the client went away' });
      };
      const timer = setTimeout(() => {
        cancel();
        settle({ ok: false, reason: 'backend-timeout', status: 502, detail: `connector ${tunnel.connector} did not answer within ${req.timeoutMs} ms`, tunnel });
      }, req.timeoutMs);
      stream.on('error', () => undefined); // the outcome is read from 'close' and rstCode
      stream.once('response', onResponse);
      stream.once('close', onClose);
      if (req.signal?.aborted === true) onAbort();
      else req.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
