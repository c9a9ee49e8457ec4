/**
 * Prometheus metrics. Labels are bounded sets (request kind, source, status class, operation):
 * image names and registries stay in logs, where cardinality costs nothing.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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
  readonly staleServed = new Counter({
    name: 'pullthrough_stale_tags_served_total',
    help: 'Tags served from the cache because the origin could not confirm them.',
    registers: [this.registry],
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

  constructor(opts: { defaults?: boolean } = {}) {
    if (opts.defaults !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: 'pullthrough_' });
      // prom-client exports these totals as gauges named `_total`, which the exposition format
      // reserves for counters (`promtool check metrics` rejects the scrape); the per-type gauges
      // without the suffix carry the same numbers.
      for (const kind of ['handles', 'requests', 'resources']) {
        this.registry.removeSingleMetric(`pullthrough_nodejs_active_${kind}_total`);
      }
    }
  }
}
