import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { coalesce, TaskSet } from './tasks.ts';

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

void describe('coalesce', () => {
  void test('calls during a pass share it and ask for exactly one more pass, however many they are', async () => {
    let passes = 0;
    let current = gate();
    const runner = coalesce(async () => {
      passes += 1;
      await current.promise;
    });
    const first = runner.run();
    const during = [runner.run(), runner.run(), runner.run()];
    assert.equal(passes, 1);
    for (const p of during) assert.equal(p, first);
    const firstGate = current;
    current = gate();
    firstGate.open();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(passes, 2);
    current.open();
    await first;
    assert.equal(passes, 2);
    await runner.run();
    assert.equal(passes, 3);
  });

  void test('a closed runner starts nothing, and settled waits for the pass in progress without failing', async () => {
    let closed = false;
    const g = gate();
    let passes = 0;
    const runner = coalesce(async () => {
      passes += 1;
      await g.promise;
      throw new Error('the task failed');
    }, () => closed);
    const running = runner.run();
    closed = true;
    assert.equal(runner.run(), running);
    g.open();
    await runner.settled();
    await assert.rejects(running, /the task failed/);
    await runner.run();
    assert.equal(passes, 1);
  });
});

void describe('TaskSet', () => {
  void test('idle waits for tracked work, including work started while waiting', async () => {
    const tasks = new TaskSet();
    const order: string[] = [];
    const second = gate();
    const first = gate();
    void tasks.track(first.promise.then(() => {
      order.push('first');
      void tasks.track(second.promise.then(() => order.push('second')));
    }));
    assert.equal(tasks.busy, true);
    const idle = tasks.idle().then(() => order.push('idle'));
    first.open();
    await new Promise((resolve) => setImmediate(resolve));
    second.open();
    await idle;
    assert.deepEqual(order, ['first', 'second', 'idle']);
    assert.equal(tasks.busy, false);
  });

  void test('a rejected task is forgotten like a resolved one and idle does not throw', async () => {
    const tasks = new TaskSet();
    await assert.rejects(tasks.track(Promise.reject(new Error('no'))));
    await tasks.idle();
    assert.equal(tasks.busy, false);
  });
});
