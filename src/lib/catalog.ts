/**
 * The service catalog on the wire (`GET /api/v1/me/services?device=<id>` → `{ services: CatalogEntry[] }`): what
 * the control plane sends (control-plane/api/me-services.ts) and the client checks and uses (client/catalog.ts).
 * One definition, so the two sides cannot drift apart. No backend address is part of it: only how the local
 * listener works (`proxy`).
 */

export type CatalogServiceType = 'kubernetes' | 'tcp';

/** One `backend.allowPatterns` entry of an httpConnect service. */
export interface CatalogAllowPattern {
  hostnames?: string[];
  cidrs?: string[];
  ports: Array<number | string>;
}

export interface CatalogAccess {
  allowed: boolean;
  /** The service's policy mode: enforcing, permissive (allowed, but a denial is logged as would-deny), or none (no policy). */
  mode: string;
  /** Reason codes (trust-too-low, no-matching-role, …); empty when allowed. */
  reasons: string[];
  /** One human sentence: why not, and what to fix ("device trust Low, this service needs Medium: firewall off"). */
  explanation: string;
  /** Machine hints: needs:Medium, has:Low, trust:firewall-off, … */
  hints: string[];
}

export interface CatalogEntry {
  name: string;
  description?: string;
  link?: string;
  type: CatalogServiceType;
  domain: string;
  port: number;
  autorun: boolean;
  client: { listenPort: number; allowUserOverride: boolean };
  /** The access tiers to reach it through ("*" already resolved to every tier of the service's cluster). */
  accessTiers: Array<{ name: string; address: string }>;
  kubernetes: { clusterName: string; caPublicKey: string; authentication: 'oidc' | 'cluster' } | null;
  /** How the local listener works: chain (HTTP CONNECT) or tcp (raw bytes to a fixed backend). */
  proxy: { mode: 'chain' | 'tcp'; allowPatterns?: CatalogAllowPattern[] };
  access: CatalogAccess;
}
