/**
 * nginx as the handshake-rate baseline: TLS 1.3, ECDSA P-256 server certificate, `ssl_verify_client
 * on` against the baseline CA, one worker process (the access tier is one Node process; both get
 * the same single core's worth of work), session settings left at nginx's defaults (the client
 * never resumes, so every handshake is a full one), a fixed tiny answer (421) to the one request
 * the client sends after each handshake, and the access log on (nginx's default), as the access
 * tier records an access event for every refused CONNECT.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BaselinePki } from '../certs.ts';
import { freePort } from '../ports.ts';
import type { ProcessGroup } from '../processes.ts';
import type { HandshakeServer } from './handshake-server.ts';

const SERVER_NAME = 'nginx.bench.test';
const CLIENT_NAME = 'client.nginx.bench.test';

export async function startNginxHandshakeServer(options: {
  nginxPath: string;
  version: string;
  pki: BaselinePki;
  group: ProcessGroup;
  dir: string;
}): Promise<HandshakeServer> {
  const { pki, group } = options;
  const dir = join(options.dir, 'nginx');
  mkdirSync(join(dir, 'temp'), { recursive: true });
  const server = pki.leaf(SERVER_NAME);
  const client = pki.leaf(CLIENT_NAME);
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, `
worker_processes 1;
daemon off;
master_process on;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log ${join(dir, 'access.log')};
  client_body_temp_path ${join(dir, 'temp')};
  proxy_temp_path ${join(dir, 'temp')};
  fastcgi_temp_path ${join(dir, 'temp')};
  uwsgi_temp_path ${join(dir, 'temp')};
  scgi_temp_path ${join(dir, 'temp')};
  server {
    listen 127.0.0.1:${port} ssl;
    server_name ${SERVER_NAME};
    ssl_protocols TLSv1.3;
    ssl_certificate ${server.certFile};
    ssl_certificate_key ${server.keyFile};
    ssl_client_certificate ${pki.caFile};
    ssl_verify_client on;
    keepalive_timeout 0;
    location / { return 421; }
  }
}
`);
  const process = group.start({
    name: 'nginx',
    command: options.nginxPath,
    args: ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')],
    logFile: join(dir, 'stdout.log'),
  });
  await process.waitForListening(port);
  return {
    column: 'nginx',
    description: `${options.version}, one worker, ssl_verify_client on, TLS 1.3, ECDSA P-256`,
    host: '127.0.0.1',
    port,
    servername: SERVER_NAME,
    caPem: pki.caPem,
    certPem: client.certPem,
    keyPem: client.keyPem,
    request: Buffer.from(`GET / HTTP/1.1\r\nHost: ${SERVER_NAME}\r\nConnection: close\r\n\r\n`),
    process,
  };
}
