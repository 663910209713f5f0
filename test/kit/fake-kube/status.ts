/** Kubernetes `Status` objects and small response helpers shared by the fake's handlers. */
import type { ServerResponse } from 'node:http';

export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: string;
  details?: Record<string, unknown>;
  code: number;
}

export function failure(code: number, reason: string, message: string, details?: Record<string, unknown>): KubeStatus {
  const status: KubeStatus = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details !== undefined) status.details = details;
  return status;
}

export function notFound(kind: string, name: string, group = ''): KubeStatus {
  return failure(404, 'NotFound', `${kind}${group === '' ? '' : `.${group}`} "${name}" not found`, { name, kind });
}

export function sendJson(res: ServerResponse, code: number, body: unknown, contentType = 'application/json'): void {
  const payload = Buffer.from(JSON.stringify(body));
  res.writeHead(code, { 'Content-Type': contentType, 'Content-Length': payload.length, 'Cache-Control': 'no-cache, private' });
  res.end(payload);
}

export function sendStatus(res: ServerResponse, status: KubeStatus): void {
  sendJson(res, status.code, status);
}
