/**
 * The leader's collection loop (docs/garbage-collection.md): every interval, reads the
 * CachedImages and the blobs their manifests hold in the cache registry, chooses what to remove
 * (gc-selection.ts), removes it and collects through the registry collector (which holds the
 * writers on the Lease while the registry sweeps), then marks each removed image's CachedImage
 * Evicted and records an Event. It reads the registry's volume before and after (free space,
 * reclaimed bytes) and says with Warning Events what it cannot fix: usage over the budget that no
 * removal brings under it, an image larger than the budget, a volume smaller than the budget. A
 * pass that failed leaves the next one to sweep even when it has nothing new to remove.
 */
import type { CacheSize } from '../config/proxy.js';
import { cachedImageRef, type CachedImage, type CachedImageApi } from '../kube/cached-images.js';
import type { EventRecorder, EventTarget } from '../kube/event-recorder.js';
import { describeKubeError } from '../kube/errors.js';
import type { ControllerCollections } from '../observability/metrics.js';
import { abortableSleep } from '../runtime/abortable-sleep.js';
import { mapLimit } from '../runtime/map-limit.js';
import { candidateOf, selectRemovals, type Candidate, type Selection, type Why } from './gc-selection.js';
import type { Footprint } from './image-footprint.js';
import type { Removal, RegistryStorage } from './registry-collector.js';

/** What the loop needs of RegistryCollector. */
export interface Collector {
  checkDeletes(): Promise<void>;
  collect(removals: readonly Removal[]): Promise<{ deleted: number; absent: number }>;
  /** The blobs an image holds in the registry; without it, CachedImage sizes stand in (summed). */
  footprint?(image: string, digest: string): Promise<Footprint>;
  /** What the registry's storage holds; without it, nothing is known of the volume. */
  storage?(): Promise<RegistryStorage>;
}

export interface CollectionLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface CollectionBudget {
  /** --max-cache-size: bytes, or a share of the registry's volume (known once the gc-runner answers). */
  readonly size: CacheSize;
  /** --cache-low-water, a fraction of the budget. */
  readonly lowWater: number;
}

export interface CollectionLoopOptions {
  readonly api: CachedImageApi;
  readonly collector: Collector;
  /** Undefined: only expired images are removed. */
  readonly budget: CollectionBudget | undefined;
  readonly expireAfterMs: number;
  readonly intervalMs: number;
  readonly log: CollectionLog;
  readonly events?: EventRecorder;
  /** The object Events about the registry as a whole are on (the collection Lease). */
  readonly registryObject?: EventTarget;
  readonly now?: () => number;
}

/** Totals since start, for the metrics (ControllerMetrics reads them as they are). */
export type CollectionStats = ControllerCollections;

export interface PassOutcome {
  readonly removed: readonly string[];
  readonly swept: boolean;
}

/** Manifest reads at once (the collector's registry client has four connections). */
const FOOTPRINT_READERS = 4;

interface Budget {
  readonly maxBytes: number;
  readonly lowWaterBytes: number;
  readonly given: 'size' | 'share';
}

export class CollectionLoop {
  private readonly o: CollectionLoopOptions;
  private readonly now: () => number;
  private stats: CollectionStats = {
    succeeded: 0,
    failed: 0,
    imagesRemoved: 0,
    usedBytesBefore: 0,
    usedBytesAfter: 0,
    reclaimedBytes: 0,
  };
  /** The last pass did not finish: the next one sweeps whatever it finds to remove. */
  private unfinished = false;

  constructor(opts: CollectionLoopOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
  }

  get totals(): CollectionStats {
    return this.stats;
  }

  /**
   * Passes every interval until `signal` aborts; the first one an interval after the start. A
   * registry that refuses deletes is said at once (and again by each pass that needs them).
   */
  async run(signal: AbortSignal): Promise<void> {
    try {
      await this.o.collector.checkDeletes();
    } catch (err) {
      this.o.log.warn({ err: describeError(err) }, 'collection cannot remove anything from the cache registry');
    }
    for (;;) {
      await abortableSleep(this.o.intervalMs, signal);
      if (signal.aborted) return;
      try {
        await this.pass();
      } catch (err) {
        this.o.log.warn({ err: describeError(err) }, 'collection failed; the next one finishes the job');
      }
    }
  }

  /** One collection. Throws when it could not finish (counted as failed). */
  async pass(): Promise<PassOutcome> {
    const started = this.now();
    try {
      const before = await this.readStorage();
      const budget = this.resolveBudget(before);
      const objects = await this.o.api.list();
      const selection = selectRemovals(await this.candidates(objects), {
        maxBytes: budget?.maxBytes ?? Number.POSITIVE_INFINITY,
        lowWaterBytes: budget?.lowWaterBytes ?? Number.POSITIVE_INFINITY,
        expireAfterMs: this.o.expireAfterMs,
        now: started,
      });
      if (budget) this.reportBudget(selection, budget, objects);
      if (selection.remove.length === 0 && !this.unfinished) {
        this.record(selection, [], budget, before, 0);
        this.reportVolume(before, budget, selection.afterBytes);
        this.o.log.info({ usedBytes: selection.usedBytes, images: objects.length }, 'collection: nothing to remove');
        return { removed: [], swept: false };
      }
      await this.o.collector.checkDeletes();
      this.unfinished = true;
      const removals = selection.remove.flatMap(({ candidate }) =>
        candidate.digest === undefined ? [] : [{ image: candidate.image, digest: candidate.digest }],
      );
      const result = await this.o.collector.collect(removals);
      this.unfinished = false;
      const after = await this.readStorage();
      const reclaimed =
        before?.kind === 'volume' && after?.kind === 'volume' ? Math.max(0, after.freeBytes - before.freeBytes) : 0;
      const byName = new Map(objects.map((o) => [o.metadata.name, o]));
      const removed: string[] = [];
      for (const { candidate, why } of selection.remove) {
        removed.push(candidate.image);
        await this.markEvicted(byName.get(candidate.name), why, started);
      }
      this.record(selection, removed, budget, after ?? before, reclaimed);
      this.reportVolume(after ?? before, budget, selection.afterBytes);
      this.o.log.info(
        {
          removed,
          deleted: result.deleted,
          absent: result.absent,
          usedBytesBefore: selection.usedBytes,
          usedBytesAfter: selection.afterBytes,
          ...(after?.kind === 'volume' ? { reclaimedBytes: reclaimed, freeBytes: after.freeBytes } : {}),
          durationMs: this.now() - started,
        },
        'collection done',
      );
      return { removed, swept: true };
    } catch (err) {
      this.stats = { ...this.stats, failed: this.stats.failed + 1 };
      throw err;
    }
  }

  /**
   * Candidates with the blobs their manifests hold, read a few at a time (a first pass reads every
   * manifest; later ones find them remembered); one whose manifests cannot be read counts its
   * status size.
   */
  private async candidates(objects: readonly CachedImage[]): Promise<Candidate[]> {
    const out = objects.map(candidateOf);
    const footprint = this.o.collector.footprint?.bind(this.o.collector);
    if (!footprint) return out;
    let unread = 0;
    let firstErr: unknown;
    const read = await mapLimit(out, FOOTPRINT_READERS, async (c): Promise<Candidate> => {
      if (c.digest === undefined) return c;
      try {
        return { ...c, blobs: await footprint(c.image, c.digest) };
      } catch (err) {
        unread++;
        firstErr ??= err;
        return c;
      }
    });
    if (unread > 0) {
      this.o.log.warn(
        { images: unread, err: describeError(firstErr) },
        "collection: some images' manifests could not be read; their CachedImage sizes stand in",
      );
    }
    return read;
  }

  private async readStorage(): Promise<RegistryStorage | undefined> {
    if (!this.o.collector.storage) return undefined;
    try {
      return await this.o.collector.storage();
    } catch (err) {
      this.o.log.warn({ err: describeError(err) }, "collection: the registry's storage is unknown this pass");
      return undefined;
    }
  }

  /** The budget in bytes; a share of the volume needs the volume (refused on object storage). */
  private resolveBudget(storage: RegistryStorage | undefined): Budget | undefined {
    const b = this.o.budget;
    if (!b) return undefined;
    let maxBytes: number;
    if ('bytes' in b.size) maxBytes = b.size.bytes;
    else if (storage?.kind === 'volume') maxBytes = Math.floor(storage.sizeBytes * b.size.shareOfVolume);
    else {
      const message =
        storage?.kind === 'no-volume'
          ? `--max-cache-size is a share of the volume (${b.size.shareOfVolume * 100}%), but the cache registry ` +
            'stores on object storage (S3), which has no volume: set a size (e.g. 200GiB); ' +
            'only expired images are removed'
          : `--max-cache-size is a share of the volume (${b.size.shareOfVolume * 100}%), and the gc-runner did not ` +
            "say the volume's size: only expired images are removed this pass";
      this.o.log.error({ maxCacheSize: `${b.size.shareOfVolume * 100}%` }, message);
      if (storage?.kind === 'no-volume') this.registryEvent('CacheBudgetUnusable', message);
      return undefined;
    }
    return {
      maxBytes,
      lowWaterBytes: Math.floor(maxBytes * b.lowWater),
      given: 'bytes' in b.size ? 'size' : 'share',
    };
  }

  /** Says what the budget cannot do: hold an image, or be met by any removal. */
  private reportBudget(selection: Selection, budget: Budget, objects: readonly CachedImage[]): void {
    const byName = new Map(objects.map((o) => [o.metadata.name, o]));
    for (const { candidate, bytes } of selection.tooLarge) {
      const message =
        `${candidate.image} takes ${bytes} bytes in the cache registry, more than the budget's low-water mark ` +
        `(${budget.lowWaterBytes} of --max-cache-size ${budget.maxBytes}): it is removed only when it expires; ` +
        'raise --max-cache-size or --cache-low-water';
      this.o.log.error({ image: candidate.image, bytes, lowWaterBytes: budget.lowWaterBytes }, message);
      const obj = byName.get(candidate.name);
      if (obj) {
        void this.o.events?.record(cachedImageRef(obj), 'Warning', 'LargerThanCacheBudget', message);
      }
    }
    if (selection.stuckBytes !== undefined) {
      const message =
        `the cache registry holds ${selection.afterBytes} bytes, over --max-cache-size ${budget.maxBytes}, and ` +
        `${selection.stuckBytes} of them stay whatever is removed (images pods use, retained ones, and ones ` +
        'larger than the low-water mark): nothing is removed for size; raise --max-cache-size or release images';
      this.o.log.error({ usedBytes: selection.afterBytes, stuckBytes: selection.stuckBytes }, message);
      this.registryEvent('CacheOverBudget', message);
    }
  }

  /** Warns when the volume cannot hold what the budget allows. */
  private reportVolume(storage: RegistryStorage | undefined, budget: Budget | undefined, usedBytes: number): void {
    if (storage?.kind !== 'volume' || !budget) return;
    const room = budget.maxBytes - usedBytes;
    if (room <= 0 || storage.freeBytes >= room) return;
    const message =
      `the cache registry's volume has ${storage.freeBytes} bytes free of ${storage.sizeBytes}, but the budget ` +
      `allows ${room} more (--max-cache-size ${budget.maxBytes}, ${usedBytes} used): the volume fills first; ` +
      'lower --max-cache-size (or give it as a share, e.g. 80%) or grow the volume';
    this.o.log.warn({ freeBytes: storage.freeBytes, roomBytes: room }, message);
    this.registryEvent('CacheVolumeTooSmall', message);
  }

  private registryEvent(reason: string, message: string): void {
    if (this.o.registryObject) void this.o.events?.record(this.o.registryObject, 'Warning', reason, message);
  }

  private record(
    selection: Selection,
    removed: readonly string[],
    budget: Budget | undefined,
    storage: RegistryStorage | undefined,
    reclaimed: number,
  ): void {
    const volume =
      storage?.kind === 'volume' ? { sizeBytes: storage.sizeBytes, freeBytes: storage.freeBytes } : undefined;
    this.stats = {
      succeeded: this.stats.succeeded + 1,
      failed: this.stats.failed,
      imagesRemoved: this.stats.imagesRemoved + removed.length,
      usedBytesBefore: selection.usedBytes,
      usedBytesAfter: selection.afterBytes,
      ...(budget ? { budget: { bytes: budget.maxBytes, given: budget.given } } : {}),
      ...(volume ? { volume } : {}),
      reclaimedBytes: this.stats.reclaimedBytes + reclaimed,
    };
  }

  /**
   * The object stays (its usage and history go on; a pod using the image again makes it Pending,
   * and the pull caches it again) but says it is no longer in the cache.
   */
  private async markEvicted(object: CachedImage | undefined, why: Why, at: number): Promise<void> {
    if (!object) return;
    const name = object.metadata.name;
    const message = `removed from the cache (${why}) at ${new Date(at).toISOString()}`;
    try {
      await this.o.api.patchStatus(name, {
        phase: 'Evicted',
        digest: null,
        size: null,
        sizeText: null,
        platforms: null,
        message,
      });
    } catch (err) {
      this.o.log.warn({ image: object.spec.image, err: describeKubeError(err) }, 'CachedImage status write failed');
    }
    void this.o.events?.record(cachedImageRef(object), 'Normal', 'Evicted', `${object.spec.image} ${message}`);
  }
}

function describeError(err: unknown): object {
  if (err instanceof Error && 'code' in err) return { code: err.code, message: err.message };
  return describeKubeError(err);
}
