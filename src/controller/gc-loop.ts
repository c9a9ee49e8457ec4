/**
 * The leader's collection loop (docs/garbage-collection.md): every interval, reads the
 * CachedImages, chooses what to remove (gc-selection.ts), removes it and collects through the
 * registry collector (which holds the writers on the Lease while the registry sweeps), then marks
 * each removed image's CachedImage Evicted and records an Event. A pass that failed leaves the
 * next one to sweep even when it has nothing new to remove.
 */
import type { CachedImage, CachedImageApi } from '../kube/cached-images.js';
import type { EventRecorder } from '../kube/event-recorder.js';
import { describeKubeError } from '../kube/errors.js';
import { abortableSleep } from '../runtime/abortable-sleep.js';
import { candidateOf, selectRemovals, type Selection } from './gc-selection.js';
import type { Removal } from './registry-collector.js';

/** What the loop needs of RegistryCollector. */
export interface Collector {
  checkDeletes(): Promise<void>;
  collect(removals: readonly Removal[]): Promise<{ deleted: number; absent: number }>;
}

export interface CollectionLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CollectionBudget {
  readonly maxBytes: number;
  readonly lowWaterBytes: number;
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
  readonly now?: () => number;
}

/** Totals since start, for the metrics. */
export interface CollectionStats {
  readonly succeeded: number;
  readonly failed: number;
  readonly imagesRemoved: number;
  /** The estimated cache usage (sum of image sizes) before and after the last pass; 0 before the first. */
  readonly usedBytesBefore: number;
  readonly usedBytesAfter: number;
}

export interface PassOutcome {
  readonly removed: readonly string[];
  readonly swept: boolean;
}

export class CollectionLoop {
  private readonly o: CollectionLoopOptions;
  private readonly now: () => number;
  private stats: CollectionStats = { succeeded: 0, failed: 0, imagesRemoved: 0, usedBytesBefore: 0, usedBytesAfter: 0 };
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
      const objects = await this.o.api.list();
      const selection = selectRemovals(objects.map(candidateOf), {
        maxBytes: this.o.budget?.maxBytes ?? Number.POSITIVE_INFINITY,
        lowWaterBytes: this.o.budget?.lowWaterBytes ?? Number.POSITIVE_INFINITY,
        expireAfterMs: this.o.expireAfterMs,
        now: started,
      });
      if (selection.remove.length === 0 && !this.unfinished) {
        this.record(selection, []);
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
      const byName = new Map(objects.map((o) => [o.metadata.name, o]));
      const removed: string[] = [];
      for (const { candidate, why } of selection.remove) {
        removed.push(candidate.image);
        await this.markEvicted(byName.get(candidate.name), why, started);
      }
      this.record(selection, removed);
      this.o.log.info(
        {
          removed,
          deleted: result.deleted,
          absent: result.absent,
          usedBytesBefore: selection.usedBytes,
          usedBytesAfter: selection.afterBytes,
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

  private record(selection: Selection, removed: readonly string[]): void {
    this.stats = {
      succeeded: this.stats.succeeded + 1,
      failed: this.stats.failed,
      imagesRemoved: this.stats.imagesRemoved + removed.length,
      usedBytesBefore: selection.usedBytes,
      usedBytesAfter: selection.afterBytes,
    };
  }

  /**
   * The object stays (its usage and history go on; a pod using the image again makes it Pending,
   * and the pull caches it again) but says it is no longer in the cache.
   */
  private async markEvicted(
    object: CachedImage | undefined,
    why: 'expired' | 'least-recently-pulled',
    at: number,
  ): Promise<void> {
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
    void this.o.events?.record(
      { apiVersion: 'pullthrough.dev/v1alpha1', kind: 'CachedImage', name, uid: object.metadata.uid },
      'Normal',
      'Evicted',
      `${object.spec.image} ${message}`,
    );
  }
}

function describeError(err: unknown): object {
  if (err instanceof Error && 'code' in err) return { code: err.code, message: err.message };
  return describeKubeError(err);
}
