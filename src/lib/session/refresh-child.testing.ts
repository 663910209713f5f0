/**
 * Test support only: one process of the concurrent-refresh test. Waits for the start file (so all
 * children race at once), then runs freshSession (or kubeToken with a cluster) on the session in
 * argv[2] and prints the access token (or kube token) it got, or the error code.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { SessionStore, freshSession, kubeToken } from './index.ts';

const [home, startFile, cluster] = process.argv.slice(2);
while (!existsSync(startFile)) await sleep(5);
const store = new SessionStore({ home });
try {
  if (cluster === undefined) process.stdout.write(`${(await freshSession(store)).accessToken}\n`);
  else process.stdout.write(`${(await kubeToken(store, cluster)).token}\n`);
} catch (err) {
  process.stdout.write(`error ${(err as { code?: string }).code ?? String(err)}\n`);
  process.exitCode = 1;
}
