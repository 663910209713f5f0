// @peculiar/x509 needs the Reflect metadata polyfill loaded before it (see test/kit/certs.ts).
import 'reflect-metadata';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { formatProblems, parseSpecDocuments, stringifySpecs, validateReferences } from './index.ts';
import type { SpecObject, SpecProblem } from './index.ts';

x509.cryptoProvider.set(webcrypto);

async function selfSignedPem(commonName: string): Promise<string> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${commonName}`,
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 365 * 86_400_000),
    keys,
    signingAlgorithm: algorithm,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  return cert.toString('pem');
}

const CA_PEM = await selfSignedPem('Kube CA');
const OTHER_PEM = await selfSignedPem('Next Kube CA');

function indent(text: string, spaces: number): string {
  return text
    .trim()
    .split('\n')
    .map((line) => `${' '.repeat(spaces)}${line}`)
    .join('\n');
}

/** The example of DESIGN §4, with a real certificate. */
const DESIGN_EXAMPLE = `apiVersion: causeway/v1
kind: Role
metadata: {name: engineers, description: Engineers on managed laptops}
spec:
  users: {groups: [eng], emails: []}        # any listed group OR email; empty = any user
  devices:                                   # every listed attribute must hold
    ownership: [corporate-dedicated, corporate-shared]   # or employee-owned, other
    platforms: [macos, linux, windows]                    # or ios, android
    knownDeviceOnly: true
    mdmPresent: true
    serialNumbers: []
---
apiVersion: causeway/v1
kind: Policy
metadata: {name: k8s-prod}
spec:
  access:
    - roles: [engineers]
      trustLevel: Medium        # minimum level: Low | Medium | High
      schedule: {start: "2026-01-01T00:00:00Z", end: null}   # optional
---
apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec: {cluster: global-edge, address: "edge.example.com:8443"}
---
apiVersion: causeway/v1
kind: Connector
metadata: {name: dc1}
spec: {cluster: global-edge, allowedCidrs: [10.0.0.0/8], allowedDomains: [".svc.cluster.local"]}
---
apiVersion: causeway/v1
kind: Service
metadata: {name: prod-k8s, description: Production cluster API, link: "https://wiki.example.com/prod"}
spec:
  type: kubernetes            # or tcp
  cluster: global-edge
  accessTier: edge-1          # or "*" for every access tier of the cluster
  connector: dc1              # omit when the access tier reaches the backend itself
  domain: mykube.corp.example.com
  port: 443                   # the port clients CONNECT to
  showInCatalog: true
  autorun: false
  backend:
    dnsOverride: kube-proxy.causeway.svc.cluster.local:8443   # where the domain really goes
  client: {listenPort: 8081, allowUserOverride: true}
  kubernetes:
    clusterName: prod
    caPublicKey: |            # CA of the kube proxy's (or API server's) serving cert
${indent(CA_PEM, 6)}
  policy: {name: k8s-prod, mode: enforcing}   # or permissive: allow, but log who would be denied
`;

function parseOk(text: string): SpecObject[] {
  const result = parseSpecDocuments(text);
  assert.ok(result.ok, result.ok ? '' : formatProblems(result.problems));
  return result.objects;
}

function problemsOf(text: string): SpecProblem[] {
  const result = parseSpecDocuments(text);
  assert.ok(!result.ok, 'expected problems');
  return result.problems;
}

/** A document as YAML; `spec` is given as an object. */
function doc(kind: string, name: string, spec: unknown, extra: Record<string, unknown> = {}): string {
  return stringify({ apiVersion: 'causeway/v1', kind, metadata: { name }, spec, ...extra });
}

function docs(...parts: string[]): string {
  return parts.join('---\n');
}

const TCP_SERVICE = { type: 'tcp', cluster: 'c1', accessTier: '*', domain: 'db.example.com', backend: { target: 'db.internal:5432' } };
const KUBE_SERVICE = { type: 'kubernetes', cluster: 'c1', accessTier: '*', domain: 'kube.example.com', kubernetes: { clusterName: 'prod', caPublicKey: CA_PEM } };

void describe('parseSpecDocuments', () => {
  void test('parses the full DESIGN §4 example', () => {
    const objects = parseOk(DESIGN_EXAMPLE);
    assert.deepEqual(
      objects.map((o) => `${o.kind}/${o.metadata.name}`),
      ['Role/engineers', 'Policy/k8s-prod', 'AccessTier/edge-1', 'Connector/dc1', 'Service/prod-k8s'],
    );
    const service = objects[4];
    assert.ok(service?.kind === 'Service');
    assert.equal(service.spec.domain, 'mykube.corp.example.com');
    assert.equal(service.spec.backend.dnsOverride, 'kube-proxy.causeway.svc.cluster.local:8443');
    assert.deepEqual(service.spec.client, { listenPort: 8081, allowUserOverride: true });
    assert.deepEqual(service.spec.policy, { name: 'k8s-prod', mode: 'enforcing' });
    assert.equal(service.spec.kubernetes?.caPublicKey.trim(), CA_PEM.trim());
    assert.deepEqual(service.metadata, { name: 'prod-k8s', description: 'Production cluster API', link: 'https://wiki.example.com/prod' });
    const policy = objects[1];
    assert.ok(policy?.kind === 'Policy');
    assert.deepEqual(policy.spec.access, [{ roles: ['engineers'], trustLevel: 'Medium', schedule: { start: '2026-01-01T00:00:00Z', end: null } }]);
    assert.deepEqual(validateReferences(objects), []);
  });

  void test('stringifySpecs writes YAML that parses back to the same objects', () => {
    const objects = parseOk(DESIGN_EXAMPLE);
    const text = stringifySpecs(objects);
    assert.deepEqual(parseOk(text), objects);
    assert.ok(text.includes('caPublicKey: |'), 'the certificate stays a readable block');
  });

  void test('applies defaults', () => {
    const [role, policy, service, connector] = parseOk(
      docs(
        doc('Role', 'anyone', {}),
        doc('Policy', 'p', { access: [{ roles: ['anyone'], trustLevel: 'High', schedule: {} }] }),
        doc('Service', 'db', TCP_SERVICE, {}),
        doc('Connector', 'dc', { cluster: 'c1' }),
      ),
    );
    assert.ok(role?.kind === 'Role' && policy?.kind === 'Policy' && service?.kind === 'Service' && connector?.kind === 'Connector');
    assert.deepEqual(role.spec, { users: { groups: [], emails: [] }, devices: { ownership: [], platforms: [], knownDeviceOnly: false, mdmPresent: false, serialNumbers: [] } });
    assert.deepEqual(policy.spec.access[0]?.schedule, { start: null, end: null });
    assert.equal(service.spec.port, 443);
    assert.equal(service.spec.showInCatalog, true);
    assert.equal(service.spec.autorun, false);
    assert.deepEqual(service.spec.client, { listenPort: 8081, allowUserOverride: false });
    assert.equal(service.spec.policy, undefined);
    assert.deepEqual(connector.spec, { cluster: 'c1', allowedCidrs: [], allowedDomains: [] });
    const [withPolicy] = parseOk(doc('Service', 'db', { ...TCP_SERVICE, policy: { name: 'p' } }));
    assert.ok(withPolicy?.kind === 'Service');
    assert.deepEqual(withPolicy.spec.policy, { name: 'p', mode: 'enforcing' });
  });

  void test('AT-05 canonicalises the service domain and host:port values', () => {
    const [service, tier] = parseOk(
      docs(
        doc('Service', 'db', { ...TCP_SERVICE, domain: 'DB.Example.COM.', backend: { target: '[::ffff:10.0.0.5]:5432', dnsOverride: 'DB.Internal.:5432' } }),
        doc('AccessTier', 'edge', { cluster: 'c1', address: '[2001:DB8::0001]:8443' }),
      ),
    );
    assert.ok(service?.kind === 'Service' && tier?.kind === 'AccessTier');
    assert.equal(service.spec.domain, 'db.example.com');
    assert.equal(service.spec.backend.target, '10.0.0.5:5432');
    assert.equal(service.spec.backend.dnsOverride, 'db.internal:5432');
    assert.equal(tier.spec.address, '[2001:db8::1]:8443');
  });

  const domainCases: Array<[string, string]> = [
    ['AT-05 refuses an IPv4 literal as a service domain', '10.0.0.1'],
    ['AT-05 refuses an ambiguous IPv4 form as a service domain', '0x7f.1'],
    ['AT-05 refuses raw non-ASCII in a service domain', 'bücher.example'],
    ['AT-05 refuses a 254-character service domain', `${'a.'.repeat(126)}ab`],
    ['refuses a domain with a port', 'db.example.com:443'],
  ];
  for (const [name, domain] of domainCases) {
    void test(name, () => {
      assert.deepEqual(
        problemsOf(doc('Service', 'db', { ...TCP_SERVICE, domain })).map((p) => p.path),
        ['spec.domain'],
      );
    });
  }

  void test('reports every problem of a file with many errors, each with its document and path', () => {
    const text = `apiVersion: causeway/v2
kind: Service
metadata: {name: Prod_k8s, extra: 1}
spec:
  type: tcp
  cluster: global-edge
  accessTier: "*"
  domain: 10.0.0.1
  port: 70000
  bogus: true
  backend: {httpConnect: true, dnsOverride: "0x7f.1:80", allowPatterns: [{hostnames: ["a.*.b"], ports: [0, "9-1", true]}, {ports: [1]}]}
  kubernetes: {clusterName: x, caPublicKey: "nope"}
  policy: {name: p, mode: lax}
---
kind: Widget
metadata: {name: w}
---
- a list
---
apiVersion: causeway/v1
kind: Policy
metadata: {name: p}
spec: {access: [{roles: [], trustLevel: Ultra, schedule: {start: "2026-02-01T00:00:00Z", end: "2026-01-01T00:00:00Z"}}]}
---
apiVersion: causeway/v1
kind: Policy
metadata: {name: p}
spec: {access: []}
---
apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge}
spec: {cluster: c1, address: "edge.example.com"}
`;
    const problems = problemsOf(text);
    const found = problems.map((p) => `${p.document} ${p.path}`);
    const expected = [
      '1 apiVersion',
      '1 metadata.name',
      '1 metadata.extra',
      '1 spec.bogus',
      '1 spec.domain',
      '1 spec.port',
      '1 spec.backend.dnsOverride',
      '1 spec.backend.allowPatterns[0].hostnames[0]',
      '1 spec.backend.allowPatterns[0].ports[0]',
      '1 spec.backend.allowPatterns[0].ports[1]',
      '1 spec.backend.allowPatterns[0].ports[2]',
      '1 spec.backend.allowPatterns[1]',
      '1 spec.kubernetes.caPublicKey',
      '1 spec.kubernetes',
      '1 spec.policy.mode',
      '2 kind',
      '2 apiVersion',
      '2 spec',
      '3 ',
      '4 spec.access[0].roles',
      '4 spec.access[0].trustLevel',
      '4 spec.access[0].schedule.end',
      '5 metadata.name',
      '6 spec.address',
    ];
    for (const item of expected) assert.ok(found.includes(item), `missing ${item} in\n${formatProblems(problems)}`);
    assert.equal(problems.filter((p) => p.path === 'spec.backend.dnsOverride').length, 2, 'both the bad value and the httpConnect conflict');
    assert.equal(problems.length, expected.length + 1);
    const port = problems.find((p) => p.path === 'spec.port');
    assert.deepEqual(port, { document: 1, kind: 'Service', name: 'Prod_k8s', path: 'spec.port', message: 'must be between 1 and 65535' });
  });

  const unknownFields: Array<[string, string, string]> = [
    ['at the top level', docs(doc('AccessTier', 'edge', { cluster: 'c1', address: 'e.example:1' }, { status: {} })), 'status'],
    ['in metadata', stringify({ apiVersion: 'causeway/v1', kind: 'AccessTier', metadata: { name: 'edge', labels: {} }, spec: { cluster: 'c1', address: 'e.example:1' } }), 'metadata.labels'],
    ['in an access tier spec', doc('AccessTier', 'edge', { cluster: 'c1', address: 'e.example:1', region: 'eu' }), 'spec.region'],
    ['in a connector spec', doc('Connector', 'dc', { cluster: 'c1', allowedCIDRs: [] }), 'spec.allowedCIDRs'],
    ['in a role users block', doc('Role', 'r', { users: { group: ['eng'] } }), 'spec.users.group'],
    ['in a role devices block', doc('Role', 'r', { devices: { os: ['linux'] } }), 'spec.devices.os'],
    ['in a policy access rule', doc('Policy', 'p', { access: [{ roles: ['r'], trustLevel: 'Low', mode: 'x' }] }), 'spec.access[0].mode'],
    ['in a policy schedule', doc('Policy', 'p', { access: [{ roles: ['r'], trustLevel: 'Low', schedule: { start: null, timezone: 'UTC' } }] }), 'spec.access[0].schedule.timezone'],
    ['in a service spec', doc('Service', 's', { ...TCP_SERVICE, tls: true }), 'spec.tls'],
    ['in a service backend', doc('Service', 's', { ...TCP_SERVICE, backend: { target: 'a.b:1', dnsOverrides: 'x' } }), 'spec.backend.dnsOverrides'],
    ['in an allow pattern', doc('Service', 's', { ...TCP_SERVICE, backend: { httpConnect: true, allowPatterns: [{ hostnames: ['a.b'], ports: [1], protocol: 'tcp' }] } }), 'spec.backend.allowPatterns[0].protocol'],
    ['in a service client block', doc('Service', 's', { ...TCP_SERVICE, client: { listenAddress: '0.0.0.0' } }), 'spec.client.listenAddress'],
    ['in a service kubernetes block', doc('Service', 's', { ...KUBE_SERVICE, kubernetes: { ...KUBE_SERVICE.kubernetes, insecure: true } }), 'spec.kubernetes.insecure'],
    ['in a service policy block', doc('Service', 's', { ...TCP_SERVICE, policy: { name: 'p', bypass: true } }), 'spec.policy.bypass'],
  ];
  for (const [where, text, path] of unknownFields) {
    void test(`refuses an unknown field ${where}`, () => {
      assert.deepEqual(
        problemsOf(text).map((p) => [p.path, p.message]),
        [[path, 'unknown field']],
      );
    });
  }

  const serviceRules: Array<[string, unknown, string[]]> = [
    ['accepts a kubernetes service without a backend (domain:port is dialled)', { ...KUBE_SERVICE }, []],
    ['accepts a tcp service with a target and a dnsOverride', { ...TCP_SERVICE, backend: { target: 'db:5432', dnsOverride: 'db.internal:5432' } }, []],
    ['accepts a tcp service with httpConnect and allow patterns', { ...TCP_SERVICE, backend: { httpConnect: true, allowPatterns: [{ hostnames: ['*.db.internal'], cidrs: ['10.0.0.0/8'], ports: [5432, '8000-8099'] }] } }, []],
    ['refuses a target on a kubernetes service', { ...KUBE_SERVICE, backend: { target: 'x.y:1' } }, ['spec.backend.target']],
    ['refuses httpConnect and allowPatterns on a kubernetes service', { ...KUBE_SERVICE, backend: { httpConnect: true, allowPatterns: [{ hostnames: ['a.b'], ports: [1] }] } }, ['spec.backend.httpConnect', 'spec.backend.allowPatterns']],
    ['requires the kubernetes block for type kubernetes', { ...KUBE_SERVICE, kubernetes: undefined }, ['spec.kubernetes']],
    ['refuses the kubernetes block for type tcp', { ...TCP_SERVICE, kubernetes: KUBE_SERVICE.kubernetes }, ['spec.kubernetes']],
    ['requires a target or httpConnect for type tcp', { ...TCP_SERVICE, backend: {} }, ['spec.backend']],
    ['treats httpConnect: false like no httpConnect', { ...TCP_SERVICE, backend: { httpConnect: false } }, ['spec.backend']],
    ['refuses both a target and httpConnect', { ...TCP_SERVICE, backend: { target: 'a.b:1', httpConnect: true, allowPatterns: [{ hostnames: ['a.b'], ports: [1] }] } }, ['spec.backend.target']],
    ['requires allowPatterns with httpConnect', { ...TCP_SERVICE, backend: { httpConnect: true } }, ['spec.backend.allowPatterns']],
    ['refuses an empty allowPatterns list with httpConnect', { ...TCP_SERVICE, backend: { httpConnect: true, allowPatterns: [] } }, ['spec.backend.allowPatterns']],
    ['refuses allowPatterns without httpConnect', { ...TCP_SERVICE, backend: { target: 'a.b:1', allowPatterns: [{ hostnames: ['a.b'], ports: [1] }] } }, ['spec.backend.allowPatterns']],
    ['refuses a dnsOverride with httpConnect', { ...TCP_SERVICE, backend: { httpConnect: true, dnsOverride: 'a.b:1', allowPatterns: [{ hostnames: ['a.b'], ports: [1] }] } }, ['spec.backend.dnsOverride']],
    ['refuses an allow pattern without ports', { ...TCP_SERVICE, backend: { httpConnect: true, allowPatterns: [{ hostnames: ['a.b'], ports: [] }] } }, ['spec.backend.allowPatterns[0].ports']],
    ['refuses an IP address among allow-pattern hostnames', { ...TCP_SERVICE, backend: { httpConnect: true, allowPatterns: [{ hostnames: ['10.0.0.1'], ports: [1] }] } }, ['spec.backend.allowPatterns[0].hostnames[0]']],
    ['refuses a CIDR with host bits set', { ...TCP_SERVICE, backend: { httpConnect: true, allowPatterns: [{ cidrs: ['10.0.0.1/8'], ports: [1] }] } }, ['spec.backend.allowPatterns[0].cidrs[0]']],
    ['refuses a listen port of 0', { ...TCP_SERVICE, client: { listenPort: 0 } }, ['spec.client.listenPort']],
    ['refuses a fractional port', { ...TCP_SERVICE, port: 443.5 }, ['spec.port']],
    ['refuses a port given as a string', { ...TCP_SERVICE, port: '443' }, ['spec.port']],
    ['refuses an access tier that is neither a name nor "*"', { ...TCP_SERVICE, accessTier: 'Edge 1' }, ['spec.accessTier']],
    ['refuses an unknown type', { ...TCP_SERVICE, type: 'udp' }, ['spec.type']],
    ['refuses a missing cluster', { ...TCP_SERVICE, cluster: undefined }, ['spec.cluster']],
  ];
  for (const [name, spec, paths] of serviceRules) {
    void test(name, () => {
      const result = parseSpecDocuments(doc('Service', 's', spec));
      assert.deepEqual(result.ok ? [] : result.problems.map((p) => p.path), paths, result.ok ? '' : formatProblems(result.problems));
    });
  }

  void test('accepts a bundle of two CA certificates', () => {
    parseOk(doc('Service', 's', { ...KUBE_SERVICE, kubernetes: { clusterName: 'prod', caPublicKey: `${CA_PEM}\n${OTHER_PEM}` } }));
  });

  const caCases: Array<[string, string, RegExp]> = [
    ['refuses a caPublicKey that is not PEM', 'not a certificate', /PEM certificate/],
    ['refuses a PEM frame around garbage', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', /not a valid X\.509/],
    ['refuses a bundle whose second certificate is broken', `${CA_PEM}\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`, /certificate 2/],
    ['refuses a caPublicKey carrying a private key, without echoing it', `${CA_PEM}\n-----BEGIN PRIVATE KEY-----\nMIGHAgEAsecret\n-----END PRIVATE KEY-----\n`, /private key/],
  ];
  for (const [name, caPublicKey, message] of caCases) {
    void test(name, () => {
      const problems = problemsOf(doc('Service', 's', { ...KUBE_SERVICE, kubernetes: { clusterName: 'prod', caPublicKey } }));
      assert.equal(problems.length, 1);
      assert.equal(problems[0]?.path, 'spec.kubernetes.caPublicKey');
      assert.match(problems[0]?.message ?? '', message);
      assert.ok(!formatProblems(problems).includes('secret'));
    });
  }

  const otherValues: Array<[string, string, string]> = [
    ['refuses a schedule whose end is not after its start', doc('Policy', 'p', { access: [{ roles: ['r'], trustLevel: 'Low', schedule: { start: '2026-01-01T00:00:00Z', end: '2026-01-01T00:00:00Z' } }] }), 'spec.access[0].schedule.end'],
    ['refuses a schedule time that is not ISO 8601', doc('Policy', 'p', { access: [{ roles: ['r'], trustLevel: 'Low', schedule: { start: 'tomorrow', end: null } }] }), 'spec.access[0].schedule.start'],
    ['refuses an unknown device platform', doc('Role', 'r', { devices: { platforms: ['beos'] } }), 'spec.devices.platforms[0]'],
    ['refuses an unknown ownership', doc('Role', 'r', { devices: { ownership: ['borrowed'] } }), 'spec.devices.ownership[0]'],
    ['refuses an email that is not one', doc('Role', 'r', { users: { emails: ['not-an-email'] } }), 'spec.users.emails[0]'],
    ['refuses a role name that is not a name', doc('Policy', 'p', { access: [{ roles: ['Eng Team'], trustLevel: 'Low' }] }), 'spec.access[0].roles[0]'],
    ['refuses a javascript: link', stringify({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'r', link: 'javascript:alert(1)' }, spec: {} }), 'metadata.link'],
    ['refuses a connector CIDR written with leading zeros', doc('Connector', 'dc', { cluster: 'c1', allowedCidrs: ['010.0.0.0/8'] }), 'spec.allowedCidrs[0]'],
    ['refuses a connector domain that is not one', doc('Connector', 'dc', { cluster: 'c1', allowedDomains: ['..svc'] }), 'spec.allowedDomains[0]'],
    ['refuses an access tier address without a port', doc('AccessTier', 'edge', { cluster: 'c1', address: 'edge.example.com' }), 'spec.address'],
    ['refuses a 64-character name', doc('Role', 'a'.repeat(64), {}), 'metadata.name'],
    ['refuses a name ending in a hyphen', doc('Role', 'eng-', {}), 'metadata.name'],
    ['refuses a missing spec', stringify({ apiVersion: 'causeway/v1', kind: 'Role', metadata: { name: 'r' } }), 'spec'],
    ['refuses a missing metadata', stringify({ apiVersion: 'causeway/v1', kind: 'Role', spec: {} }), 'metadata'],
  ];
  for (const [name, text, path] of otherValues) {
    void test(name, () => {
      assert.deepEqual(
        problemsOf(text).map((p) => p.path),
        [path],
      );
    });
  }

  void test('accepts the edge names: one character, 63 characters, digits first', () => {
    parseOk(docs(doc('Role', 'a', {}), doc('Role', 'a'.repeat(63), {}), doc('Role', '0-team', {})));
  });

  void test('reports a duplicate kind and name, even when the first copy is invalid', () => {
    const problems = problemsOf(docs(doc('Role', 'eng', { users: { bad: 1 } }), doc('Policy', 'eng', { access: [] }), doc('Role', 'eng', {})));
    assert.deepEqual(
      problems.map((p) => [p.document, p.path]),
      [
        [1, 'spec.users.bad'],
        [3, 'metadata.name'],
      ],
    );
    assert.match(problems[1]?.message ?? '', /document 1/);
  });

  void test('reports YAML syntax errors with line numbers and returns nothing', () => {
    const text = docs(doc('Role', 'ok', {}), 'apiVersion: causeway/v1\nkind: Role\nmetadata: {name: [x\n');
    const problems = problemsOf(text);
    assert.ok(problems.length >= 1);
    assert.ok(problems.every((p) => p.document === 2));
    assert.match(problems[0]?.message ?? '', /^line \d+, column \d+: /);
  });

  void test('reports duplicate YAML keys and unknown tags', () => {
    const problems = problemsOf('apiVersion: causeway/v1\nkind: Role\nkind: Policy\nmetadata: {name: r}\nspec: !evil {}\n');
    assert.ok(problems.some((p) => /unique/i.test(p.message)));
    assert.ok(problems.some((p) => /tag/i.test(p.message)));
  });

  void test('refuses an alias bomb instead of expanding it', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`)].join('\n');
    const problems = problemsOf(bomb);
    assert.equal(problems.length, 1);
    assert.match(problems[0]?.message ?? '', /cannot be read/);
  });

  void test('skips empty documents and numbers the rest in order', () => {
    const text = `---\n# nothing here\n---\n${doc('Role', 'a', {})}---\n---\n${doc('Role', 'b', { users: { x: 1 } })}---\n`;
    const problems = problemsOf(text);
    assert.deepEqual(
      problems.map((p) => [p.document, p.name, p.path]),
      [[2, 'b', 'spec.users.x']],
    );
    assert.deepEqual(parseOk('\n---\n\n'), []);
    assert.deepEqual(parseOk(''), []);
  });

  void test('X-03 never throws on arbitrary text or arbitrary YAML values', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.anything({ maxDepth: 4 }).map((v) => stringify(v))), (text) => {
        const result = parseSpecDocuments(text);
        if (!result.ok) assert.ok(result.problems.length > 0 && formatProblems(result.problems).split('\n').length === result.problems.length);
      }),
      { numRuns: 1000 },
    );
  });

  void test('X-03 never throws on mutated valid documents, and accepted ones round-trip through stringifySpecs', () => {
    const base = parseOk(DESIGN_EXAMPLE);
    const mutation = fc.record({
      index: fc.nat({ max: base.length - 1 }),
      path: fc.array(fc.constantFrom('spec', 'metadata', 'backend', 'users', 'devices', 'access', 'client', 'policy', 'kubernetes', 0), { minLength: 1, maxLength: 4 }),
      value: fc.oneof(fc.anything({ maxDepth: 2 }), fc.domain(), fc.ipV4Extended(), fc.integer()),
    });
    fc.assert(
      fc.property(fc.array(mutation, { maxLength: 3 }), (mutations) => {
        const copies = structuredClone(base) as unknown as Array<Record<string, unknown>>;
        for (const m of mutations) setPath(copies[m.index], m.path, m.value);
        const text = copies.map((c) => stringify(c)).join('---\n');
        const result = parseSpecDocuments(text);
        if (result.ok) assert.deepEqual(parseOk(stringifySpecs(result.objects)), result.objects);
      }),
      { numRuns: 300 },
    );
  });
});

function setPath(target: unknown, path: Array<string | number>, value: unknown): void {
  let node = target;
  for (let i = 0; i < path.length - 1; i++) {
    if (node === null || typeof node !== 'object') return;
    node = (node as Record<string | number, unknown>)[path[i]];
  }
  if (node !== null && typeof node === 'object') (node as Record<string | number, unknown>)[path[path.length - 1]] = value;
}

void describe('validateReferences', () => {
  const base = {
    tierA: doc('AccessTier', 'edge-a', { cluster: 'c1', address: 'a.example.com:8443' }),
    tierB: doc('AccessTier', 'edge-b', { cluster: 'c1', address: 'b.example.com:8443' }),
    tierOther: doc('AccessTier', 'edge-x', { cluster: 'c2', address: 'x.example.com:8443' }),
    connector: doc('Connector', 'dc1', { cluster: 'c1' }),
    connectorOther: doc('Connector', 'dc2', { cluster: 'c2' }),
    role: doc('Role', 'eng', {}),
    policy: doc('Policy', 'p', { access: [{ roles: ['eng'], trustLevel: 'Medium' }] }),
  };
  const all = Object.values(base);

  const cases: Array<[string, string[], Array<[string, string]>]> = [
    ['finds nothing wrong in a consistent set', [doc('Service', 's', { ...TCP_SERVICE, accessTier: 'edge-a', connector: 'dc1', policy: { name: 'p' } })], []],
    ['reports a service naming a missing policy', [doc('Service', 's', { ...TCP_SERVICE, policy: { name: 'nope' } })], [['s', 'spec.policy.name']]],
    ['reports a service naming a missing access tier', [doc('Service', 's', { ...TCP_SERVICE, accessTier: 'edge-z' })], [['s', 'spec.accessTier']]],
    ['reports a service whose access tier is in another cluster', [doc('Service', 's', { ...TCP_SERVICE, accessTier: 'edge-x' })], [['s', 'spec.accessTier']]],
    ['reports a service naming a missing connector', [doc('Service', 's', { ...TCP_SERVICE, connector: 'dc9' })], [['s', 'spec.connector']]],
    ['reports a service whose connector is in another cluster', [doc('Service', 's', { ...TCP_SERVICE, connector: 'dc2' })], [['s', 'spec.connector']]],
    ['reports a policy naming a missing role', [doc('Policy', 'q', { access: [{ roles: ['eng', 'ops'], trustLevel: 'Low' }] })], [['q', 'spec.access[0].roles[1]']]],
    [
      'AT-05 reports two services with one domain and port on the same access tier',
      [doc('Service', 's1', { ...TCP_SERVICE, accessTier: 'edge-a' }), doc('Service', 's2', { ...TCP_SERVICE, domain: 'DB.example.com.', accessTier: 'edge-a' })],
      [['s2', 'spec.domain']],
    ],
    [
      'AT-05 reports a "*" service overlapping a named access tier of its cluster',
      [doc('Service', 's1', { ...TCP_SERVICE, accessTier: 'edge-b' }), doc('Service', 's2', { ...TCP_SERVICE, accessTier: '*' })],
      [['s2', 'spec.domain']],
    ],
    [
      'allows one domain and port on different access tiers',
      [doc('Service', 's1', { ...TCP_SERVICE, accessTier: 'edge-a' }), doc('Service', 's2', { ...TCP_SERVICE, accessTier: 'edge-b' })],
      [],
    ],
    ['allows one domain on different ports', [doc('Service', 's1', TCP_SERVICE), doc('Service', 's2', { ...TCP_SERVICE, port: 5432 })], []],
    ['allows one domain and port in different clusters', [doc('Service', 's1', TCP_SERVICE), doc('Service', 's2', { ...TCP_SERVICE, cluster: 'c2' })], []],
  ];
  for (const [name, extra, expected] of cases) {
    void test(name, () => {
      const objects = parseOk(docs(...all, ...extra));
      const problems = validateReferences(objects);
      assert.deepEqual(
        problems.map((p) => [p.name, p.path]),
        expected,
      );
      for (const p of problems) {
        assert.equal(objects[p.document - 1]?.metadata.name, p.name, 'document is the 1-based index in the list');
        assert.ok(p.message.length > 0);
      }
    });
  }
});

void describe('formatProblems', () => {
  void test('writes one line per problem naming the document, kind, name and path', () => {
    assert.equal(
      formatProblems([
        { document: 2, kind: 'Service', name: 'prod-k8s', path: 'spec.port', message: 'must be between 1 and 65535' },
        { document: 3, path: '', message: 'must be a mapping with apiVersion, kind, metadata and spec' },
        { document: 1, kind: 'Role', path: 'metadata.name', message: 'is required', source: 'specs.yaml' },
      ]),
      'document 2 (Service prod-k8s): spec.port: must be between 1 and 65535\n' +
        'document 3: must be a mapping with apiVersion, kind, metadata and spec\n' +
        'specs.yaml: document 1 (Role): metadata.name: is required',
    );
  });

  void test('keeps hostile names on one line', () => {
    const problems = problemsOf(stringify({ apiVersion: 'causeway/v1', kind: 'Role\r\nInjected: yes', metadata: { name: 'x\u001b[31m\nred' }, spec: {} }));
    const text = formatProblems(problems);
    assert.equal(text.split('\n').length, problems.length);
    // eslint-disable-next-line no-control-regex
    assert.ok(!/[\u0000-\u0009\u000b-\u001f]/.test(text));
  });

  void test('names the source given to parseSpecDocuments', () => {
    const result = parseSpecDocuments(doc('Role', 'R', {}), 'roles.yaml');
    assert.ok(!result.ok);
    assert.match(formatProblems(result.problems), /^roles\.yaml: document 1 \(Role R\): metadata\.name: /);
  });
});
