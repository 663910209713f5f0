/**
 * The kube proxy's HTTPS server and request forwarding (see index.ts for the whole picture).
 *
 * Every request, plain or upgrade, goes through the same steps, each of which can only refuse:
 *
 *   1. the request target parses (request-info.ts) — else 400;
 *   2. the one bearer token (KP-04): exactly one `Authorization: Bearer …`; a token in the query
 *      string (`access_token=`) or in the WebSocket bearer subprotocol is refused with 401, never
 *      used and never forwarded; the token is verified (issuer, audience, expiry, algorithms) and
 *      its claims mapped (prefixes, no `system:` names, KP-10) — else 401;
 *   3. the live state (rules.ts): the user, the device, the policy's kubernetes deny rules — else
 *      401/403 as a Kubernetes Status kubectl prints;
 *   4. the forwarded request carries the client's headers minus every identity and hop-by-hop header
 *      (headers.ts, KP-01) plus the proxy's credential and Impersonate-* headers, checked last.
 *
 * Each request is verified on its own: a second request on a kept-alive connection with another
 * token is that token's request. Backend redirects are passed on (never followed) without a
 * foreign Location, and the proxy's token is scrubbed from answers (KP-12). Answers stream as they
 * come (watch, logs -f): headers are flushed at once, chunks written as they arrive with
 * backpressure, and there is no idle timeout on them. Node's parser refuses smuggling attempts
 * (CL+TE, duplicate Content-Length, obs-fold, bare LF): 400 and the socket closed; a header block
 * past maxHeaderBytes gets 431.
 */
import { createHash } from 'node:crypto';
import { Agent as HttpsAgent, createServer, request as httpsRequest } from 'node:https';
import type { Server } from 'node:https';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { systemClock } from '../lib/clock.ts';
import { CausewayError, UserError } from '../lib/errors.ts';
import { silentLogger } from '../lib/log.ts';
import { createTokenVerifier, mapClaims } from '../lib/oidc/index.ts';
import type { MappedIdentity, TokenVerifier } from '../lib/oidc/index.ts';
import type { KubeEvent } from '../lib/audit/kube-event.ts';
import { kubeRequestEvent, kubeSessionEvent, requestFields, sessionDetails } from './audit.ts';
import type { AuditBase, AuditWho } from './audit.ts';
import { DEVICE_EXTRA_KEY, assertImpersonating, cleanBackendHeaders, cleanClientHeaders, headerValues, impersonationHeaders } from './headers.ts';
import type { Impersonation } from './headers.ts';
import type { KubeProxy, KubeProxyOptions, KubeProxyStats } from './index.ts';
import { LiveRegistry } from './live.ts';
import type { LiveEntry } from './live.ts';
import { parseRequestInfo, splitTarget } from './request-info.ts';
import type { KubeRequestInfo } from './request-info.ts';
import { decide, kubeDecisionContext } from './rules.ts';
import type { KubeCaller, KubeDecisionContext } from './rules.ts';
import { BEARER_SUBPROTOCOL_PREFIX, checkUpgrade, offeredSubprotocols, pipeBoth, responseHead } from './upgrade.ts';

const DEFAULT_MAX_HEADER_BYTES = 32 * 1024;
const VERIFIED_TTL_MS = 30_000;
const VERIFIED_MAX = 4096;
const REASONS: Readonly<Record<number, string>> = { 400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 431: 'BadRequest', 500: 'InternalError', 502: 'InternalError', 503: 'ServiceUnavailable' };
const STATUS_TEXT: Readonly<Record<number, string>> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' };

/** A Kubernetes `Status` (what kubectl prints as `Error from server (Reason): message`). */
export function kubeStatus(code: number, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: REASONS[code] ?? 'InternalError', code };
}

interface Refusal {
  code: 400 | 401 | 403 | 500 | 502 | 503;
  reason: string;
  message: string;
}

interface Admitted {
  caller: KubeCaller;
  identity: MappedIdentity;
  who: AuditWho;
  impersonation: Impersonation;
}

type Admission = { ok: true; admitted: Admitted } | ({ ok: false; who?: AuditWho } & Refusal);

interface Prepared {
  rawPath: string;
  rawQuery: string;
  query: URLSearchParams;
  info: KubeRequestInfo;
}

/** The proxy's token may appear in a body only if the API server echoes it; it never leaves here whole. */
class SecretScrubber {
  readonly #secret: Buffer | undefined;
  #tail: Buffer = Buffer.alloc(0);

  constructor(secret: string | undefined) {
    this.#secret = secret !== undefined && secret.length >= 8 ? Buffer.from(secret) : undefined;
  }

  /** The chunk with the secret masked; `undefined` when the secret straddles chunks (the stream must be cut). */
  scrub(chunk: Buffer): Buffer | undefined {
    const secret = this.#secret;
    if (secret === undefined) return chunk;
    let at = chunk.indexOf(secret);
    while (at !== -1) {
      chunk.fill(0x2a, at, at + secret.length);
      at = chunk.indexOf(secret, at + secret.length);
    }
    const joined = Buffer.concat([this.#tail, chunk.subarray(0, Math.min(chunk.length, secret.length - 1))]);
    if (this.#tail.length > 0 && joined.indexOf(secret) !== -1) return undefined;
    this.#tail = Buffer.from(chunk.subarray(Math.max(0, chunk.length - (secret.length - 1))));
    return chunk;
  }
}

function peer(socket: Socket | Duplex): string {
  const s = socket as Partial<Socket>;
  const addr = s.remoteAddress ?? '';
  return addr.includes(':') ? `[${addr}]:${s.remotePort ?? 0}` : `${addr}:${s.remotePort ?? 0}`;
}

export async function startKubeProxy(o: KubeProxyOptions): Promise<KubeProxy> {
  const proxy = new KubeProxyServer(o);
  await proxy.listen();
  return proxy;
}

class KubeProxyServer implements KubeProxy {
  readonly #o: KubeProxyOptions;
  readonly #clock;
  readonly #logger;
  readonly #verifier: TokenVerifier;
  readonly #server: Server;
  readonly #live = new LiveRegistry();
  readonly #agent: HttpsAgent | HttpAgent;
  readonly #upgradeAgent: HttpsAgent | HttpAgent;
  readonly #backend: URL;
  readonly #basePath: string;
  readonly #name: string;
  readonly #sockets = new Set<Duplex>();
  readonly #verified = new Map<string, { identity: MappedIdentity; userId: string; until: number }>();
  #ctx: KubeDecisionContext | undefined;
  #unsubscribe: (() => void) | undefined;
  #closing: Promise<void> | undefined;
  #port = 0;
  #requests = 0;
  #denied = 0;
  #sessions = 0;
  readonly caPem: string | undefined;

  constructor(o: KubeProxyOptions) {
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
    this.#logger = (o.logger ?? silentLogger()).child({ component: 'kube-proxy' });
    this.#name = o.name ?? o.clusterName;
    this.caPem = o.tls.caPem;
    if (typeof o.clusterName !== 'string' || o.clusterName === '') throw new UserError('KUBE_PROXY_CONFIG', 'kube proxy: a cluster name is required (--cluster-name)');
    let backend: URL;
    try {
      backend = new URL(o.backend.url);
    } catch {
      throw new UserError('KUBE_PROXY_CONFIG', `kube proxy: the backend ${JSON.stringify(o.backend.url)} is not a URL`);
    }
    if (backend.protocol !== 'https:' && !(backend.protocol === 'http:' && o.backend.allowInsecureHttp === true)) {
      throw new UserError('KUBE_PROXY_CONFIG', 'kube proxy: the backend must be https:// (the proxy sends its credentials there)');
    }
    if ((o.backend as { insecureSkipTlsVerify?: unknown }).insecureSkipTlsVerify === true) {
      throw new UserError('KUBE_PROXY_CONFIG', 'kube proxy: insecureSkipTlsVerify is not supported; give the API server CA');
    }
    if (backend.search !== '' || backend.hash !== '' || backend.username !== '' || backend.password !== '') {
      throw new UserError('KUBE_PROXY_CONFIG', 'kube proxy: the backend URL must not have credentials, a query or a fragment');
    }
    this.#backend = backend;
    this.#basePath = backend.pathname.replace(/\/+$/, '');
    // Verifier first: a bad issuer or mapping is a UserError before anything listens.
    mapClaims({ email: 'check@example.invalid', sub: 'x' }, o.claims ?? {});
    this.#verifier = createTokenVerifier({
      issuer: o.issuer,
      audience: o.audience,
      ...(o.algorithms !== undefined ? { algorithms: o.algorithms } : {}),
      ...(o.issuerCaPem !== undefined ? { caPem: o.issuerCaPem } : {}),
      ...(o.fetch !== undefined ? { fetch: o.fetch } : {}),
      ...(o.allowInsecureIssuer === true ? { allowInsecureHttp: true } : {}),
      clock: this.#clock,
    });
    const tlsOptions = {
      ...(o.backend.caPem !== undefined ? { ca: o.backend.caPem } : {}),
      ...(o.backend.clientCert !== undefined ? { cert: o.backend.clientCert.certPem, key: o.backend.clientCert.keyPem } : {}),
      ...(o.backend.tlsServerName !== undefined ? { servername: o.backend.tlsServerName } : {}),
      minVersion: 'TLSv1.2' as const,
      rejectUnauthorized: true,
    };
    const isHttps = backend.protocol === 'https:';
    this.#agent = isHttps ? new HttpsAgent({ ...tlsOptions, keepAlive: true, maxFreeSockets: 64 }) : new HttpAgent({ keepAlive: true, maxFreeSockets: 64 });
    this.#upgradeAgent = isHttps ? new HttpsAgent({ ...tlsOptions, keepAlive: false }) : new HttpAgent({ keepAlive: false });

    this.#server = createServer({
      cert: o.tls.certPem,
      key: o.tls.keyPem,
      minVersion: 'TLSv1.2',
      ALPNProtocols: ['http/1.1'],
      maxHeaderSize: o.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES,
      insecureHTTPParser: false,
      requireHostHeader: false,
      // Watches and logs -f answer for as long as they like; receiving a request still has limits.
      requestTimeout: 300_000,
      headersTimeout: 60_000,
      keepAliveTimeout: 65_000,
      noDelay: true,
    });
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.#onRequest(req, res).catch((err: unknown) => {
        this.#logger.error({ err }, 'kube proxy request failed; this is a bug');
        if (!res.headersSent) this.#sendStatus(res, 500, 'the kube proxy failed on this request; see its log');
        else res.destroy();
      });
    });
    this.#server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#onUpgrade(req, socket, head).catch((err: unknown) => {
        this.#logger.error({ err }, 'kube proxy upgrade failed; this is a bug');
        socket.destroy();
      });
    });
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.#onClientError(err, socket));
    // Every TCP connection, from its first byte (a TLS handshake still under way included), so close()
    // ends them all rather than waiting for a client that connected and said nothing.
    this.#server.on('connection', (socket: Duplex) => {
      if (this.#closing !== undefined) {
        socket.destroy();
        return;
      }
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    this.#server.on('tlsClientError', () => undefined);
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    const host = this.#o.listen.host.includes(':') ? `[${this.#o.listen.host}]` : this.#o.listen.host;
    return `https://${host}:${this.#port}`;
  }

  async listen(): Promise<void> {
    const state = this.#o.state;
    if (state !== undefined) {
      const first = state.current();
      if (first !== undefined) this.#ctx = kubeDecisionContext(first, this.#o.clusterName);
      this.#unsubscribe = state.subscribe((snapshot) => this.#onSnapshot(snapshot));
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new UserError('KUBE_PROXY_LISTEN', `kube proxy: cannot listen on ${this.#o.listen.host}:${this.#o.listen.port} (${err.code ?? err.message}); pick another --listen address`, { cause: err }));
      };
      this.#server.once('error', onError);
      this.#server.listen(this.#o.listen.port, this.#o.listen.host, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    this.#port = (this.#server.address() as AddressInfo).port;
    this.#logger.info({ url: this.url, cluster: this.#o.clusterName, backend: this.#backend.origin }, 'kube proxy listening');
  }

  stats(): KubeProxyStats {
    return { requests: this.#requests, denied: this.#denied, live: this.#live.size, sessions: this.#sessions, cuts: this.#live.cuts, ready: this.#o.state === undefined || this.#ctx !== undefined };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#unsubscribe?.();
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      this.#live.cutAll('the kube proxy is shutting down');
      this.#server.closeAllConnections();
      for (const socket of this.#sockets) socket.destroy();
      this.#verifier.close();
      this.#agent.destroy();
      this.#upgradeAgent.destroy();
      await closed;
    })();
    return this.#closing;
  }

  // ------------------------------------------------------------------------------------------

  #onSnapshot(snapshot: Parameters<NonNullable<KubeProxyOptions['state']>['subscribe']>[0] extends (s: infer S) => void ? S : never): void {
    try {
      this.#ctx = kubeDecisionContext(snapshot, this.#o.clusterName, this.#ctx);
    } catch (err) {
      this.#logger.error({ err }, 'could not compile the new configuration; keeping the previous one');
      return;
    }
    const ctx = this.#ctx;
    const cut = this.#live.recheck((entry) => decide(ctx, entry.caller, entry.info));
    if (cut > 0) this.#logger.info({ cut, version: snapshot.version }, 'cut live kube requests the new configuration denies');
  }

  #auditBase(socket: Duplex): AuditBase {
    return { clusterName: this.#o.clusterName, kubeProxy: this.#name, source: peer(socket) };
  }

  #emit(event: KubeEvent): void {
    try {
      this.#o.events.write(event);
    } catch (err) {
      this.#logger.error({ err }, 'writing a kube audit event failed');
    }
  }

  #prepare(req: IncomingMessage, upgrade: boolean): { ok: true; prepared: Prepared } | ({ ok: false; rawPath: string } & Refusal) {
    const target = splitTarget(req.url ?? '');
    if (target === undefined) return { ok: false, rawPath: '', code: 400, reason: 'bad-request', message: 'the request target must be a path (/…) without a fragment or semicolons in the query' };
    const parsed = parseRequestInfo(req.method ?? 'GET', target.rawPath, target.query, upgrade);
    if (!parsed.ok) return { ok: false, rawPath: target.rawPath, code: 400, reason: 'bad-path', message: parsed.message };
    return { ok: true, prepared: { rawPath: target.rawPath, rawQuery: target.rawQuery, query: target.query, info: parsed.info } };
  }

  /** Steps 2 and 3: the one token, verified and mapped; then the live state's decision. */
  async #admit(req: IncomingMessage, prepared: Prepared): Promise<Admission> {
    const refuse = (code: Refusal['code'], reason: string, message: string, who?: AuditWho): Admission => ({ ok: false, code, reason, message, ...(who !== undefined ? { who } : {}) });
    if (prepared.query.has('access_token')) {
      return refuse(401, 'token-in-query', 'a token in the query string (access_token) is refused; send it only in the Authorization header (kubectl with the causeway exec credential plugin does)');
    }
    if (offeredSubprotocols(req.rawHeaders).some((p) => p.startsWith(BEARER_SUBPROTOCOL_PREFIX))) {
      return refuse(401, 'token-in-subprotocol', 'a token in the WebSocket subprotocol is refused; send it only in the Authorization header');
    }
    const authorizations = headerValues(req.rawHeaders, 'authorization');
    if (authorizations.length === 0) return refuse(401, 'no-token', 'no bearer token: configure kubectl with the causeway exec credential plugin (causeway kube-credential) and run `causeway login`');
    if (authorizations.length > 1) return refuse(401, 'duplicate-authorization', 'more than one Authorization header; send exactly one bearer token');
    const match = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i.exec(authorizations[0]);
    if (match === null) return refuse(401, 'not-bearer', 'the Authorization header must be `Bearer <ID token>`');
    let identity: MappedIdentity;
    let userId: string;
    try {
      ({ identity, userId } = await this.#verifyToken(match[1]));
    } catch (err) {
      const code = err instanceof CausewayError ? err.code : 'TOKEN_INVALID';
      const detail = err instanceof CausewayError ? err.message : 'the token could not be verified';
      if (!(err instanceof CausewayError)) this.#logger.warn({ err }, 'token verification failed unexpectedly');
      const reason = code.startsWith('CLAIM_') ? 'claims-refused' : code.startsWith('ISSUER_') ? 'issuer-unavailable' : 'token-invalid';
      if (reason === 'issuer-unavailable') return refuse(503, reason, `cannot check the token now (${code}): ${detail}; try again shortly`);
      return refuse(401, reason, `the token was refused (${code}): ${detail}; run \`causeway login\` (or check the cluster in your kubeconfig)`);
    }
    const who: AuditWho = { user: identity.username, userId, groups: identity.groups, ...(identity.device !== undefined ? { device: identity.device } : {}) };
    const caller: KubeCaller = { userId, ...(identity.device !== undefined ? { device: identity.device } : {}) };
    if (this.#o.state !== undefined) {
      const ctx = this.#ctx;
      if (ctx === undefined) return refuse(503, 'no-config', 'the kube proxy has no configuration from the Causeway control plane yet; try again shortly', who);
      const verdict = decide(ctx, caller, prepared.info);
      if (!verdict.allow) return refuse(verdict.code, verdict.reason, verdict.message, who);
    }
    const impersonation: Impersonation = {
      user: identity.username,
      groups: identity.groups,
      ...(identity.device !== undefined ? { extra: { [DEVICE_EXTRA_KEY]: [identity.device] } } : {}),
    };
    return { ok: true, admitted: { caller, identity, who, impersonation } };
  }

  /**
   * A verified token's identity, from a small cache: kubectl sends the same token with every request
   * until it expires, and checking a signature each time is most of the proxy's own latency. An entry
   * lives at most VERIFIED_TTL_MS and never past the token's exp; only successes are cached, keyed by
   * the token's SHA-256.
   */
  async #verifyToken(token: string): Promise<{ identity: MappedIdentity; userId: string }> {
    const now = this.#clock.now();
    const key = createHash('sha256').update(token).digest('base64url');
    const hit = this.#verified.get(key);
    if (hit !== undefined && hit.until > now) return hit;
    if (hit !== undefined) this.#verified.delete(key);
    const verified = await this.#verifier.verify(token);
    const identity = mapClaims(verified.claims, this.#o.claims ?? {});
    const entry = { identity, userId: verified.subject, until: Math.min(now + VERIFIED_TTL_MS, verified.expiresAt.getTime()) };
    if (this.#verified.size >= VERIFIED_MAX) {
      for (const [k, v] of this.#verified) if (v.until <= now) this.#verified.delete(k);
      if (this.#verified.size >= VERIFIED_MAX) this.#verified.delete(this.#verified.keys().next().value as string);
    }
    this.#verified.set(key, entry);
    return entry;
  }

  #backendToken(): string | undefined {
    try {
      const token = this.#o.backend.token?.();
      return token === undefined || token === '' ? undefined : token;
    } catch (err) {
      this.#logger.error({ err }, 'reading the kube proxy\'s own token failed');
      return undefined;
    }
  }

  /** Step 4: the headers that leave; throws (never sends) when impersonation would be missing. */
  #outgoingHeaders(req: IncomingMessage, admitted: Admitted, token: string | undefined, extra: Array<[string, string]>, keepContentLength: boolean): string[] {
    const headers: Array<[string, string]> = [...cleanClientHeaders(req.rawHeaders, { keepContentLength }), ['Host', this.#backend.host], ...extra, ...impersonationHeaders(admitted.impersonation, token)];
    assertImpersonating(headers, admitted.impersonation);
    return headers.flat();
  }

  #sendStatus(res: ServerResponse, code: number, message: string, close = false): void {
    const body = JSON.stringify(kubeStatus(code, message));
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...(close ? { Connection: 'close' } : {}) });
    res.end(body);
  }

  #writeRawStatus(socket: Duplex, code: number, message: string): void {
    const body = JSON.stringify(kubeStatus(code, message));
    if (socket.writable) socket.end(responseHead(code, STATUS_TEXT[code] ?? 'Error', [['Content-Type', 'application/json'], ['Content-Length', String(Buffer.byteLength(body))], ['Connection', 'close']]) + body);
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  #onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (err.code !== 'ECONNRESET' && socket.writable && inFlight?.headersSent !== true) {
      const body = JSON.stringify(kubeStatus(code, code === 431 ? 'the request headers are too large' : 'malformed HTTP request'));
      socket.end(responseHead(code, STATUS_TEXT[code] ?? 'Bad Request', [['Content-Type', 'application/json'], ['Content-Length', String(Buffer.byteLength(body))], ['Connection', 'close']]) + body);
    }
    socket.destroy();
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = this.#clock.now();
    this.#requests++;
    const base = this.#auditBase(req.socket);
    const method = req.method ?? 'GET';
    const deny = (code: number, reason: string, message: string, rawPath: string, info: KubeRequestInfo | undefined, who?: AuditWho, close = false): void => {
      this.#denied++;
      this.#sendStatus(res, code, message, close);
      if (close) res.on('finish', () => req.socket.destroy());
      this.#emit(kubeRequestEvent(base, who, requestFields(info, rawPath, method), { code, latencyMs: this.#clock.now() - started, decision: 'deny', reason, time: started }));
    };
    const p = this.#prepare(req, false);
    if (!p.ok) return deny(p.code, p.reason, p.message, p.rawPath, undefined, undefined, true);
    const { prepared } = p;
    if (headerValues(req.rawHeaders, 'upgrade').length > 0) {
      return deny(400, 'upgrade-refused', 'this protocol upgrade is not allowed; only websocket and SPDY/3.1 to pods/exec, attach and portforward are', prepared.rawPath, prepared.info, undefined, true);
    }
    const admission = await this.#admit(req, prepared);
    if (!admission.ok) return deny(admission.code, admission.reason, admission.message, prepared.rawPath, prepared.info, admission.who);
    const { admitted } = admission;
    const token = this.#backendToken();
    let headers: string[];
    try {
      headers = this.#outgoingHeaders(req, admitted, token, [], true);
    } catch (err) {
      this.#logger.error({ err }, 'refused to forward a request without impersonation');
      return deny(500, 'no-impersonation', 'the kube proxy refused to forward this request without impersonation', prepared.rawPath, prepared.info, admitted.who);
    }
    const fields = requestFields(prepared.info, prepared.rawPath, method);
    const scrubber = new SecretScrubber(token);
    let audited = false;
    const backend: { req?: ClientRequest; done?: boolean } = {};
    const entry: LiveEntry = {
      caller: admitted.caller,
      info: prepared.info,
      cut: (verdict) => {
        this.#logger.info({ user: admitted.who.user, path: prepared.info.path, reason: verdict.reason }, 'cut a live kube request');
        this.#emit(kubeRequestEvent(base, admitted.who, fields, { code: 'code' in verdict ? verdict.code : 503, latencyMs: this.#clock.now() - started, decision: 'deny', reason: verdict.reason, time: this.#clock.now() }));
        backend.req?.destroy();
        if (!res.headersSent) this.#sendStatus(res, 'code' in verdict ? verdict.code : 503, verdict.message, true);
        res.destroy();
        req.socket.destroy();
      },
    };
    const removeLive = this.#live.add(entry);
    const audit = (code: number, decision: 'allow' | 'deny', reason?: string): void => {
      if (audited) return;
      audited = true;
      this.#emit(kubeRequestEvent(base, admitted.who, fields, { code, latencyMs: this.#clock.now() - started, decision, ...(reason !== undefined ? { reason } : {}), time: started }));
    };
    res.on('close', () => {
      removeLive();
      // Only an unfinished exchange is torn down; a finished one's connection goes back to the pool.
      if (!backend.done) backend.req?.destroy();
      if (!audited) audit(499, 'allow', 'client-gone');
    });

    const path = `${this.#basePath}${prepared.rawPath}${prepared.rawQuery !== '' ? `?${prepared.rawQuery}` : ''}`;
    // A request without a body is sent again once when a kept-alive connection turned out dead
    // (the API server or a load balancer closed it while idle); nothing can have been done twice.
    const bodyless = (method === 'GET' || method === 'HEAD') && headerValues(req.rawHeaders, 'content-length').every((v) => v.trim() === '0') && headerValues(req.rawHeaders, 'transfer-encoding').length === 0;
    const send = (attempt: number): void => {
      const outgoing = this.#backendRequest(method, path, headers, this.#agent);
      backend.req = outgoing;
      outgoing.on('error', (err: NodeJS.ErrnoException) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (res.destroyed) return;
        if (attempt === 0 && bodyless && outgoing.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
          send(1);
          return;
        }
        this.#logger.warn({ err: err.code ?? err.message }, 'the Kubernetes API server could not be reached');
        audit(502, 'allow', 'backend-unreachable');
        this.#sendStatus(res, 502, `the kube proxy could not reach the Kubernetes API server (${err.code ?? 'error'}); try again, or ask an admin to check the proxy's backend`);
      });
      outgoing.on('response', (backendRes: IncomingMessage) => {
        const status = backendRes.statusCode ?? 502;
        const out = cleanBackendHeaders(backendRes.rawHeaders, token !== undefined ? [token] : []);
        audit(status, 'allow');
        if (res.destroyed) {
          backendRes.destroy();
          return;
        }
        res.writeHead(status, backendRes.statusMessage, out.flat() as unknown as OutgoingHttpHeaders);
        res.flushHeaders();
        backendRes.on('data', (chunk: Buffer) => {
          const clean = scrubber.scrub(chunk);
          if (clean === undefined) {
            this.#logger.error('the API server echoed the kube proxy\'s token across chunks; the answer was cut');
            backendRes.destroy();
            res.destroy();
            return;
          }
          if (!res.write(clean)) backendRes.pause();
        });
        res.on('drain', () => backendRes.resume());
        backendRes.on('end', () => {
          backend.done = true;
          res.end();
        });
        backendRes.on('error', () => res.destroy());
        backendRes.on('aborted', () => res.destroy());
      });
      if (bodyless) outgoing.end();
      else req.pipe(outgoing);
    };
    req.on('error', () => backend.req?.destroy());
    send(0);
  }

  #backendRequest(method: string, path: string, headers: string[], agent: HttpsAgent | HttpAgent): ClientRequest {
    const requestFn = this.#backend.protocol === 'https:' ? httpsRequest : httpRequest;
    return requestFn({
      protocol: this.#backend.protocol,
      hostname: this.#backend.hostname.replace(/^\[|\]$/g, ''),
      port: this.#backend.port === '' ? (this.#backend.protocol === 'https:' ? 443 : 80) : Number(this.#backend.port),
      method,
      path,
      // Header strings go out as latin1: send a UTF-8 name (a username with ü) as its UTF-8 bytes, as Go's clients do.
      headers: headers.map((h) => Buffer.from(h, 'utf8').toString('latin1')) as unknown as OutgoingHttpHeaders,
      agent,
    });
  }

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.pause();
    const started = this.#clock.now();
    this.#requests++;
    const base = this.#auditBase(socket);
    const method = req.method ?? 'GET';
    socket.on('error', () => socket.destroy());
    const deny = (code: number, reason: string, message: string, rawPath: string, info: KubeRequestInfo | undefined, who?: AuditWho): void => {
      this.#denied++;
      this.#writeRawStatus(socket, code, message);
      this.#emit(kubeRequestEvent(base, who, requestFields(info, rawPath, method), { code, latencyMs: this.#clock.now() - started, decision: 'deny', reason, time: started }));
    };
    const p = this.#prepare(req, true);
    if (!p.ok) return deny(p.code, p.reason, p.message, p.rawPath, undefined);
    const { prepared } = p;
    // KP-04 before anything else, so a token in the subprotocol is always the same 401.
    if (offeredSubprotocols(req.rawHeaders).some((sp) => sp.startsWith(BEARER_SUBPROTOCOL_PREFIX))) {
      return deny(401, 'token-in-subprotocol', 'a token in the WebSocket subprotocol is refused; send it only in the Authorization header', prepared.rawPath, prepared.info);
    }
    const check = checkUpgrade(req, prepared.info);
    if (!check.ok) return deny(400, 'upgrade-refused', check.message, prepared.rawPath, prepared.info);
    const admission = await this.#admit(req, prepared);
    if (!admission.ok) return deny(admission.code, admission.reason, admission.message, prepared.rawPath, prepared.info, admission.who);
    const { admitted } = admission;
    if (socket.destroyed) return;
    const token = this.#backendToken();
    let headers: string[];
    try {
      // kubectl's SPDY upgrade is a POST: without an explicit empty body Node would frame one as chunked
      // and its closing `0\r\n\r\n` would be read as the first bytes of the upgraded stream.
      const framing: Array<[string, string]> = method.toUpperCase() === 'GET' ? [] : [['Content-Length', '0']];
      headers = this.#outgoingHeaders(req, admitted, token, [['Connection', 'Upgrade'], ['Upgrade', check.upgrade], ...framing], false);
    } catch (err) {
      this.#logger.error({ err }, 'refused to forward an upgrade without impersonation');
      return deny(500, 'no-impersonation', 'the kube proxy refused to forward this request without impersonation', prepared.rawPath, prepared.info, admitted.who);
    }
    const fields = requestFields(prepared.info, prepared.rawPath, method);
    const details = sessionDetails(prepared.query, prepared.info.subresource);
    let backendSocket: Duplex | undefined;
    let sessionEnded = false;
    let cutReason: string | undefined;
    const path = `${this.#basePath}${prepared.rawPath}${prepared.rawQuery !== '' ? `?${prepared.rawQuery}` : ''}`;
    const outgoing = this.#backendRequest(method, path, headers, this.#upgradeAgent);
    const removeLive = this.#live.add({
      caller: admitted.caller,
      info: prepared.info,
      cut: (verdict) => {
        cutReason = verdict.reason;
        this.#logger.info({ user: admitted.who.user, path: prepared.info.path, reason: verdict.reason }, 'cut a live kube session');
        this.#emit(kubeRequestEvent(base, admitted.who, fields, { code: 'code' in verdict ? verdict.code : 503, latencyMs: this.#clock.now() - started, decision: 'deny', reason: verdict.reason, time: this.#clock.now() }));
        outgoing.destroy();
        backendSocket?.destroy();
        socket.destroy();
      },
    });
    socket.on('close', () => {
      removeLive();
      outgoing.destroy();
    });
    outgoing.on('error', (err: NodeJS.ErrnoException) => {
      if (backendSocket !== undefined || socket.destroyed) return;
      removeLive();
      this.#emit(kubeRequestEvent(base, admitted.who, fields, { code: 502, latencyMs: this.#clock.now() - started, decision: 'allow', reason: 'backend-unreachable', time: started }));
      this.#writeRawStatus(socket, 502, `the kube proxy could not reach the Kubernetes API server (${err.code ?? 'error'}); try again, or ask an admin to check the proxy's backend`);
    });
    // Refused (KP-05): relay the answer, then close the client socket; its later bytes are never read.
    outgoing.on('response', (backendRes: IncomingMessage) => {
      const status = backendRes.statusCode ?? 502;
      removeLive();
      this.#emit(kubeRequestEvent(base, admitted.who, fields, { code: status, latencyMs: this.#clock.now() - started, decision: 'allow', reason: 'upgrade-refused-by-api-server', time: started }));
      const out = cleanBackendHeaders(backendRes.rawHeaders, token !== undefined ? [token] : []).filter(([n]) => !['content-length', 'connection'].includes(n.toLowerCase()));
      const scrubber = new SecretScrubber(token);
      const chunks: Buffer[] = [];
      let size = 0;
      backendRes.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= 64 * 1024) chunks.push(chunk);
        else backendRes.destroy();
      });
      const finish = (): void => {
        const body = scrubber.scrub(Buffer.concat(chunks)) ?? Buffer.alloc(0);
        if (!socket.destroyed && socket.writable) {
          socket.write(responseHead(status, backendRes.statusMessage ?? '', [...out, ['Content-Length', String(body.length)], ['Connection', 'close']]));
          socket.end(body);
        }
        setTimeout(() => socket.destroy(), 1000).unref();
            outgoing.destroy();
      };
      backendRes.on('end', finish);
      backendRes.on('error', finish);
      backendRes.on('aborted', finish);
    });
    outgoing.on('upgrade', (backendRes: IncomingMessage, upstream: Duplex, upstreamHead: Buffer) => {
      backendSocket = upstream;
      if (socket.destroyed || cutReason !== undefined) {
        upstream.destroy();
        return;
      }
      const answered = headerValues(backendRes.rawHeaders, 'upgrade').map((v) => v.toLowerCase());
      if (backendRes.statusCode !== 101 || answered.length !== 1 || answered[0] !== check.upgrade.toLowerCase()) {
        upstream.destroy();
        removeLive();
        return deny(502, 'bad-upgrade-answer', 'the Kubernetes API server answered the upgrade with another protocol', prepared.rawPath, prepared.info, admitted.who);
      }
      this.#sessions++;
      this.#emit(kubeRequestEvent(base, admitted.who, fields, { code: 101, latencyMs: this.#clock.now() - started, decision: 'allow', time: started }));
      const out = cleanBackendHeaders(backendRes.rawHeaders, token !== undefined ? [token] : [], { keepUpgrade: true });
      socket.write(responseHead(101, backendRes.statusMessage ?? 'Switching Protocols', out));
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstream.write(head);
      const sessionStarted = this.#clock.now();
      pipeBoth(socket, upstream, (stats) => {
        if (sessionEnded) return;
        sessionEnded = true;
        this.#sessions--;
        removeLive();
        this.#emit(kubeSessionEvent(base, admitted.who, fields, details, {
          startedAt: sessionStarted,
          endedAt: this.#clock.now(),
          transport: check.transport,
          bytesUp: stats.bytesUp + head.length,
          bytesDown: stats.bytesDown + upstreamHead.length,
          decision: cutReason === undefined ? 'allow' : 'deny',
          ...(cutReason !== undefined ? { reason: cutReason } : {}),
        }));
      });
    });
    outgoing.end();
  }
}
