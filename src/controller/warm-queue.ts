/**
 * Fetches CachedImages into the cache: every object whose current generation is not yet Cached
 * (a new one, a changed spec, a used image back from Expiring) is warmed through the proxy's own
 * pull path, a few at a time; its status says Caching, then Cached with digest, size and
 * platforms, or Failed with a short reason, retried with exponential backoff. An image that pods
 * already pulled costs a few store lookups. Events on every change of state; never a credential in
 * a status, an Event or a log line (the reasons come from typed errors that name no secret).
 *
 * Refresh: a Cached tag whose `refresh` is an interval is checked with a HEAD at the origin once
 * per interval (`lastChecked` in its status, so a new leader keeps the rhythm, to within
 * LAST_CHECKED_EVERY_MS); `upstreamDigest`
 * and `upToDate` say what the origin has. A moved tag is fetched by its new digest and the stored
 * tag moved to it, so the next pull on any node is served from the cache. Checks share the warms'
 * slots (so the origin sees no more requests at once than warms make) and their backoff.
 */
import { cachedImageRef, type CachedImage, type CachedImageApi } from '../kube/cached-images.js';
import { describeKubeError } from '../kube/errors.js';
import type { EventRecorder } from '../kube/event-recorder.js';
import type { KubeLogger } from '../kube/logger.js';
import type { SecretCredentials } from '../kube/secret-credentials.js';
import type { Credential } from '../oci/credentials.js';
import { parseReference } from '../oci/reference.js';
import { refreshIntervalMs } from './refresh-interval.js';

/** What a warm needs from the proxy's pull path (src/proxy/prewarm.ts). */
export interface ImageWarmer {
  warm(req: {
    readonly image: string;
    readonly platforms?: readonly string[] | 'all';
    readonly credentials?: readonly Credential[];
    readonly signal?: AbortSignal;
    /** A tag's new digest at the origin (a refresh): fetched, and the stored tag moved to it. */
    readonly digest?: string;
  }): Promise<{ readonly digest: string; readonly size: number; readonly platforms: readonly string[] }>;
  /** The digest the origin names for the image's tag now (a HEAD). */
  upstreamDigest(req: {
    readonly image: string;
    readonly credentials?: readonly Credential[];
    readonly signal?: AbortSignal;
  }): Promise<string>;
}

export interface WarmQueueOptions {
  readonly api: CachedImageApi;
  readonly warmer: ImageWarmer;
  readonly secrets: SecretCredentials;
  readonly events?: EventRecorder;
  readonly log: KubeLogger;
  /** Warms at once. Default 2. */
  readonly concurrency?: number;
  /** Retry delays after a failure: doubling from `initialMs` to `maxMs`. Default 10 s to 10 min. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly now?: () => number;
}

/**
 * A check that finds nothing new writes `lastChecked` only when the status says it is older than
 * this: short intervals on many objects cost no stream of status writes.
 */
export const LAST_CHECKED_EVERY_MS = 10 * 60_000;

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** Bytes in binary units, as `kubectl get ci` shows them: `512 B`, `1.5 MiB`. */
export function humanSize(bytes: number): string {
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${String(v)} B` : `${v.toFixed(1)} ${UNITS[u] ?? ''}`;
}

/** A failure's reason for status and Events: the typed error's message, short, one line. */
function reasonOf(err: unknown): string {
  const text = err instanceof Error ? err.message : describeKubeError(err).reason;
  return text.replace(/\s+/g, ' ').slice(0, 300);
}

export class WarmQueue {
  private readonly o: WarmQueueOptions & { now: () => number };
  private readonly running = new Map<string, Promise<void>>();
  private readonly retries = new Map<string, { attempts: number; at: number; generation: number }>();
  /** When each refreshed tag was last checked here (its status may lag a list behind). */
  private readonly checkedAt = new Map<string, number>();

  constructor(opts: WarmQueueOptions) {
    this.o = { now: Date.now, ...opts };
  }

  /** Warms being made now. */
  get active(): number {
    return this.running.size;
  }

  /**
   * Starts warms for the objects that need one, up to the concurrency, and returns at once. When
   * `leading` aborts (leadership lost), the warms stop and write nothing more.
   */
  schedule(objects: readonly CachedImage[], leading: AbortSignal): void {
    for (const o of objects) {
      if (this.running.size >= (this.o.concurrency ?? 2)) break;
      const work = this.due(o) ? this.warm(o, leading) : this.refreshDue(o) ? this.refresh(o, leading) : undefined;
      if (work === undefined) continue;
      const name = o.metadata.name;
      this.running.set(
        name,
        work.finally(() => this.running.delete(name)),
      );
    }
  }

  /** Resolves when every warm started has ended. */
  async idle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  private due(o: CachedImage): boolean {
    if (this.running.has(o.metadata.name)) return false;
    const s = o.status;
    const generation = o.metadata.generation ?? 1;
    // Unused ones: expiring, or removed from the cache by a collection (fetched again once used).
    if (s?.phase === 'Expiring' || s?.phase === 'Evicted') return false;
    if (s?.phase === 'Cached' && s.observedGeneration === generation) return false;
    const retry = this.retries.get(o.metadata.name);
    if (!retry) return true;
    // A failure waits out its backoff, unless the spec changed since.
    return retry.generation !== generation || this.o.now() >= retry.at;
  }

  /** A Cached tag with a refresh interval whose check is due (and not waiting out a backoff). */
  private refreshDue(o: CachedImage): boolean {
    const interval = refreshIntervalMs(o.spec.refresh);
    const s = o.status;
    if (interval === undefined || s?.phase !== 'Cached' || s.observedGeneration !== (o.metadata.generation ?? 1)) {
      return false;
    }
    let ref;
    try {
      ref = parseReference(o.spec.image);
    } catch {
      return false;
    }
    if (ref.digest !== undefined) return false;
    const name = o.metadata.name;
    if (this.running.has(name)) return false;
    const retry = this.retries.get(name);
    if (retry && this.o.now() < retry.at) return false;
    const said = s.lastChecked === undefined ? undefined : Date.parse(s.lastChecked);
    const last = Math.max(this.checkedAt.get(name) ?? -Infinity, Number.isNaN(said) ? -Infinity : (said ?? -Infinity));
    return this.o.now() - last >= interval;
  }

  /**
   * One check of a refreshed tag: the origin's digest for it; when it moved, `upToDate: false`
   * first, then the new digest fetched into the cache and the stored tag moved, then `Cached`
   * with the new digest and an Event. A failure keeps what is cached and waits out a backoff.
   */
  private async refresh(o: CachedImage, leading: AbortSignal): Promise<void> {
    const name = o.metadata.name;
    const target = cachedImageRef(o);
    const stopped = (): boolean => leading.aborted;
    const checkedAt = this.o.now();
    this.checkedAt.set(name, checkedAt);
    const lastChecked = new Date(checkedAt).toISOString();
    try {
      const ref = parseReference(o.spec.image);
      const credentials = o.spec.pullSecretRef
        ? await this.o.secrets(o.spec.pullSecretRef, ref.registry, ref.repository)
        : [];
      const upstream = await this.o.warmer.upstreamDigest({ image: o.spec.image, credentials, signal: leading });
      if (stopped()) return;
      const cached = o.status?.digest;
      if (upstream === cached) {
        this.retries.delete(name);
        const s = o.status;
        const saidAt = s?.lastChecked === undefined ? undefined : Date.parse(s.lastChecked);
        const unchanged =
          s?.upstreamDigest === upstream &&
          s.upToDate === true &&
          !s.message?.startsWith('refresh failed') &&
          saidAt !== undefined &&
          checkedAt - saidAt < LAST_CHECKED_EVERY_MS;
        if (unchanged) return;
        await this.o.api.patchStatus(name, {
          upstreamDigest: upstream,
          upToDate: true,
          lastChecked,
          ...(s?.message?.startsWith('refresh failed') ? { message: null } : {}),
        });
        return;
      }
      await this.o.api.patchStatus(name, { upstreamDigest: upstream, upToDate: false, lastChecked });
      const platforms = o.spec.platforms?.includes('all') ? 'all' : o.spec.platforms;
      const r = await this.o.warmer.warm({
        image: o.spec.image,
        credentials,
        signal: leading,
        digest: upstream,
        ...(platforms !== undefined ? { platforms } : {}),
      });
      if (stopped()) return;
      await this.o.api.patchStatus(name, {
        digest: r.digest,
        size: r.size,
        sizeText: humanSize(r.size),
        platforms: r.platforms,
        upstreamDigest: r.digest,
        upToDate: true,
        message: null,
      });
      this.retries.delete(name);
      void this.o.events?.record(
        target,
        'Normal',
        'Refreshed',
        `${o.spec.image} moved at the origin from ${String(cached)} to ${r.digest}; the new digest is cached`,
      );
    } catch (err) {
      if (stopped()) return;
      const attempts = (this.retries.get(name)?.attempts ?? 0) + 1;
      const { initialMs, maxMs } = this.o.backoff ?? { initialMs: 10_000, maxMs: 600_000 };
      const delay = Math.min(maxMs, initialMs * 2 ** (attempts - 1));
      this.retries.set(name, { attempts, at: this.o.now() + delay, generation: o.metadata.generation ?? 1 });
      const reason = reasonOf(err);
      this.o.log.warn({ cachedImage: name, image: o.spec.image, reason, retryInMs: delay }, 'refresh failed');
      // What is cached stays Cached and served: the message says the check failed.
      await this.o.api.patchStatus(name, { lastChecked, message: `refresh failed: ${reason}` }).catch((e: unknown) => {
        this.o.log.warn({ cachedImage: name, err: describeKubeError(e) }, 'CachedImage status write failed');
      });
      void this.o.events?.record(target, 'Warning', 'RefreshFailed', reason);
    }
  }

  private async warm(o: CachedImage, leading: AbortSignal): Promise<void> {
    const name = o.metadata.name;
    const generation = o.metadata.generation ?? 1;
    const target = cachedImageRef(o);
    // Read afresh each time: leadership can end during any await.
    const stopped = (): boolean => leading.aborted;
    try {
      await this.o.api.patchStatus(name, { phase: 'Caching', message: null });
      void this.o.events?.record(target, 'Normal', 'Caching', `fetching ${o.spec.image} into the cache`);
      const ref = parseReference(o.spec.image);
      const credentials = o.spec.pullSecretRef
        ? await this.o.secrets(o.spec.pullSecretRef, ref.registry, ref.repository)
        : [];
      const platforms = o.spec.platforms?.includes('all') ? 'all' : o.spec.platforms;
      if (stopped()) return;
      const r = await this.o.warmer.warm({
        image: o.spec.image,
        credentials,
        signal: leading,
        ...(platforms !== undefined ? { platforms } : {}),
      });
      if (stopped()) return;
      await this.o.api.patchStatus(name, {
        phase: 'Cached',
        observedGeneration: generation,
        digest: r.digest,
        size: r.size,
        sizeText: humanSize(r.size),
        platforms: r.platforms,
        // What a refresh said was about what was cached before; the next check says it anew.
        ...(o.status?.upstreamDigest !== undefined ? { upstreamDigest: null, upToDate: null, lastChecked: null } : {}),
        message: null,
      });
      this.retries.delete(name);
      this.checkedAt.delete(name);
      void this.o.events?.record(target, 'Normal', 'Cached', `${o.spec.image} cached: ${humanSize(r.size)}`);
    } catch (err) {
      if (stopped()) return;
      const attempts = (this.retries.get(name)?.attempts ?? 0) + 1;
      const { initialMs, maxMs } = this.o.backoff ?? { initialMs: 10_000, maxMs: 600_000 };
      const delay = Math.min(maxMs, initialMs * 2 ** (attempts - 1));
      this.retries.set(name, { attempts, at: this.o.now() + delay, generation });
      const reason = reasonOf(err);
      this.o.log.warn({ cachedImage: name, image: o.spec.image, reason, retryInMs: delay }, 'pre-warm failed');
      await this.o.api
        .patchStatus(name, { phase: 'Failed', observedGeneration: generation, message: reason })
        .catch((e: unknown) => {
          this.o.log.warn({ cachedImage: name, err: describeKubeError(e) }, 'CachedImage status write failed');
        });
      void this.o.events?.record(target, 'Warning', 'CacheFailed', reason);
    }
  }
}
