/**
 * The kube proxy (issue 6): an HTTPS server in front of the Kubernetes API that verifies Causeway's
 * ID tokens and forwards each request with the proxy's own credentials plus Impersonate-User /
 * Impersonate-Group / Impersonate-Extra-*, so the cluster's native RBAC applies to the person.
 *
 *     const proxy = await startKubeProxy({
 *       listen: { host: '0.0.0.0', port: 8443 }, tls: serving,           // serving-ca.ts
 *       issuer: 'https://causeway.example.com', audience: 'kubernetes:prod',
 *       backend: inClusterBackend(...) | kubeconfigBackend(...),          // backend.ts
 *       clusterName: 'prod', state: remoteConfigSource, events: spoolingSink,
 *     });
 *     …
 *     await proxy.close();
 *
 * `state` is any ConfigSource-like object (a RemoteConfigSource following the 'kube-proxy' stream
 * audience fits as it is): its snapshots carry users, devices, policies, roles and services. With
 * it, the proxy refuses disabled/unknown users and banned/AlwaysDeny/unknown devices, applies the
 * Policy `kubernetes.deny` rules of the Service whose `kubernetes.clusterName` is this cluster, and
 * cuts live requests and streams within 1 s of a change that denies them. Without it (no control
 * plane) only the token is checked.
 *
 * Only command.ts reads files, env and argv; everything here takes PEMs and callbacks.
 */
import type { Clock } from '../lib/clock.ts';
import type { ConfigSnapshot } from '../lib/config/index.ts';
import type { Logger } from '../lib/log.ts';
import type { ClaimMapping, TokenAlgorithm } from '../lib/oidc/index.ts';
import type { KubeEventSink } from '../lib/audit/kube-event.ts';

export type { KubeEvent, KubeEventSink, KubeEventType } from '../lib/audit/kube-event.ts';

/** How the proxy authenticates to the API server (backend.ts builds these from in-cluster files or a kubeconfig). */
export interface KubeBackend {
  /** https://host:port of the API server (http:// only with allowInsecureHttp, for tests). */
  url: string;
  /** The API server's CA (PEM); default: the system roots. */
  caPem?: string;
  /** The proxy's bearer token, read for every request (so a rotated service account token is picked up). */
  token?: () => string | undefined;
  /** A client certificate for the proxy itself. */
  clientCert?: { certPem: string; keyPem: string };
  /** Server name to check in the API server's certificate when it differs from the URL's host. */
  tlsServerName?: string;
  /** Never true: the API server's certificate is always checked. Present so a kubeconfig's flag is refused loudly. */
  insecureSkipTlsVerify?: false;
  /** Allow an http:// backend URL (tests only). */
  allowInsecureHttp?: boolean;
}

/** What the proxy decides with: the config stream's current snapshot (see ConfigSnapshot). */
export type KubeProxyState = ConfigSnapshot;

/** A source of KubeProxyState; a ConfigSource (RemoteConfigSource, StaticConfigSource) is one. */
export interface KubeProxyStateSource {
  /** The latest snapshot, or undefined before the first one (new requests then get 503). */
  current(): KubeProxyState | undefined;
  /** Called with every new snapshot; returns the unsubscribe function. */
  subscribe(listener: (state: KubeProxyState) => void): () => void;
}

export interface KubeProxyOptions {
  listen: { host: string; port: number };
  /** Serving certificate/key PEM (from serving-ca.ts or given); `caPem` is reported back as KubeProxy.caPem. */
  tls: { certPem: string; keyPem: string; caPem?: string };
  /** The OIDC issuer exactly as tokens carry it (Causeway's public URL). */
  issuer: string;
  /** The client id tokens must name, e.g. `kubernetes:prod`. */
  audience: string;
  /** Default ['RS256', 'ES256']. */
  algorithms?: TokenAlgorithm[];
  /** CA to trust for the issuer's discovery and JWKS (instead of the system roots). */
  issuerCaPem?: string;
  /** Allow an http:// issuer on loopback (tests only). */
  allowInsecureIssuer?: boolean;
  /** Default: usernameClaim 'email', groupsClaim 'groups', no prefixes. */
  claims?: ClaimMapping;
  backend: KubeBackend;
  /** This cluster's name as Service specs name it in `kubernetes.clusterName`, e.g. `prod`. */
  clusterName: string;
  /** The proxy's name in audit events (its enrolled name); default: clusterName. */
  name?: string;
  /** Live user/device state and policies; undefined = no control plane (no rules, no cuts). */
  state?: KubeProxyStateSource;
  /** Where kube audit events go (a SpoolingEventSink in production). */
  events: KubeEventSink;
  clock?: Clock;
  logger?: Logger;
  /** The JWKS/discovery fetch (tests). */
  fetch?: typeof fetch;
  /** Largest request header block in bytes (431 beyond); default 32 KiB. */
  maxHeaderBytes?: number;
}

export interface KubeProxyStats {
  /** Requests answered or forwarded since start. */
  requests: number;
  /** Requests refused (401, 403, 400, 503 by the proxy itself). */
  denied: number;
  /** Requests and streams in flight now. */
  live: number;
  /** Upgraded sessions (exec/attach/port-forward) in flight now. */
  sessions: number;
  /** Live requests/streams cut because a state change denied them. */
  cuts: number;
  /** Whether the proxy has state to decide with (always true without a state source). */
  ready: boolean;
}

export interface KubeProxy {
  /** https://host:port it listens on. */
  readonly url: string;
  readonly port: number;
  /** The serving CA PEM when given in options.tls.caPem. */
  readonly caPem?: string;
  stats(): KubeProxyStats;
  /** Stops listening, cuts every live request and stream, and closes the verifier. */
  close(): Promise<void>;
}

export { startKubeProxy } from './proxy.ts';
export { inClusterBackend, kubeconfigBackend } from './backend.ts';
export type { InClusterBackendInput, KubeconfigBackendOptions } from './backend.ts';
export { createServingCa, issueServingCert, servingCertNeedsRenewal } from './serving-ca.ts';
export type { ServingCa, ServingCert } from './serving-ca.ts';
