/**
 * A connector registering a tunnel: it offered ALPN causeway-tunnel/1, so it must hold a connector
 * certificate (CN-01: a trust or access-tier certificate offering the tunnel protocol is refused) of
 * a connector this tier's configuration knows, in this tier's cluster, not revoked. The tunnel's
 * identity is the name in its certificate, never anything it says later. Accepted tunnels join the
 * pool; a refusal is an access event at once, an accepted tunnel's event is written when it ends.
 */
import type { TLSSocket } from 'node:tls';
import { newEventId } from '../lib/audit/index.ts';
import { errorCode } from '../lib/errors.ts';
import { openTunnelClient } from '../lib/tunnel/session.ts';
import { sourceOf } from './context.ts';
import type { AccessEventFields, AccessTierContext } from './context.ts';
import { checkPeer } from './peer.ts';
import type { AccessTierState } from './state.ts';
import type { ConnectorTunnel } from './tunnel-pool.ts';

export function acceptTunnel(socket: TLSSocket, ctx: AccessTierContext): void {
  const started = performance.now();
  const state = ctx.state();
  const ev: AccessEventFields = { id: newEventId(ctx.clock.now()), time: new Date(ctx.clock.now()).toISOString(), decision: 'deny', reasons: [], source: sourceOf(socket) };
  const elapsed = (): number => Math.round((performance.now() - started) * 1000) / 1000;
  socket.on('error', (err) => ctx.logger.debug({ err, source: ev.source }, 'tunnel socket error'));

  const peer = checkPeer(socket, 'connector', state, ctx.clock.now());
  if (!peer.ok) {
    if (peer.identity !== undefined) {
      ev.certSerial = peer.identity.serial;
      if (peer.identity.name !== undefined) ev.connector = peer.identity.name;
    }
    ctx.logger.warn({ source: ev.source, connector: ev.connector, reason: peer.code, detail: peer.message }, 'connector tunnel refused');
    ctx.record({ ...ev, reasons: ['tunnel-refused', peer.code], durationMs: elapsed(), closeReason: peer.message });
    socket.destroy();
    return;
  }
  const identity = peer.identity;
  const name = identity.name ?? '';
  ev.connector = name;
  ev.certSerial = identity.serial;
  const problem = tunnelProblem(name, identity.serial, state);
  if (problem !== undefined) {
    ctx.logger.warn({ source: ev.source, connector: name, reason: problem }, 'connector tunnel refused');
    ctx.record({ ...ev, reasons: ['tunnel-refused', problem], durationMs: elapsed() });
    socket.destroy();
    return;
  }

  let deadDetail: string | undefined;
  const { session } = openTunnelClient(socket, {
    limits: ctx.limits.tunnel,
    keepaliveIntervalMs: ctx.limits.keepaliveIntervalMs,
    keepaliveTimeoutMs: ctx.limits.keepaliveTimeoutMs,
    onDead: (detail) => {
      deadDetail = detail;
      ctx.logger.warn({ connector: name, source: ev.source, detail }, 'connector tunnel is dead (keepalive)');
    },
  });
  let lastError: string | undefined;
  session.on('error', (err: Error) => {
    lastError = errorCode(err) ?? err.message;
  });
  const tunnel: ConnectorTunnel = ctx.pool.add(name, identity.serial, ev.source, session, ctx.clock.now());
  ctx.logger.info({ connector: name, source: ev.source, tunnel: tunnel.id }, 'connector tunnel up');
  session.once('close', () => {
    const why = tunnel?.closeReason ?? (deadDetail !== undefined ? 'keepalive-timeout' : lastError !== undefined ? `error: ${lastError}` : 'closed');
    ctx.logger.info({ connector: name, source: ev.source, tunnel: tunnel.id, reason: why }, 'connector tunnel down');
    ctx.record({ ...ev, decision: 'allow', reasons: ['connector-tunnel'], via: 'connector', durationMs: elapsed(), closeReason: why });
  });
}

/** Why a tunnel from this connector may not be (or stay) registered, or undefined. */
export function tunnelProblem(name: string, serial: string, state: AccessTierState): string | undefined {
  if (state.revoked.has(serial.toLowerCase())) return 'cert-revoked';
  if (state.cluster === undefined) return 'access-tier-unconfigured';
  if (!state.connectors.has(name)) return 'unknown-connector';
  return undefined;
}
