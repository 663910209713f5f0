/**
 * One client connection, top to bottom: who (certificate), which service (SNI), what (the CONNECT
 * target, CHAIN mode only), may they (the decider), then open the backend (directly or through a
 * connector tunnel), answer 200 only once it is up, and relay until either side ends. Every outcome
 * is one access event: a denial at once, an allowed connection when it ends, with bytes and duration.
 * The user gets a terse status and reason code; the detail goes to the event and the log.
 */
import { constants as h2 } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { newEventId } from '../lib/audit/index.ts';
import { formatConnectResponse } from '../lib/net/connect-request.ts';
import { canonicalHostname, formatAuthority } from '../lib/net/target.ts';
import type { Target } from '../lib/net/target.ts';
import type { PeerIdentity } from '../lib/pki/index.ts';
import { eventDecision } from '../lib/policy/decider.ts';
import type { Decision } from '../lib/policy/decider.ts';
import { dialBackend } from '../lib/tunnel/dial.ts';
import { relay } from '../lib/tunnel/relay.ts';
import type { RelayResult } from '../lib/tunnel/relay.ts';
import { readConnectHead } from './connect-head.ts';
import type { HeadRead } from './connect-head.ts';
import { decisionChannel, sourceOf } from './context.ts';
import type { AccessEventFields, AccessTierContext } from './context.ts';
import { checkPeer } from './peer.ts';
import type { LiveConnection } from './registry.ts';
import { checkTarget } from './state.ts';
import type { AccessTierState, ServiceEntry } from './state.ts';

const ESTABLISHED_LENGTH = formatConnectResponse(200).length;

interface Refusal {
  status: number;
  reason: string;
  message: string;
  detail?: string;
  /** What the user can act on, shown after the reason (see formatConnectResponse). */
  hints?: string[];
}

/** Entry point: never throws and never rejects; a bug costs this connection only (AT-07). */
export function handleClient(socket: TLSSocket, ctx: AccessTierContext): void {
  socket.on('error', (err) => ctx.logger.debug({ err, source: sourceOf(socket) }, 'client socket error'));
  serveClient(socket, ctx).catch((err: unknown) => {
    ctx.logger.error({ err, source: sourceOf(socket) }, 'client connection failed unexpectedly; closed it');
    socket.destroy();
  });
}

async function serveClient(socket: TLSSocket, ctx: AccessTierContext): Promise<void> {
  const started = performance.now();
  const id = newEventId(ctx.clock.now());
  const time = new Date(ctx.clock.now()).toISOString();
  const source = sourceOf(socket);
  const state = ctx.state();
  const rawSni: unknown = socket.servername;
  const sni = typeof rawSni === 'string' ? canonicalHostname(rawSni) : undefined;
  const ev: AccessEventFields = { id, time, decision: 'deny', reasons: [], source };
  if (sni !== undefined) ev.sni = sni;
  else if (typeof rawSni === 'string') ev.sni = printable(rawSni);
  const elapsed = (): number => Math.round((performance.now() - started) * 1000) / 1000;

  // 1. Who. An unauthenticated peer hears nothing, not even which services exist (AT-01).
  const peer = checkPeer(socket, 'trust', state, ctx.clock.now());
  if (!peer.ok && (peer.code === 'cert-missing' || peer.code === 'cert-expired' || peer.code === 'cert-not-yet-valid' || peer.code === 'cert-unknown-ca')) {
    ctx.record({ ...ev, reasons: [peer.code], durationMs: elapsed(), closeReason: peer.message });
    publishDecision(ev, 'deny', [peer.code]);
    socket.destroy();
    return;
  }
  const who = peer.identity;
  if (who !== undefined) {
    ev.user = who.user;
    ev.device = who.device;
    ev.certSerial = who.serial;
  }

  // 2. Which service. Checked after the certificate, so a wrong certificate learns nothing about services.
  const entry = sni === undefined ? undefined : state.bySni.get(sni);
  if (entry !== undefined) ev.service = entry.name;
  let refusal: Refusal | undefined;
  if (!peer.ok) refusal = { status: 403, reason: peer.code, message: 'your certificate is not accepted here', detail: peer.message };
  else if (sni === undefined) refusal = { status: 403, reason: 'bad-sni', message: 'the TLS server name (SNI) must be the service domain', detail: typeof rawSni === 'string' ? 'not a valid DNS name' : 'no SNI sent' };
  else if (entry === undefined) refusal = { status: 403, reason: 'unknown-service', message: 'no service is published at this name on this access tier' };
  else if (entry.problem !== undefined) refusal = { status: 502, reason: 'service-misconfigured', message: 'this service is misconfigured; tell its administrator', detail: entry.problem };

  // 3. What. TCP mode has a fixed backend; CHAIN mode reads one CONNECT.
  // A refused certificate takes the CHAIN path whatever the SNI (AT-01): closing at once for a TCP
  // service and answering 403 for anything else told a holder of any certificate of our CA (a device
  // certificate, a revoked trust certificate) which names are TCP services.
  if (entry?.mode === 'tcp' && peer.ok) {
    if (refusal !== undefined || !peer.ok) {
      const reason = refusal?.reason ?? 'denied';
      ctx.record({ ...ev, reasons: [reason], durationMs: elapsed(), ...(refusal?.detail !== undefined ? { closeReason: refusal.detail } : {}) });
      publishDecision(ev, 'deny', [reason]);
      socket.destroy();
      return;
    }
    const target = entry.fixedTarget as Target;
    ev.target = formatAuthority(target);
    await proceed(socket, ctx, { state, entry, identity: peer.identity, target, dial: entry.dialOverride ?? target, head: undefined, ev, started });
    return;
  }

  const head = await readConnectHead(socket, { timeoutMs: ctx.limits.headerTimeoutMs, limits: { maxHeadBytes: ctx.limits.maxHeadBytes } });
  if (head.kind === 'request') ev.target = formatAuthority(head.target);
  if (refusal === undefined) refusal = headRefusal(head);
  if (refusal !== undefined || head.kind !== 'request' || entry === undefined || !peer.ok) {
    const reason = refusal?.reason ?? 'denied';
    ctx.record({ ...ev, reasons: [reason], durationMs: elapsed(), ...(refusal?.detail !== undefined ? { closeReason: refusal.detail } : {}) });
    publishDecision(ev, 'deny', [reason]);
    if (head.kind === 'closed' || refusal === undefined) socket.destroy();
    else refuse(socket, refusal, ctx.limits.lingerMs);
    return;
  }
  const checked = checkTarget(entry, head.target);
  if (!checked.ok) {
    ctx.record({ ...ev, reasons: [checked.reason], durationMs: elapsed(), closeReason: checked.message });
    publishDecision(ev, 'deny', [checked.reason]);
    refuse(socket, { status: 421, reason: checked.reason, message: 'the CONNECT target does not belong to this service' }, ctx.limits.lingerMs);
    return;
  }
  await proceed(socket, ctx, { state, entry, identity: peer.identity, target: head.target, dial: checked.dial, head, ev, started });
}

function headRefusal(head: HeadRead): Refusal | undefined {
  switch (head.kind) {
    case 'request':
      return undefined;
    case 'bad-request':
      return { status: head.status, reason: head.code, message: head.message };
    case 'timeout':
      return { status: 408, reason: 'header-timeout', message: 'the CONNECT request did not arrive in time' };
    case 'closed':
      return { status: 400, reason: 'no-request', message: 'the connection ended before a CONNECT request' };
  }
}

interface Admitted {
  state: AccessTierState;
  entry: ServiceEntry;
  identity: PeerIdentity;
  target: Target;
  dial: Target;
  head: Extract<HeadRead, { kind: 'request' }> | undefined;
  ev: AccessEventFields;
  started: number;
}

/** Decides, opens the backend, answers and relays. */
async function proceed(socket: TLSSocket, ctx: AccessTierContext, a: Admitted): Promise<void> {
  const { entry, identity, ev, head } = a;
  const chain = head !== undefined;
  const elapsed = (): number => Math.round((performance.now() - a.started) * 1000) / 1000;
  const deny = (reasons: string[], refusal: Refusal | undefined, detail?: string): void => {
    ctx.record({ ...ev, decision: 'deny', reasons, durationMs: elapsed(), ...(detail !== undefined ? { closeReason: detail } : {}) });
    publishDecision(ev, 'deny', reasons);
    if (chain && refusal !== undefined) refuse(socket, refusal, ctx.limits.lingerMs);
    else socket.destroy();
  };

  let decision: Decision;
  try {
    decision = ctx.decider.decide({ service: entry.spec, identity, target: a.target, snapshot: a.state.snapshot });
  } catch (err) {
    // A decider that throws denies this connection and closes it; the process goes on (AT-07).
    ctx.logger.error({ err, service: entry.name }, 'the decider threw; connection denied');
    deny(['decision-failed'], undefined, 'the policy decision failed');
    return;
  }
  if (!decision.allow) {
    // deny() records and publishes the denial: one decision, one message on the channel.
    const reason = decision.reasons[0] ?? 'policy-denied';
    // The user sees which level is needed, which they have and the failing trust factors: what they can fix.
    const hints = decision.reasons.slice(1).filter((r) => /^(needs|has|trust):/.test(r));
    deny(decision.reasons.length > 0 ? decision.reasons : ['policy-denied'], { status: 403, reason, message: 'access denied by policy', hints });
    return;
  }
  const verdict = eventDecision(decision);
  publishDecision(ev, verdict, decision.reasons);

  // 4. Open the backend. The dialled address comes from configuration or is the checked target.
  const dialled = formatAuthority(a.dial);
  const allowed: AccessEventFields = { ...ev, decision: verdict, reasons: decision.reasons, dialled, via: entry.connector === undefined ? 'direct' : 'connector' };
  if (entry.connector !== undefined) allowed.connector = entry.connector;
  const gone = new AbortController();
  const onGone = (): void => gone.abort();
  socket.once('close', onGone);
  let upstream: Duplex;
  let abortUpstream: ((reason: string) => void) | undefined;
  let tunnelLost: () => boolean = () => false;
  if (entry.connector !== undefined) {
    const opened = await ctx.pool.open({
      connector: entry.connector,
      service: entry.name,
      authority: dialled,
      meta: { session: ev.id ?? '', service: entry.name, ...(identity.user !== undefined ? { user: identity.user } : {}), ...(identity.device !== undefined ? { device: identity.device } : {}) },
      timeoutMs: ctx.limits.streamOpenTimeoutMs,
      waitForTunnelMs: ctx.limits.waitForTunnelMs,
      signal: gone.signal,
    });
    socket.off('close', onGone);
    if (!opened.ok) {
      backendFailed(opened.reason, opened.status, opened.detail);
      return;
    }
    const stream = opened.stream;
    upstream = stream;
    abortUpstream = () => {
      if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
    };
    const session = opened.tunnel.session;
    tunnelLost = () => session.destroyed || session.closed;
  } else {
    const opened = await dialBackend(a.dial, { timeoutMs: ctx.limits.connectTimeoutMs, signal: gone.signal, ...(ctx.dialer !== undefined ? { dialer: ctx.dialer } : {}) });
    socket.off('close', onGone);
    if (!opened.ok) {
      backendFailed(opened.detail === 'aborted' ? 'aborted' : opened.reason, 502, opened.detail);
      return;
    }
    upstream = opened.socket;
  }

  function backendFailed(reason: string, status: number, detail: string): void {
    ctx.logger.info({ service: entry.name, target: ev.target, dialled, reason, detail }, 'backend connection failed');
    ctx.record({ ...allowed, durationMs: elapsed(), closeReason: reason === 'aborted' ? 'client-gone' : `${reason}: ${detail}` });
    if (reason === 'aborted' || socket.destroyed) {
      socket.destroy();
      return;
    }
    if (chain) refuse(socket, { status, reason, message: backendMessage(reason) }, ctx.limits.lingerMs);
    else socket.destroy();
  }

  const abortBoth = (reason: string): void => {
    if (abortUpstream !== undefined) abortUpstream(reason);
    else upstream.destroy();
  };
  if (socket.destroyed || socket.closed) {
    abortBoth('client-gone');
    ctx.record({ ...allowed, durationMs: elapsed(), closeReason: 'client-gone' });
    return;
  }
  // The configuration may have changed while we dialled: the decision must still hold.
  const now = ctx.state();
  if (now !== a.state) {
    const why = stillAllowed({ sni: entry.domain, service: entry.name, identity, target: a.target }, now, ctx);
    if (why !== undefined) {
      abortBoth(why);
      deny([why], { status: 403, reason: why, message: 'access was revoked' }, 'revoked while the backend connection was opening');
      return;
    }
  }

  // 5. Answer and relay.
  if (chain) {
    socket.write(formatConnectResponse(200));
    if (head.rest.length > 0) socket.unshift(head.rest);
  }
  const r = relay(socket, upstream, abortUpstream !== undefined ? { abortUpstream } : {});
  const headLength = head?.headLength ?? 0;
  const bytes = (): { up: number; down: number } => ({ up: Math.max(0, socket.bytesRead - headLength), down: Math.max(0, socket.bytesWritten - (chain ? ESTABLISHED_LENGTH : 0)) });
  const live: LiveConnection = {
    id: ev.id ?? '',
    service: entry.name,
    sni: entry.domain,
    identity,
    target: a.target,
    connector: entry.connector,
    source: ev.source,
    startedAt: ctx.clock.now(),
    cut: (reason) => r.abort(reason),
    bytes,
  };
  ctx.registry.add(live);
  let expiry: NodeJS.Timeout | undefined;
  if (ctx.limits.cutOnCertExpiry) {
    const left = identity.notAfter.getTime() - ctx.clock.now();
    expiry = setTimeout(() => r.abort('cert-expired'), Math.max(0, Math.min(left, 2 ** 31 - 1)));
    expiry.unref();
  }
  const result = await r.done;
  clearTimeout(expiry);
  ctx.registry.remove(live);
  const total = bytes();
  ctx.record({
    ...allowed,
    bytesUp: total.up,
    bytesDown: total.down,
    durationMs: elapsed(),
    closeReason: closeReason(result, tunnelLost()),
  });
}

/** Would this live connection still be allowed under `state`? The reason it would not, or undefined. */
export function stillAllowed(c: { sni: string; service: string; identity: PeerIdentity; target: Target }, state: AccessTierState, ctx: Pick<AccessTierContext, 'decider' | 'logger'>): string | undefined {
  const entry = state.bySni.get(c.sni);
  if (entry === undefined || entry.name !== c.service) return 'service-removed';
  if (entry.problem !== undefined) return 'service-misconfigured';
  if (state.revoked.has(c.identity.serial.toLowerCase())) return 'cert-revoked';
  if (entry.mode === 'chain' && !checkTarget(entry, c.target).ok) return 'target-not-in-service';
  try {
    const decision = ctx.decider.decide({ service: entry.spec, identity: c.identity, target: c.target, snapshot: state.snapshot });
    return decision.allow ? undefined : (decision.reasons[0] ?? 'policy-denied');
  } catch (err) {
    ctx.logger.error({ err, service: c.service }, 'the decider threw while re-checking a live connection; cutting it');
    return 'decision-failed';
  }
}

function closeReason(result: RelayResult, tunnelLost: boolean): string {
  switch (result.outcome) {
    case 'done':
      return 'closed';
    case 'aborted':
      return result.detail ?? 'cut';
    case 'client-error':
      return 'client-reset';
    case 'client-closed':
      return 'client-closed';
    case 'upstream-error':
    case 'upstream-closed':
      return tunnelLost ? 'tunnel-lost' : result.outcome === 'upstream-error' ? 'backend-reset' : 'backend-closed';
  }
}

function backendMessage(reason: string): string {
  switch (reason) {
    case 'backend-unreachable':
      return 'the service backend is unreachable';
    case 'backend-timeout':
      return 'the service backend did not answer in time';
    case 'no-connector-tunnel':
      return 'the connector for this service is not connected';
    case 'connector-busy':
      return 'the connector for this service is at capacity; try again';
    case 'connector-refused':
      return 'the connector refused this target';
    default:
      return 'the backend connection failed';
  }
}

/** Answers a refused CONNECT and closes; a client that keeps the socket open is cut after lingerMs. */
function refuse(socket: TLSSocket, refusal: Refusal, lingerMs: number): void {
  if (socket.destroyed) return;
  socket.end(formatConnectResponse(refusal.status, refusal.reason, refusal.message, refusal.hints));
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

function publishDecision(ev: AccessEventFields, decision: 'allow' | 'deny' | 'would-deny', reasons: string[]): void {
  if (decisionChannel.hasSubscribers) decisionChannel.publish({ ...ev, decision, reasons });
}

/** A short, JSON-safe rendering of an SNI we could not accept. */
function printable(value: string): string {
  const shown = value.length > 64 ? `${value.slice(0, 64)}…` : value;
  return shown.replace(/[^\x21-\x7e]/g, '?');
}
