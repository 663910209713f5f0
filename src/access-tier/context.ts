/**
 * What the access tier's connection handlers share: the current state, the decider, the event sink,
 * the live-connection registry, the tunnel pool, limits and seams. One object per access tier.
 */
import { channel } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import type { AccessEvent, AccessEventSink } from '../lib/audit/index.ts';
import { newEventId } from '../lib/audit/index.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import type { Decider } from '../lib/policy/decider.ts';
import type { BackendDialer } from '../lib/tunnel/dial.ts';
import type { TunnelLimits } from '../lib/tunnel/settings.ts';
import type { ConnectionRegistry } from './registry.ts';
import type { AccessTierState } from './state.ts';
import type { TunnelPool } from './tunnel-pool.ts';

/** Published once per decision (allow, deny, would-deny), with the access event fields known then. */
export const decisionChannel = channel('causeway:access-tier:decision');

export interface AccessTierLimits {
  /** TLS handshake, including a client that withholds its certificate (AT-11). */
  handshakeTimeoutMs: number;
  /** Time to send the whole CONNECT head (slowloris, AT-11). */
  headerTimeoutMs: number;
  /** Largest CONNECT head (AT-10). */
  maxHeadBytes: number;
  /** Backend TCP connect timeout for directly dialled services. */
  connectTimeoutMs: number;
  /** How long to wait for a connector's answer to a stream (it dials with its own connect timeout). */
  streamOpenTimeoutMs: number;
  /** How long a new connection waits for a tunnel when its connector has none up (a reconnect in progress). */
  waitForTunnelMs: number;
  /** Concurrent TCP connections per source address, clients and connectors alike (AT-11). */
  maxConnectionsPerSource: number;
  /** Streams one service may hold on one tunnel (CN-05). */
  maxStreamsPerServicePerTunnel: number;
  /** close(): how long live connections may take to finish before they are cut. */
  drainTimeoutMs: number;
  /** A refused client's socket is destroyed after this long if it does not close itself. */
  lingerMs: number;
  /** Cut a live connection when its certificate expires. */
  cutOnCertExpiry: boolean;
  tunnel: TunnelLimits;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
}

export interface AccessTierContext {
  readonly name: string;
  state(): AccessTierState;
  readonly decider: Decider;
  readonly registry: ConnectionRegistry;
  readonly pool: TunnelPool;
  readonly limits: AccessTierLimits;
  readonly dialer: BackendDialer | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Writes an access event; never throws (a failing sink is logged). */
  record(event: AccessEventFields): AccessEvent;
  closing(): boolean;
}

export type AccessEventFields = Omit<AccessEvent, 'id' | 'time' | 'type' | 'accessTier'> & { id?: string; time?: string };

export function makeRecorder(name: string, events: AccessEventSink, clock: Clock, logger: Logger): (fields: AccessEventFields) => AccessEvent {
  return (fields) => {
    const event: AccessEvent = {
      id: fields.id ?? newEventId(clock.now()),
      time: fields.time ?? new Date(clock.now()).toISOString(),
      type: 'access',
      ...withoutUndefined(fields),
      accessTier: name,
    };
    try {
      events.write(event);
    } catch (err) {
      logger.error({ err, event }, 'could not record an access event');
    }
    return event;
  };
}

function withoutUndefined<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}

export function sourceOf(socket: Socket): string {
  const address = socket.remoteAddress ?? 'unknown';
  return address.includes(':') ? `[${address}]:${String(socket.remotePort)}` : `${address}:${String(socket.remotePort)}`;
}
