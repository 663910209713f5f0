import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { startPeerReporter } from '../lib/live/reporter.ts';
import type { ReportSender } from '../lib/live/reporter.ts';
import { MAX_REPORTED_SESSIONS } from '../lib/live/wire.ts';
import type { AccessTierReport, PeerReport } from '../lib/live/wire.ts';
import type { PeerIdentity } from '../lib/pki/index.ts';
import type { AccessTierStats } from './access-tier.ts';
import type { LiveConnection } from './registry.ts';
import { accessTierReport, startSessionReport } from './session-report.ts';

const identity = (user: string | undefined, device: string | undefined): PeerIdentity => ({ type: 'trust', ...(user === undefined ? {} : { user }), ...(device === undefined ? {} : { device }), serial: 'AB01', notBefore: new Date(0), notAfter: new Date(2_000_000_000_000), fingerprint256: 'x' });

function connection(id: string, extra: Partial<LiveConnection> = {}, bytes = { up: 10, down: 20 }): LiveConnection {
  return {
    id,
    service: 'k8s',
    sni: 'k8s.example.com',
    identity: identity('u1', 'd1'),
    target: { kind: 'dns', host: 'k8s.example.com', port: 443 },
    connector: 'dc1',
    source: '198.51.100.7:50123',
    startedAt: Date.parse('2030-01-01T00:00:00.000Z'),
    cut: () => undefined,
    bytes: () => bytes,
    ...extra,
  };
}

class FakeTier {
  connections: LiveConnection[] = [];
  listeners = new Set<() => void>();
  liveConnections(): LiveConnection[] {
    return this.connections;
  }
  stats(): AccessTierStats {
    return { configVersion: 'v1', openSockets: 0, liveConnections: this.connections.length, refusedBySourceCap: 0, tunnels: [{ id: 1, connector: 'dc1', source: '10.0.0.2:4000', since: '2030-01-01T00:00:00.000Z', activeStreams: this.connections.length }] };
  }
  onSessionsChanged(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  open(c: LiveConnection): void {
    this.connections.push(c);
    for (const l of this.listeners) l();
  }
  close(id: string): void {
    this.connections = this.connections.filter((c) => c.id !== id);
    for (const l of this.listeners) l();
  }
}

/** Lets the reporter's promise chains run after a timer fired (setImmediate is not mocked). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function advance(t: TestContext, ms: number): Promise<void> {
  t.mock.timers.tick(ms);
  await settle();
  await settle();
}

function recordingSender(): { send: ReportSender; reports: PeerReport[]; fail: boolean; hold: boolean; release: () => void; aborted: number } {
  const state = {
    reports: [] as PeerReport[],
    fail: false,
    hold: false,
    aborted: 0,
    release: () => undefined as void,
    send: (async (report, signal) => {
      state.reports.push(report);
      if (state.hold) {
        await new Promise<void>((resolve) => {
          state.release = resolve;
          signal.addEventListener('abort', () => {
            state.aborted++;
            resolve();
          });
        });
      }
      if (state.fail) throw new Error('control plane unreachable');
    }) as ReportSender,
  };
  return state;
}

void describe('live session report', () => {
  void test('reports at once, then every 5 s; an open or close reports within 500 ms, and changes close together share one report', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.parse('2030-01-01T00:00:00.000Z') });
    const tier = new FakeTier();
    const sender = recordingSender();
    const reporter = startSessionReport({ accessTier: tier, send: sender.send, version: '0.1.0' });
    t.after(() => reporter.close());
    await advance(t, 0);
    assert.equal(sender.reports.length, 1);
    assert.deepEqual((sender.reports[0] as AccessTierReport).sessions, []);
    await advance(t, 4_999);
    assert.equal(sender.reports.length, 1);
    await advance(t, 1);
    assert.equal(sender.reports.length, 2);

    tier.open(connection('s1'));
    await advance(t, 200);
    tier.open(connection('s2'));
    await advance(t, 299);
    assert.equal(sender.reports.length, 2, 'not before the settle time');
    await advance(t, 1);
    assert.equal(sender.reports.length, 3, 'one report for both opens');
    assert.deepEqual((sender.reports[2] as AccessTierReport).sessions.map((s) => s.id), ['s1', 's2']);

    tier.close('s1');
    await advance(t, 500);
    assert.equal(sender.reports.length, 4);
    assert.deepEqual((sender.reports[3] as AccessTierReport).sessions.map((s) => s.id), ['s2']);
    await advance(t, 5_000);
    assert.equal(sender.reports.length, 5, 'then every interval again');
  });

  void test('a failing control plane costs nothing but a retry at the next interval; the data path never waits or throws', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    const tier = new FakeTier();
    const sender = recordingSender();
    sender.fail = true;
    const reporter = startSessionReport({ accessTier: tier, send: sender.send, version: '0.1.0' });
    t.after(() => reporter.close());
    await advance(t, 0);
    assert.deepEqual(reporter.stats(), { sent: 0, failed: 1 });
    assert.doesNotThrow(() => tier.open(connection('s1')));
    await advance(t, 500);
    assert.deepEqual(reporter.stats(), { sent: 0, failed: 2 });
    sender.fail = false;
    await advance(t, 5_000);
    assert.deepEqual(reporter.stats(), { sent: 1, failed: 2 });
    assert.deepEqual((sender.reports.at(-1) as AccessTierReport).sessions.map((s) => s.id), ['s1']);
  });

  void test('reports never overlap: a change while one is in flight is reported right after it; close aborts the one in flight', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    const tier = new FakeTier();
    const sender = recordingSender();
    sender.hold = true;
    const reporter = startSessionReport({ accessTier: tier, send: sender.send, version: '0.1.0' });
    await advance(t, 0);
    assert.equal(sender.reports.length, 1);
    tier.open(connection('s1'));
    await advance(t, 10_000);
    assert.equal(sender.reports.length, 1, 'nothing new while the first is in flight');
    sender.hold = false;
    sender.release();
    await advance(t, 0);
    await advance(t, 500);
    assert.equal(sender.reports.length, 2);
    assert.deepEqual((sender.reports[1] as AccessTierReport).sessions.map((s) => s.id), ['s1']);
    sender.hold = true;
    await advance(t, 5_000);
    assert.equal(sender.reports.length, 3);
    await reporter.close();
    assert.equal(sender.aborted, 1);
    tier.open(connection('s2'));
    await advance(t, 60_000);
    assert.equal(sender.reports.length, 3, 'nothing after close');
    assert.equal(tier.listeners.size, 0, 'unsubscribed');
  });

  void test('the report carries each session\'s user, device, service, target, route and bytes so far, and the tunnels', () => {
    const direct = connection('s2', { connector: undefined, service: 'db', target: { kind: 'ipv6', host: '2001:db8::1', port: 5432 }, identity: identity(undefined, undefined) }, { up: 5, down: 7 });
    const report = accessTierReport({ liveConnections: () => [connection('s1'), direct], stats: () => new FakeTier().stats() }, '0.1.0', '2030-01-01T00:00:00.000Z');
    assert.deepEqual(report, {
      version: '0.1.0',
      startedAt: '2030-01-01T00:00:00.000Z',
      tunnels: [{ connector: 'dc1', since: '2030-01-01T00:00:00.000Z', streams: 0 }],
      sessions: [
        { id: 's1', user: 'u1', device: 'd1', service: 'k8s', since: '2030-01-01T00:00:00.000Z', source: '198.51.100.7:50123', target: 'k8s.example.com:443', via: 'connector', connector: 'dc1', bytesUp: 10, bytesDown: 20 },
        { id: 's2', service: 'db', since: '2030-01-01T00:00:00.000Z', source: '198.51.100.7:50123', target: '[2001:db8::1]:5432', via: 'direct', bytesUp: 5, bytesDown: 7 },
      ],
    });
  });

  void test('a tier with more sessions than a report may carry sends the oldest and says it truncated', () => {
    const many = Array.from({ length: MAX_REPORTED_SESSIONS + 3 }, (_, i) => connection(`s${i}`, { startedAt: 1_000_000 + (MAX_REPORTED_SESSIONS + 3 - i) }));
    const report = accessTierReport({ liveConnections: () => many, stats: () => new FakeTier().stats() }, '0.1.0', '2030-01-01T00:00:00.000Z');
    assert.equal(report.sessions.length, MAX_REPORTED_SESSIONS);
    assert.equal(report.truncated, true);
    assert.equal(report.sessions[0].id, `s${MAX_REPORTED_SESSIONS + 2}`);
  });

  void test('the generic reporter builds nothing until its timer fires', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    let built = 0;
    const sender = recordingSender();
    const reporter = startPeerReporter({ build: () => (built++, { version: '1', startedAt: 'x', tunnels: [] }), send: sender.send, intervalMs: 1_000, settleMs: 100 });
    t.after(() => reporter.close());
    for (let i = 0; i < 1000; i++) reporter.changed();
    assert.equal(built, 0);
    await advance(t, 0);
    assert.equal(built, 1);
    for (let i = 0; i < 1000; i++) reporter.changed();
    await advance(t, 100);
    assert.equal(built, 2);
  });
});
