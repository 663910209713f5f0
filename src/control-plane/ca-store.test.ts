import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorCode } from '../lib/errors.ts';
import { generateKeyPair } from '../lib/pki/index.ts';
import { CA_SETTING_KEY, caPin, decodeCa, encodeCa, loadOrCreateCa, storedCaExists } from './ca-store.ts';
import { openStore } from './store/index.ts';

void describe('the CA in the store', () => {
  void test('the first call creates the CA, later calls load the same one', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    assert.equal(await storedCaExists(store), false);
    const first = await loadOrCreateCa(store, { passphrase: 'correct horse' });
    assert.equal(first.created, true);
    const second = await loadOrCreateCa(store, { passphrase: 'correct horse' });
    assert.equal(second.created, false);
    assert.equal(second.ca.certPem, first.ca.certPem);
    const issued = await second.ca.issue({ type: 'connector', identity: { name: 'dc1' }, publicKeyPem: (await generateKeyPair()).publicKeyPem });
    assert.ok(new X509Certificate(issued.certPem).checkIssued(first.ca.certificate), 'the loaded CA signs as the created one');
  });

  void test('CP-16: the stored value holds the key encrypted and no PRIVATE KEY marker', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    await loadOrCreateCa(store, { passphrase: 'p' });
    const stored = await store.getSetting(CA_SETTING_KEY);
    assert.ok(stored !== undefined);
    assert.doesNotMatch(stored, /PRIVATE KEY/);
    const value = JSON.parse(stored) as { encryptedKeyDer: string };
    assert.ok(value.encryptedKeyDer.length > 100);
    const audit = await store.queryAuditEvents({ kind: 'Setting' });
    assert.deepEqual(audit.events.map((e) => [e.name, e.before, e.after]), [['ca', null, null]], 'the audit says it was created, not what it is');
  });

  void test('a wrong passphrase says to give every replica the same one', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    await loadOrCreateCa(store, { passphrase: 'one' });
    await assert.rejects(loadOrCreateCa(store, { passphrase: 'two' }), (err: Error) => errorCode(err) === 'CA_KEY_DECRYPT_FAILED' && /every replica/.test(err.message));
  });

  void test('garbage in the setting is CA_STORED_INVALID', async () => {
    await assert.rejects(decodeCa('not json', { passphrase: 'p' }), (err: Error) => errorCode(err) === 'CA_STORED_INVALID');
    await assert.rejects(decodeCa(JSON.stringify({ format: 2 }), { passphrase: 'p' }), (err: Error) => errorCode(err) === 'CA_STORED_INVALID');
  });

  void test('encode and decode round-trip', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const { ca } = await loadOrCreateCa(store, { passphrase: 'p' });
    const again = await decodeCa(encodeCa(ca, 'q'), { passphrase: 'q' });
    assert.equal(again.certPem, ca.certPem);
  });

  void test('replicas racing on first start end up with one CA', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'causeway-ca-store-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const url = `sqlite:${join(dir, 'causeway.db')}`;
    const stores = await Promise.all([openStore({ url }), openStore({ url }), openStore({ url })]);
    t.after(() => Promise.all(stores.map((s) => s.close())).then(() => undefined));
    const results = await Promise.all(stores.map((store) => loadOrCreateCa(store, { passphrase: 'shared' })));
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal(new Set(results.map((r) => r.ca.certPem)).size, 1);
  });

  void test('the pin is sha256 and the lower-case hex of the certificate DER hash', async (t) => {
    const store = await openStore({ url: ':memory:' });
    t.after(() => store.close());
    const { ca } = await loadOrCreateCa(store, { passphrase: 'p' });
    assert.equal(caPin(ca.certPem), `sha256:${ca.certificate.fingerprint256.replace(/:/g, '').toLowerCase()}`);
  });
});
