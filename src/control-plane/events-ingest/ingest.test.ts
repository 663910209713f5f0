import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SpoolingEventSink, httpEventSender, newEventId, nodeSpoolFiles } from '../../lib/audit/index.ts';
import type { AccessEvent } from '../../lib/audit/index.ts';
import { requestControlPlane } from '../../lib/enroll/transport.ts';
import type { PeerTlsMaterial } from '../../lib/enroll/transport.ts';
import { CertificateAuthority, issueKeyAndCert } from '../../lib/pki/index.ts';
import { issueServingCertificate } from '../server.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/index.ts';
import { startTestControlPlane } from '../stream/harness.testing.ts';
import type { IssuedPeer, TestControlPlane } from '../stream/harness.testing.ts';
import { eventsIngestPlugin } from './index.ts';

function event(accessTier: string, i: number, extra: Partial<AccessEvent> = {}): AccessEvent {
  return { id: newEventId(), time: new Date().toISOString(), type: 'access', decision: 'allow', reasons: ['policy-allow'], accessTier, source: `127.0.0.1:${10_000 + i}`, ...extra };
}

async function allEvents(store: Store): Promise<AccessEvent[]> {
  const out: AccessEvent[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await store.queryAccessEvents({ limit: 1000, ...(after === undefined ? {} : { after }) });
    out.push(...page.events);
    if (page.next === undefined) return out;
    after = page.next;
  }
}

async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

void describe('events ingest', () => {
  let cp: TestControlPlane;
  let edge: IssuedPeer;

  before(async () => {
    cp = await startTestControlPlane({ plugins: [(app, o) => eventsIngestPlugin(app, o)] });
    edge = await cp.issue('access-tier', { name: 'edge-1' });
  });
  after(() => cp.close());

  const post = (tls: PeerTlsMaterial, body: unknown): ReturnType<typeof requestControlPlane> => requestControlPlane({ baseUrl: cp.url, path: '/api/v1/events/batch', method: 'POST', body, tls });

  void test('an access tier\'s batch is stored once per id; sending it again counts duplicates', async () => {
    const send = httpEventSender({ controlPlaneUrl: cp.url, tls: () => edge });
    const batch = Array.from({ length: 50 }, (_, i) => event('edge-1', i, { user: 'u1', service: 'db' }));
    assert.deepEqual(await send(batch), { inserted: 50, duplicates: 0, rejected: 0 });
    assert.deepEqual(await send(batch), { inserted: 0, duplicates: 50, rejected: 0 });
    const stored = (await allEvents(cp.store)).filter((e) => batch.some((b) => b.id === e.id));
    assert.equal(stored.length, 50);
    assert.deepEqual(stored.find((e) => e.id === batch[3].id), batch[3]);
  });

  void test('events that name another access tier, or do not validate, are rejected; the rest are stored', async () => {
    const good = event('edge-1', 1);
    const foreign = event('edge-2', 2);
    const bad = { ...event('edge-1', 3), decision: 'maybe' };
    const r = await post(edge, { events: [good, foreign, bad, 'nonsense'] });
    assert.equal(r.status, 200);
    const body = r.body as { inserted: number; rejected: number; problems: Array<{ index: number; message: string }> };
    assert.deepEqual([body.inserted, body.rejected, body.problems.map((p) => p.index)], [1, 3, [1, 2, 3]]);
    assert.match(body.problems[0].message, /edge-2/);
  });

  void test('CA-03 a connector or trust certificate, or none, cannot send events', async () => {
    const dc1 = await cp.issue('connector', { name: 'dc1' });
    const trust = await cp.issue('trust', { user: 'u1', device: 'd1' });
    for (const tls of [dc1, trust, { caPem: cp.ca.certPem }]) {
      const r = await post(tls, { events: [event('dc1', 1)] });
      assert.equal(r.status, 401);
    }
  });

  void test('CA-06 a revoked access tier cannot send events', async () => {
    const revoked = await cp.issue('access-tier', { name: 'edge-1' });
    await cp.store.revokeCertificate(revoked.serial, { actor: 'test' });
    assert.equal((await post(revoked, { events: [event('edge-1', 1)] })).status, 401);
  });

  void test('CP-13 more than 1000 events, or more than 1 MiB, is 413', async () => {
    const many = Array.from({ length: 1001 }, (_, i) => event('edge-1', i));
    assert.equal((await post(edge, { events: many })).status, 413);
    const big = Array.from({ length: 600 }, (_, i) => event('edge-1', i, { closeReason: 'x'.repeat(1000), sni: 'y'.repeat(1000) }));
    assert.equal((await post(edge, { events: big })).status, 413);
  });
});

void describe('events ingest across a control-plane crash', () => {
  let dir: string;
  let child: ChildProcess | undefined;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-ingest-'));
  });
  after(async () => {
    child?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  void test('X-02 kill -9 of the control plane while an access tier ships: every event is stored, once', async () => {
    const passphrase = 'test-passphrase';
    const ca = await CertificateAuthority.create();
    const serving = await issueServingCertificate(ca, { publicUrl: 'https://127.0.0.1', listenHost: '127.0.0.1' });
    const edge = await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } });
    const dbPath = path.join(dir, 'cp.db');
    const configPath = path.join(dir, 'child.json');
    let port = 0;
    const script = fileURLToPath(new URL('./cp-child.testing.ts', import.meta.url));
    const startChild = async (): Promise<void> => {
      await writeFile(configPath, JSON.stringify({ dbPath, port, passphrase, ca: ca.exportEncrypted(passphrase), serving }));
      const c = spawn(process.execPath, [script, configPath], { stdio: ['ignore', 'pipe', 'inherit'] });
      child = c;
      port = await new Promise<number>((resolve, reject) => {
        let out = '';
        c.stdout?.setEncoding('utf8');
        c.stdout?.on('data', (chunk: string) => {
          out += chunk;
          const m = /ready (\d+)/.exec(out);
          if (m !== null) resolve(Number(m[1]));
        });
        c.once('exit', (code) => reject(new Error(`the control plane child exited with ${code}`)));
      });
    };
    const killChild = async (): Promise<void> => {
      const c = child;
      if (c === undefined) return;
      const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      c.kill('SIGKILL');
      await exited;
      child = undefined;
    };

    await startChild();
    const tls = { certPem: edge.certPem, keyPem: edge.keyPem, caPem: ca.certPem };
    const sink = await SpoolingEventSink.open({
      files: nodeSpoolFiles(path.join(dir, 'spool')),
      send: httpEventSender({ controlPlaneUrl: `https://127.0.0.1:${port}`, tls: () => tls, timeoutMs: 2000 }),
      flushIntervalMs: 5,
      backoff: { initialMs: 20, maxMs: 200 },
      idlePollMs: 20,
    });
    const written = new Set<string>();
    let writing = true;
    const writer = (async () => {
      let i = 0;
      while (writing) {
        for (let k = 0; k < 10; k++) {
          const e = event('edge-1', i++);
          written.add(e.id);
          sink.write(e);
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    try {
      for (let crash = 0; crash < 2; crash++) {
        const shippedBefore = sink.stats().shipped;
        await eventually(() => sink.stats().shipped > shippedBefore + 300, 'shipping under way');
        await killChild();
        await new Promise((r) => setTimeout(r, 100));
        await startChild();
      }
      writing = false;
      await writer;
      await sink.flush();
      await eventually(() => sink.stats().backlogBytes === 0 && sink.stats().lastError === undefined, 'the backlog shipped', 60_000);
      await sink.close();
      await killChild();
      const store = await openStore({ url: `sqlite:${dbPath}` });
      try {
        const stored = await allEvents(store);
        const ids = stored.map((e) => e.id);
        assert.equal(new Set(ids).size, ids.length, 'nothing stored twice');
        const missing = [...written].filter((id) => !ids.includes(id));
        assert.deepEqual(missing.length, 0, 'nothing lost');
        assert.equal(ids.length, written.size);
      } finally {
        await store.close();
      }
    } finally {
      writing = false;
      await writer;
      await killChild();
    }
  });
});
