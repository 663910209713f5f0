/** The fake Kubernetes API server's public types. */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Logger } from '../../../src/lib/log.ts';
import type { FakePodInput, PodObject, PodPatch } from './pods.ts';

export interface FakeKubeUser {
  user: string;
  groups: string[];
  /** Impersonate-Extra-* values by (decoded, lower-case) key, with the `impersonation` option. */
  extra?: Record<string, string[]>;
  /** Who impersonated this user (the kube proxy), with the `impersonation` option. */
  impersonator?: string;
}

/** What the `authorize` hook sees of a request. */
export interface FakeKubeAuthzRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  upgrade: boolean;
}

export interface FakeKubeImpersonationOptions {
  /** The bearer token the proxy must present (its service account token). */
  proxyToken?: string;
  /** The name the proxy is known by (recorded as `impersonator`); default `system:serviceaccount:causeway:causeway-kube-proxy`. */
  proxyUser?: string;
}

export interface FakeKubeOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** Serving certificate and key; generated (with a fresh CA) when absent. */
  certPem?: string;
  keyPem?: string;
  /** The CA that signed certPem (what clients trust); defaults to certPem itself. */
  caPem?: string;
  /** Extra DNS names for the generated certificate (e.g. 'kube.demo.causeway.test'); localhost and 127.0.0.1 are always in it. */
  dnsNames?: string[];
  /** Pods in `default` at start (named web-0, web-1, ...); default 3. */
  pods?: number;
  /** Pods in the `big` namespace, each with ~1 KiB of annotations (a multi-megabyte `get pods -o json`). */
  bigPods?: number;
  /** When set, requests must carry `Authorization: Bearer <token>`, else 401. */
  bearerToken?: string;
  /**
   * Require `Authorization: Bearer <ID token>` verified with src/lib/oidc's createTokenVerifier
   * against the issuer's discovery and JWKS, as kube-apiserver's `--oidc-*` flags do; anything else
   * gets 401 with a Status `Unauthorized`. The user is the `usernameClaim` (default `email`), the
   * groups the `groups` claim. Takes precedence over bearerToken; `authenticate` over this.
   */
  oidc?: FakeKubeOidcOptions;
  /**
   * kube-apiserver behind a kube proxy: only the proxy is trusted (its `proxyToken` as bearer, and
   * its TLS client certificate when requireClientCert is set) and every request MUST impersonate:
   * exactly one Impersonate-User, groups from each Impersonate-Group header (system:authenticated
   * added), extras from Impersonate-Extra-<url-encoded key>. Not the proxy: 401; the proxy without
   * Impersonate-User, or with a repeated one: 403. Client identity headers the proxy should have
   * stripped (X-Remote-*) are refused with 400, so a leak fails loudly. Takes precedence over oidc
   * and bearerToken; `authenticate` over this.
   */
  impersonation?: FakeKubeImpersonationOptions;
  /**
   * A stand-in for RBAC, asked after authentication: a message refuses the request with 403
   * Forbidden (kubectl prints `Error from server (Forbidden): MESSAGE`); undefined allows it.
   */
  authorize?: (user: FakeKubeUser, request: FakeKubeAuthzRequest) => string | undefined;
  /** Decides who a request is (undefined: 401). Takes precedence over impersonation, oidc and bearerToken. */
  authenticate?: (req: IncomingMessage) => FakeKubeUser | undefined;
  /** Ask for and require a TLS client certificate signed by clientCaPem (default: the serving CA). */
  requireClientCert?: boolean;
  clientCaPem?: string;
  /** What /version reports; default 1.32.4. */
  serverVersion?: string;
  /** Answer aggregated discovery (apidiscovery.k8s.io/v2) when asked; default true. False forces kubectl onto legacy discovery. */
  aggregatedDiscovery?: boolean;
  logger?: Logger;
}

export interface FakeKubeOidcOptions {
  /** The issuer URL exactly as tokens carry it (`--oidc-issuer-url`). */
  issuer: string;
  /** The client id tokens must name in `aud` (`--oidc-client-id`). */
  audience: string;
  /** The CA to trust the issuer by (`--oidc-ca-file`); default the system roots. */
  caPem?: string;
  /** Default 'email' (`--oidc-username-claim`). */
  usernameClaim?: string;
  /** http:// issuers on loopback (tests of the verifier only). */
  allowInsecureHttp?: boolean;
  /** Clock skew allowed for exp/nbf/iat; default 30 s. 0 lets a test see a short-lived token expire at once. */
  clockToleranceSec?: number;
}

export interface RecordedRequest {
  method: string;
  /** The path without the query string. */
  path: string;
  query: URLSearchParams;
  /** The request target as sent. */
  url: string;
  /** Header names and values exactly as received, alternating (Node's rawHeaders). */
  rawHeaders: string[];
  headers: IncomingHttpHeaders;
  time: number;
  remoteAddress: string | undefined;
  /** Whether the request asked for a protocol upgrade (WebSocket or SPDY). */
  upgrade: boolean;
  /** Who the authentication hook said this is; undefined when refused. */
  user: FakeKubeUser | undefined;
  /** Why the request was refused: the verifier's error code (`oidc`), or IMPERSONATION_REQUIRED etc. (`impersonation`), or FORBIDDEN (`authorize`). */
  authError?: string;
}

export interface RecordedExec {
  /** exec runs `command`; attach connects to the container's main process (command is empty). */
  subresource: 'exec' | 'attach';
  namespace: string;
  pod: string;
  container: string;
  command: string[];
  tty: boolean;
  stdin: boolean;
  transport: 'websocket' | 'spdy';
  /** The negotiated subprotocol, e.g. v5.channel.k8s.io. */
  protocol: string;
  user: FakeKubeUser | undefined;
  time: number;
  /** Set when the command finished: its exit code (0 on success), or null if the stream broke first. */
  exitCode?: number | null;
}

export interface RecordedPortForward {
  namespace: string;
  pod: string;
  port: number;
  transport: 'websocket' | 'spdy';
  user: FakeKubeUser | undefined;
  time: number;
}

export interface FakeKube {
  /** https://HOST:PORT */
  readonly url: string;
  readonly port: number;
  /** The CA clients should trust for url. */
  readonly caPem: string;
  /** Every request received, in order (also upgrades and refused ones). */
  readonly requests: RecordedRequest[];
  clearRequests(): void;
  /**
   * Resolves with the first recorded request (already received or still to come) that matches;
   * rejects after timeoutMs (default 10 s). A watch or log follow is live once its request is recorded.
   */
  waitForRequest(match: (req: RecordedRequest) => boolean, timeoutMs?: number): Promise<RecordedRequest>;
  /** Every exec started, in order. */
  readonly execs: RecordedExec[];
  /** Every port-forward stream pair opened, in order. */
  readonly portForwards: RecordedPortForward[];
  /** Adds a pod (namespace default unless given) and tells watchers (ADDED). */
  addPod(pod: FakePodInput): PodObject;
  /** Changes a pod and tells watchers (MODIFIED). */
  modifyPod(namespace: string, name: string, patch: PodPatch): PodObject;
  /** Removes a pod, tells watchers (DELETED) and ends its log followers. */
  deletePod(namespace: string, name: string): PodObject;
  getPod(namespace: string, name: string): PodObject | undefined;
  /** Appends a line to a container's log (default: the pod's first container) and pushes it to followers. */
  appendLog(namespace: string, pod: string, line: string, container?: string): void;
  /** Writes a file (and its parent directories) in the pod's filesystem, which exec's cat/ls/test/tar and `kubectl cp` use. */
  writeFile(namespace: string, pod: string, path: string, content: Buffer | string, mode?: number): void;
  /** A regular file's content in the pod's filesystem; undefined when missing (or a directory). */
  readFile(namespace: string, pod: string, path: string): Buffer | undefined;
  /** Port-forwards to the pod's podPort go to 127.0.0.1:localPort instead of the built-in echo. */
  setPortForwardTarget(namespace: string, pod: string, podPort: number, localPort: number): void;
  /** Ends every stream and connection; resolves once every socket is destroyed. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
