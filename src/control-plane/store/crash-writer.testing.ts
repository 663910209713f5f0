/**
 * A child process for the CP-15 test in sqlite.test.ts: writes to the store in a loop until it is
 * killed. Each round applies two objects in one transaction, then appends a batch of ten access
 * events, and only then prints the round number: a printed round is an acknowledged write.
 *
 *     node crash-writer.testing.ts /path/to/causeway.db
 */
import { openStore } from './index.ts';

const file = process.argv[2];
if (file === undefined) throw new Error('usage: crash-writer.testing.ts DATABASE_FILE');
const store = await openStore({ url: `sqlite:${file}` });
// Big enough that each write spans several pages of the database.
const padding = 'x'.repeat(16 * 1024);
for (let round = 1; ; round++) {
  await store.applyObjects(
    [
      { kind: 'Crash', name: 'a', spec: { round, padding } },
      { kind: 'Crash', name: 'b', spec: { round, padding } },
    ],
    { actor: 'crash-writer' },
  );
  await store.appendAccessEvents(
    Array.from({ length: 10 }, (_, i) => ({
      id: `round-${round}-${i}`,
      time: new Date().toISOString(),
      type: 'access' as const,
      decision: 'allow' as const,
      reasons: [padding.slice(0, 512)],
      accessTier: 'edge-1',
      source: '127.0.0.1:1',
    })),
  );
  process.stdout.write(`${round}\n`);
}
