/**
 * Periodic posture reports while `causeway proxy` runs (issue 5: "every 5 minutes"), against a real
 * control plane (`causeway server`'s startServer), with the schedule on a fake clock: the reports go
 * out on schedule (the server's postureAt moves with each), a changed posture changes the device's
 * trust level on the server without any CLI action (and a report that ends AlwaysDeny renews the trust
 * certificate at once), refused and failed reports are logged and retried at the next interval, and
 * close() (the proxy's) stops the schedule and aborts a report in flight.
 *
 * Only the posture collectors, the timers and the schedule's clock are replaced; reports are signed
 * with the real clock (the server checks their timestamps).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { createLogger, silentLogger } from '../../src/lib/log.ts';
import type { Logger } from '../../src/lib/log.ts';
import type { FactorValues } from '../../src/lib/trust/index.ts';
import type { FetchLike } from '../../src/lib/session/index.ts';
import { startServer } from '../../src/control-plane/command.ts';
import type { RunningServer } from '../../src/control-plane/command.ts';
import { fakeTimers } from '../../src/control-plane/device-managers/fake-timers.testing.ts';
import type { FakeTimers } from '../../src/control-plane/device-managers/fake-timers.testing.ts';
import { registerAdminCommands } from '../../src/admin-cli/index.ts';
import { registerIdentityCommands } from '../../src/client/identity-command.ts';
import { defaultDeviceIo, deviceContext, registerDeviceCommands } from '../../src/client/device-command.ts';
import type { DeviceIo } from '../../src/client/device-command.ts';
import type { DeviceContext } from '../../src/client/device.ts';
import { registerProxyCommand } from '../../src/client/command.ts';
import type { ClientProxy } from '../../src/client/proxy.ts';
import { startPostureReporting } from '../../src/client/posture-reporting.ts';
import type { PostureReportResult, PostureReporting } from '../../src/client/posture-reporting.ts';
import { freePort } from '../kit/ports.ts';

const PASSWORD = 'correct horse battery staple';
const GOOD: FactorValues = { diskEncryption: true, firewall: true, osVersion: '24.04', osDistribution: 'ubuntu' };
const MIN = 60_000;

let dir: string;
let publicUrl: string;
let caFile: string;
let adminToken: string;
let server: RunningServer | undefined;
let factors: FactorValues = GOOD;
let collected = 0;

function deviceIo(home: string): DeviceIo {
  return {
    ...defaultDeviceIo,
    env: { CAUSEWAY_HOME: home, CAUSEWAY_CLIENT_CONFIG: join(dir, 'client.yaml') },
    homedir: () => join(dir, 'no-home'),
    out: () => undefined,
    err: () => undefined,
    platform: 'linux',
    hostname: () => 'laptop-1',
    collect: () => {
      collected++;
      return Promise.resolve({ factors: structuredClone(factors), problems: [] });
    },
  };
}

async function login(home: string): Promise<void> {
  const err: string[] = [];
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: () => undefined, writeErr: (s) => err.push(s) });
  const io = deviceIo(home);
  registerIdentityCommands(program, {
    env: io.env,
    homedir: io.homedir,
    out: () => undefined,
    err: (line) => err.push(line),
    readStdin: () => Promise.resolve(`${PASSWORD}\n`),
    openBrowser: undefined,
    setExitCode: () => undefined,
    device: { platform: io.platform, hostname: io.hostname, ...(io.collect === undefined ? {} : { collect: io.collect }) },
  });
  registerDeviceCommands(program, io);
  await program.parseAsync(['node', 'causeway', 'login', publicUrl, '--ca-file', caFile, '--user', 'alice', '--password-stdin']);
  assert.match(err.join('\n'), /Trust certificate valid until/);
}

async function admin(args: string[], stdin = ''): Promise<void> {
  const program = new Command('causeway').exitOverride();
  registerAdminCommands(program, {
    env: { CAUSEWAY_SERVER: publicUrl, CAUSEWAY_TOKEN: adminToken, CAUSEWAY_CA_FILE: caFile },
    out: () => undefined,
    err: () => undefined,
    readStdin: () => Promise.resolve(stdin),
  });
  await program.parseAsync(['node', 'causeway', ...args]);
}

function memoryLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = [];
  const destination = new Writable({
    write: (chunk: Buffer, _e, cb) => {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { logger: createLogger({ name: 'test', level: 'info', destination }), text: () => lines.join('') };
}

/** Results of the reports, one promise per report to come, in order. */
function reportQueue(): { onReport: (r: PostureReportResult) => void; next: () => Promise<PostureReportResult> } {
  const results: PostureReportResult[] = [];
  const waiting: Array<(r: PostureReportResult) => void> = [];
  return {
    onReport: (r) => {
      const w = waiting.shift();
      if (w === undefined) results.push(r);
      else w(r);
    },
    next: () => {
      const r = results.shift();
      return r === undefined ? new Promise((resolve) => waiting.push(resolve)) : Promise.resolve(r);
    },
  };
}

/** Moves the fake clock and waits for the report that falls due. */
async function advanceToReport(ft: FakeTimers, ms: number, queue: { next: () => Promise<PostureReportResult> }): Promise<PostureReportResult> {
  const next = queue.next();
  await ft.advance(ms);
  return next;
}

async function deviceIdOf(home: string): Promise<string> {
  return (JSON.parse(await readFile(join(home, 'device.json'), 'utf8')) as { id: string }).id;
}

async function serverDevice(id: string): Promise<{ level: string | undefined; postureAt: string | null }> {
  assert.ok(server !== undefined);
  const device = await server.store.getDevice(id);
  assert.ok(device !== undefined);
  return { level: (device.trust as { level?: string } | null)?.level, postureAt: device.postureAt };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'causeway-e2e-posture-reporting-'));
  await chmod(dir, 0o700);
  const dataDir = join(dir, 'data');
  const port = await freePort();
  publicUrl = `https://localhost:${port}`;
  // The default 8-hour trust certificates: the renewal's own schedule never falls due in these tests.
  server = await startServer({ dataDir, listen: `127.0.0.1:${port}`, metricsListen: 'off', publicUrl, logLevel: 'silent' }, { env: {}, print: () => undefined }, silentLogger());
  caFile = join(dataDir, 'ca.crt');
  adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  await admin(['user', 'add', 'alice', '--groups', 'eng', '--email', 'alice@example.com', '--password-stdin'], `${PASSWORD}\n`);
  const profile = join(dir, 'profile.yaml');
  await writeFile(
    profile,
    `apiVersion: causeway/v1
kind: TrustProfile
metadata: {name: laptops}
spec:
  appliesTo: {platforms: [linux]}
  staleAfter: 15m
  factors:
    - {type: diskEncryption, effect: Medium}
    - {type: firewall, effect: AlwaysDeny}
`,
  );
  await admin(['apply', '-f', profile]);
  await writeFile(join(dir, 'client.yaml'), 'deviceOwnership: corporate-dedicated\n', { mode: 0o600 });
});

after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

void describe('causeway proxy reports posture every few minutes', () => {
  void test('reports go out shortly after start and then every interval, jittered, each one moving the server\'s postureAt', async (t) => {
    factors = GOOD;
    const home = join(dir, 'home-schedule');
    await login(home);
    const id = await deviceIdOf(home);
    const ft = fakeTimers(Date.now());
    const queue = reportQueue();
    const randoms = [0.5, 0.5, 0, 0.999];
    const reporting = startPostureReporting({
      ctx: deviceContext(deviceIo(home)),
      clock: ft.clock,
      timers: ft.timers,
      logger: silentLogger(),
      intervalMs: 5 * MIN,
      firstDelayMs: 5_000,
      random: () => randoms.shift() ?? 0.5,
      onReport: queue.onReport,
    });
    t.after(() => reporting.close());

    assert.equal(ft.nextInMs(), 5_000, 'the first report shortly after start');
    const start = collected;
    let postureAt = (await serverDevice(id)).postureAt;
    const first = await advanceToReport(ft, 5_000, queue);
    assert.equal(first.ok, true, JSON.stringify(first));
    assert.equal(collected, start + 1);
    let now = await serverDevice(id);
    assert.ok(now.postureAt !== null && postureAt !== null && now.postureAt > postureAt, 'the server recorded the report');
    postureAt = now.postureAt;
    assert.equal(ft.nextInMs(), 5 * MIN, 'no jitter at random() = 0.5');

    await ft.advance(5 * MIN - 1);
    assert.equal(collected, start + 1, 'nothing before the interval is up');
    const second = await advanceToReport(ft, 1, queue);
    assert.equal(second.ok, true);
    assert.equal(collected, start + 2);
    now = await serverDevice(id);
    assert.ok(now.postureAt !== null && now.postureAt > postureAt);
    postureAt = now.postureAt;
    assert.equal(ft.nextInMs(), 4.5 * MIN, 'jitter: 10 % early at random() = 0');

    const third = await advanceToReport(ft, 4.5 * MIN, queue);
    assert.equal(third.ok, true);
    assert.equal(collected, start + 3);
    assert.ok(((await serverDevice(id)).postureAt ?? '') > postureAt);
    const late = ft.nextInMs() ?? 0;
    assert.ok(late > 5 * MIN && late <= 5.5 * MIN, `jitter: up to 10 % late (${late} ms)`);
  });

  void test('refused and failed reports are logged with their reason and the next interval reports again', async (t) => {
    factors = GOOD;
    const home = join(dir, 'home-failures');
    await login(home);
    const id = await deviceIdOf(home);
    const real = deviceContext(deviceIo(home));
    // Per report: the server answers 503, the server is unreachable, the report is signed 10 minutes
    // late (the server refuses it as posture-stale), then all is well.
    let mode: 'unavailable' | 'unreachable' | 'late' | 'ok' = 'unavailable';
    const ctx: DeviceContext = {
      ...real,
      clock: { now: () => Date.now() - (mode === 'late' ? 10 * MIN : 0) },
      fetchFor: (caPem): FetchLike => {
        const inner = real.fetchFor(caPem);
        return (url, init) => {
          if (String(url).endsWith('/posture') && mode === 'unavailable') return Promise.resolve(Response.json({ error: { code: 'UNAVAILABLE', message: 'try later' } }, { status: 503 }));
          if (mode === 'unreachable') return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
          return inner(url, init);
        };
      },
    };
    const ft = fakeTimers(Date.now());
    const queue = reportQueue();
    const log = memoryLogger();
    const reporting = startPostureReporting({ ctx, clock: ft.clock, timers: ft.timers, logger: log.logger, jitter: 0, onReport: queue.onReport });
    t.after(() => reporting.close());
    const postureAt = (await serverDevice(id)).postureAt;

    const unavailable = await advanceToReport(ft, 5_000, queue);
    assert.deepEqual(unavailable.ok ? undefined : unavailable.reason, 'UNAVAILABLE');
    assert.match(log.text(), /"reason":"UNAVAILABLE".*the posture report was not accepted.*HTTP 503/);
    assert.equal(ft.nextInMs(), 5 * MIN, 'still scheduled');

    mode = 'unreachable';
    const unreachable = await advanceToReport(ft, 5 * MIN, queue);
    assert.deepEqual(unreachable.ok ? undefined : unreachable.reason, 'SERVER_UNREACHABLE');
    assert.equal(ft.nextInMs(), 5 * MIN);

    mode = 'late';
    const late = await advanceToReport(ft, 5 * MIN, queue);
    assert.deepEqual(late.ok ? undefined : late.reason, 'posture-stale');
    assert.match(log.text(), /"reason":"posture-stale"/);
    assert.equal((await serverDevice(id)).postureAt, postureAt, 'none of them was recorded');
    assert.equal(ft.nextInMs(), 5 * MIN);

    mode = 'ok';
    const ok = await advanceToReport(ft, 5 * MIN, queue);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.ok(((await serverDevice(id)).postureAt ?? '') > (postureAt ?? ''));
  });

  void test('close() aborts a report in flight and nothing is reported afterwards', async () => {
    factors = GOOD;
    const home = join(dir, 'home-failures');
    const real = deviceContext(deviceIo(home));
    let requested!: () => void;
    const reached = new Promise<void>((resolve) => {
      requested = resolve;
    });
    let aborted = false;
    const ctx: DeviceContext = {
      ...real,
      fetchFor: (caPem): FetchLike => {
        const inner = real.fetchFor(caPem);
        return (url, init) => {
          if (!String(url).endsWith('/posture/nonce')) return inner(url, init);
          // The control plane does not answer: only the abort ends this request.
          requested();
          return new Promise((_resolve, reject) => {
            init?.signal?.addEventListener('abort', () => {
              aborted = true;
              reject(Object.assign(new Error('aborted'), { code: 'ABORT_ERR' }));
            });
          });
        };
      },
    };
    const ft = fakeTimers(Date.now());
    const results: PostureReportResult[] = [];
    const reporting = startPostureReporting({ ctx, clock: ft.clock, timers: ft.timers, logger: silentLogger(), onReport: (r) => results.push(r) });
    try {
      await ft.advance(10_000);
      await reached;
    } finally {
      await reporting.close();
    }
    assert.equal(aborted, true, 'the request in flight was aborted');
    assert.equal(reporting.nextAt(), undefined);
    assert.equal(ft.pending(), 0, 'no timer left');
    const before = collected;
    await ft.advance(60 * MIN);
    assert.equal(collected, before);
    assert.deepEqual(results, [], 'a closed reporter reports nothing, not even the aborted report');
    assert.equal(await reporting.reportNow(), undefined);
  });

  void test('through causeway proxy: a changed posture changes the trust level on the server without any CLI action, a report back from AlwaysDeny renews the trust certificate at once, and closing the proxy stops the reports', async () => {
    factors = GOOD;
    const home = join(dir, 'home-proxy');
    await login(home);
    const id = await deviceIdOf(home);
    await writeFile(
      join(home, 'services.yaml'),
      `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: global-edge, address: "127.0.0.1:1"}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: app}
spec:
  type: tcp
  cluster: global-edge
  accessTier: edge-1
  domain: app.corp.example.com
  port: 8080
  backend: {target: "app.internal:8080"}
  client: {listenPort: 18080, allowUserOverride: true}
`,
    );
    const ft = fakeTimers(Date.now());
    const queue = reportQueue();
    let proxy: ClientProxy | undefined;
    let reporting: PostureReporting | undefined;
    const io = deviceIo(home);
    const program = new Command('causeway').exitOverride().configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
    registerProxyCommand(program, {
      env: io.env,
      homedir: io.homedir,
      print: () => undefined,
      onStarted: (p) => {
        proxy = p;
      },
      device: {
        platform: io.platform,
        hostname: io.hostname,
        ...(io.collect === undefined ? {} : { collect: io.collect }),
        timers: ft.timers,
        reporting: { clock: ft.clock, random: () => 0.5, onReport: queue.onReport },
        onReporting: (r) => {
          reporting = r;
        },
      },
    });
    await program.parseAsync(['node', 'causeway', 'proxy', 'app', '--port', '0', '--posture-interval', '2', '--log-level', 'silent']);
    assert.ok(proxy !== undefined && reporting !== undefined);
    try {
      const certAtStart = await readFile(join(home, 'trust.crt'), 'utf8');
      const first = await advanceToReport(ft, 5_000, queue);
      assert.equal(first.ok && first.trust?.level, 'High');
      assert.equal(await readFile(join(home, 'trust.crt'), 'utf8'), certAtStart, 'a fresh certificate is not renewed after the first report');
      assert.equal(ft.nextInMs(), 2 * MIN, '--posture-interval 2');

      factors = { ...GOOD, firewall: false };
      const denied = await advanceToReport(ft, 2 * MIN, queue);
      assert.equal(denied.ok && denied.trust?.level, 'AlwaysDeny');
      assert.equal((await serverDevice(id)).level, 'AlwaysDeny', 'the server moved the device without any CLI action');

      factors = { ...GOOD, diskEncryption: false };
      const back = await advanceToReport(ft, 2 * MIN, queue);
      assert.equal(back.ok && back.trust?.level, 'Medium');
      assert.equal((await serverDevice(id)).level, 'Medium');
      assert.notEqual(await readFile(join(home, 'trust.crt'), 'utf8'), certAtStart, 'back from AlwaysDeny: a new trust certificate at once');
    } finally {
      await proxy.close();
    }
    assert.equal(reporting.nextAt(), undefined, 'closing the proxy stopped the reports');
    assert.equal(ft.pending(), 0, 'and the trust renewal: no timer left');
    const before = collected;
    await ft.advance(30 * MIN);
    assert.equal(collected, before);
  });
});
