/**
 * Which cached images a collection removes from the shared cache registry
 * (docs/garbage-collection.md): never one a pod uses, never a retained one; the expired first
 * (unused for --expire-after), then, while usage is over the budget, the least recently pulled,
 * until usage is under the low-water mark. Pure: the caller reads the CachedImage objects and
 * does the removing.
 */
import type { CachedImage } from '../kube/cached-images.js';

export interface Candidate {
  /** The CachedImage's name. */
  readonly name: string;
  readonly image: string;
  /** The stored manifest (index or image) the cache holds for it; without one nothing is removed. */
  readonly digest: string | undefined;
  /** Bytes it takes in the cache (0 when unknown). */
  readonly size: number;
  readonly retained: boolean;
  readonly inUse: boolean;
  /** Last used by a pod, else when created (ms since epoch); 0 when unknown. */
  readonly lastActive: number;
}

export interface SelectionOptions {
  /** Usage above this starts removing the least recently pulled images. */
  readonly maxBytes: number;
  /** ... down to this. */
  readonly lowWaterBytes: number;
  /** Unused, unretained images older than this are removed whatever the usage. */
  readonly expireAfterMs: number;
  readonly now: number;
}

export interface Selection {
  readonly remove: readonly { readonly candidate: Candidate; readonly why: 'expired' | 'least-recently-pulled' }[];
  /** The sum of every image's size before and after (shared layers count in each image: an over-estimate). */
  readonly usedBytes: number;
  readonly afterBytes: number;
}

/** A CachedImage as a candidate; its last pod use stands for its last pull (docs/garbage-collection.md). */
export function candidateOf(obj: CachedImage): Candidate {
  const times = [Date.parse(obj.status?.lastUsed ?? ''), Date.parse(obj.metadata.creationTimestamp ?? '')];
  return {
    name: obj.metadata.name,
    image: obj.spec.image,
    digest: obj.status?.digest,
    size: obj.status?.size ?? 0,
    retained: obj.spec.retain === true,
    inUse: (obj.status?.usedBy?.count ?? 0) > 0,
    lastActive: Math.max(0, ...times.filter((x) => Number.isFinite(x))),
  };
}

export function selectRemovals(candidates: readonly Candidate[], opts: SelectionOptions): Selection {
  const usedBytes = candidates.reduce((sum, c) => sum + c.size, 0);
  const removable = candidates
    .filter((c) => !c.inUse && !c.retained && c.digest !== undefined)
    .sort((a, b) => a.lastActive - b.lastActive || a.name.localeCompare(b.name));
  const remove: Selection['remove'][number][] = [];
  let after = usedBytes;
  for (const c of removable) {
    if (opts.now - c.lastActive < opts.expireAfterMs) break;
    remove.push({ candidate: c, why: 'expired' });
    after -= c.size;
  }
  if (after > opts.maxBytes) {
    for (const c of removable.slice(remove.length)) {
      if (after <= opts.lowWaterBytes) break;
      remove.push({ candidate: c, why: 'least-recently-pulled' });
      after -= c.size;
    }
  }
  return { remove, usedBytes, afterBytes: after };
}
