/** Ports for tests that must name one before anything listens on it (a service's fixed listen port, a CLI flag). */
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer } from 'node:net';

/** A loopback port nothing listens on right now (bound on 0, then released). */
export async function freePort(): Promise<number> {
  const probe = createNetServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
