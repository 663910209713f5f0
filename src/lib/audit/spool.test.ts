import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { newEventId } from './event.ts';
import type { AccessEvent, AuditEvent } from './event.ts';
import { SpoolingEventSink, nodeSpoolFiles } from './spool.ts';
import type { EventBatchSender, SpoolFiles, SpoolingEventSinkOptions } from './spool.ts';
import type { EventBatchResult } from './wire.ts';

const root = await mkdtemp(path.join(os.tmpdir(), 'causeway-spool-'));
after(() => rm(root, { recursive: true, force: true }));
let dirs = 0;
const freshDir = (): string => path.join(root, `spool-${dirs++}`);

function event(i: number): AccessEvent {
  return { id: newEventId(), time: new Date(1_700_000_000_000 + i).toISOString(), type: 'access', decision: 'allow', reasons: [`n-${i}`], accessTier: 'edge-1', source: `127.0.0.1:${i}` };
}

/** A control plane's event store in memory: once per id, like appendAccessEvents; can be down, or "crash" after storing. */
class Collector {
  readonly stored = new Map<string, AuditEvent>();
  readonly order: string[] = [];
  sends = 0;
  duplicates = 0;
  down = false;
  /** Store the batch, then fail the answer (the control plane died after its commit). */
  crashAfterCommit = 0;
  reject = new Set<string>();

  send: EventBatchSender = (events) => {
    this.sends++;
    if (this.down) return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    const result: EventBatchResult = { inserted: 0, duplicates: 0, rejected: 0 };
    for (const e of events) {
      if (this.reject.has(e.id)) {
        result.rejected++;
        continue;
      }
      if (this.stored.has(e.id)) {
        result.duplicates++;
        this.duplicates++;
      } else {
        this.stored.set(e.id, e);
        this.order.push(e.id);
        result.inserted++;
      }
    }
    if (this.crashAfterCommit > 0) {
      this.crashAfterCommit--;
      return Promise.reject(new Error('socket hang up'));
    }
    return Promise.resolve(result);
  };
}

async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const fast: Partial<SpoolingEventSinkOptions> = { flushIntervalMs: 5, idlePollMs: 20, backoff: { initialMs: 10, maxMs: 40 }, closeShipTimeoutMs: 500 };

void describe('SpoolingEventSink', () => {
  void test('ships every event once, in order, across segments, and deletes what is shipped', async () => {
    const dir = freshDir();
    const c = new Collector();
    const sink = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send: c.send, segmentBytes: 4096, batchEvents: 50, ...fast });
    const written = Array.from({ length: 2000 }, (_, i) => event(i));
    for (const e of written) sink.write(e);
    await eventually(() => c.stored.size === 2000, 'all events stored');
    await eventually(() => sink.stats().backlogBytes === 0, 'nothing left');
    assert.deepEqual(c.order, written.map((e) => e.id));
    assert.equal(c.duplicates, 0);
    assert.deepEqual(c.stored.get(written[7].id), written[7]);
    await sink.close();
    const files = await readdir(dir);
    assert.ok(files.filter((f) => f.endsWith('.jsonl')).length <= 2, `shipped segments are deleted: ${files.join(' ')}`);
    assert.equal((await stat(path.join(dir, 'cursor'))).mode & 0o777, 0o600);
  });

  void test('X-02 the control plane down, then up: every event arrives, none twice', async () => {
    const c = new Collector();
    c.down = true;
    const sink = await SpoolingEventSink.open({ files: nodeSpoolFiles(freshDir()), send: c.send, ...fast });
    const written: AccessEvent[] = [];
    for (let i = 0; i < 300; i++) {
      const e = event(i);
      written.push(e);
      sink.write(e);
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 15));
    }
    await sink.flush();
    await eventually(() => c.sends >= 3, 'retried while down');
    assert.equal(c.stored.size, 0);
    assert.ok(sink.stats().lastError !== undefined);
    c.down = false;
    for (let i = 300; i < 400; i++) {
      const e = event(i);
      written.push(e);
      sink.write(e);
    }
    await eventually(() => c.stored.size === 400, 'all events stored after the outage');
    assert.deepEqual(c.order, written.map((e) => e.id));
    assert.equal(c.duplicates, 0);
    await sink.close();
  });

  void test('X-02 a control plane that stores a batch and dies before answering gets it again and stores it once', async () => {
    const c = new Collector();
    c.crashAfterCommit = 2;
    const sink = await SpoolingEventSink.open({ files: nodeSpoolFiles(freshDir()), send: c.send, ...fast });
    const written = Array.from({ length: 120 }, (_, i) => event(i));
    for (const e of written) sink.write(e);
    await eventually(() => c.stored.size === 120 && sink.stats().backlogBytes === 0, 'all stored');
    assert.ok(c.duplicates > 0, 'the batch was sent again');
    assert.equal(c.order.length, 120);
    assert.deepEqual(new Set(c.order), new Set(written.map((e) => e.id)));
    await sink.close();
  });

  void test('X-02 a crash between the send and the cursor write sends that batch again on the next start, stored once', async () => {
    const dir = freshDir();
    const c = new Collector();
    const real = nodeSpoolFiles(dir);
    let stall = false;
    const stalling: SpoolFiles = { ...real, writeAtomic: (name, text) => (stall ? new Promise<void>(() => undefined) : real.writeAtomic(name, text)) };
    const first = await SpoolingEventSink.open({ files: stalling, send: c.send, ...fast });
    const written = Array.from({ length: 100 }, (_, i) => event(i));
    for (const e of written.slice(0, 40)) first.write(e);
    await eventually(() => c.stored.size === 40 && first.stats().backlogBytes === 0, 'first part stored');
    stall = true;
    for (const e of written.slice(40)) first.write(e);
    await first.flush();
    await eventually(() => c.stored.size === 100, 'sent, but the cursor never written');
    first.destroy(); // the crash

    const sendsBefore = c.sends;
    const second = await SpoolingEventSink.open({ files: real, send: c.send, ...fast });
    await eventually(() => second.stats().backlogBytes === 0 && c.sends > sendsBefore, 'resent after restart');
    assert.equal(c.duplicates, 60, 'exactly the unconfirmed batch was resent');
    assert.equal(c.order.length, 100);
    assert.deepEqual(c.order, written.map((e) => e.id));
    await second.close();
  });

  void test('X-02 kill -9 of the writing process: every acknowledged event arrives exactly once after a restart', async () => {
    const dir = freshDir();
    const c = new Collector();
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const { events } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events: AccessEvent[] };
        c.send(events).then(
          (result) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result)),
          () => res.writeHead(503).end(),
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/batch`;
      const script = fileURLToPath(new URL('./spool-child.testing.ts', import.meta.url));
      const child = spawn(process.execPath, [script, dir, url], { stdio: ['ignore', 'pipe', 'inherit'] });
      const acked: string[] = [];
      let buffer = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk: string) => {
        buffer += chunk;
        const lines = buffer.split('\n');
        buffer = lines.pop() ?? '';
        for (const line of lines) if (line.startsWith('ack ')) acked.push(line.slice(4));
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      await eventually(() => acked.length >= 2000 && c.stored.size > 0, 'the child wrote and shipped', 30_000);
      child.kill('SIGKILL');
      await exited;

      const sink = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send: c.send, ...fast });
      await eventually(() => sink.stats().backlogBytes === 0, 'the restarted spool shipped its backlog', 30_000);
      await sink.close();
      const missing = acked.filter((id) => !c.stored.has(id));
      assert.deepEqual(missing, [], 'no acknowledged event was lost');
      assert.equal(c.order.length, c.stored.size, 'none was stored twice');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  void test('a line torn by a crash is skipped; the lines around it ship', async () => {
    const dir = freshDir();
    const files = nodeSpoolFiles(dir);
    const good = [event(1), event(2), event(3)];
    await files.list();
    await writeFile(path.join(dir, 'events-000000000001.jsonl'), `${JSON.stringify(good[0])}\n{"id":"torn","ti\n${JSON.stringify(good[1])}\n`);
    await writeFile(path.join(dir, 'events-000000000002.jsonl'), `${JSON.stringify(good[2])}\n{"id":"half-writ`);
    const c = new Collector();
    const sink = await SpoolingEventSink.open({ files, send: c.send, ...fast });
    await eventually(() => c.stored.size === 3, 'the three good events');
    const later = event(4);
    sink.write(later);
    await eventually(() => c.stored.has(later.id), 'a later event, from the fresh segment');
    assert.deepEqual(c.order, [...good, later].map((e) => e.id));
    await sink.close();
  });

  void test('a cursor that cannot be read sends the spool again; the control plane stores each event once', async () => {
    const dir = freshDir();
    const c = new Collector();
    const first = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send: c.send, ...fast });
    for (let i = 0; i < 30; i++) first.write(event(i));
    await first.close();
    assert.equal(c.stored.size, 30);
    const extra = event(99);
    await writeFile(path.join(dir, 'events-000000000001.jsonl'), `${JSON.stringify(extra)}\n`, { flag: 'a' });
    await writeFile(path.join(dir, 'cursor'), '{"segm');
    const second = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send: c.send, ...fast });
    await eventually(() => c.stored.has(extra.id) && second.stats().backlogBytes === 0, 'resent');
    assert.equal(c.order.length, 31);
    await second.close();
  });

  void test('close() ships what it can; with the control plane down the rest waits on disk for the next start', async () => {
    const dir = freshDir();
    const c = new Collector();
    c.down = true;
    const first = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send: c.send, ...fast });
    const written = Array.from({ length: 10 }, (_, i) => event(i));
    for (const e of written) first.write(e);
    await first.close();
    assert.equal(c.stored.size, 0);
    const onDisk = (await readFile(path.join(dir, 'events-000000000001.jsonl'), 'utf8')).trim().split('\n');
    assert.equal(onDisk.length, 10);
    assert.throws(() => first.write(event(11)), { code: 'audit-sink-closed' });
    c.down = false;
    const second = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send: c.send, ...fast });
    await eventually(() => c.stored.size === 10, 'shipped by the next start');
    await second.close();
    assert.deepEqual(c.order, written.map((e) => e.id));
  });

  void test('a failing disk write keeps the events in memory and writes them later, in order', async () => {
    const dir = freshDir();
    const real = nodeSpoolFiles(dir);
    let failures = 2;
    const flaky: SpoolFiles = {
      ...real,
      openAppend: async (name) => {
        const writer = await real.openAppend(name);
        return { ...writer, append: (data) => (failures-- > 0 ? Promise.reject(Object.assign(new Error('no space'), { code: 'ENOSPC' })) : writer.append(data)) };
      },
    };
    const c = new Collector();
    const sink = await SpoolingEventSink.open({ files: flaky, send: c.send, ...fast });
    const written = Array.from({ length: 5 }, (_, i) => event(i));
    for (const e of written) sink.write(e);
    await assert.rejects(sink.flush(), { code: 'ENOSPC' });
    await eventually(() => c.stored.size === 5, 'written and shipped after the disk recovered', 10_000);
    assert.deepEqual(c.order, written.map((e) => e.id));
    await sink.close();
  });

  void test('events the control plane rejects are counted and dropped from the spool, the others stored', async () => {
    const c = new Collector();
    const sink = await SpoolingEventSink.open({ files: nodeSpoolFiles(freshDir()), send: c.send, ...fast });
    const written = Array.from({ length: 4 }, (_, i) => event(i));
    c.reject.add(written[1].id);
    for (const e of written) sink.write(e);
    await eventually(() => sink.stats().backlogBytes === 0 && c.stored.size === 3, 'shipped');
    assert.equal(sink.stats().rejected, 1);
    await sink.close();
  });
});
