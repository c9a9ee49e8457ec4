/**
 * Tags: served from the cache while younger than the tag TTL; after that revalidated with a HEAD
 * (free against Docker Hub's pull limit); when the origin cannot answer, or deleted the tag, the
 * cached tag is served stale and the log says so. Auth refusals are never papered over, and a
 * revalidation tells the access gate who the origin answered: a refusal of every credential,
 * anonymous included, makes the repository private there and then. Each stale answer is also
 * reported to an injected sink (the node proxy turns it into Events on the pods that use the tag).
 */
import type { AccessGate } from '../access/access-control.js';
import { Memo } from '../cache/memo.js';
import type { ResilientStore } from '../cache/resilient-store.js';
import type { StoredManifest, TagRecord } from '../cache/store.js';
import { OciError } from '../oci/errors.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import type { ManifestSource } from './manifest-source.js';
import { headerString, isAuthError, isNotFound, type Origin, type PullEvents } from './origin.js';
import type { RequestContext, Source } from './request-context.js';
import type { Target } from './target.js';

export interface TagAnswer {
  readonly manifest: StoredManifest;
  readonly source: Source;
  /** Set when the origin served the manifest anew: when, for the tag record the persister writes. */
  readonly fetchedAt?: number;
}

/**
 * Tag writes of one tag, one after the other, and never older over newer: the persist of an
 * image the tag pointed to before can finish after the persist of what it points to now.
 */
export class TagWrites {
  private readonly store: ResilientStore;
  private readonly running = new Map<string, Promise<boolean>>();

  constructor(store: ResilientStore) {
    this.store = store;
  }

  write(t: Target, tag: string, m: StoredManifest, confirmedAt: number): Promise<boolean> {
    const key = `${t.cacheRepo}:${tag}`;
    const write = (this.running.get(key) ?? Promise.resolve(true)).then(async () => {
      const current = await this.store.getTag(t.cacheRepo, tag);
      if (current && current.confirmedAt > confirmedAt) return true;
      return this.store.putTag(t.cacheRepo, tag, m, confirmedAt);
    });
    this.running.set(key, write);
    void write
      .finally(() => {
        if (this.running.get(key) === write) this.running.delete(key);
      })
      .catch(() => undefined);
    return write;
  }
}

/** A tag served from the cache because the origin could not confirm it. */
export interface StaleTag {
  readonly registry: string;
  readonly repository: string;
  readonly tag: string;
  /** The cached digest served. */
  readonly digest: string;
  /** When the origin last confirmed the tag; undefined when unknown. */
  readonly confirmedAt: number | undefined;
  /** The origin's failure (a typed error's message: no credentials). */
  readonly reason: string;
}

export type StaleSink = (served: StaleTag) => void;

export interface TagResolverOptions {
  readonly origin: Origin;
  readonly store: ResilientStore;
  readonly manifests: ManifestSource;
  readonly writes: TagWrites;
  readonly tagTtlMs: number;
  readonly now: () => number;
  readonly access: AccessGate | undefined;
  readonly events?: PullEvents;
  readonly onStale?: StaleSink;
}

export class TagResolver {
  private readonly o: TagResolverOptions;
  private readonly tags = new Memo<TagRecord>({ maxEntries: 20000 });
  /** Revalidation HEADs in flight, by tag: clients that find a tag expired at once share one. */
  private readonly heads = new Map<string, Promise<string | undefined>>();

  constructor(opts: TagResolverOptions) {
    this.o = opts;
  }

  async resolve(t: Target, tag: string, ctx: RequestContext): Promise<TagAnswer> {
    const key = `${t.cacheRepo}:${tag}`;
    const now = this.o.now();
    const stored = this.tags.get(key) ?? (await this.o.store.getTag(t.cacheRepo, tag));
    let cached = stored ? await this.o.manifests.cached(t, stored.digest) : undefined;
    // Another request may have revalidated or fetched the tag while this one read the store.
    const fresher = this.tags.get(key);
    let rec = stored;
    if (fresher && fresher.digest === stored?.digest) rec = fresher;
    else if (fresher && (!stored || fresher.confirmedAt > stored.confirmedAt)) {
      const fetched = await this.o.manifests.cached(t, fresher.digest);
      if (fetched) {
        rec = fresher;
        cached = fetched;
      }
    }
    if (rec && cached && now - rec.confirmedAt < this.o.tagTtlMs) {
      this.tags.set(key, rec, { ttlMs: rec.confirmedAt + this.o.tagTtlMs - now });
      await this.o.access?.authorize(t, 'manifest', tag, ctx, {});
      return { manifest: cached, source: 'cache' };
    }
    if (cached) {
      const revalidated = await this.revalidate(t, tag, cached, rec?.confirmedAt, ctx);
      if (revalidated) return revalidated;
    }
    let m: StoredManifest;
    try {
      m = await this.o.manifests.fetch(t, tag, ctx);
    } catch (err) {
      if (cached && !isAuthError(err)) {
        return this.stale(t, tag, cached, rec?.confirmedAt, (err as Error).message, ctx, !isNotFound(err));
      }
      throw this.refused(t, err);
    }
    this.remember(t, tag, m.digest, now);
    return { manifest: m, source: 'origin', fetchedAt: now };
  }

  /** A HEAD at the origin: same digest -> still good; else undefined (fetch anew) or stale. */
  private async revalidate(
    t: Target,
    tag: string,
    cached: StoredManifest,
    confirmedAt: number | undefined,
    ctx: RequestContext,
  ): Promise<TagAnswer | undefined> {
    let digest: string | undefined;
    try {
      digest = await this.headDigest(t, tag, ctx.originAuthorization);
    } catch (err) {
      if (isAuthError(err)) throw this.refused(t, err);
      // A deleted tag (404) is an answer: the origin-down policy for private images does not apply.
      return this.stale(t, tag, cached, confirmedAt, (err as Error).message, ctx, !isNotFound(err));
    }
    if (digest !== cached.digest) return undefined;
    const now = this.o.now();
    this.remember(t, tag, cached.digest, now);
    void this.o.writes.write(t, tag, cached, now);
    return { manifest: cached, source: 'cache' };
  }

  /**
   * The digest the origin's HEAD of the tag names; one HEAD per tag at a time. Not a client's
   * signal: other clients wait on the same HEAD (the origin timeout bounds it).
   */
  private headDigest(t: Target, tag: string, authorization: string | undefined): Promise<string | undefined> {
    const key = `${t.cacheRepo}:${tag}`;
    let head = this.heads.get(key);
    if (!head) {
      head = this.o.origin
        .request(t, 'HEAD', 'manifest', tag, { headers: { accept: MANIFEST_ACCEPT }, authorization })
        .then(async (res) => {
          await res.body.dump();
          return headerString(res.headers['docker-content-digest']);
        })
        .finally(() => this.heads.delete(key));
      this.heads.set(key, head);
    }
    return head;
  }

  /**
   * Serves a cached tag the origin could not confirm. A private one only as the access gate says:
   * `unreachable` when the origin could not answer at all (its origin-down policy applies).
   */
  private async stale(
    t: Target,
    tag: string,
    cached: StoredManifest,
    confirmedAt: number | undefined,
    why: string,
    ctx: RequestContext,
    unreachable: boolean,
  ): Promise<TagAnswer> {
    await this.o.access?.authorize(t, 'manifest', tag, ctx, unreachable ? { originUnreachable: why } : {});
    ctx.log.warn(
      { image: `${t.registry}/${t.repository}:${tag}`, digest: cached.digest, reason: why },
      'origin could not confirm tag; serving the cached copy (stale-if-error)',
    );
    this.o.events?.fallback?.('stale-tag');
    this.o.onStale?.({
      registry: t.registry,
      repository: t.repository,
      tag,
      digest: cached.digest,
      confirmedAt,
      reason: why,
    });
    return { manifest: cached, source: 'stale' };
  }

  /** An auth refusal passes through; a 401 (every credential refused, anonymous included) is noted first. */
  private refused(t: Target, err: unknown): unknown {
    if (err instanceof OciError && err.code === 'UNAUTHORIZED') this.o.access?.observeRefused(t);
    return err;
  }

  private remember(t: Target, tag: string, digest: string, confirmedAt: number): void {
    this.tags.set(`${t.cacheRepo}:${tag}`, { digest, confirmedAt }, { ttlMs: this.o.tagTtlMs });
  }
}
