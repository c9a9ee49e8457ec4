/**
 * Which cached images a collection removes from the shared cache registry
 * (docs/garbage-collection.md): never one a pod uses, never a retained one; the expired first
 * (unused for --expire-after), then, while usage is over the budget, the least recently pulled,
 * until usage is under the low-water mark. Usage counts each blob once, however many images name
 * it, and a removal frees only the blobs no remaining image names (distribution's sweep keeps a
 * shared layer). Pure: the caller reads the CachedImage objects and the manifests, and removes.
 */
import type { CachedImage } from '../kube/cached-images.js';
import type { Footprint } from './image-footprint.js';

export interface Candidate {
  /** The CachedImage's name. */
  readonly name: string;
  readonly image: string;
  /** The stored manifest (index or image) the cache holds for it; without one nothing is removed. */
  readonly digest: string | undefined;
  /** Bytes it takes in the cache (0 when unknown); stands in for `blobs` when they are unknown. */
  readonly size: number;
  /** Its manifests' and blobs' digests and sizes, as the cache registry holds them. */
  readonly blobs?: Footprint;
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

export type Why = 'expired' | 'least-recently-pulled';

export interface Selection {
  readonly remove: readonly { readonly candidate: Candidate; readonly why: Why; readonly freedBytes: number }[];
  /** Distinct bytes every image holds, before and after the removals. */
  readonly usedBytes: number;
  readonly afterBytes: number;
  /**
   * Images larger on their own than the low-water mark: kept but for expiry (removed for size,
   * the next pull brings them back and the next pass removes them again).
   */
  readonly tooLarge: readonly { readonly candidate: Candidate; readonly bytes: number }[];
  /**
   * Over the budget even with every image it may remove gone (used, retained or too large): no
   * image is removed for size then, as removing them would not bring usage under it.
   */
  readonly stuckBytes: number | undefined;
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

/** What a candidate takes on its own (its shared blobs included). */
export function footprintBytes(c: Candidate): number {
  if (!c.blobs) return c.size;
  let sum = 0;
  for (const size of c.blobs.values()) sum += size;
  return sum;
}

/** Distinct bytes of a set of images, and what removing one of them frees. */
class Usage {
  private readonly refs = new Map<string, { count: number; size: number }>();
  private unshared = 0;
  bytes = 0;

  constructor(candidates: readonly Candidate[]) {
    for (const c of candidates) {
      if (!c.blobs) {
        this.unshared += c.size;
        continue;
      }
      for (const [digest, size] of c.blobs) {
        const r = this.refs.get(digest);
        if (r) r.count++;
        else this.refs.set(digest, { count: 1, size });
      }
    }
    this.bytes = this.unshared;
    for (const r of this.refs.values()) this.bytes += r.size;
  }

  /** Removes `c`; returns the bytes no remaining image names. */
  release(c: Candidate): number {
    let freed = 0;
    if (!c.blobs) freed = c.size;
    else {
      for (const digest of c.blobs.keys()) {
        const r = this.refs.get(digest);
        if (!r) continue;
        r.count--;
        if (r.count === 0) {
          this.refs.delete(digest);
          freed += r.size;
        }
      }
    }
    this.bytes -= freed;
    return freed;
  }
}

export function selectRemovals(candidates: readonly Candidate[], opts: SelectionOptions): Selection {
  const usage = new Usage(candidates);
  const usedBytes = usage.bytes;
  const removable = candidates
    .filter((c) => !c.inUse && !c.retained && c.digest !== undefined)
    .sort((a, b) => a.lastActive - b.lastActive || a.name.localeCompare(b.name));
  const remove: Selection['remove'][number][] = [];
  const expired = new Set<Candidate>();
  for (const c of removable) {
    if (opts.now - c.lastActive < opts.expireAfterMs) break;
    expired.add(c);
    remove.push({ candidate: c, why: 'expired', freedBytes: usage.release(c) });
  }
  const tooLarge = candidates
    .filter((c) => c.digest !== undefined && !expired.has(c))
    .map((candidate) => ({ candidate, bytes: footprintBytes(candidate) }))
    .filter(({ bytes }) => bytes > opts.lowWaterBytes);
  const large = new Set(tooLarge.map(({ candidate }) => candidate));
  const rest = removable.filter((c) => !expired.has(c) && !large.has(c));
  const restSet = new Set(rest);
  let stuckBytes: number | undefined;
  if (usage.bytes > opts.maxBytes) {
    const floor = new Usage(candidates.filter((c) => !expired.has(c) && !restSet.has(c))).bytes;
    if (floor > opts.maxBytes) stuckBytes = floor;
    else {
      for (const c of rest) {
        if (usage.bytes <= opts.lowWaterBytes) break;
        remove.push({ candidate: c, why: 'least-recently-pulled', freedBytes: usage.release(c) });
      }
    }
  }
  return { remove, usedBytes, afterBytes: usage.bytes, tooLarge, stuckBytes };
}
