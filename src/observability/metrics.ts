/**
 * Prometheus metrics of every component (proxy, webhook, controller). Labels are bounded sets
 * (request kind, source, status, operation, outcome, reason): image names, tags, digests and pod
 * names stay in logs, where cardinality costs nothing. docs/observability.md is the catalogue.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The version in package.json, which sits two folders up from both src/observability and dist/observability. */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: unknown;
    };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Process metrics under the pullthrough_ prefix and `pullthrough_build_info`, which every
 * component exports so a dashboard can tell versions apart during a rollout.
 */
function registerCommon(registry: Registry, defaults: boolean): void {
  new Gauge({
    name: 'pullthrough_build_info',
    // No component label: the scrape's target labels say which component answered.
    help: 'Always 1; the labels say which version runs, on which Node.js.',
    labelNames: ['version', 'nodejs'] as const,
    registers: [registry],
  }).set({ version: packageVersion(), nodejs: process.version }, 1);
  if (!defaults) return;
  // The event-loop lag is sampled by a timer every 100 ms, not prom-client's default 10 ms: 100
  // wake-ups a second cost an idle proxy about 1% of a core (9 of 10 ms/s measured, bench/s3.ts),
  // on every node, for percentiles that 10 samples a second estimate as well.
  collectDefaultMetrics({ register: registry, prefix: 'pullthrough_', eventLoopMonitoringPrecision: 100 });
  // prom-client exports these totals as gauges named `_total`, which the exposition format
  // reserves for counters (`promtool check metrics` rejects the scrape); the per-type gauges
  // without the suffix carry the same numbers.
  for (const kind of ['handles', 'requests', 'resources']) {
    registry.removeSingleMetric(`pullthrough_nodejs_active_${kind}_total`);
  }
}

/**
 * Why a pull went past a tier it normally uses, as a bounded label: `cache-skipped` (the cache
 * store is skipped during its cool-down after a failure), `cache-failed` (a store operation
 * failed), `cluster-skipped` (every cluster-proxy replica is cooling down), `cluster-failed` (the
 * chosen replica did not answer), `stale-tag` (a tag the origin could not confirm served from the
 * cache), `spool-direct` (a blob streamed from the origin uncached because the spool failed).
 */
export const FALLBACK_REASONS = [
  'cache-skipped',
  'cache-failed',
  'cluster-skipped',
  'cluster-failed',
  'stale-tag',
  'spool-direct',
] as const;
export type FallbackReason = (typeof FALLBACK_REASONS)[number];

/** Distinct origin registries the rate-limit gauges name; later ones share the label `other`. */
export const RATE_LIMIT_REGISTRIES = 20;

/** An origin's pull allowance as its last manifest answer stated it (Docker Hub's RateLimit headers). */
export interface OriginRateLimit {
  readonly limit: number;
  readonly remaining: number;
  /** The window the allowance is counted over (`w=`), in seconds; undefined when not stated. */
  readonly windowSeconds: number | undefined;
}

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'pullthrough_requests_total',
    help: 'Distribution API requests answered, by kind (manifest, blob, other), source and status code.',
    labelNames: ['kind', 'source', 'status'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'pullthrough_request_duration_seconds',
    help: 'Time to answer a request, until the last byte was sent.',
    labelNames: ['kind', 'source'] as const,
    buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300],
    registers: [this.registry],
  });
  readonly bytesServed = new Counter({
    name: 'pullthrough_served_bytes_total',
    help: 'Body bytes sent to clients, by source.',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly fills = new Counter({
    name: 'pullthrough_blob_fills_total',
    help: 'Origin blob fetches that fill the cache, by result (verified, failed).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly fillBytes = new Counter({
    name: 'pullthrough_origin_blob_bytes_total',
    help: 'Blob bytes fetched from origins by verified fills.',
    registers: [this.registry],
  });
  readonly storeFailures = new Counter({
    name: 'pullthrough_store_failures_total',
    help: 'Cache store operations that failed (the pull went on from the origin), by operation.',
    labelNames: ['op'] as const,
    registers: [this.registry],
  });
  readonly diskFull = new Counter({
    name: 'pullthrough_disk_full_total',
    help: 'Writes that failed for lack of space, by where (spool: once per blob fill; store: once per write).',
    labelNames: ['where'] as const,
    registers: [this.registry],
  });
  /**
   * Derived from the requests answered from the `stale` source, which only the tag resolver's
   * stale-if-error path produces, so the two can never disagree.
   */
  readonly staleServed: Counter = new Counter({
    name: 'pullthrough_stale_tags_served_total',
    help: 'Tags served from the cache because the origin could not confirm them.',
    registers: [this.registry],
    collect: async (): Promise<void> => {
      const { values } = await this.requests.get();
      const served = values.filter((v) => v.labels.source === 'stale').reduce((sum, v) => sum + v.value, 0);
      this.staleServed.reset();
      this.staleServed.inc(served);
    },
  });
  readonly accessRefusals = new Counter({
    name: 'pullthrough_access_refusals_total',
    help: 'Requests for private images refused, by reason (no-pod, rejected, not-found, origin-unreachable).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly accessProbes = new Counter({
    name: 'pullthrough_access_probes_total',
    help: 'HEAD requests to origins made to learn whether a repository is public or to confirm access, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly accessServedOriginDown = new Counter({
    name: 'pullthrough_access_served_origin_down_total',
    help: 'Private-image requests served because access was confirmed recently, while the origin could not confirm it.',
    registers: [this.registry],
  });
  private fillsProvider: () => number = () => 0;
  readonly fillsInProgress: Gauge = new Gauge({
    name: 'pullthrough_blob_fills_in_progress',
    help: 'Blob fills currently streaming from origins.',
    registers: [this.registry],
    collect: (): void => this.fillsInProgress.set(this.fillsProvider()),
  });

  trackFills(provider: () => number): void {
    this.fillsProvider = provider;
  }

  private waitersProvider: () => number = () => 0;
  readonly fillWaiters: Gauge = new Gauge({
    name: 'pullthrough_blob_fill_waiters',
    help: 'Requests streaming a blob from a fill another request started (single-flight: one origin fetch).',
    registers: [this.registry],
    collect: (): void => this.fillWaiters.set(this.waitersProvider()),
  });

  trackWaiters(provider: () => number): void {
    this.waitersProvider = provider;
  }

  private readiness: () => Promise<{ caching: boolean }> = () => Promise.reject(new Error('not started'));
  private async readyState(): Promise<{ ready: boolean; caching: boolean }> {
    try {
      return { ready: true, caching: (await this.readiness()).caching };
    } catch {
      return { ready: false, caching: false };
    }
  }
  readonly ready: Gauge = new Gauge({
    name: 'pullthrough_ready',
    help: '1 when the proxy answers /readyz ready (it serves), else 0.',
    registers: [this.registry],
    collect: async (): Promise<void> => this.ready.set((await this.readyState()).ready ? 1 : 0),
  });
  readonly caching: Gauge = new Gauge({
    name: 'pullthrough_caching',
    help: '1 when the proxy caches what it serves; 0 when it serves uncached (/readyz says why) or is not ready.',
    registers: [this.registry],
    collect: async (): Promise<void> => this.caching.set((await this.readyState()).caching ? 1 : 0),
  });

  /** What /readyz asks: rejects when the proxy cannot serve, else says whether it caches. */
  trackReadiness(ready: () => Promise<{ caching: boolean }>): void {
    this.readiness = ready;
  }

  readonly fallbacks = new Counter({
    name: 'pullthrough_fallbacks_total',
    help: 'Times a pull went past a tier it normally uses, by reason (see docs/observability.md).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  /** The last allowance each origin stated, by the bounded registry label. */
  private readonly rateLimits = new Map<string, OriginRateLimit & { seenAt: number }>();
  /** A rate limit whose window has passed since it was stated says nothing any more: no sample. */
  private currentRateLimits(): [string, OriginRateLimit][] {
    const now = Date.now();
    return [...this.rateLimits].filter(
      ([, r]) => r.windowSeconds === undefined || now - r.seenAt < r.windowSeconds * 1000,
    );
  }
  readonly rateLimitRemaining: Gauge = new Gauge({
    name: 'pullthrough_origin_ratelimit_remaining',
    help: "Pulls an origin still allows in its window, by registry, as its last answer's RateLimit-Remaining said.",
    labelNames: ['registry'] as const,
    registers: [this.registry],
    collect: (): void => {
      this.rateLimitRemaining.reset();
      for (const [registry, r] of this.currentRateLimits()) this.rateLimitRemaining.set({ registry }, r.remaining);
    },
  });
  readonly rateLimitLimit: Gauge = new Gauge({
    name: 'pullthrough_origin_ratelimit_limit',
    help: "Pulls an origin allows per window, by registry, as its last answer's RateLimit-Limit said.",
    labelNames: ['registry'] as const,
    registers: [this.registry],
    collect: (): void => {
      this.rateLimitLimit.reset();
      for (const [registry, r] of this.currentRateLimits()) this.rateLimitLimit.set({ registry }, r.limit);
    },
  });

  /**
   * Notes an origin's stated allowance. The first RATE_LIMIT_REGISTRIES registries keep their
   * name; any later one is `other`, so a cluster pulling from many registries adds one series.
   */
  noteRateLimit(registry: string, r: OriginRateLimit): void {
    const label = this.rateLimits.has(registry) || this.rateLimits.size < RATE_LIMIT_REGISTRIES ? registry : 'other';
    this.rateLimits.set(label, { ...r, seenAt: Date.now() });
  }

  readonly evictions = new Counter({
    name: 'pullthrough_cache_evictions_total',
    help: 'Content files evicted from the embedded store to stay within --max-cache-size.',
    registers: [this.registry],
  });
  readonly evictedBytes = new Counter({
    name: 'pullthrough_cache_evicted_bytes_total',
    help: 'Bytes evicted from the embedded store to stay within --max-cache-size.',
    registers: [this.registry],
  });
  readonly uncached = new Counter({
    name: 'pullthrough_uncached_blobs_total',
    help: 'Blobs and images served without being cached, by reason (too-large for the budget, no-space on disk).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private cacheUsageProvider: () => number | undefined = () => undefined;
  readonly cacheUsage: Gauge = new Gauge({
    name: 'pullthrough_cache_used_bytes',
    help: 'Bytes of content in the embedded store (with --max-cache-size).',
    registers: [this.registry],
    collect: (): void => {
      const used = this.cacheUsageProvider();
      if (used !== undefined) this.cacheUsage.set(used);
    },
  });

  /** What the cache-usage gauge reports (the embedded store's count). */
  trackCacheUsage(provider: () => number | undefined): void {
    this.cacheUsageProvider = provider;
  }

  private volumeDir: string | undefined;
  /** Read at scrape time; without a directory (or when it cannot be read) no sample. */
  private volume(): { size: number; free: number } | undefined {
    if (this.volumeDir === undefined) return undefined;
    try {
      const s = statfsSync(this.volumeDir);
      return { size: s.blocks * s.bsize, free: s.bavail * s.bsize };
    } catch {
      return undefined;
    }
  }
  readonly volumeSize: Gauge = new Gauge({
    name: 'pullthrough_data_volume_size_bytes',
    help: 'Size of the volume holding --data-dir (the spool, and the embedded store).',
    registers: [this.registry],
    collect: (): void => {
      const v = this.volume();
      if (v) this.volumeSize.set(v.size);
    },
  });
  readonly volumeFree: Gauge = new Gauge({
    name: 'pullthrough_data_volume_free_bytes',
    help: 'Bytes of the --data-dir volume this process may still write.',
    registers: [this.registry],
    collect: (): void => {
      const v = this.volume();
      if (v) this.volumeFree.set(v.free);
    },
  });

  /** The --data-dir whose volume the two volume gauges report. */
  trackVolume(dir: string): void {
    this.volumeDir = dir;
  }

  /**
   * Registered by trackNodeSetup only: the node proxy has a node-setup, the cluster proxy none (an
   * unlabelled gauge would otherwise show 0 there). A status file that is missing or unreadable is
   * 0 too: node-setup did not say the node is served.
   */
  trackNodeSetup(statusFile: string): void {
    const gauge: Gauge = new Gauge({
      name: 'pullthrough_node_setup_ok',
      help: "1 when node-setup found this node's runtime pulls through pullthrough, else 0 (its Event says why).",
      registers: [this.registry],
      collect: (): void => gauge.set(readNodeSetupStatus(statusFile) ? 1 : 0),
    });
  }

  constructor(opts: { defaults?: boolean } = {}) {
    registerCommon(this.registry, opts.defaults !== false);
  }
}

function readNodeSetupStatus(file: string): boolean {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { ready?: unknown }).ready === true;
  } catch {
    return false;
  }
}

/** Why the webhook left an image alone, as a bounded label (the free-text reason goes to the log). */
export const WEBHOOK_SKIP_REASONS = [
  'namespace-excluded',
  'pod-ignored',
  'no-image',
  'invalid-reference',
  'no-encoded-registry',
  'pull-policy',
  'ignore-images',
  'not-accepted',
  'not-encodable',
  'node-identity',
  'namespace-not-enabled',
  'namespace-unknown',
  'node-not-ready',
] as const;
export type WebhookSkipReason = (typeof WEBHOOK_SKIP_REASONS)[number];

export class WebhookMetrics {
  readonly registry = new Registry();
  readonly admissions = new Counter({
    name: 'pullthrough_webhook_admissions_total',
    help: 'AdmissionReviews answered, by outcome (rewritten, unchanged, invalid, error).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly skippedImages = new Counter({
    name: 'pullthrough_webhook_skipped_images_total',
    help: 'Container images left alone, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly rewrittenImages = new Counter({
    name: 'pullthrough_webhook_rewritten_images_total',
    help: 'Container images pointed at the node proxy.',
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'pullthrough_webhook_admission_duration_seconds',
    help: 'Time to answer an AdmissionReview, from its body read to the answer.',
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 3],
    registers: [this.registry],
  });

  constructor(opts: { defaults?: boolean } = {}) {
    registerCommon(this.registry, opts.defaults !== false);
  }
}

/** What the controller metrics read at scrape time. */
export interface ControllerState {
  isLeader(): boolean;
  /** CachedImage creates and status writes made by this replica. */
  writes(): number;
  /** Images waiting for a write; undefined while not leading. */
  backlog(): number | undefined;
  /** Images the usage book knows. */
  images(): number;
  /** Collections of the cache registry since start; undefined or absent: collection is off. */
  collections?(): ControllerCollections | undefined;
}

/** The controller's collections since start. */
export interface ControllerCollections {
  readonly succeeded: number;
  readonly failed: number;
  readonly imagesRemoved: number;
  /** Distinct bytes the cached images hold, before and after the last pass; 0 before the first. */
  readonly usedBytesBefore: number;
  readonly usedBytesAfter: number;
  /** The budget the last pass applied, and how it was given; undefined without one. */
  readonly budget?: { readonly bytes: number; readonly given: 'size' | 'share' };
  /** The registry's volume as last read; undefined when unknown or on object storage. */
  readonly volume?: { readonly sizeBytes: number; readonly freeBytes: number };
  /** Free bytes the sweeps gave back (free space after minus before, on a volume). */
  readonly reclaimedBytes: number;
}

export class ControllerMetrics {
  readonly registry = new Registry();

  constructor(state: ControllerState, opts: { defaults?: boolean } = {}) {
    registerCommon(this.registry, opts.defaults !== false);
    const leader: Gauge = new Gauge({
      name: 'pullthrough_controller_leader',
      help: '1 while this replica holds the Lease and writes CachedImages, else 0.',
      registers: [this.registry],
      collect: (): void => leader.set(state.isLeader() ? 1 : 0),
    });
    const writes: Counter = new Counter({
      name: 'pullthrough_controller_writes_total',
      help: 'CachedImage creates and status writes this replica made.',
      registers: [this.registry],
      collect: (): void => {
        writes.reset();
        writes.inc(state.writes());
      },
    });
    const backlog: Gauge = new Gauge({
      name: 'pullthrough_controller_backlog',
      help: 'Images whose CachedImage waits for a write (0 while not leading).',
      registers: [this.registry],
      collect: (): void => backlog.set(state.backlog() ?? 0),
    });
    const images: Gauge = new Gauge({
      name: 'pullthrough_controller_images',
      help: "Images in this replica's usage book (what pods use across the cluster).",
      registers: [this.registry],
      collect: (): void => images.set(state.images()),
    });
    const collections = new Counter<'outcome'>({
      name: 'pullthrough_controller_collections_total',
      help: 'Collections of the cache registry this replica ran, by outcome (succeeded, failed).',
      labelNames: ['outcome'],
      registers: [this.registry],
      collect: (): void => {
        const c = state.collections?.();
        collections.reset();
        if (!c) return;
        collections.inc({ outcome: 'succeeded' }, c.succeeded);
        collections.inc({ outcome: 'failed' }, c.failed);
      },
    });
    const removed: Counter = new Counter({
      name: 'pullthrough_controller_images_removed_total',
      help: 'Images the collections removed from the cache registry.',
      registers: [this.registry],
      collect: (): void => {
        removed.reset();
        removed.inc(state.collections?.()?.imagesRemoved ?? 0);
      },
    });
    const used = new Gauge<'when'>({
      name: 'pullthrough_controller_cache_estimated_bytes',
      help:
        "The cache registry's usage as the last collection estimated it, before and after its removals: the " +
        "distinct blobs and manifests the CachedImages' stored manifests name (a shared layer counts once).",
      labelNames: ['when'],
      registers: [this.registry],
      collect: (): void => {
        const c = state.collections?.();
        used.reset();
        if (!c) return;
        used.set({ when: 'before' }, c.usedBytesBefore);
        used.set({ when: 'after' }, c.usedBytesAfter);
      },
    });
    const budget = new Gauge<'given'>({
      name: 'pullthrough_controller_cache_budget_bytes',
      help:
        '--max-cache-size in bytes as the last collection applied it, by how it was given (size, or share of ' +
        'the volume); absent without a budget, and on replicas not leading.',
      labelNames: ['given'],
      registers: [this.registry],
      collect: (): void => {
        budget.reset();
        const b = state.collections?.()?.budget;
        if (b && state.isLeader()) budget.set({ given: b.given }, b.bytes);
      },
    });
    const reclaimed: Counter = new Counter({
      name: 'pullthrough_controller_reclaimed_bytes_total',
      help: "Bytes the collections gave back on the cache registry's volume (free space after a sweep minus before).",
      registers: [this.registry],
      collect: (): void => {
        reclaimed.reset();
        reclaimed.inc(state.collections?.()?.reclaimedBytes ?? 0);
      },
    });
    // Labelled so that nothing is exported while the volume is unknown (S3, or no answer yet):
    // a label-less gauge would say 0. Only the leader's: a former leader's last reading goes stale.
    const volumeSize = new Gauge<'storage'>({
      name: 'pullthrough_registry_volume_size_bytes',
      help: "Size of the shared cache registry's volume as the gc-runner last measured it (the leader; absent on S3).",
      labelNames: ['storage'],
      registers: [this.registry],
      collect: (): void => {
        volumeSize.reset();
        const v = state.collections?.()?.volume;
        if (v && state.isLeader()) volumeSize.set({ storage: 'filesystem' }, v.sizeBytes);
      },
    });
    const volumeFree = new Gauge<'storage'>({
      name: 'pullthrough_registry_volume_free_bytes',
      help:
        "Free bytes on the shared cache registry's volume as the gc-runner last measured it (the leader; absent " +
        'on S3).',
      labelNames: ['storage'],
      registers: [this.registry],
      collect: (): void => {
        volumeFree.reset();
        const v = state.collections?.()?.volume;
        if (v && state.isLeader()) volumeFree.set({ storage: 'filesystem' }, v.freeBytes);
      },
    });
  }
}
