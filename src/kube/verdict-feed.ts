/**
 * Keeps the scan verdicts of every CachedImage in memory for the node proxy and the webhook: lists
 * the objects every `intervalMs` and replaces the cache at once, so a lookup never waits on the API
 * server. While the API server is away the last list stays in force.
 */
import type { VerdictCache, VerdictEntry } from '../scan/verdict-cache.js';
import type { CachedImage, CachedImageApi } from './cached-images.js';
import { verdictEntryOf } from './cached-image-scan.js';
import { describeKubeError } from './errors.js';
import type { KubeLogger } from './logger.js';

export interface VerdictFeedOptions {
  readonly api: CachedImageApi;
  readonly cache: VerdictCache;
  readonly log: KubeLogger;
  /** Default 10 s. */
  readonly intervalMs?: number;
}

export class VerdictFeed {
  private timer: NodeJS.Timeout | undefined;
  private listed = 0;

  constructor(private readonly o: VerdictFeedOptions) {}

  /** Lists once now; resolves after the first list, whether it worked or not. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.o.intervalMs ?? 10_000);
    this.timer.unref();
  }

  /** Completed lists so far. */
  get lists(): number {
    return this.listed;
  }

  async refresh(): Promise<void> {
    try {
      const objects = await this.o.api.list();
      this.o.cache.replaceAll(objects.flatMap((o) => entryOrNothing(o, this.o.log)));
      this.listed++;
    } catch (err) {
      this.o.log.warn({ err: describeKubeError(err) }, 'reading CachedImage verdicts failed; keeping the last ones');
    }
  }

  stop(): void {
    clearInterval(this.timer);
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
