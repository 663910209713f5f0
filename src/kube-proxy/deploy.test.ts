/**
 * The Kubernetes manifests in deploy/kubernetes: each parses, the ClusterRole grants only
 * impersonation (users, groups and the one extra the proxy sends), the binding, service account,
 * secret, volume, ports and Service fit together, and every flag the Deployment passes is one
 * `causeway kube-proxy` has.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import { registerKubeProxyCommand } from './command.ts';
import { DEVICE_EXTRA_KEY } from './headers.ts';

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const MANIFESTS = path.join(DEPLOY, 'kubernetes');

interface Manifest {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  /** The file it came from. */
  file: string;
}
interface Container {
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
  ports?: Array<{ name: string; containerPort: number }>;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
  readinessProbe?: { httpGet: { path: string } };
  livenessProbe?: { httpGet: { path: string } };
}
interface ClusterRole extends Manifest {
  rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[]; nonResourceURLs?: string[] }>;
}
interface Binding extends Manifest {
  roleRef: unknown;
  subjects: unknown;
}
interface Deployment extends Manifest {
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        serviceAccountName: string;
        automountServiceAccountToken?: boolean;
        securityContext: { runAsNonRoot: boolean; runAsUser: number };
        initContainers: Container[];
        containers: Container[];
        volumes: Array<{ name: string; persistentVolumeClaim?: { claimName: string } }>;
      };
    };
  };
}
interface ServiceManifest extends Manifest {
  spec: { selector: Record<string, string>; ports: Array<{ port: number; targetPort: string | number }> };
}
interface SecretManifest extends Manifest {
  stringData: Record<string, string>;
}

function load(): Manifest[] {
  const objects: Manifest[] = [];
  for (const file of readdirSync(MANIFESTS).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(path.join(MANIFESTS, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], file);
      const value = doc.toJS() as Omit<Manifest, 'file'> | null;
      if (value === null) continue;
      assert.equal(typeof value.kind, 'string', file);
      assert.equal(typeof value.metadata?.name, 'string', file);
      objects.push({ ...value, file });
    }
  }
  return objects;
}

const objects = load();
/** The one manifest of a kind; the shape is what the assertions below check. */
function one<T extends Manifest>(kind: string): T {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0] as T;
}

void test('every manifest parses and the set is complete, namespaced objects in causeway', () => {
  assert.deepEqual([...new Set(objects.map((o) => o.kind))].sort(), ['ClusterRole', 'ClusterRoleBinding', 'Deployment', 'Namespace', 'PersistentVolumeClaim', 'Secret', 'Service', 'ServiceAccount']);
  assert.equal(one('Namespace').metadata.name, 'causeway');
  for (const o of objects.filter((x) => !['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(x.kind))) assert.equal(o.metadata.namespace, 'causeway', `${o.kind} ${o.file}`);
});

void test('the ClusterRole grants impersonation only: users, groups and the device extra, no wildcard', () => {
  const role = one<ClusterRole>('ClusterRole');
  const granted: string[] = [];
  for (const rule of role.rules) {
    assert.deepEqual(rule.verbs, ['impersonate'], 'impersonate is the only verb');
    for (const group of rule.apiGroups) for (const resource of rule.resources) granted.push(`${group}/${resource}`);
    assert.equal(rule.nonResourceURLs, undefined);
  }
  assert.deepEqual(granted.sort(), ['/groups', '/users', `authentication.k8s.io/userextras/${DEVICE_EXTRA_KEY}`]);
  assert.ok(!granted.some((g) => g.includes('*') || g.includes('serviceaccounts')), 'never service accounts or wildcards');
});

void test('the binding gives that role to the service account the Deployment runs as', () => {
  const binding = one<Binding>('ClusterRoleBinding');
  const sa = one('ServiceAccount');
  const deployment = one<Deployment>('Deployment');
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: one('ClusterRole').metadata.name });
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  assert.equal(deployment.spec.template.spec.serviceAccountName, sa.metadata.name);
  assert.notEqual(deployment.spec.template.spec.automountServiceAccountToken, false, 'the in-cluster backend needs the token');
});

void test('the Deployment runs causeway kube-proxy with flags it has, its secret, volume, probes and Service wired', () => {
  const deployment = one<Deployment>('Deployment');
  const pod = deployment.spec.template.spec;
  const [container] = pod.containers;
  const args = container.args ?? [];
  assert.equal(args[0], 'kube-proxy');
  const program = new Command('causeway');
  const command = registerKubeProxyCommand(program);
  const known = new Set(command.options.map((o) => o.long));
  const flags = new Map(args.slice(1).map((a) => {
    const m = /^(--[a-z-]+)=(.*)$/.exec(a);
    assert.ok(m !== null, `flag=value: ${a}`);
    return [m[1], m[2]] as const;
  }));
  for (const flag of flags.keys()) assert.ok(known.has(flag), `causeway kube-proxy has ${flag}`);
  for (const needed of ['--control-plane', '--ca-pin', '--data-dir', '--cluster-name', '--listen', '--health-listen']) assert.ok(flags.has(needed), needed);

  const secret = one<SecretManifest>('Secret');
  const env = new Map((container.env ?? []).map((e) => [e.name, e.valueFrom?.secretKeyRef]));
  for (const name of ['CAUSEWAY_JOIN_TOKEN', 'CAUSEWAY_CA_PIN', 'CAUSEWAY_CONTROL_PLANE']) {
    const ref = env.get(name);
    assert.equal(ref?.name, secret.metadata.name, name);
    assert.ok(Object.keys(secret.stringData).includes(ref?.key ?? ''), `${name}: the secret has ${ref?.key ?? '?'}`);
  }
  for (const v of flags.values()) for (const m of v.matchAll(/\$\(([A-Z_]+)\)/g)) assert.ok(env.has(m[1]), `${m[1]} is defined`);

  const mount = (container.volumeMounts ?? []).find((m) => m.name === 'data');
  assert.equal(flags.get('--data-dir'), mount?.mountPath);
  const volume = pod.volumes.find((v) => v.name === 'data');
  assert.equal(volume?.persistentVolumeClaim?.claimName, one('PersistentVolumeClaim').metadata.name);
  const init = (pod.initContainers[0]?.command ?? []).join(' ');
  assert.match(init, /chmod 0700/, 'the data directory is made the proxy\'s own');
  assert.match(init, new RegExp(`chown ${pod.securityContext.runAsUser}:`));

  const ports = new Map((container.ports ?? []).map((p) => [p.name, p.containerPort]));
  assert.equal(ports.get('https'), Number(flags.get('--listen')?.split(':').pop()));
  assert.equal(ports.get('health'), Number(flags.get('--health-listen')?.split(':').pop()));
  assert.equal(container.readinessProbe?.httpGet.path, '/readyz');
  assert.equal(container.livenessProbe?.httpGet.path, '/healthz');
  assert.equal(pod.securityContext.runAsNonRoot, true);

  const service = one<ServiceManifest>('Service');
  assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
  for (const [k, v] of Object.entries(service.spec.selector)) assert.equal(deployment.spec.template.metadata.labels[k], v);
  assert.deepEqual(service.spec.ports.map((p) => [p.port, p.targetPort]), [[8443, 'https']]);
});

void test('deploy/README.md points the connector at the Service and covers the kube-apiserver --oidc-* alternative', () => {
  const readme = readFileSync(path.join(DEPLOY, 'README.md'), 'utf8');
  const service = one('Service');
  assert.ok(readme.includes(`${service.metadata.name}.${service.metadata.namespace}.svc.cluster.local:8443`), 'the dnsOverride');
  for (const flag of ['--oidc-issuer-url', '--oidc-client-id', '--oidc-username-claim', '--oidc-groups-claim', '--oidc-groups-prefix']) assert.ok(readme.includes(flag), flag);
  assert.match(readme, /caPublicKey/);
});
