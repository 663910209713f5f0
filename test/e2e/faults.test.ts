/**
 * Faults and denials through the whole chain, with the real kubectl (one version is enough: these are
 * about the chain, not about kubectl). Every wait is bounded: a test that would hang fails instead.
 * The cases run in order on one chain; each leaves the chain whole again for the next.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AccessEvent } from '../../src/lib/audit/index.ts';
import { CertificateAuthority, issueKeyAndCert } from '../../src/lib/pki/index.ts';
import { CHAIN_NAMES, startChain } from '../kit/chain.ts';
import type { Chain, KubectlSetup } from '../kit/chain.ts';
import { kubectlBinaries, runKubectl, spawnKubectl } from '../kit/kubectl.ts';
import type { KubectlResult } from '../kit/kubectl.ts';

const [bin] = await kubectlBinaries();
const RUN_TIMEOUT_MS = 30_000;

function timeout(ms: number, what: string): { promise: Promise<never>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  const t = timeout(ms, what);
  try {
    return await Promise.race([work, t.promise]);
  } finally {
    t.cancel();
  }
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A raw CONNECT to a local proxy; resolves with the status line and headers of its answer. */
function rawConnect(port: number, authority: string): Promise<{ status: number; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to CONNECT ${authority} within 15 s; got ${JSON.stringify(data)}`));
    }, 15_000);
    socket.setEncoding('latin1');
    socket.once('connect', () => socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    socket.on('data', (s: string) => {
      data += s;
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0), head: data.slice(0, end) });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

void describe(`faults and denials through the whole chain (kubectl ${bin?.version ?? 'missing'})`, () => {
  let chain: Chain;
  let setup: KubectlSetup;
  const kubectl = (args: string[], s: KubectlSetup = setup): Promise<KubectlResult> =>
    runKubectl(bin.path, [...args, '--request-timeout=10s'], { kubeconfig: s.kubeconfig, env: s.env, timeoutMs: RUN_TIMEOUT_MS });
  const getPodsWorks = async (s: KubectlSetup = setup): Promise<void> => {
    const r = await kubectl(['get', 'pods', '-o', 'name'], s);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^pod\/web-0$/m);
  };
  const eventsAfter = (mark: number, match: (e: AccessEvent) => boolean): AccessEvent[] => chain.eventsSince(mark).filter(match);

  before(async () => {
    assert.ok(bin !== undefined, 'a kubectl binary is needed');
    chain = await startChain();
    setup = chain.kubectlSetup('https-proxy');
  });
  after(async () => {
    await chain?.close();
  });

  void test('a connector killed while get pods -w runs ends the watch promptly and leaves nothing open', async (t) => {
    const proc = await spawnKubectl(bin.path, ['get', 'pods', '-w'], { kubeconfig: setup.kubeconfig, env: setup.env });
    t.after(() => proc.close());
    await proc.waitForLine(/^web-2\s/);
    await chain.kube.waitForRequest((q) => q.query.get('watch') === 'true');
    await until(() => chain.accessTier.liveConnections().length > 0, 5000, 'the watch connection being live');
    const mark = chain.events.events.length;

    chain.killConnector();
    const exit = await within(15_000, 'kubectl get -w exiting after the connector was killed', proc.exited);
    assert.ok(exit.code !== null || exit.signal !== null);
    await until(() => chain.accessTier.liveConnections().length === 0 && chain.proxy.stats().active === 0, 5000, 'every relayed connection closing');
    const ended = eventsAfter(mark, (e) => e.service === CHAIN_NAMES.service && e.decision === 'allow');
    assert.ok(ended.length >= 1, 'the cut watch connection is recorded');
    assert.ok(ended.every((e) => typeof e.closeReason === 'string' && e.closeReason !== ''), JSON.stringify(ended));
  });

  void test('with the connector gone, get pods fails with an answer instead of hanging', async () => {
    const mark = chain.events.events.length;
    const r = await kubectl(['get', 'pods']);
    assert.notEqual(r.code, 0);
    assert.equal(r.timedOut, false, 'kubectl was answered, not left waiting');
    const refused = eventsAfter(mark, (e) => e.service === CHAIN_NAMES.service);
    assert.ok(refused.length >= 1);
    assert.ok(refused.every((e) => /no-connector-tunnel/.test(`${e.closeReason ?? ''} ${e.reasons.join(' ')}`)), JSON.stringify(refused));
  });

  void test('a restarted connector serves a new get pods within 2 s of starting', async () => {
    const started = Date.now();
    await chain.startConnector();
    // Attempts may start only within 2 s of the restart; one of them must succeed.
    let last: KubectlResult | undefined;
    while (Date.now() - started <= 2000) {
      last = await kubectl(['get', 'pods', '-o', 'name']);
      if (last.code === 0) break;
    }
    assert.equal(last?.code, 0, `no get pods started within 2 s of the connector restart succeeded; last stderr: ${last?.stderr ?? ''}`);
    assert.match(last.stdout, /^pod\/web-0$/m);
  });

  void test('with the API server down, kubectl fails and the access tier answers 502 backend-unreachable', async () => {
    await chain.stopKube();
    try {
      const mark = chain.events.events.length;
      const r = await kubectl(['get', 'pods']);
      assert.notEqual(r.code, 0);
      assert.equal(r.timedOut, false);
      const failed = eventsAfter(mark, (e) => e.service === CHAIN_NAMES.service);
      assert.ok(failed.length >= 1);
      assert.ok(failed.every((e) => (e.closeReason ?? '').startsWith('backend-unreachable')), JSON.stringify(failed));

      const answer = await rawConnect(chain.proxy.port(), `${chain.domain}:443`);
      assert.equal(answer.status, 502, answer.head);
      assert.match(answer.head, /^X-Causeway-Reason: backend-unreachable$/im);
    } finally {
      await chain.startKube();
    }
    await getPodsWorks();
  });

  void test('after the access tier restarts on its port, the next get pods works (the connector reconnects)', async () => {
    const tier = await chain.restartAccessTier();
    assert.equal(`127.0.0.1:${tier.port()}`, chain.accessTierAddress);
    await getPodsWorks();
    await getPodsWorks(chain.kubectlSetup('proxy-url'));
  });

  void test('CA-02 a trust cert from another CA: kubectl fails, the denial is recorded, nothing crashes', async () => {
    const other = await CertificateAuthority.create({ commonName: 'causeway e2e CA' });
    const foreign = await issueKeyAndCert(other, { type: 'trust', identity: { user: CHAIN_NAMES.user, device: CHAIN_NAMES.device } });
    const proxy = await chain.startProxy({ certPem: foreign.certPem, keyPem: foreign.keyPem, caPem: chain.ca.certPem });
    const mark = chain.events.events.length;
    const r = await kubectl(['get', 'pods'], chain.kubectlSetup('https-proxy', `http://127.0.0.1:${proxy.port()}`));
    assert.notEqual(r.code, 0);
    assert.equal(r.timedOut, false);
    const denied = await chain.events.waitFor((e) => chain.events.events.indexOf(e) >= mark && e.decision === 'deny', 5000);
    assert.deepEqual(denied.reasons, ['cert-unknown-ca']);
    assert.equal(eventsAfter(mark, (e) => e.decision === 'allow' && e.service === CHAIN_NAMES.service).length, 0);
    await getPodsWorks();
  });

  void test('CA-03 a connector certificate used as a trust cert: kubectl fails, the denial is recorded, nothing crashes', async () => {
    const connectorCert = await chain.issue('connector', { name: CHAIN_NAMES.connector });
    const proxy = await chain.startProxy(connectorCert);
    const mark = chain.events.events.length;
    const r = await kubectl(['get', 'pods'], chain.kubectlSetup('proxy-url', `http://127.0.0.1:${proxy.port()}`));
    assert.notEqual(r.code, 0);
    assert.equal(r.timedOut, false);
    const denied = await chain.events.waitFor((e) => chain.events.events.indexOf(e) >= mark && e.decision === 'deny', 5000);
    assert.deepEqual(denied.reasons, ['cert-wrong-type']);
    assert.equal(eventsAfter(mark, (e) => e.decision === 'allow' && e.service === CHAIN_NAMES.service).length, 0);
    await getPodsWorks();
  });
});
