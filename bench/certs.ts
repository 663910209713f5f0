/**
 * Certificates for the baselines (stunnel, nginx), made with the openssl command line so the
 * baselines do not depend on Causeway's own PKI: one CA and ECDSA P-256 leaf keys with SHA-256
 * signatures, the same key type and chain depth as Causeway's certificates.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface LeafFiles {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

export interface BaselinePki {
  caFile: string;
  caPem: string;
  /** A leaf for a DNS name, good for both server and client authentication. */
  leaf(name: string): LeafFiles;
}

export function createBaselinePki(dir: string): BaselinePki {
  const caKey = join(dir, 'ca.key');
  const caFile = join(dir, 'ca.pem');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-sha256',
    '-keyout', caKey, '-out', caFile, '-days', '2', '-subj', '/CN=Causeway bench baseline CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  let serial = 1;
  const leaves = new Map<string, LeafFiles>();
  return {
    caFile,
    caPem: readFileSync(caFile, 'utf8'),
    leaf(name: string): LeafFiles {
      const known = leaves.get(name);
      if (known !== undefined) return known;
      const base = join(dir, name.replace(/[^a-z0-9.-]/gi, '_'));
      const ext = `${base}.ext`;
      writeFileSync(ext, [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth,clientAuth',
        `subjectAltName=DNS:${name}`,
        '',
      ].join('\n'));
      openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${name}`]);
      openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', caFile, '-CAkey', caKey, '-set_serial', String(++serial),
        '-days', '2', '-sha256', '-extfile', ext, '-out', `${base}.pem`]);
      const files = {
        certFile: `${base}.pem`,
        keyFile: `${base}.key`,
        certPem: readFileSync(`${base}.pem`, 'utf8'),
        keyPem: readFileSync(`${base}.key`, 'utf8'),
      };
      leaves.set(name, files);
      return files;
    },
  };
}

function openssl(args: string[]): void {
  const result = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30_000 });
  if (result.status !== 0) {
    throw new Error(`openssl ${args[0]} failed: ${result.error?.message ?? result.stderr}`);
  }
}
