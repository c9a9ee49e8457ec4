/**
 * `pullthrough controller`: every replica watches the cluster's pods into its usage book, so a new
 * leader starts warm; only the leader on the Lease writes CachedImages. The leader's work restarts
 * from what the objects say (the writer's `start`) each time it takes over, and keeps retrying
 * while the API server is away instead of leading without writing.
 */
import type { ControllerConfig } from '../config/controller.js';
import { createCachedImageApi, type CachedImageApi } from '../kube/cached-images.js';
import type { KubeClient } from '../kube/client.js';
import { describeKubeError } from '../kube/errors.js';
import { GC_LEASE_NAME } from '../kube/gc-lease.js';
import { abortableSleep } from '../runtime/abortable-sleep.js';
import { LeaderElector } from '../kube/leader-election.js';
import type { KubeLogger } from '../kube/logger.js';
import { PodInformer } from '../kube/pod-informer.js';
import { PodUsageFeed } from '../kube/pod-usage-feed.js';
import type { EventRecorder } from '../kube/event-recorder.js';
import type { ScanQueue } from '../kube/scan-queue.js';
import type { SecretCredentials } from '../kube/secret-credentials.js';
import { CollectionLoop, type CollectionStats, type Collector } from './gc-loop.js';
import { UsageBook } from './usage-book.js';
import { UsageWriter } from './usage-writer.js';
import { WarmQueue, type ImageWarmer } from './warm-queue.js';

export interface ControllerDeps {
  readonly client: KubeClient;
  readonly log: KubeLogger;
  /** Instead of the CachedImage calls over `client`. */
  readonly cachedImages?: CachedImageApi;
  /** Pre-warm (the proxy's pull path, with the cache registry): without it nothing is fetched. */
  readonly warm?: { readonly warmer: ImageWarmer; readonly secrets: SecretCredentials };
  readonly events?: EventRecorder;
  /** Vulnerability scans of cached digests (--scanner-url); without it nothing is scanned. */
  readonly scans?: ScanQueue;
  /** Removes images from the cache registry (with config.collection); without it nothing is collected. */
  readonly collector?: Collector;
}

/** Between two lists of every CachedImage (new ones are warmed; the writer sees others' writes). */
const LIST_EVERY_MS = 5_000;

export interface RunningController {
  readonly book: UsageBook;
  isLeader(): boolean;
  /** Creates and status writes this replica made. */
  writes(): number;
  /** Images waiting for a write while leading; undefined while not leading. */
  backlog(): number | undefined;
  /** Collections since start; undefined when collection is off. */
  collections(): CollectionStats | undefined;
  /** Stops leading (handing the Lease back) and watching. */
  close(): Promise<void>;
}

export function runController(config: ControllerConfig, deps: ControllerDeps): RunningController {
  const { client, log } = deps;
  const book = new UsageBook();
  const informer = new PodInformer({ client, logger: log }, new PodUsageFeed(book));
  informer.start();
  const api = deps.cachedImages ?? createCachedImageApi(client);
  const elector = new LeaderElector({
    api: client.coordination,
    namespace: config.namespace,
    name: config.leaseName,
    identity: config.identity,
    leaseDurationMs: config.leaseDurationMs,
    renewDeadlineMs: config.renewDeadlineMs,
    retryPeriodMs: config.retryPeriodMs,
    log,
  });
  const collection =
    config.collection && deps.collector
      ? new CollectionLoop({
          api,
          collector: deps.collector,
          budget: config.collection.budget,
          registryObject: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            name: GC_LEASE_NAME,
            namespace: config.namespace,
          },
          expireAfterMs: config.expireAfterMs,
          intervalMs: config.collection.intervalMs,
          log,
          ...(deps.events ? { events: deps.events } : {}),
        })
      : undefined;
  let writes = 0;
  let current: UsageWriter | undefined;
  const stop = new AbortController();
  const lead = async (leading: AbortSignal): Promise<void> => {
    // Until the first list, the book knows no pod: writing then would empty every usedBy.
    await Promise.race([informer.whenSynced(), abortableSleep(2 ** 31 - 1, leading)]);
    const writer = new UsageWriter({
      api,
      book,
      log,
      writesPerSecond: config.statusWritesPerSecond,
      expireAfterMs: config.expireAfterMs,
      ...(deps.events ? { events: deps.events } : {}),
    });
    const warms = deps.warm
      ? new WarmQueue({ api, log, ...deps.warm, ...(deps.events ? { events: deps.events } : {}) })
      : undefined;
    current = writer;
    // Collections run beside the status writes: a sweep takes long and must not stall them.
    const collecting = collection?.run(leading);
    const before = writes;
    let started = false;
    let listedAt = 0;
    while (!leading.aborted) {
      try {
        if (!started) await writer.start();
        started = true;
        await writer.pass();
        if ((warms || deps.scans) && Date.now() - listedAt >= LIST_EVERY_MS) {
          listedAt = Date.now();
          const objects = await api.list();
          writer.observe(objects);
          warms?.schedule(objects, leading);
          deps.scans?.schedule(objects, leading);
        }
      } catch (err) {
        log.warn({ err: describeKubeError(err) }, 'reading CachedImages failed; retrying');
      }
      writes = before + writer.writeCount;
      await abortableSleep(config.syncIntervalMs, leading);
    }
    await warms?.idle();
    await deps.scans?.idle();
    await collecting;
    current = undefined;
  };
  const done = elector.run(stop.signal, lead);
  return {
    book,
    isLeader: () => elector.isLeader,
    writes: () => writes,
    backlog: () => current?.backlog,
    collections: () => collection?.totals,
    async close() {
      stop.abort();
      await done;
      await informer.stop();
    },
  };
}
