import type { Backend, BackendService, Endpoint, Target } from './target.ts';

/** The client connects straight to the backend: the floor every other target is compared with. */
export function directTarget(backend: Backend): Target {
  return {
    name: 'direct',
    description: 'client → backend over loopback TCP',
    relays: [],
    endpoint: (service: BackendService): Endpoint => ({ host: backend.host, port: backend.ports[service] }),
    close: () => Promise.resolve(),
  };
}
