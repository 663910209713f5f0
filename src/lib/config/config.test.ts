import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '../errors.ts';
import { createLogger } from '../log.ts';
import { parseSpecDocuments } from '../spec/index.ts';
import type { SpecObject } from '../spec/index.ts';
import { FileConfigSource, snapshotFromObjects, StaticConfigSource } from './index.ts';
import type { ConfigSnapshot, ConfigSource } from './index.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'causeway-config-'));
after(() => rm(dir, { recursive: true, force: true }));

let fileCounter = 0;
function freshPath(): string {
  return path.join(dir, `causeway-${fileCounter++}.yaml`);
}

function specText(options: { port?: number; services?: string[]; extra?: string } = {}): string {
  const services = (options.services ?? ['db']).map(
    (name) => `apiVersion: causeway/v1
kind: Service
metadata: {name: ${name}}
spec:
  type: tcp
  cluster: c1
  accessTier: edge-1
  domain: ${name}.example.com
  port: ${options.port ?? 5432}
  backend: {target: "${name}.internal:5432"}
  policy: {name: p}
`,
  );
  return [
    `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: c1, address: "edge.example.com:8443"}
`,
    `apiVersion: causeway/v1
kind: Role
metadata: {name: eng}
spec: {users: {groups: [eng]}}
`,
    `apiVersion: causeway/v1
kind: Policy
metadata: {name: p}
spec: {access: [{roles: [eng], trustLevel: Medium}]}
`,
    ...services,
    ...(options.extra === undefined ? [] : [options.extra]),
  ].join('---\n');
}

function objectsOf(text: string): SpecObject[] {
  const parsed = parseSpecDocuments(text);
  assert.ok(parsed.ok);
  return parsed.objects;
}

/** Resolves with the next snapshot the source announces; fails after a generous liveness bound. */
function nextSnapshot(source: ConfigSource, boundMs = 10_000): Promise<ConfigSnapshot> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no new snapshot within ${boundMs} ms`));
    }, boundMs);
    const unsubscribe = source.subscribe((snapshot) => {
      clearTimeout(timer);
      unsubscribe();
      resolve(snapshot);
    });
  });
}

/** Writes next to the file, then renames over it: what editors, `kubectl cp` and config managers do. */
async function replaceAtomically(file: string, text: string): Promise<void> {
  const temp = `${file}.tmp-${process.pid}`;
  await writeFile(temp, text);
  await rename(temp, file);
}

/** A pino destination that keeps every log record. */
function memoryLog(): { logger: ReturnType<typeof createLogger>; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') records.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: createLogger({ name: 'test', level: 'debug', destination }), records };
}

void describe('snapshotFromObjects', () => {
  void test('groups objects by kind, sorted by name', () => {
    const snapshot = snapshotFromObjects(objectsOf(specText({ services: ['zeta', 'alpha', 'mid'] })));
    assert.deepEqual(
      snapshot.services.map((s) => s.metadata.name),
      ['alpha', 'mid', 'zeta'],
    );
    assert.deepEqual(
      snapshot.accessTiers.map((s) => s.metadata.name),
      ['edge-1'],
    );
    assert.deepEqual(
      snapshot.roles.map((s) => s.metadata.name),
      ['eng'],
    );
    assert.deepEqual(
      snapshot.policies.map((s) => s.metadata.name),
      ['p'],
    );
    assert.deepEqual(snapshot.connectors, []);
    assert.deepEqual(snapshot.revokedSerials, []);
  });

  void test('versions by content: 16 hex characters, independent of document order, changed by any edit', () => {
    const a = snapshotFromObjects(objectsOf(specText({ services: ['one', 'two'] })));
    const b = snapshotFromObjects(objectsOf(specText({ services: ['two', 'one'] })));
    const c = snapshotFromObjects(objectsOf(specText({ services: ['one', 'two'], port: 5433 })));
    const d = snapshotFromObjects(objectsOf(specText({ services: ['one', 'two'] })), { revokedSerials: ['0A'] });
    assert.match(a.version, /^[0-9a-f]{16}$/);
    assert.equal(a.version, b.version);
    assert.notEqual(a.version, c.version);
    assert.notEqual(a.version, d.version);
  });

  void test('uses a given version and normalises revoked serials', () => {
    const snapshot = snapshotFromObjects([], { version: 'cp-42', revokedSerials: ['0A1B', '0a1b', '03'] });
    assert.equal(snapshot.version, 'cp-42');
    assert.deepEqual(snapshot.revokedSerials, ['03', '0a1b']);
  });

  void test('freezes the snapshot deeply without freezing the objects it was given', () => {
    const objects = objectsOf(specText());
    const snapshot = snapshotFromObjects(objects);
    assert.ok(Object.isFrozen(snapshot));
    assert.ok(Object.isFrozen(snapshot.services));
    assert.ok(Object.isFrozen(snapshot.services[0]?.spec.backend));
    assert.throws(() => {
      (snapshot.services as unknown[]).push({});
    }, TypeError);
    assert.ok(!Object.isFrozen(objects[0]));
  });
});

interface Harness {
  source: ConfigSource;
  /** Makes a new valid configuration available to the source. */
  publish(text: string): Promise<void>;
  close(): Promise<void>;
}

const implementations: Record<string, (initial: string) => Promise<Harness>> = {
  StaticConfigSource: (initial) => {
    const source = new StaticConfigSource();
    source.update(snapshotFromObjects(objectsOf(initial)));
    return Promise.resolve({
      source,
      publish: (text) => {
        source.update(snapshotFromObjects(objectsOf(text)));
        return Promise.resolve();
      },
      close: () => source.close(),
    });
  },
  FileConfigSource: async (initial) => {
    const file = freshPath();
    await writeFile(file, initial);
    const source = new FileConfigSource({ path: file, debounceMs: 20, pollIntervalMs: 200 });
    return { source, publish: (text) => replaceAtomically(file, text), close: () => source.close() };
  },
};

// One conformance suite, run against every implementation of ConfigSource.
for (const [name, make] of Object.entries(implementations)) {
  void describe(`${name} conformance`, () => {
    void test('ready() resolves with the first snapshot, which current() then returns', async () => {
      const h = await make(specText());
      try {
        const first = await h.source.ready();
        assert.equal(first.services[0]?.metadata.name, 'db');
        assert.equal(h.source.current(), first);
      } finally {
        await h.close();
      }
    });

    void test('announces a new configuration to subscribers, and current() follows', async () => {
      const h = await make(specText());
      try {
        const first = await h.source.ready();
        const next = nextSnapshot(h.source);
        await h.publish(specText({ services: ['db', 'cache'] }));
        const second = await next;
        assert.notEqual(second.version, first.version);
        assert.deepEqual(
          second.services.map((s) => s.metadata.name),
          ['cache', 'db'],
        );
        assert.equal(h.source.current(), second);
        assert.ok(Object.isFrozen(second.services[0]));
      } finally {
        await h.close();
      }
    });

    void test('does not announce a configuration whose content did not change', async () => {
      const h = await make(specText());
      try {
        await h.source.ready();
        const seen: string[] = [];
        h.source.subscribe((s) => seen.push(s.version));
        await h.publish(specText()); // same content, new write
        const next = nextSnapshot(h.source);
        await h.publish(specText({ port: 6000 }));
        const changed = await next;
        assert.deepEqual(seen, [changed.version], 'only the real change was announced');
      } finally {
        await h.close();
      }
    });

    void test('stops calling a listener once it unsubscribes', async () => {
      const h = await make(specText());
      try {
        await h.source.ready();
        let calls = 0;
        const unsubscribe = h.source.subscribe(() => calls++);
        unsubscribe();
        const next = nextSnapshot(h.source);
        await h.publish(specText({ port: 6001 }));
        await next;
        assert.equal(calls, 0);
      } finally {
        await h.close();
      }
    });
  });
}

void describe('StaticConfigSource', () => {
  void test('ready() waits for the first update', async () => {
    const source = new StaticConfigSource();
    const ready = source.ready();
    assert.equal(source.current(), undefined);
    const snapshot = snapshotFromObjects(objectsOf(specText()));
    source.update(snapshot);
    assert.equal(await ready, snapshot);
    await source.close();
  });

  void test('ready() rejects when closed before any configuration arrived', async () => {
    const source = new StaticConfigSource();
    const ready = source.ready();
    await source.close();
    await assert.rejects(ready, { code: 'config-closed' });
    await assert.rejects(source.ready(), { code: 'config-closed' });
  });

  void test('a throwing listener does not stop the others, and the update reports it', async () => {
    const source = new StaticConfigSource(snapshotFromObjects([]));
    const seen: string[] = [];
    source.subscribe(() => {
      throw new Error('listener bug');
    });
    source.subscribe((s) => seen.push(s.version));
    const next = snapshotFromObjects(objectsOf(specText()));
    assert.throws(() => source.update(next), /listener bug/);
    assert.deepEqual(seen, [next.version]);
    assert.equal(source.current(), next);
    await source.close();
  });

  void test('freezes snapshots it is given and ignores updates after close', async () => {
    const snapshot: ConfigSnapshot = { version: 'v1', services: [], accessTiers: [], connectors: [], policies: [], roles: [], revokedSerials: [] };
    const source = new StaticConfigSource(snapshot);
    assert.ok(Object.isFrozen(source.current()?.services));
    await source.close();
    source.update(snapshotFromObjects([], { version: 'v2' }));
    assert.equal(source.current()?.version, 'v1');
  });
});

void describe('FileConfigSource', () => {
  void test('loads the file at start', async () => {
    const file = freshPath();
    await writeFile(file, specText({ services: ['db', 'cache'] }));
    const source = new FileConfigSource({ path: file, watch: false, pollIntervalMs: 0 });
    try {
      const snapshot = await source.ready();
      assert.deepEqual(
        snapshot.services.map((s) => s.metadata.name),
        ['cache', 'db'],
      );
      assert.equal(snapshot.services[0]?.spec.backend.target, 'cache.internal:5432');
      assert.match(snapshot.version, /^[0-9a-f]{16}$/);
    } finally {
      await source.close();
    }
  });

  void test('reloads when the file is rewritten in place', async () => {
    const file = freshPath();
    await writeFile(file, specText());
    const source = new FileConfigSource({ path: file, debounceMs: 20, pollIntervalMs: 0 });
    try {
      await source.ready();
      const next = nextSnapshot(source);
      await writeFile(file, specText({ port: 7000 }));
      assert.equal((await next).services[0]?.spec.port, 7000);
    } finally {
      await source.close();
    }
  });

  void test('reloads when the file is replaced by an atomic rename', async () => {
    const file = freshPath();
    await writeFile(file, specText());
    const source = new FileConfigSource({ path: file, debounceMs: 20, pollIntervalMs: 0 });
    try {
      await source.ready();
      for (const port of [7001, 7002]) {
        const next = nextSnapshot(source);
        await replaceAtomically(file, specText({ port }));
        assert.equal((await next).services[0]?.spec.port, port);
      }
    } finally {
      await source.close();
    }
  });

  void test('picks up changes by polling when watching is off', async () => {
    const file = freshPath();
    await writeFile(file, specText());
    const source = new FileConfigSource({ path: file, watch: false, pollIntervalMs: 30 });
    try {
      await source.ready();
      const next = nextSnapshot(source);
      await replaceAtomically(file, specText({ port: 7003 }));
      assert.equal((await next).services[0]?.spec.port, 7003);
    } finally {
      await source.close();
    }
  });

  void test('a bad edit keeps the last good snapshot and logs every problem', async () => {
    const file = freshPath();
    await writeFile(file, specText());
    const { logger, records } = memoryLog();
    const source = new FileConfigSource({ path: file, logger, watch: false, pollIntervalMs: 0 });
    try {
      const good = await source.ready();
      let announced = 0;
      source.subscribe(() => announced++);
      // Two field problems and one reference problem in other documents: none may be applied.
      await writeFile(file, specText({ port: 70000, extra: 'apiVersion: causeway/v1\nkind: Role\nmetadata: {name: ops}\nspec: {users: {team: x}}\n' }));
      await source.reload();
      assert.equal(source.current(), good);
      const invalid = records.find((r) => Array.isArray(r.problems));
      assert.ok(invalid, 'the problems were logged');
      const lines = invalid.problems as string[];
      assert.ok(lines.some((l) => l.includes('spec.port: must be between 1 and 65535')));
      assert.ok(lines.some((l) => l.includes('spec.users.team: unknown field')));
      assert.match(String(invalid.msg), new RegExp(`keeping version ${good.version}`));

      await writeFile(file, specText({ extra: 'apiVersion: causeway/v1\nkind: Service\nmetadata: {name: orphan}\nspec: {type: tcp, cluster: c1, accessTier: edge-9, domain: o.example.com, backend: {target: "o:1"}, policy: {name: missing}}\n' }));
      await source.reload();
      assert.equal(source.current(), good, 'a reference problem is a problem too');
      const references = records.filter((r) => Array.isArray(r.problems)).at(-1)?.problems as string[];
      assert.ok(references.some((l) => l.includes('spec.accessTier')) && references.some((l) => l.includes('spec.policy.name')));

      await writeFile(file, specText({ port: 7004 }));
      await source.reload();
      assert.equal(source.current()?.services[0]?.spec.port, 7004);
      assert.equal(announced, 1, 'only the good edit was announced');
    } finally {
      await source.close();
    }
  });

  void test('a deleted file keeps the last good snapshot', async () => {
    const file = freshPath();
    await writeFile(file, specText());
    const source = new FileConfigSource({ path: file, watch: false, pollIntervalMs: 0 });
    try {
      const good = await source.ready();
      await unlink(file);
      await source.reload();
      assert.equal(source.current(), good);
    } finally {
      await source.close();
    }
  });

  void test('ready() rejects with config-missing when the file does not exist', async () => {
    const source = new FileConfigSource({ path: path.join(dir, 'absent.yaml'), watch: false, pollIntervalMs: 0 });
    try {
      await assert.rejects(source.ready(), (err: unknown) => err instanceof UserError && err.code === 'config-missing' && err.message.includes('absent.yaml'));
      assert.equal(source.current(), undefined);
    } finally {
      await source.close();
    }
  });

  void test('ready() rejects with config-invalid listing every problem when the first read is invalid', async () => {
    const file = freshPath();
    await writeFile(file, specText({ port: 0, extra: 'kind: Gadget\n' }));
    const source = new FileConfigSource({ path: file, watch: false, pollIntervalMs: 0 });
    try {
      await assert.rejects(source.ready(), (err: unknown) => {
        assert.ok(err instanceof UserError);
        assert.equal(err.code, 'config-invalid');
        assert.match(err.message, /spec\.port: must be between 1 and 65535/);
        assert.match(err.message, /unknown kind "Gadget"/);
        assert.match(err.message, /metadata: is required/);
        return true;
      });
    } finally {
      await source.close();
    }
  });

  void test('loads a file that appears after a failed start', async () => {
    const file = freshPath();
    const source = new FileConfigSource({ path: file, debounceMs: 20, pollIntervalMs: 50 });
    try {
      await assert.rejects(source.ready(), { code: 'config-missing' });
      const next = nextSnapshot(source);
      await replaceAtomically(file, specText());
      await next;
      assert.equal((await source.ready()).services.length, 1);
    } finally {
      await source.close();
    }
  });

  void test('reads through the injected reader and serialises concurrent reloads', async () => {
    let text = specText();
    let reads = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    const source = new FileConfigSource({
      path: '/nonexistent/causeway.yaml',
      watch: false,
      pollIntervalMs: 0,
      readFile: async () => {
        reads++;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await sleep(5);
        inFlight--;
        return text;
      },
    });
    try {
      await source.ready();
      text = specText({ port: 7100 });
      await Promise.all([source.reload(), source.reload(), source.reload()]);
      assert.equal(maxInFlight, 1);
      assert.ok(reads <= 3, `${reads} reads for one start and three overlapping reloads`);
      assert.equal(source.current()?.services[0]?.spec.port, 7100);
    } finally {
      await source.close();
    }
  });

  void test('logs a throwing listener and still tells the others', async () => {
    let text = specText();
    const { logger, records } = memoryLog();
    const source = new FileConfigSource({ path: 'x.yaml', logger, watch: false, pollIntervalMs: 0, readFile: () => Promise.resolve(text) });
    try {
      await source.ready();
      const seen: number[] = [];
      source.subscribe(() => {
        throw new Error('listener bug');
      });
      source.subscribe((s) => seen.push(s.services[0]?.spec.port ?? 0));
      text = specText({ port: 7200 });
      await source.reload();
      assert.deepEqual(seen, [7200]);
      assert.ok(records.some((r) => r.msg === 'a configuration listener failed'));
    } finally {
      await source.close();
    }
  });

  void test('close() stops watching and polling', async () => {
    const file = freshPath();
    await writeFile(file, specText());
    let reads = 0;
    const source = new FileConfigSource({
      path: file,
      debounceMs: 5,
      pollIntervalMs: 20,
      readFile: async (p) => {
        reads++;
        const { readFile } = await import('node:fs/promises');
        return readFile(p, 'utf8');
      },
    });
    await source.ready();
    let announced = 0;
    source.subscribe(() => announced++);
    await source.close();
    const readsAtClose = reads;
    await writeFile(file, specText({ port: 7300 }));
    await replaceAtomically(file, specText({ port: 7301 }));
    await sleep(200); // ten poll intervals and many debounce periods
    assert.equal(reads, readsAtClose, 'nothing read the file after close');
    assert.equal(announced, 0);
    assert.equal(source.current()?.services[0]?.spec.port, 5432);
  });
});
