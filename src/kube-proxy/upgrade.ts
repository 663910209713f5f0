/**
 * Protocol upgrades through the kube proxy (KP-05, KP-06, KP-07): exec, attach and port-forward
 * over WebSocket (GET, `Upgrade: websocket`) and SPDY/3.1 (kubectl's POST, `Upgrade: SPDY/3.1`).
 *
 * checkUpgrade() admits only those two upgrades, only to pods/exec, pods/attach and
 * pods/portforward of the core v1 API, only with the Kubernetes subprotocols (WebSocket
 * `v5.channel.k8s.io` … `channel.k8s.io`, their base64 variants, `portforward.k8s.io` and
 * `SPDY/3.1+portforward.k8s.io`; SPDY's `X-Stream-Protocol-Version` likewise) and never with a body.
 * Anything else (`h2c`, `TLS/1.0`, two Upgrade headers, an upgrade to pods/log or services/proxy)
 * is 400 and the socket is closed.
 *
 * relayUpgrade() holds the client's bytes until the API server has answered 101: a refusal (any
 * other status) is relayed with `Connection: close` and the client socket destroyed, so no byte the
 * client sent after the request can ever reach the API server on a connection it might treat as
 * upgraded (CVE-2018-1002105). After a 101 the two sockets are piped both ways until either ends.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { headerValues } from './headers.ts';
import type { KubeRequestInfo } from './request-info.ts';

export const WEBSOCKET_CHANNEL_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io', 'v4.base64.channel.k8s.io', 'v3.base64.channel.k8s.io', 'v2.base64.channel.k8s.io', 'base64.channel.k8s.io'] as const;
export const WEBSOCKET_PORTFORWARD_PROTOCOLS = ['portforward.k8s.io', 'base64.portforward.k8s.io', 'SPDY/3.1+portforward.k8s.io'] as const;
export const SPDY_CHANNEL_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'] as const;
export const SPDY_PORTFORWARD_PROTOCOLS = ['portforward.k8s.io'] as const;
export const UPGRADE_SUBRESOURCES = ['exec', 'attach', 'portforward'] as const;

/** The WebSocket subprotocol that carries a bearer token (browsers' way); refused like a query token (KP-04). */
export const BEARER_SUBPROTOCOL_PREFIX = 'base64url.bearer.authorization.k8s.io.';

export type UpgradeCheck = { ok: true; transport: 'websocket' | 'spdy'; upgrade: string } | { ok: false; message: string };

function splitList(values: string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}

/** Every WebSocket subprotocol the client offered. */
export function offeredSubprotocols(rawHeaders: readonly string[]): string[] {
  return splitList(headerValues(rawHeaders, 'sec-websocket-protocol'));
}

export function checkUpgrade(req: IncomingMessage, info: KubeRequestInfo | undefined): UpgradeCheck {
  const refuse = (message: string): UpgradeCheck => ({ ok: false, message });
  const upgrades = headerValues(req.rawHeaders, 'upgrade');
  const values = splitList(upgrades);
  if (upgrades.length !== 1 || values.length !== 1) return refuse('exactly one protocol upgrade is allowed (websocket or SPDY/3.1)');
  const upgrade = values[0];
  const lower = upgrade.toLowerCase();
  const transport = lower === 'websocket' ? 'websocket' : lower === 'spdy/3.1' ? 'spdy' : undefined;
  if (transport === undefined) return refuse(`the upgrade to ${JSON.stringify(upgrade.slice(0, 40))} is not allowed; only websocket and SPDY/3.1 to pods/exec, attach and portforward are`);
  if (info === undefined || !info.isResourceRequest || info.apiPrefix !== 'api' || info.apiVersion !== 'v1' || info.resource !== 'pods' || info.namespace === undefined || info.name === undefined || !(UPGRADE_SUBRESOURCES as readonly string[]).includes(info.subresource ?? '') || info.parts.length > 0) {
    return refuse('protocol upgrades are allowed only to pods/exec, pods/attach and pods/portforward');
  }
  const method = (req.method ?? '').toUpperCase();
  if (transport === 'websocket' ? method !== 'GET' : method !== 'POST' && method !== 'GET') return refuse(`a ${transport} upgrade with ${method} is not allowed`);
  const contentLength = headerValues(req.rawHeaders, 'content-length');
  if (headerValues(req.rawHeaders, 'transfer-encoding').length > 0 || contentLength.some((v) => v.trim() !== '0')) return refuse('an upgrade request must not have a body');
  const portforward = info.subresource === 'portforward';
  if (transport === 'websocket') {
    const offered = offeredSubprotocols(req.rawHeaders);
    const allowed: readonly string[] = portforward ? WEBSOCKET_PORTFORWARD_PROTOCOLS : WEBSOCKET_CHANNEL_PROTOCOLS;
    if (offered.length === 0) return refuse(`a WebSocket upgrade must offer a Kubernetes subprotocol (${allowed.join(', ')})`);
    const bad = offered.find((p) => !allowed.includes(p));
    if (bad !== undefined) return refuse(`the WebSocket subprotocol ${JSON.stringify(bad.slice(0, 60))} is not allowed here`);
  } else {
    const offered = splitList(headerValues(req.rawHeaders, 'x-stream-protocol-version'));
    const allowed: readonly string[] = portforward ? SPDY_PORTFORWARD_PROTOCOLS : SPDY_CHANNEL_PROTOCOLS;
    if (offered.length === 0) return refuse(`a SPDY upgrade must name a stream protocol (${allowed.join(', ')})`);
    const bad = offered.find((p) => !allowed.includes(p));
    if (bad !== undefined) return refuse(`the stream protocol ${JSON.stringify(bad.slice(0, 60))} is not allowed here`);
  }
  return { ok: true, transport, upgrade };
}

/** An HTTP/1.1 response head as bytes. */
export function responseHead(status: number, statusText: string, headers: ReadonlyArray<readonly [string, string]>): string {
  const lines = [`HTTP/1.1 ${status} ${statusText.replace(/[\r\n]/g, ' ')}`];
  for (const [name, value] of headers) lines.push(`${name}: ${value.replace(/[\r\n]/g, ' ')}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

export interface PipeStats {
  bytesUp: number;
  bytesDown: number;
}

/**
 * Pipes client ⇄ backend (with backpressure) until either side ends or errors, then destroys both
 * and calls `done` once.
 */
export function pipeBoth(client: Duplex, backend: Duplex, done: (stats: PipeStats) => void): PipeStats {
  const stats: PipeStats = { bytesUp: 0, bytesDown: 0 };
  let finished = false;
  const end = (): void => {
    if (finished) return;
    finished = true;
    client.destroy();
    backend.destroy();
    done(stats);
  };
  client.on('data', (chunk: Buffer) => {
    stats.bytesUp += chunk.length;
    if (!backend.write(chunk)) client.pause();
  });
  backend.on('data', (chunk: Buffer) => {
    stats.bytesDown += chunk.length;
    if (!client.write(chunk)) backend.pause();
  });
  backend.on('drain', () => client.resume());
  client.on('drain', () => backend.resume());
  // A half-close is passed on (kubectl ends stdin that way); the connection ends when both halves have.
  client.on('end', () => backend.end());
  backend.on('end', () => client.end());
  for (const s of [client, backend]) {
    s.on('error', end);
    s.on('close', end);
  }
  client.resume();
  backend.resume();
  return stats;
}
