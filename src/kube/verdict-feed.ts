/**
 * Keeps the scan verdicts of every CachedImage in memory for the node proxy and the webhook: the
 * objects are listed once and then watched (src/kube/watched-list.ts), so a verdict the
 * controller writes arrives at once and an idle cluster costs the API server one watch per
 * reader. A lookup never waits on the API server; while it is away the last verdicts stay in force.
 */
import type * as k8s from '@kubernetes/client-node';
import type { VerdictCache, VerdictEntry } from '../scan/verdict-cache.js';
import type { KubeClient } from './client.js';
import { CACHED_IMAGE_GROUP, CACHED_IMAGE_PLURAL, CACHED_IMAGE_VERSION, type CachedImage } from './cached-images.js';
import { verdictEntryOf } from './cached-image-scan.js';
import type { WatchDeadlines } from './deadline-watch.js';
import type { KubeLogger } from './logger.js';
import { WatchedList } from './watched-list.js';

export interface VerdictFeedOptions {
  readonly client: KubeClient;
  readonly cache: VerdictCache;
  readonly log: KubeLogger;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly watch?: Partial<WatchDeadlines>;
}

const ref = { group: CACHED_IMAGE_GROUP, version: CACHED_IMAGE_VERSION, plural: CACHED_IMAGE_PLURAL };

export class VerdictFeed {
  private readonly objects: WatchedList<k8s.KubernetesObject>;
  /** Each object's entry by name; the cache is rebuilt from these. */
  private readonly entries = new Map<string, readonly VerdictEntry[]>();
  private rebuildQueued = false;

  constructor(private readonly o: VerdictFeedOptions) {
    const api = o.client.customObjects;
    this.objects = new WatchedList<k8s.KubernetesObject>({
      client: o.client,
      path: `/apis/${CACHED_IMAGE_GROUP}/${CACHED_IMAGE_VERSION}/${CACHED_IMAGE_PLURAL}`,
      list: () => api.listClusterCustomObject(ref) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
      what: 'CachedImage list/watch',
      recovered: 'CachedImage watch recovered',
      staleMeans: 'the last verdicts stay in force until it recovers',
      // The objects are CachedImages (the watch's path); client-node types them only as KubernetesObject.
      sink: { upsert: (x) => this.upsert(x as CachedImage), remove: (x) => this.remove(x as CachedImage) },
      logger: o.log,
      ...(o.backoff ? { backoff: o.backoff } : {}),
      ...(o.watch ? { watch: o.watch } : {}),
    });
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    this.objects.start();
  }

  /** Resolves once the first list is in the cache. */
  whenSynced(): Promise<void> {
    return this.objects.whenSynced();
  }

  /** False while list or watch is failing and being retried (the last verdicts stay). */
  get connected(): boolean {
    return this.objects.connected;
  }

  stop(): Promise<void> {
    return this.objects.stop();
  }

  private upsert(o: CachedImage): void {
    this.entries.set(o.metadata.name, entryOrNothing(o, this.o.log));
    this.queueRebuild();
  }

  private remove(o: CachedImage): void {
    this.entries.delete(o.metadata.name);
    this.queueRebuild();
  }

  /**
   * Several objects may name one digest, so the cache is rebuilt rather than patched. A list
   * delivers every item in one synchronous loop: a microtask rebuilds once after it, and before
   * the list counts as synced (which waits for setImmediate).
   */
  private queueRebuild(): void {
    if (this.rebuildQueued) return;
    this.rebuildQueued = true;
    queueMicrotask(() => {
      this.rebuildQueued = false;
      this.o.cache.replaceAll([...this.entries.values()].flat());
    });
  }
}

/** One object's entry; a status that is not the schema's (written by hand) counts as no verdict. */
function entryOrNothing(o: CachedImage, log: KubeLogger): VerdictEntry[] {
  try {
    const e = verdictEntryOf(o);
    return e ? [e] : [];
  } catch {
    log.warn({ cachedImage: o.metadata.name }, 'CachedImage status.scan is malformed; treated as not scanned');
    return [];
  }
}
