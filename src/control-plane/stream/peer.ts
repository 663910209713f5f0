/**
 * What the peer-facing plugins (config stream, enrollment, event batches) share: their options, and
 * who is calling.
 *
 * A caller is the client certificate of its TLS connection, checked by auth.ts's `peerIdentity`
 * (OpenSSL's verdict against the installation's CA, then type, identity and validity: CA-01, CA-02,
 * CA-03), and then not revoked by the store's record, which every replica shares (CA-06).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { systemClock } from '../../lib/clock.ts';
import type { Clock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/log.ts';
import type { Logger } from '../../lib/log.ts';
import type { CertificateAuthority, CertType, PeerIdentity } from '../../lib/pki/index.ts';
import { sendError } from '../api/errors.ts';
import { peerIdentity } from '../auth.ts';
import type { Store } from '../store/index.ts';

/** The dependencies of each plugin of this group. */
export interface PeerPluginDeps {
  store: Store;
  ca: CertificateAuthority;
  logger: Logger;
  clock: Clock;
}

/**
 * Plugin options: the dependencies themselves, or as createControlPlane registers plugins,
 * `{ causeway: ControlPlaneDeps }` (which has all of them).
 */
export type PeerPluginOptions = { causeway: PeerPluginDeps } | (Omit<PeerPluginDeps, 'clock' | 'logger'> & { clock?: Clock; logger?: Logger });

export function pluginDeps(options: PeerPluginOptions): PeerPluginDeps {
  if ('causeway' in options) return options.causeway;
  return { store: options.store, ca: options.ca, logger: options.logger ?? silentLogger(), clock: options.clock ?? systemClock };
}

export type PeerAuth = { ok: true; identity: PeerIdentity } | { ok: false; reason: string; message: string };

export async function authenticatePeer(request: FastifyRequest, types: readonly CertType[], deps: Pick<PeerPluginDeps, 'store' | 'ca' | 'clock'>): Promise<PeerAuth> {
  const checked = peerIdentity(request, types, deps.ca, { clock: deps.clock });
  if (!checked.ok) return { ok: false, reason: checked.code, message: checked.message };
  const serial = checked.identity.serial;
  const record = (await deps.store.getCertificate(serial)) ?? (await deps.store.getCertificate(serial.toLowerCase()));
  if (record !== undefined && record.revokedAt !== null) return { ok: false, reason: 'cert-revoked', message: 'the certificate has been revoked' };
  return checked;
}

/** The one answer to a refused peer: 401 with the reason code; the detail goes to the log. */
export function refusePeer(reply: FastifyReply, auth: { reason: string }, types: readonly CertType[]): FastifyReply {
  return sendError(reply, 401, 'PEER_CERT_REFUSED', `this route needs the client certificate of an enrolled ${types.join(' or ')} (${auth.reason}); if it expired or was revoked, enroll again with a new join token`, { reason: auth.reason });
}
