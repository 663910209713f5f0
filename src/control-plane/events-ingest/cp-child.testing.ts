/**
 * A control plane in its own process (SQLite file, the events-ingest plugin), for the X-02 test that
 * kills it with SIGKILL while access events are being shipped. Prints `ready <port>` when listening.
 *
 *     node cp-child.testing.ts <config.json>
 *     config: { dbPath, port, passphrase, ca: { certPem, encryptedKeyPem }, serving: { certPem, keyPem } }
 */
import { readFile } from 'node:fs/promises';
import { CertificateAuthority } from '../../lib/pki/index.ts';
import { createControlPlane } from '../server.ts';
import { openStore } from '../store/index.ts';
import { eventsIngestPlugin } from './index.ts';

interface ChildConfig {
  dbPath: string;
  port: number;
  passphrase: string;
  ca: { certPem: string; encryptedKeyPem: string };
  serving: { certPem: string; keyPem: string };
}

const config = JSON.parse(await readFile(process.argv[2], 'utf8')) as ChildConfig;
const store = await openStore({ url: `sqlite:${config.dbPath}` });
const ca = await CertificateAuthority.load(config.ca, config.passphrase);
const cp = await createControlPlane({ store, ca, publicUrl: `https://127.0.0.1:${config.port}`, plugins: [eventsIngestPlugin] });
const listener = await cp.listen({ host: '127.0.0.1', port: config.port, tls: config.serving });
process.stdout.write(`ready ${listener.port}\n`);
