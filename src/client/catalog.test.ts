import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UserError, errorCode } from '../lib/errors.ts';
import type { FetchLike, Session } from '../lib/session/index.ts';
import { fetchCatalog, findEntry, parseCatalog, proxyInputFor } from './catalog.ts';
import type { CatalogContext, CatalogEntry } from './catalog.ts';
import { proxyModeFor, targetRuleFor } from './proxy.ts';
import type { Target } from '../lib/net/target.ts';

function dns(host: string, port: number): Target {
  return { kind: 'dns', host, port };
}

const SERVER = 'https://cp.example.com:8440';

function raw(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'prod-k8s',
    description: 'Production',
    type: 'kubernetes',
    domain: 'mykube.corp.example.com',
    port: 443,
    autorun: false,
    client: { listenPort: 8081, allowUserOverride: true },
    accessTiers: [{ name: 'edge-1', address: 'edge.example.com:8443' }],
    kubernetes: { clusterName: 'prod', caPublicKey: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n', authentication: 'oidc' },
    proxy: { mode: 'chain' },
    access: { allowed: false, mode: 'enforcing', reasons: ['trust-too-low'], explanation: 'denied: device trust Low, this service needs Medium (firewall off)', hints: ['needs:Medium', 'has:Low', 'trust:firewall-off'] },
    ...overrides,
  };
}

function session(): Session {
  return { server: SERVER, accessToken: 'access-token-1', caPem: 'CA' } as unknown as Session;
}

function context(answer: { status: number; body: unknown } | Error, state: { id: string; server: string } | null = { id: 'dev-1', server: SERVER }): CatalogContext & { calls: Array<{ url: string; headers: Record<string, string>; caPem: string | undefined }> } {
  const calls: Array<{ url: string; headers: Record<string, string>; caPem: string | undefined }> = [];
  return {
    calls,
    session: () => Promise.resolve(session()),
    fetchFor: (caPem): FetchLike => (url, init) => {
      calls.push({ url: String(url), headers: init?.headers as Record<string, string>, caPem });
      if (answer instanceof Error) return Promise.reject(answer);
      return Promise.resolve(new Response(typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body), { status: answer.status }));
    },
    files: { readState: () => Promise.resolve(state ?? undefined) },
  };
}

void test('fetchCatalog asks for this device with the session\'s bearer token over a fetch trusting the session\'s CA', async () => {
  const ctx = context({ status: 200, body: { services: [raw()] } });
  const entries = await fetchCatalog(ctx);
  assert.equal(entries.length, 1);
  assert.equal(ctx.calls[0]?.url, `${SERVER}/api/v1/me/services?device=dev-1`);
  assert.equal(ctx.calls[0]?.headers.authorization, 'Bearer access-token-1');
  assert.equal(ctx.calls[0]?.caPem, 'CA');
  assert.deepEqual(entries[0]?.access.hints, ['needs:Medium', 'has:Low', 'trust:firewall-off']);
  assert.equal(entries[0]?.description, 'Production');
});

void test('fetchCatalog: no device here, or one registered at another server, says to log in; nothing is fetched', async () => {
  for (const state of [null, { id: 'dev-1', server: 'https://other.example.com' }]) {
    const ctx = context({ status: 200, body: { services: [] } }, state);
    await assert.rejects(fetchCatalog(ctx), (err: unknown) => err instanceof UserError && err.code === 'DEVICE_NOT_REGISTERED' && /causeway login/.test(err.message));
    assert.equal(ctx.calls.length, 0);
  }
});

void test('fetchCatalog maps the server\'s answers: 401 not logged in, 404 device unknown, 403 refused, 500 retryable', async () => {
  await assert.rejects(fetchCatalog(context({ status: 401, body: {} })), (err: unknown) => errorCode(err) === 'NOT_LOGGED_IN');
  await assert.rejects(fetchCatalog(context({ status: 404, body: {} })), (err: unknown) => errorCode(err) === 'DEVICE_NOT_REGISTERED');
  await assert.rejects(fetchCatalog(context({ status: 403, body: { error: { code: 'SESSION_REQUIRED', message: 'sessions only' } } })), (err: unknown) => err instanceof UserError && err.code === 'SESSION_REQUIRED');
  await assert.rejects(fetchCatalog(context({ status: 500, body: 'oops' })), (err: unknown) => errorCode(err) === 'HTTP_500');
  await assert.rejects(fetchCatalog(context(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))), (err: unknown) => errorCode(err) === 'SERVER_UNREACHABLE');
});

void test('parseCatalog refuses malformed answers with CATALOG_INVALID naming the entry', () => {
  for (const [body, pattern] of [
    [{}, /no services list/],
    [{ services: ['x'] }, /services\[0\] is not an object/],
    [{ services: [raw({ type: 'udp' })] }, /service "prod-k8s": type is not kubernetes or tcp/],
    [{ services: [raw({ port: 70000 })] }, /port is not a port/],
    [{ services: [raw({ client: { listenPort: 0 } })] }, /client\.listenPort is not a port/],
    [{ services: [raw({ kubernetes: null })] }, /a kubernetes service without its kubernetes settings/],
    [{ services: [raw({ accessTiers: [{ name: 'a' }] })] }, /accessTiers\[0\]\.address is not a string/],
    [{ services: [raw({ name: '' })] }, /services\[0\]\.name is not a string/],
    [{ services: [raw({ domain: 'evil.example.com/x' })] }, /domain is not a DNS name/],
    [{ services: [raw({ domain: 'user@evil.example.com' })] }, /domain is not a DNS name/],
    [{ services: [raw({ domain: 'evil.example.com:444' })] }, /domain is not a DNS name/],
    [{ services: [raw({ kubernetes: { clusterName: '--help', caPublicKey: 'x' } })] }, /clusterName is not a kubeconfig cluster name/],
  ] as const) {
    assert.throws(() => parseCatalog(body), (err: unknown) => errorCode(err) === 'CATALOG_INVALID' && pattern.test((err as Error).message), JSON.stringify(body));
  }
});

void test('parseCatalog keeps terminal escapes out of what it prints later, and reads unknown access values as denied', () => {
  const [entry] = parseCatalog({ services: [raw({ description: 'evil\u001b[2J', access: { allowed: 'yes', reasons: ['x', 3], explanation: 'a\u0007b' } })] });
  assert.equal(entry?.description, 'evil?[2J');
  assert.equal(entry?.access.allowed, false, 'only true allows');
  assert.deepEqual(entry?.access.reasons, ['x']);
  assert.equal(entry?.access.explanation, 'a?b');
});

function entry(overrides: Record<string, unknown>): CatalogEntry {
  const [parsed] = parseCatalog({ services: [raw(overrides)] });
  assert.ok(parsed !== undefined);
  return parsed;
}

void test('proxyInputFor: a Kubernetes service is a CHAIN proxy accepting exactly domain:port, through the first access tier', () => {
  const { service, accessTierAddress } = proxyInputFor(entry({ accessTiers: [{ name: 'edge-1', address: 'edge-1.example.com:8443' }, { name: 'edge-2', address: 'edge-2.example.com:8443' }] }));
  assert.equal(accessTierAddress, 'edge-1.example.com:8443');
  assert.equal(proxyModeFor(service), 'chain');
  const rule = targetRuleFor(service);
  assert.ok(rule.accepts(dns('mykube.corp.example.com', 443)));
  assert.equal(rule.accepts(dns('other.example.com', 443)), false);
  assert.equal(service.spec.client.listenPort, 8081);
  assert.equal(service.spec.kubernetes?.clusterName, 'prod');
});

void test('proxyInputFor: a fixed-target TCP service is a TCP proxy; an httpConnect one a CHAIN proxy with its allow patterns', () => {
  const tcp = proxyInputFor(entry({ name: 'db', type: 'tcp', kubernetes: null, port: 5432, proxy: { mode: 'tcp' } }));
  assert.equal(proxyModeFor(tcp.service), 'tcp');
  const web = proxyInputFor(entry({ name: 'web', type: 'tcp', kubernetes: null, port: 3128, proxy: { mode: 'chain', allowPatterns: [{ hostnames: ['*.internal'], ports: [443] }] } }));
  assert.equal(proxyModeFor(web.service), 'chain');
  const rule = targetRuleFor(web.service);
  assert.ok(rule.accepts(dns('app.internal', 443)));
  assert.equal(rule.accepts(dns('app.internal', 22)), false);
  const none = proxyInputFor(entry({ name: 'web', type: 'tcp', kubernetes: null, proxy: { mode: 'chain' } }));
  assert.equal(targetRuleFor(none.service).accepts(dns('app.internal', 443)), false, 'no patterns: nothing is accepted');
});

void test('proxyInputFor: a service without access tiers cannot be proxied', () => {
  assert.throws(() => proxyInputFor(entry({ accessTiers: [] })), (err: unknown) => errorCode(err) === 'NO_ACCESS_TIER');
});

void test('findEntry names the known services when the name is unknown', () => {
  const entries = [entry({ name: 'b' }), entry({ name: 'a' })];
  assert.equal(findEntry(entries, 'a').name, 'a');
  assert.throws(() => findEntry(entries, 'zz\u001b'), (err: unknown) => errorCode(err) === 'UNKNOWN_SERVICE' && /No service named "zz\?" in your catalog\. Known services: a, b\./.test((err as Error).message));
});
