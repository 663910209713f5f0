import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { deviceManagerSpec, durationMs, secretRef } from './device-manager.ts';
import { formatProblems, parseSpecDocuments, stringifySpecs } from './index.ts';

function problems(value: unknown): Array<{ path: string; message: string }> {
  const result = deviceManagerSpec.safeParse(value);
  if (result.success) return [];
  return result.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message }));
}

const intune = { type: 'intune', tenantId: 'contoso.onmicrosoft.com', clientId: 'app', clientSecret: { env: 'INTUNE_SECRET' } };

void describe('DeviceManager spec', () => {
  void test('an Intune manager gets the Graph and login defaults and a 20 minute sync', () => {
    const parsed = deviceManagerSpec.parse(intune);
    assert.deepEqual(parsed, { ...intune, syncInterval: '20m', graphUrl: 'https://graph.microsoft.com', loginUrl: 'https://login.microsoftonline.com' });
  });

  void test('Jamf, CrowdStrike and HTTP managers parse with their defaults', () => {
    assert.equal(deviceManagerSpec.parse({ type: 'jamf', url: 'https://corp.jamfcloud.com/', clientId: 'c', clientSecret: { file: '/etc/causeway/jamf' } }).type, 'jamf');
    const jamf = deviceManagerSpec.parse({ type: 'jamf', url: 'https://corp.jamfcloud.com/', clientId: 'c', clientSecret: { file: '/etc/causeway/jamf' }, compliantGroup: 'Compliant Macs' });
    assert.equal(jamf.type === 'jamf' && jamf.url, 'https://corp.jamfcloud.com');
    const cs = deviceManagerSpec.parse({ type: 'crowdstrike', clientId: 'c', clientSecret: { env: 'FALCON' }, minimumScore: 70 });
    assert.equal(cs.type === 'crowdstrike' && cs.url, 'https://api.crowdstrike.com');
    const http = deviceManagerSpec.parse({
      type: 'http',
      url: 'https://mdm.example.com/devices/{serial}?fields=all',
      headers: { Authorization: { env: 'MDM_TOKEN' }, Accept: { value: 'application/json' } },
      jsonPaths: { compliant: '$.device.compliance', mdmPresent: 'device.enrolled', score: '$.scores[0]' },
    });
    assert.ok(http.type === 'http');
    assert.deepEqual(http.compliantValues, ['compliant']);
    assert.deepEqual(http.headers.Authorization, { env: 'MDM_TOKEN' });
  });

  void test('CP-11 a literal client secret is refused and the refusal does not repeat it', () => {
    const result = deviceManagerSpec.safeParse({ ...intune, clientSecret: 'hunter2-very-secret' });
    assert.equal(result.success, false);
    assert.match(result.error.issues[0].message, /reference/);
    assert.doesNotMatch(JSON.stringify(result.error.issues), /hunter2/);
  });

  void test('CP-11 a credential header given as a plain value is refused and not repeated', () => {
    for (const name of ['Authorization', 'X-Api-Key', 'Cookie', 'X-Auth-Token']) {
      const result = deviceManagerSpec.safeParse({ type: 'http', url: 'https://m.example.com/{serial}', headers: { [name]: { value: 'Bearer s3cr3t' } }, jsonPaths: { compliant: 'ok' } });
      assert.equal(result.success, false, name);
      assert.match(result.error.issues[0].message, /credential/);
      assert.doesNotMatch(JSON.stringify(result.error.issues), /s3cr3t/);
    }
  });

  void test('CP-11 a credential in the lookup URL query is refused and not repeated', () => {
    for (const url of ['https://m.example.com/{serial}?api_key=s3cr3t', 'https://m.example.com/{serial}?token=s3cr3t', 'https://m.example.com/{serial}?sig=s3cr3t']) {
      const result = deviceManagerSpec.safeParse({ type: 'http', url, jsonPaths: { compliant: 'ok' } });
      assert.equal(result.success, false, url);
      assert.doesNotMatch(JSON.stringify(result.error?.issues), /s3cr3t/);
    }
    assert.equal(deviceManagerSpec.safeParse({ type: 'http', url: 'https://m.example.com/{serial}?fields=all', jsonPaths: { compliant: 'ok' } }).success, true);
  });

  void test('secret references take exactly one of env or file, well formed', () => {
    assert.deepEqual(secretRef.parse({ env: 'A_B1' }), { env: 'A_B1' });
    assert.deepEqual(secretRef.parse({ file: '/run/secrets/x' }), { file: '/run/secrets/x' });
    for (const bad of [{ env: 'A', file: '/x' }, { env: '1A' }, { env: 'A-B' }, { file: 'relative/path' }, {}, [], 42, null]) {
      assert.equal(secretRef.safeParse(bad).success, false, JSON.stringify(bad));
    }
  });

  void test('an unknown type or unknown field is named', () => {
    assert.deepEqual(problems({ ...intune, type: 'mobileiron' }), [{ path: 'type', message: 'must be one of intune, jamf, crowdstrike, http' }]);
    const result = deviceManagerSpec.safeParse({ ...intune, url: 'https://x' });
    const issue = result.error?.issues[0];
    assert.equal(issue?.code, 'unrecognized_keys');
    assert.deepEqual(issue.code === 'unrecognized_keys' ? issue.keys : [], ['url']);
  });

  void test('syncInterval takes durations between 1m and 24h', () => {
    assert.equal(deviceManagerSpec.parse({ ...intune, syncInterval: '1h30m' }).syncInterval, '1h30m');
    for (const bad of ['30s', '25h', '20', 'soon', '', '-5m', '1.5h']) {
      assert.equal(problems({ ...intune, syncInterval: bad })[0]?.path, 'syncInterval', bad);
    }
  });

  void test('durationMs reads hours, minutes and seconds', () => {
    assert.equal(durationMs('20m'), 1_200_000);
    assert.equal(durationMs('1h30m'), 5_400_000);
    assert.equal(durationMs('90s'), 90_000);
    assert.equal(durationMs('1h1m1s'), 3_661_000);
    assert.equal(durationMs(''), undefined);
    assert.equal(durationMs('m'), undefined);
  });

  void test('service URLs are https without credentials, query or fragment; http only for loopback', () => {
    for (const bad of ['http://graph.example.com', 'https://user:pw@graph.example.com', 'https://graph.example.com/?x=1', 'ftp://x', 'not a url']) {
      assert.equal(problems({ ...intune, graphUrl: bad })[0]?.path, 'graphUrl', bad);
    }
    assert.equal(deviceManagerSpec.parse({ ...intune, graphUrl: 'http://127.0.0.1:8080/' }).type, 'intune');
  });

  void test('an HTTP manager needs {serial} in its URL and valid JSON paths', () => {
    const base = { type: 'http', url: 'https://m.example.com/d/{serial}', jsonPaths: { compliant: '$.compliant' } };
    assert.equal(deviceManagerSpec.safeParse(base).success, true);
    assert.equal(problems({ ...base, url: 'https://m.example.com/d' })[0]?.path, 'url');
    assert.equal(problems({ ...base, url: 'http://m.example.com/{serial}' })[0]?.path, 'url');
    for (const bad of ['$..x', 'a[*]', "a['b']", 'a.b()', '']) {
      assert.equal(problems({ ...base, jsonPaths: { compliant: bad } })[0]?.path, 'jsonPaths.compliant', bad);
    }
    assert.equal(problems({ ...base, headers: { 'Bad Header': { value: 'x' } } })[0]?.path, 'headers.Bad Header');
    assert.equal(problems({ ...base, headers: { Accept: { value: 'a\r\nX-Evil: 1' } } })[0]?.path, 'headers.Accept.value');
  });

  void test('a CrowdStrike minimum score is a whole number from 1 to 100', () => {
    const base = { type: 'crowdstrike', clientId: 'c', clientSecret: { env: 'F' } };
    for (const bad of [0, 101, 50.5, '70']) assert.equal(problems({ ...base, minimumScore: bad })[0]?.path, 'minimumScore', String(bad));
  });

  void test('caPem refuses a private key without repeating it, and a non-certificate', () => {
    const withKey = problems({ ...intune, caPem: '-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----' });
    assert.match(withKey[0].message, /private key/);
    const result = deviceManagerSpec.safeParse({ ...intune, caPem: '-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----' });
    assert.doesNotMatch(JSON.stringify(result.error?.issues), /MIIsecret/);
    assert.equal(problems({ ...intune, caPem: 'hello' })[0]?.path, 'caPem');
  });

  void test('a DeviceManager document parses from YAML through the registry and reads back the same', () => {
    const yaml = `apiVersion: causeway/v1
kind: DeviceManager
metadata: {name: intune}
spec:
  type: intune
  syncInterval: 30m
  tenantId: 00000000-0000-0000-0000-000000000000
  clientId: 11111111-1111-1111-1111-111111111111
  clientSecret: {env: INTUNE_SECRET}
`;
    const parsed = parseSpecDocuments(yaml);
    assert.ok(parsed.ok, JSON.stringify(parsed));
    assert.equal(parsed.objects[0].kind, 'DeviceManager');
    const again = parseSpecDocuments(stringifySpecs(parsed.objects));
    assert.deepEqual(again, parsed);
  });

  void test('CP-11 a literal secret in a DeviceManager document is reported by path and never printed', () => {
    const parsed = parseSpecDocuments(`apiVersion: causeway/v1
kind: DeviceManager
metadata: {name: jamf}
spec: {type: jamf, url: "https://corp.jamfcloud.com", clientId: c, clientSecret: "Pl4intext-Secret", extra: 1}
`);
    assert.equal(parsed.ok, false);
    const text = formatProblems(parsed.ok ? [] : parsed.problems);
    assert.match(text, /spec\.clientSecret: must be a reference/);
    assert.match(text, /spec\.extra: unknown field/);
    assert.doesNotMatch(text, /Pl4intext/);
  });
});
