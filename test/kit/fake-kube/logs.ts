/**
 * Container logs: a line buffer per container, served as text (`GET .../pods/NAME/log`) and
 * followed as a chunked stream with `?follow=true`. appendLog() pushes to every follower.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PodStore } from './pods.ts';
import { failure, notFound, sendStatus } from './status.ts';

interface LogLine {
  time: string;
  text: string;
}

interface Follower {
  timestamps: boolean;
  res: ServerResponse;
}

interface ContainerLog {
  lines: LogLine[];
  followers: Set<Follower>;
}

export class LogStore {
  private readonly logs = new Map<string, ContainerLog>();

  private log(ns: string, pod: string, container: string): ContainerLog {
    const key = `${ns}/${pod}/${container}`;
    let log = this.logs.get(key);
    if (log === undefined) {
      log = { lines: [], followers: new Set() };
      this.logs.set(key, log);
    }
    return log;
  }

  append(ns: string, pod: string, container: string, line: string): void {
    const log = this.log(ns, pod, container);
    const text = line.endsWith('\n') ? line : `${line}\n`;
    const entry = { time: new Date().toISOString(), text };
    log.lines.push(entry);
    for (const f of log.followers) f.res.write(format(entry, f.timestamps));
  }

  lines(ns: string, pod: string, container: string): readonly LogLine[] {
    return this.log(ns, pod, container).lines;
  }

  follow(ns: string, pod: string, container: string, follower: Follower): () => void {
    const log = this.log(ns, pod, container);
    log.followers.add(follower);
    return () => log.followers.delete(follower);
  }

  /** Ends every follower of the pod's containers (the pod went away). */
  endPod(ns: string, pod: string): void {
    const prefix = `${ns}/${pod}/`;
    for (const [key, log] of this.logs) {
      if (!key.startsWith(prefix)) continue;
      for (const f of log.followers) f.res.end();
      log.followers.clear();
      this.logs.delete(key);
    }
  }
}

function format(line: LogLine, timestamps: boolean): string {
  return timestamps ? `${line.time} ${line.text}` : line.text;
}

/** Picks the container as the kubelet does: the named one, or the only one. */
export function resolveContainer(store: PodStore, ns: string, name: string, requested: string | null): { container: string } | { status: ReturnType<typeof failure> } {
  const pod = store.get(ns, name);
  if (pod === undefined) return { status: notFound('pods', name) };
  const names = pod.spec.containers.map((c) => c.name);
  if (requested === null || requested === '') {
    if (names.length === 1) return { container: names[0] };
    return { status: failure(400, 'BadRequest', `a container name must be specified for pod ${name}, choose one of: [${names.join(' ')}]`) };
  }
  if (!names.includes(requested)) return { status: failure(400, 'BadRequest', `container ${requested} is not valid for pod ${name}`) };
  return { container: requested };
}

export function serveLogs(logs: LogStore, store: PodStore, signal: AbortSignal, req: IncomingMessage, res: ServerResponse, query: URLSearchParams, ns: string, name: string): void {
  if (req.method !== 'GET') {
    sendStatus(res, failure(405, 'MethodNotAllowed', `the fake API server does not support ${req.method} on pods/log`));
    return;
  }
  const resolved = resolveContainer(store, ns, name, query.get('container'));
  if ('status' in resolved) {
    sendStatus(res, resolved.status);
    return;
  }
  const { container } = resolved;
  const timestamps = query.get('timestamps') === 'true';
  const follow = query.get('follow') === 'true' || query.get('follow') === '1';
  let lines = logs.lines(ns, name, container);
  const tail = query.get('tailLines');
  if (tail !== null && Number(tail) >= 0) lines = Number(tail) === 0 ? [] : lines.slice(-Number(tail));
  const body = lines.map((l) => format(l, timestamps)).join('');

  if (!follow) {
    const payload = Buffer.from(body);
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': payload.length, 'Cache-Control': 'no-cache, private' });
    res.end(payload);
    return;
  }
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
  res.flushHeaders();
  req.socket.setNoDelay(true);
  if (body !== '') res.write(body);
  const stop = logs.follow(ns, name, container, { timestamps, res });
  const finish = (): void => {
    stop();
    signal.removeEventListener('abort', finish);
    if (!res.writableEnded) res.end();
  };
  signal.addEventListener('abort', finish);
  res.on('close', finish);
}
