/**
 * Puts what a pull fetched from the origin into the store, in the order a registry accepts it:
 * blobs, then the image manifest that references them, then an index (after its children within
 * `--platforms`), then the tag. Blobs the client never asked for are fetched in the background,
 * through the same shared fills clients use, so no blob is downloaded twice.
 */
import type { Log as Logger } from '../observability/logger.js';
import type { StoredManifest } from '../cache/store.js';
import { formatPlatform, parseManifest, type Descriptor } from '../oci/media-types.js';
import type { Target } from './target.js';

/** A blob on its way into the store. */
export interface BlobProgress {
  /** True once stored; false when it will not be. */
  readonly stored: Promise<boolean>;
}

export interface PersistDeps {
  /**
   * Makes sure the blob is stored or being filled; resolves once its bytes are fetched. Storing
   * them (an upload to the cache registry) may take longer: `stored` tells when it is done.
   */
  ensureBlob(t: Target, d: Descriptor): Promise<BlobProgress>;
  /** The child manifest, stored (fetched from the origin when missing). */
  ensureManifest(t: Target, digest: string): Promise<boolean>;
  hasManifest(t: Target, digest: string): Promise<boolean>;
  putManifest(t: Target, m: StoredManifest): Promise<boolean>;
  putTag(t: Target, tag: string, m: StoredManifest, confirmedAt: number): Promise<boolean>;
  /** `all`, or a list like linux/amd64: which platforms of an index to complete in the background. */
  readonly platforms: readonly string[] | 'all';
  readonly log: Logger;
}

/** containerd's own default of concurrent layer downloads. */
const BACKGROUND_FETCHES = 3;

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export class Persister {
  private readonly deps: PersistDeps;
  private readonly inflight = new Map<string, Promise<boolean>>();

  constructor(deps: PersistDeps) {
    this.deps = deps;
  }

  /** Number of manifests still being persisted (for tests and health). */
  get pending(): number {
    return this.inflight.size;
  }

  /** Background: never throws, logs what it could not store. */
  persist(t: Target, m: StoredManifest, tag?: { name: string; confirmedAt: number }): Promise<boolean> {
    const p = this.persistManifest(t, m).then(async (ok) => {
      if (ok && tag) return this.deps.putTag(t, tag.name, m, tag.confirmedAt);
      return ok;
    });
    return p.catch((err: Error) => {
      this.deps.log.warn({ image: `${t.registry}/${t.repository}@${m.digest}`, err: err.message }, 'could not persist manifest');
      return false;
    });
  }

  persistManifest(t: Target, m: StoredManifest): Promise<boolean> {
    const key = `${t.cacheRepo}@${m.digest}`;
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.run(t, m).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async run(t: Target, m: StoredManifest): Promise<boolean> {
    if (await this.deps.hasManifest(t, m.digest)) return true;
    const parsed = parseManifest(m.bytes, m.mediaType);
    if (parsed.kind === 'image') {
      // A few at a time, in manifest order: the layers a client is pulling right now should not
      // compete with twenty background fetches for the link and the CPU. A slot is free once the
      // bytes are in, not once they are uploaded: the cache registry must not slow the pull.
      const progress = await mapLimit([parsed.config, ...parsed.layers], BACKGROUND_FETCHES, (d) => this.deps.ensureBlob(t, d));
      const results = await Promise.all(progress.map((p) => p.stored));
      if (results.includes(false)) {
        this.deps.log.warn({ image: `${t.registry}/${t.repository}@${m.digest}` }, 'manifest not stored: some of its blobs could not be cached');
        return false;
      }
    } else {
      const wanted = parsed.manifests.filter((d) => this.wants(d));
      await Promise.all(wanted.map((d) => this.deps.ensureManifest(t, d.digest)));
    }
    return this.deps.putManifest(t, m);
  }

  private wants(d: Descriptor): boolean {
    const p = this.deps.platforms;
    if (p === 'all') return true;
    if (!d.platform) return false;
    const full = formatPlatform(d.platform);
    const base = `${d.platform.os}/${d.platform.architecture}`;
    return p.some((w) => w === full || w === base);
  }
}
