/**
 * The live requests and streams of a kube proxy (plain requests in flight, watches, logs -f,
 * exec/attach/port-forward sessions), so a state change that denies one cuts it at once (KP-08):
 * `recheck(decide)` runs every entry's decision again, synchronously when a snapshot arrives, and
 * cuts those now denied (their sockets destroyed: a watch's connection closes, kubectl sees the
 * stream end). `cutAll` is for close().
 */
import type { KubeRequestInfo } from './request-info.ts';
import type { KubeCaller, KubeVerdict } from './rules.ts';

export interface LiveEntry {
  caller: KubeCaller;
  info: KubeRequestInfo;
  /** Ends the request or stream now; `verdict` says why (for the audit record). Called at most once. */
  cut(verdict: Extract<KubeVerdict, { allow: false }> | { allow: false; reason: 'proxy-closing'; message: string }): void;
}

export class LiveRegistry {
  readonly #entries = new Set<LiveEntry>();
  #cuts = 0;

  add(entry: LiveEntry): () => void {
    this.#entries.add(entry);
    return () => {
      this.#entries.delete(entry);
    };
  }

  get size(): number {
    return this.#entries.size;
  }

  get cuts(): number {
    return this.#cuts;
  }

  /** Re-decides every live entry; cuts and removes those now denied. Returns how many were cut. */
  recheck(decide: (entry: LiveEntry) => KubeVerdict): number {
    let cut = 0;
    for (const entry of [...this.#entries]) {
      let verdict: KubeVerdict;
      try {
        verdict = decide(entry);
      } catch {
        verdict = { allow: false, code: 403, reason: 'rule-deny', message: 'causeway: the request could not be re-checked against the new configuration' };
      }
      if (verdict.allow) continue;
      this.#entries.delete(entry);
      cut++;
      entry.cut(verdict);
    }
    this.#cuts += cut;
    return cut;
  }

  cutAll(message: string): void {
    for (const entry of [...this.#entries]) {
      this.#entries.delete(entry);
      entry.cut({ allow: false, reason: 'proxy-closing', message });
    }
  }
}
