/**
 * The handshake load generator, in its own process so its CPU is not the benchmark's: on request,
 * keeps `concurrency` full TLS 1.3 handshakes with a client certificate in flight for `seconds`,
 * sends the server's small request after each and waits for the first byte of the answer.
 * The secure context is built once; no session is ever offered for resumption.
 */
import { createSecureContext, connect } from 'node:tls';
import type { SecureContext } from 'node:tls';
import { serveParent } from './parent-channel.ts';

interface RunRequest {
  host: string;
  port: number;
  servername: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  request: string;
  seconds: number;
  concurrency: number;
}

function handshake(run: RunRequest, secureContext: SecureContext, request: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: run.host,
      port: run.port,
      servername: run.servername,
      secureContext,
      minVersion: 'TLSv1.3',
      // The chain is verified against the CA; the name check differs per server (DNS SAN for nginx,
      // a type and name URI for the access tier) and is not what is being measured.
      checkServerIdentity: () => undefined,
    });
    socket.setNoDelay(true);
    const timer = setTimeout(() => done(new Error('no answer within 10 s')), 10_000);
    const done = (err?: Error): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => {});
      socket.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    socket.once('secureConnect', () => socket.write(request));
    socket.once('data', () => done());
    socket.once('error', (err: Error) => done(err));
    socket.once('close', () => done(new Error('closed before answering')));
  });
}

async function runLoad(message: Record<string, unknown>): Promise<Record<string, unknown>> {
  const run = message as unknown as RunRequest;
  const secureContext = createSecureContext({ ca: run.caPem, cert: run.certPem, key: run.keyPem, minVersion: 'TLSv1.3' });
  const request = Buffer.from(run.request, 'latin1');
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  const deadline = start + run.seconds * 1000;
  let completed = 0;
  let failed = 0;
  let lastError: string | undefined;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      try {
        await handshake(run, secureContext, request);
        completed++;
      } catch (err) {
        failed++;
        lastError = err instanceof Error ? err.message : String(err);
        if (failed > 50 && completed === 0) return;
      }
    }
  };
  await Promise.all(Array.from({ length: run.concurrency }, worker));
  const cpu = process.cpuUsage(cpuStart);
  return { completed, failed, lastError, seconds: (performance.now() - start) / 1000, cpuMicros: cpu.user + cpu.system };
}

serveParent({}, () => Promise.resolve(), { run: runLoad });
