/**
 * Test support only (never imported by product code): a tiny OIDC issuer on 127.0.0.1 that serves
 * discovery and a JWKS, counts every request, and can be made to misbehave (another issuer string
 * in discovery, an error status, a held response, a Cache-Control header). It signs tokens with
 * jose's SignJWT, and `handBuiltToken` makes the hostile ones jose would refuse to produce. The kube
 * proxy's tests can use it too.
 */
import { KeyObject, constants, randomBytes, sign as cryptoSign } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import type { Clock } from '../clock.ts';
import type { TokenAlgorithm } from './token.ts';

export interface IssuerKey {
  kid: string;
  alg: TokenAlgorithm;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** As published: public members, kid, alg, use. */
  publicJwk: JWK;
}

export interface TestIssuerOptions {
  /** A path after the origin, e.g. '/realms/dev' (default none). */
  path?: string;
  /** Serve HTTPS with this certificate (for 127.0.0.1). */
  tls?: { certPem: string; keyPem: string };
}

export interface TestIssuer {
  /** The issuer URL (http://127.0.0.1:PORT[path]). */
  readonly issuer: string;
  readonly jwksUri: string;
  readonly requests: { discovery: number; jwks: number; total: number };
  /** The published keys; edit to rotate. */
  keys: IssuerKey[];
  /** What discovery says, over the defaults (`issuer`, `jwks_uri`). */
  discovery: Record<string, unknown>;
  /** Status for JWKS responses (default 200). */
  jwksStatus: number;
  jwksCacheControl: string | undefined;
  /** A JWKS body to serve verbatim instead of the keys. */
  jwksBody: string | undefined;
  /** While set, responses wait for this promise. */
  hold: Promise<void> | undefined;
  resetCounts(): void;
  /** Generates a key pair and publishes its public key. */
  addKey(alg: TokenAlgorithm, kid?: string): Promise<IssuerKey>;
  removeKey(kid: string): void;
  /** A token signed with SignJWT by `key` (default: the first key) with `header` merged over { alg, kid }. */
  sign(payload: JWTPayload, key?: IssuerKey, header?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

const b64 = (value: string | Buffer): string => Buffer.from(value).toString('base64url');

/** A compact JWS from parts given verbatim: objects are JSON-encoded, strings are used as the JSON text. */
export function handBuiltToken(header: object | string, payload: object | string, signature: Buffer | string = Buffer.alloc(64, 7)): string {
  const enc = (part: object | string): string => b64(typeof part === 'string' ? part : JSON.stringify(part));
  return `${enc(header)}.${enc(payload)}.${typeof signature === 'string' ? signature : b64(signature)}`;
}

/** Signs a hand-built header and payload with node:crypto, so the signature is genuine whatever the header says. */
export function signHandBuilt(header: Record<string, unknown>, payload: object | string, privateKey: CryptoKey | KeyObject, alg: TokenAlgorithm): string {
  const signingInput = `${b64(JSON.stringify(header))}.${b64(typeof payload === 'string' ? payload : JSON.stringify(payload))}`;
  const key = privateKey instanceof KeyObject ? privateKey : KeyObject.from(privateKey);
  const data = Buffer.from(signingInput);
  const signature =
    alg === 'ES256'
      ? cryptoSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' })
      : alg === 'PS256'
        ? cryptoSign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
        : alg === 'EdDSA'
          ? cryptoSign(null, data, key)
          : cryptoSign('sha256', data, key);
  return `${signingInput}.${b64(signature)}`;
}

/** A clock tests move by hand. */
export interface FakeClock extends Clock {
  advance(ms: number): void;
}

export function fakeClock(startMs = Date.parse('2026-03-01T12:00:00Z')): FakeClock {
  let t = startMs;
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
  };
}

/** Claims a valid ID token would carry at `nowMs`, with `overrides` merged over them (undefined removes one). */
export function idTokenClaims(issuer: string, audience: string | string[], nowMs: number, overrides: Record<string, unknown> = {}): JWTPayload {
  const now = Math.floor(nowMs / 1000);
  const claims: Record<string, unknown> = { iss: issuer, aud: audience, sub: 'user-1', email: 'ada@example.com', groups: ['eng'], iat: now, exp: now + 600, ...overrides };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return claims;
}

export async function startTestIssuer(options: TestIssuerOptions = {}): Promise<TestIssuer> {
  const path = options.path ?? '';
  // The closure below reads `issuer`; it is created before the server answers anything.
  // eslint-disable-next-line prefer-const
  let issuer: TestIssuer;

  const send = (res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
    res.end(body);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    issuer.requests.total++;
    const pathname = new URL(req.url ?? '/', 'http://x').pathname;
    if (issuer.hold !== undefined) await issuer.hold;
    if (pathname === `${path}/.well-known/openid-configuration`) {
      issuer.requests.discovery++;
      send(res, 200, JSON.stringify({ issuer: issuer.issuer, jwks_uri: issuer.jwksUri, id_token_signing_alg_values_supported: ['RS256', 'ES256'], ...issuer.discovery }));
    } else if (pathname === `${path}/jwks`) {
      issuer.requests.jwks++;
      const body = issuer.jwksBody ?? JSON.stringify({ keys: issuer.keys.map((k) => k.publicJwk) });
      send(res, issuer.jwksStatus, body, issuer.jwksCacheControl === undefined ? {} : { 'cache-control': issuer.jwksCacheControl });
    } else {
      send(res, 404, '{}');
    }
  };
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch(() => res.destroy());
  };
  const server: Server = options.tls === undefined ? createHttpServer(listener) : createHttpsServer({ cert: options.tls.certPem, key: options.tls.keyPem }, listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${(server.address() as AddressInfo).port}`;

  issuer = {
    issuer: `${origin}${path}`,
    jwksUri: `${origin}${path}/jwks`,
    requests: { discovery: 0, jwks: 0, total: 0 },
    keys: [],
    discovery: {},
    jwksStatus: 200,
    jwksCacheControl: undefined,
    jwksBody: undefined,
    hold: undefined,
    resetCounts() {
      Object.assign(issuer.requests, { discovery: 0, jwks: 0, total: 0 });
    },
    async addKey(alg, kid = `key-${randomBytes(6).toString('hex')}`) {
      const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
      const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
      const key: IssuerKey = { kid, alg, privateKey, publicKey, publicJwk };
      issuer.keys.push(key);
      return key;
    },
    removeKey(kid) {
      issuer.keys = issuer.keys.filter((k) => k.kid !== kid);
    },
    async sign(payload, key = issuer.keys[0], header = {}) {
      if (key === undefined) throw new Error('the test issuer has no key; call addKey first');
      return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).sign(key.privateKey);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return issuer;
}
