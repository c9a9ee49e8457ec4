/**
 * Keeps each used image's CachedImage in step with the usage book: creates the object for an image
 * pods use, and writes `usedBy` and `lastUsed` when they change, and `Expiring` for an image no
 * pod has used for `expireAfterMs` that is not retained. Writes are coalesced (the book hands over
 * images, not events: a hundred pod changes between two passes cost one write), bounded (a token
 * bucket of `writesPerSecond`) and skipped when the object already says what would be written,
 * which also makes a new leader's first pass cheap.
 */
import {
  cachedImageRef,
  type CachedImage,
  type CachedImageApi,
  type CachedImageStatus,
  type StatusPatch,
} from '../kube/cached-images.js';
import { describeKubeError } from '../kube/errors.js';
import type { EventRecorder } from '../kube/event-recorder.js';
import type { KubeLogger } from '../kube/logger.js';
import { TokenBucket } from '../runtime/token-bucket.js';
import type { PodRef } from '../kube/types.js';
import { cachedImageName } from './object-name.js';
import type { UsageBook } from './usage-book.js';

/** Pods listed by name in `usedBy`; the count covers the rest. */
export const PODS_SHOWN = 5;

export interface UsageWriterOptions {
  readonly api: CachedImageApi;
  readonly book: UsageBook;
  readonly log: KubeLogger;
  /** Status writes and creates per second, at most (bursts up to one second's worth). */
  readonly writesPerSecond: number;
  /** An unused, unretained image is `Expiring` after this long. */
  readonly expireAfterMs: number;
  readonly events?: EventRecorder;
  readonly now?: () => number;
}

/** The label that marks objects the controller made for used images (not asked for by hand). */
export const FROM_PODS_LABEL = 'pullthrough.dev/from-pods';

function sameUsage(a: CachedImageStatus['usedBy'], b: { count: number; pods: readonly PodRef[] }): boolean {
  return (
    a?.count === b.count &&
    a.pods.length === b.pods.length &&
    a.pods.every((p, i) => p.namespace === b.pods[i]?.namespace && p.name === b.pods[i].name)
  );
}

export class UsageWriter {
  private readonly o: UsageWriterOptions & { now: () => number };
  /** What each object says, as last read or written, by name. */
  private readonly known = new Map<string, CachedImage>();
  /** Images to look at on the next pass. */
  private readonly pending = new Set<string>();
  private readonly budget: TokenBucket;
  private writes = 0;

  constructor(opts: UsageWriterOptions) {
    this.o = { now: Date.now, ...opts };
    this.budget = new TokenBucket(opts.writesPerSecond, this.o.now);
  }

  /** Images waiting for a write (the book's unread changes included). */
  get backlog(): number {
    return this.pending.size + this.o.book.changedCount;
  }

  /** Creates and status writes made so far. */
  get writeCount(): number {
    return this.writes;
  }

  /** Reads every CachedImage (a new leader starts from what the objects say) and queues every image. */
  async start(): Promise<void> {
    this.observe(await this.o.api.list());
    for (const image of this.o.book.images()) this.pending.add(image);
    this.o.book.takeChanged();
  }

  /** What the objects say now (the controller lists them periodically; others write status too). */
  observe(objects: readonly CachedImage[]): void {
    this.known.clear();
    for (const o of objects) this.known.set(o.metadata.name, o);
  }

  /**
   * One pass: the images whose usage changed, those whose expiry has come, and those left over
   * from a pass that ran out of write budget. Returns how many are left for the next pass.
   */
  async pass(): Promise<number> {
    for (const image of this.o.book.takeChanged()) this.pending.add(image);
    for (const image of this.dueToExpire()) this.pending.add(image);
    for (const image of this.pending) {
      if (!this.hasBudget()) break;
      try {
        if (await this.sync(image)) this.pending.delete(image);
      } catch (err) {
        this.o.log.warn({ image, err: describeKubeError(err) }, 'CachedImage status write failed; retrying');
        break;
      }
    }
    return this.pending.size;
  }

  /** Unused, unretained images not yet shown as Expiring whose time has come. */
  private *dueToExpire(): Iterable<string> {
    const now = this.o.now();
    for (const object of this.known.values()) {
      const phase = object.status?.phase;
      if (object.spec.retain === true || phase === 'Expiring' || phase === 'Evicted') continue;
      const usage = this.o.book.usage(object.spec.image);
      const last = this.lastUsed(object, usage.lastUsed);
      if (usage.pods.length === 0 && last !== undefined && now - last >= this.o.expireAfterMs) yield object.spec.image;
    }
  }

  /** The book's time, else what the object says (the book knows only what happened since start). */
  private lastUsed(object: CachedImage | undefined, fromBook: number | undefined): number | undefined {
    if (fromBook !== undefined) return fromBook;
    const said = object?.status?.lastUsed;
    return said === undefined ? undefined : Date.parse(said);
  }

  private hasBudget(): boolean {
    return this.budget.available();
  }

  private spend(): void {
    this.budget.take();
    this.writes++;
  }

  /** Brings one image's object up to date; false when the budget ran out half-way. */
  private async sync(image: string): Promise<boolean> {
    const name = cachedImageName(image);
    const usage = this.o.book.usage(image);
    let object = this.known.get(name);
    if (object === undefined) {
      if (usage.pods.length === 0) return true;
      this.spend();
      ({ object } = await this.o.api.create(name, { image }, { [FROM_PODS_LABEL]: 'true' }));
      this.known.set(name, object);
      if (!this.hasBudget()) return false;
    }
    const patch = this.patchFor(object, usage.pods, this.lastUsed(object, usage.lastUsed));
    if (patch === undefined) return true;
    this.spend();
    this.known.set(name, await this.o.api.patchStatus(name, patch));
    if (patch.phase === 'Expiring') {
      void this.o.events?.record(
        cachedImageRef(object),
        'Normal',
        'Expiring',
        `no pod has used ${image} since ${String(patch.lastUsed ?? object.status?.lastUsed)}`,
      );
    }
    return true;
  }

  private patchFor(
    object: CachedImage,
    pods: readonly PodRef[],
    lastUsed: number | undefined,
  ): StatusPatch | undefined {
    const patch: { -readonly [K in keyof StatusPatch]: StatusPatch[K] } = {};
    const status = object.status ?? {};
    const usedBy = { count: pods.length, pods: pods.slice(0, PODS_SHOWN) };
    if (!sameUsage(status.usedBy, usedBy)) patch.usedBy = usedBy;
    const lastUsedText = lastUsed === undefined ? undefined : new Date(lastUsed).toISOString();
    if (lastUsedText !== undefined && status.lastUsed !== lastUsedText) patch.lastUsed = lastUsedText;
    const expiring =
      pods.length === 0 &&
      object.spec.retain !== true &&
      lastUsed !== undefined &&
      this.o.now() - lastUsed >= this.o.expireAfterMs;
    if (status.phase === 'Evicted') {
      // Removed by a collection: Pending once used (or retained) again, which fetches it again.
      if (pods.length > 0 || object.spec.retain === true) {
        patch.phase = 'Pending';
        patch.message = null;
      }
    } else if (expiring && status.phase !== 'Expiring') {
      patch.phase = 'Expiring';
      patch.message = `unused since ${String(lastUsedText)}`;
    } else if (!expiring && status.phase === 'Expiring') {
      // Used again (or retained now): Pending until the warm queue has looked at the cache again.
      patch.phase = 'Pending';
      patch.message = null;
    }
    return Object.keys(patch).length === 0 ? undefined : patch;
  }
}
