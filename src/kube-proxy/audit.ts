/**
 * Kube audit events (src/lib/audit/kube-event.ts) as the proxy writes them:
 *
 * - `kube-request`: one per request, written when the answer's status is known (a watch's when its
 *   headers go out, not hours later when it ends), or at once for a refusal. `latencyMs` is the time
 *   to the answer's headers. A live request or stream cut by a state change adds a second
 *   `kube-request` with decision `deny` and the reason, so the cut is on the record.
 * - `kube-session`: one per exec/attach/port-forward, when it ends, with the command (the `command=`
 *   query parameters), container, stdin/tty, duration, transport and bytes each way.
 *
 * Nothing secret goes in: the path is written without its query string, and identity comes from the
 * verified token (never the client's headers).
 */
import { newEventId } from '../lib/audit/event.ts';
import type { KubeEvent } from '../lib/audit/kube-event.ts';
import type { KubeRequestInfo } from './request-info.ts';

export interface AuditWho {
  user: string;
  userId?: string;
  groups: readonly string[];
  device?: string;
}

export interface AuditBase {
  clusterName: string;
  kubeProxy: string;
  source: string;
}

const MAX_COMMAND_ARGS = 64;
const MAX_ARG_CHARS = 1024;

/** The request's kube fields; a path that did not parse is recorded as sent (query left out). */
export function requestFields(info: KubeRequestInfo | undefined, rawPath: string, method: string): Pick<KubeEvent, 'verb' | 'resource' | 'subresource' | 'namespace' | 'name' | 'apiGroup' | 'path'> {
  if (info === undefined) return { verb: method.toLowerCase().slice(0, 64), path: rawPath.slice(0, 4096) };
  return {
    verb: info.verb,
    path: info.path.slice(0, 4096),
    ...(info.resource !== undefined ? { resource: info.resource } : {}),
    ...(info.subresource !== undefined ? { subresource: info.subresource } : {}),
    ...(info.namespace !== undefined ? { namespace: info.namespace } : {}),
    ...(info.name !== undefined ? { name: info.name } : {}),
    ...(info.apiGroup !== undefined && info.isResourceRequest ? { apiGroup: info.apiGroup } : {}),
  };
}

export function kubeRequestEvent(
  base: AuditBase,
  who: AuditWho | undefined,
  fields: ReturnType<typeof requestFields>,
  outcome: { code: number; latencyMs: number; decision: 'allow' | 'deny'; reason?: string; time: number },
): KubeEvent {
  return {
    id: newEventId(outcome.time),
    time: new Date(outcome.time).toISOString(),
    type: 'kube-request',
    clusterName: base.clusterName,
    kubeProxy: base.kubeProxy,
    user: who?.user ?? '',
    ...(who?.userId !== undefined ? { userId: who.userId } : {}),
    groups: [...(who?.groups ?? [])],
    ...(who?.device !== undefined ? { device: who.device } : {}),
    ...fields,
    code: outcome.code,
    latencyMs: Math.max(0, Math.round(outcome.latencyMs)),
    decision: outcome.decision,
    ...(outcome.reason !== undefined ? { reason: outcome.reason } : {}),
    source: base.source,
  };
}

/** What an exec/attach asked for, from its query string. */
export function sessionDetails(query: URLSearchParams, subresource: string | undefined): Pick<KubeEvent, 'command' | 'container' | 'interactive' | 'tty'> {
  if (subresource !== 'exec' && subresource !== 'attach') return {};
  const command = query.getAll('command').slice(0, MAX_COMMAND_ARGS).map((a) => a.slice(0, MAX_ARG_CHARS));
  const container = query.get('container');
  const truthy = (v: string | null): boolean => v !== null && ['1', 't', 'true', 'True', 'TRUE'].includes(v);
  return {
    ...(subresource === 'exec' ? { command } : {}),
    ...(container !== null && container !== '' ? { container: container.slice(0, 256) } : {}),
    interactive: truthy(query.get('stdin')),
    tty: truthy(query.get('tty')),
  };
}

export function kubeSessionEvent(
  base: AuditBase,
  who: AuditWho,
  fields: ReturnType<typeof requestFields>,
  details: ReturnType<typeof sessionDetails>,
  session: { startedAt: number; endedAt: number; transport: 'websocket' | 'spdy'; bytesUp: number; bytesDown: number; reason?: string; decision: 'allow' | 'deny' },
): KubeEvent {
  return {
    id: newEventId(session.endedAt),
    time: new Date(session.endedAt).toISOString(),
    type: 'kube-session',
    clusterName: base.clusterName,
    kubeProxy: base.kubeProxy,
    user: who.user,
    ...(who.userId !== undefined ? { userId: who.userId } : {}),
    groups: [...who.groups],
    ...(who.device !== undefined ? { device: who.device } : {}),
    ...fields,
    code: 101,
    latencyMs: 0,
    decision: session.decision,
    ...(session.reason !== undefined ? { reason: session.reason } : {}),
    source: base.source,
    ...details,
    durationMs: Math.max(0, session.endedAt - session.startedAt),
    transport: session.transport,
    bytesUp: session.bytesUp,
    bytesDown: session.bytesDown,
  };
}
