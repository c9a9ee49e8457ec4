/**
 * Puts what a pull fetched from the origin into the store, in the order a registry accepts it:
 * blobs, then the image manifest that references them, then an index (after its children within
 * `--platforms`), then the tag. Blobs the client never asked for are fetched in the background,
 * through the same shared fills clients use, so no blob is downloaded twice.
 */
import type { ResilientStore } from '../cache/resilient-store.js';
import type { StoredManifest } from '../cache/store.js';
import type { Log as Logger } from '../observability/logger.js';
import { formatPlatform, parseManifest, type Descriptor } from '../oci/media-types.js';
import { mapLimit } from '../runtime/map-limit.js';
import { BackgroundBudget } from './background-budget.js';
import type { BlobProgress, BlobSource } from './blob-source.js';
import type { ManifestSource } from './manifest-source.js';
import type { TagWrites } from './tag-resolver.js';
import type { Target } from './target.js';

export interface PersisterOptions {
  readonly blobs: BlobSource;
  readonly manifests: ManifestSource;
  readonly tags: TagWrites;
  readonly store: ResilientStore;
  /** `all`, or a list like linux/amd64: which platforms of an index to complete in the background. */
  readonly platforms: readonly string[] | 'all';
  readonly log: Logger;
  /** Node-wide bound of background fetches (BackgroundBudget); defaults below. */
  readonly budget?: BackgroundBudget;
}

/** containerd's own default of concurrent layer downloads: per manifest. */
const BACKGROUND_FETCHES = 3;
/** Node-wide: a few images persisting at once, and never more spool than a large image's worth. */
const NODE_FETCHES = 6;
const NODE_BYTES = 2 * 2 ** 30;

export class Persister {
  private readonly o: PersisterOptions;
  private readonly budget: BackgroundBudget;
  private readonly inflight = new Map<string, Promise<boolean>>();
  private persisting = 0;

  constructor(opts: PersisterOptions) {
    this.o = opts;
    this.budget = opts.budget ?? new BackgroundBudget({ maxFetches: NODE_FETCHES, maxBytes: NODE_BYTES });
  }

  /** Work not finished: persist calls (their tag writes included) and manifests in flight. Zero when idle. */
  get pending(): number {
    return this.inflight.size + this.persisting;
  }

  /**
   * Background: never throws, logs what it could not store. `platforms` replaces --platforms for
   * this manifest's index (a pre-warm names its own).
   */
  persist(
    t: Target,
    m: StoredManifest,
    tag?: { name: string; confirmedAt: number },
    platforms: readonly string[] | 'all' = this.o.platforms,
  ): Promise<boolean> {
    const p = this.persistManifest(t, m, platforms).then(async (ok) => {
      if (ok && tag) return this.o.tags.write(t, tag.name, m, tag.confirmedAt);
      return ok;
    });
    // The tag is written after the manifest's run has left `inflight`: counted until then too.
    this.persisting++;
    return p
      .catch((err: unknown) => {
        this.o.log.warn(
          { image: `${t.registry}/${t.repository}@${m.digest}`, err: (err as Error).message },
          'could not persist manifest',
        );
        return false;
      })
      .finally(() => this.persisting--);
  }

  private persistManifest(t: Target, m: StoredManifest, platforms: readonly string[] | 'all'): Promise<boolean> {
    // Per platform set: a pre-warm of every platform must not settle for a pull's amd64-only run.
    const key = `${t.cacheRepo}@${m.digest} ${platforms === 'all' ? 'all' : [...platforms].sort().join(',')}`;
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.run(t, m, platforms).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async run(t: Target, m: StoredManifest, platforms: readonly string[] | 'all'): Promise<boolean> {
    const parsed = parseManifest(m.bytes, m.mediaType);
    // A stored index may lack children another platform set wants (it is then kept as a blob):
    // its children are checked each time, and it is put again once they are all there.
    if (parsed.kind === 'image' && (await this.o.manifests.stored(t, m.digest))) return true;
    if (parsed.kind === 'image') {
      // A few at a time, in manifest order: the layers a client is pulling right now should not
      // compete with twenty background fetches for the link and the CPU. A slot is free once the
      // bytes are in, not once they are uploaded: the cache registry must not slow the pull.
      const progress = await mapLimit([parsed.config, ...parsed.layers], BACKGROUND_FETCHES, (d) =>
        this.prefetch(t, d),
      );
      const results = await Promise.all(progress.map((p) => p.stored));
      if (results.includes(false)) {
        this.o.log.warn(
          { image: `${t.registry}/${t.repository}@${m.digest}` },
          'manifest not stored: some of its blobs could not be cached',
        );
        return false;
      }
    } else {
      const wanted = parsed.manifests.filter((d) => wants(platforms, d));
      await Promise.all(wanted.map((d) => this.child(t, d.digest, platforms)));
    }
    return this.o.store.putManifest(t.cacheRepo, m);
  }

  /** One blob within the node's background budget, held until its bytes are fetched. */
  private async prefetch(t: Target, d: Descriptor): Promise<BlobProgress> {
    const release = await this.budget.acquire(d.size);
    try {
      return await this.o.blobs.prefetch(t, d);
    } finally {
      release();
    }
  }

  /** An index's child manifest, stored (fetched from the origin when missing). */
  private async child(t: Target, digest: string, platforms: readonly string[] | 'all'): Promise<boolean> {
    if (await this.o.manifests.stored(t, digest)) return true;
    const m = await this.o.manifests.fetch(t, digest, { log: this.o.log });
    return this.persistManifest(t, m, platforms);
  }
}

/** Whether an index entry is one of `platforms` (`os/arch` matches every variant of it). */
export function wants(platforms: readonly string[] | 'all', d: Descriptor): boolean {
  if (platforms === 'all') return true;
  if (!d.platform) return false;
  const full = formatPlatform(d.platform);
  const base = `${d.platform.os}/${d.platform.architecture}`;
  return platforms.some((w) => w === full || w === base);
}
