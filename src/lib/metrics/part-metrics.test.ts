import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import { Registry } from 'prom-client';
import type { AccessEvent } from '../audit/index.ts';
import { MemoryEventSink, newEventId } from '../audit/index.ts';
import { makeTestPki } from '../tunnel/harness.testing.ts';
import { TUNNEL_STREAM_CHANNEL, accessTierStats, connectorStats, createPartMetrics, meteredSink } from './part-metrics.ts';
import type { PartMetrics } from './part-metrics.ts';
import { parseExposition } from './prometheus-text.testing.ts';
import type { Exposition } from './prometheus-text.testing.ts';

const streams = channel(TUNNEL_STREAM_CHANNEL);

function event(fields: Partial<AccessEvent> & Pick<AccessEvent, 'decision' | 'reasons'>): AccessEvent {
  return { id: newEventId(), time: new Date().toISOString(), type: 'access', accessTier: 'edge-1', source: '127.0.0.1:50000', ...fields };
}

async function scrape(metrics: PartMetrics): Promise<Exposition> {
  return parseExposition((await metrics.scrape()).body);
}

function quiet(part: 'access-tier' | 'connector', extra: Parameters<typeof createPartMetrics>[1] = {}): PartMetrics {
  return createPartMetrics(part, { processMetrics: false, ...extra });
}

void test('each access event counts one decision by result and first reason code, and client connections by service and decision', async () => {
  const metrics = quiet('access-tier');
  try {
    metrics.record(event({ decision: 'allow', reasons: ['policy-allow', 'policy:k8s-prod', 'rule:0', 'role:engineers'], service: 'prod-k8s', bytesUp: 100, bytesDown: 2500, durationMs: 1500 }));
    metrics.record(event({ decision: 'allow', reasons: ['trust-cert-valid'], service: 'prod-k8s', bytesUp: 1, bytesDown: 2, durationMs: 20 }));
    metrics.record(event({ decision: 'deny', reasons: ['trust-too-low', 'needs:Medium', 'has:Low', 'trust:firewall-off'], service: 'prod-k8s', durationMs: 3 }));
    metrics.record(event({ decision: 'would-deny', reasons: ['no-matching-role'], service: 'db', bytesUp: 7, bytesDown: 9, durationMs: 250 }));
    metrics.record(event({ decision: 'deny', reasons: ['unknown-service'], sni: 'nope.example.com' }));
    metrics.record(event({ decision: 'deny', reasons: ['cert-missing'] }));
    // Connector tunnels registering are decisions, not client connections.
    metrics.record(event({ decision: 'allow', reasons: ['connector-tunnel'], via: 'connector', connector: 'dc1', durationMs: 60_000 }));
    metrics.record(event({ decision: 'deny', reasons: ['tunnel-refused', 'cert-revoked'], connector: 'dc1' }));

    const m = await scrape(metrics);
    assert.equal(m.types.get('causeway_decisions_total'), 'counter');
    assert.equal(m.value('causeway_decisions_total', { result: 'allow', reason: 'policy-allow' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'allow', reason: 'trust-cert-valid' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'trust-too-low' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'would-deny', reason: 'no-matching-role' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'unknown-service' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'cert-missing' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'allow', reason: 'connector-tunnel' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'tunnel-refused' }), 1);
    assert.equal(m.all('causeway_decisions_total').reduce((n, s) => n + s.value, 0), 8, 'one decision per event, details never counted');

    assert.equal(m.value('causeway_connections_total', { service: 'prod-k8s', decision: 'allow' }), 2);
    assert.equal(m.value('causeway_connections_total', { service: 'prod-k8s', decision: 'deny' }), 1);
    assert.equal(m.value('causeway_connections_total', { service: 'db', decision: 'would-deny' }), 1);
    assert.equal(m.value('causeway_connections_total', { service: 'none', decision: 'deny' }), 2);
    assert.equal(m.all('causeway_connections_total').reduce((n, s) => n + s.value, 0), 6, 'tunnel registrations are not client connections');

    // Bytes and durations of allowed (and would-deny, which is let through) connections only.
    assert.equal(m.value('causeway_bytes_total', { direction: 'up' }), 108);
    assert.equal(m.value('causeway_bytes_total', { direction: 'down' }), 2511);
    assert.equal(m.types.get('causeway_connection_duration_seconds'), 'histogram');
    assert.equal(m.value('causeway_connection_duration_seconds_count'), 3);
    assert.ok(Math.abs((m.value('causeway_connection_duration_seconds_sum') ?? 0) - 1.77) < 1e-9);
    assert.equal(m.value('causeway_connection_duration_seconds_bucket', { le: '0.05' }), 1);
    assert.equal(m.value('causeway_connection_duration_seconds_bucket', { le: '5' }), 3);
  } finally {
    metrics.close();
  }
});

void test('a reason, result or service outside the vocabulary is counted as other, so hostile values never add series', async () => {
  const metrics = quiet('access-tier', { maxServices: 3 });
  try {
    metrics.record(event({ decision: 'deny', reasons: ['made-up-reason'] }));
    metrics.record(event({ decision: 'deny', reasons: ['x\n# TYPE evil counter\nevil 1'] }));
    metrics.record(event({ decision: 'deny', reasons: [] }));
    metrics.record(event({ decision: 'deny', reasons: ['needs:Medium'] }));
    metrics.record(event({ decision: 'maybe' as AccessEvent['decision'], reasons: ['policy-allow'] }));
    metrics.record(event({ decision: 'deny', reasons: ['unknown-service'], service: 'Evil Service"}' }));
    for (let i = 0; i < 1000; i++) metrics.record(event({ decision: 'allow', reasons: [`reason-${i}`], service: `svc-${i}`, bytesUp: -5, bytesDown: Number.NaN, durationMs: Infinity }));

    const m = await scrape(metrics);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'other' }), 2);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'none' }), 2, 'no reason, or only details');
    assert.equal(m.value('causeway_decisions_total', { result: 'other', reason: 'policy-allow' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'allow', reason: 'other' }), 1000);
    assert.equal(m.all('causeway_decisions_total').length, 5, 'the four above and deny/unknown-service');
    assert.equal(m.all('evil').length, 0);

    const services = new Set(m.all('causeway_connections_total').map((s) => s.labels.service));
    assert.deepEqual([...services].sort(), ['none', 'other', 'svc-0', 'svc-1', 'svc-2']);
    assert.equal(m.value('causeway_connections_total', { service: 'other', decision: 'allow' }), 997);
    assert.equal(m.value('causeway_connections_total', { service: 'other', decision: 'deny' }), 1, 'a name no spec could have');
    // Negative, NaN and infinite numbers are not counted.
    assert.equal(m.value('causeway_bytes_total', { direction: 'up' }) ?? 0, 0);
    assert.equal(m.value('causeway_bytes_total', { direction: 'down' }) ?? 0, 0);
    assert.equal(m.value('causeway_connection_duration_seconds_count'), 0);
  } finally {
    metrics.close();
  }
});

void test('meteredSink counts each event and hands it on unchanged, and closing it closes the inner sink', async () => {
  const metrics = quiet('access-tier');
  const inner = new MemoryEventSink();
  const sink = meteredSink(inner, metrics);
  const written = event({ decision: 'deny', reasons: ['bad-sni'] });
  sink.write(written);
  assert.deepEqual(inner.events, [written]);
  assert.equal((await scrape(metrics)).value('causeway_decisions_total', { result: 'deny', reason: 'bad-sni' }), 1);
  await sink.close();
  assert.throws(() => inner.write(written), { code: 'audit-sink-closed' });
  metrics.close();
});

void test('the gauges read the access tier\'s stats, its config status and its certificate at scrape time', async () => {
  const pki = await makeTestPki();
  const cert = await pki.issue('access-tier', { name: 'edge-1' }, { lifetimeMs: 24 * 3600_000 });
  const notAfter = new X509Certificate(cert.certPem).validToDate.getTime();
  let now = notAfter - 90_000;
  const metrics = quiet('access-tier', { clock: { now: () => now } });
  try {
    const tier = {
      live: [{ service: 'prod-k8s' }, { service: 'prod-k8s' }, { service: 'db' }],
      tunnels: [{ activeStreams: 2 }, { activeStreams: 1 }],
      stats() {
        return { configVersion: 'v-abc', openSockets: 7, tunnels: this.tunnels };
      },
      liveConnections() {
        return this.live;
      },
    };
    let config: { version: string | undefined; revision: number | undefined; stale: boolean } = { version: 'r42', revision: 42, stale: false };
    metrics.track({ stats: accessTierStats(tier), config: () => config, certificatePem: () => cert.certPem });

    let m = await scrape(metrics);
    assert.equal(m.value('causeway_connections_active', { service: 'prod-k8s' }), 2);
    assert.equal(m.value('causeway_connections_active', { service: 'db' }), 1);
    assert.equal(m.value('causeway_tunnels', { state: 'up' }), 2);
    assert.equal(m.value('causeway_tunnel_streams'), 3);
    assert.equal(m.value('causeway_open_sockets'), 7);
    assert.equal(m.value('causeway_config_info', { version: 'r42' }), 1);
    assert.equal(m.value('causeway_config_revision'), 42);
    assert.equal(m.value('causeway_config_stale'), 0);
    assert.equal(m.value('causeway_cert_expiry_seconds'), 90);

    // Everything changes between scrapes: the gauges follow, and series that ended are gone.
    tier.live = [{ service: 'db' }];
    tier.tunnels = [];
    config = { version: 'r43', revision: 43, stale: true };
    now = notAfter + 5_000;
    m = await scrape(metrics);
    assert.equal(m.value('causeway_connections_active', { service: 'prod-k8s' }), undefined);
    assert.equal(m.value('causeway_connections_active', { service: 'db' }), 1);
    assert.equal(m.value('causeway_tunnels', { state: 'up' }), 0);
    assert.equal(m.value('causeway_tunnel_streams'), 0);
    assert.deepEqual(m.all('causeway_config_info').map((s) => s.labels.version), ['r43']);
    assert.equal(m.value('causeway_config_revision'), 43);
    assert.equal(m.value('causeway_config_stale'), 1);
    assert.equal(m.value('causeway_cert_expiry_seconds'), -5);

    // Without a config status (a spec file), the version comes from the stats.
    const fileMode = quiet('access-tier');
    fileMode.track({ stats: accessTierStats(tier) });
    const f = await scrape(fileMode);
    assert.equal(f.value('causeway_config_info', { version: 'v-abc' }), 1);
    assert.equal(f.value('causeway_config_stale'), 0);
    fileMode.close();
  } finally {
    metrics.close();
  }
});

void test('a stats callback that throws leaves the scrape working and is logged', async () => {
  const warnings: unknown[] = [];
  const logger = { warn: (o: unknown) => warnings.push(o), error: (o: unknown) => warnings.push(o) } as unknown as NonNullable<Parameters<typeof createPartMetrics>[1]>['logger'];
  const metrics = quiet('connector', { ...(logger !== undefined ? { logger } : {}) });
  try {
    metrics.track({
      stats: () => {
        throw new Error('boom');
      },
      certificatePem: () => 'not a certificate',
    });
    metrics.record(event({ decision: 'deny', reasons: ['bad-sni'] }));
    const m = await scrape(metrics);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'bad-sni' }), 1);
    assert.equal(warnings.length, 4, 'tunnels, tunnel streams, config version (from the stats) and certificate, each logged');
  } finally {
    metrics.close();
  }
});

void test('the connector counts the tunnel streams it opens, refuses and closes from the diagnostics channel, and stops when closed', async () => {
  const metrics = quiet('connector');
  const status = { configVersion: 'r7' as string | undefined, tunnels: [{ state: 'up', activeStreams: 1 }, { state: 'waiting', activeStreams: 0 }, { state: 'sideways', activeStreams: 0 }] };
  metrics.track({ stats: connectorStats({ status: () => status }) });
  try {
    streams.publish({ side: 'connector', event: 'open', accessTier: 'edge-1', session: 's1', service: 'prod-k8s', target: '10.0.0.1:443' });
    streams.publish({ side: 'connector', event: 'open', accessTier: 'edge-1', session: 's2', service: 'prod-k8s', target: '10.0.0.1:443' });
    streams.publish({ side: 'connector', event: 'open', accessTier: 'edge-2', session: 's1', service: 'db', target: '10.0.0.2:5432' });
    streams.publish({ side: 'connector', event: 'refused', accessTier: 'edge-1', session: 's3', refusal: 'target-not-allowed', target: '192.0.2.1:22' });
    streams.publish({ side: 'connector', event: 'refused', accessTier: 'edge-1', session: 's4', refusal: 'something-new', target: '192.0.2.1:22' });
    // The access tier's side of the same channel is not the connector's business.
    streams.publish({ side: 'access-tier', event: 'open', connector: 'dc1', tunnel: 1, session: 's9', service: 'prod-k8s', target: '10.0.0.1:443' });

    let m = await scrape(metrics);
    assert.equal(m.value('causeway_connections_active', { service: 'prod-k8s' }), 2);
    assert.equal(m.value('causeway_connections_active', { service: 'db' }), 1);
    assert.equal(m.value('causeway_connections_total', { service: 'prod-k8s', decision: 'allow' }), 2);
    assert.equal(m.value('causeway_connections_total', { service: 'none', decision: 'deny' }), 2);
    assert.equal(m.value('causeway_decisions_total', { result: 'allow', reason: 'target-allowed' }), 3);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'target-not-allowed' }), 1);
    assert.equal(m.value('causeway_decisions_total', { result: 'deny', reason: 'other' }), 1);
    assert.equal(m.value('causeway_tunnel_streams_opened_total'), 3);
    assert.equal(m.value('causeway_tunnels', { state: 'up' }), 1);
    assert.equal(m.value('causeway_tunnels', { state: 'waiting' }), 1);
    assert.equal(m.value('causeway_tunnels', { state: 'connecting' }), 0);
    assert.equal(m.value('causeway_tunnels', { state: 'other' }), 1);
    assert.equal(m.value('causeway_config_info', { version: 'r7' }), 1);

    streams.publish({ side: 'connector', event: 'close', accessTier: 'edge-1', session: 's1', outcome: 'done' });
    streams.publish({ side: 'connector', event: 'close', accessTier: 'edge-2', session: 's1', outcome: 'upstream-error', detail: 'ECONNRESET', bytesUp: 10, bytesDown: 20 });
    m = await scrape(metrics);
    assert.equal(m.value('causeway_connections_active', { service: 'prod-k8s' }), 1);
    assert.equal(m.value('causeway_connections_active', { service: 'db' }), undefined);
    assert.equal(m.value('causeway_tunnel_streams_closed_total', { outcome: 'clean' }), 1);
    assert.equal(m.value('causeway_tunnel_streams_closed_total', { outcome: 'aborted' }), 1);
    assert.equal(m.value('causeway_connection_duration_seconds_count'), 2);
    assert.equal(m.value('causeway_bytes_total', { direction: 'up' }), 10);
    assert.equal(m.value('causeway_bytes_total', { direction: 'down' }), 20);

    metrics.close();
    streams.publish({ side: 'connector', event: 'open', accessTier: 'edge-1', session: 's5', service: 'prod-k8s', target: '10.0.0.1:443' });
    m = await scrape(metrics);
    assert.equal(m.value('causeway_tunnel_streams_opened_total'), 3, 'unsubscribed on close');
  } finally {
    metrics.close();
  }
});

void test('the access tier counts its own side\'s tunnel streams, clean or aborted by their reset code', async () => {
  const metrics = quiet('access-tier');
  try {
    streams.publish({ side: 'access-tier', event: 'open', connector: 'dc1', tunnel: 1, session: 'a', service: 'prod-k8s', target: '10.0.0.1:443' });
    streams.publish({ side: 'access-tier', event: 'open', connector: 'dc1', tunnel: 1, session: 'b', service: 'prod-k8s', target: '10.0.0.1:443' });
    streams.publish({ side: 'access-tier', event: 'close', connector: 'dc1', tunnel: 1, session: 'a', rstCode: 0 });
    streams.publish({ side: 'access-tier', event: 'close', connector: 'dc1', tunnel: 1, session: 'b', rstCode: 8 });
    streams.publish({ side: 'connector', event: 'open', accessTier: 'edge-1', session: 'c', service: 'prod-k8s', target: '10.0.0.1:443' });
    streams.publish('not an object');
    const m = await scrape(metrics);
    assert.equal(m.value('causeway_tunnel_streams_opened_total'), 2);
    assert.equal(m.value('causeway_tunnel_streams_closed_total', { outcome: 'clean' }), 1);
    assert.equal(m.value('causeway_tunnel_streams_closed_total', { outcome: 'aborted' }), 1);
    assert.equal(m.all('causeway_connections_total').length, 0, 'the access tier counts connections from its access events');
  } finally {
    metrics.close();
  }
});

void test('each metrics object has its own registry (or the one it is given), with process metrics unless turned off', async () => {
  const a = createPartMetrics('access-tier');
  const b = createPartMetrics('access-tier');
  const shared = new Registry();
  const c = createPartMetrics('connector', { registry: shared, processMetrics: false });
  try {
    assert.notEqual(a.registry, b.registry);
    assert.equal(c.registry, shared);
    a.record(event({ decision: 'deny', reasons: ['bad-sni'] }));
    const [ma, mb] = await Promise.all([scrape(a), scrape(b)]);
    assert.equal(ma.value('causeway_decisions_total', { result: 'deny', reason: 'bad-sni' }), 1);
    assert.equal(mb.value('causeway_decisions_total', { result: 'deny', reason: 'bad-sni' }), undefined);
    assert.ok(ma.all('process_cpu_user_seconds_total').length === 1 && mb.all('nodejs_heap_size_used_bytes').length === 1);
    const mc = parseExposition(await shared.metrics());
    assert.equal(mc.types.get('causeway_tunnels'), 'gauge');
    assert.equal(mc.all('process_cpu_user_seconds_total').length, 0);
    // No part-specific gauge leaks into the other part.
    assert.equal(mc.types.get('causeway_open_sockets'), undefined);
    assert.equal(ma.types.get('causeway_open_sockets'), 'gauge');
  } finally {
    a.close();
    b.close();
    c.close();
  }
});

void test('the scrape is the Prometheus text format with HELP and TYPE for every metric', async () => {
  const metrics = quiet('connector');
  try {
    assert.doesNotMatch((await metrics.scrape()).body, /causeway_cert_expiry_seconds/, 'no expiry until there is a certificate to read');
    const pki = await makeTestPki();
    const cert = await pki.issue('connector', { name: 'dc1' });
    metrics.track({ certificatePem: () => cert.certPem });
    const { contentType, body } = await metrics.scrape();
    assert.match(contentType, /^text\/plain; version=0\.0\.4/);
    const names = [
      'causeway_connections_total', 'causeway_connections_active', 'causeway_decisions_total', 'causeway_bytes_total', 'causeway_connection_duration_seconds',
      'causeway_tunnels', 'causeway_tunnel_streams', 'causeway_tunnel_streams_opened_total', 'causeway_tunnel_streams_closed_total',
      'causeway_config_info', 'causeway_config_revision', 'causeway_config_stale', 'causeway_cert_expiry_seconds',
    ];
    for (const name of names) {
      assert.match(body, new RegExp(`^# HELP ${name} \\S`, 'm'), name);
      assert.match(body, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'), name);
    }
    parseExposition(body);
  } finally {
    metrics.close();
  }
});
