import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { newEventId } from './event.ts';
import type { AccessEvent, AccessEventSink } from './event.ts';
import { JsonLinesFileSink } from './json-lines-sink.ts';
import { MemoryEventSink } from './memory-sink.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-audit-'));
after(() => rm(dir, { recursive: true, force: true }));

function event(i: number, extra: Partial<AccessEvent> = {}): AccessEvent {
  return { id: newEventId(), time: new Date(1_700_000_000_000 + i).toISOString(), type: 'access', decision: i % 2 === 0 ? 'allow' : 'deny', reasons: [`reason-${i}`], accessTier: 'edge-1', source: `127.0.0.1:${1000 + i}`, ...extra };
}

interface Harness {
  sink: AccessEventSink;
  /** The events as the sink's reader would see them, after close. */
  readBack: () => Promise<AccessEvent[]>;
}

let counter = 0;
const implementations: Record<string, () => Promise<Harness>> = {
  MemoryEventSink: () => {
    const sink = new MemoryEventSink();
    return Promise.resolve({ sink, readBack: () => Promise.resolve(sink.events) });
  },
  JsonLinesFileSink: async () => {
    const file = path.join(dir, `events-${counter++}.jsonl`);
    const sink = await JsonLinesFileSink.open({ path: file, flushIntervalMs: 20, batchBytes: 4096 });
    return {
      sink,
      readBack: async () => (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AccessEvent),
    };
  },
};

// One conformance suite, run against every implementation of AccessEventSink.
for (const [name, make] of Object.entries(implementations)) {
  void describe(`${name} conformance`, () => {
    void test('every event written before close is read back once, in order, unchanged', async () => {
      const { sink, readBack } = await make();
      const written = Array.from({ length: 2000 }, (_, i) => event(i));
      for (const e of written) sink.write(e);
      await sink.close();
      assert.deepEqual(await readBack(), written);
    });

    void test('hostile strings (CR/LF, quotes, format directives, ANSI escapes) stay data inside one record', async () => {
      const { sink, readBack } = await make();
      const nasty = 'evil\r\n{"decision":"allow"}\u001b[31m %s %d ${x} "\'\u0000';
      const e = event(1, { sni: nasty, target: nasty, user: nasty, closeReason: nasty });
      sink.write(e);
      sink.write(event(2));
      await sink.close();
      const back = await readBack();
      assert.equal(back.length, 2);
      assert.deepEqual(back[0], e);
    });

    void test('writing after close throws a coded error instead of losing the event silently', async () => {
      const { sink } = await make();
      await sink.close();
      assert.throws(() => sink.write(event(0)), { code: 'audit-sink-closed' });
    });
  });
}

void describe('JsonLinesFileSink', () => {
  void test('writes batches without waiting for close, and appends to an existing file', async () => {
    const file = path.join(dir, 'append.jsonl');
    const first = await JsonLinesFileSink.open({ path: file, flushIntervalMs: 10 });
    first.write(event(1));
    await first.flush();
    assert.equal(first.stats().written, 1);
    assert.equal((await readFile(file, 'utf8')).split('\n').length, 2);
    await first.close();
    const second = await JsonLinesFileSink.open({ path: file });
    second.write(event(2));
    await second.close();
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as AccessEvent);
    assert.deepEqual(lines.map((l) => l.reasons[0]), ['reason-1', 'reason-2']);
  });

  void test('creates the file readable by its owner only', async () => {
    const file = path.join(dir, 'mode.jsonl');
    const sink = await JsonLinesFileSink.open({ path: file });
    await sink.close();
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  void test('an unwritable path is a UserError that names the path', async () => {
    const notADirectory = path.join(dir, 'plain-file');
    await writeFile(notADirectory, '');
    const file = path.join(notADirectory, 'events.jsonl');
    await assert.rejects(JsonLinesFileSink.open({ path: file }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'audit-file-unwritable');
      assert.match(err.message, /plain-file\/events\.jsonl/);
      return true;
    });
  });
});

void describe('newEventId', () => {
  void test('is a UUID v7 whose prefix orders by time', () => {
    const a = newEventId(1_700_000_000_000);
    const b = newEventId(1_700_000_000_001);
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(a < b);
    assert.equal(parseInt(a.replaceAll('-', '').slice(0, 12), 16), 1_700_000_000_000);
    assert.notEqual(newEventId(5), newEventId(5));
  });
});

void describe('MemoryEventSink', () => {
  void test('waitFor resolves with a later matching event and rejects with a coded error on timeout', async () => {
    const sink = new MemoryEventSink();
    const waiting = sink.waitFor((e) => e.reasons.includes('reason-3'));
    sink.write(event(2));
    sink.write(event(3));
    assert.equal((await waiting).reasons[0], 'reason-3');
    await assert.rejects(sink.waitFor((e) => e.service === 'none', 20), { code: 'audit-wait-timeout' });
  });
});
