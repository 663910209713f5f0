/**
 * The chain as separate processes, the way an operator runs it before the control plane exists:
 * `causeway access-tier`, `causeway connector` and `causeway proxy`, each from its own flags and the
 * same spec file, with the real kubectl through them (every binary, HTTPS_PROXY and proxy-url). The
 * fake API runs in the test process. Each process must stop on SIGTERM within a bounded time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CertificateAuthority, issueKeyAndCert } from '../../src/lib/pki/index.ts';
import { makeServerCert, makeTestCa } from '../kit/certs.ts';
import { startFakeKube } from '../kit/fake-kube/index.ts';
import type { FakeKube } from '../kit/fake-kube/index.ts';
import { DEFAULT_TEST_TOKEN, kubectlBinaries, repoRoot, runKubectl, writeKubeconfig } from '../kit/kubectl.ts';

const binaries = await kubectlBinaries();
const DOMAIN = 'kube.processes.causeway.test';
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

interface Causeway {
  name: string;
  child: ChildProcess;
  output: () => string;
  /** Resolves with the first output line matching, or rejects after READY_TIMEOUT_MS or on exit. */
  waitFor: (match: RegExp) => Promise<string>;
  /** SIGTERM; SIGKILL after STOP_TIMEOUT_MS. Resolves with how it ended. */
  stop: () => Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }>;
}

function startCauseway(name: string, args: string[], cwd: string): Causeway {
  const child = spawn(process.execPath, [join(repoRoot, 'src', 'main.ts'), ...args], { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const listeners = new Set<() => void>();
  const onData = (s: string): void => {
    text += s;
    for (const l of [...listeners]) l();
  };
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => {
    done = true;
    for (const l of [...listeners]) l();
  });
  let stopping: ReturnType<Causeway['stop']> | undefined;
  return {
    name,
    child,
    output: () => text,
    waitFor: (match) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`${name}: no output matching ${String(match)} within ${READY_TIMEOUT_MS} ms:\n${text}`)), READY_TIMEOUT_MS);
        const check = (): void => {
          const line = text.split('\n').find((l) => match.test(l));
          if (line !== undefined) finish(undefined, line);
          else if (done) finish(new Error(`${name} exited before printing ${String(match)}:\n${text}`));
        };
        const finish = (err?: Error, line?: string): void => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err !== undefined) reject(err);
          else resolve(line!);
        };
        listeners.add(check);
        check();
      }),
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return { ...(await exited), killed: false };
        child.kill('SIGTERM');
        let killed = false;
        const timer = setTimeout(() => {
          killed = true;
          child.kill('SIGKILL');
        }, STOP_TIMEOUT_MS);
        const how = await exited;
        clearTimeout(timer);
        return { ...how, killed };
      })()),
  };
}

async function writeAtomically(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

function specsYaml(accessTierAddress: string, kubeAddress: string, kubeCaPem: string): string {
  return [
    { apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge-1' }, spec: { cluster: 'ops', address: accessTierAddress } },
    { apiVersion: 'causeway/v1', kind: 'Connector', metadata: { name: 'dc1' }, spec: { cluster: 'ops', allowedCidrs: ['127.0.0.0/8'] } },
    {
      apiVersion: 'causeway/v1',
      kind: 'Service',
      metadata: { name: 'ops-k8s' },
      spec: {
        type: 'kubernetes',
        cluster: 'ops',
        accessTier: 'edge-1',
        connector: 'dc1',
        domain: DOMAIN,
        backend: { dnsOverride: kubeAddress },
        client: { listenPort: 8081, allowUserOverride: true },
        kubernetes: { clusterName: 'ops', caPublicKey: kubeCaPem },
      },
    },
  ]
    .map((o) => stringify(o))
    .join('---\n');
}

void describe('the chain as separate causeway processes', () => {
  let dir: string;
  let kube: FakeKube;
  let kubeCaPem: string;
  let proxyUrl: string;
  const processes: Causeway[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'causeway-processes-'));
    const ca = await CertificateAuthority.create({ commonName: 'causeway processes CA' });
    const write = async (base: string, m: { certPem: string; keyPem: string }): Promise<void> => {
      await writeFile(join(dir, `${base}.crt`), m.certPem);
      await writeFile(join(dir, `${base}.key`), m.keyPem, { mode: 0o600 });
    };
    await writeFile(join(dir, 'ca.crt'), ca.certPem);
    await write('edge-1', await issueKeyAndCert(ca, { type: 'access-tier', identity: { name: 'edge-1' } }));
    await write('dc1', await issueKeyAndCert(ca, { type: 'connector', identity: { name: 'dc1' } }));
    await write('trust', await issueKeyAndCert(ca, { type: 'trust', identity: { user: 'bob', device: 'desk-7' } }));

    const kubeCa = await makeTestCa({ commonName: 'processes cluster CA' });
    const kubeCert = await makeServerCert(kubeCa, { dnsNames: [DOMAIN] });
    kubeCaPem = kubeCa.certPem;
    kube = await startFakeKube({ certPem: kubeCert.certPem, keyPem: kubeCert.keyPem, caPem: kubeCa.certPem, bearerToken: DEFAULT_TEST_TOKEN });
    const kubeAddress = `127.0.0.1:${kube.port}`;
    const specs = join(dir, 'specs.yaml');
    // The access tier's port is known only once it listens: a placeholder until then.
    await writeAtomically(specs, specsYaml('127.0.0.1:1', kubeAddress, kubeCaPem));

    const tls = (base: string): string[] => ['--cert', join(dir, `${base}.crt`), '--key', join(dir, `${base}.key`), '--ca', join(dir, 'ca.crt')];
    const accessTier = startCauseway('access-tier', ['access-tier', '--name', 'edge-1', '--config', specs, '--listen', '127.0.0.1:0', '--events', join(dir, 'events.jsonl'), ...tls('edge-1')], dir);
    processes.push(accessTier);
    const listening = JSON.parse(await accessTier.waitFor(/"msg":"access tier listening"/)) as { address: { port: number } };
    const accessTierAddress = `127.0.0.1:${listening.address.port}`;
    await writeAtomically(specs, specsYaml(accessTierAddress, kubeAddress, kubeCaPem));

    const connector = startCauseway('connector', ['connector', '--name', 'dc1', '--config', specs, ...tls('dc1')], dir);
    processes.push(connector);
    const proxy = startCauseway('proxy', ['proxy', 'ops-k8s', '--config', specs, '--port', '0', ...tls('trust')], dir);
    processes.push(proxy);
    await connector.waitFor(/"msg":"tunnel up"/);
    const line = await proxy.waitFor(/^Proxying ops-k8s on 127\.0\.0\.1:\d+/);
    proxyUrl = `http://${/127\.0\.0\.1:\d+/.exec(line)![0]}`;
  });

  after(async () => {
    for (const p of processes) await p.stop();
    await kube?.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const bin of binaries) {
    for (const style of ['https-proxy', 'proxy-url'] as const) {
      void test(`kubectl ${bin.version} with ${style}: get pods and exec work through the three processes`, async () => {
        const kubeconfig = writeKubeconfig(dir, { server: `https://${DOMAIN}`, caPem: kubeCaPem, fileName: `kubeconfig-${style}`, ...(style === 'proxy-url' ? { proxyUrl } : {}) });
        const env: Record<string, string> = style === 'https-proxy' ? { HTTPS_PROXY: proxyUrl } : {};
        const pods = await runKubectl(bin.path, ['get', 'pods'], { kubeconfig, env, timeoutMs: 60_000 });
        assert.equal(pods.code, 0, pods.stderr);
        assert.match(pods.stdout, /^web-0\s+1\/1\s+Running/m);
        const exec = await runKubectl(bin.path, ['exec', 'web-1', '--', 'hostname'], { kubeconfig, env, timeoutMs: 60_000 });
        assert.equal(exec.code, 0, exec.stderr);
        assert.equal(exec.stdout, 'web-1\n');
      });
    }
  }

  void test('each process stops on SIGTERM, and the access tier wrote allow events for bob on desk-7', async () => {
    // The proxy and connector first, as their users would see it; the access tier flushes its events on the way out.
    for (const p of [...processes].reverse()) {
      const how = await p.stop();
      assert.equal(how.killed, false, `${p.name} did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${p.output()}`);
      assert.equal(how.code, 0, `${p.name} exited with ${String(how.code ?? how.signal)}:\n${p.output()}`);
    }
    const events = (await readFile(join(dir, 'events.jsonl'), 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { decision: string; service?: string; user?: string; device?: string; via?: string });
    const allowed = events.filter((e) => e.service === 'ops-k8s' && e.decision === 'allow');
    assert.ok(allowed.length >= binaries.length * 4, `events: ${JSON.stringify(events)}`);
    assert.ok(allowed.every((e) => e.user === 'bob' && e.device === 'desk-7' && e.via === 'connector'));
  });
});
