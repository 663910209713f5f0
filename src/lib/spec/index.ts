export { ADMIN_ROLES, API_VERSION, DEVICE_OWNERSHIP, DEVICE_PLATFORMS, NAME_PATTERN, SPEC_KINDS, TRUST_LEVELS, isSpecKind, specSchemas } from './schemas.ts';
export type { AccessTierSpec, AdminBindingSpec, ConnectorSpec, IdentityProviderSpec, PolicySpec, RoleSpec, ServiceSpec, SpecKind, SpecObject } from './schemas.ts';
export { formatProblems, parseSpecDocuments, stringifySpecs } from './parse.ts';
export type { ParseSpecResult, SpecProblem } from './parse.ts';
export { validateReferences } from './references.ts';
export { DEFAULT_IDP_CLAIMS, DEFAULT_IDP_SCOPES, issuerProblem } from './identity-provider.ts';
export type { SecretReference } from './identity-provider.ts';
