/**
 * A process that writes access events into a spool as fast as it can and ships them to a collector
 * over plain HTTP, for the X-02 kill -9 test in spool.test.ts. After each flush it prints the ids
 * that are now acknowledged (on disk), one line each: `ack <id>`. The test kills it with SIGKILL.
 *
 *     node spool-child.testing.ts <spool dir> <collector url>
 */
import { request } from 'node:http';
import { newEventId } from './event.ts';
import type { AccessEvent } from './event.ts';
import { SpoolingEventSink, nodeSpoolFiles } from './spool.ts';
import type { EventBatchSender } from './spool.ts';
import type { EventBatchResult } from './wire.ts';

const [dir, collector] = process.argv.slice(2);

const send: EventBatchSender = (events) =>
  new Promise<EventBatchResult>((resolve, reject) => {
    const body = Buffer.from(JSON.stringify({ events }));
    const r = request(collector, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`collector answered ${res.statusCode}`));
        else resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as EventBatchResult);
      });
    });
    r.on('error', reject);
    r.end(body);
  });

const sink = await SpoolingEventSink.open({ files: nodeSpoolFiles(dir), send, flushIntervalMs: 5, backoff: { initialMs: 10, maxMs: 50 }, idlePollMs: 20 });
let n = 0;
process.stdout.write('ready\n');
for (;;) {
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const event: AccessEvent = { id: newEventId(), time: new Date().toISOString(), type: 'access', decision: 'allow', reasons: ['child'], accessTier: 'edge-1', source: `127.0.0.1:${n++}` };
    sink.write(event);
    ids.push(event.id);
  }
  await sink.flush();
  process.stdout.write(ids.map((id) => `ack ${id}\n`).join(''));
}
