/** Joining a part to the control plane: enrollment with a join token, automatic renewal, and the HTTPS client both use. */
export { enroll, caPinOf, checkAnswer, credentialsFrom, parseCaPin } from './enroll.ts';
export type { EnrollOptions, PeerCredentials } from './enroll.ts';
export { renewOnce, renewalDue, startRenewal } from './renew.ts';
export type { Renewal, RenewalOptions } from './renew.ts';
export { controlPlaneTlsOptions, controlPlaneUrl, describeErrorBody, errorCodeOf, openControlPlaneRequest, requestControlPlane } from './transport.ts';
export type { ControlPlaneFetch, ControlPlaneRequest, ControlPlaneResponse, PeerTlsMaterial } from './transport.ts';
export { CA_PATH, ENROLL_KINDS, ENROLL_PATH, RENEW_PATH } from './wire.ts';
export type { EnrolledResponse, EnrollKind, EnrollRequest, RenewRequest } from './wire.ts';
export { joinControlPlane, loadIdentity, nodePeerFiles } from './join.ts';
export type { JoinedPeer, JoinOptions, PeerFiles } from './join.ts';
