/** The kube proxy's HTTPS server (being written; see index.ts for the interface). */
import { CausewayError } from '../lib/errors.ts';
import type { KubeProxy, KubeProxyOptions } from './index.ts';

export async function startKubeProxy(_o: KubeProxyOptions): Promise<KubeProxy> {
  await Promise.resolve();
  throw new CausewayError('NOT_READY', 'the kube proxy core is being written (issue 6, KP-CORE)');
}
