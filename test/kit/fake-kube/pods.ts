/**
 * The fake's pod store: pods by namespace, a global resourceVersion, a bounded event history and
 * live watchers. Tests change it with add/modify/delete; list and watch read it.
 */
import { randomUUID } from 'node:crypto';

export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';

/** What a test says about a pod; everything but the name has a default. */
export interface FakePodInput {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Container names; default `['main']`. */
  containers?: string[];
  image?: string;
  phase?: PodPhase;
  /** Whether every container is ready; default: phase is Running. */
  ready?: boolean;
  restarts?: number;
  /** Overrides the STATUS column (e.g. CrashLoopBackOff). */
  statusReason?: string;
  /** Marks the pod as being deleted (STATUS Terminating). */
  terminating?: boolean;
  nodeName?: string;
  podIP?: string;
  /** ISO time; default now. */
  creationTimestamp?: string;
}

export type PodPatch = Partial<Omit<FakePodInput, 'name' | 'namespace'>>;

/** A v1 Pod as JSON. */
export interface PodObject {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    creationTimestamp: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec: Record<string, unknown> & { containers: Array<{ name: string; image: string }>; nodeName: string };
  status: Record<string, unknown> & { phase: PodPhase; podIP: string };
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface PodEvent {
  type: WatchEventType;
  /** The resourceVersion this event produced. */
  rv: number;
  pod: PodObject;
}

interface StoredPod {
  input: FakePodInput & { namespace: string };
  uid: string;
  object: PodObject;
}

export type PodListener = (event: PodEvent) => void;

const HISTORY_LIMIT = 10_000;

export class PodStore {
  private readonly pods = new Map<string, Map<string, StoredPod>>();
  private readonly extraNamespaces = new Set<string>(['default', 'kube-system']);
  private readonly history: PodEvent[] = [];
  private readonly listeners = new Set<PodListener>();
  private rv = 1000;
  /** The oldest resourceVersion a watch may resume from. */
  private oldestRv = 1000;

  get resourceVersion(): number {
    return this.rv;
  }

  namespaces(): string[] {
    return [...new Set([...this.extraNamespaces, ...this.pods.keys()])].sort();
  }

  hasNamespace(ns: string): boolean {
    return this.extraNamespaces.has(ns) || this.pods.has(ns);
  }

  /** Adds pods without events (the initial state); resets the history to start after them. */
  seed(inputs: FakePodInput[]): void {
    for (const input of inputs) this.put(input, false);
    this.history.length = 0;
    this.oldestRv = this.rv;
  }

  add(input: FakePodInput): PodObject {
    const ns = input.namespace ?? 'default';
    if (this.pods.get(ns)?.has(input.name) === true) throw new Error(`pod ${ns}/${input.name} already exists`);
    return this.put(input, true);
  }

  modify(ns: string, name: string, patch: PodPatch): PodObject {
    const stored = this.pods.get(ns)?.get(name);
    if (stored === undefined) throw new Error(`pod ${ns}/${name} does not exist`);
    const input = { ...stored.input, ...patch, name, namespace: ns };
    stored.input = input;
    stored.object = renderPod(input, stored.uid, ++this.rv);
    this.emit({ type: 'MODIFIED', rv: this.rv, pod: stored.object });
    return stored.object;
  }

  delete(ns: string, name: string): PodObject {
    const pods = this.pods.get(ns);
    const stored = pods?.get(name);
    if (pods === undefined || stored === undefined) throw new Error(`pod ${ns}/${name} does not exist`);
    pods.delete(name);
    const object = renderPod(stored.input, stored.uid, ++this.rv);
    this.emit({ type: 'DELETED', rv: this.rv, pod: object });
    return object;
  }

  get(ns: string, name: string): PodObject | undefined {
    return this.pods.get(ns)?.get(name)?.object;
  }

  /** Pods in one namespace, or in all when ns is undefined, sorted by namespace then name. */
  list(ns: string | undefined): PodObject[] {
    const namespaces = ns === undefined ? [...this.pods.keys()].sort() : [ns];
    const out: PodObject[] = [];
    for (const n of namespaces) {
      const pods = this.pods.get(n);
      if (pods === undefined) continue;
      for (const name of [...pods.keys()].sort()) out.push(pods.get(name)!.object);
    }
    return out;
  }

  /**
   * Events after resourceVersion `since`, or undefined when the history no longer reaches back
   * that far (the watch must answer 410 Gone).
   */
  eventsSince(since: number): PodEvent[] | undefined {
    if (since < this.oldestRv) return undefined;
    return this.history.filter((e) => e.rv > since);
  }

  subscribe(listener: PodListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private put(input: FakePodInput, emit: boolean): PodObject {
    const ns = input.namespace ?? 'default';
    let pods = this.pods.get(ns);
    if (pods === undefined) {
      pods = new Map();
      this.pods.set(ns, pods);
    }
    const uid = randomUUID();
    const full = { ...input, namespace: ns, creationTimestamp: input.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
    const object = renderPod(full, uid, ++this.rv);
    pods.set(input.name, { input: full, uid, object });
    if (emit) this.emit({ type: 'ADDED', rv: this.rv, pod: object });
    return object;
  }

  private emit(event: PodEvent): void {
    this.history.push(event);
    if (this.history.length > HISTORY_LIMIT) {
      const dropped = this.history.splice(0, this.history.length - HISTORY_LIMIT);
      this.oldestRv = dropped[dropped.length - 1].rv;
    }
    for (const listener of [...this.listeners]) listener(event);
  }
}

function renderPod(input: FakePodInput & { namespace: string }, uid: string, rv: number): PodObject {
  const phase = input.phase ?? 'Running';
  const ready = input.ready ?? phase === 'Running';
  const containers = input.containers ?? ['main'];
  const image = input.image ?? 'registry.k8s.io/pause:3.10';
  const created = input.creationTimestamp ?? new Date().toISOString();
  const podIP = input.podIP ?? `10.244.0.${(hash(`${input.namespace}/${input.name}`) % 250) + 2}`;
  const restarts = input.restarts ?? 0;
  const metadata: PodObject['metadata'] = {
    name: input.name,
    namespace: input.namespace,
    uid,
    resourceVersion: String(rv),
    creationTimestamp: created,
  };
  if (input.terminating === true) metadata.deletionTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  if (input.labels !== undefined) metadata.labels = { ...input.labels };
  if (input.annotations !== undefined) metadata.annotations = { ...input.annotations };
  const status: PodObject['status'] = {
    phase,
    conditions: [
      { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: created },
      { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: created },
      { type: 'ContainersReady', status: ready ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: created },
      { type: 'Ready', status: ready ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: created },
    ],
    hostIP: '172.18.0.2',
    hostIPs: [{ ip: '172.18.0.2' }],
    podIP,
    podIPs: [{ ip: podIP }],
    startTime: created,
    qosClass: 'BestEffort',
    containerStatuses: containers.map((name) => ({
      name,
      image,
      imageID: `${image}@sha256:${'0'.repeat(64)}`,
      containerID: `containerd://${hash(`${uid}/${name}`).toString(16).padStart(8, '0')}`,
      ready,
      started: phase === 'Running',
      restartCount: restarts,
      state: phase === 'Running' ? { running: { startedAt: created } } : phase === 'Pending' ? { waiting: { reason: input.statusReason ?? 'ContainerCreating' } } : { terminated: { exitCode: phase === 'Succeeded' ? 0 : 1, reason: phase === 'Succeeded' ? 'Completed' : 'Error', startedAt: created, finishedAt: created } },
    })),
  };
  if (input.statusReason !== undefined) status.reason = input.statusReason;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata,
    spec: {
      containers: containers.map((name) => ({ name, image, resources: {}, terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File', imagePullPolicy: 'IfNotPresent' })),
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: 'default',
      nodeName: input.nodeName ?? 'fake-node-1',
      schedulerName: 'default-scheduler',
      enableServiceLinks: true,
    },
    status,
  };
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}
