import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../lib/log.ts';
import type { Session } from '../lib/session/index.ts';
import { errorCode } from '../lib/errors.ts';
import { agentRequest, agentStatus } from './agent-client.ts';
import type { AgentConnectResult } from './agent-client.ts';
import { AGENT_PID_FILE, startAgent } from './agent.ts';
import type { Agent, AgentOptions, AgentServices, Intervals } from './agent.ts';
import type { CatalogEntry } from './catalog.ts';
import { DeviceFiles } from './device-files.ts';
import type { Timers } from './trust-renewal.ts';
import { freePort } from '../../test/kit/ports.ts';

const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

function entry(name: string, over: Partial<CatalogEntry> = {}): CatalogEntry {
  return {
    name,
    type: 'kubernetes',
    domain: `${name}.corp.example.com`,
    port: 443,
    autorun: false,
    client: { listenPort: 8081, allowUserOverride: true },
    accessTiers: [{ name: 'edge-1', address: '127.0.0.1:1' }],
    kubernetes: { clusterName: name.replace(/-k8s$/, ''), caPublicKey: CA, authentication: 'oidc' },
    proxy: { mode: 'chain' },
    access: { allowed: true, mode: 'enforcing', reasons: [], explanation: '', hints: [] },
    ...over,
  };
}

/** Intervals the test fires by hand. */
function manualIntervals(): Intervals & { fire(ms: number): void; count(): number } {
  const handles = new Map<number, { fn: () => void; ms: number }>();
  let next = 1;
  return {
    setInterval: (fn, ms) => {
      handles.set(next, { fn, ms });
      return next++;
    },
    clearInterval: (h) => {
      handles.delete(h as number);
    },
    fire: (ms) => {
      for (const h of handles.values()) if (h.ms === ms) h.fn();
    },
    count: () => handles.size,
  };
}

const neverTimers: Timers = { setTimeout: () => 0, clearTimeout: () => undefined };

const SESSION: Session = {
  version: 1,
  server: 'https://cp.example.com',
  issuer: 'https://cp.example.com',
  clientId: 'causeway-cli',
  tokenEndpoint: 'https://cp.example.com/oauth/token',
  accessToken: 'a',
  accessTokenExpiresAt: Date.now() + 3_600_000,
  user: { id: 'u1', name: 'alice', email: 'alice@example.com', groups: ['eng'] },
  kubeTokens: {},
  loggedInAt: new Date().toISOString(),
};

interface Harness {
  home: string;
  agent: Agent;
  intervals: ReturnType<typeof manualIntervals>;
  catalog: CatalogEntry[];
  fetches: () => number;
  kubeconfigWrites: Array<Array<{ name: string; listenPort: number }>>;
  session: { current: Session | undefined };
  clock: { now: () => number; advance(ms: number): void };
}

async function tempHome(t: TestContext): Promise<string> {
  // Short: a unix socket path has a length limit.
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cw-ag-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'h');
}

async function harness(t: TestContext, o: { catalog?: CatalogEntry[]; loggedIn?: boolean; agent?: Partial<AgentOptions>; home?: string } = {}): Promise<Harness> {
  const home = o.home ?? (await tempHome(t));
  const intervals = manualIntervals();
  const catalog = o.catalog ?? [];
  let fetches = 0;
  const kubeconfigWrites: Harness['kubeconfigWrites'] = [];
  const session = { current: o.loggedIn === false ? undefined : SESSION };
  let now = Date.parse('2026-11-27T10:00:00Z');
  const clock = { now: () => now, advance: (ms: number) => void (now += ms) };
  const files = new DeviceFiles({ home });
  const agent = await startAgent({
    home,
    logger: silentLogger(),
    clock,
    ctx: {
      files,
      session: () => Promise.reject(Object.assign(new Error('offline in this test'), { code: 'OFFLINE' })),
      fetchFor: () => () => Promise.reject(new Error('offline in this test')),
      clock,
      facts: () => Promise.resolve({ platform: 'linux', osVersion: '1' }),
      collect: () => Promise.resolve({ factors: {}, problems: [] }),
    },
    readSession: () => Promise.resolve(session.current),
    trust: () => {
      throw new Error('no trust material in this test');
    },
    fetchCatalog: () => {
      fetches++;
      return Promise.resolve(structuredClone(catalog));
    },
    writeKubeconfig: (entries) => {
      kubeconfigWrites.push(entries.map((e) => ({ name: e.entry.name, listenPort: e.listenPort })));
      return Promise.resolve({ file: path.join(home, 'kubeconfig'), contexts: entries.map((e) => e.entry.kubernetes?.clusterName ?? e.entry.name) });
    },
    proxyHosts: ['127.0.0.1'],
    networkInterfaces: () => ({}),
    intervals,
    timers: neverTimers,
    wakeCheckMs: 5_000,
    networkPollMs: 10_000,
    catalogRefreshMs: 300_000,
    ...o.agent,
  });
  t.after(() => agent.close());
  return { home, agent, intervals, catalog, fetches: () => fetches, kubeconfigWrites, session, clock };
}

/** A raw request over the agent socket, with the headers given (and nothing else added). */
function raw(socketPath: string, method: string, urlPath: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

void describe('the agent socket is the user\'s alone (LP-01)', () => {
  void test('LP-01 the home is 0700, the socket 0600, and agent.pid marks the one agent', async (t) => {
    const h = await harness(t);
    assert.equal((await stat(h.home)).mode & 0o777, 0o700);
    const sock = await stat(h.agent.socketPath);
    assert.ok(sock.isSocket());
    assert.equal(sock.mode & 0o777, 0o600);
    assert.match(await readFile(path.join(h.home, AGENT_PID_FILE), 'utf8'), new RegExp(`^${process.pid} `));
  });

  void test('LP-01 an agent refuses a home another user could write (group- or world-writable)', async (t) => {
    const home = await tempHome(t);
    await mkdir(home, { recursive: true });
    await chmod(home, 0o777);
    await assert.rejects(harness(t, { home }), (err: unknown) => errorCode(err) === 'AGENT_HOME_UNSAFE');
    assert.equal(existsSync(path.join(home, 'agent.sock')), false, 'no socket was made');
  });

  void test('LP-01 a request without X-Causeway-Agent, or with a browser Origin, is refused', async (t) => {
    const h = await harness(t);
    const none = await raw(h.agent.socketPath, 'GET', '/v1/status', {});
    assert.equal(none.status, 403);
    assert.match(none.body, /AGENT_HEADER_MISSING/);
    const wrong = await raw(h.agent.socketPath, 'POST', '/v1/shutdown', { 'x-causeway-agent': 'yes' });
    assert.equal(wrong.status, 403);
    const browser = await raw(h.agent.socketPath, 'POST', '/v1/shutdown', { 'x-causeway-agent': '1', origin: 'https://evil.example' });
    assert.equal(browser.status, 403);
    assert.match(browser.body, /AGENT_ORIGIN_REFUSED/);
    // Still running: none of them shut it down.
    assert.notEqual(await agentStatus(h.home), null);
  });

  void test('a second agent on the same home stops with AGENT_ALREADY_RUNNING; a pid file left by a dead agent is taken over', async (t) => {
    const h = await harness(t);
    await assert.rejects(harness(t, { home: h.home }), (err: unknown) => errorCode(err) === 'AGENT_ALREADY_RUNNING');
    assert.notEqual(await agentStatus(h.home), null, 'the first agent still answers');
    await h.agent.close();
    assert.equal(existsSync(path.join(h.home, AGENT_PID_FILE)), false);
    assert.equal(existsSync(h.agent.socketPath), false);
    // A crashed agent: its pid file names a process that is gone, its socket file is still there.
    await writeFile(path.join(h.home, AGENT_PID_FILE), '2147483646 deadbeef\n', { mode: 0o600 });
    await writeFile(h.agent.socketPath, '');
    const again = await harness(t, { home: h.home });
    assert.notEqual(await agentStatus(again.home), null);
  });

  void test('agentStatus is null when no agent runs; agentRequest says how to start one', async (t) => {
    const home = await tempHome(t);
    assert.equal(await agentStatus(home), null);
    await assert.rejects(agentRequest(home, 'POST', '/v1/connect', { service: 'x' }), (err: unknown) => errorCode(err) === 'AGENT_NOT_RUNNING' && /causeway connect/.test((err as Error).message));
  });
});

void describe('connect, disconnect and status', () => {
  void test('connect starts the local proxy on the listen port and writes the kubeconfig with every Kubernetes service (the connected one first); disconnect frees the port', async (t) => {
    const port = await freePort();
    const other = await freePort();
    const h = await harness(t, { catalog: [entry('prod-k8s', { client: { listenPort: port, allowUserOverride: false } }), entry('stage-k8s', { client: { listenPort: other, allowUserOverride: true } }), entry('db', { type: 'tcp', kubernetes: null, proxy: { mode: 'tcp' } })] });
    const result = await agentRequest<AgentConnectResult>(h.home, 'POST', '/v1/connect', { service: 'prod-k8s' });
    assert.equal(result.connection.port, port);
    assert.equal(result.connection.kubeContext, 'prod');
    assert.equal(await refused(port), false, 'the proxy listens');
    assert.deepEqual(h.kubeconfigWrites, [[{ name: 'prod-k8s', listenPort: port }, { name: 'stage-k8s', listenPort: other }]]);

    const again = await agentRequest<AgentConnectResult>(h.home, 'POST', '/v1/connect', { service: 'prod-k8s' });
    assert.equal(again.alreadyConnected, true);
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 'prod-k8s', port: port + 1 }), (err: unknown) => errorCode(err) === 'ALREADY_CONNECTED');

    const status = await agentStatus(h.home);
    assert.ok(status !== null);
    assert.deepEqual(status.connections.map((c) => [c.service, c.port, c.openConnections, c.bytesUp]), [['prod-k8s', port, 0, 0]]);
    assert.equal(status.user?.name, 'alice');

    const listed = await agentRequest<AgentServices>(h.home, 'GET', '/v1/services');
    assert.deepEqual(listed.services.map((s) => [s.name, s.connected, s.localPort ?? null]), [['prod-k8s', true, port], ['stage-k8s', false, null], ['db', false, null]]);

    assert.deepEqual(await agentRequest(h.home, 'POST', '/v1/disconnect', { service: 'prod-k8s' }), { disconnected: true });
    assert.equal(await refused(port), true, 'the port is free again');
    assert.deepEqual(await agentRequest(h.home, 'POST', '/v1/disconnect', { service: 'prod-k8s' }), { disconnected: false });
    assert.deepEqual((await agentStatus(h.home))?.connections, []);
  });

  void test('the port override is refused where the service does not allow it, and used where it does', async (t) => {
    const port = await freePort();
    const override = await freePort();
    const h = await harness(t, { catalog: [entry('fixed-k8s', { client: { listenPort: port, allowUserOverride: false } }), entry('free-k8s', { client: { listenPort: port, allowUserOverride: true } })] });
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 'fixed-k8s', port: override }), (err: unknown) => errorCode(err) === 'PORT_OVERRIDE_NOT_ALLOWED' && /allowUserOverride/.test((err as Error).message));
    const r = await agentRequest<AgentConnectResult>(h.home, 'POST', '/v1/connect', { service: 'free-k8s', port: override });
    assert.equal(r.connection.port, override);
  });

  void test('a port held by another process is PORT_IN_USE naming that process; one held by another connected service names the service', async (t) => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    t.after(() => holder.close());
    const port = (holder.address() as AddressInfo).port;
    const asked: number[] = [];
    const h = await harness(t, {
      catalog: [entry('a-k8s', { client: { listenPort: port, allowUserOverride: true } }), entry('b-k8s', { client: { listenPort: port + 0, allowUserOverride: false } })],
      agent: {
        describePortHolder: (p) => {
          asked.push(p);
          return 'nc (pid 4242)';
        },
      },
    });
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 'a-k8s' }), (err: unknown) => {
      assert.equal(errorCode(err), 'PORT_IN_USE');
      assert.match((err as Error).message, new RegExp(`Port ${port} is already in use by nc \\(pid 4242\\)\\. Stop it, or choose another port with --port N`));
      return true;
    });
    assert.deepEqual(asked, [port]);
    await new Promise<void>((r) => holder.close(() => r()));
    await agentRequest(h.home, 'POST', '/v1/connect', { service: 'a-k8s' });
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 'b-k8s' }), (err: unknown) => errorCode(err) === 'PORT_IN_USE' && /by this agent for a-k8s/.test((err as Error).message));
  });

  void test('an unknown service is 404 UNKNOWN_SERVICE listing the known ones; a denied one connects with the denial as a warning', async (t) => {
    const port = await freePort();
    const denied = entry('locked-k8s', {
      client: { listenPort: port, allowUserOverride: false },
      access: { allowed: false, mode: 'enforcing', reasons: ['trust-too-low'], explanation: 'device trust Low, this service needs Medium: firewall off', hints: ['needs:Medium'] },
    });
    const h = await harness(t, { catalog: [denied] });
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 'nope' }), (err: unknown) => errorCode(err) === 'UNKNOWN_SERVICE' && /locked-k8s/.test((err as Error).message));
    const r = await agentRequest<AgentConnectResult & { warning?: string }>(h.home, 'POST', '/v1/connect', { service: 'locked-k8s' });
    assert.match(r.warning ?? '', /device trust Low, this service needs Medium: firewall off/);
  });

  void test('malformed requests are 4xx, never a crash', async (t) => {
    const h = await harness(t);
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 7 }), (err: unknown) => errorCode(err) === 'BAD_REQUEST');
    await assert.rejects(agentRequest(h.home, 'POST', '/v1/connect', { service: 'x', port: 'eighty' }), (err: unknown) => errorCode(err) === 'BAD_REQUEST');
    await assert.rejects(agentRequest(h.home, 'GET', '/v1/nothing'), (err: unknown) => errorCode(err) === 'NOT_FOUND');
    assert.notEqual(await agentStatus(h.home), null);
  });

  void test('hideCatalog lists only connected and autorun services', async (t) => {
    const port = await freePort();
    const h = await harness(t, {
      catalog: [entry('shown-k8s', { client: { listenPort: port, allowUserOverride: false } }), entry('hidden-k8s'), entry('auto', { type: 'tcp', kubernetes: null, autorun: true, client: { listenPort: await freePort(), allowUserOverride: false } })],
      agent: { hideCatalog: true },
    });
    await agentRequest(h.home, 'POST', '/v1/connect', { service: 'shown-k8s' });
    const listed = await agentRequest<AgentServices>(h.home, 'GET', '/v1/services');
    assert.equal(listed.catalogHidden, true);
    assert.deepEqual(listed.services.map((s) => s.name).sort(), ['auto', 'shown-k8s']);
  });
});

void describe('autorun, sleep and network changes', () => {
  void test('autorun services (the catalog\'s and the managed list\'s) start when the agent starts logged in', async (t) => {
    const a = await freePort();
    const b = await freePort();
    const h = await harness(t, {
      catalog: [entry('auto-k8s', { autorun: true, client: { listenPort: a, allowUserOverride: false } }), entry('pinned-k8s', { client: { listenPort: b, allowUserOverride: false } }), entry('manual-k8s')],
      agent: { autorun: ['pinned-k8s'] },
    });
    const status = await h.agent.status();
    assert.deepEqual(status.connections.map((c) => [c.service, c.port, c.autorun]), [['auto-k8s', a, true], ['pinned-k8s', b, true]]);
  });

  void test('a login after the agent started is noticed at the next poll and starts the autorun services', async (t) => {
    const a = await freePort();
    const h = await harness(t, { loggedIn: false, catalog: [entry('auto-k8s', { autorun: true, client: { listenPort: a, allowUserOverride: false } })] });
    assert.deepEqual((await h.agent.status()).connections, []);
    assert.equal(h.fetches(), 0, 'no catalog fetch while logged out');
    h.session.current = SESSION;
    h.intervals.fire(10_000);
    let connected = false;
    for (let i = 0; i < 100 && !connected; i++) {
      await new Promise((r) => setTimeout(r, 20));
      connected = (await h.agent.status()).connections.length === 1;
    }
    assert.equal(connected, true, 'auto-k8s came up after the login');
  });

  void test('a logout (or a login to another control plane) noticed at the next poll disconnects every service', async (t) => {
    const a = await freePort();
    const h = await harness(t, { catalog: [entry('prod-k8s', { client: { listenPort: a, allowUserOverride: false } })] });
    await agentRequest(h.home, 'POST', '/v1/connect', { service: 'prod-k8s' });
    assert.equal(await refused(a), false);
    h.session.current = { ...SESSION, server: 'https://other.example.com' };
    h.intervals.fire(10_000);
    for (let i = 0; i < 100 && !(await refused(a)); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await refused(a), true, 'the login elsewhere closed the proxy');
    assert.deepEqual((await h.agent.status()).connections, []);
    await agentRequest(h.home, 'POST', '/v1/connect', { service: 'prod-k8s' });
    h.session.current = undefined;
    h.intervals.fire(10_000);
    for (let i = 0; i < 100 && !(await refused(a)); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await refused(a), true, 'the logout closed the proxy');
    assert.equal((await h.agent.status()).user, null);
  });

  void test('a wall-clock jump over 30 s (sleep) refreshes the catalog; a normal tick does not', async (t) => {
    const h = await harness(t);
    const before = h.fetches();
    h.clock.advance(5_000);
    h.intervals.fire(5_000);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(h.fetches(), before);
    h.clock.advance(5_000 + 31_000);
    h.intervals.fire(5_000);
    for (let i = 0; i < 100 && h.fetches() === before; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(h.fetches(), before + 1);
  });

  void test('a change of the network interfaces refreshes the catalog', async (t) => {
    let addresses = [{ address: '192.168.1.5', netmask: '255.255.255.0', family: 'IPv4' as const, mac: '00:00:00:00:00:01', internal: false, cidr: '192.168.1.5/24' }];
    const h = await harness(t, { agent: { networkInterfaces: () => ({ wlan0: addresses }) } });
    const before = h.fetches();
    h.intervals.fire(10_000);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(h.fetches(), before, 'same interfaces: nothing to do');
    addresses = [{ ...addresses[0], address: '10.0.0.7', cidr: '10.0.0.7/24' }];
    h.intervals.fire(10_000);
    for (let i = 0; i < 100 && h.fetches() === before; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(h.fetches(), before + 1);
  });
});

void describe('shutdown', () => {
  void test('POST /v1/shutdown closes the proxies, removes the socket and pid file, clears the timers and calls onShutdown', async (t) => {
    const port = await freePort();
    let shutdown = false;
    const h = await harness(t, { catalog: [entry('prod-k8s', { client: { listenPort: port, allowUserOverride: false } })], agent: { onShutdown: () => void (shutdown = true) } });
    await agentRequest(h.home, 'POST', '/v1/connect', { service: 'prod-k8s' });
    assert.deepEqual(await agentRequest(h.home, 'POST', '/v1/shutdown'), { stopping: true });
    for (let i = 0; i < 200 && !shutdown; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(shutdown, true);
    assert.equal(existsSync(h.agent.socketPath), false);
    assert.equal(existsSync(path.join(h.home, AGENT_PID_FILE)), false);
    assert.equal(await refused(port), true);
    assert.equal(h.intervals.count(), 0);
    assert.equal(await agentStatus(h.home), null);
  });
});
