/**
 * Checks between documents: names that must exist, clusters that must agree, and services that
 * would make SNI ambiguous. Problems carry `document` = 1-based index in `objects`, which matches
 * parseSpecDocuments' numbering for the objects it returned.
 */
import type { SpecProblem } from './parse.ts';
import type { AccessTierSpec, ConnectorSpec, ServiceSpec, SpecObject } from './schemas.ts';

export function validateReferences(objects: SpecObject[]): SpecProblem[] {
  const problems: SpecProblem[] = [];
  const roles = new Set<string>();
  const policies = new Set<string>();
  const accessTiers = new Map<string, AccessTierSpec>();
  const connectors = new Map<string, ConnectorSpec>();
  for (const object of objects) {
    switch (object.kind) {
      case 'Role':
        roles.add(object.metadata.name);
        break;
      case 'Policy':
        policies.add(object.metadata.name);
        break;
      case 'AccessTier':
        accessTiers.set(object.metadata.name, object);
        break;
      case 'Connector':
        connectors.set(object.metadata.name, object);
        break;
      case 'Service':
        break;
    }
  }

  const services: Array<{ service: ServiceSpec; document: number }> = [];
  objects.forEach((object, index) => {
    const document = index + 1;
    const at = (path: string, message: string): void => {
      problems.push({ document, kind: object.kind, name: object.metadata.name, path, message });
    };
    if (object.kind === 'Policy') {
      object.spec.access.forEach((rule, i) => {
        rule.roles.forEach((role, j) => {
          if (!roles.has(role)) at(`spec.access[${i}].roles[${j}]`, `names the Role "${role}", which does not exist`);
        });
      });
      (object.spec.kubernetes?.deny ?? []).forEach((rule, i) => {
        (rule.roles ?? []).forEach((role, j) => {
          if (!roles.has(role)) at(`spec.kubernetes.deny[${i}].roles[${j}]`, `names the Role "${role}", which does not exist`);
        });
      });
    } else if (object.kind === 'Service') {
      const { spec } = object;
      if (spec.policy !== undefined && !policies.has(spec.policy.name)) at('spec.policy.name', `names the Policy "${spec.policy.name}", which does not exist`);
      if (spec.accessTier !== '*') {
        const tier = accessTiers.get(spec.accessTier);
        if (tier === undefined) at('spec.accessTier', `names the AccessTier "${spec.accessTier}", which does not exist (or use "*" for every access tier of the cluster)`);
        else if (tier.spec.cluster !== spec.cluster) at('spec.accessTier', `names the AccessTier "${spec.accessTier}" of cluster "${tier.spec.cluster}", but the service is in cluster "${spec.cluster}"`);
      }
      if (spec.connector !== undefined) {
        const connector = connectors.get(spec.connector);
        if (connector === undefined) at('spec.connector', `names the Connector "${spec.connector}", which does not exist`);
        else if (connector.spec.cluster !== spec.cluster) at('spec.connector', `names the Connector "${spec.connector}" of cluster "${connector.spec.cluster}", but the service is in cluster "${spec.cluster}"`);
      }
      services.push({ service: object, document });
    }
  });

  // AT-05: the access tier picks the service by SNI (the domain) and the CONNECT port; exactly one
  // service may answer for a (domain, port) on any access tier.
  const byAddress = new Map<string, Array<{ service: ServiceSpec; document: number }>>();
  for (const entry of services) {
    const key = `${entry.service.spec.domain}:${entry.service.spec.port}`;
    const list = byAddress.get(key);
    if (list === undefined) byAddress.set(key, [entry]);
    else list.push(entry);
  }
  for (const [address, list] of byAddress) {
    for (let i = 1; i < list.length; i++) {
      const later = list[i];
      if (later === undefined) continue;
      const earlier = list.slice(0, i).find((other) => tiersOverlap(other.service, later.service));
      if (earlier === undefined) continue;
      const tier = later.service.spec.accessTier === '*' ? earlier.service.spec.accessTier : later.service.spec.accessTier;
      problems.push({
        document: later.document,
        kind: 'Service',
        name: later.service.metadata.name,
        path: 'spec.domain',
        message: `${address} is also served by Service "${earlier.service.metadata.name}" (document ${earlier.document}) on ${tier === '*' ? `the access tiers of cluster "${later.service.spec.cluster}"` : `access tier "${tier}"`}; each domain and port must belong to one service per access tier`,
      });
    }
  }
  return problems;
}

/** Whether two services can be served by the same access tier. Access tiers belong to one cluster. */
function tiersOverlap(a: ServiceSpec, b: ServiceSpec): boolean {
  if (a.spec.cluster !== b.spec.cluster) return false;
  return a.spec.accessTier === '*' || b.spec.accessTier === '*' || a.spec.accessTier === b.spec.accessTier;
}
